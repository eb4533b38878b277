import Diffusion
import TensorCore

/// The shard gradients of the Ambient-Omni classifier (SPEC O5): binary cross-entropy on noisy
/// versions of clean (label 1) and corrupted (label 0) samples, every shard balanced: its
/// first half comes from the clean set S_G, its second half from the corrupted samples, each
/// walked through in seeded epochs by its own `ShardPlan` (seeds `seed` and `seed + 1`).
/// A `ShardGradientComputing` conformer, so the cluster can train it like a denoiser.
///
/// With `crop` S (the crops classifier of SPEC O5, Ambient-Omni Section 3.2) each row is a
/// uniformly placed S x S crop of its image instead of the whole image; the position of row r
/// of shard k of step t is drawn from (seed, classifier, t, k, r), so it depends on nothing
/// else (cluster and single process crop alike). Loss and network are unchanged: the network
/// just takes C*S*S values.
public final class ClassifierGradientComputer: ShardGradientComputing, @unchecked Sendable {
    public let classifier: NoiseConditionedClassifier
    public let store: ParameterStore<Float>
    public let data: TrainingData
    public let seed: UInt64
    public let globalBatch: Int
    /// Side of the square crops the classifier sees (nil: whole samples).
    public let crop: Int?
    let cleanIndices: [Int]
    let corruptedIndices: [Int]
    let cleanPlan: ShardPlan
    let corruptedPlan: ShardPlan
    private let tape = Tape<Float>()
    public var onParameterGradientReady: ((Int) -> Void)? {
        get { tape.onParameterGradientReady }
        set { tape.onParameterGradientReady = newValue }
    }

    public init(classifier: NoiseConditionedClassifier, store: ParameterStore<Float>, data: TrainingData,
                globalBatch: Int, shards: Int, seed: UInt64, crop: Int? = nil) throws {
        guard let clean = data.clean else {
            throw ConfigurationError(message: "classifier training needs to know which samples are clean: train on a dataset directory with clean.npy (ambient dataset make --clean-fraction F)")
        }
        cleanIndices = clean.indices.filter { clean[$0] }
        corruptedIndices = clean.indices.filter { !clean[$0] }
        guard !cleanIndices.isEmpty, !corruptedIndices.isEmpty else {
            throw ConfigurationError(message: "classifier training needs both clean and corrupted samples; the data has \(cleanIndices.count) clean and \(corruptedIndices.count) corrupted")
        }
        guard globalBatch >= 2 * shards else {
            throw ConfigurationError(message: "classifier training needs --batch >= 2 x --shards so every shard holds both classes")
        }
        if let crop {
            guard let shape = data.imageShape, crop <= shape[1], crop <= shape[2] else {
                throw ConfigurationError(message: "--crops \(crop) needs images of at least \(crop) x \(crop) pixels; the data is \(data.imageShape.map { "\($0)" } ?? "vectors of \(data.dimension) values")")
            }
            guard classifier.dimension == ImageCrops.dimension(shape: shape, size: crop) else {
                throw ConfigurationError(message: "a classifier on \(crop) x \(crop) crops takes \(ImageCrops.dimension(shape: shape, size: crop)) values; this network takes \(classifier.dimension)")
            }
        }
        self.crop = crop
        self.classifier = classifier
        self.store = store
        self.data = data
        self.seed = seed
        self.globalBatch = globalBatch
        cleanPlan = ShardPlan(datasetSize: cleanIndices.count, globalBatch: globalBatch / 2, shards: shards, seed: seed)
        corruptedPlan = ShardPlan(datasetSize: corruptedIndices.count, globalBatch: globalBatch - globalBatch / 2, shards: shards, seed: seed &+ 1)
    }

    /// Dataset indices and labels of shard `shard` of step `step`: clean half, then corrupted half.
    public func rows(step: Int, shard: Int) -> (indices: [Int], labels: [Float]) {
        let c = cleanPlan.indices(step: step, shard: shard).map { cleanIndices[$0] }
        let k = corruptedPlan.indices(step: step, shard: shard).map { corruptedIndices[$0] }
        return (c + k, [Float](repeating: 1, count: c.count) + [Float](repeating: 0, count: k.count))
    }

    public func compute(step: Int, shard: Int) -> ShardResult {
        let (indices, labels) = rows(step: step, shard: shard)
        var x = data.samples.gather(rows: indices)
        if let crop, let shape = data.imageShape { x = crops(of: x, shape: shape, size: crop, step: step, shard: shard) }
        let sigmaN = [Double](repeating: 0, count: indices.count)
        store.zeroGrads()
        tape.reset()
        return x.storage.withUnsafeBufferPointer { xp in sigmaN.withUnsafeBufferPointer { sp in
            indices.withUnsafeBufferPointer { ip in labels.withUnsafeBufferPointer { lp in
                let batch = ShardBatch(data: xp.baseAddress!, rows: indices.count, dimension: x.rowSize, sigmaN: sp.baseAddress!,
                                       sampleIndices: ip.baseAddress!, seed: seed, step: step, shard: shard, globalBatch: globalBatch)
                let r = classifier.loss(tape, store, batch: batch, labels: lp.baseAddress!)
                tape.backward(r.loss)
                return ShardResult(loss: Double(tape.scalar(r.loss)), terms: r.terms, rows: indices.count)
            } }
        } }
    }

    /// One random S x S crop of every row of `images` (rows, C*H*W).
    func crops(of images: Tensor<Float>, shape: [Int], size: Int, step: Int, shard: Int) -> Tensor<Float> {
        let d = images.rowSize, k = ImageCrops.dimension(shape: shape, size: size)
        var out = [Float](repeating: 0, count: images.rows * k)
        images.storage.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in
            for r in 0..<images.rows {
                var rng = CounterRNG(seed: seed, purpose: .classifier, step: step, shard: shard, sample: r)
                let (top, left) = ImageCrops.randomPosition(shape: shape, size: size, &rng)
                ImageCrops.extract(src.baseAddress! + r * d, shape: shape, top: top, left: left, size: size, into: dst.baseAddress! + r * k)
            }
        } }
        return Tensor(shape: [images.rows, k], storage: out)
    }
}
