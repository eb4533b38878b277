import Cluster
import TensorCore
import Testing
import Training
import Wire

/// `OptimizerState.parameterChecksum` takes the block hashes while the optimiser writes (so the
/// replica checksum needs no pass of its own). Whatever path changed the parameters, it must equal
/// the checksum computed whole; and after a step it must really have been taken during the update.
@Suite struct OptimizerChecksumTests {
    static let n = 5 * 8192 + 1234

    static func state(threads: Int, ema: Bool) -> OptimizerState {
        var layout = ParameterLayout()
        layout.add("w", shape: [n])
        let store = ParameterStore<Float>(layout: layout)
        var rng = CounterRNG(seed: 3, purpose: .parameterInit)
        store.load((0..<n).map { _ in Float(rng.normal()) })
        return OptimizerState(store: store, options: Adam<Float>.Options(learningRate: 1e-3, warmupSteps: 2),
                              emaDecay: ema ? 0.99 : nil, threads: threads)
    }

    static func whole(_ s: OptimizerState) -> UInt64 {
        ParameterChecksum.of(UnsafeBufferPointer(start: s.parameters, count: s.parameterCount))
    }

    static func gradient(step: Int) -> [Float] {
        var rng = CounterRNG(seed: 5, purpose: .trainNoise, step: step, shard: 0)
        return (0..<n).map { _ in Float(rng.normal()) }
    }

    @Test(arguments: [(1, false), (2, false), (3, true), (2, true)])
    func checksumEqualsTheWholeOneOnEveryPath(threads: Int, ema: Bool) throws {
        let s = Self.state(threads: threads, ema: ema)
        #expect(s.parameterChecksum == Self.whole(s))
        // Ragged ranges, applied out of order, as reduced chunks arrive.
        let cuts = [0, 700, 9000, 9001, 20_000, 33_333, Self.n]
        let ranges = zip(cuts, cuts.dropFirst()).map { $0..<$1 }
        for step in 0..<4 {
            let g = Self.gradient(step: step)
            for r in (step % 2 == 0 ? ranges : ranges.reversed()) {
                g.withUnsafeBufferPointer { s.apply(gradient: $0.baseAddress! + r.lowerBound, range: r) }
            }
            s.finishStep()
            let checksum = s.parameterChecksum
            #expect(checksum == Self.whole(s), "step \(step)")
        }
        // Parameters assigned to a range (a range owner's update), then a whole restore, then a load.
        let p = (0..<3000).map { Float($0) }
        p.withUnsafeBufferPointer { s.assign(range: 8000..<11_000, parameters: $0.baseAddress!, moments: nil) }
        #expect(s.parameterChecksum == Self.whole(s))
        let other = Self.state(threads: 1, ema: false)
        Self.gradient(step: 9).withUnsafeBufferPointer { other.apply(gradient: $0.baseAddress!) }
        try s.restore(replica: other.replicaSnapshot())
        #expect(s.parameterChecksum == Self.whole(other))
        s.store.load([Float](repeating: 0.5, count: Self.n))
        s.parametersChanged()
        #expect(s.parameterChecksum == Self.whole(s))
    }

    /// The point of the cache: after a step applied in a few ranges, the checksum hashes only the
    /// blocks cut by a range or thread boundary again. Checked by timing-free means: a stale value
    /// planted behind the optimiser's back after the step is not read, because the block was hashed
    /// during the update.
    @Test func theUpdateHashesTheBlocksItWrites() {
        let s = Self.state(threads: 2, ema: true)
        _ = s.parameterChecksum
        let g = Self.gradient(step: 0)
        g.withUnsafeBufferPointer { s.apply(gradient: $0.baseAddress!) }
        let expected = Self.whole(s)
        // Change block 1 (wholly inside the first thread's half) without telling the state.
        let saved = s.store.values[8192 + 5]
        s.store.values[8192 + 5] = saved + 1
        #expect(s.parameterChecksum == expected)   // the hash taken during the update
        s.store.values[8192 + 5] = saved
    }

    /// A state nobody asked for a checksum (the single-process trainer) hashes nothing while it
    /// updates: the first checksum reads the parameters as they are then.
    @Test func noHashingUntilAChecksumIsWanted() {
        let s = Self.state(threads: 2, ema: true)
        Self.gradient(step: 0).withUnsafeBufferPointer { s.apply(gradient: $0.baseAddress!) }
        s.store.values[8192 + 5] += 1
        #expect(s.parameterChecksum == Self.whole(s))
    }
}
