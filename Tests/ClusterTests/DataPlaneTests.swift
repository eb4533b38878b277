import Cluster
import Foundation
import TensorCore
import Testing
import Wire

/// The data plane's pure parts, without threads or sockets: the chunk plan, the shard-order
/// reducer, the worker's update assembler and the send backlog.
@Suite struct DataPlaneTests {
    // MARK: Chunk plan

    @Test func chunkPlanAcceptsOnlyContiguousCovers() throws {
        let plan = try ChunkPlan(ranges: [0..<3, 3..<7, 7..<10], parameterCount: 10)
        #expect(plan.offsets == [0, 3, 7])
        #expect(plan.parameterCount == 10)
        #expect(ChunkPlan(offsets: [0, 3, 7], parameterCount: 10) == plan)
        for bad in [[0..<3, 4..<10], [1..<10], [0..<3, 3..<3, 3..<10], [0..<9], [Range<Int>]()] {
            #expect(throws: ClusterError.self) { try ChunkPlan(ranges: bad, parameterCount: 10) }
        }
        #expect(ChunkPlan(offsets: [0, 3, 10], parameterCount: 10) == nil)   // last chunk empty
        #expect(ChunkPlan(offsets: [0, 5, 3], parameterCount: 10) == nil)
        #expect(ChunkPlan(offsets: [1], parameterCount: 10) == nil)
        #expect(ChunkPlan(offsets: [], parameterCount: 10) == nil)
    }

    @Test func chunkLookupNeedsTheExactKeyRange() throws {
        let plan = try ChunkPlan(ranges: [0..<3, 3..<7, 7..<10], parameterCount: 10)
        #expect(plan.chunk(keyOffset: 3, keyCount: 4) == 1)
        #expect(plan.chunk(keyOffset: 3, keyCount: 3) == nil)
        #expect(plan.chunk(keyOffset: 4, keyCount: 3) == nil)
        #expect(plan.chunk(keyOffset: 1 << 63, keyCount: 3) == nil)
        #expect(plan.chunk(keyOffset: .max, keyCount: .max) == nil)
    }

    // MARK: Shard-order reducer

    /// Values chosen so that float addition's order shows: (1e8 + -1e8) + 1 = 1 but
    /// (1 + 1e8) + -1e8 = 0. Every arrival order must give the shard-order sum, bit for bit.
    @Test func reducerSumsInShardOrderWhateverTheArrivalOrder() throws {
        let plan = try ChunkPlan(ranges: [0..<2, 2..<5], parameterCount: 5)
        let shards: [[Float]] = [[1e8, 1, 2, 1e8, 0.1], [-1e8, 1e-8, 3, -1e8, 0.2], [1, 1e-8, 1e30, 1, 0.3]]
        let reference = (0..<5).map { i in (shards[0][i] + shards[1][i]) + shards[2][i] }
        #expect(reference[0] == 1 && (shards[2][0] + shards[0][0]) + shards[1][0] == 0)
        let pieces = (0..<3).flatMap { k in (0..<2).map { c in (k, c) } }
        var orders = 0
        func permutations(_ a: [(Int, Int)]) -> [[(Int, Int)]] {
            a.count <= 1 ? [a] : a.indices.flatMap { i in permutations(Array(a[..<i] + a[(i + 1)...])).map { [a[i]] + $0 } }
        }
        let reducer = ShardOrderReducer(plan: plan, shardCount: 3)
        for order in permutations(pieces) {
            reducer.reset()
            var completions: [Int] = []
            for (k, c) in order {
                #expect(!reducer.contains(shard: k, chunk: c))
                let done = shards[k].withUnsafeBufferPointer { reducer.add(shard: k, chunk: c, UnsafeBufferPointer(rebasing: $0[plan[c]])) }
                if done { completions.append(c) }
                #expect(reducer.contains(shard: k, chunk: c))
            }
            #expect(completions.sorted() == [0, 1])
            #expect(reducer.isDone && reducer.incompleteShards.isEmpty)
            let total = Array(UnsafeBufferPointer(start: reducer.total, count: 5))
            #expect(bits(total) == bits(reference))
            orders += 1
        }
        #expect(orders == 720)
    }

    @Test func reducerReportsChunksAndShardsAsTheyComplete() throws {
        let plan = try ChunkPlan(ranges: [0..<1, 1..<2], parameterCount: 2)
        let r = ShardOrderReducer(plan: plan, shardCount: 2)
        let one: [Float] = [1]
        func add(_ k: Int, _ c: Int) -> Bool { one.withUnsafeBufferPointer { r.add(shard: k, chunk: c, $0) } }
        #expect(!add(1, 0))                 // early: waits for shard 0
        #expect(!r.isReduced(chunk: 0) && !r.isComplete(shard: 1))
        #expect(add(0, 0))                  // shard 0 then the buffered shard 1
        #expect(r.isReduced(chunk: 0) && !r.isDone && r.incompleteShards == [0, 1])
        #expect(!add(0, 1))
        #expect(r.isComplete(shard: 0) && r.incompleteShards == [1])
        #expect(add(1, 1))
        #expect(r.isDone && r.reduced(chunk: 1)[0] == 2)
        r.reset()
        #expect(!r.isDone && !r.isReduced(chunk: 0) && r.incompleteShards == [0, 1] && !r.contains(shard: 0, chunk: 0))
    }

    // MARK: Update assembler

    @Test func updateAssemblerCompletesOnceEveryChunkIsInInAnyOrder() throws {
        let plan = try ChunkPlan(ranges: [0..<2, 2..<3, 3..<6], parameterCount: 6)
        var a = UpdateAssembler(plan: plan)
        let update: [Float] = [1, 2, 3, 4, 5, 6]
        func chunk(_ c: Int) -> Result<Bool, UpdateAssembler.Refusal> {
            a.accept(keyOffset: UInt64(plan[c].lowerBound), keyCount: UInt64(plan[c].count)) { (out) throws(WireError) in
                for (i, j) in plan[c].enumerated() { out[i] = update[j] }
            }
        }
        #expect(chunk(2) == .success(false))
        #expect(chunk(2) == .failure(.twice(offset: 3)))
        #expect(a.accept(keyOffset: 2, keyCount: 2) { (_) throws(WireError) in } == .failure(.notAChunk(offset: 2, count: 2)))
        #expect(a.accept(keyOffset: 0, keyCount: 2) { (_) throws(WireError) in throw .inconsistentHeader("x") }
                == .failure(.undecodable(.inconsistentHeader("x"))))
        #expect(chunk(0) == .success(false))
        #expect(a.received == 2)
        #expect(chunk(1) == .success(true))
        #expect(a.buffer == update)
        #expect(a.received == 0)
        #expect(chunk(1) == .success(false))   // the next update starts
        a.reset()
        #expect(a.received == 0)
    }

    /// Chunks of each kind (a reduced gradient, an owner's parameters, an owned chunk) are kept
    /// per chunk; `runs` merges neighbouring gradient chunks only, so one optimiser call covers them.
    @Test func updateAssemblerKeepsEachChunksKindAndMergesGradientRuns() throws {
        let plan = try ChunkPlan(ranges: [0..<2, 2..<3, 3..<6, 6..<7, 7..<9], parameterCount: 9)
        var a = UpdateAssembler(plan: plan)
        func chunk(_ c: Int, _ kind: UpdateAssembler.Kind) -> Result<Bool, UpdateAssembler.Refusal> {
            a.accept(keyOffset: UInt64(plan[c].lowerBound), keyCount: UInt64(plan[c].count), kind: kind) { (out) throws(WireError) in
                for i in out.indices { out[i] = Float(c) }
            }
        }
        #expect(chunk(4, .owned) == .success(false))
        #expect(chunk(0, .gradient) == .success(false))
        #expect(chunk(3, .parameters) == .success(false))
        #expect(chunk(1, .gradient) == .success(false))
        #expect(chunk(2, .parameters) == .success(true))
        #expect(a.kinds == [.gradient, .gradient, .parameters, .parameters, .owned])
        let runs = a.runs
        #expect(runs.map(\.range) == [0..<3, 3..<6, 6..<7, 7..<9])
        #expect(runs.map(\.kind) == [.gradient, .parameters, .parameters, .owned])
        #expect(a.buffer == [0, 0, 1, 2, 2, 2, 3, 4, 4])
        // The next update's kinds replace this one's as its chunks arrive.
        #expect(chunk(4, .gradient) == .success(false))
        #expect(a.kinds[4] == .gradient)
    }

    // MARK: Send backlog

    @Test func backlogSendsInOrderStopsWhenFullAndReportsFailures() {
        var b = SendBacklog()
        b.append([[1]], now: 1)
        b.append([[2]], now: 2)
        b.append([[3]], now: 3)
        #expect(b.since == 1 && b.count == 3)
        var sent: [[UInt8]] = []
        var room = 1
        let send: ([[UInt8]]) throws(TransportError) -> Void = { frames throws(TransportError) in
            guard room > 0 else { throw .full(peer: "p") }
            room -= 1
            sent.append(frames[0])
        }
        #expect(b.flush(now: 5, send) == .full)
        #expect(sent == [[1]] && b.count == 2 && b.since == 5)
        #expect(!b.isStalled(now: 9, timeout: 4) && b.isStalled(now: 9.1, timeout: 4))
        #expect(b.flush(now: 6, send) == .full)
        #expect(b.since == 5)                   // nothing moved
        #expect(b.flush(now: 7) { (_) throws(TransportError) in throw .unreachable(peer: "p") } == .failed(.unreachable(peer: "p")))
        #expect(b.count == 2)
        room = 5
        #expect(b.flush(now: 8, send) == .drained)
        #expect(sent == [[1], [2], [3]] && b.isEmpty && !b.isStalled(now: 100, timeout: 1))
    }
}
