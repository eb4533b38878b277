import Cluster
import Foundation
import Logging
import TensorCore
import Testing
import Training
import Wire

/// Coordinator and workers in one process over the in-memory transport.
func quietLogger(_ label: String) -> Logger {
    if let level = ProcessInfo.processInfo.environment["AMBIENT_TEST_LOG"], let l = Logger.Level(rawValue: level) {
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = l
        return logger
    }
    var l = Logger(label: label) { _ in SwiftLogNoOpLogHandler() }
    l.logLevel = .critical
    return l
}

/// Starts `count` in-process workers; returns a function that waits for them (bounded).
func startWorkers(_ network: InMemoryNetwork, count: Int, prefix: String = "w", threads: Int = 1,
                  limits: WireLimits) -> () -> [Result<WorkerExit, any Error>] {
    let group = DispatchGroup()
    let lock = NSLock()
    nonisolated(unsafe) var results: [Result<WorkerExit, any Error>] = []
    for i in 0..<count {
        group.enter()
        let thread = Thread {
            defer { group.leave() }
            let client = network.connect(identity: "\(prefix)\(i)/1")
            var options = WorkerOptions(name: "\(prefix)\(i)", incarnation: UInt64(i + 1), limits: limits)
            options.maxReconnectTime = 20
            let worker = Worker(transport: client, options: options, threads: threads, logger: quietLogger("w"),
                                factory: DenoiserWorkerWorkload.factory(logger: quietLogger("w"), threads: threads))
            let r = Result { try worker.run() }
            client.close()
            lock.lock(); results.append(r); lock.unlock()
        }
        thread.start()
    }
    return {
        _ = group.wait(timeout: .now() + 60)
        lock.lock(); defer { lock.unlock() }
        return results
    }
}

@Suite(.serialized) struct ClusterInProcessTests {
    func singleProcess(_ config: RunConfig, threads: Int = 1) throws -> ([Float], [Float]) {
        let s = try TrainingSession(config: config, data: try TrainingData.load(config), threads: threads)
        for _ in 0..<config.steps { try s.step() }
        return (s.state.store.snapshot(), s.state.ema!.snapshot())
    }

    func distributed(_ config: RunConfig, workers: Int, threads: Int = 1, checkpointEvery: Int = 0,
                     codec: String = "lz4") throws -> (params: [Float], ema: [Float], stats: CoordinatorStats) {
        let network = InMemoryNetwork()
        let data = try TrainingData.load(config)
        let dir = temporaryDirectory("cluster")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ClusterTraining.Options()
        options.showProgress = false
        options.coordinator.checkpointEvery = checkpointEvery
        options.coordinator.minWorkers = workers
        options.coordinator.codec = codec
        options.coordinator.noWorkerTimeout = 30
        let limits = ClusterTraining.limits(parameters: 100_000)
        let wait = startWorkers(network, count: workers, threads: threads, limits: limits)
        nonisolated(unsafe) var coordinator: Coordinator?
        let workload = try ClusterTraining.coordinate(config: config, data: data, runPath: dir, transport: network.server(),
                                                      options: options, logger: quietLogger("c")) { coordinator = $0 }
        let results = wait()
        #expect(results.count == workers)
        for r in results { #expect((try? r.get()) == .finished, "\(r)") }
        return (workload.optimizerState.store.snapshot(), workload.optimizerState.ema!.snapshot(), coordinator!.stats)
    }

    /// DESIGN's determinism guarantee: 1, 2 and 3 workers and the single-process trainer with
    /// the same shard count give bitwise-identical parameters and EMA.
    @Test func bitwiseIdenticalAcrossWorkerCounts() throws {
        let config = smallConfig(steps: 12, shards: 4)
        let (p0, e0) = try singleProcess(config)
        for t in [2, 3, 4] {   // 4: every shard in one round, summed in shard 0's buffer
            let (p, e) = try singleProcess(config, threads: t)
            #expect(p.withUnsafeBytes { Array($0) } == p0.withUnsafeBytes { Array($0) }, "\(t) threads: parameters differ")
            #expect(e.withUnsafeBytes { Array($0) } == e0.withUnsafeBytes { Array($0) }, "\(t) threads: EMA differs")
        }
        for (w, threads) in [(1, 1), (2, 1), (3, 1), (1, 3), (2, 2)] {
            let (p, e, stats) = try distributed(config, workers: w, threads: threads)
            #expect(p.withUnsafeBytes { Array($0) } == p0.withUnsafeBytes { Array($0) }, "\(w) workers x \(threads) threads: parameters differ")
            #expect(e.withUnsafeBytes { Array($0) } == e0.withUnsafeBytes { Array($0) }, "\(w) workers x \(threads) threads: EMA differs")
            #expect(stats.stepsCompleted == 12)
            // The workers' replicas never left the coordinator's (a repair would hide it).
            #expect(stats.repairs == 0, "\(w) workers x \(threads) threads: \(stats.repairs) replicas repaired by a full copy")
        }
    }

    /// Lossy codecs with error feedback train too: the final loss of a short run stays close
    /// to the lossless run's (no bitwise promise: docs/protocol.md, "Codecs").
    @Test(arguments: ["bf16", "topk:0.05"])
    func lossyCodecsWithErrorFeedbackTrain(codec: String) throws {
        var config = smallConfig(steps: 150, shards: 2)
        config.logEvery = 1
        let lossless = try distributed(config, workers: 2)
        let lossy = try distributed(config, workers: 2, codec: codec)
        #expect(lossy.params.allSatisfy { $0.isFinite })
        func loss(_ p: [Float]) throws -> Double {
            // Mean ambient loss of the final parameters over a few fixed steps.
            let s = try TrainingSession(config: config, data: try TrainingData.load(config), threads: 1)
            s.state.store.load(p)
            var total = 0.0
            for step in 0..<8 { total += s.computer.compute(step: 1000 + step, shard: 0).loss }
            return total / 8
        }
        let a = try loss(lossless.params), b = try loss(lossy.params)
        print("codec \(codec): loss \(b) vs lossless \(a)")
        #expect(abs(b - a) / a < 0.15, "codec \(codec): loss \(b) vs lossless \(a)")
    }
}
