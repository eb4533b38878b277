import Testing
@testable import TensorCore

/// FlatBuffer hands out pointers that outlive any closure: its address never changes, whatever is
/// loaded into it, and what is written through the pointer is what the buffer reads.
@Suite struct FlatBufferTests {
    @Test func addressIsStableAndContentsRoundTrip() {
        let b = FlatBuffer<Float>(count: 5)
        #expect(b.array == [0, 0, 0, 0, 0])
        let address = b.pointer
        b.load([1, 2, 3, 4, 5])
        b[2] = 9
        #expect(b.pointer == address)
        #expect(b.array == [1, 2, 9, 4, 5])
        address[4] = -1
        #expect(b[4] == -1)
        b.zero()
        #expect(b.array == [0, 0, 0, 0, 0] && b.pointer == address)
        #expect(FlatBuffer<Double>(copying: [0.5, 1.5]).array == [0.5, 1.5])
        #expect(FlatBuffer<Float>(count: 0).array.isEmpty)
    }
}

/// `Tensor.firstNonFiniteIndex` (the dataset and NPY validation): the vectorised Float path and
/// the generic Double path agree with a plain scan, across block boundaries.
@Suite struct FirstNonFiniteIndexTests {
    @Test(arguments: [nil, 0, 15, 16, 4095, 4096, 9999] as [Int?])
    func findsTheFirstNaNOrInfinity(at index: Int?) {
        var f = [Float](repeating: 0.5, count: 10_000)
        var d = [Double](repeating: 0.5, count: 10_000)
        if let index {
            f[index] = index % 2 == 0 ? .nan : .infinity
            d[index] = index % 2 == 0 ? -.infinity : .nan
            f[9_999] = .nan
            d[9_999] = .nan
        }
        #expect(Tensor(shape: [10_000], storage: f).firstNonFiniteIndex == index)
        #expect(Tensor(shape: [100, 100], storage: d).firstNonFiniteIndex == index)
    }

    @Test func emptyTensorHasNone() {
        #expect(Tensor<Float>(shape: [0], storage: []).firstNonFiniteIndex == nil)
    }
}
