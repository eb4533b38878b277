import Crypto

/// SHA-256 (FIPS 180-4), for the content hashes of dataset manifests: a user can check a file
/// against its manifest with `sha256sum`.
///
/// swift-crypto's (BoringSSL's assembly, with the SHA extensions where the CPU has them), which
/// replaced our own Swift loop: about 1 s less CPU per 181 MB (docs/dataset-format.md).
public enum SHA256 {
    /// The digest of `bytes` as 64 lowercase hex digits.
    public static func hex(_ bytes: [UInt8]) -> String {
        digest(bytes).map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }

    /// The 32-byte digest of `bytes`.
    public static func digest(_ bytes: [UInt8]) -> [UInt8] {
        Array(Crypto.SHA256.hash(data: bytes))
    }
}
