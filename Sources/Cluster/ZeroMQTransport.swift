import CZeroMQ
import Foundation

/// Socket security. CURVE (ZeroMQ's elliptic-curve authentication and encryption) is the
/// default; plaintext exists for debugging on loopback only and must be asked for.
public enum TransportSecurity: Sendable {
    /// Coordinator side: its key pair and the public keys of the workers allowed to join.
    case curveServer(secret: CurveKeyPair, allowed: Set<String>)
    /// Worker side: its key pair and the coordinator's public key.
    case curveClient(secret: CurveKeyPair, serverPublicKey: String)
    /// No authentication or encryption (loopback endpoints only).
    case plaintext

    var isCurve: Bool { if case .plaintext = self { false } else { true } }
}

/// Limits and timing shared by both ends.
public struct SocketOptions: Sendable {
    /// Largest message accepted (ZMQ_MAXMSGSIZE); bigger ones drop the connection.
    public var maxMessageBytes: Int64
    /// Messages queued per peer before sends fail (ZMQ_SNDHWM / ZMQ_RCVHWM).
    public var highWaterMark: Int32 = 16
    public var reconnectInterval: Int32 = 100
    public var reconnectIntervalMax: Int32 = 2000

    public init(maxMessageBytes: Int64) { self.maxMessageBytes = maxMessageBytes }
}

/// True for endpoints that never leave the machine.
public func isLoopback(endpoint: String) -> Bool {
    if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
    guard endpoint.hasPrefix("tcp://") else { return false }
    let rest = endpoint.dropFirst(6)
    let host: Substring
    if rest.hasPrefix("[") {
        host = rest.dropFirst().prefix { $0 != "]" }
    } else {
        host = rest.prefix { $0 != ":" }
    }
    return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.hasPrefix("127.")
}

func zmqError(_ what: String) -> TransportError {
    .failed("\(what): \(String(cString: zmq_strerror(zmq_errno())))")
}

/// A ZeroMQ context shared by the sockets of one process.
public final class ZMQContext: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer

    private let lock = NSLock()
    private var terminated = false

    public init() {
        raw = zmq_ctx_new()
    }

    deinit { terminate() }

    /// Terminates the context: blocks until every socket of it is closed and each closed
    /// socket's queued messages are sent or its linger period has run out. Idempotent.
    public func terminate() {
        lock.lock(); defer { lock.unlock() }
        if !terminated {
            zmq_ctx_term(raw)
            terminated = true
        }
    }

    public static var version: String {
        var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
        zmq_version(&a, &b, &c)
        return "\(a).\(b).\(c)"
    }

    public static var hasCurve: Bool { zmq_has("curve") == 1 }
}

/// A thin owner of one ZeroMQ socket (used by one thread at a time).
final class ZMQSocket: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    private var closed = false

    init(_ context: ZMQContext, type: Int32) throws(TransportError) {
        guard let s = zmq_socket(context.raw, type) else { throw zmqError("zmq_socket") }
        raw = s
        try set(ZMQ_LINGER, Int32(0))
    }

    deinit { close() }

    /// Closes the socket. With `linger` > 0, messages still queued are sent in the background
    /// for up to that many seconds, until the context is terminated (`ZMQContext.terminate`).
    func close(linger: Double = 0) {
        if !closed {
            if linger > 0 { try? set(ZMQ_LINGER, Int32(min(linger, 3600) * 1000)) }
            zmq_close(raw)
            closed = true
        }
    }

    func set(_ option: Int32, _ value: Int32) throws(TransportError) {
        var v = value
        guard zmq_setsockopt(raw, option, &v, MemoryLayout<Int32>.size) == 0 else { throw zmqError("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, _ value: Int64) throws(TransportError) {
        var v = value
        guard zmq_setsockopt(raw, option, &v, MemoryLayout<Int64>.size) == 0 else { throw zmqError("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, bytes: [UInt8]) throws(TransportError) {
        let r = bytes.withUnsafeBytes { zmq_setsockopt(raw, option, $0.baseAddress, bytes.count) }
        guard r == 0 else { throw zmqError("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, string: String) throws(TransportError) { try set(option, bytes: Array(string.utf8)) }

    func bind(_ endpoint: String) throws(TransportError) {
        guard zmq_bind(raw, endpoint) == 0 else { throw zmqError("cannot bind \(endpoint)") }
    }

    func connect(_ endpoint: String) throws(TransportError) {
        guard zmq_connect(raw, endpoint) == 0 else { throw zmqError("cannot connect to \(endpoint)") }
    }

    /// The endpoint actually bound (resolves a `tcp://127.0.0.1:*` wildcard port).
    func lastEndpoint() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        var size = buf.count
        _ = zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, &buf, &size)
        return cString(buf)
    }

    /// Sends all frames (non-blocking). Throws `.unreachable` on EHOSTUNREACH (no such peer) and
    /// `.full` on EAGAIN (high-water mark, or no connection yet with ZMQ_IMMEDIATE). A multipart
    /// message is all or nothing: the high-water mark is checked on its first frame only.
    func send(_ frames: [[UInt8]], peerLabel: String) throws(TransportError) {
        for (i, f) in frames.enumerated() {
            let flags = ZMQ_DONTWAIT | (i < frames.count - 1 ? ZMQ_SNDMORE : 0)
            let r = f.count >= Self.zeroCopyBytes ? sendWithoutCopy(f, flags: flags) : f.withUnsafeBytes { zmq_send(raw, $0.baseAddress, f.count, flags) }
            if r < 0 {
                let e = zmq_errno()
                if e == EHOSTUNREACH { throw .unreachable(peer: peerLabel) }
                if e == EAGAIN { throw .full(peer: peerLabel) }
                throw zmqError("zmq_send")
            }
        }
    }

    /// Frames at least this large (gradient and update chunks, not headers or control bodies) are
    /// handed to ZeroMQ without a copy.
    static let zeroCopyBytes = 64 << 10

    /// Sends `frame` as a message over the array's own storage (`zmq_msg_init_data`): ZeroMQ's I/O
    /// thread reads it from there and releases it when written, instead of `zmq_send` copying it
    /// first. The array is held, unchanged, by a box that ZeroMQ's free callback releases; a
    /// native array's storage does not move while it is held and not mutated. Returns what
    /// `zmq_msg_send` returns; on failure the message is closed here (which releases the box).
    private func sendWithoutCopy(_ frame: [UInt8], flags: Int32) -> Int32 {
        let box = Unmanaged.passRetained(HeldFrame(frame))
        let base = box.takeUnretainedValue().bytes.withUnsafeBytes { UnsafeMutableRawPointer(mutating: $0.baseAddress!) }
        var msg = zmq_msg_t()
        let made = zmq_msg_init_data(&msg, base, frame.count, { _, hint in
            Unmanaged<HeldFrame>.fromOpaque(hint!).release()
        }, box.toOpaque())
        guard made == 0 else {
            box.release()
            return -1
        }
        let r = zmq_msg_send(&msg, raw, flags)
        if r < 0 {
            let e = zmq_errno()
            zmq_msg_close(&msg)   // not sent: ZeroMQ still owns it, closing calls the free callback
            errno = e             // zmq_errno reads errno; keep the send's for the caller
        }
        return r
    }

    /// Receives one whole multipart message if one is ready.
    func receiveMultipart() throws(TransportError) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        while true {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            let n = zmq_msg_recv(&msg, raw, frames.isEmpty ? ZMQ_DONTWAIT : 0)
            if n < 0 {
                if zmq_errno() == EAGAIN && frames.isEmpty { return nil }
                throw zmqError("zmq_msg_recv")
            }
            let size = zmq_msg_size(&msg)
            if size > 0, let data = zmq_msg_data(&msg) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }

    /// Waits for the socket (and optionally a file descriptor) to be readable.
    /// Returns (socketReadable, fdReadable).
    func poll(timeout: Double, alsoFD fd: Int32? = nil) throws(TransportError) -> (Bool, Bool) {
        var items = [zmq_pollitem_t(socket: raw, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)]
        if let fd { items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0)) }
        let ms = max(0, Int(timeout * 1000))
        let r = zmq_poll(&items, Int32(items.count), ms)
        if r < 0 {
            if zmq_errno() == EINTR { return (false, false) }
            throw zmqError("zmq_poll")
        }
        let sock = items[0].revents & Int16(ZMQ_POLLIN) != 0
        let other = items.count > 1 && items[1].revents & Int16(ZMQ_POLLIN) != 0
        return (sock, other)
    }
}

/// A frame's bytes kept alive while ZeroMQ sends them without a copy.
private final class HeldFrame {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
}

/// The coordinator's ROUTER socket, with ZMQ_ROUTER_MANDATORY, ZMQ_LINGER=0, a bounded
/// ZMQ_MAXMSGSIZE and high-water marks; CURVE with a ZAP allow-list unless plaintext on loopback.
public final class ZeroMQServer: ServerTransport, @unchecked Sendable {
    let context: ZMQContext
    let socket: ZMQSocket
    let authenticator: ZAPAuthenticator?
    /// The endpoint actually bound (with the real port when the request used `*`).
    public let endpoint: String
    public let sealed: Bool

    public init(context: ZMQContext, bind endpoint: String, security: TransportSecurity, options: SocketOptions,
                onAuthentication: (@Sendable (AuthenticationEvent) -> Void)? = nil) throws(TransportError) {
        self.context = context
        sealed = isSealed(endpoint: endpoint, curve: security.isCurve)
        switch security {
        case .plaintext:
            guard isLoopback(endpoint: endpoint) else {
                throw .failed("refusing plaintext on \(endpoint): plaintext is only allowed on loopback (127.0.0.1); use CURVE keys (ambient keys generate) for other interfaces")
            }
            authenticator = nil
        case let .curveServer(_, allowed):
            guard ZMQContext.hasCurve else { throw .failed("this libzmq was built without CURVE support") }
            authenticator = try ZAPAuthenticator(context: context, allowed: allowed, onEvent: onAuthentication)
        case .curveClient:
            throw .failed("a server needs a curveServer security setting")
        }
        socket = try ZMQSocket(context, type: ZMQ_ROUTER)
        try socket.set(ZMQ_ROUTER_MANDATORY, Int32(1))
        try socket.set(ZMQ_ROUTER_HANDOVER, Int32(1))
        try socket.set(ZMQ_MAXMSGSIZE, options.maxMessageBytes)
        try socket.set(ZMQ_SNDHWM, options.highWaterMark)
        try socket.set(ZMQ_RCVHWM, options.highWaterMark * 4)
        if case let .curveServer(keys, _) = security {
            try socket.set(ZMQ_CURVE_SERVER, Int32(1))
            try socket.set(ZMQ_CURVE_SECRETKEY, string: keys.secretKey)
            try socket.set(ZMQ_ZAP_DOMAIN, string: "ambient")
        }
        try socket.bind(endpoint)
        self.endpoint = socket.lastEndpoint()
    }

    public func receive(timeout: Double) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        if let m = try socket.receiveMultipart() { return Self.split(m) }
        let (ready, _) = try socket.poll(timeout: timeout)
        guard ready, let m = try socket.receiveMultipart() else { return nil }
        return Self.split(m)
    }

    static func split(_ m: [[UInt8]]) -> (peer: PeerID, frames: [[UInt8]])? {
        guard let first = m.first else { return nil }
        return (PeerID(first), Array(m.dropFirst()))
    }

    public func send(_ frames: [[UInt8]], to peer: PeerID) throws(TransportError) {
        try socket.send([peer.bytes] + frames, peerLabel: peer.description)
    }

    /// Like `receive(timeout:)`, but also returns (nil) as soon as `fd` becomes readable.
    func receive(timeout: Double, orReadable fd: Int32) throws(TransportError) -> (peer: PeerID, frames: [[UInt8]])? {
        if let m = try socket.receiveMultipart() { return Self.split(m) }
        let (ready, _) = try socket.poll(timeout: timeout, alsoFD: fd)
        guard ready, let m = try socket.receiveMultipart() else { return nil }
        return Self.split(m)
    }

    public func close() { close(flushingFor: 0) }

    /// Closes the socket but keeps sending what is queued (the shutdown messages of a finished
    /// run) for up to `seconds`; terminate the context afterwards to wait for that. Without it
    /// (ZMQ_LINGER=0) the last messages of an exiting coordinator can be lost, and workers then
    /// wait for a coordinator that is gone.
    public func close(flushingFor seconds: Double) {
        socket.close(linger: seconds)
        authenticator?.stop()
    }
}

/// A worker's DEALER socket. Its routing id names the worker and its incarnation. Reconnects by
/// itself (ZeroMQ), so a restarted coordinator on the same endpoint is found again.
public final class ZeroMQClient: ClientTransport, @unchecked Sendable {
    let context: ZMQContext
    let socket: ZMQSocket
    private var pipeFDs: [Int32] = [-1, -1]
    public let sealed: Bool

    public init(context: ZMQContext, connect endpoint: String, identity: String, security: TransportSecurity,
                options: SocketOptions) throws(TransportError) {
        self.context = context
        sealed = isSealed(endpoint: endpoint, curve: security.isCurve)
        if case .plaintext = security, !isLoopback(endpoint: endpoint) {
            throw .failed("refusing plaintext to \(endpoint): plaintext is only allowed on loopback; pass the coordinator's public key and a worker key pair")
        }
        socket = try ZMQSocket(context, type: ZMQ_DEALER)
        try socket.set(ZMQ_ROUTING_ID, string: identity)
        try socket.set(ZMQ_MAXMSGSIZE, options.maxMessageBytes)
        try socket.set(ZMQ_SNDHWM, options.highWaterMark)
        try socket.set(ZMQ_RCVHWM, options.highWaterMark * 4)
        try socket.set(ZMQ_IMMEDIATE, Int32(1))
        try socket.set(ZMQ_RECONNECT_IVL, options.reconnectInterval)
        try socket.set(ZMQ_RECONNECT_IVL_MAX, options.reconnectIntervalMax)
        if case let .curveClient(keys, server) = security {
            guard ZMQContext.hasCurve else { throw .failed("this libzmq was built without CURVE support") }
            try socket.set(ZMQ_CURVE_SERVERKEY, string: server)
            try socket.set(ZMQ_CURVE_PUBLICKEY, string: keys.publicKey)
            try socket.set(ZMQ_CURVE_SECRETKEY, string: keys.secretKey)
        }
        guard pipe(&pipeFDs) == 0 else { throw .failed("pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(pipeFDs[0], F_SETFL, O_NONBLOCK)
        _ = fcntl(pipeFDs[1], F_SETFL, O_NONBLOCK)
        try socket.connect(endpoint)
    }

    deinit {
        close()
    }

    public func receive(timeout: Double) throws(TransportError) -> [[UInt8]]? {
        if let m = try socket.receiveMultipart() { return m }
        let (ready, woken) = try socket.poll(timeout: timeout, alsoFD: pipeFDs[0])
        if woken {
            var sink = [UInt8](repeating: 0, count: 64)
            while read(pipeFDs[0], &sink, sink.count) > 0 {}
        }
        guard ready else { return nil }
        return try socket.receiveMultipart()
    }

    public func send(_ frames: [[UInt8]]) throws(TransportError) {
        try socket.send(frames, peerLabel: "coordinator")
    }

    public func wake() {
        var one: UInt8 = 1
        _ = write(pipeFDs[1], &one, 1)
    }

    public func close() {
        socket.close()
        for fd in pipeFDs where fd >= 0 { Glibc.close(fd) }
        pipeFDs = [-1, -1]
    }
}
