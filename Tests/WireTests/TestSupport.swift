import Testing
import TensorCore
@testable import Wire

/// Gradient-like values: Gaussian blocks of varying scale (1e-6 ... 1e2), as real layers differ.
func gaussianGradient(_ n: Int, seed: UInt64 = 7) -> [Float] {
    var rng = CounterRNG(seed: seed, purpose: .syntheticData)
    var out = [Float](repeating: 0, count: n)
    var i = 0
    while i < n {
        let block = min(n - i, 1 + rng.int(below: 3000))
        let scale = [1e-6, 1e-4, 1e-3, 1e-2, 0.1, 1, 100][rng.int(below: 7)]
        for j in i..<(i + block) { out[j] = Float(rng.normal() * scale) }
        i += block
    }
    return out
}

/// Every awkward Float32: NaNs with payloads and signs, infinities, zeros of both signs,
/// subnormals, extremes, and values on the fp16 / bf16 rounding boundaries.
let specialValues: [Float] = [
    .nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC0_1234), Float(bitPattern: 0x7FBF_FFFF),
    .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude,
    .leastNormalMagnitude, Float(bitPattern: 0x007F_FFFF), .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
    1, -1, 65504, 65519.99, 65520, -65520, 1e-8, 5.96e-8, 2.98e-8, 6.1e-5, 3.0e38,
    Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_7FFF),
]

/// Deterministic pseudo-random bytes / integers for fuzzing (Philox from TensorCore).
struct FuzzRNG {
    var rng: CounterRNG
    init(seed: UInt64) { rng = CounterRNG(seed: seed, purpose: .evaluation) }
    mutating func below(_ n: Int) -> Int { rng.int(below: n) }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: rng.next()) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in byte() } }
}

/// Runs `body` and returns the WireError it threw, or nil if it returned. (The library's
/// functions throw `WireError` by type; test closures are untyped, so anything else fails here.)
func wireError(_ body: () throws -> Void) -> WireError? {
    do {
        try body()
    } catch let error as WireError {
        return error
    } catch {
        Issue.record("threw a non-WireError: \(error)")
        return .inconsistentHeader("non-WireError")
    }
    return nil
}

func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// A header with every field set to a distinct non-trivial value.
func sampleHeader(_ type: MessageType = .gradient) -> MessageHeader {
    MessageHeader(type: type, flags: .retransmission, generation: 0x0102_0304, runID: 0x1122_3344_5566_7788,
                  coordinatorIncarnation: 0xA1A2_A3A4_A5A6_A7A8, senderID: 0x0B0C_0D0E,
                  senderIncarnation: 0xB1B2_B3B4_B5B6_B7B8, step: 0x41C2_C3C4_C5C6_C7C8, shard: 5, shardCount: 16,
                  parameterVersion: 0x51D2_D3D4_D5D6_D7D8, codec: type.carriesTensor ? .shuffleLZ4 : .none,
                  keyOffset: 0xE1E2_E3E4_E5, keyCount: type.carriesTensor ? 1000 : 0,
                  rawLength: type.carriesTensor ? 4000 : 0, encodedLength: type.carriesTensor ? 3000 : 0,
                  payloadChecksum: 0xF1F2_F3F4_F5F6_F7F8)
}

/// Header bytes with arbitrary raw values in the validated fields and a correct header checksum.
func rawHeaderBytes(_ h: MessageHeader, magic: UInt32 = MessageHeader.magic,
                    version: UInt16 = MessageHeader.currentVersion, type: UInt16? = nil,
                    flags: UInt32? = nil, codec: UInt16? = nil, reserved: UInt16 = 0) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: MessageHeader.size)
    bytes.withUnsafeMutableBytes { b in
        MessageHeader.write(b, fields: .init(magic: magic, version: version, type: type ?? h.type.rawValue,
                                             flags: flags ?? h.flags.rawValue, codec: codec ?? h.codec.rawValue,
                                             reserved: reserved), header: h)
    }
    return bytes
}

/// Every codec the registry can build, plus small-chunk variants that exercise many chunks.
func allCodecs() -> [any GradientCodec] {
    CodecBenchmark.standardCodecs() + [
        LZ4Codec(chunkBytes: 64), ShuffleLZ4Codec(chunkBytes: 64),
        HalfPrecisionCodec(format: .bfloat16, compressed: true, chunkBytes: 64),
        HalfPrecisionCodec(format: .binary16, compressed: true, chunkBytes: 64),
        TopKCodec(fraction: 0.1, chunkBytes: 64), TopKCodec(fraction: 1), TopKCodec(fraction: 1e-9),
    ]
}
