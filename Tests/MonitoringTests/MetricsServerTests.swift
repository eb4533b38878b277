import Foundation
import Testing
@testable import Monitoring

/// Sends `request` to 127.0.0.1:port and returns everything the server answers before it
/// closes the connection (at most 5 s).
func exchange(port: Int, _ request: [UInt8]) -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { return "connect failed" }
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

func get(port: Int, _ path: String, method: String = "GET") -> String {
    exchange(port: port, Array("\(method) \(path) HTTP/1.1\r\nHost: test\r\n\r\n".utf8))
}

@Suite struct MetricsServerTests {
    @Test func servesMetricsAndRefusesEverythingElse() throws {
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { Array("ambient_step 7\n".utf8) }
        defer { server.stop() }
        #expect(server.port > 0)
        let ok = get(port: server.port, "/metrics")
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(ok.contains("Content-Length: 15\r\n"))
        #expect(ok.hasSuffix("\r\n\r\nambient_step 7\n"))
        #expect(get(port: server.port, "/metrics?name=x").hasPrefix("HTTP/1.1 200 OK"))
        #expect(get(port: server.port, "/").hasPrefix("HTTP/1.1 404 "))
        #expect(get(port: server.port, "/metricsx").hasPrefix("HTTP/1.1 404 "))
        let post = get(port: server.port, "/metrics", method: "POST")
        #expect(post.hasPrefix("HTTP/1.1 405 ") && post.contains("Allow: GET\r\n"))
        #expect(exchange(port: server.port, Array("GARBAGE\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400 "))
    }

    @Test func refusesAnOversizedRequestHead() throws {
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { [] }
        defer { server.stop() }
        let huge = "GET /metrics HTTP/1.1\r\nX-Padding: " + String(repeating: "a", count: 3 * MetricsServer.maxRequestBytes)
        #expect(exchange(port: server.port, Array(huge.utf8)).hasPrefix("HTTP/1.1 431 "))
        // Still serving afterwards.
        #expect(get(port: server.port, "/metrics").hasPrefix("HTTP/1.1 200 "))
    }

    @Test func aSilentClientDoesNotBlockTheNextOne() throws {
        let server = try MetricsServer(address: "127.0.0.1", port: 0, ioTimeout: 0.3) { Array("x 1\n".utf8) }
        defer { server.stop() }
        let start = Date()
        // Connects, sends half a request and nothing more: dropped after the I/O timeout.
        #expect(exchange(port: server.port, Array("GET /metrics HTTP/1.1\r\n".utf8)) == "")
        #expect(get(port: server.port, "/metrics").hasPrefix("HTTP/1.1 200 "))
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test func bindsOnlyTheAddressGivenAndStops() throws {
        #expect(throws: MetricsServerError.self) { try MetricsServer(address: "localhost", port: 0) { [] } }
        #expect(throws: MetricsServerError.self) { try MetricsServer(address: "127.0.0.1", port: 70000) { [] } }
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { [] }
        // The same port again: refused with a message that says what to do.
        do {
            _ = try MetricsServer(address: "127.0.0.1", port: server.port) { [] }
            Issue.record("a second server on the same port was accepted")
        } catch let e as MetricsServerError {
            #expect(e.description.contains("--metrics-port"))
        }
        server.stop()
        #expect(get(port: server.port, "/metrics") == "connect failed")
    }

    @Test func headEndFindsTheBlankLine() {
        #expect(MetricsServer.headEnd(Array("GET / HTTP/1.1\r\n".utf8)) == nil)
        #expect(MetricsServer.headEnd(Array("GET / HTTP/1.1\r\n\r\nbody".utf8)) == 14)
        #expect(MetricsServer.headEnd([]) == nil)
    }
}
