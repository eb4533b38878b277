import TensorCore
#if canImport(Glibc)
import Glibc
#endif

/// EDM (Karras et al. 2022) preconditioning, training noise distribution and sampling grid,
/// as SPEC "Conventions" states them.
public struct EDMSchedule: Codable, Sendable, Equatable {
    /// `sd` in SPEC: the assumed standard deviation of the data.
    public var sigmaData: Double = 0.5
    /// Training sigmas are `exp(pMean + pStd N(0, 1))`.
    public var pMean: Double = -1.2
    public var pStd: Double = 1.2
    /// Sampling range and grid curvature.
    public var sigmaMin: Double = 0.002
    public var sigmaMax: Double = 80
    public var rho: Double = 7

    public init() {}

    public func cSkip(_ sigma: Double) -> Double { sigmaData * sigmaData / (sigma * sigma + sigmaData * sigmaData) }
    public func cOut(_ sigma: Double) -> Double { sigma * sigmaData / (sigma * sigma + sigmaData * sigmaData).squareRoot() }
    public func cIn(_ sigma: Double) -> Double { 1 / (sigma * sigma + sigmaData * sigmaData).squareRoot() }
    public func cNoise(_ sigma: Double) -> Double { Glibc.log(sigma) / 4 }
    /// `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`.
    public func lossWeight(_ sigma: Double) -> Double {
        (sigma * sigma + sigmaData * sigmaData) / ((sigma * sigmaData) * (sigma * sigmaData))
    }

    /// A training sigma from the log-normal.
    public func sampleSigma(_ rng: inout CounterRNG) -> Double {
        Glibc.exp(pMean + pStd * rng.normal())
    }

    /// A training sigma from the log-normal conditioned on `sigma > lowerBound` (SPEC O2: the
    /// "rejection from the log-normal"). Drawn by inverting the upper tail of the normal CDF,
    /// which gives exactly the distribution of rejection sampling in one bounded step, even
    /// when the bound is far in the tail (an annotated sigma_min near sigma_max).
    public func sampleSigma(above lowerBound: Double, _ rng: inout CounterRNG) -> Double {
        guard lowerBound > 0 else { return sampleSigma(&rng) }
        let a = (Glibc.log(lowerBound) - pMean) / pStd
        let tail = NormalDistribution.upperTail(a)          // P(N > a)
        if tail < 1e-300 { return lowerBound }
        let p = tail * rng.uniform()                          // uniform in (0, tail]
        let z = NormalDistribution.upperTailQuantile(p)       // P(N > z) = p, so z >= a
        return max(lowerBound, Glibc.exp(pMean + pStd * z))
    }

    /// A training sigma from the log-normal conditioned on `lowerBound < sigma <= upperBound`
    /// (SPEC O5 crops: an out-of-distribution sample is used as clean only up to its sigma_max),
    /// by inverting the normal CDF between the two tails like `sampleSigma(above:)`.
    public func sampleSigma(above lowerBound: Double, below upperBound: Double, _ rng: inout CounterRNG) -> Double {
        guard upperBound.isFinite else { return sampleSigma(above: lowerBound, &rng) }
        precondition(upperBound > lowerBound, "empty sigma range (\(lowerBound), \(upperBound)]")
        let a = lowerBound > 0 ? NormalDistribution.upperTail((Glibc.log(lowerBound) - pMean) / pStd) : 1   // P(N > a)
        let b = NormalDistribution.upperTail((Glibc.log(upperBound) - pMean) / pStd)                       // P(N > b)
        let u = rng.uniform()
        if a - b < 1e-300 { return upperBound }
        let p = b + (a - b) * u                                // in (b, a]
        let z = NormalDistribution.upperTailQuantile(min(p, 1 - 1e-16))
        return min(upperBound, max(lowerBound, Glibc.exp(pMean + pStd * z)))
    }

    /// The EDM sampling grid `sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho`,
    /// i = 0..<N, descending, with `sigmaMin` replaced by `stop` when given.
    public func samplingGrid(steps n: Int, from top: Double? = nil, stop: Double? = nil) -> [Double] {
        precondition(n >= 2, "the sampler needs at least 2 noise levels")
        let hi = top ?? sigmaMax, lo = stop ?? sigmaMin
        let a = Glibc.pow(hi, 1 / rho), b = Glibc.pow(lo, 1 / rho)
        return (0..<n).map { i in Glibc.pow(a + Double(i) / Double(n - 1) * (b - a), rho) }
    }
}

/// The standard normal distribution's tail and quantile, accurate in the far tails.
public enum NormalDistribution {
    /// `P(N > x)`.
    public static func upperTail(_ x: Double) -> Double { 0.5 * erfc(x / 2.0.squareRoot()) }

    /// The z with `P(N > z) = p`, 0 < p < 1: Acklam's rational approximation (relative error
    /// about 1e-9) refined by one Halley step on `erfc`.
    public static func upperTailQuantile(_ p: Double) -> Double {
        precondition(p > 0 && p < 1, "tail probability \(p) outside (0, 1)")
        // Quantile of the lower tail at q = 1 - p, computed without forming 1 - p when p is small.
        let z = -lowerQuantileApprox(p)   // Phi^{-1}(1 - p) = -Phi^{-1}(p)
        // Halley refinement on f(z) = upperTail(z) - p.
        let e = upperTail(z) - p
        let u = -e * (2 * Double.pi).squareRoot() * Glibc.exp(z * z / 2)   // -e / phi(z), sign for upper tail
        return z - u / (1 + z * u / 2)
    }

    /// Acklam's approximation of `Phi^{-1}(p)`.
    static func lowerQuantileApprox(_ p: Double) -> Double {
        let a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00]
        let b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                 6.680131188771972e+01, -1.328068155288572e+01]
        let c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                 -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00]
        let d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
        let pLow = 0.02425
        if p < pLow {
            let q = (-2 * Glibc.log(p)).squareRoot()
            return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        } else if p <= 1 - pLow {
            let q = p - 0.5, r = q * q
            return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
                (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        } else {
            let q = (-2 * Glibc.log(1 - p)).squareRoot()
            return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        }
    }
}
