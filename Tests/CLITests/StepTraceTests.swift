import Foundation
import Testing

/// `AMBIENT_TRACE`: the coordinator and the workers of a local cluster append their step events to
/// one file, in an order a step can run in, and `scripts/step-timeline` reads it (and refuses what
/// is not a trace).
@Suite(.serialized, .timeLimit(.minutes(10))) struct StepTraceTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test func localClusterWritesATimelineTheScriptReads() throws {
        let dir = try scratchDirectory("trace")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = dir + "/trace.jsonl"
        let r = try CommandRunner.run(["train"] + LocalLinkTests.options + ["--workers", "2", "--out", dir + "/run", "--quiet"],
                                      environment: ["AMBIENT_TRACE": trace])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        let events = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(events.count == lines.count, "every line is one JSON object")
        var at: [String: Double] = [:]   // "role/event/step" -> t
        for e in events {
            guard let role = e["role"] as? String, let event = e["event"] as? String, let step = e["step"] as? Int,
                  let t = e["t"] as? Double, e["pid"] is Int else {
                Issue.record("incomplete trace line: \(e)")
                continue
            }
            at["\(role)/\(event)/\(step)"] = t
        }
        let workers = Set(events.compactMap { $0["role"] as? String }.filter { $0.hasPrefix("worker") })
        #expect(workers.count == 2, "\(workers)")
        let steps = 60
        for s in [1, steps / 2, steps - 2] {
            let order = ["coordinator/assigned/\(s)", "coordinator/reduced/\(s)", "coordinator/applied/\(s)",
                         "coordinator/checksummed/\(s)", "coordinator/assigned/\(s + 1)"]
            let times = order.compactMap { at[$0] }
            #expect(times.count == order.count && times == times.sorted(), "step \(s): \(order) at \(times)")
            for w in workers {
                let chain = ["\(w)/assign/\(s)", "\(w)/compute-start/\(s)", "\(w)/compute-end/\(s)",
                             "\(w)/update-complete/\(s)", "\(w)/applied/\(s)"]
                let t = chain.compactMap { at[$0] }
                #expect(t.count == chain.count && t == t.sorted(), "step \(s): \(chain) at \(t)")
            }
        }
        let script = Self.repository + "/scripts/step-timeline"
        let ok = try CommandRunner.run(["python3", script, trace], executable: "/usr/bin/env")
        #expect(ok.status == 0 && ok.stdout.contains("median step") && ok.stdout.contains("coordinator: next step assigned"),
                "\(ok.stdout)\(ok.stderr)")
        try Data("{\"t\": 1.0, \"role\": \"coordinator\"}\nnot json\n".utf8).write(to: URL(fileURLWithPath: dir + "/bad.jsonl"))
        let bad = try CommandRunner.run(["python3", script, dir + "/bad.jsonl"], executable: "/usr/bin/env")
        #expect(bad.status == 1 && bad.stderr.contains("not a trace line"), "\(bad.stdout)\(bad.stderr)")
        let missing = try CommandRunner.run(["python3", script, dir + "/absent.jsonl"], executable: "/usr/bin/env")
        #expect(missing.status == 1 && missing.stderr.contains("cannot read"), "\(missing.stderr)")
    }
}
