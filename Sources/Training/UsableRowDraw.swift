import Diffusion
import Foundation
import TensorCore

/// SPEC O5 "Draw order": for data whose rows are usable at different noise levels (annotated
/// Ambient-o data: clean rows at every sigma, a corrupted row only at `sigma > b sigma_i^min`,
/// a crops row only at `sigma <= sigma_i^max`), each slot of the global batch first draws its
/// training sigma from the training distribution (the log-normal) and then a row uniformly
/// among the rows usable at that sigma.
///
/// This is the authors' sampler in distribution (ambient-omni, pixel-diffusion
/// torch_utils/misc.py:146-170 `InfiniteSampler.__iter__`: draw sigma, walk the shuffled order
/// to the next image usable at it, yield it with that sigma, draw a new sigma), without its
/// dependence on the walk position: the choice among usable rows is exactly uniform. Hence
/// the sigmas of the batch follow the log-normal (restricted to levels where some row is
/// usable) and a row whose usable range is a set of levels where the usable population is
/// constant (a corrupted row of a two-level data set) sees its sigma distributed as the
/// log-normal restricted to that range. Drawing the row first and then a sigma truncated above
/// `b sigma_i^min` (what O2 does for uniformly noisy data) would give every strongly corrupted
/// row a far-tail sigma in every batch.
///
/// Every draw is keyed by (seed, step, global row), so the rows and sigmas of a shard are the
/// same whichever process computes it and however many workers there are.
public struct UsableRowDraw: Sendable {
    /// Per row: usable at sigma when `lower < sigma <= upper`.
    public let lower: [Double]
    public let upper: [Double]
    public let schedule: EDMSchedule
    public let seed: UInt64
    /// Rows ordered by `lower` (ties by index), and the sorted bounds.
    private let order: [Int]
    private let sortedLower: [Double]
    private let hasCeilings: Bool
    /// The lowest level any row is usable at: sigma is drawn from the log-normal above it.
    private let floor: Double

    /// Bounded work per slot: redraws of sigma when no row is usable at it (only possible
    /// with ceilings); the initialiser checks the usable mass makes running out negligible.
    static let maxRedraws = 10_000

    public init(lower: [Double], upper: [Double], schedule: EDMSchedule, seed: UInt64) throws {
        precondition(lower.count == upper.count && !lower.isEmpty)
        self.lower = lower
        self.upper = upper
        self.schedule = schedule
        self.seed = seed
        order = lower.indices.sorted { (lower[$0], $0) < (lower[$1], $1) }
        sortedLower = order.map { lower[$0] }
        hasCeilings = upper.contains { $0.isFinite }
        floor = sortedLower[0]
        // Mass of the log-normal above the floor where some row is usable: at least the best row's.
        let mass = (0..<lower.count).map { schedule.probability(above: lower[$0], atMost: upper[$0]) }.max() ?? 0
        let above = schedule.probability(above: floor, atMost: .infinity)
        if !(mass > 0) || (hasCeilings && mass / above < 1e-2) {
            throw ConfigurationError(message: "no training row is usable at a useful share of the training noise levels (largest share \(mass)): check the annotations (sigma_min, sigma_max) of the data")
        }
    }

    /// The draw for annotated data used with O2 at buffer `b`: rows usable above
    /// `b sigma_n` and, when a row has a ceiling, at most up to it. Nil when every row has the
    /// same sigma_n and no ceiling: drawing the row first is then the same distribution, and
    /// runs on such data keep their numbers.
    public static func forAnnotatedData(_ data: TrainingData, buffer: Double, schedule: EDMSchedule, seed: UInt64) throws -> UsableRowDraw? {
        let floors = data.sigmaFloor ?? data.sigmaN
        let first = floors[0]
        if data.sigmaCeiling == nil && !floors.contains(where: { $0 != first }) { return nil }
        let upper = data.sigmaCeiling ?? [Double](repeating: .infinity, count: data.count)
        return try UsableRowDraw(lower: floors.map { buffer * $0 }, upper: upper, schedule: schedule, seed: seed)
    }

    /// The dataset index and training sigma of row `row` of the global batch of step `step`.
    public func draw(step: Int, row: Int) -> (index: Int, sigma: Double) {
        var rng = CounterRNG(seed: seed, purpose: .trainSigma, step: step, shard: Self.streamShard, sample: row)
        for _ in 0..<Self.maxRedraws {
            let sigma = schedule.sampleSigma(above: floor, &rng)
            let m = usablePrefix(sigma)
            let u = rng.uniform()
            guard m > 0 else { continue }
            if !hasCeilings { return (order[min(Int(u * Double(m)), m - 1)], sigma) }
            let count = (0..<m).reduce(0) { $0 + (sigma <= upper[order[$1]] ? 1 : 0) }
            guard count > 0 else { continue }
            var j = min(Int(u * Double(count)), count - 1)
            for k in 0..<m where sigma <= upper[order[k]] {
                if j == 0 { return (order[k], sigma) }
                j -= 1
            }
        }
        preconditionFailure("no usable row after \(Self.maxRedraws) sigma draws (checked impossible at init)")
    }

    /// Indices and sigmas of global batch rows `rows` of step `step`, in row order.
    public func draw(step: Int, rows: Range<Int>) -> (indices: [Int], sigmas: [Double]) {
        var indices: [Int] = [], sigmas: [Double] = []
        indices.reserveCapacity(rows.count)
        sigmas.reserveCapacity(rows.count)
        for r in rows {
            let d = draw(step: step, row: r)
            indices.append(d.index)
            sigmas.append(d.sigma)
        }
        return (indices, sigmas)
    }

    /// Number of rows (in `order`) with `lower < sigma`.
    private func usablePrefix(_ sigma: Double) -> Int {
        var lo = 0, hi = sortedLower.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sortedLower[mid] < sigma { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The shard coordinate of this stream: keyed by global row, not by shard, and apart from
    /// the per-shard `trainSigma` streams of the objectives (the RNG's largest shard).
    static let streamShard = (1 << 24) - 1
}

extension EDMSchedule {
    /// `P(lower < sigma <= upper)` under the training log-normal.
    public func probability(above lower: Double, atMost upper: Double) -> Double {
        let a = lower > 0 ? NormalDistribution.upperTail((log(lower) - pMean) / pStd) : 1
        let b = upper.isFinite ? NormalDistribution.upperTail((log(upper) - pMean) / pStd) : 0
        return max(a - b, 0)
    }
}
