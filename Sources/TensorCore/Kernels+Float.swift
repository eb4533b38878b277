import CKernels

/// Float versions of the memory-bound optimiser loops, written with explicit SIMD vectors.
///
/// The generic bodies in Kernels.swift do not vectorise: the compiler cannot prove the four
/// pointers do not alias. Measured on the reference MLP (10M parameters, one core): Adam went
/// from 9.8% of a training step to (see docs/benchmarks.md). The results are identical to the
/// generic bodies element for element (same operations in the same order per element);
/// `KernelTests` checks that bit for bit.
extension Float {
    public static func adamUpdate(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                  _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                                  beta1 b1: Float, beta2 b2: Float, stepSize: Float, invSqrtC2: Float, eps: Float) {
        typealias V = SIMD16<Float>
        let ob1 = 1 - b1, ob2 = 1 - b2
        let vb1 = V(repeating: b1), vb2 = V(repeating: b2), vob1 = V(repeating: ob1), vob2 = V(repeating: ob2)
        let vstep = V(repeating: stepSize), vinv = V(repeating: invSqrtC2), veps = V(repeating: eps)
        var i = 0
        let rp = UnsafeMutableRawPointer(p), rg = UnsafeRawPointer(g), rm = UnsafeMutableRawPointer(m), rv = UnsafeMutableRawPointer(v)
        let w = MemoryLayout<V>.size
        while i + 16 <= n {
            let o = i * 4
            let gi = rg.loadUnaligned(fromByteOffset: o, as: V.self)
            let mi = vb1 * rm.loadUnaligned(fromByteOffset: o, as: V.self) + vob1 * gi
            let vi = vb2 * rv.loadUnaligned(fromByteOffset: o, as: V.self) + vob2 * gi * gi
            rm.storeBytes(of: mi, toByteOffset: o, as: V.self)
            rv.storeBytes(of: vi, toByteOffset: o, as: V.self)
            let pi = rp.loadUnaligned(fromByteOffset: o, as: V.self) - vstep * mi / (vi.squareRoot() * vinv + veps)
            rp.storeBytes(of: pi, toByteOffset: o, as: V.self)
            i += 16
        }
        _ = w
        while i < n {
            let gi = g[i]
            let mi = b1 * m[i] + ob1 * gi
            let vi = b2 * v[i] + ob2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] -= stepSize * mi / (vi.squareRoot() * invSqrtC2 + eps)
            i += 1
        }
    }

    public static func emaUpdate(_ ema: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, decay d: Float, _ n: Int) {
        typealias V = SIMD16<Float>
        let od = 1 - d
        let vd = V(repeating: d), vod = V(repeating: od)
        let re = UnsafeMutableRawPointer(ema), rp = UnsafeRawPointer(p)
        var i = 0
        while i + 16 <= n {
            let o = i * 4
            let e = vd * re.loadUnaligned(fromByteOffset: o, as: V.self) + vod * rp.loadUnaligned(fromByteOffset: o, as: V.self)
            re.storeBytes(of: e, toByteOffset: o, as: V.self)
            i += 16
        }
        while i < n {
            ema[i] = d * ema[i] + od * p[i]
            i += 1
        }
    }

    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        typealias V = SIMD16<Float>
        let va = V(repeating: alpha)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 16 <= n {
            let o = i * 4
            ry.storeBytes(of: ry.loadUnaligned(fromByteOffset: o, as: V.self) + va * rx.loadUnaligned(fromByteOffset: o, as: V.self),
                          toByteOffset: o, as: V.self)
            i += 16
        }
        while i < n {
            y[i] += alpha * x[i]
            i += 1
        }
    }
}

/// Float-only fast paths of kernels whose generic bodies call `exp` once per element.
///
/// libm's `expf` is an opaque scalar call, which made SiLU cost twice its memory traffic.
/// These bodies inline Cephes' `expf` polynomial (relative error below 2e-7 on the clamped
/// range) as straight-line scalar code that LLVM vectorises (measured on 6.4 M elements:
/// 17.4 ms with expf, 8.7 ms inlined; written with Swift's SIMD8 conversions it took 113 ms).
/// Being members of `Float` itself, they are the witnesses of the `ScalarKernels` /
/// `ImageKernels` requirements for Float; Double (the gradient checks) keeps libm.
extension Float {
    /// `exp(x)` with x clamped to [-87.3, 88.3] (the normal range of Float).
    @inline(__always)
    static func fastExp(_ x: Float) -> Float {
        let xc = Swift.min(Swift.max(x, -87.3), 88.3)
        // n = round(x / ln 2) by adding 1.5 * 2^23, which also leaves n in the low mantissa
        // bits; r = x - n ln 2 in two parts (Cody-Waite).
        let magic: Float = 12_582_912
        let t = xc * 1.442_695_04 + magic
        let n = t - magic
        let r = xc - n * 0.693_359_375 + n * 2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * (r * r) + r + 1
        // 2^n from the exponent bits.
        let e = (Int32(bitPattern: t.bitPattern) &- Int32(bitPattern: magic.bitPattern) &+ 127) &<< 23
        return p * Float(bitPattern: UInt32(bitPattern: e))
    }

    /// The C kernel (8 wide with FMA, `Sources/CKernels/activations.c`) runs where the CPU has
    /// AVX2: Swift here is compiled for baseline x86-64, 4 wide without FMA.
    static let hasVectorSiLU = ambient_silu_available() != 0

    public static func siluForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        if hasVectorSiLU { return ambient_silu_forward(x, y, n) }
        for i in 0..<n { y[i] = x[i] / (1 + fastExp(-x[i])) }
    }

    public static func siluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        if hasVectorSiLU { return ambient_silu_backward(x, dy, dx, n) }
        for i in 0..<n {
            let v = x[i]
            let s = 1 / (1 + fastExp(-v))
            dx[i] += dy[i] * s * (1 + v * (1 - s))
        }
    }

    public static func sigmoidForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = 1 / (1 + fastExp(-x[i])) }
    }
}
