import Foundation

/// A training state as named Float32 buffers plus integer counters: what a checkpoint file
/// holds and what a joining worker receives (docs/formats.md, "Checkpoint").
///
/// Typical sections: `params`, `adam.m`, `adam.v`, `ema`; counters: `step`, `adam.step`,
/// `ema.updates`.
public struct StateSnapshot: Sendable, Equatable {
    public struct Section: Sendable, Equatable {
        public var name: String
        public var values: [Float]
        public init(name: String, values: [Float]) {
            self.name = name
            self.values = values
        }
    }

    public var sections: [Section]
    public var counters: [String: Int]
    /// Free-form strings (config hash, run id, creation time).
    public var metadata: [String: String]

    public init(sections: [Section] = [], counters: [String: Int] = [:], metadata: [String: String] = [:]) {
        self.sections = sections
        self.counters = counters
        self.metadata = metadata
    }

    public func section(_ name: String) -> [Float]? { sections.first { $0.name == name }?.values }

    /// Total Float32 elements over all sections.
    public var elementCount: Int { sections.reduce(0) { $0 + $1.values.count } }

    /// XXH64 over everything a replica is made of, in a fixed order: each section's name, length
    /// and value bytes (little-endian, as in memory on every supported machine), then the counters
    /// sorted by name. Two snapshots with equal digests are (up to a 2^-64 collision) the same
    /// replica, bit for bit; `metadata` is not part of it. A joining worker whose freshly built
    /// replica has the coordinator's digest needs no state transfer (docs/protocol.md, "Joining").
    public var digest: UInt64 {
        var h = XXH64()
        func add<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { h.update($0) } }
        func add(_ s: String) {
            add(UInt64(s.utf8.count))
            h.update(Array(s.utf8))
        }
        add(UInt64(sections.count))
        for s in sections {
            add(s.name)
            add(UInt64(s.values.count))
            s.values.withUnsafeBytes { h.update($0) }
        }
        add(UInt64(counters.count))
        for (name, value) in counters.sorted(by: { $0.key < $1.key }) {
            add(name)
            add(Int64(value))
        }
        return h.finalize()
    }
}

/// Why checkpoint bytes were rejected.
public struct CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    public let name: String
    public let problem: String
    public init(name: String, problem: String) {
        self.name = name
        self.problem = problem
    }
    public var description: String { "\(name): invalid checkpoint: \(problem)" }
}

/// The checkpoint file layout (little-endian):
///
///     offset  size  field
///     0       8     magic "AMBCKPT\0"
///     8       4     format version (1)
///     12      4     header length H
///     16      H     header JSON: sections (name, count, XXH64 of its bytes), counters, metadata
///     16+H    ...   section data, Float32, in header order, contiguous
///     end-8   8     XXH64 of every preceding byte
///
/// Decoding checks the trailer first (a torn or bit-flipped file fails there), then every
/// length against the file size before reading, then each section's checksum.
public enum CheckpointFormat {
    public static let magic: [UInt8] = Array("AMBCKPT".utf8) + [0]
    public static let version: UInt32 = 1
    /// Largest header accepted (the JSON is small; a huge value means corruption).
    public static let maxHeaderBytes = 16 << 20

    struct Header: Codable {
        struct Entry: Codable {
            var name: String
            var count: Int
            var checksum: UInt64
        }
        var sections: [Entry]
        var counters: [String: Int]
        var metadata: [String: String]
    }

    public static func encode(_ s: StateSnapshot) -> [UInt8] {
        let entries = s.sections.map { sec in
            Header.Entry(name: sec.name, count: sec.values.count,
                         checksum: sec.values.withUnsafeBufferPointer { Checksum.of($0) })
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding plain strings and integers cannot fail.
        let header = (try? encoder.encode(Header(sections: entries, counters: s.counters, metadata: s.metadata))) ?? Data()
        var out: [UInt8] = []
        out.reserveCapacity(24 + header.count + s.elementCount * 4)
        out += magic
        appendLE(&out, version)
        appendLE(&out, UInt32(header.count))
        out += header
        for sec in s.sections { sec.values.withUnsafeBytes { out += $0 } }
        let trailer = Checksum.of(out)
        appendLE(&out, trailer)
        return out
    }

    public static func decode(_ bytes: [UInt8], name: String) throws(CheckpointError) -> StateSnapshot {
        func fail(_ p: String) -> CheckpointError { CheckpointError(name: name, problem: p) }
        guard bytes.count >= 24 else { throw fail("file has \(bytes.count) bytes, a checkpoint has at least 24 (truncated)") }
        guard Array(bytes[0..<8]) == magic else { throw fail("not an Ambient checkpoint (bad magic)") }
        let storedTrailer = readLE(bytes, bytes.count - 8, UInt64.self)
        let computed = bytes.withUnsafeBytes { Checksum.of(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 8)])) }
        guard storedTrailer == computed else {
            throw fail("checksum mismatch (stored \(hex(storedTrailer)), computed \(hex(computed))): the file is truncated or corrupt")
        }
        let v = readLE(bytes, 8, UInt32.self)
        guard v == version else { throw fail("format version \(v), this ambient reads version \(version)") }
        let h = Int(readLE(bytes, 12, UInt32.self))
        guard h <= maxHeaderBytes, 16 + h <= bytes.count - 8 else { throw fail("header length \(h) exceeds the file") }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(bytes[16..<(16 + h)]))
        } catch {
            throw fail("unreadable header: \(error)")
        }
        var offset = 16 + h
        let end = bytes.count - 8
        var sections: [StateSnapshot.Section] = []
        var names = Set<String>()
        for e in header.sections {
            guard e.count >= 0, e.count <= (end - offset) / 4 else {
                throw fail("section \(e.name) claims \(e.count) values, more than the file holds")
            }
            guard names.insert(e.name).inserted else { throw fail("duplicate section \(e.name)") }
            var values = [Float](repeating: 0, count: e.count)
            values.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[offset..<(offset + e.count * 4)]))
                }
            }
            let sum = values.withUnsafeBufferPointer { Checksum.of($0) }
            guard sum == e.checksum else { throw fail("section \(e.name) checksum mismatch") }
            sections.append(.init(name: e.name, values: values))
            offset += e.count * 4
        }
        guard offset == end else { throw fail("\(end - offset) unexplained bytes after the sections") }
        return StateSnapshot(sections: sections, counters: header.counters, metadata: header.metadata)
    }

    static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }

    static func readLE<T: FixedWidthInteger>(_ bytes: [UInt8], _ at: Int, _: T.Type) -> T {
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            bytes.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[at..<(at + MemoryLayout<T>.size)])) }
        }
        return T(littleEndian: v)
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}
