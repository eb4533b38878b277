import Cluster
import Foundation
import TensorCore
import Wire

/// Time that moves only when the test says so (one tick per coordinator receive).
final class FakeClock: Clock, @unchecked Sendable {
    var time = 0.0
    func now() -> Double { time }
}

/// A worker that speaks the protocol by hand, synchronously, on the test's thread, through the
/// in-memory transport: probe, join, load the parameters, compute assigned shards of the toy
/// problem, apply updates, re-register when rejected. A scenario can make it misbehave at
/// each assignment (`onAssign`). docs/protocol.md describes what it does.
final class ScriptedWorker {
    let client: InMemoryClient
    let name: String
    let incarnation: UInt64
    let n: Int
    var state: ToyState
    var welcome: WelcomeBody?
    var coordinatorIncarnation: UInt64 = 0
    var loaded = false
    var finished = false
    var refused: String?
    /// Steps whose shards this worker sent (to check "the step completes once it sent").
    var lastSentStep = -1
    var silent = false
    private var pendingUpdate: [Float]
    private var appliedChunks: Set<Int> = []
    private var lastHeartbeat = -1.0
    /// Every message this worker sent (a fuzzer replays them from another peer).
    private(set) var sent: [[[UInt8]]] = []
    /// Return true to take over an assignment (the worker then does not compute it).
    var onAssign: ((ScriptedWorker, AssignBody, MessageHeader) -> Bool)?

    init(network: InMemoryNetwork, name: String, incarnation: UInt64 = 1, n: Int) {
        client = network.connect(identity: "\(name)/\(incarnation)")
        self.name = name
        self.incarnation = incarnation
        self.n = n
        state = ToyState(n: n)
        pendingUpdate = [Float](repeating: 0, count: n)
    }

    func send(_ m: Message) {
        sent.append(m.frames())
        if sent.count > 256 { sent.removeFirst(128) }
        try? client.send(m.frames())
    }

    func header(_ type: MessageType) -> MessageHeader {
        MessageHeader(type: type, runID: welcome?.runID ?? 0, coordinatorIncarnation: coordinatorIncarnation,
                      senderID: welcome?.workerID ?? 0, senderIncarnation: incarnation)
    }

    func hello(_ phase: HelloBody.Phase, runID: UInt64? = nil, datasetHash: String? = nil) {
        let body = HelloBody(phase: phase, workerName: name, host: "test", pid: 1, protocolVersion: clusterProtocolVersion,
                             runID: runID, datasetHash: datasetHash, threads: 1)
        if let m = try? Message.control(header(.hello), body: body) { send(m) }
    }

    /// Starts (or restarts) registration.
    func probe() {
        welcome = nil
        loaded = false
        appliedChunks = []
        hello(.probe)
    }

    /// Reads everything queued for this worker and answers it; heartbeats every interval.
    func pump(now: Double) {
        guard !finished, refused == nil, !silent else { return }
        while let frames = try? client.receive(timeout: 0) {
            guard let m = try? Message.decode(frames: frames, limits: toyLimits) else { continue }
            handle(m)
            if finished || refused != nil || silent { return }
        }
        if let w = welcome, now - lastHeartbeat >= w.heartbeatInterval {
            lastHeartbeat = now
            send(Message(header: header(.heartbeat)))
        }
    }

    private func handle(_ m: Message) {
        let h = m.header
        switch h.type {
        case .welcome:
            guard welcome == nil, let body = try? m.decodeJSON(WelcomeBody.self, limits: toyLimits) else { return }
            welcome = body
            coordinatorIncarnation = h.coordinatorIncarnation
            hello(.join, runID: body.runID, datasetHash: body.datasetHash)
        case .parameters:
            guard let meta = try? m.decodeMeta(StateMeta.self, limits: toyLimits), let flat = try? m.decodeTensor(),
                  meta.counts == [n, n], flat.count == 2 * n else { return }
            try? state.restore(replica: StateSnapshot(sections: [.init(name: "p", values: Array(flat[0..<n])),
                                                                  .init(name: "m", values: Array(flat[n...]))],
                                                       counters: meta.counters))
            appliedChunks = []
            loaded = true
        case .update:
            guard loaded, let welcome, h.parameterVersion == UInt64(state.version + 1),
                  let ranges = welcome.chunkRanges(parameterCount: n),
                  let c = ranges.firstIndex(where: { UInt64($0.lowerBound) == h.keyOffset }) else { return }
            let r = ranges[c]
            let ok = pendingUpdate.withUnsafeMutableBufferPointer { buf in
                (try? m.decodeTensor(into: UnsafeMutableBufferPointer(rebasing: buf[r]))) != nil
            }
            guard ok else { return }
            appliedChunks.insert(c)
            if appliedChunks.count == ranges.count {
                pendingUpdate.withUnsafeBufferPointer { state.apply(gradient: $0.baseAddress!, range: 0..<n) }
                state.finishStep()
                appliedChunks = []
            }
        case .assign:
            guard loaded, let body = try? m.decodeJSON(AssignBody.self, limits: toyLimits) else { return }
            if let onAssign, onAssign(self, body, h) { return }
            compute(body, h)
        case .reject:
            let body = try? m.decodeJSON(RejectBody.self, limits: toyLimits)
            if body?.rejoin ?? true { probe() } else { refused = body?.reason ?? "?" }
        case .shutdown:
            finished = true
        default:
            break
        }
    }

    /// The gradient messages of the assigned shards, computed from this worker's parameters.
    func gradientMessages(_ body: AssignBody, _ assign: MessageHeader) -> [Message] {
        guard let welcome, let ranges = welcome.chunkRanges(parameterCount: n),
              let codec = try? CodecRegistry.codec(named: welcome.codec) else { return [] }
        var out: [Message] = []
        var g = [Float](repeating: 0, count: n)
        for k in body.shards {
            state.gradient(step: body.step, shard: k, shards: welcome.shardCount, into: &g)
            for (c, r) in ranges.enumerated() {
                var h = header(.gradient)
                h.generation = assign.generation
                h.coordinatorIncarnation = assign.coordinatorIncarnation
                h.step = UInt64(body.step)
                h.shard = UInt32(k)
                h.shardCount = UInt32(welcome.shardCount)
                h.parameterVersion = UInt64(body.parameterVersion)
                h.keyOffset = UInt64(r.lowerBound)
                let meta = c == ranges.count - 1 ? (try? Message.jsonPayload(GradientMeta(loss: 1, terms: [:], rows: 1, computeSeconds: 0))) ?? [] : []
                out.append(g.withUnsafeBufferPointer { Message(header: h, tensor: UnsafeBufferPointer(rebasing: $0[r]), codec: codec, meta: meta) })
            }
        }
        return out
    }

    func compute(_ body: AssignBody, _ assign: MessageHeader) {
        guard body.parameterVersion == state.version, body.parameterChecksum == state.checksum else {
            let report = ChecksumReportBody(parameterVersion: state.version, checksum: state.checksum,
                                            expected: body.parameterChecksum, reason: "out of sync")
            var h = header(.checksumReport)
            h.coordinatorIncarnation = assign.coordinatorIncarnation
            if let m = try? Message.control(h, body: report) { send(m) }
            return
        }
        for m in gradientMessages(body, assign) { send(m) }
        lastSentStep = body.step
    }
}

extension ToyState {
    var checksum: UInt64 { p.withUnsafeBufferPointer { ParameterChecksum.of($0) } }
}

/// The coordinator's side of the in-memory network, driven by the test: every receive is one
/// tick of the fake clock, in which the scripted workers read and answer what the coordinator
/// sent and `onTick` may inject messages. Single-threaded and deterministic.
final class ScriptedServer: ServerTransport {
    let network: InMemoryNetwork
    let inner: InMemoryServer
    var sealed: Bool { false }
    let clock: FakeClock
    let tick: Double
    var workers: [ScriptedWorker] = []
    var onTick: (() -> Void)?
    /// Rewrites a message as the coordinator receives it (the fuzzer's last word on content).
    var rewrite: ((PeerID, [[UInt8]]) -> [[UInt8]])?
    /// Ends the run (as a crash would) when the fake time passes this: a stall.
    var timeLimit: Double
    weak var coordinator: Coordinator?
    /// While the fake time is in this range nothing reaches the coordinator and the workers are
    /// not run (its host's link or its I/O thread stalled; the workers are fine).
    var deaf: Range<Double>?
    private(set) var stalled = false
    private(set) var ticks = 0

    init(network: InMemoryNetwork, clock: FakeClock, tick: Double = 0.001, timeLimit: Double) {
        self.network = network
        inner = network.server()
        self.clock = clock
        self.tick = tick
        self.timeLimit = timeLimit
    }

    func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        ticks += 1
        clock.time += tick
        if clock.time > timeLimit, !stalled {
            stalled = true
            coordinator?.requestAbort()
        }
        if let deaf, deaf.contains(clock.time) { return nil }
        for w in workers { w.pump(now: clock.time) }
        onTick?()
        guard let (peer, frames) = try inner.receive(timeout: 0) else { return nil }
        return (peer, rewrite?(peer, frames) ?? frames)
    }

    func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) { try inner.send(frames, to: peer) }
    func close() { inner.close() }
}

/// A coordinator on the fake clock with scripted workers (coordinatorOptions' timings).
func scriptedCoordinator(steps: Int, shards: Int, n: Int, network: InMemoryNetwork, server: ScriptedServer,
                         minWorkers: Int = 1, configure: (inout CoordinatorOptions) -> Void = { _ in }) throws -> (Coordinator, ToyCoordinatorWorkload) {
    let workload = ToyCoordinatorWorkload(n: n, steps: steps, shards: shards)
    var o = coordinatorOptions(minWorkers: minWorkers)
    o.shutdownGrace = 0.5
    configure(&o)
    let c = try Coordinator(workload: workload, transport: server, options: o, checkpoints: nil, incarnation: 1,
                            logger: silentLogger(), clock: server.clock)
    server.coordinator = c
    return (c, workload)
}
