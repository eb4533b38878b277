import FaultInjection
import Foundation

/// The suite's settings every scenario reads.
struct Suite {
    let binary: String
    let workers: Int
    let steps: Int
    let workDirectory: String
    let logLevel: String
    var referenceSmall = ""
    var referenceBig = ""
}

/// One cluster of real `ambient` processes (a coordinator and named workers, their logs in
/// `dir`) and what a scenario measured on it: DET, REC and NOTE of the old script.
final class ClusterRun {
    let suite: Suite
    let dir: String
    let run: String
    let reference: String
    let options: [String]
    let checkpointEvery: Int
    let workerCount: Int
    var endpoint = "tcp://127.0.0.1:*"
    var coordinatorSecurity = ["--plaintext"]
    var workerSecurity = ["--plaintext"]
    var coordinatorExtra: [String] = []
    var workerExtra = ["--data-bind", "tcp://127.0.0.1:*"]
    /// Network namespace of a worker (link-cut).
    var namespaces: [String: String] = [:]
    var coordinator: Process?
    var workers: [String: Process] = [:]
    var note = ""
    /// "n/a" when not seen in time; nil when the scenario does not measure it.
    var detected: String?
    var recovered: String?
    var dropDetail = ""
    var resumedFrom = ""
    var resumedStep = 0

    init(suite: Suite, dir: String, big: Bool = false, workers: Int? = nil) {
        self.suite = suite
        self.dir = dir
        run = dir + "/run"
        reference = big ? suite.referenceBig : suite.referenceSmall
        options = big ? Configurations.big : Configurations.small(steps: suite.steps)
        checkpointEvery = big ? Configurations.bigCheckpointEvery : Configurations.smallCheckpointEvery
        workerCount = workers ?? suite.workers
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    var names: [String] { (1...workerCount).map { "w\($0)" } }
    var coordinatorAlive: Bool { coordinator?.isRunning ?? false }

    /// Starts the coordinator (log `log` in dir); on the first start, learns the port it bound.
    func startCoordinator(_ log: String) throws {
        let path = dir + "/" + log
        coordinator = try Resources.shared.spawn(log: path, suite.binary, ["coordinator"] + options + ["--bind", endpoint]
            + coordinatorSecurity + coordinatorExtra + ["--out", run, "--checkpoint-every", String(checkpointEvery),
            "--heartbeat-timeout", "2", "--min-workers", String(workerCount), "--no-worker-timeout", "120", "--quiet",
            "--log-level", suite.logLevel])
        guard endpoint.hasSuffix(":*") else { return }
        var found: String?
        guard waitUntil(30, { found = RunLogs.listeningEndpoint(log: readText(path)); return found != nil }), let found else {
            throw ScenarioFailure("coordinator did not start: \(tail(path, 3).joined(separator: "\n"))")
        }
        endpoint = found
    }

    func startWorker(_ name: String, security: [String]? = nil) throws {
        var command = [suite.binary, "worker", "--connect", endpoint] + (security ?? workerSecurity) + workerExtra
            + ["--name", name, "--max-reconnect", "90", "--log-level", suite.logLevel]
        if let ns = namespaces[name] { command = [which("ip"), "netns", "exec", ns] + command }
        workers[name] = try Resources.shared.spawn(log: dir + "/\(name).log", command[0], Array(command.dropFirst()))
    }

    func startCluster() throws {
        try startCoordinator("coordinator.log")
        for name in names { try startWorker(name) }
    }

    func stepReached(_ step: Int) -> Bool { lastStep(run) >= step }
    func events() -> [RunLogs.Event] { RunLogs.events(readText(run + "/events.jsonl")) }
    func firstEvent(_ kind: String, _ worker: String, after t: Double) -> RunLogs.Event? {
        RunLogs.firstEvent(events(), kind: kind, workerPrefix: worker, after: t)
    }

    /// Bounded: fails the scenario if the run dies or stalls before `step`.
    func waitForStep(_ step: Int) throws {
        guard waitUntil(180, { stepReached(step) || !coordinatorAlive }) else { throw ScenarioFailure("no progress to step \(step) within 180 s") }
        guard stepReached(step) else {
            throw ScenarioFailure("coordinator exited before step \(step): \(tail(dir + "/coordinator.log", 2).joined(separator: " ")) ")
        }
    }

    /// Waits (bounded) until an event of `kind` for `worker` at or after `t`, or the coordinator is gone.
    func awaitEvent(_ kind: String, _ worker: String, after t: Double, within limit: Double) -> RunLogs.Event? {
        var found: RunLogs.Event?
        _ = waitUntil(limit) { found = firstEvent(kind, worker, after: t); return found != nil || !coordinatorAlive }
        return found ?? firstEvent(kind, worker, after: t)
    }

    func killCoordinator() {
        guard let c = coordinator else { return }
        kill(c.processIdentifier, SIGKILL)
        waitExit(c, 10)
    }

    /// A worker fault at `t0`: DET = fault -> the drop event of `worker`, REC = fault -> the step
    /// during which it was dropped is complete; polled every 20 ms for at most `limit` s.
    func measureWorkerFault(_ worker: String, _ t0: Double, _ limit: Double) {
        detected = "n/a"; recovered = "n/a"
        var drop: RunLogs.Event?
        while coordinatorAlive && now() <= t0 + limit {
            if drop == nil, let ev = firstEvent("drop", worker + "#", after: t0) {
                drop = ev
                detected = Timing.seconds(ev.time - t0)
            }
            if let drop, stepReached(drop.step) {
                recovered = Timing.seconds(now() - t0)
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        if let drop { dropDetail = drop.detail }
    }

    /// Restarts the coordinator after a kill at `t0`: DET = kill -> restore event, REC = kill ->
    /// the first step after the checkpoint is complete; resumedFrom/resumedStep from the event.
    func restartAndMeasure(_ t0: Double, log: String) throws {
        try startCoordinator(log)
        guard let ev = awaitEvent("restore", "", after: t0, within: 60) else {
            if coordinatorAlive { throw ScenarioFailure("restarted coordinator did not resume within 60 s") }
            throw ScenarioFailure("restarted coordinator exited: \(tail(dir + "/" + log, 2).joined(separator: " ")) ")
        }
        detected = Timing.seconds(ev.time - t0)
        resumedStep = ev.step
        resumedFrom = RunLogs.resumed(detail: ev.detail)?.path ?? ""
        let ok = waitUntil(120, { stepReached(ev.step) || !coordinatorAlive }) && stepReached(ev.step)
        recovered = ok ? Timing.seconds(now() - t0) : "n/a"
    }

    /// The coordinator finishes (status 0), the workers exit (status 0, but `lax` may fail after
    /// the run), and model.safetensors equals the reference run's bit for bit.
    func finishAndCompare(lax: String? = nil) throws {
        guard let c = coordinator else { throw ScenarioFailure("no coordinator") }
        let status = waitExit(c, 300)
        if status != 0 {
            throw ScenarioFailure("coordinator exit status \(status): \(firstErrorLine())")
        }
        for name in workers.keys.sorted() {
            let st = waitExit(workers[name]!, 30)
            guard st != 0 else { continue }
            if name == lax { note += " (\(name) exit \(st) after the run)"; continue }
            throw ScenarioFailure("worker \(name) exit status \(st): \(tail(dir + "/\(name).log", 1).joined())")
        }
        guard FileManager.default.contentsEqual(atPath: reference + "/model.safetensors", andPath: run + "/model.safetensors") else {
            throw ScenarioFailure("model.safetensors differs from the reference run")
        }
    }

    /// `grep -m1 error DIR/coordinator*.log | tail -1`: the first error line of the last
    /// coordinator log that has one, as FILE:LINE.
    func firstErrorLine() -> String {
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasPrefix("coordinator") && $0.hasSuffix(".log") }.sorted()
        var found = ""
        for log in logs {
            if let line = readText(dir + "/" + log).split(separator: "\n").first(where: { $0.contains("error") }) {
                found = (logs.count > 1 ? dir + "/" + log + ":" : "") + line
            }
        }
        return found
    }

    /// `ckpt-*.partial.*`: a checkpoint being written (or left by a killed write).
    var partials: [String] { checkpointFiles(run) { $0.contains(".partial.") } }
    /// `ckpt-*.ambient`: committed checkpoints.
    var committed: [String] { checkpointFiles(run) { $0.hasSuffix(".ambient") } }
    func log(_ name: String) -> String { readText(dir + "/" + name) }
}
