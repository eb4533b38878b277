import Cluster
import Foundation
import Logging
import TensorCore
import Wire

/// Silent unless AMBIENT_TEST_LOG=debug (or another level) is set, for debugging a test.
func silentLogger() -> Logger {
    if let level = ProcessInfo.processInfo.environment["AMBIENT_TEST_LOG"], let l = Logger.Level(rawValue: level) {
        var logger = Logger(label: "test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = l
        return logger
    }
    return Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
}

/// A small deterministic training problem with no diffusion in it: the gradient of shard k at
/// step s pulls the parameters towards targets drawn from (seed, s, k); the optimiser is
/// plain SGD with momentum. Enough to test the cluster's bookkeeping bit for bit.
final class ToyState: RangeOwnerOptimizer, @unchecked Sendable {
    let n: Int
    /// The parameters at a stable address (`parameters` hands out a pointer to them).
    let storage: FlatBuffer<Float>
    var p: [Float] {
        get { storage.array }
        set { storage.load(newValue) }
    }
    var m: [Float]
    var steps = 0

    init(n: Int) {
        self.n = n
        var rng = CounterRNG(seed: 1, purpose: .parameterInit)
        storage = FlatBuffer(copying: (0..<n).map { _ in Float(rng.normal()) })
        m = [Float](repeating: 0, count: n)
    }

    var parameterCount: Int { n }
    var parameters: UnsafePointer<Float> { UnsafePointer(storage.pointer) }
    var version: Int { steps }

    func apply(gradient: UnsafePointer<Float>, range: Range<Int>) {
        for i in range {
            m[i] = 0.9 * m[i] + gradient[i - range.lowerBound]
            storage[i] -= 0.05 * m[i]
        }
    }

    func finishStep() { steps += 1 }

    // The optimiser on one range into the caller's buffers (a range owner's): the same arithmetic.
    var momentCount: Int { 1 }
    func update(range: Range<Int>, gradient: UnsafePointer<Float>, parameters: UnsafeMutablePointer<Float>,
                moments: UnsafeMutablePointer<Float>) {
        for (j, i) in range.enumerated() {
            moments[j] = 0.9 * m[i] + gradient[j]
            parameters[j] = storage[i] - 0.05 * moments[j]
        }
    }
    func assign(range: Range<Int>, parameters: UnsafePointer<Float>, moments: UnsafePointer<Float>?) {
        for (j, i) in range.enumerated() {
            storage[i] = parameters[j]
            if let moments { m[i] = moments[j] }
        }
    }

    func replicaSnapshot() -> StateSnapshot {
        StateSnapshot(sections: [.init(name: "p", values: p), .init(name: "m", values: m)], counters: ["step": steps])
    }

    func restore(replica s: StateSnapshot) throws {
        guard let p2 = s.section("p"), let m2 = s.section("m"), let st = s.counters["step"], p2.count == n else {
            throw ClusterError("bad toy snapshot")
        }
        p = p2
        m = m2
        steps = st
    }

    /// The gradient of shard k at step s for the current parameters.
    func gradient(step: Int, shard: Int, shards: Int, into g: inout [Float]) {
        var rng = CounterRNG(seed: 9, purpose: .trainNoise, step: step, shard: shard)
        for i in 0..<n { g[i] = (p[i] - Float(rng.normal())) / Float(shards) }
    }
}

final class ToyCoordinatorWorkload: CoordinatorWorkload, @unchecked Sendable {
    let state: ToyState
    let totalSteps: Int
    let shardCount: Int
    var completed: [StepSummary] = []
    var finished = false

    /// Chunks of the plan: `toyChunks` (three, uneven) unless given.
    let chunks: [Range<Int>]?

    init(n: Int, steps: Int, shards: Int, chunks: [Range<Int>]? = nil) {
        state = ToyState(n: n)
        totalSteps = steps
        shardCount = shards
        self.chunks = chunks
    }

    var workloadSpec: [UInt8] { Array("toy".utf8) }
    var datasetHash: String { "toy-data" }
    var parameterCount: Int { state.n }
    var parameters: UnsafePointer<Float> { state.parameters }
    var version: Int { state.version }
    /// Three uneven chunks, so the per-chunk reduction and broadcast are exercised.
    var chunkRanges: [Range<Int>] { chunks ?? toyChunks(state.n) }
    func apply(gradient: UnsafePointer<Float>, range: Range<Int>) { state.apply(gradient: gradient, range: range) }
    func finishStep() { state.finishStep() }
    func replicaSnapshot() -> StateSnapshot { state.replicaSnapshot() }
    func restore(replica: StateSnapshot) throws { try state.restore(replica: replica) }
    func checkpointSnapshot() -> StateSnapshot { state.replicaSnapshot() }
    func restore(checkpoint: StateSnapshot) throws { try state.restore(replica: checkpoint) }
    func stepCompleted(_ summary: StepSummary) throws { completed.append(summary) }
    func finish() throws { finished = true }
}

/// A toy worker; `poison(step, shard)` true makes it send NaN for that shard (a faulty node).
final class ToyWorkerWorkload: WorkerWorkload, RangeOwnerOptimizer, @unchecked Sendable {
    let state: ToyState
    let shards: Int
    /// The gradient at a stable address (`gradientBuffer` hands out a pointer to it).
    let gradientStorage: FlatBuffer<Float>
    var buffer: [Float] {
        get { gradientStorage.array }
        set { gradientStorage.load(newValue) }
    }
    let poison: @Sendable (Int, Int) -> Bool
    let delay: Double
    /// Flips a parameter bit after applying this version's update (a diverged replica).
    let corruptAtVersion: Int?
    /// Seconds spent applying each update (a slow replica).
    let applyDelay: Double

    init(n: Int, shards: Int, delay: Double = 0, applyDelay: Double = 0, corruptAtVersion: Int? = nil, startsElsewhere: Bool = false,
         poison: @escaping @Sendable (Int, Int) -> Bool = { _, _ in false }) {
        state = ToyState(n: n)
        // A replica built differently from the coordinator's (another init, another build).
        if startsElsewhere { state.p[3] += 1 }
        self.shards = shards
        gradientStorage = FlatBuffer(count: n)
        self.poison = poison
        self.delay = delay
        self.corruptAtVersion = corruptAtVersion
        self.applyDelay = applyDelay
    }

    var datasetHash: String { "toy-data" }
    var parameterCount: Int { state.n }
    var parameters: UnsafePointer<Float> { state.parameters }
    var version: Int { state.version }
    func apply(gradient: UnsafePointer<Float>, range: Range<Int>) { state.apply(gradient: gradient, range: range) }
    func finishStep() {
        if applyDelay > 0 { usleep(UInt32(applyDelay * 1e6)) }
        state.finishStep()
        if state.version == corruptAtVersion { state.p[7] = Float(bitPattern: state.p[7].bitPattern ^ 1) }
    }
    var momentCount: Int { state.momentCount }
    func update(range: Range<Int>, gradient: UnsafePointer<Float>, parameters: UnsafeMutablePointer<Float>,
                moments: UnsafeMutablePointer<Float>) {
        state.update(range: range, gradient: gradient, parameters: parameters, moments: moments)
    }
    func assign(range: Range<Int>, parameters: UnsafePointer<Float>, moments: UnsafePointer<Float>?) {
        state.assign(range: range, parameters: parameters, moments: moments)
    }
    var parallelism: Int { 1 }
    func gradientBuffer(slot: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(gradientStorage.buffer) }
    func replicaSnapshot() -> StateSnapshot { state.replicaSnapshot() }
    func restore(replica: StateSnapshot) throws { try state.restore(replica: replica) }

    func computeShard(step: Int, shard: Int, slot: Int, chunks: [Range<Int>], onChunkReady: (Int) -> Void) -> GradientMeta {
        if delay > 0 { usleep(UInt32(delay * 1e6)) }
        state.gradient(step: step, shard: shard, shards: shards, into: &buffer)
        if poison(step, shard) { buffer[buffer.count / 2] = .nan }
        for c in chunks.indices.reversed() { onChunkReady(c) }   // like a backward pass: last layers first
        return GradientMeta(loss: 1, terms: [:], rows: 1, computeSeconds: delay)
    }
}

/// The reference: every step computed sequentially with shards summed in order.
func toyReference(n: Int, steps: Int, shards: Int) -> [Float] {
    let s = ToyState(n: n)
    var g = [Float](repeating: 0, count: n), sum = [Float](repeating: 0, count: n)
    for step in 0..<steps {
        for k in 0..<shards {
            s.gradient(step: step, shard: k, shards: shards, into: &g)
            if k == 0 { sum = g } else { for i in 0..<n { sum[i] += g[i] } }
        }
        sum.withUnsafeBufferPointer { s.apply(gradient: $0.baseAddress!) }
    }
    return s.p
}

let toyLimits = WireLimits.forModel(parameterCount: 3 * 4096)

func toyChunks(_ n: Int) -> [Range<Int>] {
    let a = n / 3, b = n * 3 / 4
    return [0..<a, a..<b, b..<n]
}

/// Runs a toy worker on its own thread; `done` waits for it (bounded).
final class WorkerThread: @unchecked Sendable {
    private let group = DispatchGroup()
    private(set) var result: Result<WorkerExit, any Error>?

    init(transport: any ClientTransport, data: (any DataTransport)? = nil, name: String, incarnation: UInt64 = 1, n: Int, shards: Int,
         maxReconnect: Double = 10, delay: Double = 0, applyDelay: Double = 0, corruptAtVersion: Int? = nil, startsElsewhere: Bool = false,
         ownerOptimizer: Bool = true, poison: @escaping @Sendable (Int, Int) -> Bool = { _, _ in false }) {
        group.enter()
        let t = Thread { [self] in
            defer { group.leave() }
            var o = WorkerOptions(name: name, incarnation: incarnation, limits: toyLimits)
            o.maxReconnectTime = maxReconnect
            o.coordinatorTimeout = 3
            o.ownerOptimizer = ownerOptimizer
            let w = Worker(transport: transport, options: o, threads: 1, logger: silentLogger(),
                           dataEndpoint: data.map { endpoint in { @Sendable _ in endpoint } }) { _ in
                ToyWorkerWorkload(n: n, shards: shards, delay: delay, applyDelay: applyDelay, corruptAtVersion: corruptAtVersion,
                                  startsElsewhere: startsElsewhere, poison: poison)
            }
            result = Result { try w.run() }
            transport.close()
        }
        t.start()
    }

    @discardableResult
    func wait(_ seconds: Double = 30) -> Result<WorkerExit, any Error>? {
        _ = group.wait(timeout: .now() + seconds)
        return result
    }
}

func coordinatorOptions(minWorkers: Int = 1) -> CoordinatorOptions {
    var o = CoordinatorOptions(runID: 42, limits: toyLimits)
    o.minWorkers = minWorkers
    o.heartbeatInterval = 0.1
    o.heartbeatTimeout = 1.0
    o.coordinatorTimeout = 3
    o.noWorkerTimeout = 20
    o.initialStepDeadline = 5
    o.minimumDeadline = 1
    return o
}

func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
