import Cluster
import Foundation
import Testing
import Wire

/// A worker is silent only if nothing from it was in the queue when the coordinator last read
/// the queue to the end: heartbeats that wait unread behind other messages (the coordinator was
/// busy) are not silence. Scripted workers, in-memory transport, fake clock (one tick of 1 ms
/// per message read).
@Suite(.serialized, .timeLimit(.minutes(10))) struct LivenessTests {
    let n = 96, shards = 4, steps = 4

    @Test func heartbeatsQueuedBehindABacklogOfMessagesAreNotSilence() throws {
        let net = InMemoryNetwork(queueLimit: 20_000)
        let server = ScriptedServer(network: net, clock: FakeClock(), timeLimit: 120)
        let a = ScriptedWorker(network: net, name: "a", n: n), b = ScriptedWorker(network: net, name: "b", n: n)
        server.workers = [a, b]
        let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server, minWorkers: 2)
        // At step 2, b floods the queue with 5000 heartbeats: reading them takes 5 fake seconds,
        // five heartbeat timeouts, while a's heartbeats wait behind them.
        var flooded = false
        b.onAssign = { w, body, _ in
            if body.step == 2 && !flooded {
                flooded = true
                let beat = Message(header: w.header(.heartbeat))
                for _ in 0..<5000 { try? w.client.send(beat.frames()) }
            }
            return false
        }
        let events = EventLog()
        c.onEvent = { events.append($0) }
        a.probe()
        b.probe()
        try c.run()
        #expect(flooded && !server.stalled)
        #expect(c.stats.drops == 0, "\(events.all.filter { $0.kind == .drop }.map(\.detail))")
        #expect(workload.version == steps)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }

    /// Silence is a worker's own: when nothing reaches the coordinator from anybody for longer
    /// than the heartbeat timeout (its link or I/O thread stalled), nobody is dropped; a worker
    /// that goes silent while the others talk still is, at the heartbeat timeout. At 8 simulated
    /// hosts all workers were dropped at once, over and over, and the first step never ended.
    @Test func nobodyIsDroppedWhenNobodyIsHeard() throws {
        let net = InMemoryNetwork(queueLimit: 20_000)
        let clock = FakeClock()
        let server = ScriptedServer(network: net, clock: clock, timeLimit: 120)
        let a = ScriptedWorker(network: net, name: "a", n: n), b = ScriptedWorker(network: net, name: "b", n: n),
            d = ScriptedWorker(network: net, name: "d", n: n)
        server.workers = [a, b, d]
        let (c, workload) = try scriptedCoordinator(steps: 6, shards: shards, n: n, network: net, server: server, minWorkers: 3)
        #expect(c.options.heartbeatTimeout == 1 && c.options.coordinatorTimeout == 3)
        var deafAt: Double?, silencedAt: Double?
        server.onTick = {
            // Step 2: the coordinator hears nothing for 2.5 s (2.5 heartbeat timeouts).
            if workload.version == 2 && deafAt == nil {
                deafAt = clock.time
                server.deaf = clock.time..<(clock.time + 2.5)
            }
            // Step 4: d alone goes silent for good.
            if workload.version == 4 && silencedAt == nil {
                silencedAt = clock.time
                d.silent = true
            }
        }
        let events = EventLog()
        c.onEvent = { events.append($0) }
        for w in [a, b, d] { w.probe() }
        try c.run()
        let drops = events.all.filter { $0.kind == .drop }
        #expect(deafAt != nil && silencedAt != nil && !server.stalled)
        #expect(drops.count == 1 && drops.allSatisfy { $0.worker.hasPrefix("d#") && $0.step >= 4 && $0.detail.contains("no message") },
                "\(drops.map { "\($0.worker) at step \($0.step): \($0.detail)" })")
        #expect(workload.version == 6)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: 6, shards: shards)))
    }
}
