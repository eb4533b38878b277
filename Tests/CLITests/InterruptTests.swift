import Foundation
import Testing

/// Ctrl-C leaves nothing a later command would mistake for complete, and the same command
/// resumes the run to the weights of an uninterrupted run.
@Suite(.serialized, .timeLimit(.minutes(10))) struct InterruptTests {
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

/// A child `ambient` started with SIGINT and SIGTERM at their default action, as from a
/// terminal (a test runner may hand its children those signals ignored, and Process keeps
/// that). Its output goes to a log file.
final class TerminalChild {
    let pid: pid_t
    let log: String
    private var status: Int32?

    init(_ args: [String], log: String) throws {
        self.log = log
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        defer { close(fd) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fd, 1)
        posix_spawn_file_actions_adddup2(&actions, fd, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t(), empty = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_NUM_THREADS"] = "1"
        let argv = ([CommandRunner.ambient] + args).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, CommandRunner.ambient, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EINVAL) }
        pid = child
    }

    var isRunning: Bool { poll() == nil }

    func signal(_ s: Int32) { kill(pid, s) }

    /// The exit status, or 128 + the signal that ended it, as a shell reports it (nil: running).
    private func poll() -> Int32? {
        if let status { return status }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
        status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return status
    }

    /// Waits at most `seconds`, then kills it; the status as `poll` gives it.
    @discardableResult
    func wait(_ seconds: Double) -> Int32? {
        if waitUntil(seconds, { !isRunning }) { return poll() }
        kill(pid, SIGKILL)
        _ = waitUntil(5) { !isRunning }
        return nil
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

/// Ctrl-C in the middle of the other commands that write files: what is left is either
/// complete or recognisably incomplete, and the same command then succeeds.
@Suite(.serialized, .timeLimit(.minutes(10))) struct InterruptOutputTests {
    /// The files of `dir` whose names mark an interrupted atomic write.
    func partialFiles(_ dir: String) -> [String] {
        let names = (try? FileManager.default.subpathsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.contains(".partial.") }
    }

    /// A SIGINT while the dataset is computed ends the command with nothing a reader takes for a
    /// dataset; one while its files are written lets them finish (status 130, complete manifest).
    @Test func datasetMake() throws {
        let dir = try scratchDirectory("interrupt-dataset")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["dataset", "make", "--source", "fashion-mnist", "--corrupt", "blur:2", "--clean-fraction", "0.1", "--quiet"]
        // While computing (the output directory does not exist yet).
        let early = try TerminalChild(args + ["--out", dir + "/early"], log: dir + "/early.log")
        defer { if early.isRunning { early.signal(SIGKILL); early.wait(5) } }
        usleep(400_000)
        let startedWriting = FileManager.default.fileExists(atPath: dir + "/early")
        early.signal(SIGINT)
        let earlyStatus = early.wait(60)
        if !startedWriting {
            #expect(earlyStatus == 128 + SIGINT && !early.output.contains("outputs were completed"), "expected death by SIGINT, got \(String(describing: earlyStatus)): \(early.output)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/early/manifest.json"))
            let train = try CommandRunner.run(["train", "--data", dir + "/early", "--objective", "dsm", "--out", dir + "/never"])
            #expect(train.status != 0, "\(train.stderr)")
        }
        // While writing: wait for the directory, which is created just before the first file.
        let late = try TerminalChild(args + ["--out", dir + "/late"], log: dir + "/late.log")
        defer { if late.isRunning { late.signal(SIGKILL); late.wait(5) } }
        #expect(waitUntil(60) { FileManager.default.fileExists(atPath: dir + "/late") || !late.isRunning })
        late.signal(SIGINT)
        let lateStatus = late.wait(60)
        #expect(lateStatus == 130 || lateStatus == 0, "\(String(describing: lateStatus)): \(late.output)")
        if lateStatus == 130 { #expect(late.output.contains("outputs were completed"), "\(late.output)") }
        let verify = try CommandRunner.run(["dataset", "verify", dir + "/late"])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(partialFiles(dir).isEmpty, "\(partialFiles(dir))")
        // The interrupted directory is made again by the same command.
        let again = try CommandRunner.run(args + ["--out", dir + "/early"], timeout: 120)
        #expect(again.status == 0 || again.stderr.contains("existing dataset"), "\(again.stderr)")
        #expect(try CommandRunner.run(["dataset", "verify", dir + "/early"]).status == 0)
    }

    /// Sampling stopped by Ctrl-C writes nothing and leaves an earlier output untouched.
    @Test func sample() throws {
        let dir = try scratchDirectory("interrupt-sample")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run"
        let t = try CommandRunner.run(["train", "--data", "gmm:dim=16,count=500", "--corrupt", "noise:0.5", "--width", "64", "--blocks", "1",
                                       "--steps", "5", "--batch", "32", "--out", run, "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        let first = try CommandRunner.run(["sample", "--run", run, "--count", "4", "--out", dir + "/s.npy", "--quiet"])
        #expect(first.status == 0, "\(first.stderr)")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/s.npy"))
        let child = try TerminalChild(["sample", "--run", run, "--count", "2000000", "--out", dir + "/s.npy"], log: dir + "/sample.log")
        defer { if child.isRunning { child.signal(SIGKILL); child.wait(5) } }
        usleep(1_000_000)
        #expect(child.isRunning, "sampling finished before it could be interrupted: \(child.output)")
        child.signal(SIGINT)
        let status = child.wait(30)
        #expect(status == 128 + SIGINT, "\(String(describing: status)): \(child.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/s.npy")) == before)
        #expect(partialFiles(dir).isEmpty, "\(partialFiles(dir))")
    }

    /// Annotation stopped by Ctrl-C leaves the dataset as it was (it still verifies); a
    /// classifier run stops at a step with a checkpoint and the same command finishes it.
    @Test func annotateAndClassifier() throws {
        let dir = try scratchDirectory("interrupt-annotate")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"
        let make = try CommandRunner.run(["dataset", "make", "--source", "gmm:dim=16,count=3000", "--corrupt", "noise:0.4",
                                          "--clean-fraction", "0.5", "--out", data, "--quiet"])
        #expect(make.status == 0, "\(make.stderr)")
        let classifierArgs = ["classifier", "train", "--data", data, "--width", "64", "--blocks", "1", "--batch", "32", "--log-every", "1",
                              "--out", dir + "/classifier", "--quiet"]
        let long = try TerminalChild(classifierArgs + ["--steps", "3000"], log: dir + "/classifier.log")
        defer { if long.isRunning { long.signal(SIGKILL); long.wait(5) } }
        #expect(waitUntil(60) { lastLoggedStep(dir + "/classifier") >= 5 }, "no progress: \(long.output)")
        long.signal(SIGINT)
        #expect(long.wait(60) == 130, "\(long.output)")
        #expect(long.output.contains("run the same command again to resume"), "\(long.output)")
        // Finish it quickly: the same configuration is required, so resume the long run.
        let resumed = try CommandRunner.run(classifierArgs + ["--steps", "3000"], timeout: 400)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let manifestBefore = try Data(contentsOf: URL(fileURLWithPath: data + "/manifest.json"))
        let annotate = try TerminalChild(["annotate", "--data", data, "--classifier", dir + "/classifier", "--grid", "4096", "--draws", "64"],
                                 log: dir + "/annotate.log")
        defer { if annotate.isRunning { annotate.signal(SIGKILL); annotate.wait(5) } }
        usleep(1_500_000)
        #expect(annotate.isRunning, "annotation finished before it could be interrupted: \(annotate.output)")
        annotate.signal(SIGINT)
        #expect(annotate.wait(30) == 128 + SIGINT, "\(annotate.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: data + "/manifest.json")) == manifestBefore)
        #expect(!FileManager.default.fileExists(atPath: data + "/annotations.npy"))
        #expect(try CommandRunner.run(["dataset", "verify", data]).status == 0)
        #expect(partialFiles(dir).isEmpty, "\(partialFiles(dir))")
    }
}
