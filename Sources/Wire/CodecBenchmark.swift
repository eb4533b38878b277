import Foundation
import TensorCore

/// Times codecs and checksums on a buffer: compression ratio and encode / decode throughput.
///
/// Throughput is raw Float32 bytes per second (MB = 10^6 bytes), the median of `repeats` timed
/// runs after one warm-up run, on the calling thread only. The `bench` executable calls this with
/// real gradients; docs/protocol.md records the numbers and the command.
public enum CodecBenchmark {
    /// One codec's (or checksum's) measurement.
    public struct Result: Sendable, CustomStringConvertible {
        public var name: String
        /// Raw bytes / encoded bytes (1 for checksums).
        public var ratio: Double
        public var encodeMBps: Double
        /// Decode throughput (0 for checksums).
        public var decodeMBps: Double
        /// ‖decode(encode(x)) − x‖₂ / ‖x‖₂ over finite entries (0 for lossless codecs that verified).
        public var relativeError: Double
        /// For lossless codecs: whether the round trip was bitwise exact.
        public var bitwiseExact: Bool

        public var description: String {
            let pad = { (s: String, n: Int) in s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
            return pad(name, 14) + pad(fmt(ratio, 3) + "x", 10) + pad(fmt(encodeMBps, 0) + " MB/s", 13)
                + pad(fmt(decodeMBps, 0) + " MB/s", 13) + (bitwiseExact ? "exact" : "rel.err " + sci(relativeError))
        }
    }

    /// The codecs the team compares: every registry codec, top-k at 1%.
    public static func standardCodecs() -> [any GradientCodec] {
        ["raw", "lz4", "shuffle-lz4", "bf16", "fp16", "bf16-lz4", "fp16-lz4", "topk:0.01"].map {
            try! CodecRegistry.codec(named: $0)
        }
    }

    /// Measures each codec on `values`.
    public static func run(values: UnsafeBufferPointer<Float>, codecs: [any GradientCodec] = standardCodecs(),
                           repeats: Int = 5) -> [Result] {
        precondition(repeats >= 1)
        let rawBytes = Double(values.count * 4)
        var decoded = [Float](repeating: 0, count: values.count)
        return codecs.map { codec in
            var out: [UInt8] = []
            codec.encode(values, into: &out)  // warm-up: sizes the buffer
            let encodeSeconds = median((0..<repeats).map { _ in time { codec.encode(values, into: &out) } })
            let decodeSeconds = median((0..<repeats).map { _ in
                time {
                    out.withUnsafeBytes { b in
                        decoded.withUnsafeMutableBufferPointer { d in
                            do { try codec.decode(b, into: d) } catch { fatalError("\(codec.name) cannot decode its own output: \(error)") }
                        }
                    }
                }
            })
            var exact = true
            var errSq = 0.0, normSq = 0.0
            for i in 0..<values.count {
                if values[i].bitPattern != decoded[i].bitPattern { exact = false }
                let x = Double(values[i]), y = Double(decoded[i])
                if x.isFinite && y.isFinite {
                    errSq += (y - x) * (y - x)
                    normSq += x * x
                }
            }
            return Result(name: codec.name, ratio: rawBytes / Double(max(out.count, 1)),
                          encodeMBps: rawBytes / encodeSeconds / 1e6, decodeMBps: rawBytes / decodeSeconds / 1e6,
                          relativeError: normSq > 0 ? (errSq / normSq).squareRoot() : 0,
                          bitwiseExact: codec.isLossless && exact)
        }
    }

    /// Measures each codec on `values`.
    public static func run(values: [Float], codecs: [any GradientCodec] = standardCodecs(), repeats: Int = 5) -> [Result] {
        values.withUnsafeBufferPointer { run(values: $0, codecs: codecs, repeats: repeats) }
    }

    /// Measures the payload checksum (XXH64) and zlib's CRC-32 on `bytes`.
    public static func checksums(bytes: UnsafeRawBufferPointer, repeats: Int = 5) -> [Result] {
        let n = Double(bytes.count)
        var sink: UInt64 = 0
        let xxh = median((0..<repeats).map { _ in time { sink &+= XXH64.hash(bytes) } })
        let crc = median((0..<repeats).map { _ in time { sink &+= UInt64(Checksum.crc32(bytes)) } })
        precondition(sink != 1)  // keeps the hashes alive
        return [Result(name: "xxh64", ratio: 1, encodeMBps: n / xxh / 1e6, decodeMBps: 0, relativeError: 0, bitwiseExact: true),
                Result(name: "crc32 (zlib)", ratio: 1, encodeMBps: n / crc / 1e6, decodeMBps: 0, relativeError: 0, bitwiseExact: true)]
    }

    /// A gradient-like buffer: consecutive "layers" of 4K to 1M elements, each N(0, s²) with its
    /// own scale s, log-uniform in [1e-5, 1e-1], drawn from the counter-based RNG (reproducible).
    public static func syntheticGradient(count: Int, seed: UInt64 = 1) -> [Float] {
        var rng = CounterRNG(seed: seed, purpose: .syntheticData)
        var values = [Float](repeating: 0, count: count)
        var start = 0
        while start < count {
            let size = min(count - start, 4096 << rng.int(below: 9))
            let scale = 1e-5 * pow(10, 4 * rng.uniform())
            for i in start..<(start + size) { values[i] = Float(rng.normal() * scale) }
            start += size
        }
        return values
    }

    /// A header line for `Result.description` rows.
    public static let tableHeader = "codec         ratio     encode       decode       round trip"

    private static func time(_ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        body()
        let d = clock.now - start
        return max(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18, 1e-9)
    }
}

private func fmt(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }

private func sci(_ x: Double) -> String { String(format: "%.2e", x) }
