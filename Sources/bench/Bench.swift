import ArgumentParser
import Diffusion
import FileIO
import Foundation
import TensorCore
import Training
import Wire
import Logging

/// Benchmarks that print ratios measured in one run (docs/benchmarks.md).
@main
struct Bench: ParsableCommand {
    static func main() {
        BLASCore.restartWithPreferredCoreIfNeeded()
        Denormals.applyToMainThread()
        MallocTuning.keepLargeBuffers()
        Self.main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Ambient benchmarks: sgemm peak and training-step throughput.",
        subcommands: [Kernels.self, Step.self, Conv.self, Codecs.self, ClusterStep.self])
}

func seconds(_ body: () -> Void) -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}

/// CPU seconds used by this process (all threads) while running `body`. With one thread it
/// is the work itself, whatever else the machine runs; with more, BLAS threads spinning while
/// they wait count too.
func cpuSeconds(_ body: () -> Void) -> Double {
    func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
    let t = now()
    body()
    return now() - t
}

/// GFLOPS of `C = A B` for (m, k) x (k, n), median over repeats (by wall clock, or by
/// process CPU time with `cpuTime`).
func sgemmGFLOPS(m: Int, n: Int, k: Int, repeats: Int = 7, cpuTime: Bool = false) -> Double {
    let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
    var c = [Float](repeating: 0, count: m * n)
    var times: [Double] = []
    for _ in 0..<(repeats + 1) {
        let body = {
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                Float.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: ap.baseAddress!, lda: k,
                           b: bp.baseAddress!, ldb: n, beta: 0, c: cp.baseAddress!, ldc: n)
            } } }
        }
        times.append(cpuTime ? cpuSeconds(body) : seconds(body))
    }
    return 2 * Double(m * n * k) / median(Array(times.dropFirst())) / 1e9
}

struct Kernels: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "sgemm GFLOPS: square peak and the reference MLP's shapes.")
    @Option(help: "BLAS threads.") var threads: Int = 2

    func run() throws {
        BLAS.setThreads(threads)
        print("openblas: \(BLAS.configuration), threads \(BLAS.threads)")
        let peak = sgemmGFLOPS(m: 2048, n: 2048, k: 2048)
        print(String(format: "sgemm 2048^3: %.1f GFLOPS (peak reference)", peak))
        for (m, n, k) in [(256, 1024, 1024), (256, 1024, 784), (256, 784, 1024), (1024, 1024, 256)] {
            let g = sgemmGFLOPS(m: m, n: n, k: k, repeats: 21)
            print(String(format: "sgemm m=%d n=%d k=%d: %.1f GFLOPS = %.2f of peak", m, n, k, g, g / peak))
        }
    }
}

struct Step: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Training throughput of one process (samples/s) and its fraction of the sgemm peak.",
        discussion: """
        Uses random data of dimension 784 (28x28) and the ambient objective, as ../shared/peers/torch_ddp_ambient.py does. \
        Ambient computes --shards shards per step, --threads at once, each with one BLAS thread (the \
        determinism rule); the peak is sgemm with --threads BLAS threads, measured in the same run. \
        GFLOPS counts the network's GEMM work (convolutions and linear layers, forward and backward: \
        DenoiserNetwork.trainingMACsPerSample); normalisation and elementwise work is not counted. \
        --profile adds one line per tape primitive (forward and backward ms per step) from a second, \
        timed-per-primitive run of the same steps.
        """)
    @Option(help: "Compute threads (shards at once).") var threads: Int = 2
    @Option(help: "Shards per step (default: --threads).") var shards: Int?
    @Option(help: "Batch size.") var batch: Int = 256
    @Option(help: "Timed steps.") var steps: Int = 20
    @Option(help: "Warm-up steps.") var warmup: Int = 3
    @Option(help: "Network: mlp or unet.") var arch: String = "mlp"
    @Option(help: "MLP width.") var width: Int = 1024
    @Option(help: "MLP blocks.") var blocks: Int = 4
    @Option(help: "U-Net channels per resolution, comma-separated (default: the U-Net's default, 16,32,64).") var channels: String = UNetConfig.defaultChannels.map(String.init).joined(separator: ",")
    @Flag(help: "U-Net with gated convolutions.") var gated = false
    @Option(help: "Objective: ambient or dsm.") var objective: ObjectiveKind = .ambient
    @Option(help: "im2col workspace limit in elements (default: the tape's).") var workspace: Int?
    @Flag(help: "Also time every tape primitive.") var profile = false
    @Flag(help: "Run 3x3 convolutions through im2col + GEMM even where the direct kernel exists (the baseline).")
    var im2col = false

    func model(dimension d: Int) throws -> NetworkConfig {
        switch arch {
        case "mlp": return .mlp(MLPConfig(dataDimension: d, width: width, blocks: blocks))
        case "unet":
            let c = channels.split(separator: ",").compactMap { Int($0) }
            return .unet(UNetConfig(dataDimension: d, channels: c, gated: gated))
        default: throw ValidationError("--arch must be mlp or unet")
        }
    }

    func run() throws {
        BLAS.setThreads(1)
        let d = 784, n = 4096
        var rng = CounterRNG(seed: 1, purpose: .syntheticData)
        let x = Tensor<Float>(shape: [n, d], storage: (0..<(n * d)).map { _ in Float(max(-1, min(1, rng.normal()))) })
        let data = TrainingData(samples: x, sigmaN: [Double](repeating: 0.5, count: n), summary: "random")
        let config = RunConfig(data: .npy(path: "-"), dataSigma: 0.5, objective: objective, steps: warmup + steps, batch: batch,
                               shards: shards ?? threads, model: try model(dimension: d))
        let session = try TrainingSession(config: config, data: data, threads: threads)
        for case let c as ShardGradientComputer in session.computers {
            if let workspace { c.tapeWorkspaceLimit = workspace }
            c.usesDirectConvolution = !im2col
        }
        for _ in 0..<warmup { try session.step() }
        var times: [Double] = [], cpu: [Double] = []
        for _ in 0..<steps {
            var wall = 0.0
            cpu.append(cpuSeconds { wall = (try? session.step().seconds) ?? .nan })
            times.append(wall)
        }
        guard times.allSatisfy({ $0.isFinite }) else { throw ValidationError("a step failed") }
        let t = median(times)
        let network = session.network
        let flopsPerSample = 2 * Double(network.trainingMACsPerSample)
        let achieved = flopsPerSample * Double(batch) / t / 1e9
        BLAS.setThreads(threads)
        let peak = sgemmGFLOPS(m: 2048, n: 2048, k: 2048)
        print("openblas: \(BLAS.configuration), peak measured with \(BLAS.threads) BLAS threads")
        if arch == "unet" {
            print("3x3 convolutions: " + (!im2col && DirectConvolution.isAvailable ? "direct kernel (\(DirectConvolution.fastest))" : "im2col + GEMM"))
        }
        print("model: \(arch) \(arch == "unet" ? "channels \(channels)\(gated ? " gated" : "")" : "width \(width) blocks \(blocks)"), " +
              "\(network.layout.count) parameters, \(String(format: "%.1f", Double(network.forwardMACsPerSample) / 1e6)) M MACs/sample forward, " +
              "\(String(format: "%.3f", flopsPerSample / 1e9)) GFLOP/sample per training step")
        print(String(format: "step: batch %d, %d shards, %d threads, median %.2f ms over %d steps, %.1f samples/s",
                     batch, config.shards, session.computers.count, t * 1e3, steps, Double(batch) / t))
        print(String(format: "model GEMM work %.1f GFLOPS achieved, sgemm peak %.1f GFLOPS, fraction %.3f", achieved, peak, achieved / peak))
        // The same by process CPU time: robust to other processes on the machine when
        // --threads 1 (with more threads, BLAS threads waiting on each other count too).
        let tc = median(cpu)
        let achievedCPU = flopsPerSample * Double(batch) / tc / 1e9
        let peakCPU = sgemmGFLOPS(m: 2048, n: 2048, k: 2048, cpuTime: true)
        print(String(format: "by CPU time: median %.2f CPU-ms per step, %.1f samples per CPU-second, %.1f GFLOPS per CPU-second, " +
                     "sgemm %.1f, fraction %.3f", tc * 1e3, Double(batch) / tc, achievedCPU, peakCPU, achievedCPU / peakCPU))
        if profile { try printProfile(session, stepSeconds: t) }
    }

    /// Times `steps` more steps with the per-primitive profile on.
    func printProfile(_ session: TrainingSession, stepSeconds: Double) throws {
        // One thread: all work runs on this thread, and its CPU time is robust to other processes.
        let p = TapeProfile(clock: threads == 1 ? .threadCPU : .wall)
        (session.computer as? ShardGradientComputer)?.profile = p
        var times: [Double] = []
        for _ in 0..<steps {
            let body = { _ = try? session.step() }
            times.append(threads == 1 ? cpuSeconds(body) : seconds(body))
        }
        (session.computer as? ShardGradientComputer)?.profile = nil
        let per = 1e3 / Double(steps)
        print(String(format: "profile over %d steps by %@ (median step %.2f ms with timers, %.2f ms wall without):", steps,
                     threads == 1 ? "thread CPU time" : "wall clock", median(times) * 1e3, stepSeconds * 1e3))
        print("primitive             calls/step  fwd ms    bwd ms    share of step")
        let stepTotal = times.reduce(0, +)
        for e in p.primitivesByCost {
            print(e.name.padding(toLength: 22, withPad: " ", startingAt: 0)
                  + String(format: "%-11d %-9.2f %-9.2f %.1f%%", e.forward.calls / steps, e.forward.seconds * per,
                           e.backward.seconds * per, 100 * (e.forward.seconds + e.backward.seconds) / stepTotal))
        }
        let tape = p.totalSeconds
        print(String(format: "tape total %.2f ms/step; outside the tape (batch gather, sigma and noise draws, Adam, EMA) %.2f ms/step (%.1f%%)",
                     tape * per, (stepTotal - tape) * per, 100 * (stepTotal - tape) / stepTotal))
    }
}

struct Codecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gradient codecs: compression ratio and single-core MB/s, and checksum speed.",
        discussion: """
        --source training (default) takes the gradient of a real training step of the reference MLP \
        (ambient objective on Fashion-MNIST with sigma_n = 0.5 if installed, else on random data) after \
        --train-steps steps; --source synthetic uses Gaussian layers with scales in [1e-5, 1e-1].
        """)
    @Option(help: "training or synthetic.") var source: String = "training"
    @Option(help: "Training steps before the gradient is taken.") var trainSteps: Int = 50
    @Option(help: "Elements of the synthetic gradient.") var elements: Int = 10_000_000
    @Option(help: "Timing repeats (median reported).") var repeats: Int = 7

    func run() throws {
        BLAS.setThreads(2)
        let gradient: [Float]
        switch source {
        case "synthetic":
            gradient = CodecBenchmark.syntheticGradient(count: elements, seed: 1)
            print("synthetic gradient: \(elements) Float32")
        case "training":
            var data: TrainingData
            var config = RunConfig(data: .fashionMNIST, corruption: .noise(0.5), objective: .ambient, steps: trainSteps + 1,
                                   batch: 256, model: .mlp(MLPConfig(dataDimension: 784)))
            if let loaded = try? TrainingData.load(config) {
                data = loaded
            } else {
                var rng = CounterRNG(seed: 1, purpose: .syntheticData)
                let x = Tensor<Float>(shape: [4096, 784], storage: (0..<(4096 * 784)).map { _ in Float(max(-1, min(1, rng.normal()))) })
                data = TrainingData(samples: x, sigmaN: [Double](repeating: 0.5, count: 4096), summary: "random data")
                config.data = .npy(path: "-")
            }
            let session = try TrainingSession(config: config, data: data)
            for _ in 0..<trainSteps { try session.step() }
            _ = session.computer.compute(step: trainSteps, shard: 0)
            gradient = Array(session.state.store.gradBuffer)
            print("gradient of training step \(trainSteps) of the reference MLP (\(gradient.count) Float32) on \(data.summary)")
        default:
            throw ValidationError("--source must be training or synthetic")
        }
        print("median of \(repeats) repeats, one core")
        print(CodecBenchmark.tableHeader)
        for row in CodecBenchmark.run(values: gradient, repeats: repeats) { print(row) }
        gradient.withUnsafeBytes { bytes in
            for row in CodecBenchmark.checksums(bytes: bytes, repeats: repeats) {
                print(row.name.padding(toLength: 14, withPad: " ", startingAt: 0) + "\(Int(row.encodeMBps)) MB/s")
            }
        }
    }
}

struct ClusterStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Throughput of a loopback cluster: a coordinator here and N `ambient worker` processes.",
        discussion: """
        Trains the reference MLP on a synthetic Gaussian mixture of dimension 784 (every process generates \
        it), one shard per worker, one BLAS thread per worker, and reports medians after --warmup steps: \
        step time, samples/s, worker compute time per shard, the rest of the step (communication, \
        reduction, optimiser), and bytes moved. Needs the `ambient` executable beside `bench`.
        """)
    @Option(help: "Worker processes.") var workers: Int = 2
    @Option(name: .customLong("batch-per-worker"), help: "Samples per worker per step.") var batchPerWorker: Int = 128
    @Option(help: "Timed steps.") var steps: Int = 30
    @Option(help: "Warm-up steps.") var warmup: Int = 5
    @Option(help: "Gradient codec.") var codec: String = "lz4"
    @Option(help: "MLP width.") var width: Int = 1024
    @Option(help: "MLP blocks.") var blocks: Int = 4
    @Option(help: "How the worker processes reach the coordinator: ipc (Unix socket, no CURVE) or tcp (127.0.0.1, CURVE).")
    var link: LocalCluster.Link = .ipc
    @Flag(help: "With --link tcp: no CURVE encryption on the loopback socket.") var plaintext = false
    @Option(help: "Workers run as threads of the coordinator's process.") var colocated: Int = 0

    func run() throws {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let ambient = me.deletingLastPathComponent().appendingPathComponent("ambient").path
        guard FileManager.default.isExecutableFile(atPath: ambient) else {
            throw ValidationError("\(ambient) not found: build it first (swift build -c release --product ambient)")
        }
        var spec = GaussianMixtureSpec()
        spec.dimension = 784
        spec.count = 4096
        let config = RunConfig(data: .gaussianMixture(spec), corruption: .noise(0.5), objective: .ambient,
                               steps: warmup + steps, batch: batchPerWorker * workers, shards: workers, learningRate: 2e-4,
                               model: .mlp(MLPConfig(dataDimension: 784, width: width, blocks: blocks)), logEvery: 1)
        let data = try TrainingData.load(config)
        let dir = NSTemporaryDirectory() + "ambient-bench-cluster-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ClusterTraining.Options()
        options.coordinator.codec = codec
        options.coordinator.checkpointEvery = 0
        options.showProgress = false
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var local = LocalCluster(workers: workers, logLevel: "error", logger: logger, executable: ambient)
        local.link = link
        local.plaintext = plaintext
        local.colocated = colocated
        try local.run(config: config, data: data, runPath: dir, options: options)
        let rows = String(decoding: (try? FileBytes.contents(of: dir + "/metrics.jsonl")) ?? [], as: UTF8.self)
            .split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { ($0["step"] as? Int ?? 0) >= warmup }
        func med(_ key: String) -> Double { median(rows.compactMap { $0[key] as? Double }) }
        let step = med("step_seconds"), compute = med("compute_seconds")
        let bytesIn = med("bytes_in"), bytesOut = med("bytes_out")
        print("cluster: \(workers) workers x 1 thread (\(colocated) in the coordinator's process), \(batchPerWorker) samples each, codec \(codec), \(link == .ipc ? "ipc" : plaintext ? "tcp plaintext" : "tcp CURVE"), \(rows.count) steps timed")
        print(String(format: "step %.1f ms (median), %.1f samples/s", step * 1e3, Double(batchPerWorker * workers) / step))
        print(String(format: "compute per shard %.1f ms, rest of the step (communication, reduction, optimiser) %.1f ms = %.0f%%",
                     compute * 1e3, (step - compute) * 1e3, (step - compute) / step * 100))
        print(String(format: "bytes per step: %.1f MB in, %.1f MB out (%.0f MB/s through the coordinator)",
                     bytesIn / 1e6, bytesOut / 1e6, (bytesIn + bytesOut) / step / 1e6))
    }
}

extension ObjectiveKind: ExpressibleByArgument {}
extension LocalCluster.Link: ExpressibleByArgument {}
