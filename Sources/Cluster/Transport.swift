import Foundation

/// A worker as the coordinator's transport sees it: the ZeroMQ routing id (or the in-memory
/// equivalent). Workers put their name and process incarnation in it, so a restarted worker is
/// a new peer.
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// A transport failure. `unreachable` means the peer is gone (ZMQ_ROUTER_MANDATORY's
/// EHOSTUNREACH): the coordinator treats it as a dead worker. `full` means the peer's queue is
/// at its high-water mark (EAGAIN): the peer is alive but not keeping up, so the sender keeps
/// the message and tries again later instead of losing it.
public enum TransportError: Error, CustomStringConvertible, Sendable, Equatable {
    case unreachable(peer: String)
    case full(peer: String)
    case closed
    case failed(String)

    public var description: String {
        switch self {
        case let .unreachable(peer): return "peer \(peer) is unreachable"
        case let .full(peer): return "the queue to \(peer) is full"
        case .closed: return "transport closed"
        case let .failed(s): return s
        }
    }
}

/// The coordinator's end: receives from any worker, sends to one. Used by one thread.
public protocol ServerTransport: AnyObject {
    /// Every message on this end's links is authenticated by the transport (CURVE) or never
    /// leaves the host (ipc://, loopback TCP, in-process): payload checksums may be omitted both
    /// ways (`MessageFlags.uncheckedPayload`). False: every payload is checksummed (the in-memory
    /// test networks by default; plaintext off loopback is refused before it is ever opened).
    var sealed: Bool { get }
    /// The next message and its sender, waiting at most `timeout` seconds (nil on timeout).
    func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])?
    /// Sends without blocking; throws `.unreachable` if the peer is gone, `.full` if it cannot
    /// take more now.
    func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError)
    func close()
}

/// A worker's end, connected to one coordinator. `receive` and `send` are used by one thread;
/// `wake` may be called from any thread to end a `receive` early.
public protocol ClientTransport: AnyObject, Sendable {
    /// As `ServerTransport.sealed`, for this worker's link to the coordinator.
    var sealed: Bool { get }
    func receive(timeout: Double) throws(TransportError) -> [[UInt8]]?
    func send(_ frames: [[UInt8]]) throws(TransportError)
    func wake()
    func close()
}

/// True when messages on a link to or from `endpoint` with this security are authenticated by the
/// transport (CURVE) or never leave the host (`isLoopback`: ipc://, inproc://, 127.0.0.0/8, ::1).
/// A payload checksum there would only re-check kernel memory copies. So every link the
/// transports allow is sealed: plaintext is refused off loopback.
public func isSealed(endpoint: String, curve: Bool) -> Bool {
    curve || isLoopback(endpoint: endpoint)
}

/// Monotonic time in seconds; injected so tests can reason about deadlines.
public protocol Clock: Sendable {
    func now() -> Double
}

public struct MonotonicClock: Clock {
    public init() {}
    public func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
