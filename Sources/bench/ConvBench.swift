import ArgumentParser
import Diffusion
import Foundation
import TensorCore

/// `bench conv`: each convolution shape of a 28x28 U-Net alone, forward and backward, against
/// the GEMMs it performs, so the overhead of im2col/col2im and of the layout copies can be read
/// off per shape; the last line weighs the shapes by how often the network runs them.
struct Conv: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convolution forward/backward GFLOPS per U-Net shape, and the share spent outside GEMM.",
        discussion: "With --threads 1 times are process CPU time (robust to other processes), else wall clock. " +
            "The shapes are those of the U-Net with --channels on 28x28 images, each once, with the number " +
            "of times the network runs it; the total line weighs them by that count (the input gradient of " +
            "the first convolution, which training skips, is included there).")
    @Option(help: "BLAS threads.") var threads: Int = 2
    @Option(help: "Batch size.") var batch: Int = 256
    @Option(help: "Repeats (median reported).") var repeats: Int = 5
    @Option(help: "im2col workspace limit in elements (default: the tape's).") var workspace: Int?
    @Option(help: "U-Net channels per resolution, comma-separated (default: the U-Net's default, 16,32,64).")
    var channels: String = UNetConfig.defaultChannels.map(String.init).joined(separator: ",")

    /// The distinct convolutions of the U-Net, in network order, with how often each runs.
    func shapes() throws -> [(shape: ConvShape, count: Int)] {
        let c = channels.split(separator: ",").compactMap { Int($0) }
        let config = UNetConfig(dataDimension: 784, channels: c)
        do { try config.validate() } catch { throw ValidationError("\(error)") }
        var result: [(shape: ConvShape, count: Int)] = []
        for s in UNetNetwork(config).convolutions {
            if let i = result.firstIndex(where: { $0.shape == s }) { result[i].count += 1 } else { result.append((s, 1)) }
        }
        return result
    }

    /// CPU time with one thread (robust to other processes), wall clock otherwise.
    func time(_ body: () -> Void) -> Double { threads == 1 ? cpuSeconds(body) : seconds(body) }

    func run() throws {
        BLAS.setThreads(threads)
        print("openblas: \(BLAS.configuration), threads \(BLAS.threads); batch \(batch), U-Net \(channels), " +
              (threads == 1 ? "process CPU time" : "wall clock"))
        let direct = DirectConvolution.isAvailable
        print("direct 3x3 kernel: " + (direct ? "\(DirectConvolution.fastest): 3x3 rows show direct and im2col" : "not available on this CPU"))
        print("Cin  Cout k side runs  path    fwd ms  fwd GFLOPS  bwd ms  bwd GFLOPS  GEMM-only fwd/bwd GFLOPS")
        var rng = CounterRNG(seed: 1, purpose: .syntheticData)
        var totals: [Bool: (flops: Double, fwd: Double, bwd: Double)] = [:]
        for (shape, runs) in try shapes() {
            let input = shape.input, cout = shape.outChannels, k = shape.kernel
            let x: [Float] = (0..<(batch * input.count)).map { _ in Float(rng.normal()) }
            let w: [Float] = (0..<shape.weightCount).map { _ in Float(rng.normal() * 0.1) }
            let dy = [Float](repeating: 0.01, count: batch * shape.output.count)
            let flops = 2 * Double(shape.macsPerSample * batch)
            let (gf, gb) = gemmOnly(shape)
            // The im2col path for every shape; the direct path too where it applies.
            for useDirect in (direct && k == 3 ? [true, false] : [false]) {
                let tape = Tape<Float>()
                tape.usesDirectConvolution = useDirect
                if let workspace { tape.convolutionWorkspaceLimit = workspace }
                var fwd: [Double] = [], bwd: [Double] = []
                for r in 0...repeats {
                    tape.reset()
                    let xv = x.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: batch, cols: input.count) }
                    let wv = w.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: cout, cols: shape.patchSize) }
                    var y: Var?
                    let tf = time { y = tape.conv2d(xv, wv, nil, input: input, outChannels: cout, kernel: k) }
                    let tb = time { dy.withUnsafeBufferPointer { tape.backward(y!, gradient: $0.baseAddress!) } }
                    if r > 0 { fwd.append(tf); bwd.append(tb) }
                }
                // Totals per path: the direct total uses im2col for the 1x1 convolutions, as training does.
                for path in (direct ? [true, false] : [false]) where path == useDirect || (k != 3 && !useDirect) {
                    var t = totals[path] ?? (0, 0, 0)
                    t.flops += 3 * flops * Double(runs)
                    t.fwd += median(fwd) * Double(runs)
                    t.bwd += median(bwd) * Double(runs)
                    totals[path] = t
                }
                print(String(format: "%-4d %-4d %-1d %-4d %-4d  %-7@ %-7.1f %-11.1f %-7.1f %-11.1f %@", input.channels, cout, k,
                             input.height, runs, useDirect ? "direct" : "im2col", median(fwd) * 1e3, flops / median(fwd) / 1e9,
                             median(bwd) * 1e3, 2 * flops / median(bwd) / 1e9,
                             useDirect ? "" : String(format: "%.1f / %.1f", gf, gb)))
            }
        }
        for path in [true, false] {
            guard let t = totals[path] else { continue }
            print(String(format: "all convolutions of one training step, %@: %.1f ms forward + %.1f ms backward, %.1f GFLOPS",
                         path ? "direct 3x3" : "im2col", t.fwd * 1e3, t.bwd * 1e3, t.flops / (t.fwd + t.bwd) / 1e9))
        }
    }

    /// GFLOPS of the conv's GEMMs alone on the same chunking (forward; dW + dcol).
    func gemmOnly(_ shape: ConvShape) -> (Double, Double) {
        let s = shape.input.spatial, k = shape.patchSize, cout = shape.outChannels
        let chunk = max(1, min(batch, (workspace ?? Tape<Float>().convolutionWorkspaceLimit) / (k * s)))
        let ld = chunk * s, chunks = (batch + chunk - 1) / chunk
        let col = [Float](repeating: 0.5, count: k * ld), wv = [Float](repeating: 0.1, count: cout * k)
        var out = [Float](repeating: 0, count: cout * ld), dw = [Float](repeating: 0, count: cout * k)
        var dcol = [Float](repeating: 0, count: k * ld)
        var fwd: [Double] = [], bwd: [Double] = []
        for r in 0...repeats {
            let tf = time {
                for _ in 0..<chunks {
                    Float.gemm(transA: false, transB: false, m: cout, n: ld, k: k, alpha: 1, a: wv, lda: k, b: col, ldb: ld,
                               beta: 0, c: &out, ldc: ld)
                }
            }
            let tb = time {
                for _ in 0..<chunks {
                    Float.gemm(transA: false, transB: true, m: cout, n: k, k: ld, alpha: 1, a: out, lda: ld, b: col, ldb: ld,
                               beta: 1, c: &dw, ldc: k)
                    Float.gemm(transA: true, transB: false, m: k, n: ld, k: cout, alpha: 1, a: wv, lda: k, b: out, ldb: ld,
                               beta: 0, c: &dcol, ldc: ld)
                }
            }
            if r > 0 { fwd.append(tf); bwd.append(tb) }
        }
        let flops = 2 * Double(shape.macsPerSample * chunk * chunks)
        return (flops / median(fwd) / 1e9, 2 * flops / median(bwd) / 1e9)
    }
}
