import Foundation

/// An in-process network: one server endpoint and any number of client endpoints, exchanging
/// frames through locked queues. Lets the coordinator and workers run in one test process
/// (STYLE: protocol logic testable without sockets), and lets tests cut a client off.
public final class InMemoryNetwork: @unchecked Sendable {
    private let lock = NSCondition()
    private var serverInbox: [(PeerID, [[UInt8]])] = []
    private var clientInboxes: [PeerID: [[[UInt8]]]] = [:]
    private var connected: Set<PeerID> = []
    private var serverClosed = false
    private var refusals: [PeerID: Int] = [:]
    /// Messages a client may have queued before sends to it fail (a ZeroMQ high-water mark).
    public let queueLimit: Int
    /// Messages from one client the server may have queued before that client's sends fail.
    public let uplinkLimit: Int
    /// Whether its links count as sealed (`ServerTransport.sealed`): true for the colocated
    /// workers of a run (in-process); false (the default) keeps every payload checksummed.
    public let sealed: Bool

    public init(queueLimit: Int = 64, uplinkLimit: Int = .max, sealed: Bool = false) {
        self.queueLimit = queueLimit
        self.uplinkLimit = uplinkLimit
        self.sealed = sealed
    }

    public func server() -> InMemoryServer { InMemoryServer(network: self) }

    /// Connects a client with the given routing identity.
    public func connect(identity: String) -> InMemoryClient {
        let peer = PeerID(identity)
        lock.lock()
        connected.insert(peer)
        clientInboxes[peer] = []
        lock.unlock()
        return InMemoryClient(network: self, peer: peer)
    }

    /// The next `sends` sends to `identity` fail with `.full`, as if its queue were at the
    /// high-water mark: a test reaches the sender's backlog whatever the threads' timing.
    public func refuseNextSends(to identity: String, count sends: Int) {
        lock.lock()
        refusals[PeerID(identity), default: 0] += sends
        lock.unlock()
    }

    /// Severs a client: its queued messages are lost and sends to it fail (a killed process).
    public func disconnect(_ peer: PeerID) {
        lock.lock()
        connected.remove(peer)
        clientInboxes[peer] = nil
        lock.broadcast()
        lock.unlock()
    }

    fileprivate func serverReceive(timeout: Double) throws(TransportError) -> (PeerID, [[UInt8]])? {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while serverInbox.isEmpty {
            if serverClosed { throw .closed }
            if !lock.wait(until: deadline) { return nil }
        }
        return serverInbox.removeFirst()
    }

    fileprivate func serverSend(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) {
        lock.lock()
        defer { lock.unlock() }
        guard connected.contains(peer), clientInboxes[peer] != nil else { throw .unreachable(peer: peer.description) }
        guard clientInboxes[peer]!.count < queueLimit else { throw .full(peer: peer.description) }
        if let left = refusals[peer], left > 0 {
            refusals[peer] = left - 1
            throw .full(peer: peer.description)
        }
        clientInboxes[peer]!.append(frames)
        lock.broadcast()
    }

    fileprivate func clientReceive(_ peer: PeerID, timeout: Double, woken: () -> Bool) throws(TransportError) -> [[UInt8]]? {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while true {
            guard connected.contains(peer) else { throw .closed }
            if let q = clientInboxes[peer], !q.isEmpty { return clientInboxes[peer]!.removeFirst() }
            if woken() { return nil }
            if !lock.wait(until: deadline) { return nil }
        }
    }

    fileprivate func clientSend(_ peer: PeerID, _ frames: [[UInt8]]) throws(TransportError) {
        lock.lock()
        defer { lock.unlock() }
        guard connected.contains(peer) else { throw .closed }
        guard !serverClosed else { return }   // like a TCP peer whose server is down: dropped
        if uplinkLimit != .max && serverInbox.lazy.filter({ $0.0 == peer }).count >= uplinkLimit { throw .full(peer: "server") }
        serverInbox.append((peer, frames))
        lock.broadcast()
        if wakeFD >= 0 {
            var one: UInt8 = 1
            _ = write(wakeFD, &one, 1)
        }
    }

    /// A file descriptor written to whenever a client sends (a server that also polls sockets
    /// waits on it); -1 until `serverWakeDescriptor()` is called.
    private var wakeFD: Int32 = -1
    private var wakeReadFD: Int32 = -1

    /// The read end of a non-blocking pipe that becomes readable when a client sends.
    func serverWakeDescriptor() -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if wakeReadFD < 0 {
            var fds: [Int32] = [-1, -1]
            if pipe(&fds) == 0 {
                _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
                _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
                wakeReadFD = fds[0]
                wakeFD = fds[1]
            }
        }
        return wakeReadFD
    }

    /// True if `peer` is a client of this network.
    func hasClient(_ peer: PeerID) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return clientInboxes[peer] != nil
    }

    deinit {
        if wakeFD >= 0 { close(wakeFD) }
        if wakeReadFD >= 0 { close(wakeReadFD) }
    }

    fileprivate func wakeAll() {
        lock.lock()
        lock.broadcast()
        lock.unlock()
    }

    fileprivate func closeServer() {
        lock.lock()
        serverClosed = true
        serverInbox.removeAll()
        lock.broadcast()
        lock.unlock()
    }

    /// Lets a new server take over (a restarted coordinator).
    public func reopenServer() {
        lock.lock()
        serverClosed = false
        lock.unlock()
    }
}

public final class InMemoryServer: ServerTransport {
    let network: InMemoryNetwork
    init(network: InMemoryNetwork) { self.network = network }
    public var sealed: Bool { network.sealed }
    public func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        guard let (p, f) = try network.serverReceive(timeout: timeout) else { return nil }
        return (p, f)
    }
    public func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) { try network.serverSend(frames, to: peer) }
    public func close() { network.closeServer() }
}

public final class InMemoryClient: ClientTransport, @unchecked Sendable {
    let network: InMemoryNetwork
    public let peer: PeerID
    private let wakeLock = NSLock()
    private var woken = false

    init(network: InMemoryNetwork, peer: PeerID) {
        self.network = network
        self.peer = peer
    }

    public func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? {
        let r = try network.clientReceive(peer, timeout: timeout) { [self] in
            wakeLock.lock(); defer { wakeLock.unlock() }
            let w = woken
            woken = false
            return w
        }
        return r
    }

    public var sealed: Bool { network.sealed }
    public func send(_ frames: [[UInt8]]) throws(TransportError) { try network.clientSend(peer, frames) }

    public func wake() {
        wakeLock.lock()
        woken = true
        wakeLock.unlock()
        network.wakeAll()
    }

    public func close() { network.disconnect(peer) }
}
