import Foundation
import Wire

/// The messages a worker sends for one assigned shard: its gradient chunks (to the coordinator
/// or to the chunks' range owners) and, with range owners, the shard's completion to the
/// coordinator. Pure: it builds headers and frames, and applies the lossy codec's error
/// feedback through the box it is given; sending is the caller's.
struct ShardMessages {
    let welcome: WelcomeBody
    /// The assignment's header (its generation and the coordinator's incarnation).
    let assignment: MessageHeader
    /// The owner map's generation when the chunks go to range owners (nil: to the coordinator).
    let ownerGeneration: UInt32?
    let senderIncarnation: UInt64
    let step: Int
    let shard: Int
    let version: Int
    /// Both of the worker's links are sealed: payloads go without checksums.
    let sealed: Bool

    private func header(_ type: MessageType, generation: UInt32) -> MessageHeader {
        MessageHeader(type: type, flags: sealed ? .uncheckedPayload : [], generation: generation, runID: welcome.runID,
                      coordinatorIncarnation: assignment.coordinatorIncarnation, senderID: welcome.workerID,
                      senderIncarnation: senderIncarnation, step: UInt64(step), shard: UInt32(shard),
                      shardCount: UInt32(welcome.shardCount), parameterVersion: UInt64(version))
    }

    /// A gradient chunk's header before its payload: to a range owner with the owner map's
    /// generation, to the coordinator with the assignment's.
    private func gradientHeader(offset: Int) -> MessageHeader {
        var h = header(.gradient, generation: ownerGeneration ?? assignment.generation)
        h.keyOffset = UInt64(offset)
        return h
    }

    /// The frames of the gradient chunk at `offset` with `values`, encoded with `codec`, carrying
    /// `meta` (the shard's loss and timing) when given. A lossy codec needs `feedback`: what it
    /// drops now is added to this shard's next gradient of the chunk. A non-finite gradient goes
    /// out raw (the receiver rejects it and the shard is computed again) and resets the feedback.
    func gradient(offset: Int, values: UnsafeBufferPointer<Float>, codec: any GradientCodec, meta: GradientMeta?,
                  feedback: FeedbackBox?) -> [[UInt8]] {
        var h = gradientHeader(offset: offset)
        let metaBytes = meta.flatMap { try? Message.jsonPayload($0) } ?? []
        if !codec.isLossless, let feedback {
            var bytes: [UInt8] = []
            do {
                try feedback.state.compensateAndEncode(values, codec: codec, into: &bytes)
                h.codec = codec.id
                h.keyCount = UInt64(values.count)
                h.rawLength = UInt64(values.count) * 4
                return Message(header: h, payload: bytes, meta: metaBytes).frames()
            } catch {
                feedback.state.reset()
            }
        }
        return Message(header: h, tensor: values, codec: codec, meta: metaBytes).frames()
    }

    /// The header of a gradient chunk this worker owns and reduces itself (a lossless codec,
    /// range owners): what `gradient` would put on the wire, with no payload behind it.
    func ownGradientHeader(offset: Int, count: Int) -> MessageHeader {
        var h = gradientHeader(offset: offset)
        h.keyCount = UInt64(count)
        h.rawLength = UInt64(count) * 4
        return h
    }

    /// The shard's completion for the coordinator (with range owners, whose gradient chunks
    /// then carry no meta): its loss, rows and compute time.
    func shardDone(_ meta: GradientMeta) -> [[UInt8]]? {
        (try? Message.control(header(.shardDone, generation: assignment.generation), body: meta))?.frames()
    }
}
