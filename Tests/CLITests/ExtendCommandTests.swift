import Foundation
import Testing

/// `ambient train --extend` from the command line, in one process and on a local cluster: a
/// finished run continued to more steps ends with the weights of the longer run.
@Suite(.serialized, .timeLimit(.minutes(10))) struct ExtendCommandTests {
    static let options = ["--data", "gmm:dim=16,count=2000", "--corrupt", "noise:0.5", "--width", "64", "--blocks", "2",
                          "--batch", "64", "--shards", "4", "--log-every", "5", "--seed", "3", "--checkpoint-every", "20", "--quiet"]

    @Test(arguments: [0, 2])
    func extendedRunEqualsTheLongerRun(workers: Int) throws {
        let dir = try scratchDirectory("extend")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let extra = workers > 0 ? ["--workers", String(workers)] : []
        let ref = try CommandRunner.run(["train"] + Self.options + extra + ["--steps", "70", "--out", dir + "/reference"])
        #expect(ref.status == 0, "\(ref.stderr)")
        let run = dir + "/run"
        let short = try CommandRunner.run(["train"] + Self.options + extra + ["--steps", "50", "--out", run])
        #expect(short.status == 0, "\(short.stderr)")
        let refused = try CommandRunner.run(["train"] + Self.options + extra + ["--steps", "70", "--out", run])
        #expect(refused.status != 0 && refused.stderr.contains("add --extend"), "\(refused.stderr)")
        let extended = try CommandRunner.run(["train"] + Self.options + extra + ["--steps", "70", "--extend", "--out", run])
        #expect(extended.status == 0, "\(extended.stderr)")
        let a = try Data(contentsOf: URL(fileURLWithPath: run + "/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference/model.safetensors"))
        #expect(a == b, "the extended run differs from the run of 70 steps")
        #expect(FileManager.default.fileExists(atPath: run + "/model-step-50.safetensors"))
        if workers == 0 {
            let r = try CommandRunner.run(["report", "--run", run, "--samples", "4"])
            #expect(r.status == 0, "\(r.stderr)")
            let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
            #expect(html.contains("<b>finished</b> (70 steps) · extended from 50 steps"), "the report does not say the run was extended")
        }
    }
}
