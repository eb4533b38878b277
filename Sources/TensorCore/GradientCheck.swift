/// Central finite differences against the tape's reverse pass, in Double.
///
/// `build` must construct a scalar from the given leaves (and, optionally, the parameters of
/// `store`) on the tape it is handed; it is called once with gradients recorded and then twice
/// per checked element with one input perturbed by +-h.
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
    public static func run(leaves: [Leaf], store: ParameterStore<Double>? = nil, h: Double = 1e-5,
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
        func indices(_ n: Int) -> [Int] {
            if n <= maxElementsPerTensor { return Array(0..<n) }
            let stride = Double(n) / Double(maxElementsPerTensor)
            return (0..<maxElementsPerTensor).map { Int(Double($0) * stride) }
        }

        for (li, leaf) in leaves.enumerated() {
            for i in indices(leaf.values.count) {
                var plus = leaves, minus = leaves
                plus[li].values[i] += h
                minus[li].values[i] -= h
                let fp = evaluate(plus, record: false).value
                let fm = evaluate(minus, record: false).value
                compare(analyticLeaves[li][i], (fp - fm) / (2 * h), "\(leaf.name)[\(i)]")
            }
        }
        if let store {
            for slot in store.layout.slots {
                for j in indices(slot.count) {
                    let i = slot.offset + j
                    let saved = store.values[i]
                    store.values[i] = saved + h
                    let fp = evaluate(leaves, record: false).value
                    store.values[i] = saved - h
                    let fm = evaluate(leaves, record: false).value
                    store.values[i] = saved
                    compare(analyticParams[i], (fp - fm) / (2 * h), "\(slot.name)[\(j)]")
                }
            }
        }
        tape.recordsGradients = true
        return report
    }
}
