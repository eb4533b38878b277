import Foundation
import Testing
import Wire
@testable import Cluster

/// The messages a worker builds for one shard, decoded again: headers carry the assignment's
/// identity, chunks go with the owner map's generation when there is one, meta only when given,
/// and a lossy codec applies error feedback (and falls back to the raw chunk on a non-finite one).
@Suite struct ShardMessagesTests {
    let welcome = WelcomeBody(runID: 77, workerID: 5, workloadSpec: [], datasetHash: "h", shardCount: 4, codec: "lz4",
                              heartbeatInterval: 1, coordinatorTimeout: 4, chunkOffsets: [0, 3])
    var assignment: MessageHeader {
        var h = MessageHeader(type: .assign, generation: 9, runID: 77)
        h.coordinatorIncarnation = 3
        return h
    }

    func messages(ownerGeneration: UInt32? = nil) -> ShardMessages {
        ShardMessages(welcome: welcome, assignment: assignment, ownerGeneration: ownerGeneration, senderIncarnation: 11,
                      step: 12, shard: 2, version: 12, sealed: false)
    }

    @Test func gradientChunksRoundTrip() throws {
        let values: [Float] = [1, -2, 3.5, 0.25]
        let meta = GradientMeta(loss: 0.5, terms: ["denoising": 0.5], rows: 8, computeSeconds: 0.1)
        for (owner, generation) in [(nil, UInt32(9)), (UInt32(4), UInt32(4))] {
            let frames = values.withUnsafeBufferPointer {
                messages(ownerGeneration: owner).gradient(offset: 3, values: $0, codec: try! CodecRegistry.codec(named: "lz4"), meta: meta, feedback: nil)
            }
            let m = try Message.decode(frames: frames)
            #expect(m.header.type == .gradient && m.header.generation == generation)
            #expect(m.header.runID == 77 && m.header.senderID == 5 && m.header.senderIncarnation == 11 && m.header.coordinatorIncarnation == 3)
            #expect(m.header.step == 12 && m.header.shard == 2 && m.header.shardCount == 4 && m.header.parameterVersion == 12)
            #expect(m.header.keyOffset == 3 && m.header.keyCount == 4)
            #expect(try m.decodeTensor() == values)
            #expect(try m.decodeMeta(GradientMeta.self) == meta)
        }
        let plain = try Message.decode(frames: values.withUnsafeBufferPointer {
            messages().gradient(offset: 0, values: $0, codec: try! CodecRegistry.codec(named: "raw"), meta: nil, feedback: nil)
        })
        #expect(try plain.decodeMeta(GradientMeta.self) == nil)
        let done = try Message.decode(frames: try #require(messages(ownerGeneration: 4).shardDone(meta)))
        #expect(done.header.type == .shardDone && done.header.generation == 9 && done.header.shard == 2)
        #expect(try done.decodeJSON(GradientMeta.self) == meta)
    }

    @Test func lossyChunksCarryErrorFeedback() throws {
        let codec = try CodecRegistry.codec(named: "topk:0.5")
        let box = FeedbackBox(state: ErrorFeedback(count: 4), lastStep: 0)
        let values: [Float] = [4, -0.5, 0.25, -3]
        let m = try Message.decode(frames: values.withUnsafeBufferPointer {
            messages().gradient(offset: 0, values: $0, codec: codec, meta: nil, feedback: box)
        })
        #expect(m.header.codec == codec.id && m.header.keyCount == 4 && m.header.rawLength == 16)
        let sent = try m.decodeTensor(codec: codec)
        // What was not sent is kept for the next gradient: sent + residual = the gradient.
        #expect(zip(sent, box.state.residual).map { $0 + $1 } == values, "\(sent) \(box.state.residual)")
        #expect(box.state.residual.contains { $0 != 0 })

        // A non-finite gradient goes out as it is (the receiver refuses it) and resets the feedback.
        let bad: [Float] = [.nan, 1, 2, 3]
        _ = bad.withUnsafeBufferPointer { messages().gradient(offset: 0, values: $0, codec: codec, meta: nil, feedback: box) }
        #expect(box.state.residual.allSatisfy { $0 == 0 })
    }
}
