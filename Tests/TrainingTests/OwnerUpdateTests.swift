import Cluster
import TensorCore
import Testing
import Training
import Wire

/// The optimiser sharded across range owners (docs/design-optimizer-sharding.md, stage A): an
/// owner updates its ranges into its own buffers and the others copy the parameters in. Steps
/// assembled that way, chunk by chunk and kind by kind, must give the in-place update's bits.
@Suite struct OwnerUpdateTests {
    static let n = 5000
    static let chunks: [Range<Int>] = [0..<700, 700..<2049, 2049..<2050, 2050..<4100, 4100..<5000]

    static func state(_ options: Adam<Float>.Options) -> OptimizerState {
        var layout = ParameterLayout()
        layout.add("w", shape: [n])
        let store = ParameterStore<Float>(layout: layout)
        var rng = CounterRNG(seed: 3, purpose: .parameterInit)
        store.load((0..<n).map { _ in Float(rng.normal()) })
        return OptimizerState(store: store, options: options, emaDecay: nil, threads: 2)
    }

    static func gradient(step: Int) -> [Float] {
        var rng = CounterRNG(seed: 5, purpose: .trainNoise, step: step, shard: 0)
        // Some exact zeros and a wide range of magnitudes, as real gradients have.
        return (0..<n).map { i in i % 97 == 0 ? 0 : Float(rng.normal()) * Float(1 << (i % 7)) }
    }

    static func replica(_ s: OptimizerState) -> [[UInt32]] {
        s.replicaSnapshot().sections.map { $0.values.map(\.bitPattern) }
    }

    /// Three replicas of two owners' run: the reference applies whole gradients; the two
    /// "workers" each own alternate chunks, update them into side buffers, exchange the new
    /// parameters and assign them (the owner with its moments). Every step, each worker's
    /// parameters equal the reference's, and each owned chunk's moments too.
    @Test(arguments: [Adam<Float>.Options(learningRate: 2e-3, warmupSteps: 3),
                      Adam<Float>.Options(learningRate: 1e-3, warmupSteps: 0, weightDecay: 0.01)])
    func ownersUpdatesAssembleToTheInPlaceBits(options: Adam<Float>.Options) throws {
        let reference = Self.state(options)
        let workers = [Self.state(options), Self.state(options)]
        let k = reference.momentCount
        #expect(k == 2)
        for step in 0..<6 {
            let g = Self.gradient(step: step)
            g.withUnsafeBufferPointer { reference.apply(gradient: $0.baseAddress!) }
            // Each owner's new parameters and moments of its chunks.
            var parameters = [[Float]](repeating: [Float](repeating: 0, count: Self.n), count: 2)
            var moments = [[Float]](repeating: [Float](repeating: 0, count: k * Self.n), count: 2)
            for (c, r) in Self.chunks.enumerated() {
                let owner = c % 2
                g.withUnsafeBufferPointer { gb in
                    parameters[owner].withUnsafeMutableBufferPointer { p in
                        moments[owner].withUnsafeMutableBufferPointer { m in
                            workers[owner].update(range: r, gradient: gb.baseAddress! + r.lowerBound, parameters: p.baseAddress! + r.lowerBound,
                                                  moments: m.baseAddress! + k * r.lowerBound)
                        }
                    }
                }
            }
            // The replica is untouched until the update is assembled.
            #expect(workers[0].version == step && workers[1].version == step)
            for (w, worker) in workers.enumerated() {
                for (c, r) in Self.chunks.enumerated() {
                    let owner = c % 2
                    parameters[owner].withUnsafeBufferPointer { p in
                        moments[owner].withUnsafeBufferPointer { m in
                            worker.assign(range: r, parameters: p.baseAddress! + r.lowerBound,
                                          moments: owner == w ? m.baseAddress! + k * r.lowerBound : nil)
                        }
                    }
                }
                worker.finishStep()
                let mine = Self.replica(worker), ref = Self.replica(reference)
                #expect(mine[0] == ref[0], "step \(step), worker \(w): parameters differ")
                for (c, r) in Self.chunks.enumerated() where c % 2 == w {
                    #expect(Array(mine[1][r]) == Array(ref[1][r]) && Array(mine[2][r]) == Array(ref[2][r]),
                            "step \(step), worker \(w), chunk \(c): moments differ")
                }
            }
        }
        // A chunk's moments that only its owner kept are stale elsewhere (so the coordinator
        // must send the full state before such a worker owns that chunk).
        let stale = Self.replica(workers[1]), ref = Self.replica(reference)
        #expect(Array(stale[1][Self.chunks[0]]) != Array(ref[1][Self.chunks[0]]))
    }

    /// Chunks that arrive as reduced gradients (a joiner's, a mixed update) go through `apply`
    /// and keep their moments current; mixed with assigned chunks, the bits are the same.
    @Test func gradientAndParameterChunksMix() throws {
        let options = Adam<Float>.Options(learningRate: 1e-3, warmupSteps: 2)
        let reference = Self.state(options), owner = Self.state(options), mixed = Self.state(options)
        let k = owner.momentCount
        for step in 0..<4 {
            let g = Self.gradient(step: step)
            g.withUnsafeBufferPointer { reference.apply(gradient: $0.baseAddress!) }
            var p = [Float](repeating: 0, count: Self.n), m = [Float](repeating: 0, count: k * Self.n)
            g.withUnsafeBufferPointer { gb in
                p.withUnsafeMutableBufferPointer { pb in
                    m.withUnsafeMutableBufferPointer { mb in
                        for r in Self.chunks {
                            owner.update(range: r, gradient: gb.baseAddress! + r.lowerBound, parameters: pb.baseAddress! + r.lowerBound,
                                         moments: mb.baseAddress! + k * r.lowerBound)
                        }
                        for r in Self.chunks {
                            owner.assign(range: r, parameters: pb.baseAddress! + r.lowerBound, moments: mb.baseAddress! + k * r.lowerBound)
                        }
                        // `mixed` applies the gradient to chunks 0 and 2 and copies in 1, 3, 4 with moments.
                        for (c, r) in Self.chunks.enumerated() {
                            if c % 2 == 0 && c != 4 {
                                mixed.apply(gradient: gb.baseAddress! + r.lowerBound, range: r)
                            } else {
                                mixed.assign(range: r, parameters: pb.baseAddress! + r.lowerBound, moments: mb.baseAddress! + k * r.lowerBound)
                            }
                        }
                    }
                }
            }
            owner.finishStep()
            mixed.finishStep()
            #expect(Self.replica(owner) == Self.replica(reference), "step \(step)")
            #expect(Self.replica(mixed) == Self.replica(reference), "step \(step)")
        }
    }
}
