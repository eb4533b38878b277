import Cluster
import Foundation
import Prometheus
import Wire

/// The Prometheus metrics of one coordinator or worker process (docs/operations.md,
/// "Monitoring"). Fed by a metering transport (bytes per peer, codec ratio, the process's own
/// busy time, and on a worker the assignments and gradients it sees) and, on the coordinator,
/// by the step summaries and events of the run. No global state: each process makes one and
/// hands it to its transport, its run and its `MetricsServer`.
public final class ClusterMetrics: @unchecked Sendable {
    public enum Role: String, Sendable { case coordinator, worker }

    public let role: Role
    public let registry = PrometheusCollectorRegistry()
    private let lock = NSLock()

    private let step: Gauge
    private let stepsTotal: Counter
    private let loss: Gauge
    private let samplesTotal: Counter
    private let samplesPerSecond: Gauge
    private let stepSeconds: ValueHistogram
    private let phases: [String: ValueHistogram]
    /// The run's membership and checkpoints: the coordinator's only.
    private struct RunSeries {
        let workers: Gauge
        let joined: Counter
        let dropped: Counter
        let checkpoints: Counter
        let checkpointTime: Gauge
        let checkpointAge: Gauge
    }
    private let run: RunSeries?
    private var peerCounters: [String: (sent: Counter, received: Counter)] = [:]
    private var codec: [String: (ratio: Gauge, raw: Double, encoded: Double)] = [:]

    // Time of this process's own work between transport calls, since the last step ended.
    private var busy = 0.0
    // Worker: the step being computed, when it was assigned, and what its gradients reported.
    private var workerStep = -1
    private var workerStepStart = 0.0
    private var workerCompute = 0.0
    private var workerRows = 0
    private var lastCheckpoint: Double?

    /// A metric's full name (units and `_total` in it) and its HELP text.
    static func named(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    static let secondsBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    public init(role: Role) {
        self.role = role
        let r = registry
        step = r.makeGauge(descriptor: Self.named("ambient_step", "Last step completed (coordinator) or assigned (worker)."))
        stepsTotal = r.makeCounter(descriptor: Self.named("ambient_steps_total", "Steps completed by this process's run since it started."))
        loss = role == .coordinator
            ? r.makeGauge(descriptor: Self.named("ambient_loss", "Training loss of the last completed step."))
            : r.makeGauge(descriptor: Self.named("ambient_shard_loss", "Loss of the last shard this worker computed (its share of the step loss)."))
        samplesTotal = r.makeCounter(descriptor: Self.named("ambient_samples_total", "Training samples processed (worker: in its shards)."))
        samplesPerSecond = r.makeGauge(descriptor: Self.named("ambient_samples_per_second", "Samples per second over the last step."))
        let stepHelp = "Wall time of a step (coordinator: assignment to update; worker: assignment to assignment)."
        stepSeconds = r.makeValueHistogram(descriptor: Self.named("ambient_step_seconds", stepHelp), buckets: Self.secondsBuckets)
        let phaseNames = role == .coordinator ? ["compute", "wait", "reduce"] : ["compute", "wait", "apply"]
        let phaseHelp = "A step's wall time split: compute (shard gradients), wait (network, stragglers), reduce or apply (this process's own work)."
        var p: [String: ValueHistogram] = [:]
        for name in phaseNames {
            p[name] = r.makeValueHistogram(descriptor: Self.named("ambient_step_phase_seconds", phaseHelp), labels: [("phase", name)],
                                           buckets: Self.secondsBuckets)
        }
        phases = p
        if role == .coordinator {
            run = RunSeries(
                workers: r.makeGauge(descriptor: Self.named("ambient_workers", "Workers taking part in the last step.")),
                joined: r.makeCounter(descriptor: Self.named("ambient_workers_joined_total", "Worker registrations accepted.")),
                dropped: r.makeCounter(descriptor: Self.named("ambient_workers_dropped_total", "Workers dropped (dead, hung or unreachable).")),
                checkpoints: r.makeCounter(descriptor: Self.named("ambient_checkpoints_total", "Checkpoints written.")),
                checkpointTime: r.makeGauge(descriptor: Self.named("ambient_checkpoint_last_timestamp_seconds",
                                            "Unix time of the last checkpoint written (0: none yet).")),
                checkpointAge: r.makeGauge(descriptor: Self.named("ambient_checkpoint_age_seconds",
                                                                   "Seconds since the last checkpoint was written (-1: none yet).")))
            run?.checkpointAge.set(-1.0)
        } else {
            run = nil
        }
    }

    /// The exposition text, checkpoint age brought up to date first.
    public func render() -> [UInt8] {
        lock.lock()
        if let t = lastCheckpoint { run?.checkpointAge.set(max(0, Date().timeIntervalSince1970 - t)) }
        lock.unlock()
        return registry.emitToBuffer()
    }

    // MARK: Fed by the run (coordinator)

    /// A step the coordinator completed: `samples` is the batch size.
    public func stepCompleted(_ s: StepSummary, samples: Int) {
        lock.lock(); defer { lock.unlock() }
        step.set(Double(s.step))
        stepsTotal.increment()
        loss.set(s.loss)
        samplesTotal.increment(by: Int64(samples))
        if s.seconds > 0 { samplesPerSecond.set(Double(samples) / s.seconds) }
        run?.workers.set(Double(s.workers))
        let reduce = min(busy, s.seconds)
        record(total: s.seconds, compute: s.computeSeconds, own: reduce, ownPhase: "reduce")
        busy = 0
    }

    /// An event of the coordinator (joins, drops, checkpoints).
    public func event(_ e: ClusterEvent) {
        lock.lock(); defer { lock.unlock() }
        guard let run else { return }
        switch e.kind {
        case .join: run.joined.increment()
        case .drop: run.dropped.increment()
        case .checkpoint:
            run.checkpoints.increment()
            lastCheckpoint = e.time
            run.checkpointTime.set(e.time)
            run.checkpointAge.set(max(0, Date().timeIntervalSince1970 - e.time))
        default: break
        }
    }

    private func record(total: Double, compute: Double, own: Double, ownPhase: String) {
        stepSeconds.record(total)
        phases["compute"]?.record(compute)
        phases[ownPhase]?.record(own)
        phases["wait"]?.record(max(0, total - compute - own))
    }

    // MARK: Fed by the metering transport

    /// This process's own work between two transport calls.
    func addBusy(_ seconds: Double) {
        lock.lock(); busy += max(0, seconds); lock.unlock()
    }

    /// Frames that went to (`sent`) or came from a peer.
    func frames(_ frames: [[UInt8]], peer: String, sent: Bool, now: Double) {
        let bytes = frames.reduce(0) { $0 + $1.count }
        lock.lock(); defer { lock.unlock() }
        let c = peerCounter(peer)
        (sent ? c.sent : c.received).increment(by: Int64(bytes))
        guard frames.count == 2 || frames.count == 3, frames[0].count == MessageHeader.size,
              let h = try? MessageHeader.decode(frames[0]) else { return }
        if h.type == .gradient || h.type == .update, h.encodedLength > 0 {
            let direction = h.type == .gradient ? "gradient" : "update"
            let help = "Raw tensor bytes over encoded bytes on the wire (gradients up, updates down)."
            var entry = codec[direction]
                ?? (registry.makeGauge(descriptor: Self.named("ambient_codec_ratio", help), labels: [("direction", direction)]), 0, 0)
            entry.raw += Double(h.rawLength)
            entry.encoded += Double(h.encodedLength)
            entry.ratio.set(entry.raw / entry.encoded)
            codec[direction] = entry
        }
        guard role == .worker else { return }
        if !sent, h.type == .assign, Int(h.step) != workerStep {
            if workerStep >= 0 {   // the previous step is over
                let total = now - workerStepStart
                let apply = min(busy, total)
                record(total: total, compute: min(workerCompute, total), own: apply, ownPhase: "apply")
                if total > 0 { samplesPerSecond.set(Double(workerRows) / total) }
                stepsTotal.increment()
            }
            workerStep = Int(h.step)
            step.set(Double(h.step))
            workerStepStart = now
            workerCompute = 0
            workerRows = 0
            busy = 0
        }
        if sent, h.type == .gradient, frames.count == 3,
           let meta = try? Message.decodeJSON(GradientMeta.self, from: frames[2], maxBytes: 1 << 16) {
            workerCompute += meta.computeSeconds
            workerRows += meta.rows
            samplesTotal.increment(by: Int64(meta.rows))
            loss.set(meta.loss)
        }
    }

    private func peerCounter(_ peer: String) -> (sent: Counter, received: Counter) {
        if let c = peerCounters[peer] { return c }
        let sent = Self.named("ambient_peer_sent_bytes_total", "Bytes sent to a peer (frames as handed to the transport).")
        let received = Self.named("ambient_peer_received_bytes_total", "Bytes received from a peer (frames as handed over by the transport).")
        let c = (sent: registry.makeCounter(descriptor: sent, labels: [("peer", peer)]),
                 received: registry.makeCounter(descriptor: received, labels: [("peer", peer)]))
        peerCounters[peer] = c
        return c
    }
}
