import Foundation
import Wire
import Testing
@testable import Cluster

/// The checks a worker runs on control bodies before using any field as an index: pure
/// functions, tested here without sockets (the scripted-cluster tests cover their use).
@Suite struct ControlMessageValidationTests {
    static func welcome(shards: Int = 4, offsets: [Int]) -> WelcomeBody {
        WelcomeBody(runID: 1, workerID: 1, workloadSpec: [], datasetHash: "h", shardCount: shards, codec: "raw",
                    heartbeatInterval: 1, coordinatorTimeout: 4, chunkOffsets: offsets)
    }

    @Test func welcomeChunkPlan() {
        let w = Self.welcome(offsets: [0, 4, 10])
        #expect(w.problem == nil)
        #expect(w.chunkRanges(parameterCount: 12) == [0..<4, 4..<10, 10..<12])
        let plan = w.chunkPlan(parameterCount: 12)
        #expect(plan?.chunk(keyOffset: 4, keyCount: 6) == 1)
        #expect(plan?.chunk(keyOffset: 10, keyCount: 2) == 2)
        #expect(plan?.chunk(keyOffset: 5, keyCount: 5) == nil)
        #expect(w.chunkRanges(parameterCount: 10) == nil, "the last chunk would be empty")
    }

    @Test func badWelcomesNameTheirProblem() {
        #expect(Self.welcome(offsets: [1, 4]).problem != nil)
        #expect(Self.welcome(offsets: [0, 4, 4]).problem != nil)
        #expect(Self.welcome(offsets: []).problem != nil)
        #expect(Self.welcome(shards: 0, offsets: [0]).problem != nil)
        #expect(Self.welcome(shards: Int(UInt32.max) + 1, offsets: [0]).problem != nil)
    }

    @Test func assignBounds() {
        let a = AssignBody(step: 3, shards: [0, 2], parameterVersion: 3, parameterChecksum: 0)
        #expect(a.isValid(shardCount: 4))
        #expect(!a.isValid(shardCount: 2))
        #expect(!AssignBody(step: 3, shards: [1, 1], parameterVersion: 3, parameterChecksum: 0).isValid(shardCount: 4))
        #expect(!AssignBody(step: -1, shards: [0], parameterVersion: 3, parameterChecksum: 0).isValid(shardCount: 4))
    }

    @Test func stateSections() throws {
        func meta(_ names: [String], _ counts: [Int]) -> StateMeta {
            StateMeta(sections: names, counts: counts, counters: [:], parameterChecksum: 0)
        }
        #expect(try meta(["p", "m"], [3, 2]).sectionRanges(valueCount: 5).get() == [0..<3, 3..<5])
        #expect(throws: ClusterError.self) { try meta(["p", "m"], [3, 2]).sectionRanges(valueCount: 6).get() }
        #expect(throws: ClusterError.self) { try meta(["p"], [3, 2]).sectionRanges(valueCount: 5).get() }
        #expect(throws: ClusterError.self) { try meta(["p", "m"], [7, -2]).sectionRanges(valueCount: 5).get() }
        #expect(throws: ClusterError.self) { try meta(["p", "m"], [Int.max, 2]).sectionRanges(valueCount: 1).get() }
    }

    /// The "keep your replica" message passes the receiver's header checks and round-trips its
    /// digest; a join's digest round-trips too (UInt64 beyond 2^53 included).
    @Test func keepReplicaMessageRoundTrips() throws {
        let digest = ReplicaDigest(version: 0, digest: 0xFEDC_BA98_7654_3211)
        let h = MessageHeader(type: .parameters, runID: 42, coordinatorIncarnation: 1, senderID: 0, senderIncarnation: 1,
                              step: 0, shard: 0, shardCount: 0, parameterVersion: 0)
        let m = try #require(StateMeta.keepMessage(h, digest: digest, parameterChecksum: 7, limits: toyLimits))
        let back = try Message.decode(frames: m.frames(), limits: toyLimits)
        let meta = try #require(try back.decodeMeta(StateMeta.self, limits: toyLimits))
        #expect(meta.keep == digest && meta.parameterChecksum == 7 && meta.sections.isEmpty)
        #expect(try back.decodeTensor().isEmpty)
        let hello = HelloBody(phase: .join, workerName: "w", host: "h", pid: 1, protocolVersion: clusterProtocolVersion,
                              runID: 42, datasetHash: "x", threads: 1, replica: digest)
        let data = try JSONEncoder().encode(hello)
        #expect(try JSONDecoder().decode(HelloBody.self, from: data).replica == digest)
        // A hello from a build without the field still decodes (and gets the full state).
        let old = try JSONSerialization.data(withJSONObject: ["phase": "join", "workerName": "w", "host": "h", "pid": 1,
                                                              "protocolVersion": 1, "threads": 1])
        #expect(try JSONDecoder().decode(HelloBody.self, from: old).replica == nil)
    }
}
