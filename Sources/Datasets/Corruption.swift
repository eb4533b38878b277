import Foundation
import TensorCore

/// Simulated Gaussian corruption of a clean dataset: `x_n = x0 + sigma_n z` (SPEC O2, O6).
///
/// The noise `z_i` of sample i is a function of (seed, i) only: it comes from
/// `CounterRNG(seed, .corruption, sample: i)`, where i is the sample's index in the whole
/// dataset. Corrupting a subset, a shard or a batch gives each sample the same noisy copy as
/// corrupting the full dataset: the noisy copy is drawn once and is the data.
public enum GaussianCorruption {
    /// `clean [N, ...]` plus `sigma z_i` on each row; row r is sample `sampleIndices[r]` of the
    /// dataset (default: row r is sample r).
    public static func apply(_ clean: Tensor<Float>, sigma: Double, seed: UInt64,
                             sampleIndices: [Int]? = nil, stream: Int = 0) -> Tensor<Float> {
        apply(clean, sigmas: [Double](repeating: sigma, count: clean.rows), seed: seed, sampleIndices: sampleIndices, stream: stream)
    }

    /// As `apply(_:sigma:seed:sampleIndices:)` with one noise level per row (SPEC O2 allows
    /// per-sample sigma_n; a row with sigma 0 stays clean).
    /// `stream` separates independent noise of the same sample (0: simulated data noise,
    /// 3: the annotated noisy copy of SPEC O5, 4: the fixed copy of the O6 split).
    public static func apply(_ clean: Tensor<Float>, sigmas: [Double], seed: UInt64,
                             sampleIndices: [Int]? = nil, stream: Int = 0) -> Tensor<Float> {
        let n = clean.rows, d = clean.rowSize
        precondition(sigmas.count == n, "\(sigmas.count) noise levels for \(n) samples")
        precondition(sampleIndices == nil || sampleIndices?.count == n, "sampleIndices must name every row")
        var out = clean
        for r in 0..<n {
            let sample = sampleIndices?[r] ?? r
            if sigmas[r] == 0 { continue }
            let z = noise(sample: sample, count: d, seed: seed, stream: stream)
            for j in 0..<d { out.storage[r * d + j] += Float(sigmas[r] * z[j]) }
        }
        return out
    }

    /// The unit-variance noise `z_i` of sample `sample`: `count` standard normals.
    public static func noise(sample: Int, count: Int, seed: UInt64, stream: Int = 0) -> [Double] {
        var rng = CounterRNG(seed: seed, purpose: .corruption, step: stream, sample: sample)
        return (0..<count).map { _ in rng.normal() }
    }
}

/// A corruption of clean data (SPEC O2, O3, O5), fixed per sample: every random choice of
/// sample i comes from `CounterRNG(seed, .corruption, step: stream, sample: i)` with i the
/// sample's index in the whole dataset, so a subset, a shard or a batch sees the same corrupted
/// copy. Streams: 0 Gaussian noise (`GaussianCorruption`), 1 pixel masks, 2 boxes, 3 the
/// annotated noisy copy (SPEC O5), 4 the split's noisy copy (SPEC O6).
public enum CorruptionSpec: SpecStringCodable, Sendable, Equatable {
    /// Gaussian noise of standard deviation sigma_n (SPEC O2).
    case noise(Double)
    /// Pixel masks `A_ii ~ Bern(1 - p)`: each pixel is missing with probability p (SPEC O3).
    case pixelMask(Double)
    /// One missing square box of this side (pixels) per image, uniformly placed (SPEC O3).
    case box(Int)
    /// Gaussian blur with this kernel standard deviation in pixels (SPEC O5).
    case blur(Double)
    /// Out-of-distribution samples: the corrupted samples are images of these classes (SPEC O5).
    case outOfDistribution([Int])

    /// Every accepted form, for help texts and error messages.
    public static let forms = "noise:S (Gaussian noise of std S), mask:P (each pixel missing with probability P), " +
        "box:S (one missing SxS box per image), blur:S (Gaussian blur, kernel std S pixels), " +
        "ood:C+C+... (samples of other classes, e.g. ood:5+7)"

    /// Parses one of `forms`.
    public static func parse(_ s: String) throws -> CorruptionSpec {
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        func bad(_ why: String) -> DatasetError {
            .invalidArgument(what: "corruption '\(s)'", expected: why, found: "'\(s)'")
        }
        guard parts.count == 2 else { throw bad("KIND:VALUE, one of: \(forms)") }
        let value = parts[1]
        switch parts[0] {
        case "noise":
            guard let v = Double(value), v > 0, v.isFinite else { throw bad("noise:S with a noise level S > 0") }
            return .noise(v)
        case "mask":
            guard let v = Double(value), v >= 0, v < 1 else { throw bad("mask:P with a missing probability 0 <= P < 1") }
            return .pixelMask(v)
        case "box":
            guard let v = Int(value), v >= 1 else { throw bad("box:S with a box side S >= 1 pixels") }
            return .box(v)
        case "blur":
            guard let v = Double(value), v > 0, v.isFinite, v <= 64 else { throw bad("blur:S with a kernel std 0 < S <= 64 pixels") }
            return .blur(v)
        case "ood":
            let classes = value.split(separator: "+").map { Int($0) }
            guard !classes.isEmpty, classes.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw bad("ood:C+C+... with class labels C >= 0")
            }
            return .outOfDistribution(classes.map { $0! })
        default:
            throw bad("one of: \(forms)")
        }
    }

    public var description: String {
        switch self {
        case let .noise(s): return "noise:\(s)"
        case let .pixelMask(p): return "mask:\(p)"
        case let .box(s): return "box:\(s)"
        case let .blur(s): return "blur:\(s)"
        case let .outOfDistribution(c): return "ood:" + c.map(String.init).joined(separator: "+")
        }
    }

    // Encoded as its spec string ("noise:0.5"), as written on the command line and in run
    // configuration files. Decoding also reads the synthesized form of earlier versions
    // (`{"noise": {"_0": 0.5}}`), so the config.json of older run directories still loads.

    public static func decodeLegacy(from decoder: Decoder) throws -> CorruptionSpec {
        try LegacyCorruptionSpec(from: decoder).spec
    }

    /// The corruption applied to `clean` [N, ...]: row r is dataset sample `sampleIndices[r]`
    /// (default r). Masked pixels are set to 0 (the masked value the objective never reads).
    /// `imageShape` (C, H, W) is needed by boxes and blur. Out-of-distribution data is chosen
    /// when the dataset is assembled, so here it leaves the rows unchanged.
    public func apply(_ clean: Tensor<Float>, imageShape: [Int]?, seed: UInt64,
                      sampleIndices: [Int]? = nil) throws -> CorruptedSamples {
        let n = clean.rows, d = clean.rowSize
        func index(_ r: Int) -> Int { sampleIndices?[r] ?? r }
        func needImage() throws -> (c: Int, h: Int, w: Int) {
            guard let s = imageShape, s.count == 3, s.reduce(1, *) == d else {
                throw DatasetError.invalidArgument(what: "corruption \(self)", expected: "image data (N, C, H, W)",
                                                   found: "samples of \(d) values without an image shape")
            }
            return (s[0], s[1], s[2])
        }
        switch self {
        case let .noise(s):
            return CorruptedSamples(samples: GaussianCorruption.apply(clean, sigma: s, seed: seed, sampleIndices: sampleIndices),
                                    masks: nil, noiseSigma: [Double](repeating: s, count: n))
        case let .pixelMask(p):
            var masks = Tensor<Float>(zeros: clean.shape)
            for r in 0..<n {
                var rng = CounterRNG(seed: seed, purpose: .corruption, step: 1, sample: index(r))
                for j in 0..<d { masks.storage[r * d + j] = rng.uniform() > p ? 1 : 0 }
            }
            return CorruptedSamples(samples: Self.multiply(clean, masks), masks: masks, noiseSigma: nil)
        case let .box(side):
            let (c, h, w) = try needImage()
            guard side <= min(h, w) else {
                throw DatasetError.invalidArgument(what: "corruption box:\(side)", expected: "a side <= \(min(h, w))", found: "\(side)")
            }
            var masks = Tensor<Float>(shape: clean.shape, repeating: 1)
            for r in 0..<n {
                var rng = CounterRNG(seed: seed, purpose: .corruption, step: 2, sample: index(r))
                let top = rng.int(below: h - side + 1), left = rng.int(below: w - side + 1)
                for ch in 0..<c { for y in top..<(top + side) { for x in left..<(left + side) {
                    masks.storage[r * d + ch * h * w + y * w + x] = 0
                } } }
            }
            return CorruptedSamples(samples: Self.multiply(clean, masks), masks: masks, noiseSigma: nil)
        case let .blur(std):
            let (c, h, w) = try needImage()
            return CorruptedSamples(samples: GaussianBlur(std: std).apply(clean, channels: c, height: h, width: w),
                                    masks: nil, noiseSigma: nil)
        case .outOfDistribution:
            return CorruptedSamples(samples: clean, masks: nil, noiseSigma: nil)
        }
    }

    static func multiply(_ a: Tensor<Float>, _ b: Tensor<Float>) -> Tensor<Float> {
        Tensor(shape: a.shape, storage: zip(a.storage, b.storage).map { $0 * $1 })
    }
}

/// The synthesized Codable form of `CorruptionSpec` before it was encoded as a string.
private struct LegacyCorruptionSpec: Decodable {
    let spec: CorruptionSpec
    private enum Case: String, CodingKey { case noise, pixelMask, box, blur, outOfDistribution }
    private enum Payload: String, CodingKey { case value = "_0" }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Case.self)
        guard let key = c.allKeys.first, c.allKeys.count == 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "expected a corruption spec such as \"noise:0.5\""))
        }
        let payload = try c.nestedContainer(keyedBy: Payload.self, forKey: key)
        switch key {
        case .noise: spec = .noise(try payload.decode(Double.self, forKey: .value))
        case .pixelMask: spec = .pixelMask(try payload.decode(Double.self, forKey: .value))
        case .box: spec = .box(try payload.decode(Int.self, forKey: .value))
        case .blur: spec = .blur(try payload.decode(Double.self, forKey: .value))
        case .outOfDistribution: spec = .outOfDistribution(try payload.decode([Int].self, forKey: .value))
        }
    }
}

/// What a corruption produced: the corrupted rows, the masks (1 observed, 0 missing) of masking
/// corruptions, and the noise level each row carries (noise corruption).
public struct CorruptedSamples: Sendable {
    public var samples: Tensor<Float>
    public var masks: Tensor<Float>?
    public var noiseSigma: [Double]?
}

/// A separable Gaussian blur with kernel `exp(-k^2 / (2 std^2))`, `|k| <= ceil(3 std)`,
/// normalised to sum 1, with edge pixels replicated beyond the border (so a constant image
/// stays constant).
public struct GaussianBlur: Sendable {
    public let std: Double
    public let kernel: [Float]

    public init(std: Double) {
        precondition(std > 0, "blur std must be positive")
        self.std = std
        let radius = Int((3 * std).rounded(.up))
        let raw = (-radius...radius).map { k in exp(-Double(k * k) / (2 * std * std)) }
        let total = raw.reduce(0, +)
        kernel = raw.map { Float($0 / total) }
    }

    /// Blurs every (H, W) plane of every row of `images` [N, C*H*W ...].
    public func apply(_ images: Tensor<Float>, channels c: Int, height h: Int, width w: Int) -> Tensor<Float> {
        let radius = kernel.count / 2
        var out = images
        var tmp = [Float](repeating: 0, count: h * w)
        let planes = images.rows * c
        for p in 0..<planes {
            let base = p * h * w
            for y in 0..<h { for x in 0..<w {
                var acc: Float = 0
                for k in -radius...radius { acc += kernel[k + radius] * images.storage[base + y * w + min(max(x + k, 0), w - 1)] }
                tmp[y * w + x] = acc
            } }
            for y in 0..<h { for x in 0..<w {
                var acc: Float = 0
                for k in -radius...radius { acc += kernel[k + radius] * tmp[min(max(y + k, 0), h - 1) * w + x] }
                out.storage[base + y * w + x] = acc
            } }
        }
        return out
    }
}
