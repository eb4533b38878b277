import Foundation

/// A worker's end of the sharded reduction's data plane: one endpoint at `address` that
/// receives gradient chunks (as a range owner) and reduced ranges (as a replica) from any
/// peer, and sends to any peer by its data address. Used by one thread; `wake` may be called
/// from any thread to end a `receive` early. Senders are named in the message headers.
public protocol DataTransport: AnyObject, Sendable {
    var address: String { get }
    /// As `ServerTransport.sealed`, for this endpoint's links (its own key, or an ipc address).
    var sealed: Bool { get }
    func receive(timeout: Double) throws(TransportError) -> [[UInt8]]?
    /// Sends without blocking; `.unreachable` when nobody listens at `address` (any more).
    func send(_ frames: [[UInt8]], to address: String) throws(TransportError)
    func wake()
    func close()
}

/// An in-process data plane: endpoints by `inproc://` address exchanging frames through
/// locked queues, so tests run range owners without sockets, and cut one off (a killed worker).
public final class InMemoryDataMesh: @unchecked Sendable {
    private let lock = NSCondition()
    private var inboxes: [String: [[[UInt8]]]] = [:]
    private var woken: Set<String> = []
    private var sent: [String: Int] = [:]
    private var loses: (@Sendable (_ frames: [[UInt8]], _ from: String, _ to: String) -> Bool)?

    /// Whether its endpoints count as sealed (`DataTransport.sealed`); false (the default) keeps
    /// every payload checksummed, as plaintext TCP does.
    public let sealed: Bool

    public init(sealed: Bool = false) { self.sealed = sealed }

    /// Tests: sends for which `rule` returns true are accepted and silently lost, as the
    /// messages still queued in a process at its kill -9 are (nil: none are lost).
    public func lose(where rule: (@Sendable (_ frames: [[UInt8]], _ from: String, _ to: String) -> Bool)?) {
        lock.lock()
        loses = rule
        lock.unlock()
    }

    /// A new endpoint at `inproc://name` (or at `name` itself when it has a scheme: tests give
    /// `tcp://HOST:PORT` names to place endpoints on hosts).
    public func endpoint(_ name: String) -> InMemoryDataEndpoint {
        let address = name.contains("://") ? name : "inproc://\(name)"
        lock.lock()
        inboxes[address] = []
        lock.unlock()
        return InMemoryDataEndpoint(mesh: self, address: address)
    }

    /// Closes an endpoint: what was queued for it is lost and sends to it fail.
    public func disconnect(_ address: String) {
        lock.lock()
        inboxes[address] = nil
        lock.broadcast()
        lock.unlock()
    }

    fileprivate func send(_ frames: [[UInt8]], from sender: String, to address: String) throws(TransportError) {
        lock.lock()
        defer { lock.unlock() }
        guard inboxes[address] != nil else { throw .unreachable(peer: address) }
        if let loses, loses(frames, sender, address) { return }
        inboxes[address]!.append(frames)
        sent[address, default: 0] += frames.reduce(0) { $0 + $1.count }
        lock.broadcast()
    }

    /// Bytes delivered to each address so far (what its host's link would carry in).
    public var bytesDelivered: [String: Int] {
        lock.lock(); defer { lock.unlock() }
        return sent
    }

    fileprivate func receive(_ address: String, timeout: Double) throws(TransportError) -> [[UInt8]]? {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while true {
            guard let inbox = inboxes[address] else { throw .closed }
            if !inbox.isEmpty { return inboxes[address]!.removeFirst() }
            if woken.remove(address) != nil { return nil }
            if !lock.wait(until: deadline) { return nil }
        }
    }

    fileprivate func wake(_ address: String) {
        lock.lock()
        woken.insert(address)
        lock.broadcast()
        lock.unlock()
    }
}

public final class InMemoryDataEndpoint: DataTransport, @unchecked Sendable {
    let mesh: InMemoryDataMesh
    public let address: String

    init(mesh: InMemoryDataMesh, address: String) {
        self.mesh = mesh
        self.address = address
    }

    public var sealed: Bool { mesh.sealed }
    public func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? { try mesh.receive(address, timeout: timeout) }
    public func send(_ frames: [[UInt8]], to address: String) throws(TransportError) { try mesh.send(frames, from: self.address, to: address) }
    public func wake() { mesh.wake(address) }
    public func close() { mesh.disconnect(address) }
}
