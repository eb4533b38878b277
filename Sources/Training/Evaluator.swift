import Datasets
import Diffusion
import Foundation
import TensorCore
import Wire

/// The evaluator classifier of SPEC "Evaluation": an MLP trained by Ambient on the clean,
/// labelled Fashion-MNIST training set; its penultimate activations are the feature space of
/// the Frechet distance (Inception features do not transfer to 28x28 grayscale), its argmax
/// the class of a generated sample.
///
/// Cached as `evaluator-fashion-mnist-v<version>.safetensors` in the cache directory
/// (`$AMBIENT_CACHE`, else `~/.cache/ambient`); the version changes whenever the recipe
/// below does, so a stale cache is never used.
public struct FashionEvaluator: @unchecked Sendable {
    public static let version = 1
    public static let config = MLPConfig(dataDimension: 784, width: 256, blocks: 2, embeddingSize: 2, outputDimension: 10)
    public static let steps = 4000
    public static let batch = 256

    public let network: MLPNetwork
    public let store: ParameterStore<Float>
    /// Accuracy on the Fashion-MNIST test set, measured when it was trained.
    public let testAccuracy: Double
    public let path: String
    /// The noise-aware evaluator (Evaluator+NoiseAware.swift) rather than the class-only one.
    public var noiseAware = false

    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let c = environment["AMBIENT_CACHE"], !c.isEmpty { return c }
        return (environment["HOME"] ?? NSTemporaryDirectory()) + "/.cache/ambient"
    }

    public static func cachePath(directory: String, noiseAware: Bool = false) -> String {
        noiseAware ? directory + "/evaluator-fashion-mnist-noise-aware-v\(noiseAwareVersion).safetensors"
                   : directory + "/evaluator-fashion-mnist-v\(version).safetensors"
    }

    /// Loads the cached evaluator, or trains it (about a minute on 2 cores) and caches it.
    /// `progress(step, steps)` follows the training when there is no cached evaluator.
    public static func loadOrTrain(cacheDirectory: String = FashionEvaluator.cacheDirectory(), noiseAware: Bool = false,
                                   log: (String) -> Void = { _ in },
                                   progress: ((Int, Int) -> Void)? = nil) throws -> FashionEvaluator {
        let path = cachePath(directory: cacheDirectory, noiseAware: noiseAware)
        let version = noiseAware ? noiseAwareVersion : version
        let network = MLPNetwork(config)
        let store = ParameterStore<Float>(layout: network.layout)
        if FileManager.default.fileExists(atPath: path) {
            let (tensors, metadata) = try Safetensors.read(path)
            guard metadata["ambient.kind"] == "evaluator", metadata["ambient.evaluator_version"] == String(version) else {
                throw TrainingError("\(path) is not an Ambient evaluator of version \(version); delete it to retrain")
            }
            let byName = Dictionary(tensors.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
            for (i, slot) in network.layout.slots.enumerated() {
                guard let t = byName[slot.name], t.shape == slot.shape else {
                    throw TrainingError("\(path): tensor \(slot.name) missing or of the wrong shape; delete the file to retrain")
                }
                t.storage.withUnsafeBufferPointer { store.value(i).update(from: $0.baseAddress!, count: slot.count) }
            }
            return FashionEvaluator(network: network, store: store, testAccuracy: Double(metadata["ambient.test_accuracy"] ?? "") ?? .nan,
                                    path: path, noiseAware: noiseAware)
        }
        log("training the \(noiseAware ? "noise-aware " : "")evaluator classifier on the Fashion-MNIST training set (cached at \(path))")
        let train = try FashionMNIST.load(split: .train), test = try FashionMNIST.load(split: .test)
        network.initialize(store, seed: 1)
        var recipe = "MLP 784-256x2-10, Adam 1e-3, \(steps) steps of \(batch), clean FM train"
        if noiseAware {
            trainNoiseAware(network: network, store: store, images: train.images.reshaped([train.images.rows, 784]),
                            labels: train.labels.map { Int($0) }, log: log, progress: progress)
            recipe = noiseAwareRecipe
        } else {
            let adam = Adam<Float>(count: store.count, options: .init(learningRate: 1e-3, warmupSteps: 100))
            let tape = Tape<Float>()
            let images = train.images.reshaped([train.images.rows, 784])
            let plan = ShardPlan(datasetSize: images.rows, globalBatch: batch, shards: 1, seed: 1)
            let zeros = [Float](repeating: 0, count: batch)
            progress?(0, steps)
            for step in 0..<steps {
                let indices = plan.indices(step: step, shard: 0)
                let x = images.gather(rows: indices)
                store.zeroGrads()
                tape.reset()
                let input = tape.constant(x)
                let logits = zeros.withUnsafeBufferPointer { network.forward(tape, store, input: input, cNoise: $0.baseAddress!) }
                let labels = tape.column(rows: batch) { Double(train.labels[indices[$0]]) }
                let loss = tape.softmaxCrossEntropy(logits, labels: labels, weights: tape.column(rows: batch) { _ in 1 / Double(batch) })
                tape.backward(loss)
                adam.update(params: store.values, grads: store.grads)
                if step % 1000 == 0 { log("evaluator step \(step): loss \(tape.scalar(loss))") }
                progress?(step + 1, steps)
            }
        }
        let evaluator = FashionEvaluator(network: network, store: store, testAccuracy: 0, path: path, noiseAware: noiseAware)
        let predicted = evaluator.classify(test.images.reshaped([test.images.rows, 784]))
        let accuracy = Double(zip(predicted, test.labels).filter { $0 == $1 }.count) / Double(test.labels.count)
        log("evaluator test accuracy \(accuracy)")
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        try Safetensors.write(store.tensors(), metadata: ["ambient.kind": "evaluator", "ambient.evaluator_version": String(version),
                                                          "ambient.test_accuracy": String(accuracy),
                                                          "ambient.recipe": recipe],
                              to: path)
        return FashionEvaluator(network: network, store: store, testAccuracy: accuracy, path: path, noiseAware: noiseAware)
    }

    /// Runs the network on images (N, 784) in batches; `body` gets each batch's output node.
    func run(_ images: Tensor<Float>, features: Bool, width: Int) -> Tensor<Float> {
        let tape = Tape<Float>(recordsGradients: false)
        var out = [Float](repeating: 0, count: images.rows * width)
        let zeros = [Float](repeating: 0, count: 512)
        var start = 0
        while start < images.rows {
            let rows = min(512, images.rows - start)
            tape.reset()
            let input = tape.constant(images.rows(start..<(start + rows)))
            let y = zeros.withUnsafeBufferPointer { z in
                features ? network.features(tape, store, input: input, cNoise: z.baseAddress!)
                         : network.forward(tape, store, input: input, cNoise: z.baseAddress!)
            }
            out.withUnsafeMutableBufferPointer { (($0.baseAddress! + start * width)).update(from: tape.value(y), count: rows * width) }
            start += rows
        }
        return Tensor(shape: [images.rows, width], storage: out)
    }

    /// Penultimate features (N, 256) of images (N, 784) in [-1, 1].
    public func features(_ images: Tensor<Float>) -> Tensor<Float> { run(images, features: true, width: Self.config.width) }

    /// The predicted class of each image.
    public func classify(_ images: Tensor<Float>) -> [Int] {
        let logits = run(images, features: false, width: 10)
        return (0..<images.rows).map { r in (0..<10).max { logits.storage[r * 10 + $0] < logits.storage[r * 10 + $1] }! }
    }
}
