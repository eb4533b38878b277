import Datasets
import Diffusion
import Foundation
import Logging
import TensorCore
import Testing
import Training

func temporaryDirectory(_ name: String) -> String {
    let path = NSTemporaryDirectory() + "ambient-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    return path
}

func smallConfig(steps: Int = 30, seed: UInt64 = 5, shards: Int = 1, objective: ObjectiveKind = .ambient) -> RunConfig {
    var spec = GaussianMixtureSpec()
    spec.dimension = 3
    spec.count = 500
    return RunConfig(data: .gaussianMixture(spec), corruption: .noise(0.5), objective: objective, steps: steps,
                     batch: 32, shards: shards, seed: seed, model: .mlp(MLPConfig(dataDimension: 3, width: 32, blocks: 2, embeddingSize: 16)),
                     logEvery: 5)
}

@Suite struct TrainerTests {
    /// Same seed and configuration give bitwise-identical parameters and EMA.
    @Test func rerunIsBitwiseIdentical() throws {
        func run() throws -> ([Float], [Float]) {
            let c = smallConfig()
            let s = try TrainingSession(config: c, data: try TrainingData.load(c))
            for _ in 0..<c.steps { try s.step() }
            return (s.state.store.snapshot(), s.state.ema!.snapshot())
        }
        let (p1, e1) = try run()
        let (p2, e2) = try run()
        #expect(p1.withUnsafeBytes { Array($0) } == p2.withUnsafeBytes { Array($0) })
        #expect(e1.withUnsafeBytes { Array($0) } == e2.withUnsafeBytes { Array($0) })
        // And the seed matters (the comparison above can fail).
        let c3 = smallConfig(seed: 6)
        let s3 = try TrainingSession(config: c3, data: try TrainingData.load(c3))
        for _ in 0..<c3.steps { try s3.step() }
        #expect(s3.state.store.snapshot() != p1)
    }

    /// The shard plan covers every sample once per epoch and depends only on (seed, step, shard).
    @Test func shardPlanCoversEachEpoch() {
        let plan = ShardPlan(datasetSize: 100, globalBatch: 20, shards: 3, seed: 1)
        var seen: [Int] = []
        for step in 0..<5 { for k in 0..<3 { seen += plan.indices(step: step, shard: k) } }
        #expect(seen.sorted() == Array(0..<100))
        let other = ShardPlan(datasetSize: 100, globalBatch: 20, shards: 3, seed: 1)
        #expect(other.indices(step: 4, shard: 2) == plan.indices(step: 4, shard: 2))
        #expect(plan.rows(ofShard: 0) == 0..<6 && plan.rows(ofShard: 2) == 13..<20)
    }

    /// A run directory holds config, metrics and weights; the weights reload into the same denoiser.
    @Test func runDirectoryRoundTrip() throws {
        let dir = temporaryDirectory("run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = smallConfig(steps: 12)
        let session = try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        let model = try TrainedModel.load(run: dir)
        #expect(model.config == c)
        #expect(model.store.snapshot() == session.state.ema!.snapshot())
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)  // steps 0, 5, 10, 11
        for line in lines {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            #expect(obj["step"] is Int && obj["loss"] is Double && obj["term.denoising"] is Double)
        }
        // A second run into the same directory is refused and leaves it untouched.
        #expect(throws: TrainingError.self) {
            try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        }
    }

    /// Invalid configurations fail before any directory is created.
    @Test func badConfigurationCreatesNothing() {
        let dir = temporaryDirectory("bad")
        var c = smallConfig()
        c.corruption = nil   // ambient objective without noisy data
        #expect(throws: ConfigurationError.self) {
            try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        }
        c = smallConfig()
        c.corruption = .noise(-1)
        #expect(throws: ConfigurationError.self) {
            try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        }
        c = smallConfig()
        c.data = .npy(path: "/nonexistent/file.npy")
        #expect(throws: (any Error).self) {
            try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        }
        #expect(!FileManager.default.fileExists(atPath: dir))
    }

    /// A run stopped before its first checkpoint (killed, or a second Ctrl-C) is finished by
    /// the same command from step 0, to the weights of an uninterrupted run.
    @Test func runWithoutCheckpointStartsAgain() throws {
        let c = smallConfig(steps: 12)
        let reference = temporaryDirectory("reference"), dir = temporaryDirectory("no-checkpoint")
        defer { for d in [reference, dir] { try? FileManager.default.removeItem(atPath: d) } }
        try Trainer(config: c, runPath: reference, logger: Logger(label: "test"), showProgress: false).run()
        try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        // What a kill before the first checkpoint leaves: config.json and some metrics lines.
        for name in ["model.safetensors", "checkpoints"] { try FileManager.default.removeItem(atPath: dir + "/" + name) }
        try Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: reference + "/model.safetensors"))
        #expect(a == b)
        let metrics = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8)
        let referenceMetrics = try String(contentsOfFile: reference + "/metrics.jsonl", encoding: .utf8)
        #expect(metrics.split(separator: "\n").count == referenceMetrics.split(separator: "\n").count, "\(metrics)")
    }
}

@Suite struct EvaluationReportTests {
    /// A diverged sample (one huge or non-finite value) is counted; samples in or near the data
    /// range are not; old reports without the field still decode.
    @Test func divergedSamplesAreCounted() throws {
        var values = [Float](repeating: 0.5, count: 4 * 784)
        values[784 + 17] = -2.7          // outside [-1, 1] but a plausible sample
        values[2 * 784 + 3] = 9.8e7      // diverged
        values[3 * 784 + 700] = .nan     // diverged
        let samples = Tensor<Float>(shape: [4, 784], storage: values)
        #expect(Evaluation.divergedSamples(samples) == 2 && Evaluation.divergedRows(samples) == [2, 3])
        let old = Data("""
            {"class_balance_total_variation": 0, "class_fractions": [], "evaluator_path": "e", "evaluator_test_accuracy": 0.9,
             "evaluator_version": 1, "frechet_distance": 1, "frechet_distance_of_training_images": 1}
            """.utf8)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let q = try decoder.decode(EvaluationReport.ImageQuality.self, from: old)
        #expect(q.samplesDiverged == nil && q.residualNoise == nil && q.residualNoiseOfTestImages == nil)
        // The residual-noise fields round-trip under their snake-case keys.
        var report = EvaluationReport(run: "r", objective: .ambient, samples: 4, samplerSteps: 32, samplerStop: nil, samplerMaskKeep: nil)
        var withNoise = q
        withNoise.residualNoise = 0.18
        withNoise.residualNoiseOfTestImages = 0.012
        report.imageQuality = withNoise
        let text = String(decoding: try report.json(), as: UTF8.self)
        #expect(text.contains("\"residual_noise\" : 0.18") && text.contains("\"residual_noise_of_test_images\" : 0.012"), "\(text)")
        let back = try decoder.decode(EvaluationReport.self, from: Data(text.utf8))
        #expect(back.imageQuality?.residualNoise == 0.18 && back.imageQuality?.residualNoiseOfTestImages == 0.012)
    }
}
