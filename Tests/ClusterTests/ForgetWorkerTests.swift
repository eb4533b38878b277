import Cluster
import Foundation
import TensorCore
import Testing
import Wire

/// Every way the coordinator can forget a worker returns the shards it owed to the pool, so the
/// step completes on the fake clock and the result is exact. And no header field, however
/// large, traps the coordinator. Scripted workers on the in-memory transport and a fake clock
/// (ScriptedCluster.swift).
@Suite(.serialized, .timeLimit(.minutes(10))) struct ForgetWorkerTests {
    let n = 96, shards = 4, steps = 5

    /// Runs the toy problem with scripted workers `names` (the first ones join before step 0);
    /// `setUp` scripts their misbehaviour. Fails the test on a stall (60 fake seconds).
    @discardableResult
    func run(_ names: [String], minWorkers: Int? = nil, expectExact: Bool = true,
             setUp: (ScriptedServer, [ScriptedWorker]) -> Void) throws -> (Coordinator, ScriptedServer) {
        let net = InMemoryNetwork(queueLimit: 10_000)
        let server = ScriptedServer(network: net, clock: FakeClock(), timeLimit: 60)
        let workers = names.map { ScriptedWorker(network: net, name: $0, n: n) }
        server.workers = workers
        let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server,
                                                    minWorkers: minWorkers ?? names.count)
        setUp(server, workers)
        for w in workers where w.welcome == nil && !w.silent { w.probe() }
        try c.run()
        #expect(!server.stalled, "the run stalled at step \(workload.version) (fake time \(server.clock.time) s)")
        if expectExact {
            #expect(workload.version == steps)
            #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
        }
        return (c, server)
    }

    // MARK: Reproducer 1: header fields above Int.max

    /// The 120-byte header of the reproducer: a gradient with step 2^63 (raw codec, one
    /// element), as a joined worker sent it. Its run id is patched and the header checksum
    /// recomputed, so it is exactly as well-formed as it was for the coordinator it crashed.
    static func reproducer(runID: UInt64, patch: (inout [UInt8]) -> Void = { _ in }) -> [[UInt8]] {
        let hex = "414d4257010006000000000001000000ea33170b43a3316b01000000000000000100000000000000fd3feb3c9250b797"
            + "0000000000000080040000000100000000000000000000000000000000000000010000000000000004000000000000"
            + "000400000000000000b4def25cfda6ef3a4f90e20ea6926af2"
        var h = stride(from: 0, to: hex.count, by: 2).map { i in
            UInt8(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 2)], radix: 16)!
        }
        withUnsafeBytes(of: runID.littleEndian) { h.replaceSubrange(16..<24, with: $0) }
        // Captured under protocol version 1; its fields, not its version, are the point.
        withUnsafeBytes(of: MessageHeader.currentVersion.littleEndian) { h.replaceSubrange(4..<6, with: $0) }
        patch(&h)
        let sum = XXH64.hash(Array(h[0..<112]))
        withUnsafeBytes(of: sum.littleEndian) { h.replaceSubrange(112..<120, with: $0) }
        return [h, [0, 0, 0, 0]]
    }

    /// step, parameterVersion or keyOffset = 2^63 from a joined worker: rejected when decoded,
    /// counted, and the run finishes exactly. (Before: SIGILL in `Int(h.step)`.)
    @Test(arguments: [("step", 48), ("parameterVersion", 64), ("keyOffset", 72)])
    func headerFieldAboveIntMaxIsRejected(field: String, offset: Int) throws {
        let (c, _) = try run(["w"]) { server, workers in
            var sent = false
            workers[0].onAssign = { w, body, header in
                if !sent {
                    sent = true
                    let frames = Self.reproducer(runID: 42) { h in
                        for i in 48..<56 { h[i] = 0 }   // step 0 unless it is the field under test
                        for i in offset..<(offset + 8) { h[i] = 0 }
                        h[offset + 7] = 0x80
                    }
                    try? w.client.send(frames)
                }
                return false
            }
        }
        let kind = field == "keyOffset" ? "invalid_key_range" : "field_out_of_range"
        #expect(c.stats.framesRejected[kind] == 1, "\(c.stats.framesRejected)")
    }

    @Test func reproducerHeaderDecodesToAClearError() throws {
        let frames = Self.reproducer(runID: 42)
        #expect(throws: WireError.fieldOutOfRange(field: "step", value: 1 << 63, limit: UInt64(Int64.max))) {
            try Message.decode(frames: frames, limits: toyLimits)
        }
    }

    // MARK: Reproducer 2 and every other way to forget a worker

    /// A joined worker sends a join hello with a wrong run id while it holds shards, then
    /// registers again on the same connection: its shards are taken back when the hello fails,
    /// and the step completes. (Before: they stayed owned by nobody and the step never ended.)
    @Test func joinWithWrongRunIDReturnsTheShards() throws {
        let (c, _) = try run(["w"]) { _, workers in
            workers[0].onAssign = { w, _, _ in
                w.onAssign = nil
                w.hello(.join, runID: 41, datasetHash: w.welcome?.datasetHash)
                return true   // never computes that assignment; the reject makes it register again
            }
        }
        #expect(c.stats.reassignedShards == shards)   // nobody else to take them: all go back at the rejoin
        #expect(c.stats.joins == 2)
    }

    /// The same with a second worker: the shards go to it at once.
    @Test func joinWithWrongRunIDHandsTheShardsToAnotherWorker() throws {
        let (c, _) = try run(["a", "b"]) { _, workers in
            workers[1].onAssign = { w, _, _ in
                w.onAssign = nil
                w.hello(.join, runID: 41, datasetHash: w.welcome?.datasetHash)
                return true
            }
        }
        #expect(c.stats.reassignedShards >= 2)
    }

    /// Rejected for good (wrong dataset) while holding shards: the other worker computes them.
    @Test func rejectedWorkerLeavesItsShards() throws {
        var victim: ScriptedWorker?
        let (c, _) = try run(["a", "b"]) { _, workers in
            victim = workers[1]
            workers[1].onAssign = { w, _, _ in
                w.onAssign = nil
                w.hello(.join, runID: w.welcome?.runID, datasetHash: "other-data")
                return true
            }
        }
        #expect(victim?.refused?.contains("dataset hash") == true)
        #expect(c.stats.reassignedShards >= 2)
    }

    /// A hello with another protocol version from a joined worker: refused, its shards go on.
    @Test func helloWithAnotherProtocolVersionLeavesItsShards() throws {
        let (c, _) = try run(["a", "b"]) { _, workers in
            workers[1].onAssign = { w, _, _ in
                w.onAssign = nil
                let body = HelloBody(phase: .probe, workerName: w.name, host: "test", pid: 1, protocolVersion: 99,
                                     runID: nil, datasetHash: nil, threads: 1)
                if let m = try? Message.control(w.header(.hello), body: body) { w.send(m) }
                return true
            }
        }
        #expect(c.stats.reassignedShards >= 2)
    }

    /// Dropped for silence (heartbeat timeout) while holding shards.
    @Test func droppedWorkerLeavesItsShards() throws {
        let (c, _) = try run(["a", "b"]) { _, workers in
            workers[1].onAssign = { w, _, _ in
                w.silent = true
                return true
            }
        }
        #expect(c.stats.drops == 1 && c.stats.reassignedShards >= 2)
    }

    /// Registers again (probe) on the same connection while joined and holding shards.
    @Test func rejoiningWorkerLeavesItsShards() throws {
        let (c, _) = try run(["a", "b"]) { _, workers in
            workers[1].onAssign = { w, _, _ in
                w.onAssign = nil
                w.probe()
                return true
            }
        }
        #expect(c.stats.reassignedShards >= 2 && c.stats.joins == 3)
    }

    /// A new incarnation of a worker (a restarted process: same name, new connection) replaces
    /// the old one, which held shards.
    @Test func newIncarnationReplacesTheOldOne() throws {
        let net = InMemoryNetwork(queueLimit: 10_000)
        let server = ScriptedServer(network: net, clock: FakeClock(), timeLimit: 60)
        let a = ScriptedWorker(network: net, name: "a", n: n)
        let old = ScriptedWorker(network: net, name: "b", n: n)
        let restarted = ScriptedWorker(network: net, name: "b", incarnation: 2, n: n)
        server.workers = [a, old, restarted]
        let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server, minWorkers: 2)
        old.onAssign = { w, _, _ in
            w.silent = true   // the process died here
            restarted.probe()
            return true
        }
        a.probe()
        old.probe()
        try c.run()
        #expect(!server.stalled)
        #expect(c.stats.drops >= 1 && c.stats.reassignedShards >= 2)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }

    /// A worker that vanishes after sending the first chunk of its shards is found unreachable
    /// while the coordinator broadcasts that chunk's update, in the middle of handling a
    /// gradient: its shards go to the other worker, which must then be their owner.
    @Test func workerUnreachableDuringTheBroadcastLeavesItsShards() throws {
        let (c, _) = try run(["a", "b"]) { server, workers in
            let network = server.network
            workers[1].onAssign = { w, body, header in
                w.onAssign = nil
                for m in w.gradientMessages(body, header) where m.header.keyOffset == 0 { w.send(m) }
                w.silent = true
                network.disconnect(w.client.peer)
                return true
            }
        }
        #expect(c.stats.drops == 1, "the healthy worker was dropped too: \(c.stats.drops) drops")
        #expect(c.stats.reassignedShards >= 2)
    }

    /// A joined worker sends a message for another run while holding shards: it is told to
    /// register again, so its shards go to the other worker at once.
    @Test func messageForAnotherRunLeavesItsShards() throws {
        let (c, _) = try run(["a", "b"]) { _, workers in
            workers[1].onAssign = { w, _, _ in
                w.onAssign = nil
                var h = w.header(.heartbeat)
                h.runID = 41
                w.send(Message(header: h))
                return true
            }
        }
        #expect(c.stats.reassignedShards >= 2 && c.stats.framesRejected["wrongRun"] == 1)
    }
}
