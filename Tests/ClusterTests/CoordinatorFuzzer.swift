import Cluster
import Foundation
import TensorCore
import Wire

/// What a fuzz run did and found.
struct FuzzFigures: CustomStringConvertible {
    var runs = 0
    var messages = 0
    var stalls = 0
    var fatal = 0
    var wrongWeights = 0
    var steps = 0
    /// Longest fake time from the honest worker's last gradient of a step to the step's end.
    var worstStepWait = 0.0
    var outcomes: [String: Int] = [:]
    var failures: [String] = []

    mutating func add(_ o: FuzzFigures) {
        runs += o.runs; messages += o.messages; stalls += o.stalls; fatal += o.fatal
        wrongWeights += o.wrongWeights; steps += o.steps; worstStepWait = max(worstStepWait, o.worstStepWait)
        for (k, v) in o.outcomes { outcomes[k, default: 0] += v }
        failures += o.failures
    }

    var description: String {
        let kinds = outcomes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "runs \(runs), messages \(messages), steps \(steps), stalls \(stalls), fatal stops \(fatal), wrong weights \(wrongWeights), "
            + String(format: "worst wait after the honest gradients %.3f s (fake)", worstStepWait) + "; coordinator counters: \(kinds)"
    }
}

/// A seeded generator of hostile messages from a peer that has joined the run (and keeps
/// re-joining when forgotten): well-formed headers with valid checksums carrying out-of-range
/// fields, wrong types and codecs, hellos of every phase with bad bodies, replays of the
/// honest worker's messages, frame-count and meta mutations. Gradient payloads always hold the
/// true values of the shard they name (a joined worker is trusted to compute its gradient: a
/// finite wrong gradient for a shard it owns is not detectable by any check), so the final
/// weights must equal the unfuzzed run's.
struct HostileMessages {
    var rng: CounterRNG
    let runID: UInt64
    let shards: Int
    let chunkOffsets: [Int]
    let n: Int

    init(seed: UInt64, runID: UInt64, shards: Int, chunkOffsets: [Int], n: Int) {
        rng = CounterRNG(seed: seed, purpose: .evaluation)
        self.runID = runID
        self.shards = shards
        self.chunkOffsets = chunkOffsets
        self.n = n
    }

    mutating func below(_ k: Int) -> Int { rng.int(below: k) }
    mutating func chance(_ p: Double) -> Bool { Double(rng.next()) / 4_294_967_296 < p }
    mutating func u64() -> UInt64 { UInt64(rng.next()) << 32 | UInt64(rng.next()) }

    /// Values at the edges of every integer range a receiver might convert to.
    mutating func interesting(near v: UInt64) -> UInt64 {
        let edges: [UInt64] = [0, 1, 2, v, v &+ 1, v &- 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
                               1 << 53, UInt64(Int64.max), 1 << 63, (1 << 63) + 1, .max, .max - 1]
        return chance(0.9) ? edges[below(edges.count)] : u64()
    }

    /// (offset, width) of every header field before the header checksum.
    static let fields: [(Int, Int)] = [(0, 4), (4, 2), (6, 2), (8, 4), (12, 4), (16, 8), (24, 8), (32, 4), (36, 4), (40, 8),
                                       (48, 8), (56, 4), (60, 2), (62, 2), (64, 8), (72, 8), (80, 8), (88, 8), (96, 8), (104, 8)]

    static func put(_ v: UInt64, into h: inout [UInt8], at offset: Int, width: Int) {
        for i in 0..<width { h[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func get(_ h: [UInt8], _ offset: Int, _ width: Int) -> UInt64 {
        (0..<width).reduce(UInt64(0)) { $0 | UInt64(h[offset + $1]) << (8 * UInt64($1)) }
    }

    static func resealHeader(_ h: inout [UInt8]) {
        put(XXH64.hash(Array(h[0..<112])), into: &h, at: 112, width: 8)
    }

    /// One field set to an interesting value; the header checksum stays valid (mostly).
    mutating func mutateHeader(_ frames: inout [[UInt8]]) {
        guard !frames.isEmpty, frames[0].count == MessageHeader.size else { return }
        let (offset, width) = Self.fields[below(Self.fields.count)]
        var v = interesting(near: Self.get(frames[0], offset, width))
        if offset == 6 && chance(0.7) { v = UInt64(1 + below(13)) }          // another known type
        if offset == 60 && chance(0.7) { v = UInt64(below(9)) }              // another known codec
        Self.put(v, into: &frames[0], at: offset, width: width)
        if chance(0.95) { Self.resealHeader(&frames[0]) }
    }

    /// The payload checksum (payload then meta) recomputed after a frame change.
    static func resealPayload(_ frames: inout [[UInt8]]) {
        guard frames.count >= 2, frames[0].count == MessageHeader.size else { return }
        var x = XXH64()
        x.update(frames[1])
        if frames.count == 3 { x.update(frames[2]) }
        put(x.finalize(), into: &frames[0], at: 104, width: 8)
        put(UInt64(frames[1].count), into: &frames[0], at: 96, width: 8)
        resealHeader(&frames[0])
    }

    mutating func mutateFrames(_ frames: inout [[UInt8]]) {
        switch below(7) {
        case 0: frames.append([])
        case 1: frames.append(Array("{\"loss\":1e308,\"terms\":{},\"rows\":-1,\"computeSeconds\":1e300}".utf8))
        case 2: if frames.count > 1 { frames.removeLast() }
        case 3: frames += [[1], [2]]
        case 4: frames.insert([], at: 0)
        case 5: if frames.count >= 2 { frames[1] = Array(frames[1].prefix(below(frames[1].count + 1))) }
        default: if frames.count >= 2 { frames[1] += [0, 0, 0, 0] }
        }
        if chance(0.7) { Self.resealPayload(&frames) }
    }

    func header(_ type: MessageType, sender: UInt32, incarnation: UInt64, step: Int) -> MessageHeader {
        MessageHeader(type: type, generation: 1, runID: runID, coordinatorIncarnation: 1, senderID: sender,
                      senderIncarnation: incarnation, step: UInt64(step), shardCount: UInt32(shards), parameterVersion: UInt64(step))
    }

    /// A hello whose body is chosen from valid, boundary and malformed ones.
    mutating func hello(names: [String], datasetHash: String) -> [UInt8] {
        let name = names[below(names.count)]
        let phase = chance(0.5) ? "probe" : "join"
        let runIDs = ["\(runID)", "\(runID + 1)", "18446744073709551615", "18446744073709551616", "-1", "1e30", "null", "\"42\"", "4.2e1"]
        let hashes = ["\"\(datasetHash)\"", "\"other\"", "null", "7"]
        let versions = ["\(clusterProtocolVersion)", "0", "2", "9223372036854775807", "-1", "1.5"]
        let pids = ["1", "2147483648", "-2147483649", "1e10"]
        var body = "{\"phase\":\"\(phase)\",\"workerName\":\"\(name)\",\"host\":\"h\",\"pid\":\(pids[chance(0.8) ? 0 : below(pids.count)]),"
            + "\"protocolVersion\":\(versions[chance(0.8) ? 0 : below(versions.count)]),\"threads\":\(chance(0.9) ? "1" : "99999999999999999999")"
        if chance(0.8) { body += ",\"runID\":\(runIDs[chance(0.6) ? 0 : below(runIDs.count)])" }
        if chance(0.8) { body += ",\"datasetHash\":\(hashes[chance(0.6) ? 0 : below(hashes.count)])" }
        body += "}"
        var bytes = Array(body.utf8)
        switch below(12) {
        case 0: bytes = Array(bytes.prefix(below(bytes.count)))
        case 1: bytes = Array("{\"phase\":\"join\"}".utf8)
        case 2: bytes = Array("[]".utf8)
        case 3: bytes = (0..<below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default: break
        }
        return bytes
    }

    /// A checksum report, an error, a heartbeat, a message type a worker never sends, or a
    /// shardDone (the sharded reduction's report; stale when the coordinator reduces itself).
    mutating func control(sender: UInt32, incarnation: UInt64, step: Int) -> Message {
        let types: [MessageType] = [.heartbeat, .checksumReport, .error, .welcome, .assign, .reject, .shutdown,
                                    .annotateRequest, .annotateResult, .heartbeat, .checksumReport, .shardDone]
        let type = types[below(types.count)]
        var h = header(type, sender: sender, incarnation: incarnation, step: step)
        if chance(0.1) { h.coordinatorIncarnation = 2 }
        let body: [UInt8]
        switch type {
        case .checksumReport:
            body = chance(0.7) ? Array("{\"parameterVersion\":\(step),\"checksum\":1,\"expected\":2,\"reason\":\"fuzz\"}".utf8)
                : Array("{\"parameterVersion\":1e400}".utf8)
        case .error: body = Array("fuzz error".utf8)
        default: body = chance(0.5) ? [] : Array("{}".utf8)
        }
        return Message(header: h, payload: body)
    }
}

/// The coordinator against one honest scripted worker and one hostile joined peer, on the fake
/// clock. `messages` hostile messages (at least; the run goes on until it finishes).
func fuzzCoordinator(seed: UInt64, messages: Int, steps: Int = 12) throws -> FuzzFigures {
    let n = 96, shards = 4
    let net = InMemoryNetwork(queueLimit: 1_000_000)
    let clock = FakeClock()
    // A run that does not end within this fake time has stalled (its steps take ~0.01 s
    // when nobody misbehaves, and deadlines are at most a few seconds).
    let server = ScriptedServer(network: net, clock: clock, timeLimit: 1e9)
    let honest = ScriptedWorker(network: net, name: "honest", n: n)
    let rogue = ScriptedWorker(network: net, name: "rogue", n: n)
    server.workers = [honest, rogue]
    let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server, minWorkers: 2) { o in
        o.initialStepDeadline = 2
        o.minimumDeadline = 0.5
        o.heartbeatTimeout = 1
        o.noWorkerTimeout = 1e6
    }
    var gen = HostileMessages(seed: seed, runID: 42, shards: shards, chunkOffsets: toyChunks(n).map(\.lowerBound), n: n)
    let perStep = max(1, messages / steps)
    var sent = 0
    var figures = FuzzFigures()
    var rogueOwns: Set<Int> = []
    var rogueStep = -1
    // The rogue joins like a worker; at each assignment it computes honestly or sits on it.
    rogue.onAssign = { w, body, header in
        if body.step != rogueStep { rogueOwns = [] }
        rogueOwns.formUnion(body.shards)
        rogueStep = body.step
        if gen.chance(0.5) { return false }
        return true
    }
    var honestSentAt: [Int: Double] = [:]
    let reference = ToyState(n: n)
    var firstWrongStep: Int?
    var lastVersion = 0
    var lastProgress = 0.0
    var refusedAt = 0.0
    server.onTick = {
        if honest.lastSentStep >= 0, honestSentAt[honest.lastSentStep] == nil { honestSentAt[honest.lastSentStep] = clock.time }
        if workload.version != lastVersion {
            // The reference trajectory, step by step: the first step whose weights differ.
            while reference.version < workload.version {
                var g = [Float](repeating: 0, count: n), sum = [Float](repeating: 0, count: n)
                for k in 0..<shards {
                    reference.gradient(step: reference.version, shard: k, shards: shards, into: &g)
                    if k == 0 { sum = g } else { for i in 0..<n { sum[i] += g[i] } }
                }
                sum.withUnsafeBufferPointer { reference.apply(gradient: $0.baseAddress!, range: 0..<n) }
                reference.finishStep()
            }
            if firstWrongStep == nil, bits(reference.p) != bits(workload.state.p) { firstWrongStep = workload.version - 1 }
            for s in lastVersion..<workload.version {
                if let t = honestSentAt[s] { figures.worstStepWait = max(figures.worstStepWait, clock.time - t) }
            }
            lastVersion = workload.version
            lastProgress = clock.time
        }
        // The invariant: a step ends within a bound once the honest worker has sent.
        if clock.time - lastProgress > 30, !server.stalled {
            figures.stalls += 1
            figures.failures.append("seed \(seed): stalled at step \(workload.version)")
            server.timeLimit = clock.time
        }
        // A persistent attacker: refused for good, it comes back after a while.
        if rogue.refused != nil {
            if refusedAt == 0 { refusedAt = clock.time }
            if clock.time - refusedAt > 0.2 { rogue.refused = nil; refusedAt = 0; rogue.probe() }
        }
        // Spread the hostile messages over the steps, a burst per tick.
        let budget = (workload.version + 1) * perStep - sent
        guard budget > 0 else { return }
        for _ in 0..<min(budget, 1 + gen.below(4)) {
            let frames = hostile()
            try? rogue.client.send(frames)
            sent += 1
        }
    }

    func hostile() -> [[UInt8]] {
        let step = workload.version
        let sender = rogue.welcome?.workerID ?? UInt32(gen.below(4))
        var frames: [[UInt8]]
        switch gen.below(10) {
        case 0, 1, 2:   // a gradient chunk with its true values (or NaN for a shard it does not own)
            let k = gen.chance(0.8) ? gen.below(shards) : Int(gen.interesting(near: 0) % 1_000_000)
            let ranges = toyChunks(n)
            let c = gen.below(ranges.count)
            var g = [Float](repeating: 0, count: n)
            let s = gen.chance(0.8) ? step : Int(gen.interesting(near: UInt64(step)) % 1_000_000)
            workload.state.gradient(step: s, shard: k, shards: shards, into: &g)
            let owned = rogueOwns.contains(k) && rogueStep == step
            if !owned && gen.chance(0.3) { g[ranges[c].lowerBound] = .nan }
            var h = gen.header(.gradient, sender: sender, incarnation: rogue.incarnation, step: s)
            h.shard = UInt32(truncatingIfNeeded: k)
            h.keyOffset = UInt64(ranges[c].lowerBound)
            let codecs: [any GradientCodec] = [RawCodec(), LZ4Codec(), ShuffleLZ4Codec()]
            let meta: [UInt8] = gen.chance(0.5) ? [] : Array([
                "{\"loss\":1,\"terms\":{},\"rows\":1,\"computeSeconds\":0}",
                "{\"loss\":1e308,\"terms\":{\"x\":-1e308},\"rows\":9223372036854775807,\"computeSeconds\":1e300}",
                "{\"loss\":1,\"terms\":{},\"rows\":1,\"computeSeconds\":-1}",
                "{\"loss\":1}", "not json",
            ][gen.below(5)].utf8)
            frames = g.withUnsafeBufferPointer {
                Message(header: h, tensor: UnsafeBufferPointer(rebasing: $0[ranges[c]]), codec: codecs[gen.below(codecs.count)], meta: meta)
            }.frames()
        case 3, 4:
            let bytes = gen.hello(names: ["rogue", "honest", "r\(gen.below(3))"], datasetHash: "toy-data")
            var h = gen.header(.hello, sender: sender, incarnation: rogue.incarnation, step: step)
            if gen.chance(0.2) { h.runID = gen.u64() }
            frames = Message(header: h, payload: bytes).frames()
        case 5:   // a replay of something the honest worker sent (its gradients, hellos, reports)
            frames = honest.sent.isEmpty ? [[]] : honest.sent[gen.below(honest.sent.count)]
        default:
            frames = gen.control(sender: sender, incarnation: rogue.incarnation, step: step).frames()
        }
        if gen.chance(0.45) { gen.mutateHeader(&frames) }
        if gen.chance(0.15) { gen.mutateFrames(&frames) }
        return frames
    }

    /// A message that the coordinator could accept as a gradient of its current step (the shard
    /// may be the rogue's) gets the true values of the shard and chunk its header names, in a
    /// lossless codec, as the coordinator receives it: mutations must not make the fuzzer a
    /// worker that computes wrong numbers (finite wrong values from a shard's owner cannot be
    /// told from right ones by any check, and a non-finite one counts toward the shard's attempts
    /// by design: docs/protocol.md). Done at receipt, not when sent: a gradient sent for step
    /// s + 1 while step s runs is accepted if it arrives after s + 1 started.
    func trueValuesIfAcceptable(_ frames: [[UInt8]], step: Int) -> [[UInt8]] {
        guard let m = try? Message.decode(frames: frames, limits: toyLimits), m.header.type == .gradient else { return frames }
        var h = m.header
        let ranges = toyChunks(n)
        guard h.step == UInt64(step), h.parameterVersion == UInt64(step), h.shardCount == UInt32(shards), h.shard < UInt32(shards),
              let c = ranges.firstIndex(where: { UInt64($0.lowerBound) == h.keyOffset && UInt64($0.count) == h.keyCount }) else { return frames }
        var g = [Float](repeating: 0, count: n)
        workload.state.gradient(step: step, shard: Int(h.shard), shards: shards, into: &g)
        let codec: any GradientCodec = switch h.codec {
        case .lz4: LZ4Codec()
        case .shuffleLZ4: ShuffleLZ4Codec()
        default: RawCodec()
        }
        h.codec = codec.id
        return g.withUnsafeBufferPointer {
            Message(header: h, tensor: UnsafeBufferPointer(rebasing: $0[ranges[c]]), codec: codec, meta: m.meta)
        }.frames()
    }

    server.rewrite = { peer, frames in peer == rogue.client.peer ? trueValuesIfAcceptable(frames, step: workload.version) : frames }
    honest.probe()
    rogue.probe()
    var fatalMessage: String?
    do {
        try c.run()
    } catch {
        fatalMessage = "\(error)"
    }
    figures.runs = 1
    figures.messages = sent
    figures.steps = workload.completed.count
    for (k, v) in c.stats.framesRejected { figures.outcomes[k, default: 0] += v }
    figures.outcomes["stale", default: 0] += c.stats.staleMessages
    figures.outcomes["duplicate", default: 0] += c.stats.duplicateGradients
    figures.outcomes["unknownPeer", default: 0] += c.stats.unknownPeers
    figures.outcomes["nonFinite", default: 0] += c.stats.nonFiniteGradients
    figures.outcomes["drops", default: 0] += c.stats.drops
    figures.outcomes["repairs", default: 0] += c.stats.repairs
    if let fatalMessage {
        figures.fatal += 1
        figures.failures.append("seed \(seed): run stopped: \(fatalMessage)")
    } else if figures.stalls == 0 {
        if workload.version != steps || bits(workload.state.p) != bits(toyReference(n: n, steps: steps, shards: shards)) {
            figures.wrongWeights += 1
            figures.failures.append("seed \(seed): weights differ from the unfuzzed run from step \(firstWrongStep.map(String.init) ?? "?") on")
        }
    }
    return figures
}
