import Datasets
import Diffusion
import Foundation
import TensorCore
import Testing
import Training

/// SPEC O5 on a Gaussian mixture: for each corruption strength s (Gaussian noise of std s,
/// unknown to the method) a classifier learns clean vs corrupted, and annotation gives each
/// corrupted sample the level where noise hides the corruption. It rises with s; clean samples
/// are annotated at the bottom of the grid. (It sits above s: in d = 16 the variance ratio
/// (sigma^2 + s^2)/sigma^2 stays detectable until sigma is about s d^(1/4) = 2s, and the
/// smoothing lags. Measured: s 0.2, 0.4, 0.8 -> 0.035, 1.41, 3.27.)
///
/// One classifier per strength, as in the paper's setting of one corruption process: with
/// several strengths in one corrupted set, the weakly corrupted samples look cleaner than the
/// corrupted population on average (P(clean | x) > 0.5 for them at every sigma), so they
/// would be annotated as clean.
@Suite(.serialized) struct AnnotationOracleTests {
    @Test func annotationRisesWithCorruptionStrength() throws {
        let gmm = GaussianMixture.standard(dimension: 16, components: 4, seed: 3)
        let perGroup = 4000
        let clean = gmm.sample(count: perGroup, seed: 1).x
        let annotator = Annotator(grid: Annotator.logGrid(count: 64, from: 0.002, to: 80), draws: 4, span: 8)
        var lines: [String] = []
        var medians: [Double] = []
        for s in [0.2, 0.4, 0.8] {
            let corruptedIndices = Array(perGroup..<(2 * perGroup))
            let w = gmm.sample(indices: perGroup..<(2 * perGroup), seed: 1).x
            let samples = Tensor.concatenate([clean, GaussianCorruption.apply(w, sigma: s, seed: 5, sampleIndices: corruptedIndices)])
            let flags = (0..<samples.rows).map { $0 < perGroup }
            let data = TrainingData(samples: samples, sigmaN: [Double](repeating: 0, count: samples.rows), clean: flags, summary: "gmm")
            let config = RunConfig(data: .npy(path: "-"), objective: .classifier, steps: 1500, batch: 256, seed: 4, learningRate: 2e-3,
                                   warmupSteps: 100, emaDecay: 0.998,
                                   model: .mlp(MLPConfig(dataDimension: 16, width: 128, blocks: 2, embeddingSize: 32, outputDimension: 1)))
            let session = try TrainingSession(config: config, data: data)
            for _ in 0..<config.steps { try session.step() }
            let classifier = NoiseConditionedClassifier(network: session.network, schedule: config.schedule)
            let picked = Array(0..<300) + Array(perGroup..<(perGroup + 300))
            let a = annotator.annotate(classifier, session.emaStore(), samples: samples.gather(rows: picked), indices: picked, seed: 9)
            let cleanMedian = a[0..<300].sorted()[150], corruptedMedian = a[300...].sorted()[150]
            medians.append(corruptedMedian)
            lines.append(String(format: "s = %.1f: median annotation of corrupted samples %.4f, of clean samples %.4f", s, corruptedMedian, cleanMedian))
            #expect(cleanMedian < 0.05, "\(lines.last!)")
            #expect(corruptedMedian > s / 8, "\(lines.last!)")
        }
        print(lines.joined(separator: "\n"))
        #expect(medians[0] < medians[1] && medians[1] < medians[2], "\(lines.joined(separator: "\n"))")
    }
}
