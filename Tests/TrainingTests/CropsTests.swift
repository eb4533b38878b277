import Datasets
import Diffusion
import Foundation
import TensorCore
import Testing
@testable import Training

/// SPEC O5 crops: the crops classifier, the sigma_max annotation of Ambient-Omni eq. (3.4) and
/// the donut in annotated training.
@Suite(.serialized) struct CropsTests {
    /// 8x8 images. In-distribution: i.i.d. pixels +-0.5. "Agree locally": a random 4x4 tile of
    /// such pixels repeated 2x2 (every 3x3 crop holds 9 distinct i.i.d. pixels, exactly the
    /// in-distribution law; globally periodic). "Differ locally": 2x2 blocks of equal pixels
    /// (every 3x3 crop holds a whole block).
    enum Kind { case inDistribution, periodic, blocks }

    static func images(_ kind: Kind, count: Int, seed: UInt64) -> Tensor<Float> {
        var x = [Float](repeating: 0, count: count * 64)
        for i in 0..<count {
            var rng = CounterRNG(seed: seed, purpose: .syntheticData, sample: i)
            let draws = (0..<64).map { _ in Float(rng.uniform() < 0.5 ? -0.5 : 0.5) }
            for r in 0..<8 { for c in 0..<8 {
                switch kind {
                case .inDistribution: x[i * 64 + r * 8 + c] = draws[r * 8 + c]
                case .periodic: x[i * 64 + r * 8 + c] = draws[(r % 4) * 8 + c % 4]
                case .blocks: x[i * 64 + r * 8 + c] = draws[(r / 2 * 2) * 8 + c / 2 * 2]
                }
            } }
        }
        return Tensor(shape: [count, 64], storage: x)
    }

    /// A crop map saying 3x3 crops suffice up to sigma 0.4 and the whole image is needed above.
    static let map = CropMap(source: "synthetic", imageShape: [1, 8, 8], sigmas: [0.05, 0.1, 0.2, 0.4, 0.8, 1.6], cropSizes: [3, 8],
                             mse: [[1, 1], [1, 1], [1, 1], [1, 1], [2, 1], [2, 1]], tolerance: 0.05, rawCrop: [3, 3, 3, 3, 8, 8],
                             crop: [3, 3, 3, 3, 8, 8], database: 0, queries: 0, positions: [[4, 4]], seed: 0)

    func annotate(_ ood: Kind) throws -> CropAnnotator.Result {
        let n = 2000
        let samples = Tensor.concatenate([Self.images(.inDistribution, count: n, seed: 1), Self.images(ood, count: n, seed: 2)])
        let data = TrainingData(samples: samples, sigmaN: [Double](repeating: 0, count: 2 * n), imageShape: [1, 8, 8],
                                clean: (0..<(2 * n)).map { $0 < n }, summary: "synthetic \(ood)")
        var config = RunConfig(data: .npy(path: "-"), objective: .classifier, steps: 800, batch: 256, shards: 2, seed: 4, learningRate: 2e-3,
                               warmupSteps: 50, emaDecay: 0.99,
                               model: .mlp(MLPConfig(dataDimension: 9, width: 64, blocks: 2, embeddingSize: 16, outputDimension: 1)))
        config.classifierCrop = 3
        let session = try TrainingSession(config: config, data: data, threads: 1)
        for _ in 0..<config.steps { try session.step() }
        let classifier = NoiseConditionedClassifier(network: session.network, schedule: config.schedule)
        let annotator = CropAnnotator(grid: Self.map.sigmas, draws: 16, tau: 0.45)
        let held = Self.images(ood, count: 200, seed: 3)
        return annotator.annotate(images: held.reshaped([200, 1, 8, 8]), indices: Array(0..<200),
                                  classifiers: [.init(size: 3, classifier: classifier, store: session.emaStore())], map: Self.map, seed: 5)
    }

    /// The evidence of step 5: out-of-distribution data that agrees with the clean data on 3x3
    /// crops gets the highest admissible sigma_max (0.4); data that differs on 3x3 crops gets less.
    @Test func sigmaMaxIsLargerWhenCropsAgree() throws {
        let agree = try annotate(.periodic), differ = try annotate(.blocks)
        func median(_ r: CropAnnotator.Result) -> Double { r.perSample.sorted()[r.perSample.count / 2] }
        let report = "agree locally: per set \(agree.perSet), per-sample median \(median(agree)), mean p \(agree.meanProbability)\n" +
            "differ locally: per set \(differ.perSet), per-sample median \(median(differ)), mean p \(differ.meanProbability)"
        print(report)
        #expect(agree.cropUsed == [3, 3, 3, 3, nil, nil], "levels above 0.4 need the whole image: not admissible with a 3x3 classifier")
        #expect(agree.perSet == 0.4, "\(report)")
        #expect(differ.perSet < agree.perSet && median(differ) < median(agree), "\(report)")
    }

    /// The donut rows of `TrainingData.fromDirectory`.
    @Test func donutRows() throws {
        let samples = Tensor<Float>(shape: [4, 1, 1, 2], storage: [0, 1, 2, 3, 4, 5, 6, 7])
        var manifest = DatasetDirectory.Manifest(source: "t", corruption: "ood:1", cleanFraction: 0.25, seed: 0, count: 4, sampleShape: [1, 1, 2])
        manifest.sigmaMax = 80
        // 0 clean; 1 sigma_min 0.5, sigma_max 0.2 (both parts); 2 never crossed, sigma_max 0.3
        // (low part only); 3 sigma_min 0.75, sigma_max 0 (O2 part only).
        let c = DatasetDirectory.Contents(manifest: manifest, samples: samples, annotations: [0, 0.5, 80, 0.75], sigmaMax: [80, 0.2, 0.3, 0],
                                          labels: [0, 1, 2, 3], clean: [true, false, false, false])
        let data = try TrainingData.fromDirectory(c, path: "t", seed: 1, applyAnnotations: true)
        #expect(data.labels == [0, 1, 1, 2, 3])
        #expect(data.sigmaN == [0, 0, 0.5, 0, 0.75])
        #expect(data.sigmaCeiling == [.infinity, 0.2, .infinity, 0.3, .infinity])
        #expect(Array(data.samples[row: 1]) == [2, 3] && Array(data.samples[row: 3]) == [4, 5], "low rows hold the stored sample")
        #expect(Array(data.samples[row: 2]) != [2, 3], "the O2 row holds the fixed noisy copy")
        // Without sigma-max.npy nothing changes: the never-crossed sample is dropped, no ceilings.
        var old = c
        old.sigmaMax = nil
        let before = try TrainingData.fromDirectory(old, path: "t", seed: 1, applyAnnotations: true)
        #expect(before.labels == [0, 1, 3] && before.sigmaCeiling == nil)
        #expect(Array(before.samples[row: 1]) == Array(data.samples[row: 2]))
    }

    /// The truncated log-normal: inside (lo, hi], distributed as rejection sampling gives.
    @Test func sigmaBetweenBounds() {
        let edm = EDMSchedule()
        var inside: [Double] = [], rejected: [Double] = []
        for i in 0..<20000 {
            var rng = CounterRNG(seed: 1, purpose: .trainSigma, sample: i)
            inside.append(edm.sampleSigma(above: 0.1, below: 0.5, &rng))
        }
        var i = 0
        while rejected.count < 20000 {
            var rng = CounterRNG(seed: 2, purpose: .trainSigma, sample: i)
            i += 1
            let s = edm.sampleSigma(&rng)
            if s > 0.1 && s <= 0.5 { rejected.append(s) }
        }
        #expect(inside.allSatisfy { $0 > 0.1 && $0 <= 0.5 })
        let meanLog = { (v: [Double]) in v.map { log($0) }.reduce(0, +) / Double(v.count) }
        #expect(abs(meanLog(inside) - meanLog(rejected)) < 0.01, "\(meanLog(inside)) vs \(meanLog(rejected))")
        var rng = CounterRNG(seed: 3, purpose: .trainSigma)
        #expect(edm.sampleSigma(above: 0, below: 0.01, &rng) <= 0.01)
    }
}
