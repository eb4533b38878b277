/// The fault-injection suite's scenarios (`ambient-faults --list`), in the order a full run takes them.
public enum Scenario: String, CaseIterable, Sendable {
    case workerKill = "worker-kill"
    case workerStop = "worker-stop"
    case workerRestart = "worker-restart"
    case coordinatorKill = "coordinator-kill"
    case coordinatorKillCheckpoint = "coordinator-kill-checkpoint"
    case checkpointBitflip = "checkpoint-bitflip"
    case linkCut = "link-cut"
    case diskFull = "disk-full"
    case reducerKill = "reducer-kill"
    case ownerOptimizerKill = "owner-optimizer-kill"

    /// link-cut makes network namespaces and veth pairs, disk-full mounts a tmpfs.
    public var needsRoot: Bool { self == .linkCut || self == .diskFull }

    /// One line of `--help`.
    public var summary: String {
        switch self {
        case .workerKill: "kill -9 of a random worker at a random step"
        case .workerStop: "SIGSTOP of a random worker for 3-6 s, then\nSIGCONT"
        case .workerRestart: "kill -9 of a random worker, restarted at once\n(new incarnation)"
        case .coordinatorKill: "kill -9 of the coordinator at a random step,\nrestarted"
        case .coordinatorKillCheckpoint:
            "kill -9 of the coordinator while a checkpoint is\nbeing written (its .partial. temporary file\nexists), restarted"
        case .checkpointBitflip:
            "coordinator killed, one random bit of the newest\ncheckpoint flipped, restarted: the previous\ncheckpoint must be used"
        case .linkCut:
            "(root) every worker in its own network namespace\nbehind a veth pair, CURVE keys; a random worker's\nlink goes down for 3-6 s"
        case .diskFull:
            "(root) the checkpoint directory is a tmpfs with\nroom for one checkpoint: the coordinator must\nstop with a clear message and leave no partial\nfile; then the tmpfs is grown and the run resumed"
        case .reducerKill:
            "sharded reduction (coordinator --range-owners W,\nevery worker with a loopback --data-bind, so\nevery worker owns a range): kill -9 of a random\nworker at a random step; its ranges move to\nsurvivors"
        case .ownerOptimizerKill:
            "reducer-kill with --owners-apply (each owner\napplies Adam to its ranges): the survivors\nget the full state before they own ranges whose\nmoments only the victim kept"
        }
    }
}

/// The two run configurations of the suite and their checkpoint intervals.
public enum Configurations {
    /// The 289k-parameter MLP every scenario but coordinator-kill-checkpoint runs.
    public static func small(steps: Int) -> [String] {
        ["--data", "gmm:dim=16,count=4000", "--corrupt", "noise:0.5", "--objective", "ambient", "--width", "256", "--blocks", "2",
         "--batch", "96", "--shards", "4", "--steps", String(steps), "--log-every", "1", "--seed", "3"]
    }
    public static let smallCheckpointEvery = 50
    /// An 8.5M-parameter MLP (~100 MB checkpoints), so that a checkpoint write takes a while.
    public static let big = ["--data", "gmm:dim=16,count=2000", "--corrupt", "noise:0.5", "--objective", "ambient", "--width", "1024",
                             "--blocks", "4", "--batch", "16", "--shards", "2", "--steps", "30", "--log-every", "1", "--seed", "4"]
    public static let bigCheckpointEvery = 5
}
