@testable import Cluster
import Foundation
import Testing
import Wire

/// The coordinator's control-plane parts without threads, sockets or a real clock: the worker
/// table, shard planning, step deadlines, and how a gradient header is judged.
@Suite struct MembershipTests {
    let a = PeerID("a/1"), b = PeerID("b/1"), c = PeerID("c/1")

    @Test func admissionGivesIdsInOrderOfFirstContact() {
        let m = Membership(now: 0)
        let ra = m.admit(a, name: "a", incarnation: 1, now: 1)
        let rb = m.admit(b, name: "b", incarnation: 1, now: 2)
        #expect(ra.id == 1 && rb.id == 2)
        #expect(m.admit(a, name: "a", incarnation: 1, now: 3) === ra)
        #expect(m.lastHeard == 3)
        #expect(m.live.isEmpty)
        rb.joined = true
        ra.joined = true
        #expect(m.live.map(\.id) == [1, 2])
        #expect(m.namesakes(of: "a", otherThan: c).map(\.peer) == [a])
        #expect(m.namesakes(of: "a", otherThan: a).isEmpty)
    }

    @Test func silenceIsJudgedFromTheLastMessage() {
        let m = Membership(now: 0)
        let ra = m.admit(a, name: "a", incarnation: 1, now: 0)
        _ = m.admit(b, name: "b", incarnation: 1, now: 0)
        m.heard(from: a, now: 3)
        m.heard(from: c, now: 4)   // unknown: not recorded
        #expect(m[c] == nil && m.lastHeard == 3)
        #expect(m.silent(now: 4, timeout: 4).isEmpty)
        #expect(m.silent(now: 4.5, timeout: 4).map(\.peer) == [b])
        #expect(Set(m.silent(now: 7.5, timeout: 4).map(\.peer)) == [a, b])
        #expect(ra.lastSeen == 3)
    }

    @Test func forgetHandsBackTheOwedShardsOnce() {
        let m = Membership(now: 0)
        let ra = m.admit(a, name: "a", incarnation: 1, now: 0)
        ra.joined = true
        ra.pending = [5, 1, 3]
        #expect(m.forget(ra, remove: false) == [1, 3, 5])
        #expect(m[a] === ra && !ra.joined && ra.pending.isEmpty)
        ra.joined = true
        ra.pending = [2]
        #expect(m.forget(ra, remove: true) == [2])
        #expect(m[a] == nil && !m.isCurrent(ra))
        ra.pending = [4]
        #expect(m.forget(ra, remove: true) == [])   // already removed: nothing to hand back twice
        // A new record on the same connection is not the old one.
        let again = m.admit(a, name: "a", incarnation: 2, now: 1)
        #expect(again.id == 2 && m.isCurrent(again) && !m.isCurrent(ra))
    }

    @Test func stepPlansRoundRobinAndReassignmentsToTheLeastLoaded() {
        let m = Membership(now: 0)
        let rs = [a, b, c].enumerated().map { m.admit($1, name: "w\($0)", incarnation: 1, now: 0) }
        #expect(m.roundRobin(shards: 4).isEmpty)   // nobody joined
        for r in rs { r.joined = true }
        let plan = m.roundRobin(shards: 7)
        #expect(plan.map(\.0.id) == [1, 2, 3] && plan.map(\.1) == [[0, 3, 6], [1, 4], [2, 5]])
        #expect(m.roundRobin(shards: 2).map(\.1) == [[0], [1]])
        rs[0].pending = [0, 3]
        rs[1].pending = [1]
        rs[2].pending = [2, 5]
        // Lowest load first, ties by id; each planned shard counts.
        #expect(m.leastLoaded([10, 11, 12]).map { [$0.0.id] + $0.1.map(UInt32.init) } == [[1, 11], [2, 10, 12]])
        #expect(m.leastLoaded([10], avoiding: b).map(\.0.id) == [1])
        rs[0].joined = false
        rs[2].joined = false
        #expect(m.leastLoaded([10], avoiding: b).map(\.0.id) == [2])   // the only live worker
        rs[1].joined = false
        #expect(m.leastLoaded([10]).isEmpty)
    }

    @Test func deadlinesStartFixedThenFollowTheMedianTurnaround() {
        var d = StepDeadlines(initial: 60, factor: 10, minimum: 3)
        #expect(d.deadline(now: 5, current: 100, maxLoad: 2) == 100)
        #expect(d.deadline(now: 50, current: 100, maxLoad: 2) == 110)
        d.record(turnaround: 0.5)
        d.record(turnaround: 0.1)
        #expect(d.deadline(now: 50, current: 0, maxLoad: 2) == 110)   // two samples are not enough
        d.record(turnaround: 0.2)
        #expect(d.deadline(now: 50, current: 0, maxLoad: 2) == 54)    // 10 x median 0.2 x 2 shards
        #expect(d.deadline(now: 50, current: 0, maxLoad: 0) == 53)    // at least the minimum
        for _ in 0..<100 { d.record(turnaround: 1) }
        #expect(d.turnarounds.count == 64)
        #expect(d.deadline(now: 0, current: 0, maxLoad: 1) == 10)
    }

    @Test func gradientHeadersAreJudgedByStepShardChunkOwnerAndAssignment() throws {
        let plan = try ChunkPlan(ranges: [0..<4, 4..<8], parameterCount: 8)
        let reducer = ShardOrderReducer(plan: plan, shardCount: 2)
        var state = StepState(step: 3, shards: 2, now: 0, deadline: 10)
        state.owner = [a, b]
        state.assignedGeneration = [7, 9]
        func header(step: UInt64 = 3, version: UInt64 = 3, shard: UInt32 = 0, shards: UInt32 = 2, offset: UInt64 = 4,
                    count: UInt64 = 4, generation: UInt32 = 7) -> MessageHeader {
            var h = MessageHeader(type: .gradient, generation: generation, runID: 42, step: step, shard: shard, shardCount: shards,
                                  parameterVersion: version)
            h.keyOffset = offset
            h.keyCount = count
            return h
        }
        func judge(_ h: MessageHeader, from peer: PeerID) -> StepState.Verdict {
            state.classify(h, from: peer, version: 3, plan: plan, reducer: reducer)
        }
        #expect(judge(header(), from: a) == .accept(shard: 0, chunk: 1))
        #expect(judge(header(shard: 1, offset: 0, generation: 9), from: b) == .accept(shard: 1, chunk: 0))
        #expect(judge(header(step: 2), from: a) == .stale)
        #expect(judge(header(version: 4), from: a) == .stale)
        #expect(judge(header(shards: 3), from: a) == .stale)
        #expect(judge(header(shard: 2), from: a) == .stale)
        #expect(judge(header(shard: .max), from: a) == .stale)
        #expect(judge(header(generation: 6), from: a) == .stale)      // an earlier assignment of shard 0
        #expect(judge(header(offset: 5), from: a) == .keyRange)
        #expect(judge(header(count: 3), from: a) == .keyRange)
        #expect(judge(header(), from: b) == .duplicate)               // b does not own shard 0
        let g = [Float](repeating: 1, count: 4)
        g.withUnsafeBufferPointer { _ = reducer.add(shard: 0, chunk: 1, $0) }
        #expect(judge(header(), from: a) == .duplicate)               // that chunk is in
    }
}
