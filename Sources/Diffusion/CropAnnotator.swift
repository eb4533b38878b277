import Foundation
import TensorCore

/// The crops annotation of Ambient-Omni (SPEC O5 crops; Daras et al. 2025, eq. 3.4): the
/// highest noise level at which crops of an out-of-distribution sample, of the size a denoiser
/// needs at that level, cannot be told from crops of in-distribution samples,
///
///     sigma_max = sup { sigma in grid : mean c_crops(crop(sigma)-sized crops of w + sigma n) > tau },
///
/// `c_crops` the probability "in-distribution" of a crops classifier, crop(sigma) from a measured
/// `CropMap`, tau = 0.5 - eps. Per sample the mean is over `draws` crops (uniform positions, each
/// with its own noise); per set it is also over the samples. A level is admissible only when a
/// classifier on crops at least crop(sigma) wide exists (the smallest such is used): larger
/// crops than the denoiser needs are the conservative side. No level passing gives 0 (the
/// sample is never used as clean). The sup over noisy per-sample estimates leans high; more
/// draws narrow it. Draws of sample i at level k come from (seed, annotation, step k, sample i),
/// i the dataset index.
public struct CropAnnotator: Sendable {
    /// A crops classifier and the side of the crops it takes.
    public struct SizedClassifier: @unchecked Sendable {
        public var size: Int
        public var classifier: NoiseConditionedClassifier
        public var store: ParameterStore<Float>
        public init(size: Int, classifier: NoiseConditionedClassifier, store: ParameterStore<Float>) {
            self.size = size
            self.classifier = classifier
            self.store = store
        }
    }

    public struct Result: Sendable {
        /// sigma_max of each sample (0: no admissible level passed).
        public var perSample: [Double]
        /// sigma_max of the whole set (eq. 3.4 as written: the mean over the set).
        public var perSet: Double
        /// Per grid level: the set's mean probability, nil where no classifier is wide enough.
        public var meanProbability: [Double?]
        /// Per grid level: the crop size used (nil: not admissible).
        public var cropUsed: [Int?]
    }

    public var grid: [Double]
    public var draws: Int
    public var tau: Double

    public init(grid: [Double], draws: Int = 16, tau: Double = 0.45) {
        precondition(!grid.isEmpty && zip(grid, grid.dropFirst()).allSatisfy { $0 < $1 }, "the sigma grid must be sorted ascending")
        precondition(draws >= 1)
        self.grid = grid
        self.draws = draws
        self.tau = tau
    }

    /// Which classifier serves grid level k: the narrowest at least `map.cropSize(at:)` wide.
    public func classifierIndex(level k: Int, map: CropMap, classifiers: [SizedClassifier]) -> Int? {
        let need = map.cropSize(at: grid[k])
        return classifiers.indices.filter { classifiers[$0].size >= need }.min { classifiers[$0].size < classifiers[$1].size }
    }

    /// Annotates `images` (N, C, H, W); row r is dataset sample `indices[r]`.
    public func annotate(images: Tensor<Float>, indices: [Int], classifiers: [SizedClassifier], map: CropMap, seed: UInt64,
                         chunk: Int = 1024, progress: ((Int) -> Void)? = nil) -> Result {
        precondition(images.rank == 4 && indices.count == images.rows)
        let shape = Array(images.shape.dropFirst()), n = images.rows, d = images.rowSize
        for c in classifiers {
            precondition(c.size <= min(shape[1], shape[2]) && c.classifier.dimension == ImageCrops.dimension(shape: shape, size: c.size),
                         "classifier of \(c.size) x \(c.size) crops does not fit images \(shape)")
        }
        var perSample = [Double](repeating: 0, count: n)
        var perSet = 0.0
        var meanProbability = [Double?](repeating: nil, count: grid.count)
        var cropUsed = [Int?](repeating: nil, count: grid.count)
        let tape = Tape<Float>(recordsGradients: false)
        for (k, sigma) in grid.enumerated() {
            defer { progress?(k + 1) }
            guard let ci = classifierIndex(level: k, map: map, classifiers: classifiers) else { continue }
            let c = classifiers[ci]
            cropUsed[k] = c.size
            let width = ImageCrops.dimension(shape: shape, size: c.size)
            var p = [Double](repeating: 0, count: n)
            var start = 0
            while start < n {
                let count = min(max(chunk / draws, 1), n - start), rows = count * draws
                var x = [Float](repeating: 0, count: rows * width)
                images.storage.withUnsafeBufferPointer { src in x.withUnsafeMutableBufferPointer { dst in
                    for r in 0..<count {
                        var rng = CounterRNG(seed: seed, purpose: .annotation, step: k, sample: indices[start + r])
                        for j in 0..<draws {
                            let (top, left) = ImageCrops.randomPosition(shape: shape, size: c.size, &rng)
                            let row = dst.baseAddress! + (r * draws + j) * width
                            ImageCrops.extract(src.baseAddress! + (start + r) * d, shape: shape, top: top, left: left, size: c.size, into: row)
                            for v in 0..<width { row[v] += Float(sigma * rng.normal()) }
                        }
                    }
                } }
                var logits = [Float](repeating: 0, count: rows)
                let sig = [Double](repeating: sigma, count: rows)
                x.withUnsafeBufferPointer { xp in logits.withUnsafeMutableBufferPointer { lp in sig.withUnsafeBufferPointer { sp in
                    c.classifier.evaluate(tape, c.store, x: xp.baseAddress!, rows: rows, sigma: sp.baseAddress!, into: lp.baseAddress!)
                } } }
                for r in 0..<count {
                    var sum = 0.0
                    for j in 0..<draws { sum += 1 / (1 + exp(-Double(logits[r * draws + j]))) }
                    p[start + r] = sum / Double(draws)
                }
                start += count
            }
            // The sup of eq. (3.4): the grid ascends, so the last passing level wins.
            for i in 0..<n where p[i] > tau { perSample[i] = sigma }
            let mean = p.reduce(0, +) / Double(n)
            meanProbability[k] = mean
            if mean > tau { perSet = sigma }
        }
        return Result(perSample: perSample, perSet: perSet, meanProbability: meanProbability, cropUsed: cropUsed)
    }
}
