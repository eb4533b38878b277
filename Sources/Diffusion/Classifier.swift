import Foundation
import TensorCore

/// The noise-conditioned classifier of Ambient-Omni (SPEC O5): `c(x, sigma)` is the logit of
/// "x is a noisy version of a clean sample", `F(c_in x, c_noise)` with the denoiser's input
/// scaling and noise embedding and a network whose output has one value.
///
/// Any `DenoiserNetwork` with `outputDimension == 1` fits: the MLP with `outputDimension: 1`
/// today, a U-Net encoder with a pooled head later, without changing this type.
public struct NoiseConditionedClassifier: Sendable {
    public let network: any DenoiserNetwork
    public let schedule: EDMSchedule
    /// Training noise levels: log-uniform over [sigma_min, sigma_max] of the schedule when true,
    /// else the EDM log-normal (the authors' and SPEC O5's, and the default since the annotation
    /// grid holds the log-normal's quantiles, `AnnotationGrid`). With the log-normal only 0.2% of
    /// training sigmas exceed 10: a log-spaced grid up to 80 makes the classifier extrapolate there.
    public let logUniformTraining: Bool

    public init(network: any DenoiserNetwork, schedule: EDMSchedule = EDMSchedule(), logUniformTraining: Bool = false) {
        precondition(network.outputDimension == 1, "a classifier network has one output, this one has \(network.outputDimension)")
        self.network = network
        self.schedule = schedule
        self.logUniformTraining = logUniformTraining
    }

    public var dimension: Int { network.dataDimension }

    /// Logits (rows, 1) of x (rows, d) at noise levels sigma (rows, 1).
    public func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, x: Var, sigma: Var) -> Var {
        let rows = tape.shape(x).rows
        precondition(tape.shape(x).cols == dimension && tape.shape(sigma) == (rows, 1))
        let cIn = tape.constant(rows: rows, cols: 1), cNoise = tape.scratch(rows)
        for r in 0..<rows {
            let s = Double(tape.value(sigma)[r])
            tape.value(cIn)[r] = T(schedule.cIn(s))
            cNoise[r] = T(schedule.cNoise(s))
        }
        return network.forward(tape, store, input: tape.scaleRows(x, cIn), cNoise: cNoise)
    }

    /// Logits of `rows` rows without gradients (the tape is reset first).
    public func evaluate<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, x: UnsafePointer<T>, rows: Int,
                                    sigma: UnsafePointer<Double>, into logits: UnsafeMutablePointer<T>) {
        precondition(!tape.recordsGradients, "evaluate needs an inference tape")
        tape.reset()
        let xv = tape.constant(x, rows: rows, cols: dimension)
        let sv = tape.column(rows: rows) { sigma[$0] }
        logits.update(from: tape.value(self(tape, store, x: xv, sigma: sv)), count: rows)
    }

    /// SPEC O5 classifier loss: binary cross-entropy of `c(w + sigma n, sigma)` against the
    /// label (1: a sample of the clean set S_G, 0: a corrupted sample), sigma from the training
    /// log-normal or log-uniform (purpose trainSigma), n of purpose trainNoise; divided by the
    /// global batch.
    /// The caller balances the batch between the two sets.
    public func loss<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, batch: ShardBatch<T>,
                                labels: UnsafePointer<T>) -> ObjectiveResult {
        let rows = batch.rows, d = batch.dimension
        let sigma = tape.column(rows: rows) { r in
            var rng = batch.rng(.trainSigma, row: r)
            guard logUniformTraining else { return schedule.sampleSigma(&rng) }
            let (lo, hi) = (log(schedule.sigmaMin), log(schedule.sigmaMax))
            return exp(lo + rng.uniform() * (hi - lo))
        }
        let x = tape.constant(rows: rows, cols: d)
        addNoise(tape, to: x, from: batch.data, sigma: sigma, batch: batch)
        let logits = self(tape, store, x: x, sigma: sigma)
        let targets = tape.constant(labels, rows: rows, cols: 1)
        let weights = tape.column(rows: rows) { _ in 1 / Double(batch.globalBatch) }
        let loss = tape.binaryCrossEntropyWithLogits(logits, targets: targets, weights: weights)
        var correct = 0
        for r in 0..<rows where (tape.value(logits)[r] > 0) == (labels[r] > 0.5) { correct += 1 }
        return ObjectiveResult(loss: loss, terms: ["bce": Double(tape.scalar(loss)), "accuracy": Double(correct) / Double(batch.globalBatch)])
    }
}

/// The classifier's training noise levels (`classifier train --sigma-distribution`).
public enum ClassifierSigmaDistribution: String, Codable, Sendable, CaseIterable {
    /// EDM's `exp(pMean + pStd N)`, as the authors train theirs.
    case lognormal
    /// Log-uniform over [sigma_min, sigma_max] of the schedule.
    case loguniform
}
