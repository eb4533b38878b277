import FileIO
import TensorCore
import CZlib

/// The decompressed contents of the gzip file at `path`.
///
/// Concatenated gzip members (as `cat a.gz b.gz` makes) are decompressed one after the other.
/// A stream that ends early, fails its CRC-32 or length check, or is followed by bytes that
/// are not another gzip member is an error: partial data is never returned.
public func gunzip(contentsOf path: String) throws -> [UInt8] {
    try gunzip(FileBytes.contents(of: path), name: path)
}

/// The decompressed contents of the gzip stream `compressed`; `name` labels errors.
public func gunzip(_ compressed: [UInt8], name: String) throws -> [UInt8] {
    guard compressed.count >= 2 else {
        throw DatasetError.wrongLength(name: name, expectedBytes: 18, actualBytes: compressed.count)
    }
    guard compressed[0] == 0x1f, compressed[1] == 0x8b else {
        throw DatasetError.badMagic(name: name, format: "gzip", expected: "1f 8b",
                                    found: hex(compressed.prefix(2)))
    }
    var stream = z_stream()
    // 16 + MAX_WBITS: expect (and check) a gzip header and trailer rather than a zlib one.
    guard inflateInit2_(&stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw DatasetError.malformed(name: name, problem: "zlib could not start inflating (out of memory?)")
    }
    defer { inflateEnd(&stream) }

    var output: [UInt8] = []
    output.reserveCapacity(expectedSizeHint(compressed))
    var chunk = [UInt8](repeating: 0, count: 1 << 18)
    try compressed.withUnsafeBufferPointer { input in
        let base = UnsafeMutablePointer(mutating: input.baseAddress!)
        var fed = 0  // input bytes handed to zlib so far
        func feed() {
            let n = min(input.count - fed, Int(UInt32.max))
            stream.next_in = base + fed
            stream.avail_in = uInt(n)
            fed += n
        }
        feed()
        while true {
            if stream.avail_in == 0 && fed < input.count { feed() }
            let status = chunk.withUnsafeMutableBufferPointer { out -> Int32 in
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                return inflate(&stream, Z_NO_FLUSH)
            }
            let produced = chunk.count - Int(stream.avail_out)
            output.append(contentsOf: chunk[0..<produced])
            let consumed = fed - Int(stream.avail_in)
            switch status {
            case Z_STREAM_END:
                if consumed == input.count { return }
                guard input.count - consumed >= 2, input[consumed] == 0x1f, input[consumed + 1] == 0x8b else {
                    throw DatasetError.malformed(
                        name: name, problem: "\(input.count - consumed) bytes after the end of the gzip stream "
                            + "(at offset \(consumed)) are not another gzip member")
                }
                guard inflateReset(&stream) == Z_OK else {
                    throw DatasetError.malformed(name: name, problem: "zlib could not restart for the next gzip member")
                }
            case Z_OK, Z_BUF_ERROR:
                // All input is in memory: if zlib has consumed it all and still has room to
                // write, the stream ended before its end marker and checksum.
                if consumed == input.count && produced < chunk.count {
                    throw DatasetError.malformed(
                        name: name, problem: "truncated gzip stream: input ends after \(input.count) bytes "
                            + "without the end-of-stream marker and CRC-32 (\(output.count) bytes decompressed so far)")
                }
                if status == Z_BUF_ERROR && produced == 0 {
                    throw DatasetError.malformed(name: name, problem: "gzip stream made no progress at offset \(consumed)")
                }
            case Z_DATA_ERROR:
                let reason = stream.msg.map { String(cString: $0) } ?? "invalid deflate data"
                throw DatasetError.malformed(name: name, problem: "corrupt gzip stream near offset \(consumed): \(reason)")
            case Z_MEM_ERROR:
                throw DatasetError.malformed(name: name, problem: "zlib ran out of memory while decompressing")
            default:
                throw DatasetError.malformed(name: name, problem: "zlib inflate returned status \(status)")
            }
        }
    }
    return output
}

/// `bytes` compressed as one gzip member (RFC 1952) at zlib `level` (0-9).
public func gzip(_ bytes: [UInt8], level: Int = 6) -> [UInt8] {
    var stream = z_stream()
    let level = Int32(max(0, min(9, level)))
    let started = deflateInit2_(&stream, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY,
                                zlibVersion(), Int32(MemoryLayout<z_stream>.size))
    precondition(started == Z_OK, "zlib deflateInit2 failed with \(started) (out of memory)")
    defer { deflateEnd(&stream) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 18)
    bytes.withUnsafeBufferPointer { input in
        let base = UnsafeMutablePointer(mutating: input.baseAddress)
        var fed = 0
        while true {
            if stream.avail_in == 0 && fed < input.count {
                let n = min(input.count - fed, Int(UInt32.max))
                stream.next_in = base.map { $0 + fed }
                stream.avail_in = uInt(n)
                fed += n
            }
            let flush = fed == input.count ? Z_FINISH : Z_NO_FLUSH
            let status = chunk.withUnsafeMutableBufferPointer { out -> Int32 in
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                return deflate(&stream, flush)
            }
            output.append(contentsOf: chunk[0..<(chunk.count - Int(stream.avail_out))])
            if status == Z_STREAM_END { return }
            precondition(status == Z_OK || status == Z_BUF_ERROR, "zlib deflate failed with \(status)")
        }
    }
    return output
}

/// A capacity to reserve: the ISIZE trailer field (length mod 2^32 of the last member), bounded
/// by deflate's maximum ratio so a corrupt trailer cannot make us reserve absurd memory.
private func expectedSizeHint(_ compressed: [UInt8]) -> Int {
    guard compressed.count >= 18 else { return 0 }
    let n = compressed.count
    let isize = Int(compressed[n - 4]) | Int(compressed[n - 3]) << 8 | Int(compressed[n - 2]) << 16 | Int(compressed[n - 1]) << 24
    return min(isize, compressed.count * 1032)
}

/// Bytes as space-separated hex, for error messages.
func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    let digits = Array("0123456789abcdef")
    let parts = bytes.map { String([digits[Int($0 >> 4)], digits[Int($0 & 15)]]) }
    return parts.isEmpty ? "(nothing)" : parts.joined(separator: " ")
}
