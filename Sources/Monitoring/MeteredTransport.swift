import Cluster
import Foundation

/// The coordinator's transport with metering: every frame to and from a worker is counted
/// (bytes per peer, codec ratio), and the time the coordinator spends between two `receive`
/// calls is its own work (decoding, reducing, the optimiser, broadcasting). The coordinator
/// does not know it is metered.
public final class MeteredServerTransport: ServerTransport {
    private let base: any ServerTransport
    private let metrics: ClusterMetrics
    private let clock: any Clock
    private var returnedAt: Double?

    public var sealed: Bool { base.sealed }

    public init(_ base: any ServerTransport, metrics: ClusterMetrics, clock: any Clock = MonotonicClock()) {
        self.base = base
        self.metrics = metrics
        self.clock = clock
    }

    public func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        if let t = returnedAt { metrics.addBusy(clock.now() - t) }
        defer { returnedAt = clock.now() }
        let r = try base.receive(timeout: timeout)
        if let r { metrics.frames(r.frames, peer: Self.label(r.peer), sent: false, now: clock.now()) }
        return r
    }

    public func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) {
        try base.send(frames, to: peer)
        metrics.frames(frames, peer: Self.label(peer), sent: true, now: clock.now())
    }

    public func close() { base.close() }

    /// A worker's routing id is "NAME/INCARNATION": metrics are kept per name, so a restarted
    /// worker continues its series.
    static func label(_ peer: PeerID) -> String {
        let s = peer.description
        guard let slash = s.lastIndex(of: "/") else { return s }
        return String(s[..<slash])
    }
}

/// A worker's transport with metering: bytes to and from the coordinator, and the worker's
/// steps as its assignments and gradients show them (compute time, samples, loss).
public final class MeteredClientTransport: ClientTransport, @unchecked Sendable {
    private let base: any ClientTransport
    private let metrics: ClusterMetrics
    private let clock: any Clock
    private var returnedAt: Double?

    public var sealed: Bool { base.sealed }

    public init(_ base: any ClientTransport, metrics: ClusterMetrics, clock: any Clock = MonotonicClock()) {
        self.base = base
        self.metrics = metrics
        self.clock = clock
    }

    public func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? {
        if let t = returnedAt { metrics.addBusy(clock.now() - t) }
        defer { returnedAt = clock.now() }
        let r = try base.receive(timeout: timeout)
        if let r { metrics.frames(r, peer: "coordinator", sent: false, now: clock.now()) }
        return r
    }

    public func send(_ frames: [[UInt8]]) throws(TransportError) {
        try base.send(frames)
        metrics.frames(frames, peer: "coordinator", sent: true, now: clock.now())
    }

    public func wake() { base.wake() }
    public func close() { base.close() }
}
