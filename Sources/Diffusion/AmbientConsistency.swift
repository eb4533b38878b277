import Foundation
import TensorCore

/// SPEC O2 + O4: ambient DSM plus the consistency term that extends the denoiser below
/// sigma_n (Daras et al. 2024, eq. 3.6; consistent diffusion models). Per row with sigma_n > 0:
///
/// 1. x at sigma_t > b sigma_n, as in O2 (the same x and sigma as the O2 term);
/// 2. sigma' log-uniform in [sigma_min, min(1.5 sigma_n, sigma_t)]; `samplerSteps` Euler-Maruyama
///    steps of the reverse SDE from x down to sigma', without gradient: x';
/// 3. sigma'' = max(sigma' - e, sigma_min), e ~ U(0, 0.05); from x' two independent
///    Euler-Maruyama steps `x'' = x' + 2(sigma'' - sigma')(x' - D(x', sigma'))/sigma'
///    + sqrt(2 |sigma' - sigma''| sigma') z`, without gradient: x1, x2;
/// 4. loss `lambda_c lambda(sigma'') (D(x1, sigma'') - a)^T (D(x2, sigma'') - a)` with the anchor
///    `a = D(x', sigma')` held constant (stop-gradient).
///
/// This is the recipe SPEC reports as working (stop-gradient anchor, weight lambda(sigma''),
/// sigma' below 1.5 sigma_n). The no-gradient passes run on a separate inference tape (the
/// training tape holds the O2 graph); x1 and x2 go through the network as one batch of 2R rows.
public struct AmbientConsistency: TrainingObjective {
    public static let defaultWeight = 1.0
    public var name: String { "consistency" }
    public var ambient: AmbientScoreMatching
    /// lambda_c.
    public var weight: Double
    /// Euler-Maruyama steps from sigma_t down to sigma'.
    public var samplerSteps: Int
    /// sigma' is drawn below `upperFactor sigma_n` (SPEC: 1.5).
    public var upperFactor: Double
    /// Largest gap e between sigma' and sigma''.
    public var maxGap: Double

    public init(buffer: Double = AmbientScoreMatching.buffer(sMax: 4), weight: Double = AmbientConsistency.defaultWeight,
                samplerSteps: Int = 4, upperFactor: Double = 1.5, maxGap: Double = 0.05) {
        precondition(weight >= 0 && samplerSteps >= 1 && upperFactor > 0 && maxGap > 0)
        ambient = AmbientScoreMatching(buffer: buffer)
        self.weight = weight
        self.samplerSteps = samplerSteps
        self.upperFactor = upperFactor
        self.maxGap = maxGap
    }

    public func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                                batch: ShardBatch<T>) -> ObjectiveResult {
        let sigma = ambient.drawSigma(tape, denoiser: denoiser, batch: batch)
        let o2 = AmbientScoreMatching.loss(tape, denoiser: denoiser, store: store, batch: batch, base: batch.data,
                                           sigmaN: batch.sigmaN, sigma: sigma)
        guard weight > 0 else {
            return ObjectiveResult(loss: o2.loss, terms: ["denoising": Double(tape.scalar(o2.loss)), "consistency": 0])
        }
        let sigmaT = (0..<batch.rows).map { Double(tape.value(sigma)[$0]) }
        let b = branches(denoiser: denoiser, store: store, batch: batch, x: tape.value(o2.x), sigmaT: sigmaT)
        let term = Self.term(tape, denoiser: denoiser, store: store, branches: b)
        return ObjectiveResult(loss: tape.add(o2.loss, term),
                               terms: ["denoising": Double(tape.scalar(o2.loss)), "consistency": Double(tape.scalar(term))])
    }

    /// What steps 1-3 produce, all constants of the step: the two branches `[x1; x2]` (2R, d),
    /// the anchors `D(x', sigma')` (R, d), sigma'' and the row weights
    /// `lambda_c lambda(sigma'') / B` (0 for clean rows).
    public struct Branches<T: Scalar> {
        public var pair: [T]
        public var anchors: [T]
        public var sigmaPP: [Double]
        public var weights: [Double]
        public var rows: Int
        public var dimension: Int
    }

    /// Steps 1-3 without gradient, on a separate inference tape (`Denoiser.evaluate` resets the
    /// tape it is given, which must not be the training tape holding the O2 graph).
    public func branches<T: Scalar>(denoiser: Denoiser, store: ParameterStore<T>, batch: ShardBatch<T>,
                                    x: UnsafePointer<T>, sigmaT: [Double]) -> Branches<T> {
        let (rows, d) = (batch.rows, batch.dimension)
        let edm = denoiser.schedule
        let inference = batch.inferenceTape ?? Tape<T>(recordsGradients: false, initialCapacity: 8 * rows * max(d, 64))
        var rngs = (0..<rows).map { batch.rng(.consistency, row: $0) }
        var sigmaP = sigmaT, sigmaPP = sigmaT
        for r in 0..<rows {
            let sn = batch.sigmaN[r]
            let lo = edm.sigmaMin, hi = max(min(upperFactor * sn, sigmaT[r]), lo)
            sigmaP[r] = sn > 0 ? exp(log(lo) + rngs[r].uniform() * (log(hi) - log(lo))) : sigmaT[r]
            sigmaPP[r] = max(sigmaP[r] - maxGap * rngs[r].uniform(), edm.sigmaMin)
        }
        // Steps 1-2: Euler-Maruyama from x at sigma_t down to x' at sigma' on a geometric grid.
        var xp = Array(UnsafeBufferPointer(start: x, count: rows * d))
        var den = [T](repeating: 0, count: rows * d)
        var level = sigmaT, next = sigmaT
        func evaluate(_ at: [T], _ sigmas: [Double]) {
            at.withUnsafeBufferPointer { a in sigmas.withUnsafeBufferPointer { s in den.withUnsafeMutableBufferPointer { o in
                denoiser.evaluate(inference, store, x: a.baseAddress!, rows: rows, sigma: s.baseAddress!, into: o.baseAddress!)
            } } }
        }
        for k in 1...samplerSteps {
            for r in 0..<rows { next[r] = sigmaT[r] * pow(sigmaP[r] / sigmaT[r], Double(k) / Double(samplerSteps)) }
            evaluate(xp, level)
            xp.withUnsafeMutableBufferPointer { xb in den.withUnsafeBufferPointer { db in
                for r in 0..<rows {
                    Self.reverseStep(xb.baseAddress! + r * d, denoised: db.baseAddress! + r * d, count: d, from: level[r], to: next[r],
                                     rng: &rngs[r], into: xb.baseAddress! + r * d)
                }
            } }
            level = next
        }
        // Step 3: the anchor D(x', sigma') and two independent steps to sigma''.
        evaluate(xp, sigmaP)
        var pair = [T](repeating: 0, count: 2 * rows * d)
        xp.withUnsafeBufferPointer { xb in den.withUnsafeBufferPointer { db in pair.withUnsafeMutableBufferPointer { pb in
            for branch in 0..<2 {
                for r in 0..<rows {
                    Self.reverseStep(xb.baseAddress! + r * d, denoised: db.baseAddress! + r * d, count: d, from: sigmaP[r], to: sigmaPP[r],
                                     rng: &rngs[r], into: pb.baseAddress! + (branch * rows + r) * d)
                }
            }
        } } }
        let weights = (0..<rows).map { r in
            batch.sigmaN[r] > 0 ? weight * edm.lossWeight(sigmaPP[r]) / Double(batch.globalBatch) : 0
        }
        return Branches(pair: pair, anchors: den, sigmaPP: sigmaPP, weights: weights, rows: rows, dimension: d)
    }

    /// Step 4: `sum_r w_r (D(x1_r, sigma'') - a_r)^T (D(x2_r, sigma'') - a_r)`, with x1 and x2
    /// through the network as one batch of 2R rows and the anchors a constant.
    public static func term<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>, branches b: Branches<T>) -> Var {
        let (rows, d) = (b.rows, b.dimension)
        let pair = b.pair.withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: 2 * rows, cols: d) }
        let anchors = tape.constant(rows: 2 * rows, cols: d)
        for branch in 0..<2 { b.anchors.withUnsafeBufferPointer { (tape.value(anchors) + branch * rows * d).update(from: $0.baseAddress!, count: rows * d) } }
        let pairSigma = tape.column(rows: 2 * rows) { b.sigmaPP[$0 % rows] }
        let u = tape.sub(denoiser(tape, store, x: pair, sigma: pairSigma), anchors)
        let w = tape.column(rows: rows) { b.weights[$0] }
        return tape.weightedDot(tape.sliceRows(u, start: 0, count: rows), tape.sliceRows(u, start: rows, count: rows), weights: w)
    }

    /// One Euler-Maruyama step of the reverse SDE from `sigma` to `next` < sigma:
    /// `x + 2 (next - sigma)(x - D)/sigma + sqrt(2 |sigma - next| sigma) z` (SPEC O4 step 3).
    @inline(__always)
    static func reverseStep<T: Scalar>(_ x: UnsafePointer<T>, denoised: UnsafePointer<T>, count: Int, from sigma: Double, to next: Double,
                                       rng: inout CounterRNG, into out: UnsafeMutablePointer<T>) {
        let drift = T(2 * (next - sigma) / sigma), spread = (2 * abs(sigma - next) * sigma).squareRoot()
        for j in 0..<count { out[j] = x[j] + drift * (x[j] - denoised[j]) + T(spread * rng.normal()) }
    }
}
