import Foundation
import Testing

/// `ambient train --workers N` on one machine: by default the workers reach the coordinator
/// over a Unix socket in a directory of the run that only its user can enter (no CURVE), and
/// the directory is gone when the run ends; `--local-link tcp` keeps CURVE over 127.0.0.1, for the
/// workers' data links as well.
/// Both give the single-process run's weights, bit for bit.
@Suite(.serialized, .timeLimit(.minutes(10))) struct LocalLinkTests {
    static let options = Array(ClusterProcessTests.runOptions.dropLast(4)) + ["--steps", "60", "--seed", "3"]

    @Test func ipcDirectoryIsPrivateWhileTheRunLastsAndRemovedAfter() throws {
        let dir = try scratchDirectory("local-link")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tmp = dir + "/tmp"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let ref = try ClusterProcessTests().reference(dir, Self.options)
        let run = try Child(["train"] + Self.options + ["--workers", "2", "--out", dir + "/ipc", "--quiet", "--log-level", "notice"],
                            log: dir + "/ipc.log", environment: ["TMPDIR": tmp + "/"])
        defer { if run.isRunning { run.signal(SIGKILL); run.wait(5) } }
        func runDirectories() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).filter { $0.hasPrefix("ambient-local-") }
        }
        var seen: String?
        #expect(waitUntil(60) {
            guard let name = runDirectories().first else { return false }
            seen = tmp + "/" + name
            return FileManager.default.fileExists(atPath: seen! + "/coordinator.sock")
        }, "no run directory with a socket appeared: \(run.output)")
        if let seen {
            var st = stat()
            #expect(stat(seen, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o700, "mode \(String(st.st_mode & 0o777, radix: 8))")
            #expect(st.st_uid == getuid())
            #expect(!FileManager.default.fileExists(atPath: seen + "/worker.key"), "no keys on the ipc link")
        }
        #expect(run.wait(120) == 0, "\(run.output)")
        #expect(run.output.contains("link: ipc") || run.output.contains("link=ipc") || run.output.contains("ipc://"), "\(run.output)")
        #expect(runDirectories().isEmpty, "left behind: \(runDirectories())")
        let m = try Data(contentsOf: URL(fileURLWithPath: dir + "/ipc/model.safetensors"))
        #expect(m == ref, "ipc: weights differ from the single-process run")
    }

    @Test func tcpLinkWithCurveMatchesTooAndFlagsAreChecked() throws {
        let dir = try scratchDirectory("local-tcp")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try ClusterProcessTests().reference(dir, Self.options)
        let r = try CommandRunner.run(["train"] + Self.options + ["--workers", "2", "--local-link", "tcp", "--out", dir + "/tcp", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let m = try Data(contentsOf: URL(fileURLWithPath: dir + "/tcp/model.safetensors"))
        #expect(m == ref, "tcp with CURVE: weights differ from the single-process run")
        // The range owners reduced over their own (tcp, CURVE) data links: the coordinator sent no tensor.
        let steps = try String(contentsOfFile: dir + "/tcp/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(!steps.isEmpty && steps.allSatisfy { ($0["bytes_out"] as? Double) == 0 }, "the coordinator sent tensors: no range owners")
        let both = try CommandRunner.run(["train"] + Self.options + ["--workers", "2", "--local-link", "ipc", "--plaintext", "--out", dir + "/bad"])
        #expect(both.status != 0 && both.stderr.contains("--plaintext"), "\(both.stderr)")
        let single = try CommandRunner.run(["train"] + Self.options + ["--local-link", "tcp", "--out", dir + "/bad2"])
        #expect(single.status != 0 && single.stderr.contains("--local-link"), "\(single.stderr)")
    }
}
