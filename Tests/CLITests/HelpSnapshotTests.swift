import Foundation
import Testing

/// The help text of every command, compared exactly with Tests/CLITests/Snapshots/help-*.txt.
/// After changing a help text: `AMBIENT_UPDATE_SNAPSHOTS=1 swift test --filter HelpSnapshotTests`
/// rewrites the snapshots (review the diff), and `scripts/cli-reference` regenerates docs/cli.md.
@Suite struct HelpSnapshotTests {
    /// Every command and subcommand of `ambient`.
    static let commands: [[String]] = [
        [], ["dataset"], ["dataset", "make"], ["dataset", "verify"], ["dataset", "subset"], ["dataset", "merge"], ["train"], ["classifier"], ["classifier", "train"], ["classifier", "crop-map"], ["classifier", "check"],
        ["annotate"], ["sample"], ["denoise"], ["eval"], ["calibrate-evaluator"], ["report"], ["coordinator"], ["worker"], ["keys"], ["keys", "generate"],
    ]

    static var snapshotDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Snapshots").path
    }

    static func snapshotName(_ command: [String]) -> String {
        "help-" + (command.isEmpty ? "ambient" : command.joined(separator: "-")) + ".txt"
    }

    @Test(arguments: commands)
    func helpMatchesItsSnapshot(_ command: [String]) throws {
        // ArgumentParser wraps to the terminal width; COLUMNS fixes it.
        let r = try CommandRunner.run(command + ["--help"], environment: ["COLUMNS": "100"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Example"), "no examples in the help of \(command)")
        for line in r.stdout.split(separator: "\n") where line.count > 100 && !line.hasPrefix("USAGE:") {   // ArgumentParser does not wrap usage
            Issue.record("\(command): help line wider than the terminal: \(line)")
        }
        let path = Self.snapshotDirectory + "/" + Self.snapshotName(command)
        if ProcessInfo.processInfo.environment["AMBIENT_UPDATE_SNAPSHOTS"] == "1" {
            try r.stdout.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        guard let expected = try? String(contentsOfFile: path, encoding: .utf8) else {
            Issue.record("no snapshot \(path): run AMBIENT_UPDATE_SNAPSHOTS=1 swift test --filter HelpSnapshotTests")
            return
        }
        if r.stdout != expected {
            let a = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            let b = expected.split(separator: "\n", omittingEmptySubsequences: false)
            let first = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
            Issue.record("""
                help of `ambient \(command.joined(separator: " "))` differs from \(path) at line \(first + 1):
                  now:      \(first < a.count ? String(a[first]) : "<end>")
                  snapshot: \(first < b.count ? String(b[first]) : "<end>")
                If the change is intended: AMBIENT_UPDATE_SNAPSHOTS=1 swift test --filter HelpSnapshotTests, then scripts/cli-reference.
                """)
        }
    }
}
