import Datasets
import Diffusion
import Foundation
import TensorCore

/// How annotated training (SPEC O5) uses a corrupted sample above its sigma_min.
public enum AnnotatedRows: String, Sendable, Codable, CaseIterable {
    /// SPEC O5, the paper and the authors' latent code: the fixed noisy copy `w_i + sigma_min z_i`
    /// with the O2 loss at `sigma_n = sigma_min`.
    case noisyCopy = "noisy-copy"
    /// The authors' pixel code (giannisdaras/ambient-omni, pixel-diffusion/training/
    /// training_loop.py: a probability annotation is stored as `(first_confusion, 0.)` and the
    /// loss takes `sigma_tn = min` of the two, i.e. 0): the stored sample, un-noised, with the
    /// plain O1 loss, only at `sigma > b sigma_min`.
    case stored
}

/// The training set as the objectives consume it: one row per sample, flattened, plus the
/// noise level each row already carries.
public struct TrainingData: Sendable {
    /// (N, d), the data as stored: noisy where `sigmaN > 0`.
    public var samples: Tensor<Float>
    /// Per-sample noise level of `samples` (0 = clean).
    public var sigmaN: [Double]
    /// (channels, height, width) when the samples are images.
    public var imageShape: [Int]?
    /// For synthetic data: the generating mixture (the test oracle).
    public var mixture: GaussianMixture?
    /// (N, d) masks of masked data (1 observed, 0 missing; SPEC O3).
    public var masks: Tensor<Float>?
    /// Class labels, when the source has them.
    public var labels: [Int]?
    /// Membership of the trusted clean set S_G (SPEC O5), when the data says.
    public var clean: [Bool]?
    /// Per row: the highest training sigma of that row (infinity: none), for the rows that use
    /// an out-of-distribution sample as clean below its crops annotation sigma_max (SPEC O5
    /// crops); nil when no row has one.
    public var sigmaCeiling: [Double]?
    /// Per row: the level whose buffer `b sigma_floor` the row's training sigma must exceed,
    /// when that is not its `sigmaN`: annotated samples used as stored (`AnnotatedRows.stored`,
    /// the authors' pixel code) carry no added noise yet are trained only above `b sigma_min`.
    /// Nil: the floor is `sigmaN`.
    public var sigmaFloor: [Double]?
    public var summary: String

    public var count: Int { samples.rows }
    public var dimension: Int { samples.rowSize }

    public init(samples: Tensor<Float>, sigmaN: [Double], imageShape: [Int]? = nil,
                mixture: GaussianMixture? = nil, masks: Tensor<Float>? = nil, labels: [Int]? = nil,
                clean: [Bool]? = nil, sigmaCeiling: [Double]? = nil, sigmaFloor: [Double]? = nil, summary: String) {
        precondition(sigmaN.count == samples.rows, "one sigma_n per sample")
        precondition(sigmaFloor == nil || zip(sigmaFloor!, sigmaN).allSatisfy { $0 >= $1 }, "one sigma floor per sample, at least its sigma_n")
        self.sigmaFloor = sigmaFloor
        precondition(sigmaCeiling == nil || sigmaCeiling!.count == samples.rows, "one sigma ceiling per sample")
        self.sigmaCeiling = sigmaCeiling
        precondition(masks == nil || masks!.count == samples.count, "masks must have the samples' shape")
        self.samples = samples
        self.sigmaN = sigmaN
        self.imageShape = imageShape
        self.mixture = mixture
        self.masks = masks
        self.labels = labels
        self.clean = clean
        self.summary = summary
    }

    /// SPEC, Sampling: the lowest level O2 trains at on this data, `b min sigma_n`, or nil when
    /// some sample is clean (O1 covers every level for it).
    public func samplingFloor(buffer: Double) -> Double? {
        guard let lowest = (sigmaFloor ?? sigmaN).min(), lowest > 0 else { return nil }
        return buffer * lowest
    }

    /// The mean of the masks: the observed fraction (1 - p) of masked data.
    public var observedFraction: Double? {
        masks.map { m in m.storage.reduce(0.0) { $0 + Double($1) } / Double(max(m.count, 1)) }
    }

    /// Training data from a dataset directory. With `applyAnnotations` (O2-based training),
    /// a sample annotated at sigma_min a_i (SPEC O5) becomes its fixed noisy copy
    /// `w_i + a_i z_i` (z_i keyed by its dataset index, stream 3) and is used at
    /// `sigma_n = sqrt(n_i^2 + a_i^2)`, n_i the noise it already carries (noise.npy, else 0);
    /// clean samples (a_i = 0) keep sigma_n = n_i. With `annotatedRows: .stored` (the
    /// authors' pixel code) the sample stays as stored, at sigma_n = n_i, and only its floor
    /// `sqrt(n_i^2 + a_i^2)` keeps it above `b sigma_min` (`sigmaFloor`).
    ///
    /// With a crops annotation (sigma-max.npy, SPEC O5 crops) a non-clean sample i with
    /// sigma_max_i > 0 and no noise of its own also gets a row of its stored, un-noised sample
    /// trained only at `sigma <= sigma_max_i` (O1 inside O2, `sigmaCeiling`); its O2 row above
    /// sigma_min stays when it has a sigma_min annotation below sigma_max of the manifest. The
    /// levels in between are not trained on it: the donut of Ambient-Omni Section 3.2. Rows are
    /// in dataset order, the low-noise row before the O2 row of the same sample.
    public static func fromDirectory(_ c: DatasetDirectory.Contents, path: String, seed: UInt64,
                                     applyAnnotations: Bool, annotatedRows: AnnotatedRows = .noisyCopy) throws -> TrainingData {
        let n = c.count
        let shape = Array(c.samples.shape.dropFirst())
        var samples = c.samples.reshaped([n, c.samples.rowSize])
        let noise = c.noise ?? [Double](repeating: 0, count: n)
        var sigmaN = noise
        var summary = "dataset \(path): \(n) samples of shape \(shape) from \(c.manifest.source)" +
            (c.manifest.corruption.map { ", corruption \($0)" } ?? "")
        var keep = Array(0..<n)
        var floor: [Double]? = nil
        if applyAnnotations, let a = c.annotations {
            // The classifier saw the stored sample (with whatever noise it carries) plus a_i z:
            // that is the fixed noisy copy, at total level sqrt(n_i^2 + a_i^2).
            let level = (0..<n).map { (a[$0] * a[$0] + noise[$0] * noise[$0]).squareRoot() }
            switch annotatedRows {
            case .noisyCopy:
                samples = GaussianCorruption.apply(samples, sigmas: a, seed: seed, stream: 3)
                sigmaN = level
            case .stored:
                floor = level
            }
            // Samples that never crossed (sigma_max) are unused (SPEC O5): drop them rather
            // than train O2 at sigma > b sigma_max.
            keep = (0..<n).filter { a[$0] < c.manifest.sigmaMax }
            let used = keep.map { a[$0] }.filter { $0 > 0 }
            summary += ", annotated (\(keep.count - used.count) clean, \(used.count) at their sigma_min, median \(used.isEmpty ? 0 : median(used)), \(n - keep.count) at sigma_max dropped" +
                (annotatedRows == .stored ? "; used as stored above b sigma_min)" : ")")
        }
        var ceiling: [Double]? = nil
        if applyAnnotations, let smax = c.sigmaMax {
            // Rows: (dataset index, use the stored sample below sigma_max?). Clean samples: the
            // annotation says 0, or without annotations, clean.npy does.
            let stored = c.samples.reshaped([n, c.samples.rowSize])
            let isClean = { (i: Int) in c.annotations.map { $0[i] == 0 } ?? (c.clean?[i] ?? false) }
            var rows: [(index: Int, low: Bool)] = []
            for i in 0..<n {
                if isClean(i) { rows.append((i, false)); continue }
                if smax[i] > 0 && noise[i] == 0 { rows.append((i, true)) }
                if let a = c.annotations, a[i] < c.manifest.sigmaMax { rows.append((i, false)) }
            }
            let lowLevels = rows.filter { $0.low }.map { smax[$0.index] }
            summary += ", crops annotation (\(lowLevels.count) samples used as clean below their sigma_max, median \(lowLevels.isEmpty ? 0 : median(lowLevels)))"
            var out = [Float](repeating: 0, count: rows.count * stored.rowSize)
            let d = stored.rowSize
            for (r, row) in rows.enumerated() {
                let src = row.low ? stored : samples
                for v in 0..<d { out[r * d + v] = src.storage[row.index * d + v] }
            }
            let origin = rows.map { $0.index }
            sigmaN = rows.map { $0.low ? 0 : sigmaN[$0.index] }
            floor = floor.map { f in rows.map { $0.low ? 0 : f[$0.index] } }
            ceiling = rows.map { $0.low ? smax[$0.index] : Double.infinity }
            samples = Tensor(shape: [rows.count, d], storage: out)
            keep = origin
        } else if keep.count < n {
            samples = samples.gather(rows: keep)
            sigmaN = keep.map { sigmaN[$0] }
            floor = floor.map { f in keep.map { f[$0] } }
        }
        // A synthetic source names its mixture: keep the oracle.
        var mixture: GaussianMixture? = nil
        if case let .gaussianMixture(g)? = try? DataSpec.parse(c.manifest.source) {
            mixture = try? g.mixture()
        }
        return TrainingData(samples: samples, sigmaN: sigmaN, imageShape: shape.count == 3 ? shape : nil, mixture: mixture,
                            masks: c.masks.map { $0.reshaped([n, $0.rowSize]).gather(rows: keep) },
                            labels: c.labels.map { l in keep.map { l[$0] } }, clean: c.clean.map { f in keep.map { f[$0] } },
                            sigmaCeiling: ceiling, sigmaFloor: floor, summary: summary)
    }

    /// Loads and validates the data of `config` and applies its simulated corruption.
    /// Throws (before anything is written) on missing, truncated or non-finite data.
    public static func load(_ config: RunConfig) throws -> TrainingData {
        var samples: Tensor<Float>
        var imageShape: [Int]? = nil
        var mixture: GaussianMixture? = nil
        var summary: String
        var labels: [Int]? = nil
        switch config.data {
        case .fashionMNIST:
            let set = try FashionMNIST.load(split: .train)
            imageShape = Array(set.images.shape.dropFirst())
            samples = set.images.reshaped([set.images.rows, set.images.rowSize])
            labels = set.labels
            summary = "Fashion-MNIST train, \(samples.rows) images 28x28 in [-1, 1]"
        case let .gaussianMixture(spec):
            let gmm = try spec.mixture()
            let drawn = gmm.sample(count: spec.count, seed: spec.seed)
            samples = drawn.x
            labels = drawn.components
            mixture = gmm
            summary = "Gaussian mixture, \(spec.count) samples, d=\(spec.dimension), \(spec.components) components, std \(spec.std)"
        case let .npy(path):
            let t = try NPY.readFloat(path)
            switch t.rank {
            case 2: break
            case 4 where t.shape[1] >= 1: imageShape = Array(t.shape.dropFirst())
            default:
                throw TrainingError("\(path): expected shape (N, d) or (N, C, H, W), found \(t.shape)")
            }
            guard t.rows >= 1, t.rowSize >= 1 else { throw TrainingError("\(path): no samples (shape \(t.shape))") }
            samples = t.reshaped([t.rows, t.rowSize])
            summary = "\(path): \(t.rows) samples of shape \(Array(t.shape.dropFirst()))"
        case let .directory(path):
            if config.dataSigma != nil || config.corruption != nil {
                throw TrainingError("--data \(path) is a dataset directory: its noise levels and corruption are in the directory; drop --data-sigma / --corrupt")
            }
            let contents = try DatasetDirectory(path: path).read()
            // Annotations are how O2 uses the data (SPEC O5); other objectives see the samples as stored.
            let usesAnnotations = [.ambient, .consistency].contains(config.objective)
            return try fromDirectory(contents, path: path, seed: config.seed, applyAnnotations: usesAnnotations,
                                     annotatedRows: config.annotatedRows ?? .noisyCopy)
        }
        try validateFinite(samples, name: config.data.description)

        var sigmaN = [Double](repeating: 0, count: samples.rows)
        if let s = config.dataSigma {
            sigmaN = [Double](repeating: s, count: samples.rows)
            summary += ", declared noisy at sigma_n = \(s)"
        }
        var masks: Tensor<Float>? = nil
        if let corruption = config.corruption {
            if case .outOfDistribution = corruption {
                throw TrainingError("--corrupt \(corruption) chooses which samples make up the data: build such a dataset with `ambient dataset make` and train on its directory")
            }
            let c = try corruption.apply(samples, imageShape: imageShape, seed: config.seed)
            samples = c.samples
            masks = c.masks
            if let s = c.noiseSigma { sigmaN = s }
            summary += ", corrupted by \(corruption) (fixed per sample)"
        }
        return TrainingData(samples: samples, sigmaN: sigmaN, imageShape: imageShape, mixture: mixture, masks: masks,
                            labels: labels, summary: summary)
    }
}

