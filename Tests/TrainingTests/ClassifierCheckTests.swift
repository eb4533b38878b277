import Diffusion
import Foundation
import TensorCore
import Testing
import Training

/// The held-out loss of `ambient classifier check` (the criterion of held-out early stopping).
@Suite struct ClassifierHeldOutTests {
    static let d = 12

    /// A classifier whose logit is the constant b whatever the input (every weight 0, output bias b).
    func constantClassifier(_ b: Float) -> (NoiseConditionedClassifier, ParameterStore<Float>) {
        let net = MLPNetwork(MLPConfig(dataDimension: Self.d, width: 8, blocks: 1, embeddingSize: 4, outputDimension: 1))
        let store = ParameterStore<Float>(layout: net.layout)
        store.value(net.layout.index(of: "output.bias")!)[0] = b
        return (NoiseConditionedClassifier(network: net), store)
    }

    func images(_ n: Int, seed: UInt64) -> Tensor<Float> {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return Tensor(shape: [n, Self.d], storage: (0..<(n * Self.d)).map { _ in Float(rng.normal()) })
    }

    /// BCE of a constant logit b over equal numbers of both labels: (softplus(-b) + softplus(b)) / 2;
    /// accuracy 1/2 (it says the same for every image).
    @Test(arguments: [Float(0), 1.5, -3])
    func constantLogitGivesTheClosedForm(b: Float) {
        let (classifier, store) = constantClassifier(b)
        let check = ClassifierCheck(annotator: Annotator(grid: [0.1, 1], draws: 1, span: 1), seed: 3)
        let h = check.heldOut(classifier, store, clean: images(40, seed: 1), corrupted: images(50, seed: 2))
        let softplus = { (x: Double) in log(1 + exp(x)) }
        let expected = (softplus(-Double(b)) + softplus(Double(b))) / 2
        #expect(h.count == 80)
        #expect(abs(h.bce - expected) < 1e-5, "BCE \(h.bce), expected \(expected)")
        #expect(b == 0 ? h.accuracy == 0.5 : abs(h.accuracy - 0.5) < 1e-9)
    }
}
