import Datasets
import Diffusion
import Foundation
import TensorCore

/// How `ambient dataset make` builds a dataset directory from a clean source.
///
/// The source's samples are shuffled with `CounterRNG(seed, .dataOrder, step: 1_000_000)` and
/// the first `count` taken (Fashion-MNIST: from the in-distribution classes). Dataset sample i
/// is clean when `i < round(cleanFraction count)`; every other sample is corrupted, keyed by its
/// dataset index i. For `ood:C+...` the corrupted samples are instead images of classes C
/// (components C for a Gaussian mixture), and the clean ones come from the other classes.
public struct DatasetRecipe: Sendable {
    public var source: DataSpec
    public var corruption: CorruptionSpec?
    public var cleanFraction: Double
    /// Samples in the dataset (nil: all the source offers).
    public var count: Int?
    /// In-distribution classes (nil: all, minus the out-of-distribution ones).
    public var classes: [Int]?
    public var seed: UInt64
    public var createdBy: String?

    public init(source: DataSpec, corruption: CorruptionSpec?, cleanFraction: Double = 0, count: Int? = nil,
                classes: [Int]? = nil, seed: UInt64 = 0, createdBy: String? = nil) {
        self.source = source
        self.corruption = corruption
        self.cleanFraction = cleanFraction
        self.count = count
        self.classes = classes
        self.seed = seed
        self.createdBy = createdBy
    }

    /// Builds the dataset in memory (validated; write it with `DatasetDirectory.write`).
    /// `progress(done, total)` counts corrupted samples.
    public func make(progress: ((Int, Int) -> Void)? = nil) throws -> DatasetDirectory.Contents {
        guard cleanFraction >= 0, cleanFraction <= 1 else {
            throw ConfigurationError(message: "--clean-fraction must be in [0, 1], got \(cleanFraction)")
        }
        if let count, count < 1 { throw ConfigurationError(message: "--count must be >= 1, got \(count)") }
        let images: Tensor<Float>, labels: [Int], sourceName: String
        switch source {
        case .fashionMNIST:
            let set = try FashionMNIST.load(split: .train)
            images = set.images
            labels = set.labels
            sourceName = "fashion-mnist train"
        case let .gaussianMixture(spec):
            let drawn = try spec.mixture().sample(count: spec.count, seed: spec.seed)
            images = drawn.x
            labels = drawn.components
            sourceName = source.description
        default:
            throw ConfigurationError(message: "dataset make reads --source fashion-mnist or gmm[:...], not \(source)")
        }
        var shuffler = CounterRNG(seed: seed, purpose: .dataOrder, step: 1_000_000)
        var order = shuffler.permutation(images.rows)
        var oodClasses: [Int] = []
        if case let .outOfDistribution(c)? = corruption { oodClasses = c }
        let inClasses = classes ?? Array(Set(labels)).sorted().filter { !oodClasses.contains($0) }
        if let bad = oodClasses.first(where: { inClasses.contains($0) }) {
            throw ConfigurationError(message: "class \(bad) is both in-distribution (--classes) and out-of-distribution (--corrupt ood:...)")
        }
        let inPool = order.filter { inClasses.contains(labels[$0]) }
        let oodPool = order.filter { oodClasses.contains(labels[$0]) }
        let n = count ?? (oodClasses.isEmpty ? inPool.count : min(inPool.count, oodPool.count))
        let nClean = corruption == nil ? n : Int((cleanFraction * Double(n)).rounded())
        let nCorrupt = n - nClean
        var picked: [Int]
        if oodClasses.isEmpty {
            guard inPool.count >= n else {
                throw ConfigurationError(message: "--count \(n) exceeds the \(inPool.count) samples of classes \(inClasses)")
            }
            picked = Array(inPool.prefix(n))
        } else {
            guard inPool.count >= nClean, oodPool.count >= nCorrupt else {
                throw ConfigurationError(message: "need \(nClean) clean samples of classes \(inClasses) (have \(inPool.count)) and \(nCorrupt) of classes \(oodClasses) (have \(oodPool.count))")
            }
            picked = Array(inPool.prefix(nClean)) + Array(oodPool.prefix(nCorrupt))
        }
        order = picked
        var samples = images.gather(rows: order)
        var masks: Tensor<Float>? = nil
        var noise: [Double]? = nil
        let imageShape = images.rank == 4 ? Array(images.shape.dropFirst()) : nil
        if let corruption, nCorrupt > 0 {
            // In chunks, for progress: every draw is keyed by the sample's index, so chunking
            // changes nothing.
            let d = samples.rowSize
            progress?(0, nCorrupt)
            for chunkStart in stride(from: nClean, to: n, by: 2048) {
                let rows = Array(chunkStart..<min(chunkStart + 2048, n))
                let part = try corruption.apply(samples.gather(rows: rows), imageShape: imageShape, seed: seed, sampleIndices: rows)
                let span = (rows[0] * d)..<((rows.last! + 1) * d)
                samples.storage.replaceSubrange(span, with: part.samples.storage)
                if let m = part.masks {
                    if masks == nil { masks = Tensor<Float>(shape: samples.shape, repeating: 1) }
                    masks!.storage.replaceSubrange(span, with: m.storage)
                }
                if let s = part.noiseSigma { noise = (noise ?? [Double](repeating: 0, count: nClean)) + s }
                progress?(rows.last! + 1 - nClean, nCorrupt)
            }
        }
        var manifest = DatasetDirectory.Manifest(source: sourceName + (classes.map { ", classes \($0)" } ?? ""),
                                                 corruption: corruption?.description, cleanFraction: Double(nClean) / Double(n),
                                                 seed: seed, count: n, sampleShape: Array(samples.shape.dropFirst()), createdBy: createdBy)
        manifest.files = [:]
        let clean = (0..<n).map { $0 < nClean }
        return DatasetDirectory.Contents(manifest: manifest, samples: samples, masks: masks, noise: noise,
                                         labels: order.map { labels[$0] }, clean: corruption == nil ? nil : clean)
    }
}
