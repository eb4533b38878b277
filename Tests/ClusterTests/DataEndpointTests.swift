import Foundation
import Testing
@testable import Cluster

/// The data endpoints of the sharded reduction: frames reach the peer named by address, `wake`
/// ends a wait, a closed endpoint says so, and the ZeroMQ one refuses non-loopback binds.
/// The suite's time limit is a hang guard only (every wait inside is bounded): swift-testing counts
/// the time a test waits for a thread of the shared pool, so in a full run on 2 cores a test that
/// needs a second can wait minutes behind long synchronous ones. A 1-minute limit failed CI that way.
@Suite(.timeLimit(.minutes(10))) struct DataEndpointTests {
    func exchange(_ a: any DataTransport, _ b: any DataTransport) throws {
        try a.send([[1, 2, 3], [4]], to: b.address)
        try b.send([[9]], to: a.address)
        func next(_ t: any DataTransport) throws -> [[UInt8]]? {
            for _ in 0..<50 { if let f = try t.receive(timeout: 0.1) { return f } }
            return nil
        }
        #expect(try next(b) == [[1, 2, 3], [4]])
        #expect(try next(a) == [[9]])
        b.wake()
        let start = Date()
        #expect(try b.receive(timeout: 5) == nil)
        #expect(Date().timeIntervalSince(start) < 2)
    }

    @Test func zeroMQEndpointsOnLoopback() throws {
        let options = SocketOptions(maxMessageBytes: 1 << 20)
        let a = try ZeroMQDataEndpoint(bind: "tcp://127.0.0.1:*", options: options)
        let dir = try LocalTestDirectory()
        let b = try ZeroMQDataEndpoint(bind: "ipc://\(dir.path)/b.sock", options: options)
        #expect(a.address.hasPrefix("tcp://127.0.0.1:") && !a.address.hasSuffix("*"))
        try exchange(a, b)
        a.close()
        b.close()
        #expect(throws: TransportError.self) { try a.receive(timeout: 0) }
        #expect(throws: TransportError.self) { try ZeroMQDataEndpoint(bind: "tcp://10.1.2.3:5601", options: options) }
        #expect(throws: TransportError.self) { try ZeroMQDataEndpoint(bind: "tcp://0.0.0.0:*", options: options) }
    }

    /// With the run's data key every link is CURVE, and an endpoint holding another key cannot
    /// deliver (the ZAP handler admits only the run's public key).
    @Test func curveEndpointsAdmitOnlyTheRunsKey() throws {
        guard ZMQContext.hasCurve else { return }
        let options = SocketOptions(maxMessageBytes: 1 << 20)
        let key = try CurveKeyPair.generate(), stranger = try CurveKeyPair.generate()
        let a = try ZeroMQDataEndpoint(bind: "tcp://127.0.0.1:*", key: key, options: options)
        let b = try ZeroMQDataEndpoint(bind: "tcp://127.0.0.1:*", key: key, options: options)
        let c = try ZeroMQDataEndpoint(bind: "tcp://127.0.0.1:*", key: stranger, options: options)
        defer { a.close(); b.close(); c.close() }
        try exchange(a, b)
        try c.send([[6, 6, 6]], to: b.address)
        var got: [[UInt8]]?
        for _ in 0..<10 { if let f = try b.receive(timeout: 0.1) { got = f } }
        #expect(got == nil, "a peer without the run's key delivered a message")
    }

    @Test func inMemoryEndpoints() throws {
        let mesh = InMemoryDataMesh()
        let a = mesh.endpoint("a"), b = mesh.endpoint("b")
        try exchange(a, b)
        b.close()
        #expect(throws: TransportError.self) { try a.send([[1]], to: b.address) }
        #expect(throws: TransportError.self) { try b.receive(timeout: 0) }
    }
}

/// A private directory for a test's sockets, removed when the value goes away.
final class LocalTestDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "ambient-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
