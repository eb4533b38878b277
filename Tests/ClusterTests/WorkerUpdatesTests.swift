import Foundation
import Testing
import Wire
@testable import Cluster

/// The worker's update intake without threads or sockets: late and superseded chunks are
/// dropped, an owned chunk yields its new parameters, and the assembled update (gradients, other
/// owners' parameters, owned chunks) gives the replica the bits of the whole-gradient update.
@Suite struct WorkerUpdatesTests {
    static let n = 12
    static let plan = try! ChunkPlan(ranges: [0..<3, 3..<7, 7..<12], parameterCount: n)

    static func chunk(_ type: MessageType, _ c: Int, _ values: [Float], version: Int, generation: UInt32) -> Message {
        var h = MessageHeader(type: type, runID: 42)
        h.parameterVersion = UInt64(version)
        h.generation = generation
        let r = plan[c]
        h.keyOffset = UInt64(r.lowerBound)
        return Array(values[r]).withUnsafeBufferPointer { Message(header: h, tensor: $0, codec: RawCodec()) }
    }

    @Test func ownedChunksAndOtherOwnersParametersAssembleToTheWholeUpdate() throws {
        let gradient = (0..<Self.n).map { Float($0) * 0.25 - 1 }
        // The reference: the whole reduced gradient applied on one replica.
        let reference = ToyWorkerWorkload(n: Self.n, shards: 1)
        gradient.withUnsafeBufferPointer { reference.apply(gradient: $0.baseAddress!) }
        // The owner of chunk 1 computes its parameters; the owner of chunk 2 is simulated by the reference.
        let owner = ToyWorkerWorkload(n: Self.n, shards: 1)
        var updates = WorkerUpdates()
        var sent: [(MessageHeader, Message)] = []
        func take(_ m: Message, owned: Bool = false) -> WorkerUpdates.Outcome {
            updates.take(m, owned: owned, sharded: true, workload: owner, plan: Self.plan, codec: "raw") { sent.append(($0, $1)) }
        }
        #expect(take(Self.chunk(.update, 0, gradient, version: 1, generation: 2)) == .pending)
        // A chunk of an older generation is dropped; a newer one starts the update again.
        #expect(take(Self.chunk(.update, 1, gradient, version: 1, generation: 1)) == .ignored)
        #expect(take(Self.chunk(.update, 1, gradient, version: 1, generation: 3), owned: true) == .pending)
        #expect(take(Self.chunk(.update, 0, gradient, version: 1, generation: 3)) == .pending)
        // A late copy of the current version's base is dropped; a version beyond the next is refused.
        #expect(take(Self.chunk(.update, 0, gradient, version: 0, generation: 3)) == .ignored)
        if case .refused(_, versionMismatch: true) = take(Self.chunk(.update, 0, gradient, version: 2, generation: 3)) {} else {
            Issue.record("an update two versions ahead must be refused as a version mismatch")
        }
        // The owned chunk's parameters went out, tagged like the chunk, equal to the reference's.
        #expect(sent.count == 1)
        let (header, message) = try #require(sent.first)
        #expect(header.type == .rangeParameters && header.generation == 3 && header.parameterVersion == 1 && header.keyOffset == 3)
        let decoded = try Message.decode(frames: message.frames(), limits: toyLimits)
        #expect(bits(try decoded.decodeTensor()) == bits(Array(reference.state.p[Self.plan[1]])))
        // Until the update is complete the replica is untouched.
        #expect(owner.version == 0 && bits(owner.state.p) == bits(ToyState(n: Self.n).p))
        #expect(take(Self.chunk(.rangeParameters, 2, reference.state.p, version: 1, generation: 3)) == .complete)
        updates.apply(to: owner)
        #expect(owner.version == 1)
        #expect(bits(owner.state.p) == bits(reference.state.p))
        // The owned chunk's moments are current; the other owner's chunk kept the old ones.
        #expect(bits(Array(owner.state.m[Self.plan[1]])) == bits(Array(reference.state.m[Self.plan[1]])))
        #expect(bits(Array(owner.state.m[Self.plan[2]])) != bits(Array(reference.state.m[Self.plan[2]])))
    }

    @Test func parametersForAWorkloadWithoutTheOwnerOptimizerAreRefused() {
        final class Plain: WorkerWorkload, @unchecked Sendable {
            let toy = ToyWorkerWorkload(n: WorkerUpdatesTests.n, shards: 1)
            var datasetHash: String { toy.datasetHash }
            var parallelism: Int { 1 }
            var parameterCount: Int { toy.parameterCount }
            var parameters: UnsafePointer<Float> { toy.parameters }
            var version: Int { toy.version }
            func apply(gradient: UnsafePointer<Float>, range: Range<Int>) { toy.apply(gradient: gradient, range: range) }
            func finishStep() { toy.finishStep() }
            func replicaSnapshot() -> StateSnapshot { toy.replicaSnapshot() }
            func restore(replica: StateSnapshot) throws { try toy.restore(replica: replica) }
            func gradientBuffer(slot: Int) -> UnsafeBufferPointer<Float> { toy.gradientBuffer(slot: slot) }
            func computeShard(step: Int, shard: Int, slot: Int, chunks: [Range<Int>], onChunkReady: (Int) -> Void) -> GradientMeta {
                toy.computeShard(step: step, shard: shard, slot: slot, chunks: chunks, onChunkReady: onChunkReady)
            }
        }
        var updates = WorkerUpdates()
        let values = [Float](repeating: 1, count: Self.n)
        let outcome = updates.take(Self.chunk(.rangeParameters, 0, values, version: 1, generation: 1), owned: false, sharded: true,
                                   workload: Plain(), plan: Self.plan, codec: "raw") { _, _ in }
        if case .refused(_, versionMismatch: false) = outcome {} else { Issue.record("got \(outcome)") }
    }
}
