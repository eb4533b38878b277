import Dispatch
import Testing
import TensorCore

/// Compute threads flush subnormal floats (Denormals): the same mode on every thread that
/// `Parallel.forEach` runs an iteration on, including the calling thread, and no trace of it on
/// those threads afterwards.
@Suite(.serialized) struct DenormalsTests {
    /// A product whose exact value is subnormal (1e-30 x 1e-10 = 1e-40 < 1.18e-38), from an
    /// array so the compiler cannot fold it.
    static let factors: [Float] = [1e-30, 1e-10]

    @Test(arguments: [1, 8])
    func parallelIterationsFlushSubnormals(count: Int) {
        #expect(Denormals.flushed, "AMBIENT_KEEP_DENORMALS=1 is set for this test process")
        var products = [Float](repeating: -1, count: count)
        var flushing = [Bool](repeating: false, count: count)
        products.withUnsafeMutableBufferPointer { p in
            flushing.withUnsafeMutableBufferPointer { f in
                let (pp, fp) = (p.baseAddress!, f.baseAddress!)
                Parallel.forEach(count) { i in
                    fp[i] = Denormals.currentThreadFlushes
                    pp[i] = Self.factors[0] * Self.factors[1]
                }
            }
        }
        #expect(flushing.allSatisfy { $0 })
        #expect(products.allSatisfy { $0 == 0 }, "\(products)")
    }

    /// Regression: the mode was once left set on Dispatch's pool threads, and Swift's Float16
    /// conversion in an unrelated test (CodecTests) then read subnormal halves as zero.
    @Test func threadsAreLeftAsTheyWere() {
        let before = Denormals.currentThreadFlushes
        Parallel.forEach(1) { _ in }
        Parallel.forEach(16) { _ in }
        #expect(Denormals.currentThreadFlushes == before)
        // Whatever pool threads ran those iterations now run plain Dispatch work.
        let count = 64
        var flushing = [Bool](repeating: true, count: count)
        flushing.withUnsafeMutableBufferPointer { f in
            let fp = f.baseAddress!
            nonisolated(unsafe) let out = fp
            DispatchQueue.concurrentPerform(iterations: count) { i in out[i] = Denormals.currentThreadFlushes }
        }
        #expect(!flushing.contains(true), "\(flushing.filter { $0 }.count) of \(count) pool tasks ran flushing")
    }
}
