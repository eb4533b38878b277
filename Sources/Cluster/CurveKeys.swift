import CZeroMQ
import FileIO
import Foundation
import TensorCore

/// A CURVE key pair in Z85 text (40 characters each).
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh key pair from libzmq (`zmq_curve_keypair`).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else {
            throw ClusterError("cannot generate a CURVE key pair: \(String(cString: zmq_strerror(zmq_errno()))) (libzmq without CURVE?)")
        }
        return CurveKeyPair(publicKey: cString(pub), secretKey: cString(sec))
    }

    /// Writes `NAME.key` (public and secret, mode 0600) and `NAME.pub` (public only) into `directory`.
    public func write(directory: String, name: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let secretPath = directory + "/" + name + ".key", publicPath = directory + "/" + name + ".pub"
        if FileManager.default.fileExists(atPath: secretPath) {
            throw ClusterError("\(secretPath) exists; refusing to overwrite a key (remove it first)")
        }
        let text = "# Ambient CURVE key pair: keep this file secret\npublic \(publicKey)\nsecret \(secretKey)\n"
        try FileBytes.writeAtomically(Array(text.utf8), to: secretPath, mode: 0o600)
        try FileBytes.writeAtomically(Array("\(publicKey)\n".utf8), to: publicPath)
    }

    /// Reads a `NAME.key` file.
    public static func read(_ path: String) throws -> CurveKeyPair {
        let text: String
        do {
            text = String(decoding: try FileBytes.contents(of: path), as: UTF8.self)
        } catch {
            throw ClusterError("\(error)")
        }
        var pub: String?, sec: String?
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "public" { pub = parts[1] }
            if parts[0] == "secret" { sec = parts[1] }
        }
        guard let p = pub, let s = sec, isValidZ85Key(p), isValidZ85Key(s) else {
            throw ClusterError("\(path) is not an Ambient key file (expected 'public <z85>' and 'secret <z85>' lines; create one with `ambient keys generate`)")
        }
        return CurveKeyPair(publicKey: p, secretKey: s)
    }
}

/// Reads public keys: a `.pub` file, a file of keys (one per line, `#` comments), or a
/// directory of `.pub` files.
public func readPublicKeys(_ path: String) throws -> Set<String> {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw ClusterError("\(path) does not exist (expected a public key file or a directory of .pub files)")
    }
    var files = [path]
    if isDir.boolValue {
        files = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasSuffix(".pub") }.sorted().map { path + "/" + $0 }
    }
    var keys = Set<String>()
    for f in files {
        let text = String(decoding: (try? FileBytes.contents(of: f)) ?? [], as: UTF8.self)
        for line in text.split(separator: "\n") {
            let k = line.trimmingCharacters(in: .whitespaces)
            if k.isEmpty || k.hasPrefix("#") { continue }
            guard isValidZ85Key(k) else { throw ClusterError("\(f): '\(k.prefix(50))' is not a Z85 CURVE public key") }
            keys.insert(k)
        }
    }
    guard !keys.isEmpty else { throw ClusterError("\(path) holds no public keys") }
    return keys
}

/// Reads a single public key (the coordinator's, for a worker).
public func readPublicKey(_ path: String) throws -> String {
    let keys = try readPublicKeys(path)
    guard keys.count == 1 else { throw ClusterError("\(path) holds \(keys.count) keys; expected exactly one") }
    return keys.first!
}

/// The text of a NUL-terminated C buffer.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A 40-character Z85 string that decodes to 32 bytes.
public func isValidZ85Key(_ s: String) -> Bool {
    guard s.utf8.count == 40 else { return false }
    var out = [UInt8](repeating: 0, count: 32)
    return zmq_z85_decode(&out, s) != nil
}

/// The 32 raw bytes of a Z85 key, re-encoded (the ZAP handler sees raw bytes).
func z85Encode(_ raw: [UInt8]) -> String? {
    guard raw.count == 32 else { return nil }
    var out = [CChar](repeating: 0, count: 41)
    guard zmq_z85_encode(&out, raw, 32) != nil else { return nil }
    return cString(out)
}

/// An authentication decision of the ZAP handler, for logs and counters.
public struct AuthenticationEvent: Sendable {
    public let accepted: Bool
    public let address: String
    public let publicKey: String
}

/// The ZAP handler (ZeroMQ RFC 27) that admits CURVE clients whose public key is on the
/// allow-list. Runs on its own thread with its own REP socket on `inproc://zeromq.zap.01`.
final class ZAPAuthenticator: @unchecked Sendable {
    private let lock = NSLock()
    private var stopping = false
    private let done = DispatchSemaphore(value: 0)
    private let ready = DispatchSemaphore(value: 0)
    private var startError: TransportError?

    init(context: ZMQContext, allowed: Set<String>, onEvent: (@Sendable (AuthenticationEvent) -> Void)?) throws(TransportError) {
        let thread = Thread { [self] in
            defer { done.signal() }
            let socket: ZMQSocket
            do throws(TransportError) {
                socket = try ZMQSocket(context, type: ZMQ_REP)
                try socket.bind("inproc://zeromq.zap.01")
            } catch {
                startError = error
                ready.signal()
                return
            }
            ready.signal()
            while !isStopping {
                guard let (readable, _) = try? socket.poll(timeout: 0.1), readable,
                      let request = try? socket.receiveMultipart() else { continue }
                // [version, request id, domain, address, identity, mechanism, credentials...]
                guard request.count >= 6 else { continue }
                let mechanism = String(decoding: request[5], as: UTF8.self)
                let address = String(decoding: request[3], as: UTF8.self)
                var key = ""
                var ok = false
                if mechanism == "CURVE", request.count >= 7, let k = z85Encode(request[6]) {
                    key = k
                    ok = allowed.contains(k)
                }
                onEvent?(AuthenticationEvent(accepted: ok, address: address, publicKey: key))
                let reply: [[UInt8]] = [Array("1.0".utf8), request[1], Array((ok ? "200" : "400").utf8),
                                        Array((ok ? "OK" : "public key not on the allow-list").utf8),
                                        Array((ok ? key : "").utf8), []]
                try? socket.send(reply, peerLabel: "zap")
            }
            socket.close()
        }
        thread.name = "ambient-zap"
        thread.start()
        ready.wait()
        if let e = startError { throw e }
    }

    private var isStopping: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopping
    }

    func stop() {
        lock.lock()
        let already = stopping
        stopping = true
        lock.unlock()
        if !already { done.wait() }
    }
}
