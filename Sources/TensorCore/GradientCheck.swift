/// Central finite differences against the tape's reverse pass, in Double.
///
/// The numeric derivative is the fourth-order stencil
/// `(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h` with h = 3e-4. With the second-order
/// stencil at h = 1e-5 the rounding noise of the evaluations (about 4e-14 of a loss near 100,
/// divided by h) was 2e-6 of the smallest checked components, over the 1e-6 the tests ask for, on
/// one OpenBLAS kernel set (Prescott) and within 3% of it on another (SkylakeX). Over the 42
/// checks of the suite the worst relative error is now 8.8e-8 on both.
///
/// `build` must construct a scalar from the given leaves (and, optionally, the parameters of
/// `store`) on the tape it is handed; it is called once with gradients recorded and then four
/// times per checked element with one input moved by -2h, -h, +h and +2h.
public enum GradientCheck {
    public struct Report: CustomStringConvertible, Sendable {
        /// Largest `|analytic - numeric| / max(|analytic| + |numeric|, floor)` over all elements.
        public var maxRelativeError: Double
        /// Largest absolute difference.
        public var maxAbsoluteError: Double
        public var checked: Int
        public var worst: String
        public var description: String {
            "checked \(checked) elements, max rel err \(maxRelativeError), max abs err \(maxAbsoluteError) at \(worst)"
        }
    }

    public struct Leaf {
        public var name: String
        public var rows: Int
        public var cols: Int
        public var values: [Double]
        public init(_ name: String, rows: Int, cols: Int, values: [Double]) {
            precondition(values.count == rows * cols)
            self.name = name
            self.rows = rows
            self.cols = cols
            self.values = values
        }
    }

    /// - Parameters:
    ///   - leaves: differentiable inputs.
    ///   - store: parameters to check as well (may be nil).
    ///   - maxElementsPerTensor: checks at most this many elements of each tensor (spread evenly).
    public static func run(leaves: [Leaf], store: ParameterStore<Double>? = nil, h: Double = 3e-4,
                           floor: Double = 1e-7, maxElementsPerTensor: Int = 64,
                           build: (Tape<Double>, [Var]) -> Var) -> Report {
        let tape = Tape<Double>()
        func evaluate(_ leaves: [Leaf], record: Bool) -> (value: Double, vars: [Var], out: Var) {
            tape.reset()
            tape.recordsGradients = record
            let vars = leaves.map { leaf in
                leaf.values.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: leaf.rows, cols: leaf.cols) }
            }
            let out = build(tape, vars)
            return (tape.scalar(out), vars, out)
        }

        store?.zeroGrads()
        let base = evaluate(leaves, record: true)
        tape.backward(base.out)
        let analyticLeaves: [[Double]] = zip(leaves, base.vars).map { leaf, v in
            Array(UnsafeBufferPointer(start: tape.grad(v)!, count: leaf.values.count))
        }
        let analyticParams = store.map { Array($0.gradBuffer) } ?? []

        var report = Report(maxRelativeError: 0, maxAbsoluteError: 0, checked: 0, worst: "-")
        func compare(_ a: Double, _ n: Double, _ label: String) {
            let abs = Swift.abs(a - n)
            let rel = abs / Swift.max(Swift.abs(a) + Swift.abs(n), floor)
            report.checked += 1
            if rel > report.maxRelativeError {
                report.maxRelativeError = rel
                report.worst = "\(label): analytic \(a), numeric \(n)"
            }
            report.maxAbsoluteError = Swift.max(report.maxAbsoluteError, abs)
        }
        /// Fourth-order central difference: truncation error O(h^4), so h can be large enough
        /// that the rounding noise of the evaluations (which grows as 1/h) stays small.
        func derivative(_ f: (Double) -> Double) -> Double {
            (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)
        }
        func indices(_ n: Int) -> [Int] {
            if n <= maxElementsPerTensor { return Array(0..<n) }
            let stride = Double(n) / Double(maxElementsPerTensor)
            return (0..<maxElementsPerTensor).map { Int(Double($0) * stride) }
        }

        for (li, leaf) in leaves.enumerated() {
            for i in indices(leaf.values.count) {
                let numeric = derivative { delta in
                    var moved = leaves
                    moved[li].values[i] += delta
                    return evaluate(moved, record: false).value
                }
                compare(analyticLeaves[li][i], numeric, "\(leaf.name)[\(i)]")
            }
        }
        if let store {
            for slot in store.layout.slots {
                for j in indices(slot.count) {
                    let i = slot.offset + j
                    let saved = store.values[i]
                    let numeric = derivative { delta in
                        store.values[i] = saved + delta
                        return evaluate(leaves, record: false).value
                    }
                    store.values[i] = saved
                    compare(analyticParams[i], numeric, "\(slot.name)[\(j)]")
                }
            }
        }
        tape.recordsGradients = true
        return report
    }
}
