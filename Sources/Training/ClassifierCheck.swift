import Datasets
import Diffusion
import Foundation
import TensorCore

/// Does a trained SPEC O5 classifier judge corruption, or recognise the images it was trained
/// on? (issue 15). Annotates, with the same annotator as `ambient annotate`, images it never
/// saw whose answer is known, beside the training images:
///
/// - unseen clean images must come out near 0 (below `cleanLimit`);
/// - unseen clean images with Gaussian noise of known level s must come out near s (within
///   `[s / noiseFactor, s noiseFactor]`: an optimal detector in d dimensions still sees
///   noise s up to about `s d^(1/4)`, and the smoothing lags, so "near" is a factor);
/// - unseen images with the dataset's own corruption, against its corrupted training images:
///   similar annotations mean the classifier judges the corruption, far higher ones for the
///   training images mean it learnt which images are corrupted.
///
/// The limits were fixed before any classifier was checked and are not tuned on results.
public struct ClassifierCheck: Sendable {
    public static let cleanLimit = 0.05
    public static let noiseLevels = [0.05, 0.2, 0.5]
    public static let noiseFactor = 5.0

    public struct Group: Codable, Sendable {
        public var name: String
        public var count: Int
        /// Quartiles and median of sigma_min, and the share that never crossed (sigma_max).
        public var lower: Double
        public var median: Double
        public var upper: Double
        public var neverCrossed: Double
        /// The allowed range of the median, when the group has a known answer.
        public var allowed: [Double]?
        public var passes: Bool? { allowed.map { median >= $0[0] && median <= $0[1] } }
    }

    public var annotator: Annotator
    public var seed: UInt64

    public init(annotator: Annotator, seed: UInt64) {
        self.annotator = annotator
        self.seed = seed
    }

    /// Checks `classifier` trained on `contents` (a dataset directory with clean flags) against
    /// `unseen` clean images (N, d) of the same source, never in the training data; `count`
    /// images per group.
    public func run(_ classifier: NoiseConditionedClassifier, _ store: ParameterStore<Float>, contents: DatasetDirectory.Contents,
                    unseen: Tensor<Float>, count: Int = 200) throws -> [Group] {
        let n = contents.count, d = contents.samples.rowSize
        let samples = contents.samples.reshaped([n, d])
        let clean = contents.clean ?? [Bool](repeating: false, count: n)
        let k = min(count, unseen.rows)
        let fresh = unseen.rows(0..<k)
        func group(_ name: String, _ x: Tensor<Float>, allowed: [Double]?) -> Group {
            let a = annotator.annotate(classifier, store, samples: x, indices: Array(0..<x.rows), seed: seed).sorted()
            let q = { (f: Double) in a[min(Int(f * Double(a.count)), a.count - 1)] }
            return Group(name: name, count: a.count, lower: q(0.25), median: q(0.5), upper: q(0.75),
                         neverCrossed: Double(a.filter { $0 >= annotator.sigmaMax }.count) / Double(a.count), allowed: allowed)
        }
        var groups: [Group] = []
        let corruptedRows = Array((0..<n).filter { !clean[$0] }.prefix(count))
        let cleanRows = Array((0..<n).filter { clean[$0] }.prefix(count))
        if !corruptedRows.isEmpty { groups.append(group("corrupted training images", samples.gather(rows: corruptedRows), allowed: nil)) }
        if let spec = contents.manifest.corruption, let c = try? CorruptionSpec.parse(spec),
           let shape = Optional(Array(contents.samples.shape.dropFirst())), shape.count == 3,
           let corrupted = try? c.apply(fresh.reshaped([k] + shape), imageShape: shape, seed: seed &+ 11) {
            groups.append(group("unseen images, corrupted as the data (\(spec))", corrupted.samples.reshaped([k, d]), allowed: nil))
        }
        if !cleanRows.isEmpty { groups.append(group("clean training images", samples.gather(rows: cleanRows), allowed: nil)) }
        groups.append(group("unseen clean images", fresh, allowed: [0, Self.cleanLimit]))
        for (i, s) in Self.noiseLevels.enumerated() {
            let noisy = GaussianCorruption.apply(fresh, sigma: s, seed: seed &+ 20 &+ UInt64(i))
            groups.append(group("unseen clean images + N(0, \(s)^2)", noisy, allowed: [s / Self.noiseFactor, s * Self.noiseFactor]))
        }
        return groups
    }

    /// The classifier's training loss on images it never saw: binary cross-entropy and accuracy
    /// of `c(w + sigma n, sigma)` over unseen clean images (label 1) and the same number of
    /// unseen corrupted ones (label 0), sigma and n drawn as in training from `seed`. A
    /// classifier that memorised its clean set scores low on its training batches and high
    /// here; held-out early stopping picks the training length where this is lowest.
    public struct HeldOut: Codable, Sendable {
        public var count: Int
        public var bce: Double
        public var accuracy: Double
    }

    /// First row of `unseen` the held-out loss uses: the groups use rows from 0, so choosing a
    /// training length by this loss does not select on the images the groups judge.
    public static let heldOutStart = 5000

    /// `heldOut` on `count` unseen images from row `heldOutStart` (fewer if `unseen` is
    /// shorter), clean and corrupted as the dataset's manifest says; nil when the manifest's
    /// corruption cannot be applied to them.
    public func heldOut(_ classifier: NoiseConditionedClassifier, _ store: ParameterStore<Float>, contents: DatasetDirectory.Contents,
                        unseen: Tensor<Float>, count: Int = 1000) -> HeldOut? {
        let start = min(Self.heldOutStart, unseen.rows / 2), k = min(count, unseen.rows - start)
        let shape = Array(contents.samples.shape.dropFirst())
        guard k > 0, shape.count == 3, let spec = contents.manifest.corruption, let c = try? CorruptionSpec.parse(spec) else { return nil }
        let clean = unseen.rows(start..<(start + k))
        guard let corrupted = try? c.apply(clean.reshaped([k] + shape), imageShape: shape, seed: seed &+ 31) else { return nil }
        return heldOut(classifier, store, clean: clean, corrupted: corrupted.samples.reshaped([k, clean.rowSize]))
    }

    public func heldOut(_ classifier: NoiseConditionedClassifier, _ store: ParameterStore<Float>, clean: Tensor<Float>,
                        corrupted: Tensor<Float>) -> HeldOut {
        let k = min(clean.rows, corrupted.rows), d = clean.rowSize
        precondition(k > 0 && corrupted.rowSize == d)
        let x = clean.rows(0..<k).storage + corrupted.rows(0..<k).storage
        let labels = [Float](repeating: 1, count: k) + [Float](repeating: 0, count: k)
        let zeros = [Double](repeating: 0, count: 2 * k)
        let tape = Tape<Float>(recordsGradients: false)
        let terms = x.withUnsafeBufferPointer { xp in zeros.withUnsafeBufferPointer { sp in labels.withUnsafeBufferPointer { lp in
            let batch = ShardBatch(data: xp.baseAddress!, rows: 2 * k, dimension: d, sigmaN: sp.baseAddress!,
                                   seed: seed &+ 30, step: 0, shard: 0, globalBatch: 2 * k)
            return classifier.loss(tape, store, batch: batch, labels: lp.baseAddress!).terms
        } } }
        return HeldOut(count: 2 * k, bce: terms["bce"] ?? .nan, accuracy: terms["accuracy"] ?? .nan)
    }

    /// A table of the groups, one line each, with PASS/FAIL where the answer is known.
    public static func table(_ groups: [Group]) -> String {
        var lines = ["group, count, sigma_min quartiles (25% / median / 75%), never crossed, allowed median, verdict"]
        for g in groups {
            let allowed = g.allowed.map { String(format: "[%.3g, %.3g]", $0[0], $0[1]) } ?? "-"
            let verdict = g.passes.map { $0 ? "PASS" : "FAIL" } ?? "-"
            let q = String(format: "%.4f / %.4f / %.4f, %.3f", g.lower, g.median, g.upper, g.neverCrossed)
            lines.append("  \(g.name): \(g.count), \(q), \(allowed), \(verdict)")
        }
        return lines.joined(separator: "\n")
    }
}
