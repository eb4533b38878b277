/// The inner loops of the numeric core.
///
/// They are protocol requirements of `Scalar` with one generic body each (below), so every
/// concrete type (`Float`, `Double`) gets its own specialised copy compiled in this module,
/// while the generic code that calls them (tape, networks, objectives) pays one witness call
/// per kernel, not per element. Backward kernels *accumulate* into their outputs (`+=`).
public protocol ScalarKernels {
    /// `y = x * sigmoid(x)`.
    static func siluForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `dx += dy * sigmoid(x) * (1 + x (1 - sigmoid(x)))`.
    static func siluBackward(_ x: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                             _ dx: UnsafeMutablePointer<Self>, _ n: Int)
    /// Per row: `y = (x - mean) * rstd * gamma + beta`; saves mean and rstd per row.
    static func layerNormForward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                 _ beta: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                 _ mean: UnsafeMutablePointer<Self>, _ rstd: UnsafeMutablePointer<Self>,
                                 rows: Int, cols: Int, eps: Self)
    /// Accumulates dx, dgamma, dbeta (any of the three may be nil).
    static func layerNormBackward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                  _ mean: UnsafePointer<Self>, _ rstd: UnsafePointer<Self>,
                                  _ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>?,
                                  _ dgamma: UnsafeMutablePointer<Self>?, _ dbeta: UnsafeMutablePointer<Self>?,
                                  rows: Int, cols: Int)
    /// `y[i] = value` for i < n. (`UnsafeMutablePointer.update(repeating:count:)` in generic
    /// code that is not specialised, like the tape called from another module, is a loop of
    /// one value-witness call per element: 12% of a U-Net step when it zeroed the gradients.)
    static func fill(_ y: UnsafeMutablePointer<Self>, _ value: Self, _ n: Int)
    /// `y[i, :] = b` for every row (bias before a beta=1 GEMM).
    static func broadcastRows(_ b: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// `db += sum over rows of dy`.
    static func accumulateColumnSums(_ dy: UnsafePointer<Self>, _ db: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// `y = a + alpha b` (y may alias a or b).
    static func addScaled(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, alpha: Self,
                          _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `y += alpha x`.
    static func axpy(_ alpha: Self, _ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `y = a * b` elementwise.
    static func multiply(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `y += a * b` elementwise.
    static func multiplyAccumulate(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>,
                                   _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `y[i, j] = s[i] * x[i, j]`.
    static func scaleRows(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                          rows: Int, cols: Int)
    /// `ds[i] += sum_j dy[i, j] * x[i, j]`.
    static func accumulateRowDots(_ dy: UnsafePointer<Self>, _ x: UnsafePointer<Self>,
                                  _ ds: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// `sum_i w[i] sum_j x[i, j]^2`, accumulated in Double.
    static func weightedSumOfSquares(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>, rows: Int, cols: Int) -> Double
    /// `dx[i, j] += alpha s[i] x[i, j]`.
    static func accumulateScaledRows(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, alpha: Self,
                                     _ dx: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// One Adam step over n elements: moments update and `p -= stepSize m / (sqrt(v) invSqrtC2 + eps)`.
    static func adamUpdate(_ p: UnsafeMutablePointer<Self>, _ g: UnsafePointer<Self>,
                           _ m: UnsafeMutablePointer<Self>, _ v: UnsafeMutablePointer<Self>, _ n: Int,
                           beta1: Self, beta2: Self, stepSize: Self, invSqrtC2: Self, eps: Self)
    /// `ema = d ema + (1 - d) p`.
    static func emaUpdate(_ ema: UnsafeMutablePointer<Self>, _ p: UnsafePointer<Self>, decay d: Self, _ n: Int)
    /// `sum_i w[i] sum_j a[i, j] b[i, j]`, accumulated in Double.
    static func weightedDot(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                            rows: Int, cols: Int) -> Double
    /// `sum_i w[i] (max(z_i, 0) - z_i t_i + log(1 + exp(-|z_i|)))`, accumulated in Double.
    static func binaryCrossEntropyWithLogits(_ z: UnsafePointer<Self>, _ t: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                             rows: Int) -> Double
    /// `dz[i] += alpha w[i] (sigmoid(z_i) - t_i)`.
    static func binaryCrossEntropyWithLogitsBackward(_ z: UnsafePointer<Self>, _ t: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                                     alpha: Self, _ dz: UnsafeMutablePointer<Self>, rows: Int)
    /// `sum_i w[i] (logsumexp(z_i) - z_i[label_i])`, accumulated in Double; writes softmax(z_i) to `p`.
    static func softmaxCrossEntropy(_ z: UnsafePointer<Self>, _ label: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                    _ p: UnsafeMutablePointer<Self>, rows: Int, classes: Int) -> Double
    /// `dz[i, k] += alpha w[i] (p[i, k] - [k == label_i])`.
    static func softmaxCrossEntropyBackward(_ p: UnsafePointer<Self>, _ label: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                            alpha: Self, _ dz: UnsafeMutablePointer<Self>, rows: Int, classes: Int)
}

extension ScalarKernels where Self: Scalar {
    @inline(__always)
    static func sigmoid(_ x: Self) -> Self { 1 / (1 + Self.exp(-x)) }

    public static func siluForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n {
            let v = x[i]
            y[i] = v / (1 + Self.exp(-v))
        }
    }

    public static func siluBackward(_ x: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                    _ dx: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n {
            let v = x[i]
            let s = 1 / (1 + Self.exp(-v))
            dx[i] += dy[i] * s * (1 + v * (1 - s))
        }
    }

    public static func layerNormForward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                        _ beta: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                        _ mean: UnsafeMutablePointer<Self>, _ rstd: UnsafeMutablePointer<Self>,
                                        rows: Int, cols: Int, eps: Self) {
        let invN = 1 / Self(cols)
        for r in 0..<rows {
            let xr = x + r * cols, yr = y + r * cols
            var s: Self = 0
            for j in 0..<cols { s += xr[j] }
            let mu = s * invN
            var ss: Self = 0
            for j in 0..<cols {
                let d = xr[j] - mu
                ss += d * d
            }
            let rs = 1 / (ss * invN + eps).squareRoot()
            mean[r] = mu
            rstd[r] = rs
            for j in 0..<cols { yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j] }
        }
    }

    public static func layerNormBackward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                         _ mean: UnsafePointer<Self>, _ rstd: UnsafePointer<Self>,
                                         _ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>?,
                                         _ dgamma: UnsafeMutablePointer<Self>?, _ dbeta: UnsafeMutablePointer<Self>?,
                                         rows: Int, cols: Int) {
        let invN = 1 / Self(cols)
        for r in 0..<rows {
            let xr = x + r * cols, dyr = dy + r * cols
            let mu = mean[r], rs = rstd[r]
            // dxhat = dy * gamma; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
            var sumD: Self = 0, sumDX: Self = 0
            for j in 0..<cols {
                let xhat = (xr[j] - mu) * rs
                let dxhat = dyr[j] * gamma[j]
                sumD += dxhat
                sumDX += dxhat * xhat
                if let dg = dgamma { dg[j] += dyr[j] * xhat }
                if let db = dbeta { db[j] += dyr[j] }
            }
            if let dx = dx {
                let dxr = dx + r * cols
                let mD = sumD * invN, mDX = sumDX * invN
                for j in 0..<cols {
                    let xhat = (xr[j] - mu) * rs
                    dxr[j] += rs * (dyr[j] * gamma[j] - mD - xhat * mDX)
                }
            }
        }
    }

    public static func fill(_ y: UnsafeMutablePointer<Self>, _ value: Self, _ n: Int) {
        for i in 0..<n { y[i] = value }
    }

    public static func broadcastRows(_ b: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, rows: Int, cols: Int) {
        for r in 0..<rows { (y + r * cols).update(from: b, count: cols) }
    }

    public static func accumulateColumnSums(_ dy: UnsafePointer<Self>, _ db: UnsafeMutablePointer<Self>,
                                            rows: Int, cols: Int) {
        for r in 0..<rows {
            let dyr = dy + r * cols
            for j in 0..<cols { db[j] += dyr[j] }
        }
    }

    public static func addScaled(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, alpha: Self,
                                 _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { y[i] = a[i] + alpha * b[i] }
    }

    public static func axpy(_ alpha: Self, _ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { y[i] += alpha * x[i] }
    }

    public static func multiply(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>,
                                _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { y[i] = a[i] * b[i] }
    }

    public static func multiplyAccumulate(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>,
                                          _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { y[i] += a[i] * b[i] }
    }

    public static func scaleRows(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                 rows: Int, cols: Int) {
        for r in 0..<rows {
            let sr = s[r], xr = x + r * cols, yr = y + r * cols
            for j in 0..<cols { yr[j] = sr * xr[j] }
        }
    }

    public static func accumulateRowDots(_ dy: UnsafePointer<Self>, _ x: UnsafePointer<Self>,
                                         _ ds: UnsafeMutablePointer<Self>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let dyr = dy + r * cols, xr = x + r * cols
            var acc: Self = 0
            for j in 0..<cols { acc += dyr[j] * xr[j] }
            ds[r] += acc
        }
    }

    public static func weightedSumOfSquares(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                            rows: Int, cols: Int) -> Double {
        var total = 0.0
        for r in 0..<rows {
            let xr = x + r * cols
            var acc: Self = 0
            for j in 0..<cols { acc += xr[j] * xr[j] }
            total += Double(w[r]) * Double(acc)
        }
        return total
    }

    public static func accumulateScaledRows(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, alpha: Self,
                                            _ dx: UnsafeMutablePointer<Self>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let c = alpha * s[r], xr = x + r * cols, dxr = dx + r * cols
            for j in 0..<cols { dxr[j] += c * xr[j] }
        }
    }

    public static func weightedDot(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                   rows: Int, cols: Int) -> Double {
        var total = 0.0
        for r in 0..<rows {
            let ar = a + r * cols, br = b + r * cols
            var acc: Self = 0
            for j in 0..<cols { acc += ar[j] * br[j] }
            total += Double(w[r]) * Double(acc)
        }
        return total
    }

    public static func binaryCrossEntropyWithLogits(_ z: UnsafePointer<Self>, _ t: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                                    rows: Int) -> Double {
        var total = 0.0
        for i in 0..<rows {
            let zi = z[i]
            let loss = Swift.max(zi, 0) - zi * t[i] + Self.log(1 + Self.exp(-Swift.abs(zi)))
            total += Double(w[i]) * Double(loss)
        }
        return total
    }

    public static func binaryCrossEntropyWithLogitsBackward(_ z: UnsafePointer<Self>, _ t: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                                            alpha: Self, _ dz: UnsafeMutablePointer<Self>, rows: Int) {
        for i in 0..<rows { dz[i] += alpha * w[i] * (sigmoid(z[i]) - t[i]) }
    }

    public static func softmaxCrossEntropy(_ z: UnsafePointer<Self>, _ label: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                           _ p: UnsafeMutablePointer<Self>, rows: Int, classes k: Int) -> Double {
        var total = 0.0
        for i in 0..<rows {
            let zi = z + i * k, pi = p + i * k
            var top = zi[0]
            for j in 1..<k { top = Swift.max(top, zi[j]) }
            var sum: Self = 0
            for j in 0..<k {
                pi[j] = Self.exp(zi[j] - top)
                sum += pi[j]
            }
            for j in 0..<k { pi[j] /= sum }
            let logSumExp = top + Self.log(sum)
            total += Double(w[i]) * Double(logSumExp - zi[Int(label[i])])
        }
        return total
    }

    public static func softmaxCrossEntropyBackward(_ p: UnsafePointer<Self>, _ label: UnsafePointer<Self>, _ w: UnsafePointer<Self>,
                                                   alpha: Self, _ dz: UnsafeMutablePointer<Self>, rows: Int, classes k: Int) {
        for i in 0..<rows {
            let c = alpha * w[i], pi = p + i * k, dzi = dz + i * k
            for j in 0..<k { dzi[j] += c * pi[j] }
            dzi[Int(label[i])] -= c
        }
    }

    public static func adamUpdate(_ p: UnsafeMutablePointer<Self>, _ g: UnsafePointer<Self>,
                                  _ m: UnsafeMutablePointer<Self>, _ v: UnsafeMutablePointer<Self>, _ n: Int,
                                  beta1 b1: Self, beta2 b2: Self, stepSize: Self, invSqrtC2: Self, eps: Self) {
        let ob1 = 1 - b1, ob2 = 1 - b2
        for i in 0..<n {
            let gi = g[i]
            let mi = b1 * m[i] + ob1 * gi
            let vi = b2 * v[i] + ob2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] -= stepSize * mi / (vi.squareRoot() * invSqrtC2 + eps)
        }
    }

    public static func emaUpdate(_ ema: UnsafeMutablePointer<Self>, _ p: UnsafePointer<Self>, decay d: Self, _ n: Int) {
        let od = 1 - d
        for i in 0..<n { ema[i] = d * ema[i] + od * p[i] }
    }
}

// Declared here, beside the generic bodies, so the witnesses are specialised in this file even
// without whole-module optimisation (debug builds).
extension Float: ScalarKernels {}
extension Double: ScalarKernels {}
