/// A worker as the coordinator knows it: one connection (routing id), its id, whether it has
/// joined, when it was last heard from, the shards of the current step it still owes, and the
/// messages its socket would not take yet.
public final class WorkerRecord {
    public let peer: PeerID
    public let id: UInt32
    public var name: String
    public var incarnation: UInt64
    public var joined = false
    public var lastSeen: Double
    /// Shards of the current step this worker still owes.
    public var pending: Set<Int> = []
    public var backlog = SendBacklog()
    /// Where its reducer's data endpoint listens (hello), nil if it has none.
    public var dataAddress: String?
    /// Its join announced that its optimiser can update the ranges it owns (`HelloBody.ownerOptimizer`).
    public var ownerOptimizer = false
    /// Chunks whose optimiser moments this worker's replica may not hold at the current version:
    /// under a map whose owners apply the optimiser a worker updates only the moments of the
    /// chunks it owns. Empty after it received (or kept) the full state.
    public var staleMoments: Set<Int> = []

    public init(peer: PeerID, id: UInt32, name: String, incarnation: UInt64, now: Double) {
        self.peer = peer
        self.id = id
        self.name = name
        self.incarnation = incarnation
        lastSeen = now
    }

    public var label: String { "\(name)#\(id)" }
}

/// The coordinator's table of workers, keyed by connection: admission (ids in order of first
/// contact), heartbeat deadlines, and the one way out (`forget`), which hands back the shards
/// the worker owed so that no shard is ever owned by a worker that will not compute it. Also
/// the two ways shards are planned onto workers. No sockets, threads or clock of its own: the
/// caller passes the time.
public final class Membership {
    private var records: [PeerID: WorkerRecord] = [:]
    private var nextID: UInt32 = 1
    /// When any worker was last heard from (a run with none for too long gives up).
    public var lastHeard: Double

    public init(now: Double) { lastHeard = now }

    public subscript(peer: PeerID) -> WorkerRecord? { records[peer] }
    public var all: [WorkerRecord] { Array(records.values) }
    public var peers: [PeerID] { Array(records.keys) }

    /// Joined workers, by id.
    public var live: [WorkerRecord] { records.values.filter(\.joined).sorted { $0.id < $1.id } }

    /// `record` is still this connection's entry (not removed or replaced since).
    public func isCurrent(_ record: WorkerRecord) -> Bool { records[record.peer] === record }

    /// The record of `peer`, created with the next id on first contact.
    public func admit(_ peer: PeerID, name: String, incarnation: UInt64, now: Double) -> WorkerRecord {
        lastHeard = now
        if let r = records[peer] { return r }
        let r = WorkerRecord(peer: peer, id: nextID, name: name, incarnation: incarnation, now: now)
        nextID += 1
        records[peer] = r
        return r
    }

    /// A message arrived from `peer` (unknown peers are not recorded).
    public func heard(from peer: PeerID, now: Double) {
        guard let r = records[peer] else { return }
        r.lastSeen = now
        lastHeard = now
    }

    /// Other connections registered under `name` (older incarnations of a restarted worker).
    public func namesakes(of name: String, otherThan peer: PeerID) -> [WorkerRecord] {
        records.values.filter { $0.name == name && $0.peer != peer }
    }

    /// Workers not heard from for longer than `timeout`.
    public func silent(now: Double, timeout: Double) -> [WorkerRecord] {
        records.values.filter { now - $0.lastSeen > timeout }
    }

    /// Removes the worker from the table (`remove`) or only un-joins it (it registers again on
    /// the same connection), and returns the shards it owed, in order, for the caller to hand
    /// to others. Nothing for a record that was already removed.
    public func forget(_ record: WorkerRecord, remove: Bool) -> [Int] {
        if remove {
            guard isCurrent(record) else { return [] }
            records[record.peer] = nil
        }
        record.joined = false
        let owed = record.pending.sorted()
        record.pending = []
        return owed
    }

    /// A new step's plan: shard k to the k-th live worker round-robin (by id).
    public func roundRobin(shards n: Int) -> [(WorkerRecord, [Int])] {
        let live = self.live
        guard !live.isEmpty else { return [] }
        return live.indices.compactMap { i in
            let ks = Array(stride(from: i, to: n, by: live.count))
            return ks.isEmpty ? nil : (live[i], ks)
        }
    }

    /// Each shard to the live worker with the fewest pending shards (ties: lowest id), counting
    /// the shards planned so far, among the live workers that are `eligible`; `avoiding` is
    /// left out when another such worker is live. Empty when none is.
    public func leastLoaded(_ shards: [Int], avoiding: PeerID? = nil,
                            eligible: (WorkerRecord) -> Bool = { _ in true }) -> [(WorkerRecord, [Int])] {
        var live = self.live.filter(eligible)
        if live.count > 1, let avoid = avoiding { live.removeAll { $0.peer == avoid } }
        guard !live.isEmpty else { return [] }
        var load = live.map(\.pending.count)
        var plan = [[Int]](repeating: [], count: live.count)
        for k in shards {
            let i = live.indices.min { (load[$0], live[$0].id) < (load[$1], live[$1].id) }!
            plan[i].append(k)
            load[i] += 1
        }
        return live.indices.compactMap { plan[$0].isEmpty ? nil : (live[$0], plan[$0]) }
    }
}

/// When a step is late: before three shard turnarounds have been measured, the initial
/// deadline; after, `max(minimum, factor x median turnaround x shards held by the busiest
/// worker)` from now. A turnaround runs from a shard's assignment to its gradient's arrival
/// (docs/protocol.md says why not compute time alone); the last 64 count.
public struct StepDeadlines {
    public var initial: Double
    public var factor: Double
    public var minimum: Double
    public private(set) var turnarounds: [Double] = []

    public init(initial: Double, factor: Double, minimum: Double) {
        self.initial = initial
        self.factor = factor
        self.minimum = minimum
    }

    public mutating func record(turnaround: Double) {
        turnarounds.append(turnaround)
        if turnarounds.count > 64 { turnarounds.removeFirst(turnarounds.count - 64) }
    }

    /// The new deadline of a step whose deadline is `current`, at `now`, when the busiest live
    /// worker holds `maxLoad` shards.
    public func deadline(now: Double, current: Double, maxLoad: Int) -> Double {
        guard turnarounds.count >= 3 else { return max(current, now + initial) }
        let median = turnarounds.sorted()[turnarounds.count / 2]
        return now + max(minimum, factor * median * Double(max(maxLoad, 1)))
    }
}
