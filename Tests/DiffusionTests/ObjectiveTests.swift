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

/// Gradient checks of the objectives of SPEC O3-O6 and of the O5 classifier loss.
@Suite struct LaterObjectiveGradientTests {
    let rows = 4, d = 3

    func data(seed: UInt64 = 5) -> [Double] {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return (0..<(rows * d)).map { _ in rng.normal() }
    }

    func check(_ objective: any TrainingObjective, conditioning: Int = 0, sigmaN: [Double], mask: [Double]? = nil,
               tolerance: Double = 1e-6) {
        let net = tinyNetwork(d: d, conditioning: conditioning)
        let store = randomStore(net, seed: 21)
        let denoiser = Denoiser(network: net)
        let x = data()
        let indices = [7, 2, 40, 3]
        let r = GradientCheck.run(leaves: [], store: store, maxElementsPerTensor: 12) { t, _ in
            x.withUnsafeBufferPointer { dp in sigmaN.withUnsafeBufferPointer { sp in indices.withUnsafeBufferPointer { ip in
                (mask ?? []).withUnsafeBufferPointer { mp in
                    let batch = ShardBatch(data: dp.baseAddress!, rows: rows, dimension: d, sigmaN: sp.baseAddress!,
                                           mask: mask == nil ? nil : mp.baseAddress!, sampleIndices: ip.baseAddress!,
                                           seed: 11, step: 3, shard: 1, globalBatch: 8)
                    return objective.loss(t, denoiser: denoiser, store: store, batch: batch).loss
                }
            } } }
        }
        #expect(r.checked > 90)
        #expect(r.maxRelativeError < tolerance, "\(objective.name): \(r)")
    }

    @Test func furtherCorruption() {
        check(FurtherCorruption(delta: 0.3), conditioning: 1, sigmaN: [0, 0, 0, 0], mask: [1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1])
    }

    /// SPEC O4: the gradient flows through D(x1) and D(x2) only; the sampler passes and the
    /// anchor are constants of the step (stop-gradient). So the term is checked against finite
    /// differences with the branches held fixed, and the objective against O2 + that term.
    @Test func consistencyTermAndAssembly() {
        let net = tinyNetwork(d: d)
        let store = randomStore(net, seed: 23)
        let denoiser = Denoiser(network: net)
        let x = data(seed: 8)
        let sigmaN = [0.5, 0.5, 0.3, 0]
        let objective = AmbientConsistency(weight: 2)
        x.withUnsafeBufferPointer { dp in sigmaN.withUnsafeBufferPointer { sp in
            let batch = ShardBatch(data: dp.baseAddress!, rows: rows, dimension: d, sigmaN: sp.baseAddress!,
                                   seed: 11, step: 3, shard: 1, globalBatch: 8)
            // The whole objective on a training tape: value and gradient.
            let tape = Tape<Double>()
            store.zeroGrads()
            let full = objective.loss(tape, denoiser: denoiser, store: store, batch: batch)
            tape.backward(full.loss)
            let fullGrad = Array(store.gradBuffer)
            let sigma = (0..<rows).map { r -> Double in
                var rng = batch.rng(.trainSigma, row: r)
                return denoiser.schedule.sampleSigma(above: objective.ambient.buffer * sigmaN[r], &rng)
            }
            // The O2 part alone, and the branches rebuilt from the same x.
            let t2 = Tape<Double>()
            store.zeroGrads()
            let o2 = AmbientScoreMatching().loss(t2, denoiser: denoiser, store: store, batch: batch)
            t2.backward(o2.loss)
            let o2Grad = Array(store.gradBuffer)
            var xs = [Double](repeating: 0, count: rows * d)
            for r in 0..<rows {
                var rng = batch.rng(.trainNoise, row: r)
                let extra = (sigma[r] * sigma[r] - sigmaN[r] * sigmaN[r]).squareRoot()
                for j in 0..<d { xs[r * d + j] = x[r * d + j] + extra * rng.normal() }
            }
            let branches = xs.withUnsafeBufferPointer {
                objective.branches(denoiser: denoiser, store: store, batch: batch, x: $0.baseAddress!, sigmaT: sigma)
            }
            #expect(branches.weights[3] == 0 && branches.weights[0] > 0)
            let t3 = Tape<Double>()
            store.zeroGrads()
            let term = AmbientConsistency.term(t3, denoiser: denoiser, store: store, branches: branches)
            t3.backward(term)
            let termGrad = Array(store.gradBuffer)
            #expect(abs(t2.scalar(o2.loss) + t3.scalar(term) - tape.scalar(full.loss)) < 1e-9 * max(1, abs(tape.scalar(full.loss))))
            let worst = (0..<fullGrad.count).map { abs(fullGrad[$0] - o2Grad[$0] - termGrad[$0]) }.max() ?? 0
            #expect(worst < 1e-9, "assembled gradient differs by \(worst)")
            // Finite differences of the term with the branches fixed.
            let r = GradientCheck.run(leaves: [], store: store, maxElementsPerTensor: 12) { t, _ in
                AmbientConsistency.term(t, denoiser: denoiser, store: store, branches: branches)
            }
            #expect(r.checked > 90)
            #expect(r.maxRelativeError < 1e-6, "\(r)")
        } }
    }

    @Test func memorizationSplit() {
        check(MemorizationSplit(sigmaN: 0.4), sigmaN: [0, 0, 0, 0])
    }

    @Test func classifierBCE() {
        let net = MLPNetwork(MLPConfig(dataDimension: d, width: 6, blocks: 1, embeddingSize: 4, outputDimension: 1))
        let store = randomStore(net, seed: 22)
        let classifier = NoiseConditionedClassifier(network: net)
        let x = data(seed: 6)
        let labels = [1.0, 0, 1, 0]
        let zeros = [Double](repeating: 0, count: rows)
        let r = GradientCheck.run(leaves: [], store: store, maxElementsPerTensor: 12) { t, _ in
            x.withUnsafeBufferPointer { dp in zeros.withUnsafeBufferPointer { sp in labels.withUnsafeBufferPointer { lp in
                let batch = ShardBatch(data: dp.baseAddress!, rows: rows, dimension: d, sigmaN: sp.baseAddress!,
                                       seed: 11, step: 3, shard: 1, globalBatch: 8)
                return classifier.loss(t, store, batch: batch, labels: lp.baseAddress!).loss
            } } }
        }
        #expect(r.checked > 60)
        #expect(r.maxRelativeError < 1e-6, "\(r)")
    }
}
