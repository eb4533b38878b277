import Foundation
import Logging
import TensorCore
import Wire

/// A worker's side of the sharded reduction, on its own thread with its own endpoint: routes
/// the gradient chunks this worker computes to their range owners (its own go straight into
/// its reducer), reduces the ranges it owns in shard order (`RangeReducer`), and sends each
/// reduced chunk to every receiver of the step, to its own replica and to the coordinator
/// (whose copy is the step barrier and the reference for checkpoints and joiners). Reduced
/// chunks from other owners are handed to the replica. docs/architecture.md has the picture.
final class WorkerDataPlane: @unchecked Sendable {
    /// Opens this worker's endpoint for a run (with the run's data key, or plaintext).
    typealias EndpointFactory = @Sendable (CurveKeyPair?) throws -> any DataTransport

    /// What the other threads hand over (under `lock`).
    enum Input {
        /// The model's chunk plan (after the workload is built).
        case plan(ChunkPlan, codec: String, shardCount: Int)
        /// The owner map and step of an assignment (from the I/O thread, before its compute task):
        /// `me` is this worker's id, `template` the header its data messages start from.
        case configure(step: Int, version: Int, owners: RangeOwnersBody, me: UInt32, template: MessageHeader)
        /// A gradient chunk this worker computed (from the compute thread).
        case chunk(Int, [[UInt8]])
        /// A gradient chunk this worker computed and owns, under a lossless codec: its values as
        /// they are, since encoding, checksumming and decoding them again within one process
        /// would give back the same bits (skipping that made the loopback step 1.047x faster,
        /// docs/benchmarks.md).
        case ownChunk(Int, MessageHeader, [Float])
        /// The new parameters of a chunk this worker owns (`rangeParameters`, from the compute
        /// thread's optimiser): sent to every other receiver of the step, if it is still current.
        case parameters(MessageHeader, [[UInt8]])
    }

    /// A gradient waiting to be reduced: decoded from the wire, or this worker's own values.
    enum Gradient {
        case message(Message)
        case own(MessageHeader, [Float])

        var header: MessageHeader {
            switch self {
            case let .message(m): m.header
            case let .own(h, _): h
            }
        }
    }

    let makeEndpoint: EndpointFactory
    let limits: WireLimits
    let logger: Logger
    /// A reduced chunk (own or another owner's) for this worker's replica.
    let toReplica: @Sendable (Message) -> Void
    /// A reduced chunk of an owned range for the coordinator.
    let toCoordinator: @Sendable ([[UInt8]]) -> Void
    /// A reduced chunk of an owned range for this worker's optimiser, under a map whose owners
    /// apply it (`RangeOwnersBody.ownersApply`); nil: such maps are followed as if they did not.
    let toOwnerOptimizer: (@Sendable (Message) -> Void)?

    private let lock = NSLock()
    private var inputs: [Input] = []
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)
    /// The endpoint (nil until a welcome opened it) and its key; endpoints it replaced, for
    /// the data thread to close.
    private var endpoint: (any DataTransport)?
    private var endpointKey: CurveKeyPair?
    private var retired: [any DataTransport] = []

    // Data thread only
    private var plan: ChunkPlan?
    private var codec: (any GradientCodec)?
    private var shardCount = 0
    private var step: Step?
    /// The step configured before `step`: an owner's parameters of it may still be on their way
    /// from the compute thread when the coordinator, which had its reduced gradient at once, has
    /// already assigned the next one.
    private var previous: Step?
    private var reducer: RangeReducer?
    /// Gradients of a later step or owner map than the configured one (their assignment is
    /// still on its way here), replayed when it arrives.
    private var early: [Gradient] = []
    private var scratch: [Float] = []
    /// The endpoint in use this turn of the loop.
    private var transport: (any DataTransport)?

    private struct Step {
        var step: Int
        var version: Int
        var map: RangeOwnerMap
        var body: RangeOwnersBody
        var me: UInt32
        var template: MessageHeader
    }

    init(makeEndpoint: @escaping EndpointFactory, limits: WireLimits, logger: Logger,
         toReplica: @escaping @Sendable (Message) -> Void, toCoordinator: @escaping @Sendable ([[UInt8]]) -> Void,
         toOwnerOptimizer: (@Sendable (Message) -> Void)? = nil) {
        self.makeEndpoint = makeEndpoint
        self.limits = limits
        self.logger = logger
        self.toReplica = toReplica
        self.toCoordinator = toCoordinator
        self.toOwnerOptimizer = toOwnerOptimizer
    }

    /// Whether the endpoint's links are sealed (false before a welcome opened it).
    var sealed: Bool {
        lock.lock(); defer { lock.unlock() }
        return endpoint?.sealed ?? false
    }

    /// The endpoint's address (nil before a welcome opened it).
    var address: String? {
        lock.lock(); defer { lock.unlock() }
        return endpoint?.address
    }

    /// Opens the endpoint for a welcome's data key (from the compute thread, before the join
    /// that announces its address); an open one with the same key is kept.
    func open(key: CurveKeyPair?) throws {
        lock.lock()
        let current = endpoint, sameKey = endpointKey == key
        lock.unlock()
        if current != nil && sameKey { return }
        let fresh = try makeEndpoint(key)
        lock.lock()
        if let current { retired.append(current) }
        endpoint = fresh
        endpointKey = key
        lock.unlock()
        current?.wake()
    }

    func submit(_ input: Input) {
        lock.lock()
        inputs.append(input)
        let e = endpoint
        lock.unlock()
        e?.wake()
    }

    func start() {
        let t = Thread { [self] in
            run()
            finished.signal()
        }
        t.name = "ambient-data"
        t.start()
    }

    /// Stops the thread (waits for it at most 5 s) and closes the endpoint.
    func stop() {
        lock.lock()
        stopped = true
        let e = endpoint
        lock.unlock()
        e?.wake()
        _ = finished.wait(timeout: .now() + 5)
        lock.lock()
        let all = retired + (endpoint.map { [$0] } ?? [])
        retired = []
        endpoint = nil
        lock.unlock()
        for t in all { t.close() }
    }

    private func run() {
        while true {
            lock.lock()
            let batch = inputs
            inputs = []
            let stop = stopped, old = retired, current = endpoint
            retired = []
            lock.unlock()
            if stop { return }
            for t in old { t.close() }
            transport = current
            for input in batch { take(input) }
            guard let transport = current else {
                usleep(10_000)   // no endpoint before the first welcome
                continue
            }
            do {
                guard let frames = try transport.receive(timeout: 0.1) else { continue }
                guard let message = try? Message.decode(frames: frames, limits: limits, sealedLink: transport.sealed) else {
                    logger.debug("rejected data frame")
                    continue
                }
                switch message.header.type {
                case .gradient: reduce(.message(message))
                case .update:
                    toReplica(message)
                    // The relay hands every reduced chunk of its step on to the coordinator.
                    if let step, step.body.relay == step.me, message.header.step == UInt64(step.step),
                       message.header.generation == step.map.generation { toCoordinator(frames) }
                case .rangeParameters: toReplica(message)
                default: logger.debug("ignored data message", metadata: ["type": "\(message.header.type)"])
                }
            } catch {
                logger.debug("data endpoint closed", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    private func take(_ input: Input) {
        switch input {
        case let .plan(plan, codecName, shards):
            self.plan = plan
            shardCount = shards
            codec = try? broadcastCodec(uplink: codecName, shardCount: shards)
            scratch = [Float](repeating: 0, count: plan.parameterCount)
        case let .configure(s, version, owners, me, template):
            guard let plan, case let .success(map) = owners.map(plan: plan) else {
                logger.warning("owner map does not fit the chunk plan: ignored", metadata: ["step": "\(s)"])
                return
            }
            // Within one coordinator incarnation steps and generations only grow. A restarted
            // coordinator resumes from its checkpoint, an earlier step, with generations counted
            // from 1 again: its maps replace the old one (before, they were ignored as older, no
            // owner reduced the resumed step, and the run stalled with every shard reported done:
            // scripts/fault-injection coordinator-kill with range owners).
            if let current = step, current.template.coordinatorIncarnation == template.coordinatorIncarnation,
               (current.step, current.map.generation) >= (s, map.generation) { return }
            if let current = step, current.template.coordinatorIncarnation != template.coordinatorIncarnation {
                early.removeAll { $0.header.coordinatorIncarnation != template.coordinatorIncarnation }
            }
            if let current = step, current.step != s { previous = current }
            step = Step(step: s, version: version, map: map, body: owners, me: me, template: template)
            if let reducer, reducer.map == map, reducer.owner == me, reducer.shardCount == shardCount {
                // The same ranges as the last step: keep the sum buffers. Fresh ones cost a
                // zero-filled allocation of every owned range per step, page faults included.
                reducer.reset()
            } else {
                reducer = RangeReducer(map: map, owner: me, shardCount: shardCount)
            }
            let replay = early
            early = []
            for g in replay { reduce(g) }
        case let .chunk(c, frames):
            guard let step else { return }
            let owner = step.map.owner(ofChunk: c)
            if owner == step.me {
                // Frames this process built: they never left it.
                if let m = try? Message.decode(frames: frames, limits: limits, sealedLink: true) { reduce(.message(m)) }
            } else if let address = step.body.address(of: owner) {
                do {
                    guard let transport else { throw TransportError.closed }
                    try transport.send(frames, to: address)
                } catch {
                    // The owner is gone: the coordinator notices, moves its ranges and restarts the step.
                    logger.debug("gradient chunk not sent", metadata: ["owner": "\(owner)", "error": "\(error)"])
                }
            }
        case let .ownChunk(_, header, values):
            reduce(.own(header, values))
        case let .parameters(h, frames):
            let target = [step, previous].compactMap { $0 }.first {
                h.coordinatorIncarnation == $0.template.coordinatorIncarnation && h.step == UInt64($0.step) && h.generation == $0.map.generation
            }
            // No target: the step was computed again under a newer map since.
            if let target { send(frames, toReceiversOf: target, what: "range parameters") }
        }
    }

    private func reduce(_ m: Gradient) {
        let h = m.header
        guard let step, let reducer, let plan else {
            if early.count < 65536 { early.append(m) }
            return
        }
        // Another coordinator incarnation's gradient: an earlier one's is stale; a later one's
        // waits for its assign.
        if h.coordinatorIncarnation != step.template.coordinatorIncarnation {
            if h.coordinatorIncarnation > step.template.coordinatorIncarnation, early.count < 65536 { early.append(m) }
            return
        }
        let mine = (UInt64(step.step), step.map.generation), theirs = (h.step, h.generation)
        if theirs > mine {
            if early.count < 65536 { early.append(m) }
            return
        }
        guard theirs == mine, h.parameterVersion == UInt64(step.version), h.shardCount == UInt64(shardCount),
              h.shard < UInt32(shardCount), let c = plan.chunk(keyOffset: h.keyOffset, keyCount: h.keyCount),
              reducer.owns(chunk: c) else { return }
        let k = Int(h.shard)
        guard !reducer.contains(shard: k, chunk: c) else { return }   // a recomputed shard: the same bits
        let range = plan[c]
        func add(_ values: UnsafeBufferPointer<Float>) -> Bool {
            if reducer.add(shard: k, chunk: c, values) { broadcast(c, step: step) }
            return true
        }
        let ok: Bool
        switch m {
        case let .own(_, values):
            ok = values.count == range.count && values.withUnsafeBufferPointer(add)
        case let .message(message):
            ok = scratch.withUnsafeMutableBufferPointer { buf -> Bool in
                let out = UnsafeMutableBufferPointer(rebasing: buf[0..<range.count])
                return (try? message.decodeTensor(into: out)) != nil && add(UnsafeBufferPointer(out))
            }
        }
        if !ok { logger.warning("undecodable gradient chunk", metadata: ["shard": "\(k)", "chunk": "\(c)"]) }
    }

    private func broadcast(_ c: Int, step: Step) {
        guard let reducer, let codec else { return }
        var h = step.template
        h.type = .update
        h.step = UInt64(step.step)
        h.parameterVersion = UInt64(step.version + 1)
        h.generation = step.map.generation
        h.shard = 0
        let message = reducer.updateMessage(chunk: c, header: h, codec: codec)
        let frames = message.frames()
        if step.body.ownersApply == true, let toOwnerOptimizer {
            // This worker's optimiser updates the chunk and sends the new parameters to the
            // receivers (`Input.parameters`); the coordinator's replica takes the gradient.
            toOwnerOptimizer(message)
            toCoordinator(frames)
            return
        }
        send(frames, toReceiversOf: step, what: "reduced chunk")
        toReplica(message)
        if step.body.relay == nil || step.body.relay == step.me { toCoordinator(frames) }
    }

    /// Sends `frames` to every receiver of the step but this worker.
    private func send(_ frames: [[UInt8]], toReceiversOf step: Step, what: String) {
        for receiver in step.body.receivers where receiver != transport?.address {
            do {
                guard let transport else { throw TransportError.closed }
                try transport.send(frames, to: receiver)
            } catch {
                logger.debug("\(what) not sent", metadata: ["to": "\(receiver)", "error": "\(error)"])
            }
        }
    }
}

/// The codec of reduced chunks for an uplink codec: the sum of S shard gradients, each top-k
/// with fraction f, has at most S k non-zeros, so top-k with fraction min(1, S f) carries it
/// exactly; other codecs are used as they are.
func broadcastCodec(uplink: String, shardCount: Int) throws -> any GradientCodec {
    let codec = try CodecRegistry.codec(named: uplink)
    if let topk = codec as? TopKCodec { return TopKCodec(fraction: min(1, topk.fraction * Double(shardCount))) }
    return codec
}
