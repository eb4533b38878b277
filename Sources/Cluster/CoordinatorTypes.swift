import Foundation
import Wire

/// Timing, limits and policies of a coordinator (docs/operations.md explains each).
public struct CoordinatorOptions: Sendable {
    public var runID: UInt64
    /// Codec of the update broadcast (workers choose theirs for gradients from the welcome).
    public var codec: String = "lz4"
    public var heartbeatInterval: Double = 0.5
    /// A worker silent for this long is dropped.
    public var heartbeatTimeout: Double = 4
    /// Told to workers: re-register after hearing nothing for this long.
    public var coordinatorTimeout: Double = 15
    /// Deadline of a step before shard timings exist.
    public var initialStepDeadline: Double = 60
    /// Deadline = max(minimumDeadline, factor x median shard time x shards held by the worker).
    public var deadlineFactor: Double = 10
    public var minimumDeadline: Double = 3
    /// Workers that must have joined before the first step starts.
    public var minWorkers: Int = 1
    /// Give up when no worker is available for this long.
    public var noWorkerTimeout: Double = 300
    /// Checkpoint every this many steps (0: only at the end).
    public var checkpointEvery: Int = 0
    /// Where workers write error-feedback residuals before checkpoint steps (lossy codecs
    /// only; see WelcomeBody.residualDirectory). Nil: residuals are not checkpointed.
    public var residualDirectory: String?
    /// A shard whose gradient is rejected (non-finite) this many times stops the run.
    public var maxShardAttempts: Int = 3
    /// Sharded reduction: up to this many workers each reduce a range of the gradient and send
    /// it to every worker, when every live worker has a data endpoint (default: all of them;
    /// 0: the coordinator reduces everything).
    public var rangeOwners: Int = .max
    /// With range owners and a lossless codec: each owner applies the optimiser to its ranges and
    /// sends the workers the new parameters, when every live worker announced it can
    /// (`HelloBody.ownerOptimizer`); false: every worker applies the optimiser to every range.
    /// Off by default: measured no faster on one machine, and with this coordinator still taking
    /// every reduced gradient it adds bytes between hosts (docs/benchmarks.md).
    public var ownersApply: Bool = false
    /// The CURVE key pair of the data links, given to admitted workers in the welcome (set it
    /// only when the coordinator's own transport is CURVE: the welcome carries the secret).
    public var dataKey: CurveKeyPair?
    /// The host of the coordinator's own endpoint: a worker whose data address is on it relays
    /// the reduced chunks to the coordinator (nil: every owner sends its own).
    public var host: String?
    /// After the shutdown messages, wait at most this long for the workers to leave.
    public var shutdownGrace: Double = 3
    public var limits: WireLimits

    public init(runID: UInt64, limits: WireLimits) {
        self.runID = runID
        self.limits = limits
    }
}

/// Something the coordinator did that an operator may want to know (events.jsonl, reports).
public struct ClusterEvent: Sendable, Codable {
    public enum Kind: String, Sendable, Codable {
        case start, restore, join, drop, reassign, reject, nonFinite, checkpoint, finish, fatal
    }
    public var time: Double
    public var kind: Kind
    public var step: Int
    public var worker: String
    public var detail: String
}

/// Counters of everything the coordinator rejected or recovered from.
public struct CoordinatorStats: Sendable {
    public var framesRejected: [String: Int] = [:]
    public var staleMessages = 0
    /// Sends that met a full queue and waited in a worker's backlog.
    public var backpressure = 0
    public var duplicateGradients = 0
    public var nonFiniteGradients = 0
    public var unknownPeers = 0
    public var joins = 0
    public var drops = 0
    public var reassignedShards = 0
    public var checkpoints = 0
    /// Full parameter copies sent to repair a worker that diverged or missed an update.
    public var repairs = 0
    /// Joins that needed no state transfer: the worker already held the coordinator's replica.
    public var statesKept = 0
    public var stepsCompleted = 0
    /// Steps computed again because a range owner left before its ranges arrived.
    public var ownerRestarts = 0
    /// Reduced chunks received from the relay on this coordinator's host, not from their owner.
    public var relayedChunks = 0
    /// Full states sent before an assign because the worker was to own a range whose optimiser
    /// moments it had not kept (owners that apply the optimiser, after a change of owner map).
    public var momentRefreshes = 0
    public var totalRejected: Int { framesRejected.values.reduce(0, +) }
}

/// The coordinator stopped on request (Ctrl-C, SIGTERM) after checkpointing.
public struct CoordinatorStopped: Error, CustomStringConvertible, Sendable {
    public let step: Int
    public let checkpoint: String?
    public var description: String {
        "stopped at step \(step); " + (checkpoint.map { "checkpoint \($0) written: run the same command again to resume" } ?? "no checkpoint store")
    }
}

/// A fatal condition of the run.
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
