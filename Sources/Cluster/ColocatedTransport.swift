import Foundation

/// The coordinator's transport when some workers run inside the coordinator's process: remote
/// workers over the ZeroMQ socket, colocated ones over an in-memory network. A colocated worker's
/// gradients and updates never cross the network, so the coordinator's link carries only the
/// remote workers' traffic (with 2 workers, half of it: the same bytes per step as a ring
/// all-reduce). The coordinator cannot tell the two kinds of peers apart.
public final class ColocatedServerTransport: ServerTransport {
    let remote: ZeroMQServer
    let local: InMemoryNetwork
    let localServer: InMemoryServer
    let wakeFD: Int32

    public init(remote: ZeroMQServer, local: InMemoryNetwork) {
        self.remote = remote
        self.local = local
        localServer = local.server()
        wakeFD = local.serverWakeDescriptor()
    }

    /// The remote socket's: a message goes to both kinds of peers, and the in-process ones need no more.
    public var sealed: Bool { remote.sealed }

    public func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            drainWakeups()
            if let m = try localServer.receive(timeout: 0) { return m }
            let left = deadline.timeIntervalSinceNow
            if let m = try remote.receive(timeout: max(0, left), orReadable: wakeFD) { return m }
            if deadline.timeIntervalSinceNow <= 0 {
                drainWakeups()
                return try localServer.receive(timeout: 0)
            }
        }
    }

    private func drainWakeups() {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeFD, &sink, sink.count) > 0 {}
    }

    public func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) {
        if local.hasClient(peer) {
            try localServer.send(frames, to: peer)
        } else {
            try remote.send(frames, to: peer)
        }
    }

    public func close() {
        localServer.close()
        remote.close()
    }

    /// Closes the remote socket after flushing for up to `seconds` (see ZeroMQServer).
    public func close(flushingFor seconds: Double) {
        localServer.close()
        remote.close(flushingFor: seconds)
    }
}
