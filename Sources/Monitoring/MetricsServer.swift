import Foundation

/// A very small HTTP/1.1 server for one page: `GET /metrics` answers with what `render`
/// returns (Prometheus text exposition); everything else is an error status. One thread
/// serves one connection at a time: a scrape every few seconds needs no more.
///
/// Bounded: a request head larger than `maxRequestBytes` is refused (431), a client gets
/// `ioTimeout` seconds to send its request and take the answer, and every connection is closed
/// after one response. It listens on the address it is given (default 127.0.0.1 at the CLI).
public final class MetricsServer: @unchecked Sendable {
    public static let maxRequestBytes = 8192
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The port it listens on (the kernel's choice when 0 was asked for).
    public let port: Int
    public let address: String
    private let listener: Int32
    private let render: @Sendable () -> [UInt8]
    private let ioTimeout: Double
    private let lock = NSLock()
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)

    /// Binds `address` (an IPv4 or IPv6 literal) and `port`, and starts serving.
    public init(address: String, port: Int, ioTimeout: Double = 2, render: @escaping @Sendable () -> [UInt8]) throws {
        guard (0...65535).contains(port) else { throw MetricsServerError("metrics port \(port) is not in 0...65535") }
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address, String(port), &hints, &info)
        guard rc == 0, let ai = info else {
            throw MetricsServerError("metrics address '\(address)' is not an IP address (e.g. 127.0.0.1 or ::1): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(info) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MetricsServerError("metrics socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0, listen(fd, 16) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw MetricsServerError("cannot listen for metrics on \(address):\(port): \(why) (choose another --metrics-port)")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let bound: UInt16 = withUnsafePointer(to: &storage) { p in
            if Int32(p.pointee.ss_family) == AF_INET6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
        self.port = Int(bound)
        self.address = address
        self.listener = fd
        self.render = render
        self.ioTimeout = ioTimeout
        let thread = Thread { [self] in serve() }
        thread.name = "metrics-http"
        thread.start()
    }

    /// Stops serving and closes the socket (waits at most a second for the serving thread).
    public func stop() {
        lock.lock()
        let already = stopping
        stopping = true
        lock.unlock()
        if already { return }
        _ = finished.wait(timeout: .now() + 1)
    }

    deinit { stop() }

    private var isStopping: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopping
    }

    private func serve() {
        defer {
            close(listener)
            finished.signal()
        }
        while !isStopping {
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            handle(client)
            close(client)
        }
    }

    private func handle(_ fd: Int32) {
        var tv = timeval(tv_sec: Int(ioTimeout), tv_usec: Int((ioTimeout - Double(Int(ioTimeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        let deadline = Date().addingTimeInterval(ioTimeout)
        while MetricsServer.headEnd(request) == nil {
            guard request.count <= MetricsServer.maxRequestBytes else {
                respond(fd, status: "431 Request Header Fields Too Large", body: Array("request head over \(MetricsServer.maxRequestBytes) bytes\n".utf8))
                return
            }
            guard Date() < deadline else { return }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }   // closed, or the timeout passed: nothing to answer
            request.append(contentsOf: buffer[0..<n])
        }
        let (status, body, extra) = MetricsServer.route(request, render: render)
        respond(fd, status: status, body: body, extraHeaders: extra)
    }

    /// The status, body and extra header lines for a request head (pure: tested directly).
    static func route(_ request: [UInt8], render: () -> [UInt8]) -> (String, [UInt8], String) {
        let head = request.prefix(MetricsServer.headEnd(request) ?? request.count)
        guard let line = String(decoding: head, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false).first else {
            return ("400 Bad Request", Array("bad request\n".utf8), "")
        }
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return ("400 Bad Request", Array("bad request line\n".utf8), "") }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard path == "/metrics" else { return ("404 Not Found", Array("only /metrics is served here\n".utf8), "") }
        guard parts[0] == "GET" else { return ("405 Method Not Allowed", Array("use GET\n".utf8), "Allow: GET\r\n") }
        return ("200 OK", render(), "")
    }

    /// The offset of the blank line that ends a request head, nil before it has arrived.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }

    private func respond(_ fd: Int32, status: String, body: [UInt8], extraHeaders: String = "") {
        let type = status.hasPrefix("200") ? MetricsServer.contentType : "text/plain; charset=utf-8"
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n\(extraHeaders)Connection: close\r\n\r\n"
        var out = Array(head.utf8) + body
        var sent = 0
        while sent < out.count {
            let n = out.withUnsafeMutableBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            sent += n
        }
    }
}

public struct MetricsServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
