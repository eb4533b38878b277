import Cluster
import Foundation
import TensorCore
import Testing
import Wire

/// The sharded reduction's pure parts: who owns which range (and who inherits it), and the
/// owner's per-range reducers, which must give the whole-buffer reducer's sums bit for bit.
@Suite struct RangeOwnerTests {
    static func randomPlan(_ rng: inout CounterRNG, maxChunks: Int = 12) throws -> ChunkPlan {
        let c = 1 + rng.int(below: maxChunks)
        var ranges: [Range<Int>] = [], start = 0
        for _ in 0..<c {
            let len = 1 + rng.int(below: 50)
            ranges.append(start..<(start + len))
            start += len
        }
        return try ChunkPlan(ranges: ranges, parameterCount: start)
    }

    // MARK: Owner map

    @Test func mapDealsTheChunksToTheOwnersInTurn() throws {
        let plan = try ChunkPlan(ranges: (0..<8).map { ($0 * 10)..<($0 * 10 + 10) }, parameterCount: 80)
        let map = try RangeOwnerMap(plan: plan, owners: [3, 1, 7, 0], generation: 5)
        #expect((0..<8).map(map.owner(ofChunk:)) == [3, 1, 7, 0, 3, 1, 7, 0])
        #expect(map.entries.count == 8 && map.owners == [0, 1, 3, 7])
        #expect(map.chunks(ownedBy: 7) == [2..<3, 6..<7] && map.chunks(ownedBy: 9).isEmpty)
        #expect(map.elements(ownedBy: 1) == 20 && map.generation == 5)
        // One owner: one entry. More owners than chunks: the last ones own nothing.
        #expect(try RangeOwnerMap(plan: plan, owners: [4], generation: 0).entries == [.init(chunks: 0..<8, owner: 4)])
        let small = try RangeOwnerMap(plan: try ChunkPlan(ranges: [0..<2, 2..<4], parameterCount: 4), owners: [1, 2, 3], generation: 0)
        #expect(small.owners == [1, 2] && small.chunks(ownedBy: 3).isEmpty)
        // Unequal chunks go to the least-loaded owner; neighbours of one owner share an entry.
        let uneven = try ChunkPlan(ranges: [0..<30, 30..<40, 40..<50, 50..<60, 60..<90], parameterCount: 90)
        let dealt = try RangeOwnerMap(plan: uneven, owners: [1, 2], generation: 0)
        #expect(dealt.entries == [.init(chunks: 0..<1, owner: 1), .init(chunks: 1..<4, owner: 2), .init(chunks: 4..<5, owner: 1)])
    }

    /// Any plan and owner count: every chunk owned once, no owner more than an equal share plus
    /// one chunk, and with equal chunks no two neighbouring chunks of the same owner (W > 1).
    @Test func dealtChunksCoverThePlanOnceAndBalanceElements() throws {
        var rng = CounterRNG(seed: 3, purpose: .evaluation)
        for _ in 0..<200 {
            let plan = try Self.randomPlan(&rng)
            for owners in 1...6 {
                let map = try RangeOwnerMap(plan: plan, owners: (1...owners).map(UInt32.init), generation: 0)
                #expect(map.owners.count == min(owners, plan.count))
                #expect(map.owners.reduce(0) { $0 + map.elements(ownedBy: $1) } == plan.parameterCount)
                let largest = plan.ranges.map(\.count).max()!
                #expect(map.owners.allSatisfy { map.elements(ownedBy: $0) <= plan.parameterCount / map.owners.count + largest })
            }
        }
        let equal = try ChunkPlan(ranges: (0..<39).map { ($0 * 4)..<($0 * 4 + 4) }, parameterCount: 156)
        for owners in 2...8 {
            let map = try RangeOwnerMap(plan: equal, owners: (1...owners).map(UInt32.init), generation: 0)
            #expect((1..<39).allSatisfy { map.owner(ofChunk: $0) != map.owner(ofChunk: $0 - 1) })
        }
        // A plan of many chunks is dealt in runs: the map stays small, and still balanced.
        let many = try ChunkPlan(ranges: (0..<10_000).map { $0..<($0 + 1) }, parameterCount: 10_000)
        let runs = try RangeOwnerMap(plan: many, owners: [1, 2, 3], generation: 0)
        #expect(runs.entries.count <= 3 * RangeOwnerMap.dealsPerOwner + 1)
        #expect(runs.owners.allSatisfy { abs(runs.elements(ownedBy: $0) - 10_000 / 3) <= 10_000 / (3 * RangeOwnerMap.dealsPerOwner) })
    }

    @Test func mapRefusesBadOwnersAndBadEntries() throws {
        let plan = try ChunkPlan(ranges: [0..<3, 3..<7, 7..<10], parameterCount: 10)
        #expect(throws: ClusterError.self) { try RangeOwnerMap(plan: plan, owners: [], generation: 0) }
        #expect(throws: ClusterError.self) { try RangeOwnerMap(plan: plan, owners: [2, 2], generation: 0) }
        typealias E = RangeOwnerMap.Entry
        for bad: [E] in [[], [E(chunks: 0..<2, owner: 1)], [E(chunks: 1..<3, owner: 1)],
                         [E(chunks: 0..<1, owner: 1), E(chunks: 2..<3, owner: 2)],
                         [E(chunks: 0..<0, owner: 1), E(chunks: 0..<3, owner: 2)],
                         [E(chunks: 0..<2, owner: 1), E(chunks: 1..<3, owner: 2)], [E(chunks: 0..<4, owner: 1)]] {
            #expect(throws: ClusterError.self) { try RangeOwnerMap(plan: plan, entries: bad, generation: 0) }
        }
        let ok = try RangeOwnerMap(plan: plan, entries: [E(chunks: 0..<1, owner: 4), E(chunks: 1..<3, owner: 4)], generation: 1)
        #expect(ok.owners == [4] && ok.elements(ownedBy: 4) == 10)
    }

    /// A forgotten owner's ranges go to the least-loaded survivors; survivors keep theirs; the
    /// generation moves on; the last owner cannot be forgotten.
    @Test func forgettingMovesOnlyTheDeadOwnersRanges() throws {
        let plan = try ChunkPlan(ranges: (0..<6).map { ($0 * 10)..<($0 * 10 + 10) }, parameterCount: 60)
        let map = try RangeOwnerMap(plan: plan, owners: [1, 2, 3], generation: 7)
        let after = try #require(map.forgetting(2))
        #expect(after.generation == 8)
        // Dealt 1, 2, 3, 1, 2, 3: 1 and 3 hold 20 each, the tie goes to the lowest id, then 3 is the lighter.
        #expect((0..<6).map(after.owner(ofChunk:)) == [1, 1, 3, 1, 3, 3])
        #expect(map.forgetting(9)?.entries == map.entries && map.forgetting(9)?.generation == 8)
        let last = try #require(after.forgetting(1))
        #expect(last.owners == [3] && last.elements(ownedBy: 3) == 60 && last.generation == 9)
        #expect(last.forgetting(3) == nil)

        var rng = CounterRNG(seed: 11, purpose: .evaluation)
        for _ in 0..<200 {
            let plan = try Self.randomPlan(&rng)
            let ids = (1...(1 + rng.int(below: 5))).map { UInt32($0 * 2) }
            var map = try RangeOwnerMap(plan: plan, owners: ids, generation: 0)
            while map.owners.count > 1 {
                let dead = map.owners[rng.int(below: map.owners.count)]
                let next = try #require(map.forgetting(dead))
                #expect(!next.owners.contains(dead) && next.generation == map.generation + 1)
                for c in 0..<plan.count where map.owner(ofChunk: c) != dead {
                    #expect(next.owner(ofChunk: c) == map.owner(ofChunk: c), "a survivor lost a range")
                }
                #expect(next.forgetting(dead)?.entries == next.entries)   // deterministic and idempotent in effect
                #expect(map.forgetting(dead) == next)
                map = next
            }
            #expect(map.forgetting(map.owners[0]) == nil)
        }
    }

    // MARK: Range reducer

    /// Shards arrive in a random order, split over 1 to 5 owners: every chunk's sum is the
    /// whole-buffer reducer's, bit for bit (values that make float addition's order show).
    @Test func rangeReducersGiveTheWholeBufferSumsBitForBit() throws {
        var rng = CounterRNG(seed: 5, purpose: .evaluation)
        for _ in 0..<60 {
            let plan = try Self.randomPlan(&rng)
            let s = 1 + rng.int(below: 5)
            let shards: [[Float]] = (0..<s).map { _ in
                (0..<plan.parameterCount).map { _ in Float(rng.normal()) * [1, 1e8, 1e-8][rng.int(below: 3)] }
            }
            let whole = ShardOrderReducer(plan: plan, shardCount: s)
            var pieces = (0..<s).flatMap { k in (0..<plan.count).map { (k, $0) } }
            for i in pieces.indices.reversed() { pieces.swapAt(i, rng.int(below: i + 1)) }
            for (k, c) in pieces {
                shards[k].withUnsafeBufferPointer { _ = whole.add(shard: k, chunk: c, UnsafeBufferPointer(rebasing: $0[plan[c]])) }
            }
            let reference = Array(UnsafeBufferPointer(start: whole.total, count: plan.parameterCount))
            for owners in 1...5 {
                let map = try RangeOwnerMap(plan: plan, owners: (0..<owners).map { UInt32($0) }, generation: 0)
                let reducers = map.owners.map { RangeReducer(map: map, owner: $0, shardCount: s) }
                for (k, c) in pieces.reversed() {
                    let r = reducers.first { $0.owns(chunk: c) }!
                    #expect(reducers.filter { $0.owns(chunk: c) }.count == 1)
                    #expect(!r.contains(shard: k, chunk: c))
                    shards[k].withUnsafeBufferPointer { _ = r.add(shard: k, chunk: c, UnsafeBufferPointer(rebasing: $0[plan[c]])) }
                }
                var got = [Float](repeating: .nan, count: plan.parameterCount)
                for r in reducers {
                    #expect(r.isDone && r.incompleteShards.isEmpty)
                    for c in 0..<plan.count where r.owns(chunk: c) {
                        #expect(r.isReduced(chunk: c))
                        for (i, v) in zip(plan[c], r.reduced(chunk: c)) { got[i] = v }
                    }
                    for (i, chunks) in r.ranges.enumerated() {
                        let span = plan[chunks.lowerBound].lowerBound..<plan[chunks.upperBound - 1].upperBound
                        let expected = reference.withUnsafeBufferPointer { Checksum.of(UnsafeBufferPointer(rebasing: $0[span])) }
                        #expect(r.checksum(range: i) == expected)
                    }
                }
                #expect(bits(got) == bits(reference))
            }
        }
    }

    @Test func rangeReducerTracksItsOwnRangesOnly() throws {
        let plan = try ChunkPlan(ranges: [0..<1, 1..<2, 2..<3, 3..<4], parameterCount: 4)
        let map = try RangeOwnerMap(plan: plan, owners: [1, 2], generation: 0)
        let r = RangeReducer(map: map, owner: 2, shardCount: 2)
        let idle = RangeReducer(map: map, owner: 9, shardCount: 2)
        #expect(idle.isDone && idle.ranges.isEmpty)
        #expect(!r.owns(chunk: 0) && r.owns(chunk: 1) && !r.owns(chunk: 2) && r.owns(chunk: 3) && !r.owns(chunk: 4))
        #expect(r.ranges == [1..<2, 3..<4])
        let one: [Float] = [1]
        func add(_ k: Int, _ c: Int) -> Bool { one.withUnsafeBufferPointer { r.add(shard: k, chunk: c, $0) } }
        #expect(!add(1, 1) && add(0, 1) && r.isDone(range: 0) && !r.isDone && r.incompleteShards == [0, 1])
        #expect(!add(0, 3) && r.incompleteShards == [1])
        #expect(add(1, 3) && r.isDone(range: 1) && r.isDone && r.reduced(chunk: 3)[0] == 2)
        r.reset()
        #expect(!r.isDone && !r.contains(shard: 0, chunk: 1))
    }

    /// A lossy broadcast: the owner keeps what the receivers decode, not its exact sum.
    @Test func lossyUpdateReplacesTheSumByWhatReceiversDecode() throws {
        let plan = try ChunkPlan(ranges: [0..<8], parameterCount: 8)
        let map = try RangeOwnerMap(plan: plan, owners: [1], generation: 0)
        let r = RangeReducer(map: map, owner: 1, shardCount: 1)
        let g: [Float] = [0.1, -3, 0.2, 5, 0.01, 0, -0.3, 1]
        g.withUnsafeBufferPointer { _ = r.add(shard: 0, chunk: 0, $0) }
        let codec = TopKCodec(fraction: 0.25)
        let m = r.updateMessage(chunk: 0, header: MessageHeader(type: .update, step: 2, parameterVersion: 3), codec: codec)
        #expect(m.header.keyOffset == 0 && m.header.keyCount == 8 && m.header.parameterVersion == 3)
        let decoded = try m.decodeTensor(codec: codec)
        #expect(bits(Array(r.reduced(chunk: 0))) == bits(decoded))
        #expect(decoded == [0, -3, 0, 5, 0, 0, 0, 0])
    }
}
