import Testing
import TensorCore

/// Every tape primitive against central finite differences, in Double.
@Suite struct TapeGradientTests {
    static let tolerance = 1e-6  // relative; a wrong rule gives errors of order 1e-2 or more

    func randomLeaf(_ name: String, _ rows: Int, _ cols: Int, seed: UInt64, scale: Double = 1) -> GradientCheck.Leaf {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return .init(name, rows: rows, cols: cols, values: (0..<(rows * cols)).map { _ in rng.normal() * scale })
    }

    /// Sum of squares with random row weights: a generic scalar head so every output element
    /// receives a different upstream gradient.
    func head(_ t: Tape<Double>, _ y: Var, seed: UInt64 = 99) -> Var {
        let r = t.shape(y).rows
        let w = t.constant(rows: r, cols: 1)
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        for i in 0..<r { t.value(w)[i] = 0.5 + rng.uniform() }
        // Multiply by a random fixed tensor first so the head is not symmetric in the output.
        let (rows, cols) = t.shape(y)
        let m = t.constant(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.value(m)[i] = rng.normal() }
        return t.weightedSumOfSquares(t.add(y, m), weights: w)
    }

    @Test func linearWithBias() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 5, 7, seed: 1), randomLeaf("W", 7, 4, seed: 2),
                                           randomLeaf("b", 1, 4, seed: 3)]) { t, v in
            head(t, t.linear(v[0], v[1], v[2]))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func linearWithoutBias() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 3, 6, seed: 4), randomLeaf("W", 6, 5, seed: 5)]) { t, v in
            head(t, t.linear(v[0], v[1], nil))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func addSubMul() {
        let leaves = [randomLeaf("a", 4, 6, seed: 6), randomLeaf("b", 4, 6, seed: 7)]
        for op in 0..<3 {
            let r = GradientCheck.run(leaves: leaves) { t, v in
                switch op {
                case 0: return head(t, t.add(v[0], v[1]))
                case 1: return head(t, t.sub(v[0], v[1]))
                default: return head(t, t.mul(v[0], v[1]))
                }
            }
            #expect(r.maxRelativeError < Self.tolerance, "op \(op): \(r)")
        }
    }

    @Test func scaleRows() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 5, 3, seed: 8), randomLeaf("s", 5, 1, seed: 9)]) { t, v in
            head(t, t.scaleRows(v[0], v[1]))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func silu() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 6, 9, seed: 10, scale: 3)]) { t, v in
            head(t, t.silu(v[0]))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func layerNorm() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 4, 10, seed: 11, scale: 2), randomLeaf("gamma", 1, 10, seed: 12),
                                           randomLeaf("beta", 1, 10, seed: 13)]) { t, v in
            head(t, t.layerNorm(v[0], gamma: v[1], beta: v[2]))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func concatColumns() {
        let r = GradientCheck.run(leaves: [randomLeaf("a", 3, 4, seed: 14), randomLeaf("b", 3, 2, seed: 15)]) { t, v in
            head(t, t.concatColumns(v[0], v[1]))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    @Test func weightedDot() {
        let r = GradientCheck.run(leaves: [randomLeaf("a", 4, 5, seed: 16), randomLeaf("b", 4, 5, seed: 17)]) { t, v in
            let w = t.constant(rows: 4, cols: 1)
            for i in 0..<4 { t.value(w)[i] = Double(i) - 1.5 }
            return t.weightedDot(v[0], v[1], weights: w)
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    /// A composition sharing one input along two paths (gradients must accumulate).
    @Test func residualBlockComposition() {
        let r = GradientCheck.run(leaves: [randomLeaf("x", 3, 8, seed: 18), randomLeaf("W1", 8, 8, seed: 19, scale: 0.4),
                                           randomLeaf("W2", 8, 8, seed: 20, scale: 0.4), randomLeaf("g", 1, 8, seed: 21),
                                           randomLeaf("b", 1, 8, seed: 22)]) { t, v in
            let h = t.silu(t.layerNorm(v[0], gamma: v[3], beta: v[4]))
            let y = t.add(v[0], t.linear(t.silu(t.linear(h, v[1], nil)), v[2], nil))
            return head(t, y)
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    /// Gradients reach a ParameterStore's flat gradient buffer.
    @Test func parameterStoreGradients() {
        var layout = ParameterLayout()
        let w = layout.add("w", shape: [6, 3])
        let b = layout.add("b", shape: [3])
        let store = ParameterStore<Double>(layout: layout)
        var rng = CounterRNG(seed: 5, purpose: .parameterInit)
        store.fillNormal(&rng, scale: 1)
        let r = GradientCheck.run(leaves: [randomLeaf("x", 4, 6, seed: 23)], store: store) { t, v in
            head(t, t.silu(t.linear(v[0], t.parameter(store, w, rows: 6, cols: 3), t.parameter(store, b, rows: 1, cols: 3))))
        }
        #expect(r.checked == 24 + 18 + 3)
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    /// The checker itself must catch a wrong derivative (a test that cannot fail proves nothing).
    @Test func checkerDetectsAWrongGradient() {
        // d/dx of sum w x^2 is 2 w x; seeding backward with 2 instead of 1 doubles the analytic gradient.
        let leaf = randomLeaf("x", 2, 3, seed: 24)
        let tape = Tape<Double>()
        let x = leaf.values.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 2, cols: 3) }
        let w = tape.constant(rows: 2, cols: 1)
        tape.value(w)[0] = 1; tape.value(w)[1] = 1
        let y = tape.weightedSumOfSquares(x, weights: w)
        tape.backward(y, seed: 2)
        let analytic = Array(UnsafeBufferPointer(start: tape.grad(x)!, count: 6))
        let expected = leaf.values.map { 2 * $0 }
        #expect(zip(analytic, expected).allSatisfy { abs($0 - 2 * $1) < 1e-12 })
        let good = GradientCheck.run(leaves: [leaf]) { t, v in
            let w = t.constant(rows: 2, cols: 1)
            t.value(w)[0] = 1; t.value(w)[1] = 1
            return t.weightedSumOfSquares(v[0], weights: w)
        }
        #expect(good.maxRelativeError < 1e-8)
    }

    /// No-gradient mode records nothing and allocates no gradients.
    @Test func inferenceModeRecordsNothing() {
        let tape = Tape<Double>(recordsGradients: false)
        let x = [1.0, 2, 3].withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 1, cols: 3) }
        let y = tape.silu(x)
        #expect(tape.grad(y) == nil)
        #expect(abs(tape.value(y)[0] - 1 / (1 + exp(-1.0))) < 1e-12)
    }
}

import Foundation
