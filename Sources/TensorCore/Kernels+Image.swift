/// The inner loops of the image primitives (convolution, GroupNorm, pooling, up-sampling).
///
/// Same scheme as `ScalarKernels`: protocol requirements with one generic body each, and the
/// conformances declared at the bottom of this file so every concrete type gets specialised
/// code even in non-WMO builds. Images are stored channel-major per sample (NCHW flattened):
/// a batch of `rows` images of (C, H, W) is `rows * C` contiguous planes of `H * W` values.
/// Backward kernels *accumulate* into their outputs (`+=`).
public protocol ImageKernels {
    /// Unfolds `samples` images (C, H, W), stored one after another from `x`, into the patch
    /// matrix `col` of shape (C k k, samples H W) for a stride-1, 'same'-padded k x k
    /// convolution: `col[(c k + ky) k + kx, n H W + y W + x] = x[n, c, y + ky - k/2, x + kx - k/2]`,
    /// zero outside the image.
    static func im2col(_ x: UnsafePointer<Self>, _ col: UnsafeMutablePointer<Self>,
                       channels: Int, height: Int, width: Int, kernel: Int, samples: Int)
    /// The adjoint of `im2col`: `dx[n, c, y + ky - k/2, x + kx - k/2] += col[...]` for the
    /// positions inside the image.
    static func col2imAccumulate(_ col: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                 channels: Int, height: Int, width: Int, kernel: Int, samples: Int)
    /// `dst[n, c, p] = src[c, n S + p] (+ bias[c])`: a (C, samples S) matrix back to NCHW.
    static func channelsToSamples(_ src: UnsafePointer<Self>, _ dst: UnsafeMutablePointer<Self>,
                                  bias: UnsafePointer<Self>?, channels: Int, spatial: Int, samples: Int)
    /// `dst[c, n S + p] = src[n, c, p]`: NCHW to a (C, samples S) matrix.
    static func samplesToChannels(_ src: UnsafePointer<Self>, _ dst: UnsafeMutablePointer<Self>,
                                  channels: Int, spatial: Int, samples: Int)
    /// GroupNorm (Wu & He 2018) of `rows` samples of (C, S), G groups of C/G channels:
    /// `y = (x - mean_g) rstd_g gamma[c] + beta[c]`; saves mean and rstd per (sample, group).
    static func groupNormForward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>, _ beta: UnsafePointer<Self>,
                                 _ y: UnsafeMutablePointer<Self>, _ mean: UnsafeMutablePointer<Self>,
                                 _ rstd: UnsafeMutablePointer<Self>,
                                 rows: Int, channels: Int, spatial: Int, groups: Int, eps: Self)
    /// Accumulates dx, dgamma, dbeta (any may be nil).
    static func groupNormBackward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                  _ mean: UnsafePointer<Self>, _ rstd: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                  _ dx: UnsafeMutablePointer<Self>?, _ dgamma: UnsafeMutablePointer<Self>?,
                                  _ dbeta: UnsafeMutablePointer<Self>?,
                                  rows: Int, channels: Int, spatial: Int, groups: Int)
    /// 2x2 average pooling of `planes` planes of (H, W), H and W even: (H/2, W/2) each.
    static func avgPool2x2Forward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                  planes: Int, height: Int, width: Int)
    /// `dx[2i + a, 2j + b] += dy[i, j] / 4`; (height, width) are the input's.
    static func avgPool2x2Backward(_ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                   planes: Int, height: Int, width: Int)
    /// Nearest-neighbour 2x up-sampling of `planes` planes of (H, W) to (2H, 2W).
    static func upsample2xForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                  planes: Int, height: Int, width: Int)
    /// `dx[i, j] += sum of the four dy it was copied to`; (height, width) are the input's.
    static func upsample2xBackward(_ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                   planes: Int, height: Int, width: Int)
    /// `y[i, j] = x[i, j] + alpha s[i]` (y may alias x).
    static func addRowScalars(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, alpha: Self,
                              _ y: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// `s[i] += alpha sum_j x[i, j]`.
    static func accumulateRowSums(_ x: UnsafePointer<Self>, _ s: UnsafeMutablePointer<Self>, alpha: Self,
                                  rows: Int, cols: Int)
    /// `y = 1 / (1 + exp(-x))`.
    static func sigmoidForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int)
    /// `dx += dy y (1 - y)` from the forward output y.
    static func sigmoidBackward(_ y: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                _ dx: UnsafeMutablePointer<Self>, _ n: Int)
    /// True when `directConv3x3Forward`/`Backward` exist for this type on this CPU
    /// (`DirectConvolution`: Float with AVX2 + FMA); false: the im2col path only.
    static var hasDirectConv3x3: Bool { get }
    /// Workspace elements of the direct 3x3 convolution's forward and backward passes over `samples` images.
    static func directConv3x3Workspace(input: ImageShape, outChannels: Int, samples: Int) -> Int
    /// `y = conv3x3(x, w) + bias` over `samples` images (only when `hasDirectConv3x3`).
    static func directConv3x3Forward(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>, bias: UnsafePointer<Self>?,
                                     _ y: UnsafeMutablePointer<Self>, input: ImageShape, outChannels: Int, samples: Int,
                                     workspace: UnsafeMutablePointer<Self>)
    /// Accumulates dx and dw of the direct 3x3 convolution (only when `hasDirectConv3x3`).
    static func directConv3x3Backward(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                      dx: UnsafeMutablePointer<Self>?, dw: UnsafeMutablePointer<Self>?,
                                      input: ImageShape, outChannels: Int, samples: Int, workspace: UnsafeMutablePointer<Self>)
}

extension ImageKernels where Self: Scalar {
    /// `sum_i p[i]` with eight independent SIMD accumulators: a serial floating-point sum
    /// cannot be vectorised (it would reorder additions) and is bound by the add latency.
    @inline(__always)
    static func vectorSum(_ p: UnsafePointer<Self>, _ n: Int) -> Self {
        var acc = SIMD8<Self>(repeating: 0)
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Self>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n { s += p[i]; i += 1 }
        return s
    }

    /// `sum_i (p[i] - c)^2`, vectorised like `vectorSum`.
    @inline(__always)
    static func vectorSumOfSquaredDeviations(_ p: UnsafePointer<Self>, _ n: Int, from c: Self) -> Self {
        var acc = SIMD8<Self>(repeating: 0)
        let cv = SIMD8<Self>(repeating: c)
        var i = 0
        while i + 8 <= n {
            let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Self>.self) - cv
            acc += d * d
            i += 8
        }
        var s = acc.sum()
        while i < n { s += (p[i] - c) * (p[i] - c); i += 1 }
        return s
    }

    /// `(sum_i a[i], sum_i a[i] b[i])`, vectorised like `vectorSum`.
    @inline(__always)
    static func vectorSumAndDot(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ n: Int) -> (Self, Self) {
        var sa = SIMD8<Self>(repeating: 0), sab = SIMD8<Self>(repeating: 0)
        var i = 0
        while i + 8 <= n {
            let av = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Self>.self)
            sa += av
            sab += av * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Self>.self)
            i += 8
        }
        var s = sa.sum(), d = sab.sum()
        while i < n { s += a[i]; d += a[i] * b[i]; i += 1 }
        return (s, d)
    }

    public static func im2col(_ x: UnsafePointer<Self>, _ col: UnsafeMutablePointer<Self>,
                              channels: Int, height h: Int, width w: Int, kernel k: Int, samples: Int) {
        let s = h * w, pad = k / 2, ld = samples * s
        for c in 0..<channels {
            for ky in 0..<k {
                for kx in 0..<k {
                    let row = col + ((c * k + ky) * k + kx) * ld
                    let dx = kx - pad
                    // Output columns whose source column x + dx lies inside the image.
                    let lo = max(0, -dx), hi = min(w, w - dx)
                    for n in 0..<samples {
                        let plane = x + (n * channels + c) * s
                        let out = row + n * s
                        for y in 0..<h {
                            let sy = y + ky - pad
                            let o = out + y * w
                            if sy < 0 || sy >= h || hi <= lo {
                                o.update(repeating: 0, count: w)
                                continue
                            }
                            let src = plane + sy * w + dx
                            for j in 0..<lo { o[j] = 0 }
                            (o + lo).update(from: src + lo, count: hi - lo)
                            for j in hi..<w { o[j] = 0 }
                        }
                    }
                }
            }
        }
    }

    public static func col2imAccumulate(_ col: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                        channels: Int, height h: Int, width w: Int, kernel k: Int, samples: Int) {
        let s = h * w, pad = k / 2, ld = samples * s
        for c in 0..<channels {
            for ky in 0..<k {
                for kx in 0..<k {
                    let row = col + ((c * k + ky) * k + kx) * ld
                    let ox = kx - pad
                    let lo = max(0, -ox), hi = min(w, w - ox)
                    if hi <= lo { continue }
                    for n in 0..<samples {
                        let plane = dx + (n * channels + c) * s
                        let src = row + n * s
                        for y in 0..<h {
                            let sy = y + ky - pad
                            if sy < 0 || sy >= h { continue }
                            let d = plane + sy * w + ox, g = src + y * w
                            for j in lo..<hi { d[j] += g[j] }
                        }
                    }
                }
            }
        }
    }

    public static func channelsToSamples(_ src: UnsafePointer<Self>, _ dst: UnsafeMutablePointer<Self>,
                                         bias: UnsafePointer<Self>?, channels: Int, spatial s: Int, samples: Int) {
        let ld = samples * s
        for n in 0..<samples {
            for c in 0..<channels {
                let from = src + c * ld + n * s, to = dst + (n * channels + c) * s
                if let bias {
                    let b = bias[c]
                    for p in 0..<s { to[p] = from[p] + b }
                } else {
                    to.update(from: from, count: s)
                }
            }
        }
    }

    public static func samplesToChannels(_ src: UnsafePointer<Self>, _ dst: UnsafeMutablePointer<Self>,
                                         channels: Int, spatial s: Int, samples: Int) {
        let ld = samples * s
        for n in 0..<samples {
            for c in 0..<channels {
                (dst + c * ld + n * s).update(from: src + (n * channels + c) * s, count: s)
            }
        }
    }

    public static func groupNormForward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>, _ beta: UnsafePointer<Self>,
                                        _ y: UnsafeMutablePointer<Self>, _ mean: UnsafeMutablePointer<Self>,
                                        _ rstd: UnsafeMutablePointer<Self>,
                                        rows: Int, channels: Int, spatial s: Int, groups: Int, eps: Self) {
        let cg = channels / groups, len = cg * s
        let invN = 1 / Self(len)
        for r in 0..<rows {
            for g in 0..<groups {
                let base = (r * channels + g * cg) * s
                let xg = x + base, yg = y + base
                let mu = vectorSum(xg, len) * invN
                let ss = vectorSumOfSquaredDeviations(xg, len, from: mu)
                let rs = 1 / (ss * invN + eps).squareRoot()
                mean[r * groups + g] = mu
                rstd[r * groups + g] = rs
                for cc in 0..<cg {
                    let c = g * cg + cc
                    let a = rs * gamma[c], b = beta[c] - mu * a
                    let xc = xg + cc * s, yc = yg + cc * s
                    for p in 0..<s { yc[p] = xc[p] * a + b }
                }
            }
        }
    }

    public static func groupNormBackward(_ x: UnsafePointer<Self>, _ gamma: UnsafePointer<Self>,
                                         _ mean: UnsafePointer<Self>, _ rstd: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                         _ dx: UnsafeMutablePointer<Self>?, _ dgamma: UnsafeMutablePointer<Self>?,
                                         _ dbeta: UnsafeMutablePointer<Self>?,
                                         rows: Int, channels: Int, spatial s: Int, groups: Int) {
        let cg = channels / groups
        let invN = 1 / Self(cg * s)
        for r in 0..<rows {
            for g in 0..<groups {
                let base = (r * channels + g * cg) * s
                let xg = x + base, dyg = dy + base
                let mu = mean[r * groups + g], rs = rstd[r * groups + g]
                // Per channel: sum dy and sum dy xhat. Then with dxhat = dy gamma,
                // dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) over the group.
                var sumD: Self = 0, sumDX: Self = 0
                for cc in 0..<cg {
                    let c = g * cg + cc
                    let xc = xg + cc * s, dyc = dyg + cc * s
                    let (sdy, sdyx) = vectorSumAndDot(dyc, xc, s)
                    // sum dy xhat = rstd (sum dy x - mu sum dy)
                    let sdyxhat = rs * (sdyx - mu * sdy)
                    if let dgamma { dgamma[c] += sdyxhat }
                    if let dbeta { dbeta[c] += sdy }
                    sumD += gamma[c] * sdy
                    sumDX += gamma[c] * sdyxhat
                }
                guard let dx else { continue }
                let mD = sumD * invN, mDX = sumDX * invN
                let dxg = dx + base
                // dx = rstd (gamma dy - mD - xhat mDX) = a dy + b x + c with xhat = (x - mu) rstd.
                let b = -rs * rs * mDX, c = -rs * mD - b * mu
                for cc in 0..<cg {
                    let a = rs * gamma[g * cg + cc]
                    let xc = xg + cc * s, dyc = dyg + cc * s, dxc = dxg + cc * s
                    for p in 0..<s { dxc[p] += a * dyc[p] + b * xc[p] + c }
                }
            }
        }
    }

    public static func avgPool2x2Forward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                         planes: Int, height h: Int, width w: Int) {
        let ho = h / 2, wo = w / 2
        for pl in 0..<planes {
            let xp = x + pl * h * w, yp = y + pl * ho * wo
            for i in 0..<ho {
                let r0 = xp + 2 * i * w, r1 = r0 + w, yr = yp + i * wo
                for j in 0..<wo {
                    yr[j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * 0.25
                }
            }
        }
    }

    public static func avgPool2x2Backward(_ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                          planes: Int, height h: Int, width w: Int) {
        let ho = h / 2, wo = w / 2
        for pl in 0..<planes {
            let dxp = dx + pl * h * w, dyp = dy + pl * ho * wo
            for i in 0..<ho {
                let r0 = dxp + 2 * i * w, r1 = r0 + w, dyr = dyp + i * wo
                for j in 0..<wo {
                    let g = dyr[j] * 0.25
                    r0[2 * j] += g; r0[2 * j + 1] += g
                    r1[2 * j] += g; r1[2 * j + 1] += g
                }
            }
        }
    }

    public static func upsample2xForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>,
                                         planes: Int, height h: Int, width w: Int) {
        let wo = 2 * w
        for pl in 0..<planes {
            let xp = x + pl * h * w, yp = y + pl * 4 * h * w
            for i in 0..<h {
                let xr = xp + i * w, r0 = yp + 2 * i * wo
                for j in 0..<w {
                    let v = xr[j]
                    r0[2 * j] = v; r0[2 * j + 1] = v
                }
                (r0 + wo).update(from: r0, count: wo)
            }
        }
    }

    public static func upsample2xBackward(_ dy: UnsafePointer<Self>, _ dx: UnsafeMutablePointer<Self>,
                                          planes: Int, height h: Int, width w: Int) {
        let wo = 2 * w
        for pl in 0..<planes {
            let dxp = dx + pl * h * w, dyp = dy + pl * 4 * h * w
            for i in 0..<h {
                let r0 = dyp + 2 * i * wo, r1 = r0 + wo, dxr = dxp + i * w
                for j in 0..<w {
                    dxr[j] += r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]
                }
            }
        }
    }

    public static func addRowScalars(_ x: UnsafePointer<Self>, _ s: UnsafePointer<Self>, alpha: Self,
                                     _ y: UnsafeMutablePointer<Self>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let v = alpha * s[r], xr = x + r * cols, yr = y + r * cols
            for j in 0..<cols { yr[j] = xr[j] + v }
        }
    }

    public static func accumulateRowSums(_ x: UnsafePointer<Self>, _ s: UnsafeMutablePointer<Self>, alpha: Self,
                                         rows: Int, cols: Int) {
        for r in 0..<rows { s[r] += alpha * vectorSum(x + r * cols, cols) }
    }

    public static func sigmoidForward(_ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { y[i] = 1 / (1 + Self.exp(-x[i])) }
    }

    public static func sigmoidBackward(_ y: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                       _ dx: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { dx[i] += dy[i] * y[i] * (1 - y[i]) }
    }

    // No direct convolution by default (Double: the gradient checks run the im2col path);
    // Float's is in DirectConvolution.swift.
    public static var hasDirectConv3x3: Bool { false }
    public static func directConv3x3Workspace(input: ImageShape, outChannels: Int, samples: Int) -> Int { 0 }
    public static func directConv3x3Forward(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>, bias: UnsafePointer<Self>?,
                                            _ y: UnsafeMutablePointer<Self>, input: ImageShape, outChannels: Int, samples: Int,
                                            workspace: UnsafeMutablePointer<Self>) {
        preconditionFailure("no direct 3x3 convolution for \(Self.self)")
    }
    public static func directConv3x3Backward(_ x: UnsafePointer<Self>, _ w: UnsafePointer<Self>, _ dy: UnsafePointer<Self>,
                                             dx: UnsafeMutablePointer<Self>?, dw: UnsafeMutablePointer<Self>?,
                                             input: ImageShape, outChannels: Int, samples: Int,
                                             workspace: UnsafeMutablePointer<Self>) {
        preconditionFailure("no direct 3x3 convolution for \(Self.self)")
    }
}

// Declared here, beside the generic bodies, so the witnesses are specialised in this file even
// without whole-module optimisation (debug builds).
extension Float: ImageKernels {}
extension Double: ImageKernels {}
