import Testing
import TensorCore
import Datasets

@Suite struct ValidationTests {
    @Test func firstNonFiniteIsLocated() throws {
        var t = Tensor<Float>(zeros: [5, 2, 3])
        try validateFinite(t, name: "t")
        t.storage[20] = .infinity
        t.storage[25] = .nan
        let e = datasetError { try validateFinite(t, name: "batch") }
        guard case .nonFinite("batch", 3, 2, let v)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(v == .infinity)
        #expect(e!.description.contains("sample 3, position 2"))
        let flat = Tensor<Double>(shape: [4], storage: [0, 1, -.infinity, 2])
        guard case .nonFinite(_, 2, 0, _)? = datasetError({ try validateFinite(flat, name: "v") }) else {
            Issue.record("rank 1"); return
        }
    }
}
