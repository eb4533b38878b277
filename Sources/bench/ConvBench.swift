import ArgumentParser
import Foundation
import TensorCore

/// `bench conv`: each convolution shape of the default U-Net alone, forward and backward,
/// against the GEMMs it performs, so the overhead of im2col/col2im and of the layout copies
/// can be read off per shape.
struct Conv: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convolution forward/backward GFLOPS per U-Net shape, and the share spent outside GEMM.",
        discussion: "With --threads 1 times are process CPU time (robust to other processes), else wall clock.")
    @Option(help: "BLAS threads.") var threads: Int = 2
    @Option(help: "Batch size.") var batch: Int = 256
    @Option(help: "Repeats (median reported).") var repeats: Int = 5
    @Option(help: "im2col workspace limit in elements (default: the tape's).") var workspace: Int?

    /// (Cin, Cout, side) of the 3x3 convolutions of the default 28x28 U-Net with channels 32,64.
    static let shapes = [(1, 32, 28), (32, 32, 28), (32, 64, 14), (64, 64, 14), (128, 64, 14), (96, 32, 28)]

    /// CPU time with one thread (robust to other processes), wall clock otherwise.
    func time(_ body: () -> Void) -> Double { threads == 1 ? cpuSeconds(body) : seconds(body) }

    func run() throws {
        BLAS.setThreads(threads)
        print("openblas: \(BLAS.configuration), threads \(BLAS.threads); batch \(batch), 3x3 convolutions, " +
              (threads == 1 ? "process CPU time" : "wall clock"))
        print("Cin  Cout side  fwd ms  fwd GFLOPS  bwd ms  bwd GFLOPS  GEMM-only fwd/bwd GFLOPS")
        var rng = CounterRNG(seed: 1, purpose: .syntheticData)
        for (cin, cout, side) in Self.shapes {
            let input = ImageShape(channels: cin, height: side, width: side)
            let shape = ConvShape(input: input, outChannels: cout, kernel: 3)
            let x: [Float] = (0..<(batch * input.count)).map { _ in Float(rng.normal()) }
            let w: [Float] = (0..<shape.weightCount).map { _ in Float(rng.normal() * 0.1) }
            let tape = Tape<Float>()
            if let workspace { tape.convolutionWorkspaceLimit = workspace }
            var fwd: [Double] = [], bwd: [Double] = []
            let dy = [Float](repeating: 0.01, count: batch * shape.output.count)
            for r in 0...repeats {
                tape.reset()
                let xv = x.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: batch, cols: input.count) }
                let wv = w.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: cout, cols: shape.patchSize) }
                var y: Var?
                let tf = time { y = tape.conv2d(xv, wv, nil, input: input, outChannels: cout, kernel: 3) }
                let tb = time { dy.withUnsafeBufferPointer { tape.backward(y!, gradient: $0.baseAddress!) } }
                if r > 0 { fwd.append(tf); bwd.append(tb) }
            }
            let flops = 2 * Double(shape.macsPerSample * batch)
            let (gf, gb) = gemmOnly(shape)
            print(String(format: "%-4d %-4d %-5d %-7.1f %-11.1f %-7.1f %-11.1f %.1f / %.1f", cin, cout, side,
                         median(fwd) * 1e3, flops / median(fwd) / 1e9, median(bwd) * 1e3, 2 * flops / median(bwd) / 1e9, gf, gb))
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
