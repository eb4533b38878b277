import Foundation
import Testing

/// Ctrl-C leaves nothing a later command would mistake for complete, and the same command
/// resumes the run to the weights of an uninterrupted run.
@Suite(.serialized, .timeLimit(.minutes(3))) struct InterruptTests {
    static let options = ["--data", "gmm:dim=16,count=4000", "--corrupt", "noise:0.5", "--width", "256", "--blocks", "2",
                          "--batch", "96", "--shards", "4", "--steps", "300", "--log-every", "1", "--seed", "5",
                          "--checkpoint-every", "1000"]

    @Test(arguments: [0, 2])
    func interruptedTrainingResumesExactly(workers: Int) throws {
        let dir = try scratchDirectory("interrupt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let extra = workers > 0 ? ["--workers", String(workers)] : []
        let ref = try CommandRunner.run(["train"] + Self.options + extra + ["--out", dir + "/reference", "--quiet"])
        #expect(ref.status == 0, "\(ref.stderr)")
        let run = dir + "/run"
        let child = try Child(["train"] + Self.options + extra + ["--out", run, "--quiet"], log: dir + "/first.log")
        defer { if child.isRunning { child.signal(SIGKILL); child.wait(5) } }
        #expect(waitUntil(60) { lastLoggedStep(run) >= 50 }, "no progress: \(child.output)")
        child.signal(SIGINT)
        let status = child.wait(60)
        #expect(status == 130, "exit \(String(describing: status)): \(child.output)")
        #expect(child.output.contains("run the same command again to resume"), "\(child.output)")
        #expect(!FileManager.default.fileExists(atPath: run + "/model.safetensors"))
        let sample = try CommandRunner.run(["sample", "--run", run, "--out", dir + "/s.npy"])
        #expect(sample.status != 0 && sample.stderr.contains("did not finish"), "\(sample.stderr)")
        let again = try CommandRunner.run(["train"] + Self.options + extra + ["--out", run, "--quiet"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("resumed"), "\(again.stderr)")
        let a = try Data(contentsOf: URL(fileURLWithPath: run + "/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference/model.safetensors"))
        #expect(a == b, "resumed run differs from the uninterrupted one")
    }
}
