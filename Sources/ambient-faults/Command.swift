import ArgumentParser
import FaultInjection
import Foundation

/// The command line (the options of the old bash script, scripts/fault-injection). Values are
/// taken as strings and checked by SuiteOptions.validate, so that every bad option exits 2.
struct FaultsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ambient-faults",
        abstract: "Fault-injection suite: real ambient processes, one fault per scenario, weights checked bitwise.",
        usage: "scripts/fault-injection [options]   (or: ambient-faults [options])",
        discussion: """
        Runs a coordinator and workers as real processes on this machine (127.0.0.1, or one network \
        namespace per worker for link-cut), injects one fault per scenario, and checks that the run \
        still ends with RUNDIR/model.safetensors bitwise equal to the uninterrupted single-process \
        run (`ambient train`, same options), or, for disk-full, that the failure is reported clearly \
        and nothing corrupt is left behind. Prints one PASS/FAIL line per scenario run (with its \
        random seed, the fault, detection and recovery times), recovery statistics, and \
        `N passed, N failed`. Exit status 0 when nothing failed, 1 when something did, 2 for bad \
        options.

        Scenarios (default: all):
        \(Scenario.allCases.map(scenarioHelp).joined(separator: "\n"))

        The loopback scenarios run the default data plane: every worker has a loopback \
        --data-bind, so every worker owns a range of the sharded reduction. link-cut's workers \
        have none (their namespaces reach the coordinator, not each other): its coordinator reduces.

        Random choices (victim, step, pause, network prefix, flipped bit) come from a SplitMix64 \
        generator seeded with the run's printed seed: --seed S repeats them. Scenario run i of a \
        suite uses seed S+i.

        Environment: AMBIENT_BIN is the default --binary; AMBIENT_LOG_LEVEL=debug passes \
        --log-level debug to every process.

        Needs: link-cut and disk-full need root (ip netns, mount) and are reported as skipped \
        otherwise. Every wait is bounded and every process, namespace and mount the suite made is \
        removed on exit, Ctrl-C included.

        Examples:
          swift build -c release --product ambient && scripts/fault-injection
          scripts/fault-injection --repeat 10
          scripts/fault-injection --scenario worker-kill,coordinator-kill \\
            --binary .build/debug/ambient
        """)

    @Option(name: .customLong("scenario"), help: ArgumentHelp("Scenarios to run (repeatable; comma lists).", valueName: "name[,name]"))
    var scenarios: [String] = []
    @Option(name: .customLong("repeat"), help: ArgumentHelp("Run each scenario N times, each with its own seed (default 1).", valueName: "n"))
    var repeatCount: String?
    @Option(help: ArgumentHelp("Base seed (default: random); scenario run i uses S+i, printed.", valueName: "s"))
    var seed: String?
    @Option(help: ArgumentHelp("ambient binary (default: $AMBIENT_BIN, else .build/release/ambient).", valueName: "path"))
    var binary: String?
    @Option(help: ArgumentHelp("Workers per cluster (default 3).", valueName: "n"))
    var workers: String?
    @Option(help: ArgumentHelp("Steps of the loopback runs (default 1000, at least 400).", valueName: "n"))
    var steps: String?
    @Option(help: ArgumentHelp("Where runs and logs go (default: a new directory under /tmp).", valueName: "dir"))
    var workdir: String?
    @Flag(help: "Keep the work directory (it is always kept when something fails).")
    var keep = false
    @Flag(help: "Print the scenario names and exit.")
    var list = false

    static func scenarioHelp(_ s: Scenario) -> String {
        let lines = s.summary.split(separator: "\n")
        return lines.enumerated().map { i, line in
            "  " + Timing.padded(i == 0 ? s.rawValue : "", 28) + line
        }.joined(separator: "\n")
    }
}

/// Parses the command line; prints help (exit 0) or a bad option's message (exit 2) itself.
func parseCommandLine() -> (FaultsCommand, SuiteOptions) {
    let command: FaultsCommand
    do {
        command = try FaultsCommand.parse()
    } catch {
        if FaultsCommand.exitCode(for: error) == .success { FaultsCommand.exit(withError: error) }
        fail(usage: FaultsCommand.message(for: error) + " (see --help)")
    }
    if command.list {
        print(Scenario.allCases.map(\.rawValue).joined(separator: "\n"))
        exit(0)
    }
    do {
        let options = try SuiteOptions.validate(scenarios: command.scenarios, repeatCount: command.repeatCount, seed: command.seed,
                                                workers: command.workers, steps: command.steps,
                                                randomSeed: { Int.random(in: 0..<1_000_000) })
        return (command, options)
    } catch {
        fail(usage: error.description)
    }
}

func fail(usage message: String) -> Never {
    FileHandle.standardError.write(Data("fault-injection: \(message)\n".utf8))
    exit(2)
}
