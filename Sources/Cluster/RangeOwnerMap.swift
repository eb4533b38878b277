/// Who reduces which part of the gradient in the sharded reduction (the BytePS / PS-Lite
/// server-group design): the chunks of the plan are dealt to the reducers in turn, so each
/// owns many short ranges of whole chunks spread over the whole model, and every entry is
/// owned by one reducer (a worker id; 0 is the coordinator). Workers send each gradient
/// chunk to its owner; the owner sums it over shards and sends the reduced chunk to every
/// worker. A map belongs to one assignment generation: it only changes by `forgetting` an
/// owner, which gives a new generation.
///
/// Why dealt and not cut into W contiguous groups: the backward pass finishes the chunks in
/// order (the last layers first), so under contiguous groups the first half of a 2-owner
/// backward pass only feeds one owner, whose link alone carries traffic while the other idles,
/// and at 8 owners seven senders share one receiver's link at a time. Dealt in turn, every
/// link carries its share from the first finished chunk on (docs/benchmarks.md, "Chunks dealt
/// to the owners in turn"). Sums, bytes and bits are the same either way.
///
/// Pure value: no sockets, threads or clock. The same map is computed by the coordinator and
/// carried to workers as `OwnerRange`s (with the owners' data addresses) in welcome and assign.
public struct RangeOwnerMap: Sendable, Equatable {
    /// One owned range: chunks `chunks` of the plan, reduced by worker `owner`.
    public struct Entry: Sendable, Equatable {
        public var chunks: Range<Int>
        public var owner: UInt32
        public init(chunks: Range<Int>, owner: UInt32) {
            self.chunks = chunks
            self.owner = owner
        }
    }

    public let plan: ChunkPlan
    public let generation: UInt32
    /// The ranges in chunk order, covering every chunk of the plan once.
    public let entries: [Entry]
    /// Per chunk: the index of its entry.
    private let entryOfChunk: [Int]

    /// The chunks dealt to `owners` (distinct ids) in chunk order, each to the owner that holds
    /// the fewest elements so far (ties: the earlier in `owners`): with equal chunks a round
    /// robin, so neighbouring chunks, which the backward pass finishes at about the same time,
    /// go to different owners. Neighbouring chunks of one owner share an entry. A plan of more
    /// than `dealsPerOwner` chunks per owner is dealt in runs of neighbouring chunks, so the map
    /// every assign carries stays about `dealsPerOwner` entries per owner for any model size.
    /// With more owners than chunks, the last owners get nothing.
    public init(plan: ChunkPlan, owners: [UInt32], generation: UInt32) throws(ClusterError) {
        guard !owners.isEmpty, Set(owners).count == owners.count else {
            throw ClusterError("a range owner map needs at least one owner, each named once (got \(owners))")
        }
        let run = max(1, plan.count / (Self.dealsPerOwner * owners.count))
        var load = [Int](repeating: 0, count: owners.count)
        var entries: [Entry] = []
        for first in stride(from: 0, to: plan.count, by: run) {
            let chunks = first..<min(first + run, plan.count)
            let i = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            load[i] += plan[chunks.upperBound - 1].upperBound - plan[first].lowerBound
            if let last = entries.last, last.owner == owners[i] {
                entries[entries.count - 1].chunks = last.chunks.lowerBound..<chunks.upperBound
            } else {
                entries.append(Entry(chunks: chunks, owner: owners[i]))
            }
        }
        try self.init(plan: plan, entries: entries, generation: generation)
    }

    /// Deals per owner before neighbouring chunks are dealt in runs (see `init(plan:owners:generation:)`).
    public static let dealsPerOwner = 64

    /// The map of `entries` as they came (from the wire): throws unless they are non-empty
    /// chunk ranges of the plan, in order, covering every chunk once.
    public init(plan: ChunkPlan, entries: [Entry], generation: UInt32) throws(ClusterError) {
        guard let first = entries.first, first.chunks.lowerBound == 0, entries.last!.chunks.upperBound == plan.count,
              entries.allSatisfy({ !$0.chunks.isEmpty }),
              zip(entries, entries.dropFirst()).allSatisfy({ $0.chunks.upperBound == $1.chunks.lowerBound }) else {
            throw ClusterError("the owned ranges must cover chunks 0..<\(plan.count) of the plan in order, none empty")
        }
        self.plan = plan
        self.generation = generation
        self.entries = entries
        var index = [Int](repeating: 0, count: plan.count)
        for (e, entry) in entries.enumerated() { for c in entry.chunks { index[c] = e } }
        entryOfChunk = index
    }

    public static func == (a: RangeOwnerMap, b: RangeOwnerMap) -> Bool {
        a.plan == b.plan && a.generation == b.generation && a.entries == b.entries
    }

    /// The owner of chunk c.
    public func owner(ofChunk c: Int) -> UInt32 { entries[entryOfChunk[c]].owner }

    /// The index in `entries` of the range holding chunk c.
    public func entry(ofChunk c: Int) -> Int { entryOfChunk[c] }

    /// Distinct owners, by id.
    public var owners: [UInt32] { Array(Set(entries.map(\.owner))).sorted() }

    /// The chunk ranges `owner` reduces, in order (empty if none).
    public func chunks(ownedBy owner: UInt32) -> [Range<Int>] {
        entries.filter { $0.owner == owner }.map(\.chunks)
    }

    /// The parameter elements of a chunk range.
    public func elements(_ chunks: Range<Int>) -> Int {
        plan[chunks.upperBound - 1].upperBound - plan[chunks.lowerBound].lowerBound
    }

    /// The parameter elements `owner` reduces.
    public func elements(ownedBy owner: UInt32) -> Int {
        chunks(ownedBy: owner).reduce(0) { $0 + elements($1) }
    }

    /// The map of the next generation without `owner` (dead or gone): each of its ranges, in
    /// chunk order, goes to the surviving owner reducing the fewest elements so far (ties: the
    /// lowest id), so the work stays balanced and every survivor keeps what it had (its error
    /// feedback and buffers stay valid); the same ranges under the next generation when `owner`
    /// held nothing. Nil when nobody survives. Deterministic: the coordinator and a test compute the same map.
    public func forgetting(_ owner: UInt32) -> RangeOwnerMap? {
        let survivors = owners.filter { $0 != owner }
        guard !survivors.isEmpty else { return nil }
        var load = Dictionary(uniqueKeysWithValues: survivors.map { ($0, elements(ownedBy: $0)) })
        var moved = entries
        for i in moved.indices where moved[i].owner == owner {
            let heir = survivors.min { (load[$0]!, $0) < (load[$1]!, $1) }!
            moved[i].owner = heir
            load[heir]! += elements(moved[i].chunks)
        }
        return try? RangeOwnerMap(plan: plan, entries: moved, generation: generation &+ 1)
    }

    /// The map of the next generation with `owners` instead (a worker joined, or the run
    /// starts again): the chunks dealt again over them.
    public func replacing(owners: [UInt32]) throws(ClusterError) -> RangeOwnerMap {
        try RangeOwnerMap(plan: plan, owners: owners, generation: generation &+ 1)
    }
}
