@testable import Cluster
import Foundation
import Testing
import Wire
@testable import Monitoring

/// A clock the test moves by hand.
final class ManualClock: Clock, @unchecked Sendable {
    var t = 100.0
    func now() -> Double { t }
}

/// The value of the series `name` (with its label set, e.g. `{peer="w1"}`) in an exposition.
func value(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// A worker's link in a test: `receive` returns the queued messages in order, and the time it
/// waits in there is `waits` (popped per call), so waiting and the worker's own work (time
/// between calls) are told apart.
final class ScriptedClient: ClientTransport, @unchecked Sendable {
    let clock: ManualClock
    var inbox: [[[UInt8]]] = []
    var waits: [Double] = []
    var sent: [[[UInt8]]] = []
    var sealed: Bool { false }
    init(clock: ManualClock) { self.clock = clock }
    func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? {
        if !waits.isEmpty { clock.t += waits.removeFirst() }
        return inbox.isEmpty ? nil : inbox.removeFirst()
    }
    func send(_ frames: [[UInt8]]) throws(TransportError) { sent.append(frames) }
    func wake() {}
    func close() {}
}

func near(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) < 1e-9 } ?? false }

func gradientFrames(step: Int, shard: Int, values: [Float], meta: GradientMeta) throws -> [[UInt8]] {
    let h = MessageHeader(type: .gradient, runID: 1, step: UInt64(step), shard: UInt32(shard), shardCount: 2)
    let metaBytes = try Message.jsonPayload(meta)
    return values.withUnsafeBufferPointer { Message(header: h, tensor: $0, codec: LZ4Codec(), meta: metaBytes).frames() }
}

@Suite struct ClusterMetricsTests {
    /// The coordinator's side: bytes per worker name (not per incarnation), the gradient codec
    /// ratio from the headers, the coordinator's own time as the reduce phase, step summaries
    /// and events.
    @Test func coordinatorSeriesFollowTraffic() throws {
        let metrics = ClusterMetrics(role: .coordinator)
        #expect(value(String(decoding: metrics.render(), as: UTF8.self), "ambient_checkpoint_age_seconds") == -1)
        let network = InMemoryNetwork()
        let clock = ManualClock()
        let server = MeteredServerTransport(network.server(), metrics: metrics, clock: clock)
        let a = network.connect(identity: "n1-0/1f"), b = network.connect(identity: "n2-1/2e")
        let zeros = [Float](repeating: 0, count: 4096)   // compresses well with LZ4
        let g = try gradientFrames(step: 0, shard: 0, values: zeros, meta: GradientMeta(loss: 0.5, terms: [:], rows: 48, computeSeconds: 0.2))
        try a.send(g)
        try b.send([[1, 2, 3]])
        #expect(try server.receive(timeout: 1) != nil)
        clock.t += 0.25                                  // the coordinator works for 0.25 s
        #expect(try server.receive(timeout: 1) != nil)
        try server.send([[9, 9]], to: PeerID("n1-0/1f"))
        metrics.stepCompleted(StepSummary(step: 0, loss: 0.75, terms: [:], gradientNorm: 1, seconds: 1.0, computeSeconds: 0.2,
                                          workers: 2, bytesIn: 0, bytesOut: 0), samples: 96)
        metrics.event(ClusterEvent(time: Date().timeIntervalSince1970 - 5, kind: .checkpoint, step: 1, worker: "", detail: ""))
        metrics.event(ClusterEvent(time: 0, kind: .join, step: 0, worker: "n1-0#1", detail: ""))
        metrics.event(ClusterEvent(time: 0, kind: .drop, step: 0, worker: "n1-0#1", detail: ""))
        let text = String(decoding: metrics.render(), as: UTF8.self)

        #expect(value(text, #"ambient_peer_received_bytes_total{peer="n1-0"}"#) == Double(g.reduce(0) { $0 + $1.count }))
        #expect(value(text, #"ambient_peer_received_bytes_total{peer="n2-1"}"#) == 3)
        #expect(value(text, #"ambient_peer_sent_bytes_total{peer="n1-0"}"#) == 2)
        let ratio = try #require(value(text, #"ambient_codec_ratio{direction="gradient"}"#))
        #expect(ratio == Double(4096 * 4) / Double(g[1].count) && ratio > 10)
        #expect(value(text, "ambient_step") == 0)
        #expect(value(text, "ambient_steps_total") == 1)
        #expect(value(text, "ambient_loss") == 0.75)
        #expect(value(text, "ambient_samples_total") == 96)
        #expect(value(text, "ambient_samples_per_second") == 96)
        #expect(value(text, "ambient_workers") == 2)
        #expect(near(value(text, #"ambient_step_phase_seconds_sum{phase="reduce"}"#), 0.25))
        #expect(value(text, #"ambient_step_phase_seconds_sum{phase="compute"}"#) == 0.2)
        #expect(near(value(text, #"ambient_step_phase_seconds_sum{phase="wait"}"#), 0.55))
        #expect(value(text, "ambient_step_seconds_count") == 1)
        #expect(value(text, "ambient_workers_joined_total") == 1)
        #expect(value(text, "ambient_workers_dropped_total") == 1)
        #expect(value(text, "ambient_checkpoints_total") == 1)
        let age = try #require(value(text, "ambient_checkpoint_age_seconds"))
        #expect(age >= 5 && age < 60)
    }

    /// The worker's side: a step runs from one assignment to the next; its compute time,
    /// samples and loss come from the gradients it sends, its apply time is its own work.
    @Test func workerStepsFromAssignmentsAndGradients() throws {
        let metrics = ClusterMetrics(role: .worker)
        let clock = ManualClock()
        let link = ScriptedClient(clock: clock)
        let client = MeteredClientTransport(link, metrics: metrics, clock: clock)
        for step in 0..<3 {
            link.inbox = [Message(header: MessageHeader(type: .assign, step: UInt64(step))).frames()]
            link.waits = [step == 0 ? 0 : 0.9]           // waited 0.9 s for this assignment
            #expect(try client.receive(timeout: 1) != nil)
            clock.t += 0.1                               // the worker's own work (apply)
            try client.send(try gradientFrames(step: step, shard: 0, values: [1, 2, 3],
                                               meta: GradientMeta(loss: 0.3 + Double(step), terms: [:], rows: 24, computeSeconds: 0.5)))
            #expect(try client.receive(timeout: 0) == nil)
        }
        let text = String(decoding: metrics.render(), as: UTF8.self)
        #expect(value(text, "ambient_step") == 2)
        #expect(value(text, "ambient_steps_total") == 2)            // steps 0 and 1 are over
        #expect(value(text, "ambient_samples_total") == 72)
        #expect(value(text, "ambient_shard_loss") == 2.3)
        #expect(near(value(text, "ambient_step_seconds_sum"), 2.0))
        #expect(near(value(text, #"ambient_step_phase_seconds_sum{phase="compute"}"#), 1.0))
        #expect(near(value(text, #"ambient_step_phase_seconds_sum{phase="apply"}"#), 0.2))
        #expect(near(value(text, #"ambient_step_phase_seconds_sum{phase="wait"}"#), 0.8))
        #expect(near(value(text, "ambient_samples_per_second"), 24))
        #expect(link.sent.count == 3)
        #expect(value(text, #"ambient_peer_sent_bytes_total{peer="coordinator"}"#)! > 0)
        #expect(value(text, #"ambient_codec_ratio{direction="gradient"}"#) != nil)
        #expect(value(text, "ambient_loss") == nil)
        // The run's membership and checkpoints are the coordinator's series only.
        for name in ["ambient_workers", "ambient_workers_joined_total", "ambient_checkpoints_total", "ambient_checkpoint_age_seconds"] {
            #expect(value(text, name) == nil, "\(name) on a worker")
        }
    }

    /// Prometheus naming: ambient_ prefix, snake case, counters end in _total, units in names,
    /// every series with HELP and TYPE.
    @Test func namesFollowPrometheusConventions() throws {
        for role in [ClusterMetrics.Role.coordinator, .worker] {
            let metrics = ClusterMetrics(role: role)
            metrics.frames([[1]], peer: "p", sent: true, now: 0)
            let text = String(decoding: metrics.render(), as: UTF8.self)
            var types: [String: String] = [:]
            for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                types[String(parts[2])] = String(parts[3])
            }
            #expect(types.count >= (role == .coordinator ? 15 : 9))
            for (name, type) in types {
                #expect(name.range(of: #"^ambient_[a-z_]+$"#, options: .regularExpression) != nil, "\(name)")
                #expect((type == "counter") == name.hasSuffix("_total"), "\(name) is a \(type)")
                #expect(text.contains("# HELP \(name) "), "\(name) has no HELP")
            }
            #expect(types["ambient_step_seconds"] == "histogram")
        }
    }
}
