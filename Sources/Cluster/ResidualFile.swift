import Foundation
import TensorCore
import Wire

/// The error-feedback residuals of one shard after a step, written by the worker that computed
/// the shard when a checkpoint follows that step, so a restart from the checkpoint resumes the
/// lossy run exactly (see Worker, "Error-feedback residuals").
///
/// Layout (little-endian): magic `AMBRESD1` (8 bytes), step (UInt64: the version the residuals
/// are for, i.e. the checkpoint's step), shard (UInt32), chunk count C (UInt32), C x (offset
/// UInt64, count UInt64), the residual values of every chunk in order (Float32), then XXH64 of
/// every byte before it (UInt64).
public struct ResidualFile: Equatable, Sendable {
    public struct Chunk: Equatable, Sendable {
        public var offset: Int
        public var values: [Float]
        public init(offset: Int, values: [Float]) {
            self.offset = offset
            self.values = values
        }
    }

    public var step: Int
    public var shard: Int
    public var chunks: [Chunk]

    public init(step: Int, shard: Int, chunks: [Chunk]) {
        self.step = step
        self.shard = shard
        self.chunks = chunks
    }

    static let magic: [UInt8] = Array("AMBRESD1".utf8)

    /// `DIR/step-00000100/shard-0003.residual`
    public static func path(directory: String, step: Int, shard: Int) -> String {
        directory + String(format: "/step-%08d/shard-%04d.residual", step, shard)
    }

    public func encode() -> [UInt8] {
        var out = Self.magic
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        put(UInt64(step))
        put(UInt32(shard))
        put(UInt32(chunks.count))
        for c in chunks {
            put(UInt64(c.offset))
            put(UInt64(c.values.count))
        }
        // Float32 values as stored in memory: every platform Ambient builds for is little-endian.
        for c in chunks { c.values.withUnsafeBytes { out += $0 } }
        put(XXH64.hash(out))
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws -> ResidualFile {
        func fail(_ why: String) -> ClusterError { ClusterError("not a residual file: \(why)") }
        guard bytes.count >= 8 + 8 + 4 + 4 + 8, Array(bytes.prefix(8)) == magic else { throw fail("bad magic or too short") }
        var at = 8
        func get<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard at + MemoryLayout<T>.size <= bytes.count - 8 else { throw fail("truncated") }
            var v = T.zero
            withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: bytes[at..<(at + MemoryLayout<T>.size)]) }
            at += MemoryLayout<T>.size
            return T(littleEndian: v)
        }
        let stored = bytes.suffix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard XXH64.hash(Array(bytes.dropLast(8))) == stored else { throw fail("checksum mismatch") }
        guard let step = Int(exactly: try get(UInt64.self)) else { throw fail("step above 2^63 - 1") }
        let shard = Int(try get(UInt32.self)), count = Int(try get(UInt32.self))
        guard count <= (bytes.count - at) / 16 else { throw fail("chunk count \(count) does not fit the file") }
        var layout: [(Int, Int)] = []
        var total = 0
        for _ in 0..<count {
            let o = try get(UInt64.self), n = try get(UInt64.self)
            guard o < UInt64(Int32.max) * 16, n <= UInt64(bytes.count) else { throw fail("chunk out of range") }
            layout.append((Int(o), Int(n)))
            total += Int(n)
        }
        guard bytes.count - 8 - at == total * 4 else { throw fail("values do not match the chunk table") }
        var chunks: [Chunk] = []
        for (o, n) in layout {
            var values = [Float](repeating: 0, count: n)
            values.withUnsafeMutableBytes { $0.copyBytes(from: bytes[at..<(at + 4 * n)]) }
            at += 4 * n
            chunks.append(Chunk(offset: o, values: values))
        }
        return ResidualFile(step: step, shard: shard, chunks: chunks)
    }
}

extension ResidualFile {
    /// Removes the residual directories (`step-N`) under `directory` of steps before `before`
    /// that are not in `keeping`: checkpoints no longer kept, and steps that never got one (such
    /// as the step a crash interrupted).
    public static func prune(directory: String, keeping steps: Set<Int>, before: Int) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix("step-") {
            guard let step = Int(name.dropFirst(5)), !steps.contains(step), step < before else { continue }
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }
}
