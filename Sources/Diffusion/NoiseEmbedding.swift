import TensorCore
#if canImport(Glibc)
import Glibc
#endif

/// The sinusoidal embedding of the noise level shared by every network F:
/// `[sin(f_k c), cos(f_k c)]` of each row's `c = c_noise`, with fixed geometric frequencies
/// `f_k = (pi/2) 256^(k/(K-1))`, k < K = size/2, covering c_noise in about [-2, 2].
///
/// Returns a constant (rows, size) node: the embedding has no parameters.
public func sinusoidalEmbedding<T: Scalar>(_ tape: Tape<T>, cNoise: UnsafePointer<T>, rows: Int, size: Int) -> Var {
    precondition(size >= 2 && size % 2 == 0, "embedding size must be even and >= 2, got \(size)")
    let k = size / 2
    let e = tape.constant(rows: rows, cols: 2 * k)
    let p = tape.value(e)
    for j in 0..<k {
        let f = Double.pi / 2 * pow(256, k > 1 ? Double(j) / Double(k - 1) : 0)
        for r in 0..<rows {
            let a = f * Double(cNoise[r])
            p[r * 2 * k + j] = T(sin(a))
            p[r * 2 * k + k + j] = T(cos(a))
        }
    }
    return e
}
