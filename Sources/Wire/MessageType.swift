/// What a message is, and so what its payload holds. Raw values are part of the protocol: never
/// renumber a case; add new ones with new numbers (docs/protocol.md, "Message types").
public enum MessageType: UInt16, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// Worker → coordinator: registration (JSON body: worker id, incarnation, capabilities).
    case hello = 1
    /// Coordinator → worker: registration accepted (JSON body: run id, worker id, run configuration, dataset hash, chunk plan).
    case welcome = 2
    /// Coordinator → worker: registration or message refused (JSON body: reason).
    case reject = 3
    /// Either direction: liveness (empty payload).
    case heartbeat = 4
    /// Coordinator → worker: the shards of a step to compute, and the parameter version to use (JSON).
    case assign = 5
    /// Worker → coordinator: one shard's gradient over a key range, encoded by `codec`.
    case gradient = 6
    /// Coordinator → worker: a full copy of the parameters over a key range (rejoin or repair).
    case parameters = 7
    /// Coordinator → worker: the reduced step result that takes parameter version v to v + 1.
    case update = 8
    /// Worker → coordinator: the checksum of the worker's parameters at a version (JSON).
    case checksumReport = 9
    /// Coordinator → worker: samples to annotate (JSON).
    case annotateRequest = 10
    /// Worker → coordinator: annotations (JSON).
    case annotateResult = 11
    /// Coordinator → worker: stop cleanly (empty payload or JSON reason).
    case shutdown = 12
    /// Either direction: a protocol-level error report (JSON body: kind, description).
    case error = 13
    /// Worker → coordinator, sharded reduction: every chunk of a shard went to its range owner
    /// (JSON: the shard's `GradientMeta`).
    case shardDone = 14
    /// Worker → worker, optimiser sharded across range owners: the parameters at version v + 1 of
    /// one chunk the sender owns (it applied the optimiser to the chunk's reduced gradient).
    case rangeParameters = 15

    /// True for messages whose payload is a Float32 tensor over the header's key range, encoded by
    /// a `GradientCodec`; false for control messages, whose payload is JSON or empty.
    public var carriesTensor: Bool {
        switch self {
        case .gradient, .parameters, .update, .rangeParameters: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .hello: "hello"
        case .welcome: "welcome"
        case .reject: "reject"
        case .heartbeat: "heartbeat"
        case .assign: "assign"
        case .gradient: "gradient"
        case .parameters: "parameters"
        case .update: "update"
        case .checksumReport: "checksumReport"
        case .annotateRequest: "annotateRequest"
        case .annotateResult: "annotateResult"
        case .shutdown: "shutdown"
        case .error: "error"
        case .shardDone: "shardDone"
        case .rangeParameters: "rangeParameters"
        }
    }
}
