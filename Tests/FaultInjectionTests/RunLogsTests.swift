import FaultInjection
import Foundation
import Testing

@Suite struct RunLogsTests {
    @Test func lastStepIsTheLastLinesStep() {
        let text = (0...12).map { #"{"grad_norm":0.5,"loss":1.25,"step":\#($0)}"# }.joined(separator: "\n") + "\n"
        #expect(RunLogs.lastStep(metrics: text) == 12)
    }

    @Test func lastStepSkipsALineCutShortAndBadInput() {
        // kill -9 can cut the last line; its step may be missing or unfinished.
        #expect(RunLogs.lastStep(metrics: "{\"loss\":1,\"step\":7}\n{\"loss\":0.9,\"st") == 7)
        #expect(RunLogs.lastStep(metrics: "{\"loss\":1,\"step\":7}\n{\"loss\":0.9,\"step\":1") == 7)
        #expect(RunLogs.lastStep(metrics: "") == -1)
        #expect(RunLogs.lastStep(metrics: "not json\n{\"step\":\"x\"}\n") == -1)
    }

    /// What EventLog writes: ClusterEvent encoded with sorted keys, one per line.
    struct Line: Encodable { var detail: String; var kind: String; var step: Int; var time: Double; var worker: String }

    func encode(_ lines: [Line]) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return lines.map { String(decoding: try! e.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
    }

    @Test func eventsRoundTrip() {
        let lines = [Line(detail: "", kind: "start", step: 0, time: 1_700_000_000.125, worker: ""),
                     Line(detail: "heartbeat \"timeout\"", kind: "drop", step: 41, time: 1_700_000_003.5, worker: "w2#123"),
                     Line(detail: "resumed from /tmp/x/run/checkpoints/ckpt-00000050.ambient at step 50", kind: "restore", step: 50,
                          time: 1_700_000_009, worker: "")]
        let events = RunLogs.events(encode(lines))
        #expect(events == lines.map { RunLogs.Event(time: $0.time, kind: $0.kind, step: $0.step, worker: $0.worker, detail: $0.detail) })
    }

    @Test func firstEventMatchesKindWorkerPrefixAndTime() {
        let events = RunLogs.events(encode([
            Line(detail: "unreachable", kind: "drop", step: 10, time: 100, worker: "w1#5"),
            Line(detail: "unreachable", kind: "drop", step: 20, time: 200, worker: "w12#6"),
            Line(detail: "replaced", kind: "drop", step: 30, time: 300, worker: "w1#7"),
            Line(detail: "", kind: "join", step: 31, time: 301, worker: "w1#8"),
        ]))
        #expect(RunLogs.firstEvent(events, kind: "drop", workerPrefix: "w1#", after: 0)?.step == 10)
        #expect(RunLogs.firstEvent(events, kind: "drop", workerPrefix: "w1#", after: 100)?.step == 10)   // at or after
        #expect(RunLogs.firstEvent(events, kind: "drop", workerPrefix: "w1#", after: 150)?.detail == "replaced")
        #expect(RunLogs.firstEvent(events, kind: "drop", workerPrefix: "", after: 150)?.worker == "w12#6")
        #expect(RunLogs.firstEvent(events, kind: "join", workerPrefix: "w1#", after: 302) == nil)
        #expect(RunLogs.firstEvent(events, kind: "restore", after: 0) == nil)
    }

    @Test func eventsSkipCutAndMalformedLines() {
        let text = #"{"detail":"","kind":"join","step":1,"time":5,"worker":"w1#1"}"# + "\n" + "garbage\n{\"kind\":\"drop\"}\n"
            + #"{"detail":"","kind":"drop","step":2,"time":"#
        #expect(RunLogs.events(text).map(\.kind) == ["join"])
        #expect(RunLogs.events("").isEmpty)
    }

    @Test func resumedFromKnownAnswerAndBadInput() {
        let r = RunLogs.resumed(detail: "resumed from /tmp/a b/../ckpt-00000100.ambient at step 100")
        #expect(r == nil)   // a path with a space is not what the coordinator writes
        let ok = RunLogs.resumed(detail: "resumed from /tmp/r/checkpoints/ckpt-00000100.ambient at step 100")
        #expect(ok?.path == "/tmp/r/checkpoints/ckpt-00000100.ambient")
        #expect(ok?.step == 100)
        #expect(RunLogs.resumed(detail: "resumed from  at step 3") == nil)
        #expect(RunLogs.resumed(detail: "resumed from /x at step") == nil)
        #expect(RunLogs.resumed(detail: "started") == nil)
    }

    @Test func listeningEndpoint() {
        let log = "2026-12-05T09:00:00Z notice ambient: starting\n2026-12-05T09:00:01Z notice ambient: listening endpoint=tcp://127.0.0.1:40123 security=plaintext\n"
        #expect(RunLogs.listeningEndpoint(log: log) == "tcp://127.0.0.1:40123")
        #expect(RunLogs.listeningEndpoint(log: "listening endpoint=tcp://10.201.1.1:5555") == "tcp://10.201.1.1:5555")
        #expect(RunLogs.listeningEndpoint(log: "starting\nlistening security=curve\n") == nil)
        #expect(RunLogs.listeningEndpoint(log: "") == nil)
    }

    @Test func skipReason() {
        #expect(RunLogs.skipReason("warning skipping checkpoint ckpt-00000150.ambient: checksum mismatch in section params") == "checksum mismatch")
        #expect(RunLogs.skipReason("skipping checkpoint f: section opt checksum mismatch") == "section opt checksum mismatch")
        #expect(RunLogs.skipReason("skipping checkpoint f: truncated at byte 9") == "truncated")
        #expect(RunLogs.skipReason("skipping checkpoint f: corrupted header") == "corrupted")
        #expect(RunLogs.skipReason("skipping checkpoint f: header length 99 too large. Next") == "header length 99 too large")
        #expect(RunLogs.skipReason("skipping checkpoint f: unreadable") == nil)
    }
}

@Suite struct TimingTests {
    @Test func statisticsKnownAnswers() {
        #expect(Timing.statistics(["0.33", "0.10", "0.52"]) == "0.10 / 0.33 / 0.52 s (3)")
        #expect(Timing.statistics(["2", "1", "4", "3"]) == "1.00 / 2.00 / 4.00 s (4)")   // lower middle
        #expect(Timing.statistics(["0.5"]) == "0.50 / 0.50 / 0.50 s (1)")
        #expect(Timing.statistics(["n/a", "1.5", ""]) == "1.50 / 1.50 / 1.50 s (1)")
    }

    @Test func statisticsOfNothing() {
        #expect(Timing.statistics([]) == "-")
        #expect(Timing.statistics(["n/a", "", "-1", "x"]) == "-")
    }

    @Test func secondsAndPadding() {
        #expect(Timing.seconds(0.333) == "0.33")
        #expect(Timing.seconds(12) == "12.00")
        #expect(Timing.padded("worker-kill", 14) == "worker-kill   ")
        #expect(Timing.padded("coordinator-kill-checkpoint", 5) == "coordinator-kill-checkpoint")
    }
}
