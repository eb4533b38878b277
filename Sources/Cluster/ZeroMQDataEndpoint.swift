import CZeroMQ
import Foundation

/// A worker's data endpoint over ZeroMQ: a ROUTER bound at its address receives from every
/// peer; one DEALER per peer address it sends to (created on first use, unlimited queue: a
/// chunk of a step must not be dropped for a slow peer, and a step's volume is bounded).
/// Used by the data thread only, except `wake`.
///
/// Security: with the run's data key pair (`WelcomeBody.dataKey`, handed by the coordinator to
/// the workers it admitted, over their CURVE connection) the ROUTER is a CURVE server whose ZAP
/// handler admits only that public key, and every DEALER connects with that pair: only workers
/// of the run can connect, and every data link is encrypted. Without a key: plaintext, so
/// loopback only (ipc, 127.0.0.1); a non-loopback address is refused.
public final class ZeroMQDataEndpoint: DataTransport, @unchecked Sendable {
    let context: ZMQContext
    let router: ZMQSocket
    let options: SocketOptions
    let key: CurveKeyPair?
    let authenticator: ZAPAuthenticator?
    public let address: String
    public let sealed: Bool
    private var dealers: [String: ZMQSocket] = [:]
    private var pipeFDs: [Int32] = [-1, -1]
    private var closed = false

    /// Binds at `bind` (`ipc://path`, or `tcp://HOST:port` with `*` for any port; give a host
    /// address peers can reach, not 0.0.0.0); peers connect to the endpoint actually bound.
    public init(bind: String, key: CurveKeyPair? = nil, options: SocketOptions) throws(TransportError) {
        guard key != nil || isLoopback(endpoint: bind) else {
            throw .failed("refusing a plaintext data endpoint on \(bind): plaintext is only allowed on loopback (ipc://PATH or tcp://127.0.0.1:PORT); over TCP between hosts the coordinator must run with CURVE keys")
        }
        context = ZMQContext()
        self.options = options
        self.key = key
        sealed = isSealed(endpoint: bind, curve: key != nil)
        if let key {
            guard ZMQContext.hasCurve else { throw .failed("this libzmq was built without CURVE support") }
            authenticator = try ZAPAuthenticator(context: context, allowed: [key.publicKey], onEvent: nil)
        } else {
            authenticator = nil
        }
        router = try ZMQSocket(context, type: ZMQ_ROUTER)
        try router.set(ZMQ_MAXMSGSIZE, options.maxMessageBytes)
        try router.set(ZMQ_RCVHWM, Int32(0))
        if let key {
            try router.set(ZMQ_CURVE_SERVER, Int32(1))
            try router.set(ZMQ_CURVE_SECRETKEY, string: key.secretKey)
            try router.set(ZMQ_ZAP_DOMAIN, string: "ambient-data")
        }
        try router.bind(bind)
        address = router.lastEndpoint()
        guard pipe(&pipeFDs) == 0 else { throw .failed("pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(pipeFDs[0], F_SETFL, O_NONBLOCK)
        _ = fcntl(pipeFDs[1], F_SETFL, O_NONBLOCK)
    }

    deinit { close() }

    /// The next message from any peer (the routing frame removed).
    public func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? {
        if closed { throw .closed }
        if let m = try router.receiveMultipart() { return Array(m.dropFirst()) }
        let (ready, woken) = try router.poll(timeout: timeout, alsoFD: pipeFDs[0])
        if woken {
            var sink = [UInt8](repeating: 0, count: 64)
            while read(pipeFDs[0], &sink, sink.count) > 0 {}
        }
        guard ready, let m = try router.receiveMultipart() else { return nil }
        return Array(m.dropFirst())
    }

    public func send(_ frames: [[UInt8]], to peer: String) throws(TransportError) {
        if closed { throw .closed }
        let socket: ZMQSocket
        if let existing = dealers[peer] {
            socket = existing
        } else {
            socket = try ZMQSocket(context, type: ZMQ_DEALER)
            try socket.set(ZMQ_MAXMSGSIZE, options.maxMessageBytes)
            try socket.set(ZMQ_SNDHWM, Int32(0))
            try socket.set(ZMQ_RECONNECT_IVL, options.reconnectInterval)
            try socket.set(ZMQ_RECONNECT_IVL_MAX, options.reconnectIntervalMax)
            if let key {
                try socket.set(ZMQ_CURVE_SERVERKEY, string: key.publicKey)
                try socket.set(ZMQ_CURVE_PUBLICKEY, string: key.publicKey)
                try socket.set(ZMQ_CURVE_SECRETKEY, string: key.secretKey)
            }
            try socket.connect(peer)
            dealers[peer] = socket
        }
        try socket.send(frames, peerLabel: peer)
    }

    public func wake() {
        var one: UInt8 = 1
        _ = write(pipeFDs[1], &one, 1)
    }

    /// Closes every socket (queued messages are dropped: the run is over or this worker is
    /// leaving) and the context.
    public func close() {
        if closed { return }
        closed = true
        for s in dealers.values { s.close() }
        dealers = [:]
        router.close()
        authenticator?.stop()
        for fd in pipeFDs where fd >= 0 { Glibc.close(fd) }
        pipeFDs = [-1, -1]
        context.terminate()
    }
}
