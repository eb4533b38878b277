import Wire

/// A worker's intake of the update that takes its replica from version v to v + 1, whatever
/// carries it: reduced gradient chunks (from the coordinator or the range owners), new parameters
/// from the owners that apply the optimiser (`rangeParameters`), and the reduced gradient of the
/// chunks this worker owns, whose optimiser update it computes here and hands back to be sent.
/// Chunks of an older version or owner-map generation are dropped; the update is applied when
/// every chunk of the plan is in. No threads or sockets: the compute thread owns it.
struct WorkerUpdates {
    private var assembler: UpdateAssembler?
    /// The owner-map generation of the update being assembled (0: none seen yet).
    private var generation: UInt32 = 0
    /// The new parameters and moments of the owned chunks, at the chunks' offsets (moments:
    /// `momentCount` values per parameter, a chunk's block at `momentCount` times its offset).
    private var ownParameters: [Float] = []
    private var ownMoments: [Float] = []

    enum Outcome: Equatable {
        /// A late copy, or a chunk of a map superseded since: nothing to do.
        case ignored
        /// Taken; more chunks are needed.
        case pending
        /// Taken, and the update is complete: `apply(to:)` it.
        case complete
        /// Refused: the replica may be out of sync (`versionMismatch`: at another version than
        /// the update's base, its checksum is worth reporting).
        case refused(String, versionMismatch: Bool)
    }

    /// Forgets the update in progress (the replica was replaced by a full state).
    mutating func reset() {
        assembler?.reset()
        generation = 0
    }

    /// Takes one chunk. `owned`: the reduced gradient of a chunk this worker owns under owners
    /// that apply the optimiser; its new parameters go to `send` as a `rangeParameters` message.
    /// `sharded`: the welcome's reduction is sharded (chunks come from several owners).
    /// `plan` is evaluated only when the first update after a new welcome needs its buffer.
    mutating func take(_ message: Message, owned: Bool, sharded: Bool, workload: any WorkerWorkload, plan: @autoclosure () -> ChunkPlan?,
                       codec: String, send: (MessageHeader, Message) -> Void) -> Outcome {
        let h = message.header
        let version = UInt64(workload.version)
        if sharded {
            if h.parameterVersion <= version { return .ignored }
            if h.parameterVersion == version + 1 {
                if h.generation < generation { return .ignored }
                if h.generation > generation {
                    assembler?.reset()
                    generation = h.generation
                }
            }
        }
        guard h.parameterVersion == version + 1 else {
            return .refused("update to version \(h.parameterVersion) but this worker holds version \(workload.version)", versionMismatch: true)
        }
        if assembler == nil {
            guard let plan = plan(), plan.parameterCount == workload.parameterCount else {
                return .refused("the welcome's chunk offsets do not fit the model's \(workload.parameterCount) parameters", versionMismatch: false)
            }
            assembler = UpdateAssembler(plan: plan)
        }
        let optimizer = workload as? any RangeOwnerOptimizer
        let kind: UpdateAssembler.Kind = owned ? .owned : h.type == .rangeParameters ? .parameters : .gradient
        if kind != .gradient && optimizer == nil {
            return .refused("sent a range's parameters, which this workload cannot take (it announced no owner optimiser)", versionMismatch: false)
        }
        switch assembler!.accept(keyOffset: h.keyOffset, keyCount: h.keyCount, kind: kind,
                                 decode: { (out) throws(WireError) in try message.decodeTensor(into: out) }) {
        case let .success(complete):
            if owned, let optimizer, let c = assembler!.plan.chunk(keyOffset: h.keyOffset, keyCount: h.keyCount),
               let codec = try? CodecRegistry.codec(named: codec) {
                var header = h
                header.type = .rangeParameters
                header.shard = 0
                send(header, updateOwned(chunk: c, optimizer: optimizer, header: header, codec: codec))
            }
            return complete ? .complete : .pending
        case let .failure(refusal):
            return .refused("\(refusal)", versionMismatch: false)
        }
    }

    /// Applies the optimiser to owned chunk `c`, whose reduced gradient is in the assembler, into
    /// the side buffers; returns the chunk's new parameters as a message with `header`.
    private mutating func updateOwned(chunk c: Int, optimizer: any RangeOwnerOptimizer, header: MessageHeader,
                                      codec: any GradientCodec) -> Message {
        let assembler = assembler!
        let n = assembler.plan.parameterCount, k = optimizer.momentCount, range = assembler.plan[c]
        if ownParameters.count != n { ownParameters = [Float](repeating: 0, count: n) }
        if ownMoments.count != k * n { ownMoments = [Float](repeating: 0, count: k * n) }
        assembler.buffer.withUnsafeBufferPointer { g in
            ownParameters.withUnsafeMutableBufferPointer { p in
                ownMoments.withUnsafeMutableBufferPointer { m in
                    optimizer.update(range: range, gradient: g.baseAddress! + range.lowerBound, parameters: p.baseAddress! + range.lowerBound,
                                     moments: m.baseAddress! + k * range.lowerBound)
                }
            }
        }
        return ownParameters.withUnsafeBufferPointer {
            Message(header: header, tensor: UnsafeBufferPointer(rebasing: $0[range]), codec: codec)
        }
    }

    /// Applies the complete update: gradient chunks go through the optimiser, parameter chunks are
    /// copied in (an owned chunk with its moments); then the step ends (the version advances).
    mutating func apply(to workload: any WorkerWorkload) {
        guard let assembler else { return }
        let optimizer = workload as? any RangeOwnerOptimizer
        let k = optimizer?.momentCount ?? 0
        assembler.buffer.withUnsafeBufferPointer { buf in
            for (range, kind) in assembler.runs {
                let at = buf.baseAddress! + range.lowerBound
                switch kind {
                case .gradient:
                    workload.apply(gradient: at, range: range)
                case .parameters:
                    optimizer?.assign(range: range, parameters: at, moments: nil)
                case .owned:
                    ownParameters.withUnsafeBufferPointer { p in
                        ownMoments.withUnsafeBufferPointer { m in
                            optimizer?.assign(range: range, parameters: p.baseAddress! + range.lowerBound,
                                              moments: m.baseAddress! + k * range.lowerBound)
                        }
                    }
                }
            }
        }
        workload.finishStep()
        generation = 0
    }
}
