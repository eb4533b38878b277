import Foundation

/// Version of the control-message schemas below (carried in hello).
public let clusterProtocolVersion = 1

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
}

/// `checksumReport` (worker → coordinator): the worker's parameters diverged (or it missed an
/// update) and it needs a full copy.
public struct ChecksumReportBody: Codable, Sendable {
    public var parameterVersion: Int
    public var checksum: UInt64
    public var expected: UInt64
    public var reason: String
}

/// `shutdown` (coordinator → worker).
public struct ShutdownBody: Codable, Sendable {
    public var reason: String
    public var success: Bool
}
