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
