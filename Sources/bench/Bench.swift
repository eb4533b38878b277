import ArgumentParser
import Diffusion
import Foundation
import TensorCore
import Training
import Wire

/// Benchmarks that print ratios measured in one run (docs/benchmarks.md).
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Ambient benchmarks: sgemm peak and training-step throughput.",
        subcommands: [Kernels.self, Step.self, Codecs.self])
}

/// Median of a sample.
func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func seconds(_ body: () -> Void) -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}

/// GFLOPS of `C = A B` for (m, k) x (k, n), median over repeats.
func sgemmGFLOPS(m: Int, n: Int, k: Int, repeats: Int = 7) -> Double {
    let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
    var c = [Float](repeating: 0, count: m * n)
    var times: [Double] = []
    for _ in 0..<(repeats + 1) {
        let t = seconds {
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                Float.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: ap.baseAddress!, lda: k,
                           b: bp.baseAddress!, ldb: n, beta: 0, c: cp.baseAddress!, ldc: n)
            } } }
        }
        times.append(t)
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
        Uses random data of dimension 784 and the ambient objective, as ../shared/peers/torch_ddp_ambient.py does.
        Ambient computes --shards shards per step, --threads at once, each with one BLAS thread (the
        determinism rule); the peak is sgemm with --threads BLAS threads, measured in the same run.
        """)
    @Option(help: "Compute threads (shards at once).") var threads: Int = 2
    @Option(help: "Shards per step (default: --threads).") var shards: Int?
    @Option(help: "Batch size.") var batch: Int = 256
    @Option(help: "Timed steps.") var steps: Int = 20
    @Option(help: "Warm-up steps.") var warmup: Int = 3
    @Option(help: "MLP width.") var width: Int = 1024
    @Option(help: "MLP blocks.") var blocks: Int = 4
    @Option(help: "Objective: ambient or dsm.") var objective: String = "ambient"

    func run() throws {
        BLAS.setThreads(1)
        let d = 784, n = 4096
        var rng = CounterRNG(seed: 1, purpose: .syntheticData)
        let x = Tensor<Float>(shape: [n, d], storage: (0..<(n * d)).map { _ in Float(max(-1, min(1, rng.normal()))) })
        let data = TrainingData(samples: x, sigmaN: [Double](repeating: 0.5, count: n), summary: "random")
        let config = RunConfig(data: .npy(path: "-"), dataSigma: 0.5, objective: objective, steps: warmup + steps, batch: batch,
                               shards: shards ?? threads, model: .mlp(MLPConfig(dataDimension: d, width: width, blocks: blocks)))
        let session = try TrainingSession(config: config, data: data, threads: threads)
        for _ in 0..<warmup { try session.step() }
        var times: [Double] = []
        for _ in 0..<steps { times.append(try session.step().seconds) }
        let t = median(times)
        let macs = Double(session.network.forwardMACsPerSample)
        // Training = forward + two backward GEMMs per layer (the first layer needs no input gradient).
        let flopsPerSample = 2 * macs * 3 - 2 * Double(d * width)
        let achieved = flopsPerSample * Double(batch) / t / 1e9
        BLAS.setThreads(threads)
        let peak = sgemmGFLOPS(m: 2048, n: 2048, k: 2048)
        print("openblas: \(BLAS.configuration), peak measured with \(BLAS.threads) BLAS threads")
        print(String(format: "step: batch %d, %d shards, %d threads, median %.2f ms over %d steps, %.1f samples/s",
                     batch, config.shards, session.computers.count, t * 1e3, steps, Double(batch) / t))
        print(String(format: "model GEMM work %.1f GFLOPS achieved, sgemm peak %.1f GFLOPS, fraction %.3f", achieved, peak, achieved / peak))
    }
}

struct Codecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gradient codecs: compression ratio and single-core MB/s, and checksum speed.",
        discussion: """
        --source training (default) takes the gradient of a real training step of the reference MLP
        (ambient objective on Fashion-MNIST with sigma_n = 0.5 if installed, else on random data) after
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
            var config = RunConfig(data: .fashionMNIST, corruption: .noise(0.5), objective: "ambient", steps: trainSteps + 1,
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
