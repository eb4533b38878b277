import Wire

/// A worker's side of the update broadcast: the chunks that take version v to v + 1 arrive one
/// message each, in any order, and are decoded into one buffer; the update is complete when every
/// chunk of the plan is in. A chunk is a reduced gradient, to be applied with the optimiser, or
/// (the optimiser sharded across the range owners) the chunk's new parameters, from its owner or
/// from this worker's own optimiser. Until then the worker keeps its parameters at v (it may still
/// be asked to compute shards of step v). No threads or sockets.
public struct UpdateAssembler {
    /// What a chunk of the buffer holds.
    public enum Kind: Equatable, Sendable {
        /// A reduced gradient: the optimiser still has to be applied.
        case gradient
        /// The new parameters, sent by the chunk's owner.
        case parameters
        /// The reduced gradient of a chunk this worker owns, whose new parameters and moments its
        /// own optimiser wrote elsewhere.
        case owned
    }

    public let plan: ChunkPlan
    public private(set) var buffer: [Float]
    /// The kind of each chunk of the update in progress (meaningful for the chunks received).
    public private(set) var kinds: [Kind]
    private var arrived: Set<Int> = []

    public init(plan: ChunkPlan) {
        self.plan = plan
        buffer = [Float](repeating: 0, count: plan.parameterCount)
        kinds = [Kind](repeating: .gradient, count: plan.count)
    }

    /// Why a chunk was not taken.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// The key range is not exactly one chunk of the plan.
        case notAChunk(offset: UInt64, count: UInt64)
        /// That chunk of this update is in already.
        case twice(offset: Int)
        case undecodable(WireError)

        public var description: String {
            switch self {
            case let .notAChunk(offset, count): "update chunk [\(offset), +\(count)) does not fit the chunk plan"
            case let .twice(offset): "update chunk at \(offset) came twice"
            case let .undecodable(error): "undecodable update: \(error)"
            }
        }
    }

    /// Decodes the chunk at `[keyOffset, keyOffset + keyCount)` with `decode` (which fills the
    /// chunk's slice of the buffer). Returns true when this completed the update: `buffer` then
    /// holds it until the next `accept`, which starts the next update.
    public mutating func accept(keyOffset: UInt64, keyCount: UInt64, kind: Kind = .gradient,
                                decode: (UnsafeMutableBufferPointer<Float>) throws(WireError) -> Void) -> Result<Bool, Refusal> {
        guard let c = plan.chunk(keyOffset: keyOffset, keyCount: keyCount) else {
            return .failure(.notAChunk(offset: keyOffset, count: keyCount))
        }
        guard !arrived.contains(c) else { return .failure(.twice(offset: plan[c].lowerBound)) }
        let range = plan[c]
        let result: Result<Void, WireError> = buffer.withUnsafeMutableBufferPointer { buf in
            Result { () throws(WireError) in try decode(UnsafeMutableBufferPointer(rebasing: buf[range])) }
        }
        if case let .failure(error) = result { return .failure(.undecodable(error)) }
        arrived.insert(c)
        kinds[c] = kind
        guard arrived.count == plan.count else { return .success(false) }
        arrived = []
        return .success(true)
    }

    /// Forgets the chunks received so far (the parameters were replaced by a full copy).
    public mutating func reset() { arrived = [] }

    /// Chunks of the update in progress received so far.
    public var received: Int { arrived.count }
}

extension UpdateAssembler {
    /// The complete update as runs of consecutive chunks of one kind, in key order: a run of
    /// gradient chunks is one optimiser call, not one per chunk.
    public var runs: [(range: Range<Int>, kind: Kind)] {
        var out: [(range: Range<Int>, kind: Kind)] = []
        for c in 0..<plan.count {
            let r = plan[c]
            if let last = out.last, last.kind == kinds[c], last.range.upperBound == r.lowerBound, kinds[c] == .gradient {
                out[out.count - 1].range = last.range.lowerBound..<r.upperBound
            } else {
                out.append((r, kinds[c]))
            }
        }
        return out
    }
}
