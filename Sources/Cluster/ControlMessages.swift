import Foundation

/// Version of the control-message schemas below (carried in hello). 2: parameter checksums are
/// `ParameterChecksum` (XXH64 of per-block XXH64s); 1 hashed the whole buffer at once.
public let clusterProtocolVersion = 2

/// `hello` (worker → coordinator). `probe` asks for the run; `join` registers with the run id
/// and the dataset hash the worker computed from its own copy of the data.
public struct HelloBody: Codable, Sendable {
    public enum Phase: String, Codable, Sendable { case probe, join }
    public var phase: Phase
    public var workerName: String
    public var host: String
    public var pid: Int32
    public var protocolVersion: Int
    public var runID: UInt64?
    public var datasetHash: String?
    public var threads: Int
    /// Where this worker's reducer data socket listens for the sharded reduction (tcp://,
    /// ipc://); nil: it does not reduce ranges.
    public var dataAddress: String?
    /// The replica this worker holds when it joins (nil in probes and from older builds): the
    /// coordinator sends the full state only when its own differs.
    public var replica: ReplicaDigest?
    /// In a join: true when this worker's replica can apply the optimiser to the ranges it owns
    /// and send the others their new parameters (`RangeOwnersBody.ownersApply`); nil or false
    /// (older builds, the Python worker): it takes reduced gradients only.
    public var ownerOptimizer: Bool?

    public init(phase: Phase, workerName: String, host: String, pid: Int32, protocolVersion: Int,
                runID: UInt64?, datasetHash: String?, threads: Int, dataAddress: String? = nil, replica: ReplicaDigest? = nil,
                ownerOptimizer: Bool? = nil) {
        self.phase = phase
        self.workerName = workerName
        self.host = host
        self.pid = pid
        self.protocolVersion = protocolVersion
        self.runID = runID
        self.datasetHash = datasetHash
        self.threads = threads
        self.dataAddress = dataAddress
        self.replica = replica
        self.ownerOptimizer = ownerOptimizer
    }
}

/// A replica's parameter version and `StateSnapshot.digest`: in a join, what the worker holds;
/// in a parameters message without a tensor (`StateMeta.keep`), what the coordinator holds.
public struct ReplicaDigest: Codable, Sendable, Equatable {
    public var version: Int
    public var digest: UInt64

    public init(version: Int, digest: UInt64) {
        self.version = version
        self.digest = digest
    }
}

/// `welcome` (coordinator → worker): the run to build.
public struct WelcomeBody: Codable, Sendable {
    public var runID: UInt64
    public var workerID: UInt32
    public var workloadSpec: [UInt8]
    public var datasetHash: String
    public var shardCount: Int
    public var codec: String
    public var heartbeatInterval: Double
    /// A worker that hears nothing from the coordinator for this long re-registers.
    public var coordinatorTimeout: Double
    /// Start of each gradient chunk in the parameter buffer (the first is 0); gradients and
    /// updates travel one message per chunk.
    public var chunkOffsets: [Int]
    /// Lossy codecs with checkpoints: where workers write the error-feedback residuals of the
    /// shards they compute before a checkpoint step (ResidualFile), and every how many steps.
    /// Nil: residuals are not checkpointed.
    public var residualDirectory: String? = nil
    public var checkpointEvery: Int? = nil
    /// The sharded reduction's range owners at the welcome (nil: the coordinator reduces
    /// everything). Later maps travel in assign.
    public var owners: RangeOwnersBody? = nil
    /// The run's CURVE key pair for the data links between workers (Z85, public and secret),
    /// sent only over a CURVE connection; nil: data links are plaintext (loopback only).
    public var dataKey: DataKeyBody? = nil
}

/// A CURVE key pair in a welcome (`WelcomeBody.dataKey`).
public struct DataKeyBody: Codable, Sendable, Equatable {
    public var publicKey: String
    public var secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// The pair, or nil unless both are 40-character Z85 keys.
    public var keyPair: CurveKeyPair? {
        isValidZ85Key(publicKey) && isValidZ85Key(secretKey) ? CurveKeyPair(publicKey: publicKey, secretKey: secretKey) : nil
    }
}

extension WelcomeBody {
    /// Why this welcome cannot be followed (nil: it can): a shard count outside 1...2^32 - 1, or
    /// chunk offsets that do not start at 0 and increase. Checked before any field is used as an
    /// index, so a bad coordinator makes a worker stop with this reason instead of trapping.
    public var problem: String? {
        guard shardCount >= 1 && shardCount <= Int(UInt32.max) else { return "shard count \(shardCount) is not in 1...\(UInt32.max)" }
        guard chunkOffsets.first == 0, zip(chunkOffsets, chunkOffsets.dropFirst()).allSatisfy({ $0 < $1 }) else {
            return "chunk offsets must start at 0 and increase"
        }
        return nil
    }
}

/// `reject` (coordinator → worker). `rejoin` true: register again (the coordinator does not
/// know this peer, e.g. after a restart or a drop); false: give up (bad data, wrong protocol).
public struct RejectBody: Codable, Sendable {
    public var reason: String
    public var rejoin: Bool
}

/// `assign` (coordinator → worker): shards of a step to compute with a parameter version.
public struct AssignBody: Codable, Sendable {
    public var step: Int
    public var shards: [Int]
    public var parameterVersion: Int
    /// XXH64 of the coordinator's parameters at that version: a worker whose parameters differ
    /// asks for a full copy instead of computing.
    public var parameterChecksum: UInt64
    /// The range owner map this step's gradients are sent by (nil: all to the coordinator).
    public var owners: RangeOwnersBody? = nil
}

extension AssignBody {
    /// Step and version are not negative, and every shard is below `shardCount`, once.
    public func isValid(shardCount: Int) -> Bool {
        step >= 0 && parameterVersion >= 0 && shards.allSatisfy { $0 >= 0 && $0 < shardCount } && Set(shards).count == shards.count
    }
}

/// Meta frame of `update` (coordinator → worker). The parameter checksum after the update
/// travels in the next `assign`: the update is sent before the coordinator applies it, so
/// its optimiser step overlaps the transfer and the workers' own.
public struct UpdateMeta: Codable, Sendable {
    public var loss: Double
}

/// Meta frame of `parameters`: how the flat payload splits into the snapshot's sections.
public struct StateMeta: Codable, Sendable {
    public var sections: [String]
    public var counts: [Int]
    public var counters: [String: Int]
    public var parameterChecksum: UInt64
    /// Set when the message carries no tensor: the worker's replica (version and digest as in
    /// its join) equals the coordinator's, so it keeps it instead of loading one.
    public var keep: ReplicaDigest?
}

extension StateMeta {
    /// The payload range of each section for a payload of `valueCount` floats, or why there is
    /// none: one count per name, none negative, no overflow, and they add up to the payload.
    /// Checked before any count is used as an index.
    public func sectionRanges(valueCount: Int) -> Result<[Range<Int>], ClusterError> {
        guard sections.count == counts.count else { return .failure(ClusterError("parameters message without a valid state description")) }
        var ranges: [Range<Int>] = []
        var total = 0
        for c in counts {
            let (end, overflow) = total.addingReportingOverflow(c)
            guard c >= 0, !overflow else { return .failure(ClusterError("parameters: section size \(c) is invalid")) }
            ranges.append(total..<end)
            total = end
        }
        guard total == valueCount else { return .failure(ClusterError("parameters: section sizes do not add up")) }
        return .success(ranges)
    }
}

/// `checksumReport` (worker → coordinator): the worker's parameters diverged (or it missed an
/// update) and it needs a full copy.
public struct ChecksumReportBody: Codable, Sendable {
    public var parameterVersion: Int
    public var checksum: UInt64
    public var expected: UInt64
    public var reason: String

    public init(parameterVersion: Int, checksum: UInt64, expected: UInt64, reason: String) {
        self.parameterVersion = parameterVersion
        self.checksum = checksum
        self.expected = expected
        self.reason = reason
    }
}

/// `shutdown` (coordinator → worker).
public struct ShutdownBody: Codable, Sendable {
    public var reason: String
    public var success: Bool
}
