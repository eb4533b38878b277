/// SplitMix64 (Steele, Lea and Flood 2014): a small generator whose whole state is the seed, so
/// the seed printed on a scenario's line reproduces its random choices.
public struct SplitMix64: Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in lo...hi (lo <= hi; the modulo bias is below 2^-40 for the ranges used here).
    public mutating func int(_ lo: Int, _ hi: Int) -> Int {
        precondition(lo <= hi, "empty range \(lo)...\(hi)")
        return lo + Int(next() % UInt64(hi - lo + 1))
    }
}

/// The random choices of one scenario run, all drawn up front from its seed in a fixed order
/// (victim, step, pause, network prefix, bit flip) whatever the scenario uses.
public struct FaultPlan: Equatable, Sendable {
    /// The worker hit, 1...workers (worker `w<victim>`).
    public var victim: Int
    /// The step at (or after) which the fault is injected.
    public var step: Int
    /// How long a worker is stopped or its link is down, in seconds (3...6).
    public var pause: Int
    /// link-cut's addresses are 10.<netPrefix>.K.0/24, netPrefix in 200...249.
    public var netPrefix: Int
    /// checkpoint-bitflip: the byte is `flipDraw % size`, the bit `flipBit` (0...7).
    public var flipDraw: UInt64
    public var flipBit: Int

    public init(scenario: Scenario, seed: Int, workers: Int, steps: Int) {
        var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: seed))
        victim = rng.int(1, workers)
        let ck = Configurations.smallCheckpointEvery
        switch scenario {
        case .workerKill, .reducerKill, .ownerOptimizerKill: step = rng.int(30, steps * 6 / 10)
        case .workerStop, .workerRestart, .linkCut: step = rng.int(30, steps / 2)
        case .coordinatorKill: step = rng.int(ck + 1, steps * 6 / 10)
        case .checkpointBitflip: step = rng.int(2 * ck + 5, steps * 6 / 10)
        case .coordinatorKillCheckpoint, .diskFull: step = rng.int(0, 0)
        }
        pause = rng.int(3, 6)
        netPrefix = rng.int(200, 249)
        flipDraw = rng.next()
        flipBit = rng.int(0, 7)
    }

    /// The byte offset flipped in a checkpoint of `size` bytes.
    public func flipOffset(size: Int) -> Int { Int(flipDraw % UInt64(max(size, 1))) }
}

/// checkpoint-bitflip's corruption: bit `bit` of byte `offset`, in place.
public func flipBit(_ bytes: inout [UInt8], offset: Int, bit: Int) {
    precondition(bytes.indices.contains(offset) && (0...7).contains(bit), "no bit \(bit) at byte \(offset) of \(bytes.count)")
    bytes[offset] ^= UInt8(1) << UInt8(bit)
}
