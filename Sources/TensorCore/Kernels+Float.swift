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
