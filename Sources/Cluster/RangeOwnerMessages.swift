/// The sharded reduction's control fields (docs/protocol.md, "Range owners"): where a worker's
/// reducer listens (`HelloBody.dataAddress`), who owns which range under which generation
/// (`RangeOwnersBody`, in welcome and assign). All optional in the JSON bodies of protocol
/// version 1: a coordinator that sends none keeps the single-coordinator data plane.

/// One owned range as it travels: chunks `firstChunk ..< endChunk` of the welcome's chunk plan,
/// reduced by worker `owner` (0: the coordinator), whose data socket is at `address`.
public struct OwnerRangeBody: Codable, Sendable, Equatable {
    public var firstChunk: Int
    public var endChunk: Int
    public var owner: UInt32
    /// `tcp://host:port`, `ipc://path` or `inproc://name`; nil only for the coordinator (owner
    /// 0), whose range travels on the control connection.
    public var address: String?

    public init(firstChunk: Int, endChunk: Int, owner: UInt32, address: String?) {
        self.firstChunk = firstChunk
        self.endChunk = endChunk
        self.owner = owner
        self.address = address
    }
}

/// The range owner map of one generation, as welcome and assign carry it.
public struct RangeOwnersBody: Codable, Sendable, Equatable {
    public var generation: UInt32
    public var ranges: [OwnerRangeBody]
    /// The data addresses every owner sends its reduced ranges to (the workers of the step;
    /// the coordinator gets them on its own connection).
    public var receivers: [String]
    /// The worker that sends the coordinator every reduced chunk (it receives them all anyway);
    /// nil: each owner sends its own. The coordinator picks a worker on its own host, so the
    /// copy crosses no host link.
    public var relay: UInt32?
    /// True: each owner applies the optimiser to its reduced ranges and sends the receivers the new
    /// parameters (`rangeParameters`) instead of the reduced gradient, which goes to the
    /// coordinator alone (no relay). Nil or false: the reduced gradient goes to everyone.
    public var ownersApply: Bool?

    public init(generation: UInt32, ranges: [OwnerRangeBody], receivers: [String] = [], relay: UInt32? = nil,
                ownersApply: Bool? = nil) {
        self.generation = generation
        self.ranges = ranges
        self.receivers = receivers
        self.relay = relay
        self.ownersApply = ownersApply
    }

    /// The body of `map`, with each owner's data address (the coordinator's range has none).
    public init(map: RangeOwnerMap, addresses: [UInt32: String], receivers: [String] = [], relay: UInt32? = nil,
                ownersApply: Bool? = nil) {
        generation = map.generation
        self.receivers = receivers
        self.relay = relay
        self.ownersApply = ownersApply
        ranges = map.entries.map {
            OwnerRangeBody(firstChunk: $0.chunks.lowerBound, endChunk: $0.chunks.upperBound, owner: $0.owner,
                           address: addresses[$0.owner])
        }
    }

    /// Longest data address accepted (a path or host name with a port).
    public static let maxAddressBytes = 512

    /// Whether `address` names a data socket a worker may connect to.
    public static func isDataAddress(_ address: String) -> Bool {
        guard address.utf8.count <= maxAddressBytes, !address.contains(where: { $0.isWhitespace || $0.isNewline }) else { return false }
        return ["tcp://", "ipc://", "inproc://"].contains { address.hasPrefix($0) && address.count > $0.count }
    }

    /// The map for a plan of `plan`, or why the body cannot be followed: ranges that are not
    /// whole chunks of the plan in order, a worker's range without a data address, one owner
    /// at two addresses, a receiver that is no data address. Checked before any field is used
    /// as an index.
    public func map(plan: ChunkPlan) -> Result<RangeOwnerMap, ClusterError> {
        guard receivers.allSatisfy(Self.isDataAddress) else {
            return .failure(ClusterError("every receiver of the reduced ranges must be a data address (tcp://, ipc:// or inproc://)"))
        }
        if ownersApply == true && relay != nil {
            return .failure(ClusterError("owners that apply the optimiser send no reduced gradients to the workers, so there is nothing to relay: a map with ownersApply must have no relay"))
        }
        guard ranges.allSatisfy({ $0.firstChunk >= 0 && $0.firstChunk < $0.endChunk && $0.endChunk <= plan.count }) else {
            return .failure(ClusterError("owned ranges must be non-empty chunk ranges within the plan's \(plan.count) chunks"))
        }
        var addressOf: [UInt32: String?] = [:]
        for r in ranges {
            if r.owner != 0 {
                guard let a = r.address, Self.isDataAddress(a) else {
                    return .failure(ClusterError("range owner \(r.owner) has no valid data address (tcp://, ipc:// or inproc://)"))
                }
            }
            if let seen = addressOf[r.owner], seen != r.address {
                return .failure(ClusterError("range owner \(r.owner) is named with two data addresses"))
            }
            addressOf[r.owner] = r.address
        }
        let entries = ranges.map { RangeOwnerMap.Entry(chunks: $0.firstChunk..<$0.endChunk, owner: $0.owner) }
        return Result { () throws(ClusterError) in try RangeOwnerMap(plan: plan, entries: entries, generation: generation) }
    }

    /// The data address of `owner` (nil for the coordinator or a stranger).
    public func address(of owner: UInt32) -> String? {
        ranges.first { $0.owner == owner }?.address ?? nil
    }
}
