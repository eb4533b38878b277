@testable import Cluster
import Foundation
import Testing
import Wire

/// The data thread of a worker that owns ranges, driven directly over an in-memory endpoint:
/// its own gradient chunks (values, never encoded) pass the same tag checks as received ones.
@Suite struct WorkerDataPlaneTests {
    final class Replica: @unchecked Sendable {
        private let lock = NSLock()
        private var messages: [Message] = []
        func add(_ m: Message) { lock.lock(); messages.append(m); lock.unlock() }
        var all: [Message] { lock.lock(); defer { lock.unlock() }; return messages }
    }

    func header(step: Int, generation: UInt32, shard: Int, offset: Int, count: Int, incarnation: UInt64 = 9) -> MessageHeader {
        var h = MessageHeader(type: .gradient, generation: generation, runID: 1, coordinatorIncarnation: incarnation,
                              senderID: 1, senderIncarnation: 2, step: UInt64(step), shard: UInt32(shard),
                              shardCount: 2, parameterVersion: UInt64(step))
        h.keyOffset = UInt64(offset)
        h.keyCount = UInt64(count)
        return h
    }

    @Test func ownChunksAreReducedAsValuesWithTheTagChecksOfReceivedOnes() throws {
        let mesh = InMemoryDataMesh()
        let plan = try ChunkPlan(ranges: [0..<4, 4..<8], parameterCount: 8)
        let map = try RangeOwnerMap(plan: plan, owners: [1], generation: 3)
        let body = RangeOwnersBody(map: map, addresses: [1: "inproc://w1"], receivers: ["inproc://w1"])
        let replica = Replica()
        let plane = WorkerDataPlane(makeEndpoint: { _ in mesh.endpoint("inproc://w1") },
                                    limits: WireLimits(maxPayloadBytes: 1 << 20, maxRawBytes: 1 << 20, maxJSONBytes: 1024),
                                    logger: silentLogger(), toReplica: { replica.add($0) }, toCoordinator: { _ in })
        try plane.open(key: nil)
        plane.start()
        defer { plane.stop() }
        plane.submit(.plan(plan, codec: "lz4", shardCount: 2))
        // Shard 1 of chunk 0 arrives before the step is configured: it waits, then counts.
        plane.submit(.ownChunk(0, header(step: 5, generation: 3, shard: 1, offset: 0, count: 4), [1, 2, 3, 4]))
        plane.submit(.configure(step: 5, version: 5, owners: body, me: 1, template: header(step: 5, generation: 3, shard: 0, offset: 0, count: 0)))
        // Refused: an older owner map, another coordinator incarnation, the wrong length.
        plane.submit(.ownChunk(0, header(step: 5, generation: 2, shard: 0, offset: 0, count: 4), [100, 100, 100, 100]))
        plane.submit(.ownChunk(0, header(step: 5, generation: 3, shard: 0, offset: 0, count: 4, incarnation: 8), [200, 200, 200, 200]))
        plane.submit(.ownChunk(0, header(step: 5, generation: 3, shard: 0, offset: 0, count: 4), [300, 300, 300]))
        // Chunk 1 gets only one of its two shards: never reduced.
        plane.submit(.ownChunk(1, header(step: 5, generation: 3, shard: 0, offset: 4, count: 4), [5, 5, 5, 5]))
        plane.submit(.ownChunk(0, header(step: 5, generation: 3, shard: 0, offset: 0, count: 4), [10, 20, 30, 40]))
        let deadline = Date().addingTimeInterval(5)
        while replica.all.isEmpty && Date() < deadline { usleep(5_000) }
        usleep(50_000)   // time for a wrong second update to show up
        let updates = replica.all
        try #require(updates.count == 1, "expected one reduced chunk, got \(updates.count)")
        let u = updates[0]
        #expect(u.header.type == .update && u.header.keyOffset == 0 && u.header.keyCount == 4)
        #expect(u.header.parameterVersion == 6 && u.header.generation == 3)
        #expect(try u.decodeTensor() == [11, 22, 33, 44])
    }
}
