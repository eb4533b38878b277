import Foundation
import Logging
import Testing
import Training
import Wire

/// `--extend`: a finished (or stopped) run continued to more steps ends with the weights of a
/// run trained for those steps from the start, bit for bit, and keeps its earlier weights.
@Suite struct ExtendRunTests {
    func train(_ c: RunConfig, in dir: String, extend: Bool = false, checkpointEvery: Int = 5) throws {
        var t = Trainer(config: c, runPath: dir, logger: Logger(label: "test"), showProgress: false)
        t.checkpointEvery = checkpointEvery
        t.extend = extend
        try t.run()
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test func extendedRunEqualsTheLongerRun() throws {
        let reference24 = temporaryDirectory("ref24"), reference31 = temporaryDirectory("ref31"), dir = temporaryDirectory("extend")
        defer { for d in [reference24, reference31, dir] { try? FileManager.default.removeItem(atPath: d) } }
        try train(smallConfig(steps: 24), in: reference24)
        try train(smallConfig(steps: 31), in: reference31)
        try train(smallConfig(steps: 12), in: dir)
        let first = try bytes(dir + "/model.safetensors")

        // The same directory with more steps but no --extend is refused, and says what to do.
        do {
            try train(smallConfig(steps: 24), in: dir)
            Issue.record("a longer run into a finished run's directory was accepted without --extend")
        } catch let e as TrainingError {
            #expect(e.message.contains("--extend") && e.message.contains("12 steps"), "\(e.message)")
        }

        try train(smallConfig(steps: 24), in: dir, extend: true)
        #expect(try bytes(dir + "/model.safetensors") == bytes(reference24 + "/model.safetensors"),
                "the extended run differs from a run of 24 steps")
        #expect(try bytes(dir + "/model-step-12.safetensors") == first, "the earlier weights were not kept")
        let record = try RunDirectory(path: dir).readConfig()
        #expect(record.config.steps == 24 && record.hash == smallConfig(steps: 24).hash)
        #expect(record.earlierLengths == [EarlierLength(steps: 12, hash: smallConfig(steps: 12).hash)])
        // Metrics continue where the checkpoint was: the same lines as the reference's (the
        // 12-step run's last line, step 11, is not a multiple of --log-every and goes).
        func losses(_ run: String) throws -> [String] {
            try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { line in
                let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\(o["step"]!) \(o["loss"]!)"
            }
        }
        #expect(try losses(dir) == losses(reference24))

        // Twice: 24 -> 31 (not a multiple of the checkpoint interval) resumes from step 20.
        try train(smallConfig(steps: 31), in: dir, extend: true)
        #expect(try bytes(dir + "/model.safetensors") == bytes(reference31 + "/model.safetensors"))
        #expect(try RunDirectory(path: dir).readConfig().earlierLengths?.map(\.steps) == [12, 24])
    }

    @Test func runStoppedByItsTimeLimitKeepsItsWeightsUnderTheStepItReached() throws {
        let reference = temporaryDirectory("ref-limit"), dir = temporaryDirectory("extend-limit")
        defer { for d in [reference, dir] { try? FileManager.default.removeItem(atPath: d) } }
        try train(smallConfig(steps: 24), in: reference)
        // A time limit of 0 s stops before the first step: the weights are written at step 0, not 12.
        var t = Trainer(config: smallConfig(steps: 12), runPath: dir, logger: Logger(label: "test"), showProgress: false)
        t.timeLimit = 0
        try t.run()
        let stopped = try bytes(dir + "/model.safetensors")
        try train(smallConfig(steps: 24), in: dir, extend: true)
        #expect(try bytes(dir + "/model-step-0.safetensors") == stopped)
        #expect(!FileManager.default.fileExists(atPath: dir + "/model-step-12.safetensors"))
        #expect(try bytes(dir + "/model.safetensors") == bytes(reference + "/model.safetensors"))
    }

    @Test func extendRefusesWhatItCannotContinue() throws {
        let dir = temporaryDirectory("extend-bad"), missing = temporaryDirectory("extend-missing")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try train(smallConfig(steps: 12), in: dir)
        func refused(_ c: RunConfig, in path: String, _ words: String) {
            do {
                try train(c, in: path, extend: true)
                Issue.record("--extend accepted \(c.steps) steps, seed \(c.seed) in \(path)")
            } catch let e as TrainingError {
                #expect(e.message.contains(words), "\(e.message)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        refused(smallConfig(steps: 8), in: dir, "continues a run to more steps")
        refused(smallConfig(steps: 12), in: dir, "finished run of 12 steps")
        refused(smallConfig(steps: 24, seed: 6), in: dir, "resuming with a different configuration is refused")
        refused(smallConfig(steps: 24), in: missing, "holds none")
        #expect(!FileManager.default.fileExists(atPath: missing))
        // Nothing was changed by the refusals.
        #expect(try RunDirectory(path: dir).readConfig().config.steps == 12)
        #expect(FileManager.default.fileExists(atPath: dir + "/model.safetensors"))
    }

    /// An unfinished run (stopped before its end) is extended from its newest checkpoint too, and
    /// a checkpoint of another configuration is still refused.
    @Test func unfinishedRunExtendsAndForeignCheckpointsAreRefused() throws {
        let reference = temporaryDirectory("ref20"), dir = temporaryDirectory("extend-unfinished")
        defer { for d in [reference, dir] { try? FileManager.default.removeItem(atPath: d) } }
        try train(smallConfig(steps: 20), in: reference)
        try train(smallConfig(steps: 12), in: dir)
        try FileManager.default.removeItem(atPath: dir + "/model.safetensors")   // as if stopped after step 10's checkpoint
        try train(smallConfig(steps: 20), in: dir, extend: true)
        #expect(try bytes(dir + "/model.safetensors") == bytes(reference + "/model.safetensors"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/model-step-12.safetensors"))

        let c = smallConfig(steps: 20)
        let other = try TrainingSession(config: smallConfig(steps: 20, seed: 9), data: try TrainingData.load(c))
        let foreign = other.state.checkpoint(of: smallConfig(steps: 12, seed: 9))
        let session = try TrainingSession(config: c, data: try TrainingData.load(c))
        #expect(throws: TrainingError.self) {
            try session.state.resume(from: foreign, of: c, alsoAccepting: [smallConfig(steps: 12).hash])
        }
        try session.state.resume(from: other.state.checkpoint(of: smallConfig(steps: 12)), of: c, alsoAccepting: [smallConfig(steps: 12).hash])

        // The extension continues from the checkpoint, not from step 0 (which would give the same
        // bits): a planted checkpoint of other weights, tagged as the 12-step run's, changes the result.
        let planted = temporaryDirectory("extend-planted")
        defer { try? FileManager.default.removeItem(atPath: planted) }
        try train(smallConfig(steps: 12), in: planted)
        for _ in 0..<11 { try other.step() }
        let store = try CheckpointStore(directory: RunDirectory(path: planted).checkpointsPath, keep: 3)
        _ = try store.write(other.state.checkpoint(of: smallConfig(steps: 12)), step: 11)
        try train(smallConfig(steps: 20), in: planted, extend: true)
        #expect(try bytes(planted + "/model.safetensors") != bytes(reference + "/model.safetensors"))
    }
}
