import Foundation
import Testing

/// Every example in every command's `--help` runs, pasted into a shell as a user would, in one
/// scratch directory: the examples make the data, keys and runs the later ones use. Only sizes are
/// shrunk (steps, counts) and addresses made local (127.0.0.1, free ports, the scratch directory);
/// `HelpExamples.rewrite` is the whole list. An example wrapped without a trailing backslash (so
/// that a paste runs half of it) fails here too.
@Suite(.serialized) struct HelpExamplesTests {
    @Test func everyExampleInTheHelpRuns() throws {
        var all: [String] = []
        for command in HelpSnapshotTests.commands {
            let r = try CommandRunner.run(command + ["--help"], environment: ["COLUMNS": "100"])
            #expect(r.status == 0, "\(r.stderr)")
            let (examples, problems) = HelpExamples.extract(r.stdout)
            for p in problems { Issue.record("ambient \(command.joined(separator: " ")) --help: \(p)") }
            #expect(!examples.isEmpty, "no examples in the help of \(command)")
            for e in examples where !all.contains(e) { all.append(e) }
        }
        let dir = try scratchDirectory("help-examples")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
        // The one input no example makes: a small stack of noisy 28 x 28 images.
        try writeNPY(dir + "/noisy.npy", shape: "(16, 1, 28, 28)", values: (0..<(16 * 784)).map { Float(($0 * 7919) % 101) / 50 - 1 })
        let env = ["PATH": CommandRunner.productsDirectory.path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]

        let (phased, cluster) = HelpExamples.order(all)
        var ran = 0
        for example in phased {
            let line = HelpExamples.rewrite(example)
            let r = try CommandRunner.run(["-c", line], environment: env, timeout: 300, executable: "/bin/sh", directory: dir)
            #expect(r.status == 0, "example `\(example)` (run as `\(line)`) failed with \(r.status):\n\(r.stderr.suffix(2000))")
            ran += 1
        }
        ran += try runClusterExamples(cluster, in: dir, environment: env)
        #expect(ran == all.count, "ran \(ran) of \(all.count) examples")
    }

    /// The coordinator examples, each with the worker examples (CURVE) or a plaintext worker
    /// connected to it, since a coordinator alone waits for its workers.
    func runClusterExamples(_ examples: [String], in dir: String, environment env: [String: String]) throws -> Int {
        let coordinators = examples.filter { HelpExamples.command($0).hasPrefix("coordinator") }
        let workers = examples.filter { HelpExamples.command($0).hasPrefix("worker") }
        #expect(coordinators.count + workers.count == examples.count)
        // The second worker example names its key files k.key and c.pub.
        let fm = FileManager.default
        if fm.fileExists(atPath: dir + "/keys/workers/worker1.key") {
            try? fm.copyItem(atPath: dir + "/keys/workers/worker1.key", toPath: dir + "/k.key")
            try? fm.copyItem(atPath: dir + "/keys/coordinator.pub", toPath: dir + "/c.pub")
            try? fm.copyItem(atPath: dir + "/keys/workers/worker1.key", toPath: dir + "/keys/worker1.key")
        }
        var ranWorkers = Set<String>()
        for coordinator in coordinators {
            let port = freePort()
            let line = HelpExamples.rewrite(coordinator, port: port)
            let c = try Child(["-c", line], log: dir + "/coordinator-\(port).log", environment: env, executable: "/bin/sh", directory: dir)
            // A plaintext coordinator gets the plaintext worker examples, a CURVE one those with keys.
            let plaintext = coordinator.contains("--plaintext")
            var mine = workers.filter { $0.contains("--plaintext") == plaintext }
            if mine.isEmpty { mine = ["ambient worker --connect tcp://127.0.0.1:5555" + (plaintext ? " --plaintext" : "")] }
            let lines = mine.map { HelpExamples.rewrite($0, port: port, metricsPort: freePort()) }
            let children = try lines.enumerated().map { i, l in
                try Child(["-c", l], log: dir + "/worker-\(port)-\(i).log", environment: env, executable: "/bin/sh", directory: dir)
            }
            let status = c.wait(240)
            #expect(status == 0, "example `\(coordinator)` (run as `\(line)`): \(status.map(String.init) ?? "timed out")\n\(c.output.suffix(2000))")
            for (w, l) in zip(children, lines) {
                let s = w.wait(30)
                #expect(s == 0, "worker `\(l)`: \(s.map(String.init) ?? "timed out")\n\(w.output.suffix(1500))")
            }
            ranWorkers.formUnion(mine.filter(workers.contains))
        }
        #expect(ranWorkers.count == workers.count, "worker examples no coordinator example could serve: \(Set(workers).subtracting(ranWorkers))")
        let ran = coordinators.count + ranWorkers.count
        return ran
    }
}

/// Reading the examples out of a help text, and making them small and local.
enum HelpExamples {
    /// The example lines (`ambient ...`, joined over trailing backslashes, without a trailing
    /// `(remark)`), and the problems found: a line under an example that looks like its
    /// continuation (starts with `--`) although the example has no backslash.
    static func extract(_ help: String) -> (examples: [String], problems: [String]) {
        var examples: [String] = [], problems: [String] = []
        var current: String?
        var lastExample = false
        for raw in help.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if var c = current {
                c += " " + line.replacingOccurrences(of: "\\", with: "").trimmingCharacters(in: .whitespaces)
                if line.hasSuffix("\\") { current = c } else { examples.append(c); current = nil; lastExample = true }
                continue
            }
            if raw.hasPrefix("  ") && isExample(line) {
                var text = line
                if let r = text.range(of: #"\s{2,}\(.*\)$"#, options: .regularExpression) { text.removeSubrange(r) }
                if text.hasSuffix("\\") { current = String(text.dropLast()).trimmingCharacters(in: .whitespaces) } else { examples.append(text); lastExample = true }
                continue
            }
            if lastExample && !line.isEmpty && !line.hasPrefix("USAGE:") {
                problems.append("the example `\(examples.last!)` is followed by `\(line)`, a continuation without a backslash")
            }
            lastExample = false
        }
        return (examples, problems)
    }

    /// `ambient ...`, or `VAR=value ... ambient ...` (an environment for the one command).
    static func isExample(_ line: String) -> Bool {
        line.hasPrefix("ambient ") || line.range(of: #"^([A-Z_][A-Z0-9_]*=\S+ )+ambient "#, options: .regularExpression) != nil
    }

    /// The command words after `ambient` (the environment assignments skipped).
    static func command(_ example: String) -> Substring {
        guard let r = example.range(of: "ambient ") else { return example[...] }
        return example[r.upperBound...]
    }

    /// The order the examples run in, so each finds what an earlier one made; the coordinator and
    /// worker examples come last, apart.
    static func order(_ examples: [String]) -> (phased: [String], cluster: [String]) {
        let phases = ["keys generate", "dataset make", "dataset verify", "dataset subset", "dataset merge", "train --dry-run", "train", "classifier train",
                      "classifier crop-map", "annotate", "classifier check", "sample", "denoise", "eval", "calibrate-evaluator", "report"]
        func phase(_ e: String) -> Int? {
            let words = command(e)
            if words.hasPrefix("train") && e.contains("--dry-run") { return phases.firstIndex(of: "train --dry-run") }
            return phases.firstIndex { $0 != "train --dry-run" && (words.hasPrefix($0 + " ") || words == $0) }
        }
        let phased = examples.filter { phase($0) != nil }.enumerated()
            .sorted { (phase($0.element)!, $0.offset) < (phase($1.element)!, $1.offset) }.map(\.element)
        return (phased, examples.filter { phase($0) == nil })
    }

    /// The example as run: sizes shrunk, addresses and absolute paths made local. Nothing else.
    static func rewrite(_ example: String, port: Int = 0, metricsPort: Int = 0) -> String {
        var s = example
        func replace(_ pattern: String, _ template: String) {
            s = s.replacingOccurrences(of: pattern, with: template, options: .regularExpression)
        }
        func has(_ option: String) -> Bool { s.range(of: " \(option)( |$)", options: .regularExpression) != nil }
        let words = command(s)
        let trains = words.hasPrefix("train") || words.hasPrefix("classifier train") || words.hasPrefix("coordinator")
        if trains && !s.contains("--dry-run") {
            if has("--steps") { replace(#" --steps \d+"#, " --steps 2") } else { s += " --steps 2" }
        }
        if words.hasPrefix("dataset make") && s.contains("fashion-mnist") {
            if has("--count") { replace(#" --count \d+"#, " --count 64") } else { s += " --count 64" }
        }
        if words.hasPrefix("sample") || words.hasPrefix("eval") || words.hasPrefix("classifier check") || words.hasPrefix("calibrate-evaluator") {
            if has("--count") { replace(#" --count \d+"#, " --count 8") } else { s += " --count 8" }
        }
        if words.hasPrefix("sample") && has("--steps") { replace(#" --steps \d+"#, " --steps 4") }
        if words.hasPrefix("classifier check") || (words.hasPrefix("annotate") && s.contains("--classifier ")) { s += " --grid 16 --draws 1" }
        if words.hasPrefix("classifier crop-map") {
            replace(#" --database \d+"#, "")
            replace(#" --queries \d+"#, "")
            s += " --database 100 --queries 8 --positions 2"
        }
        // Local addresses and paths only (tests bind 127.0.0.1).
        replace(#"tcp://[A-Za-z0-9.\-]+:\d+"#, "tcp://127.0.0.1:\(port)")
        replace(#" --metrics-port \d+"#, " --metrics-port \(metricsPort)")
        replace(#" --metrics-address [0-9.]+"#, " --metrics-address 127.0.0.1")
        replace(#" /shared/"#, " shared/")
        replace(#" /tmp/"#, " tmp/")
        return s
    }
}

/// The reading and rewriting of examples, on a help text written here.
@Suite struct HelpExampleParsingTests {
    @Test func continuationsRemarksAndUnmarkedWraps() {
        let help = """
        Examples:
          ambient train --data fashion-mnist --steps 2000 \\
              --out runs/fm
          ambient report --run runs/fm                  (writes runs/fm/report.html)
          ambient classifier check --data d --classifier c
        --count 100 --out check.json

        OPTIONS:
          --steps <steps>   Training steps.
        """
        let (examples, problems) = HelpExamples.extract(help)
        #expect(examples == ["ambient train --data fashion-mnist --steps 2000 --out runs/fm", "ambient report --run runs/fm",
                             "ambient classifier check --data d --classifier c"])
        #expect(problems.count == 1 && problems[0].contains("--count 100"), "\(problems)")
    }

    @Test func rewritesShrinkSizesAndMakeAddressesLocal() {
        #expect(HelpExamples.rewrite("ambient train --data fashion-mnist --steps 2000 --out runs/fm") == "ambient train --data fashion-mnist --steps 2 --out runs/fm")
        #expect(HelpExamples.rewrite("ambient train --data gmm:dim=8 --out runs/g") == "ambient train --data gmm:dim=8 --out runs/g --steps 2")
        #expect(HelpExamples.rewrite("ambient train --data fashion-mnist --dry-run > run.yaml") == "ambient train --data fashion-mnist --dry-run > run.yaml")
        #expect(HelpExamples.rewrite("ambient worker --connect tcp://10.0.0.11:5555 --metrics-port 9401 --metrics-address 10.0.0.12", port: 7000, metricsPort: 7001)
                == "ambient worker --connect tcp://127.0.0.1:7000 --metrics-port 7001 --metrics-address 127.0.0.1")
        #expect(HelpExamples.rewrite("ambient coordinator --bind tcp://0.0.0.0:5555 --out /shared/runs/fm", port: 9)
                == "ambient coordinator --bind tcp://127.0.0.1:9 --out shared/runs/fm --steps 2")
        let (phased, cluster) = HelpExamples.order(["ambient report --run r", "ambient worker --connect x", "ambient train --config run.yaml",
                                                    "ambient train --data d --dry-run > run.yaml", "ambient dataset make --source gmm --out d"])
        #expect(phased == ["ambient dataset make --source gmm --out d", "ambient train --data d --dry-run > run.yaml",
                           "ambient train --config run.yaml", "ambient report --run r"])
        #expect(cluster == ["ambient worker --connect x"])
    }
}
