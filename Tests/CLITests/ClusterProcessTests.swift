import Foundation
import Testing

/// A child process of the built `ambient` binary, its stderr in a log file.
final class Child: @unchecked Sendable {
    let process = Process()
    let log: String

    init(_ args: [String], log: String, threads: Int = 1, environment: [String: String] = [:],
         executable: String? = nil, directory: String? = nil) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable ?? CommandRunner.ambient)
        process.arguments = args
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = String(threads)
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let handle = FileHandle(forWritingAtPath: log)!
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    func signal(_ s: Int32) { kill(pid, s) }

    /// Waits at most `seconds`; kills the process if it is still running then. Returns the exit status.
    @discardableResult
    func wait(_ seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Polls `condition` every 10 ms for at most `seconds`.
@discardableResult
func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// The last step recorded in a metrics.jsonl (or -1).
func lastLoggedStep(_ run: String) -> Int {
    guard let text = try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8) else { return -1 }
    return text.split(separator: "\n").compactMap { line -> Int? in
        guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
        return o["step"] as? Int
    }.max() ?? -1
}

func events(_ run: String) -> [[String: Any]] {
    guard let text = try? String(contentsOfFile: run + "/events.jsonl", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
}

/// Fault tolerance of real processes on a loopback cluster: kill -9 and SIGSTOP of workers,
/// kill -9 of the coordinator (also mid-checkpoint) and restart. Every run must end with
/// weights bitwise identical to the uninterrupted single-process run.
@Suite(.serialized, .timeLimit(.minutes(10))) struct ClusterProcessTests {
    /// A run long enough to interrupt (a few seconds), small enough for CI.
    static let runOptions = ["--data", "gmm:dim=16,count=4000", "--corrupt", "noise:0.5", "--objective", "ambient",
                             "--width", "256", "--blocks", "2", "--batch", "96", "--shards", "4", "--steps", "240",
                             "--log-every", "1", "--seed", "3"]

    func reference(_ dir: String, _ options: [String] = runOptions) throws -> Data {
        let r = try CommandRunner.run(["train"] + options + ["--out", dir + "/reference", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        return try Data(contentsOf: URL(fileURLWithPath: dir + "/reference/model.safetensors"))
    }

    func coordinator(_ dir: String, port: Int, log: String, options: [String] = runOptions, checkpointEvery: Int = 40) throws -> Child {
        try Child(["coordinator"] + options + ["--bind", "tcp://127.0.0.1:\(port)", "--plaintext", "--out", dir + "/run",
                   "--checkpoint-every", String(checkpointEvery), "--heartbeat-timeout", "2", "--min-workers", "2", "--quiet"],
                  log: dir + "/" + log)
    }

    func worker(_ dir: String, port: Int, name: String) throws -> Child {
        try Child(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--plaintext", "--name", name, "--max-reconnect", "60", "--log-level", "debug"],
                  log: dir + "/\(name).log")
    }

    func model(_ dir: String) -> Data? { try? Data(contentsOf: URL(fileURLWithPath: dir + "/run/model.safetensors")) }

    @Test func localClusterMatchesSingleProcessForOneToThreeWorkers() throws {
        let dir = try scratchDirectory("workers")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let opts = Array(Self.runOptions.dropLast(4)) + ["--steps", "60", "--seed", "3"]
        let ref = try reference(dir, opts)
        for w in [1, 2, 3] {
            let r = try CommandRunner.run(["train"] + opts + ["--workers", String(w), "--out", dir + "/w\(w)", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
            let m = try Data(contentsOf: URL(fileURLWithPath: dir + "/w\(w)/model.safetensors"))
            #expect(m == ref, "\(w) workers: weights differ from the single-process run")
        }
    }

    /// Workers in the coordinator's process (over the in-memory link) and in their own processes
    /// (over plaintext loopback) compute the same bits: placement never changes the result.
    @Test func colocatedAndPlaintextWorkersMatchSingleProcess() throws {
        let dir = try scratchDirectory("colocated")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let opts = Array(Self.runOptions.dropLast(4)) + ["--steps", "60", "--seed", "3"]
        let ref = try reference(dir, opts)
        for (w, c) in [(1, 1), (2, 1), (3, 2)] {
            let out = dir + "/w\(w)c\(c)"
            let r = try CommandRunner.run(["train"] + opts + ["--workers", String(w), "--colocated-workers", String(c), "--plaintext",
                                                              "--out", out, "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
            let m = try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors"))
            #expect(m == ref, "\(w) workers, \(c) colocated: weights differ from the single-process run")
        }
        let bad = try CommandRunner.run(["train"] + opts + ["--workers", "1", "--colocated-workers", "2", "--out", dir + "/bad"])
        #expect(bad.status != 0 && bad.stderr.contains("--colocated-workers"), "\(bad.stderr)")
    }

    @Test func killedWorkerDoesNotChangeTheResult() throws {
        let dir = try scratchDirectory("kill-worker")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try reference(dir)
        let port = freePort()
        let c = try coordinator(dir, port: port, log: "coordinator.log")
        let w1 = try worker(dir, port: port, name: "w1"), w2 = try worker(dir, port: port, name: "w2")
        defer { for p in [c, w1, w2] where p.isRunning { p.signal(SIGKILL); p.wait(5) } }
        #expect(waitUntil(60) { lastLoggedStep(dir + "/run") >= 60 }, "run did not progress: \(c.output)")
        let killedAt = Date()
        w2.signal(SIGKILL)
        #expect(c.wait(120) == 0, "coordinator failed: \(c.output)")
        #expect(w1.wait(20) == 0)
        #expect(model(dir) == ref, "weights differ after a worker was killed")
        let drop = events(dir + "/run").first { ($0["kind"] as? String) == "drop" && (($0["worker"] as? String) ?? "").hasPrefix("w2") }
        #expect(drop != nil, "no drop event for w2")
        if let t = drop?["time"] as? Double {
            let detection = t - killedAt.timeIntervalSince1970
            print("worker kill -9 detected after \(String(format: "%.2f", detection)) s")
            #expect(detection < 5)
        }
    }

    @Test func stoppedWorkerIsDetectedAndItsShardsReassigned() throws {
        let dir = try scratchDirectory("stop-worker")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try reference(dir)
        let port = freePort()
        let c = try coordinator(dir, port: port, log: "coordinator.log")
        let w1 = try worker(dir, port: port, name: "w1"), w2 = try worker(dir, port: port, name: "w2")
        defer { for p in [c, w1, w2] where p.isRunning { p.signal(SIGCONT); p.signal(SIGKILL); p.wait(5) } }
        #expect(waitUntil(60) { lastLoggedStep(dir + "/run") >= 60 }, "run did not progress: \(c.output)")
        let stoppedAt = Date().timeIntervalSince1970
        w2.signal(SIGSTOP)
        #expect(waitUntil(15) { events(dir + "/run").contains { ($0["kind"] as? String) == "drop" } }, "SIGSTOP not detected")
        let drop = events(dir + "/run").first { ($0["kind"] as? String) == "drop" }
        let detection = ((drop?["time"] as? Double) ?? 0) - stoppedAt
        print("SIGSTOP detected after \(String(format: "%.2f", detection)) s: \(drop?["detail"] ?? "")")
        #expect(detection < 2 + 1.5, "detected after \(detection) s with a 2 s heartbeat timeout")
        w2.signal(SIGCONT)   // it comes back, is told it was dropped, and re-registers
        #expect(c.wait(120) == 0, "coordinator failed: \(c.output)")
        #expect(model(dir) == ref, "weights differ after a worker was stopped")
        w1.wait(20)
        w2.wait(20)
    }

    @Test func killedCoordinatorResumesFromItsCheckpoint() throws {
        let dir = try scratchDirectory("kill-coordinator")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try reference(dir)
        let port = freePort()
        let c1 = try coordinator(dir, port: port, log: "coordinator1.log")
        let w1 = try worker(dir, port: port, name: "w1"), w2 = try worker(dir, port: port, name: "w2")
        defer { for p in [c1, w1, w2] where p.isRunning { p.signal(SIGKILL); p.wait(5) } }
        #expect(waitUntil(60) { lastLoggedStep(dir + "/run") >= 100 }, "run did not progress: \(c1.output)")
        c1.signal(SIGKILL)
        c1.wait(10)
        let restartedAt = Date()
        let c2 = try coordinator(dir, port: port, log: "coordinator2.log")
        defer { if c2.isRunning { c2.signal(SIGKILL); c2.wait(5) } }
        #expect(c2.wait(120) == 0, "restarted coordinator failed: \(c2.output)")
        print("coordinator restart to finish: \(String(format: "%.2f", Date().timeIntervalSince(restartedAt))) s")
        #expect(c2.output.contains("resumed"), "\(c2.output)")
        #expect(model(dir) == ref, "weights differ after a coordinator restart")
        #expect(w1.wait(20) == 0 && w2.wait(20) == 0)
    }

    /// kill -9 while a checkpoint is being written (a temporary file exists): the half-written
    /// file never becomes a checkpoint and the restart resumes from the previous one.
    @Test func coordinatorKilledMidCheckpointResumesFromThePreviousOne() throws {
        let dir = try scratchDirectory("kill-checkpoint")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A model large enough (8.5M parameters, ~100 MB checkpoints) that writing takes a while.
        let opts = ["--data", "gmm:dim=16,count=2000", "--corrupt", "noise:0.5", "--width", "1024", "--blocks", "4",
                    "--batch", "16", "--shards", "2", "--steps", "30", "--log-every", "1", "--seed", "4"]
        let ref = try reference(dir, opts)
        let port = freePort()
        let c1 = try coordinator(dir, port: port, log: "coordinator1.log", options: opts, checkpointEvery: 5)
        let w1 = try worker(dir, port: port, name: "w1"), w2 = try worker(dir, port: port, name: "w2")
        defer { for p in [c1, w1, w2] where p.isRunning { p.signal(SIGKILL); p.wait(5) } }
        let ckpts = dir + "/run/checkpoints"
        func partial() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: ckpts)) ?? []).contains { $0.contains(".partial.") && $0.hasPrefix("ckpt-") }
        }
        func committed() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: ckpts)) ?? []).filter { $0.hasSuffix(".ambient") }
        }
        // Wait for one committed checkpoint, then for the next one to be in flight.
        #expect(waitUntil(90) { !committed().isEmpty }, "no checkpoint: \(c1.output)")
        let caught = waitUntil(90) { partial() }
        c1.signal(SIGKILL)
        c1.wait(10)
        print("killed the coordinator \(caught ? "while a checkpoint was being written" : "(no checkpoint write caught)"); committed: \(committed().sorted())")
        let c2 = try coordinator(dir, port: port, log: "coordinator2.log", options: opts, checkpointEvery: 5)
        defer { if c2.isRunning { c2.signal(SIGKILL); c2.wait(5) } }
        #expect(c2.wait(180) == 0, "restarted coordinator failed: \(c2.output)\nworker w1:\n\(w1.output)\nworker w2:\n\(w2.output)")
        #expect(model(dir) == ref, "weights differ after a kill during a checkpoint write")
        #expect(w1.wait(20) == 0 && w2.wait(20) == 0)
    }
}
