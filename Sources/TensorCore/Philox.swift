#if canImport(Glibc)
import Glibc
#endif

/// What a random draw is for. Part of every RNG key, so that two uses never share numbers.
public enum RandomPurpose: UInt8, Sendable, Codable {
    case parameterInit = 1
    case dataOrder = 2
    /// Fixed per-sample corruption (noise, masks) of simulated datasets: keyed by sample index only.
    case corruption = 3
    case trainSigma = 4
    case trainNoise = 5
    case sampling = 6
    case syntheticData = 7
    case furtherMask = 8
    case consistency = 9
    case classifier = 10
    case annotation = 11
    case evaluation = 12
    case embedding = 13
    case split = 14
}

/// The coordinates of a random stream: (seed, purpose, step, shard, sample).
///
/// The same key gives the same numbers on every machine and in every process, whatever the
/// batch layout or the number of workers (SPEC, Conventions).
public struct RandomKey: Hashable, Sendable {
    public var seed: UInt64
    public var purpose: RandomPurpose
    public var step: UInt32
    public var shard: UInt32
    public var sample: UInt32

    public init(seed: UInt64, purpose: RandomPurpose, step: Int = 0, shard: Int = 0, sample: Int = 0) {
        precondition(step >= 0 && step <= Int(UInt32.max), "step \(step) out of RNG range")
        precondition(shard >= 0 && shard < (1 << 24), "shard \(shard) out of RNG range")
        precondition(sample >= 0 && sample <= Int(UInt32.max), "sample \(sample) out of RNG range")
        self.seed = seed
        self.purpose = purpose
        self.step = UInt32(step)
        self.shard = UInt32(shard)
        self.sample = UInt32(sample)
    }

    /// The same key for another sample.
    public func sample(_ i: Int) -> RandomKey {
        var k = self
        precondition(i >= 0 && i <= Int(UInt32.max), "sample \(i) out of RNG range")
        k.sample = UInt32(i)
        return k
    }
}

/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
/// a counter-based generator. The 128-bit counter holds (block, sample, step, purpose|shard),
/// the 64-bit key holds the seed; block counts up as numbers are drawn.
public struct CounterRNG: Sendable {
    public let key: RandomKey
    private var block: UInt32 = 0
    private var buffer: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var used = 4
    private var spareNormal: Double? = nil

    public init(_ key: RandomKey) { self.key = key }

    public init(seed: UInt64, purpose: RandomPurpose, step: Int = 0, shard: Int = 0, sample: Int = 0) {
        self.init(RandomKey(seed: seed, purpose: purpose, step: step, shard: shard, sample: sample))
    }

    /// One Philox4x32-10 block for an explicit counter and key.
    @inline(__always)
    public static func philox(counter c: (UInt32, UInt32, UInt32, UInt32),
                              key k: (UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
        var (c0, c1, c2, c3) = c
        var (k0, k1) = k
        for _ in 0..<10 {
            let p0 = UInt64(0xD251_1F53) &* UInt64(c0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
            k0 &+= 0x9E37_79B9
            k1 &+= 0xBB67_AE85
        }
        return (c0, c1, c2, c3)
    }

    @inline(__always)
    private mutating func refill() {
        let c = (block, key.sample, key.step, (UInt32(key.purpose.rawValue) << 24) | key.shard)
        let k = (UInt32(truncatingIfNeeded: key.seed), UInt32(truncatingIfNeeded: key.seed >> 32))
        buffer = CounterRNG.philox(counter: c, key: k)
        block &+= 1
        used = 0
    }

    /// The next 32 random bits.
    @inline(__always)
    public mutating func next() -> UInt32 {
        if used == 4 { refill() }
        defer { used += 1 }
        switch used {
        case 0: return buffer.0
        case 1: return buffer.1
        case 2: return buffer.2
        default: return buffer.3
        }
    }

    /// Uniform in the open-closed interval (0, 1], with 32 bits of resolution.
    @inline(__always)
    public mutating func uniform() -> Double {
        (Double(next()) + 1) * (1.0 / 4_294_967_296.0)
    }

    /// Uniform integer in 0..<n (n > 0), by rejection so every value is equally likely.
    public mutating func int(below n: Int) -> Int {
        precondition(n > 0 && n <= Int(UInt32.max))
        let bound = UInt32(n)
        let limit = UInt32.max - (UInt32.max % bound)
        while true {
            let r = next()
            if r < limit { return Int(r % bound) }
        }
    }

    /// Standard normal by Box-Muller, computed in Double.
    @inline(__always)
    public mutating func normal() -> Double {
        if let s = spareNormal {
            spareNormal = nil
            return s
        }
        let u1 = uniform(), u2 = uniform()
        let r = (-2 * Glibc.log(u1)).squareRoot()
        let theta = 2 * Double.pi * u2
        spareNormal = r * Glibc.sin(theta)
        return r * Glibc.cos(theta)
    }

    public mutating func fillNormal<T: Scalar>(_ p: UnsafeMutablePointer<T>, count: Int, scale: Double = 1) {
        for i in 0..<count { p[i] = T(normal() * scale) }
    }

    public mutating func normals<T: Scalar>(_ count: Int, as: T.Type = T.self) -> [T] {
        var out = [T](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { fillNormal($0.baseAddress!, count: count) }
        return out
    }

    /// A uniformly random permutation of 0..<n (Fisher-Yates).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n < 2 { return p }
        for i in stride(from: n - 1, to: 0, by: -1) {
            let j = int(below: i + 1)
            p.swapAt(i, j)
        }
        return p
    }
}
