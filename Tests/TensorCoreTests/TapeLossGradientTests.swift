import Foundation
import Testing
import TensorCore

/// The primitives added for SPEC O4 (row slices) and O5 / evaluation (cross-entropies), against
/// central finite differences and closed forms.
@Suite struct TapeLossGradientTests {
    func leaf(_ name: String, _ rows: Int, _ cols: Int, seed: UInt64, scale: Double = 1) -> GradientCheck.Leaf {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return .init(name, rows: rows, cols: cols, values: (0..<(rows * cols)).map { _ in rng.normal() * scale })
    }

    @Test func sliceRowsIntoAWeightedDot() {
        let r = GradientCheck.run(leaves: [leaf("x", 6, 3, seed: 1)]) { t, v in
            let w = t.column(rows: 3) { Double($0) + 0.5 }
            return t.weightedDot(t.sliceRows(v[0], start: 0, count: 3), t.sliceRows(v[0], start: 3, count: 3), weights: w)
        }
        #expect(r.maxRelativeError < 1e-6, "\(r)")
    }

    /// Logits of a few units and soft targets (far-out logits are checked in closed form below:
    /// there the gradient is ~1e-9 and finite differences measure only rounding).
    @Test func binaryCrossEntropyWithLogits() {
        let r = GradientCheck.run(leaves: [leaf("z", 8, 1, seed: 2, scale: 3)]) { t, v in
            let targets = t.column(rows: 8) { [0, 1, 1, 0, 0.3, 1, 0, 0.9][$0] }
            let w = t.column(rows: 8) { 1 + Double($0) / 8 }
            return t.binaryCrossEntropyWithLogits(v[0], targets: targets, weights: w)
        }
        #expect(r.maxRelativeError < 1e-6, "\(r)")
        // Closed form at a few points, and no overflow far out.
        let t = Tape<Double>(recordsGradients: false)
        let z = t.column(rows: 3) { [0, 2, -800][$0] }
        let y = t.column(rows: 3) { [1, 0, 1][$0] }
        let w = t.column(rows: 3) { _ in 1 }
        let expected = log(2.0) + (2 + log(1 + exp(-2.0))) + 800
        #expect(abs(t.scalar(t.binaryCrossEntropyWithLogits(z, targets: y, weights: w)) - expected) < 1e-9)
    }

    @Test func softmaxCrossEntropy() {
        let r = GradientCheck.run(leaves: [leaf("z", 5, 4, seed: 3, scale: 3)]) { t, v in
            let labels = t.column(rows: 5) { Double([0, 3, 1, 2, 3][$0]) }
            let w = t.column(rows: 5) { 0.5 + Double($0) / 5 }
            return t.softmaxCrossEntropy(v[0], labels: labels, weights: w)
        }
        #expect(r.maxRelativeError < 1e-6, "\(r)")
        let t = Tape<Double>(recordsGradients: false)
        let z = t.constant(rows: 1, cols: 3)
        for j in 0..<3 { t.value(z)[j] = [1000, 0, -1000][j] }
        let label = t.column(rows: 1) { _ in 1 }
        #expect(abs(t.scalar(t.softmaxCrossEntropy(z, labels: label, weights: t.column(rows: 1) { _ in 1 })) - 1000) < 1e-9)
    }
}
