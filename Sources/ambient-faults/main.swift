import FaultInjection
import Foundation

// ambient-faults: the fault-injection suite (docs/operations.md, "Fault injection"), run through
// scripts/fault-injection. Scenarios: Scenarios.swift, RootScenarios.swift; one cluster:
// ClusterRun.swift; processes, namespaces, mounts and signals: Processes.swift.

runSuite()

func runSuite() -> Never {
    let (command, options) = parseCommandLine()
    let environment = ProcessInfo.processInfo.environment
    // The default binary is the release ambient of the build this program belongs to:
    // .build/<triple>/<debug|release>/ambient-faults -> .build/<triple>/release/ambient.
    let builds = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        .deletingLastPathComponent().deletingLastPathComponent().path
    var binary = command.binary ?? environment["AMBIENT_BIN"].flatMap { $0.isEmpty ? nil : $0 } ?? builds + "/release/ambient"
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        fail(usage: "no ambient binary at \(binary); build it (swift build -c release --product ambient) or give --binary")
    }
    binary = URL(fileURLWithPath: binary).standardizedFileURL.path
    var workDirectory: String
    if let dir = command.workdir {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        workDirectory = URL(fileURLWithPath: dir).standardizedFileURL.path
    } else {
        var template = Array("/tmp/ambient-faults.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fail(usage: "cannot create a work directory under /tmp") }
        workDirectory = String(cString: made)
    }
    guard isDirectory(workDirectory) else { fail(usage: "cannot create the work directory \(workDirectory)") }
    // One BLAS thread per process: the bits of a gradient depend on it.
    setenv("OPENBLAS_NUM_THREADS", "1", 1)
    Resources.shared.workDirectory = workDirectory
    Resources.shared.installSignalHandlers()
    atexit { Resources.shared.cleanUp() }

    var suite = Suite(binary: binary, workers: options.workers, steps: options.steps, workDirectory: workDirectory,
                      logLevel: environment["AMBIENT_LOG_LEVEL"].flatMap { $0.isEmpty ? nil : $0 } ?? "info")
    say("fault injection: \(options.scenarios.map(\.rawValue).joined(separator: " ")) x \(options.repeatCount); binary \(binary); "
          + "base seed \(options.seed); \(options.workers) workers; work dir \(workDirectory)")

    /// The single-process run of a configuration, once per suite; exits 1 when it fails.
    func reference(_ name: String, checkpointEvery: Int, _ runOptions: [String]) -> String {
        let dir = workDirectory + "/reference-" + name
        if isFile(dir + "/model.safetensors") { return dir }
        try? FileManager.default.removeItem(atPath: dir)
        let log = workDirectory + "/reference-\(name).log"
        try? FileManager.default.removeItem(atPath: log)
        let status = (try? Resources.shared.spawn(log: log, binary, ["train"] + runOptions
            + ["--out", dir, "--checkpoint-every", String(checkpointEvery), "--quiet"])).map { waitExit($0, 600) } ?? 127
        if status != 0 {
            FileHandle.standardError.write(Data(("fault-injection: the reference run failed:\n" + tail(log, 5).joined(separator: "\n") + "\n").utf8))
            leave(1)
        }
        return dir
    }

    let started = now()
    suite.referenceSmall = reference("small", checkpointEvery: Configurations.smallCheckpointEvery, Configurations.small(steps: options.steps))
    if options.scenarios.contains(.coordinatorKillCheckpoint) {
        suite.referenceBig = reference("big", checkpointEvery: Configurations.bigCheckpointEvery, Configurations.big)
    }
    say("reference runs (single process): \(Timing.seconds(now() - started)) s")

    let isRoot = getuid() == 0 && which("ip").hasPrefix("/") && which("mount").hasPrefix("/")
    var passed = 0, failed = 0, skipped = 0
    var keep = command.keep
    var detectedTimes: [Scenario: [String]] = [:], recoveredTimes: [Scenario: [String]] = [:]
    var runIndex = 0
    for rep in 1...options.repeatCount {
        for scenario in options.scenarios {
            runIndex += 1
            let seed = options.seed + runIndex
            if scenario.needsRoot && !isRoot {
                say("SKIP \(scenario.rawValue) #\(rep): needs root (ip netns / mount)")
                skipped += 1
                continue
            }
            let start = now()
            let cluster = ClusterRun(suite: suite, dir: workDirectory + "/\(scenario.rawValue)-\(rep)",
                                     big: scenario == .coordinatorKillCheckpoint,
                                     workers: scenario == .coordinatorKillCheckpoint ? 2 : nil)
            var failure: String?
            do {
                try cluster.run(scenario, FaultPlan(scenario: scenario, seed: seed, workers: options.workers, steps: options.steps))
            } catch let error as ScenarioFailure {
                failure = error.message
            } catch {
                failure = "\(error)"
            }
            Resources.shared.cleanUp()
            let took = Timing.seconds(now() - start)
            var timing = cluster.detected.map { " | detected \($0) s | recovered \(cluster.recovered ?? "") s" } ?? ""
            if scenario == .diskFull { timing = " | stopped \(cluster.detected ?? "") s after the workers started" }
            if let failure {
                failed += 1
                keep = true
                say("FAIL \(scenario.rawValue) #\(rep) seed=\(seed) (\(took) s): \(failure) | \(cluster.note) | logs: \(cluster.dir)")
            } else {
                passed += 1
                say("PASS \(scenario.rawValue) #\(rep) seed=\(seed) (\(took) s)\(timing) | \(cluster.note)")
                detectedTimes[scenario, default: []].append(cluster.detected ?? "")
                recoveredTimes[scenario, default: []].append(cluster.recovered ?? "")
            }
        }
    }

    say("""

    Times, min / median / max (count). detected: fault -> the coordinator drops the worker (worker
    faults) or resumes (coordinator faults); recovered: fault -> the interrupted step is complete
    (worker faults) or the first step after the checkpoint is complete (coordinator faults).
    """)
    var shown: Set<Scenario> = []
    for scenario in options.scenarios where shown.insert(scenario).inserted {
        guard let d = detectedTimes[scenario], d.contains(where: { !$0.isEmpty }) else { continue }
        let name = Timing.padded(scenario.rawValue, 28)
        if scenario == .diskFull {
            say("  \(name) stopped after \(Timing.statistics(d))")
        } else {
            say("  \(name) detected \(Timing.padded(Timing.statistics(d), 28)) recovered \(Timing.statistics(recoveredTimes[scenario] ?? []))")
        }
    }
    say()
    if keep { say("work directory kept: \(workDirectory)") } else { try? FileManager.default.removeItem(atPath: workDirectory) }
    say(skipped > 0 ? "\(passed) passed, \(failed) failed, \(skipped) skipped" : "\(passed) passed, \(failed) failed")
    leave(failed == 0 ? 0 : 1)
}
