import Foundation
import Testing
import Diffusion
import TensorCore

/// A tiny network so finite differences over every parameter stay fast.
func tinyNetwork(d: Int = 3, conditioning: Int = 0) -> MLPNetwork {
    MLPNetwork(MLPConfig(dataDimension: d, conditioningChannels: conditioning, width: 6, blocks: 1, embeddingSize: 4))
}

/// Randomly initialised Double parameters (the output layer too, so every path carries gradient).
func randomStore(_ net: MLPNetwork, seed: UInt64) -> ParameterStore<Double> {
    let store = ParameterStore<Double>(layout: net.layout)
    var rng = CounterRNG(seed: seed, purpose: .parameterInit)
    store.fillNormal(&rng, scale: 0.5)
    return store
}

/// Evaluates an objective's loss on a fixed batch (the batch is captured, not a leaf).
func objectiveLoss(_ objective: any TrainingObjective, _ tape: Tape<Double>, _ denoiser: Denoiser,
                   _ store: ParameterStore<Double>, data: [Double], sigmaN: [Double], rows: Int, d: Int) -> Var {
    data.withUnsafeBufferPointer { dp in
        sigmaN.withUnsafeBufferPointer { sp in
            let batch = ShardBatch(data: dp.baseAddress!, rows: rows, dimension: d, sigmaN: sp.baseAddress!,
                                   seed: 11, step: 3, shard: 1, globalBatch: 8)
            return objective.loss(tape, denoiser: denoiser, store: store, batch: batch).loss
        }
    }
}

@Suite struct ObjectiveGradientTests {
    let rows = 4, d = 3

    func data() -> [Double] {
        var rng = CounterRNG(seed: 5, purpose: .evaluation)
        return (0..<(rows * d)).map { _ in rng.normal() }
    }

    @Test(arguments: ["dsm", "ambient"])
    func lossGradientsMatchFiniteDifferences(name: String) {
        let net = tinyNetwork(d: d)
        let store = randomStore(net, seed: 1)
        let denoiser = Denoiser(network: net)
        let objective: any TrainingObjective = name == "dsm" ? DenoisingScoreMatching() : AmbientScoreMatching()
        let x = data()
        let sigmaN = name == "dsm" ? [0, 0, 0, 0] : [0.5, 0.5, 0.8, 0]
        let r = GradientCheck.run(leaves: [], store: store, maxElementsPerTensor: 12) { t, _ in
            objectiveLoss(objective, t, denoiser, store, data: x, sigmaN: sigmaN, rows: rows, d: d)
        }
        #expect(r.checked > 90)
        #expect(r.maxRelativeError < 1e-6, "\(r)")
    }

    /// Gradient with respect to the denoiser input x and sigma, through the preconditioning.
    @Test func denoiserInputGradients() {
        let net = tinyNetwork(d: d)
        let store = randomStore(net, seed: 2)
        let denoiser = Denoiser(network: net)
        var rng = CounterRNG(seed: 6, purpose: .evaluation)
        let x = GradientCheck.Leaf("x", rows: 2, cols: d, values: (0..<(2 * d)).map { _ in rng.normal() })
        let r = GradientCheck.run(leaves: [x]) { t, v in
            let s = t.column(rows: 2) { [0.3, 2.0][$0] }
            let out = denoiser(t, store, x: v[0], sigma: s)
            let w = t.column(rows: 2) { _ in 1 }
            return t.weightedSumOfSquares(out, weights: w)
        }
        #expect(r.maxRelativeError < 1e-6, "\(r)")
    }
}

@Suite struct AmbientObjectiveTests {
    /// SPEC O2: the loss equals lambda ||D - x0*||^2 with x0* = (sigma^2 x_n - sigma_n^2 x)/(sigma^2 - sigma_n^2).
    @Test func equalsTheX0StarForm() {
        let net = tinyNetwork(d: 3)
        let store = randomStore(net, seed: 3)
        let denoiser = Denoiser(network: net)
        let (rows, d) = (4, 3)
        var rng = CounterRNG(seed: 7, purpose: .evaluation)
        let xn = (0..<(rows * d)).map { _ in rng.normal() }
        let sigmaN = [0.5, 0.7, 1.0, 0.2]
        let tape = Tape<Double>(recordsGradients: false)
        let loss = objectiveLoss(AmbientScoreMatching(), tape, denoiser, store, data: xn, sigmaN: sigmaN, rows: rows, d: d)
        let ambient = tape.scalar(loss)

        // Recompute independently: same sigma and noise streams, x0* target.
        let edm = EDMSchedule()
        let b = AmbientScoreMatching.buffer(sMax: 4)
        var expected = 0.0
        let t2 = Tape<Double>(recordsGradients: false)
        for r in 0..<rows {
            var srng = CounterRNG(seed: 11, purpose: .trainSigma, step: 3, shard: 1, sample: r)
            let sigma = edm.sampleSigma(above: b * sigmaN[r], &srng)
            #expect(sigma > b * sigmaN[r])
            var nrng = CounterRNG(seed: 11, purpose: .trainNoise, step: 3, shard: 1, sample: r)
            let extra = (sigma * sigma - sigmaN[r] * sigmaN[r]).squareRoot()
            let x = (0..<d).map { xn[r * d + $0] + extra * nrng.normal() }
            var dx = [Double](repeating: 0, count: d)
            x.withUnsafeBufferPointer { xp in
                [sigma].withUnsafeBufferPointer { sp in
                    dx.withUnsafeMutableBufferPointer { denoiser.evaluate(t2, store, x: xp.baseAddress!, rows: 1, sigma: sp.baseAddress!, into: $0.baseAddress!) }
                }
            }
            let s2 = sigma * sigma, n2 = sigmaN[r] * sigmaN[r]
            var sq = 0.0
            for j in 0..<d {
                let x0Star = (s2 * xn[r * d + j] - n2 * x[j]) / (s2 - n2)
                sq += (dx[j] - x0Star) * (dx[j] - x0Star)
            }
            expected += edm.lossWeight(sigma) * sq / 8
        }
        #expect(abs(ambient - expected) < 1e-9 * max(1, abs(expected)), "\(ambient) vs \(expected)")
    }

    /// With sigma_n = 0 the ambient loss is exactly the DSM loss (same random streams).
    @Test func reducesToDSMOnCleanRows() {
        let net = tinyNetwork(d: 3)
        let store = randomStore(net, seed: 4)
        let denoiser = Denoiser(network: net)
        var rng = CounterRNG(seed: 8, purpose: .evaluation)
        let x = (0..<12).map { _ in rng.normal() }
        let zeros = [Double](repeating: 0, count: 4)
        let t = Tape<Double>(recordsGradients: false)
        let a = t.scalar(objectiveLoss(AmbientScoreMatching(), t, denoiser, store, data: x, sigmaN: zeros, rows: 4, d: 3))
        let b = t.scalar(objectiveLoss(DenoisingScoreMatching(), t, denoiser, store, data: x, sigmaN: zeros, rows: 4, d: 3))
        #expect(abs(a - b) < 1e-12 * max(1, abs(a)))
    }
}
