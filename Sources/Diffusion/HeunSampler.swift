import TensorCore

/// The EDM deterministic Heun sampler (Karras et al. 2022, Algorithm 1 without churn).
///
/// From `x = sigma_0 z` it integrates `dx/dsigma = (x - D(x, sigma)) / sigma` along the grid
/// with Heun steps and a final Euler step to 0. With `stop` set (models trained with O2 alone,
/// which never saw sigma < b sigma_n) the grid ends at `stop` and the result is the one-step
/// denoised `D(x, stop)`, as the authors' evaluation does (SPEC, Sampling).
///
/// With `clip` set, every denoised estimate is clamped to that range before it is used (the
/// data range, [-1, 1] for images), as DDPM's sampler clips its predicted x0 (Ho et al. 2020,
/// `clip_denoised`, and as the ambient sampler of Daras et al. 2023 does: ambient-diffusion
/// eval.py:43,97-98, whose "soft" clipping divides by max(1, the 0.99th percentile of |D|), in
/// effect a clamp to [-1, 1]). `ambient sample` and `ambient eval` clamp image data by default;
/// the sampler itself does not (EDM does not clip). It changes samples only where D leaves the
/// data range.
public struct HeunSampler: Sendable {
    public var steps: Int
    /// Lowest noise level to integrate to (nil: the schedule's sigma_min, then to 0).
    public var stop: Double?
    /// Range every D(x, sigma) is clamped to (nil: no clamping).
    public var clip: ClosedRange<Float>?

    public init(steps: Int = 32, stop: Double? = nil, clip: ClosedRange<Float>? = nil) {
        self.steps = steps
        self.stop = stop
        self.clip = clip
    }

    /// The range `--clip-denoised` uses for image data, which Ambient scales to [-1, 1].
    public static let imageRange: ClosedRange<Float> = -1...1

    /// The clamp range of `ambient sample` and `ambient eval`: `imageRange` for image data
    /// unless `requested` is false (`--no-clip-denoised`), none for vectors (whose range Ambient
    /// does not know; asking for it there is an error).
    public static func imageClip(requested: Bool?, imageData: Bool, run: String) throws -> ClosedRange<Float>? {
        if requested == true && !imageData { throw ClipRangeUnknown(run: run) }
        return imageData && requested != false ? imageRange : nil
    }

    public struct ClipRangeUnknown: Error, CustomStringConvertible {
        public let run: String
        public var description: String {
            "--clip-denoised clamps to the image range [-1, 1]; run \(run) was trained on vectors, whose range Ambient does not know"
        }
    }

    /// Integrates `x` (rows x d, modified in place) from `grid[0]` down the grid, with
    /// `denoise(x, sigma, out)` writing `D(x, sigma)` for all rows into `out`.
    public func integrate<T: Scalar>(x: UnsafeMutablePointer<T>, rows: Int, dimension d: Int, grid: [Double],
                                     denoise rawDenoise: (UnsafePointer<T>, Double, UnsafeMutablePointer<T>) -> Void) {
        let n = rows * d
        let den = UnsafeMutablePointer<T>.allocate(capacity: n); defer { den.deallocate() }
        let slope = UnsafeMutablePointer<T>.allocate(capacity: n); defer { slope.deallocate() }
        let next = UnsafeMutablePointer<T>.allocate(capacity: n); defer { next.deallocate() }
        let levels = stop == nil ? grid + [0] : grid
        let bounds = clip.map { (T($0.lowerBound), T($0.upperBound)) }
        func denoise(_ at: UnsafePointer<T>, _ s: Double, _ out: UnsafeMutablePointer<T>) {
            rawDenoise(at, s, out)
            if let (lo, hi) = bounds {
                for j in 0..<n { out[j] = min(max(out[j], lo), hi) }
            }
        }
        for i in 0..<(levels.count - 1) {
            let (s, sNext) = (levels[i], levels[i + 1])
            denoise(x, s, den)
            let h = T(sNext - s), inv = T(1 / s)
            for j in 0..<n { slope[j] = (x[j] - den[j]) * inv }
            for j in 0..<n { next[j] = x[j] + h * slope[j] }
            if sNext > 0 {
                denoise(next, sNext, den)
                let invNext = T(1 / sNext), half = h / 2
                for j in 0..<n { next[j] = x[j] + half * (slope[j] + (next[j] - den[j]) * invNext) }
            }
            x.update(from: next, count: n)
        }
        if let stop {
            denoise(x, stop, den)
            x.update(from: den, count: n)
        }
    }

    /// `integrate` with the network denoiser (inference tape, no gradients).
    public func integrate<T: Scalar>(_ denoiser: Denoiser, _ store: ParameterStore<T>, tape: Tape<T>,
                                     x: UnsafeMutablePointer<T>, rows: Int, grid: [Double],
                                     conditioning: UnsafePointer<T>? = nil) {
        var sig = [Double](repeating: 0, count: rows)
        integrate(x: x, rows: rows, dimension: denoiser.dimension, grid: grid) { at, s, out in
            for r in 0..<rows { sig[r] = s }
            sig.withUnsafeBufferPointer {
                denoiser.evaluate(tape, store, x: at, rows: rows, sigma: $0.baseAddress!, conditioning: conditioning, into: out)
            }
        }
    }

    /// `count` samples, generated in batches of `batchSize`; sample i starts from the noise
    /// keyed by (seed, sampling, sample i), so any sample can be regenerated alone.
    ///
    /// With `maskKeep` (a model trained with SPEC O3) this is the fixed-mask sampler: sample i
    /// draws one mask `Atil ~ Bern(maskKeep)` (`FurtherCorruption.samplingMask`) and every step
    /// uses `D(Atil x, Atil, sigma)` in place of `E[x0 | x]`.
    public func sample(_ denoiser: Denoiser, _ store: ParameterStore<Float>, count: Int, seed: UInt64,
                       batchSize: Int = 256, maskKeep: Double? = nil, progress: ((Int) -> Void)? = nil) -> Tensor<Float> {
        let d = denoiser.dimension
        let grid = denoiser.schedule.samplingGrid(steps: steps, stop: stop)
        var out = [Float](repeating: 0, count: count * d)
        out.withUnsafeMutableBufferPointer { buf in
            for i in 0..<count {
                var rng = CounterRNG(seed: seed, purpose: .sampling, sample: i)
                for j in 0..<d { buf[i * d + j] = Float(grid[0] * rng.normal()) }
            }
        }
        run(denoiser, store, x: &out, count: count, grid: grid, seed: seed, batchSize: batchSize, maskKeep: maskKeep, progress: progress)
        return Tensor(shape: [count, d], storage: out)
    }

    /// Posterior sampling from noisy observations (the "noising attack" of Daras et al. 2024,
    /// section 3.3): each row of `observations` (N, d) is taken as `x` at `sigma` and
    /// integrated down from there. When the model's floor (`stop`) is at or above sigma, the
    /// result is the one-step denoised `D(x_obs, sigma)`.
    public func posterior(_ denoiser: Denoiser, _ store: ParameterStore<Float>, observations: Tensor<Float>, sigma: Double,
                          seed: UInt64 = 0, batchSize: Int = 256, maskKeep: Double? = nil,
                          progress: ((Int) -> Void)? = nil) -> Tensor<Float> {
        precondition(observations.rowSize == denoiser.dimension && sigma > 0)
        var out = observations.storage
        if let stop, stop >= sigma {
            HeunSampler(steps: 2, stop: sigma, clip: clip).run(denoiser, store, x: &out, count: observations.rows, grid: [sigma], seed: seed,
                                                   batchSize: batchSize, maskKeep: maskKeep, progress: progress)
        } else {
            let grid = denoiser.schedule.samplingGrid(steps: steps, from: sigma, stop: stop)
            run(denoiser, store, x: &out, count: observations.rows, grid: grid, seed: seed, batchSize: batchSize, maskKeep: maskKeep, progress: progress)
        }
        return Tensor(shape: observations.shape, storage: out)
    }

    /// Integrates every row of `x` (count, d) along `grid`, in batches.
    func run(_ denoiser: Denoiser, _ store: ParameterStore<Float>, x: inout [Float], count: Int, grid: [Double], seed: UInt64,
             batchSize: Int, maskKeep: Double?, progress: ((Int) -> Void)?) {
        let d = denoiser.dimension
        let tape = Tape<Float>(recordsGradients: false)
        var masks = [Float](repeating: 0, count: maskKeep == nil ? 0 : batchSize * d)
        var masked = masks
        var sig = [Double](repeating: 0, count: batchSize)
        var start = 0
        while start < count {
            let rows = min(batchSize, count - start)
            x.withUnsafeMutableBufferPointer { buf in
                let xb = buf.baseAddress! + start * d
                guard let keep = maskKeep else {
                    integrate(denoiser, store, tape: tape, x: xb, rows: rows, grid: grid)
                    return
                }
                masks.withUnsafeMutableBufferPointer { mp in masked.withUnsafeMutableBufferPointer { xm in
                    for r in 0..<rows {
                        FurtherCorruption.samplingMask(sample: start + r, keep: keep, seed: seed, into: mp.baseAddress! + r * d, count: d)
                    }
                    integrate(x: xb, rows: rows, dimension: d, grid: grid) { at, s, out in
                        Float.multiply(at, mp.baseAddress!, xm.baseAddress!, rows * d)   // Atil x
                        for r in 0..<rows { sig[r] = s }
                        sig.withUnsafeBufferPointer {
                            denoiser.evaluate(tape, store, x: xm.baseAddress!, rows: rows, sigma: $0.baseAddress!,
                                              conditioning: mp.baseAddress!, into: out)
                        }
                    }
                } }
            }
            start += rows
            progress?(start)
        }
    }
}
