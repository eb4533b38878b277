@testable import Cluster
import Foundation
import Testing
import Wire

/// The sharded reduction's wire fields: each round-trips through a real message, and every bad
/// input is refused with a reason before any field is used as an index.
@Suite struct RangeOwnerMessageTests {
    static let plan = try! ChunkPlan(ranges: [0..<3, 3..<7, 7..<10, 10..<12], parameterCount: 12)

    static func roundTrip<T: Codable>(_ type: MessageType, _ body: T) throws -> T {
        let m = try Message.control(MessageHeader(type: type, runID: 9), body: body)
        let decoded = try Message.decode(frames: m.frames(), limits: .default)
        #expect(decoded.header.type == type)
        return try decoded.decodeJSON(T.self, limits: .default)
    }

    @Test func ownerMapRoundTripsInWelcomeAndAssign() throws {
        let map = try RangeOwnerMap(plan: Self.plan, owners: [2, 0, 5], generation: 17)
        let body = RangeOwnersBody(map: map, addresses: [2: "tcp://10.0.0.2:5601", 5: "ipc:///tmp/run/5.sock"],
                                   receivers: ["tcp://10.0.0.2:5601", "ipc:///tmp/run/5.sock", "inproc://w7"], relay: 5)
        // Chunks of 3, 4, 3, 2 values dealt to 2, 0, 5, then to 2 (tied with 5 at 3, and named first).
        #expect(body.ranges.map(\.address) == ["tcp://10.0.0.2:5601", nil, "ipc:///tmp/run/5.sock", "tcp://10.0.0.2:5601"])
        var welcome = ControlMessageValidationTests.welcome(offsets: Self.plan.offsets)
        welcome.owners = body
        let w = try Self.roundTrip(.welcome, welcome)
        #expect(w.owners == body)
        #expect(w.owners?.relay == 5)
        #expect(try w.owners?.map(plan: Self.plan).get() == map)
        var assign = AssignBody(step: 4, shards: [1], parameterVersion: 4, parameterChecksum: .max)
        assign.owners = body
        let a = try Self.roundTrip(.assign, assign)
        #expect(a.owners == body && a.parameterChecksum == .max)
        #expect(body.address(of: 5) == "ipc:///tmp/run/5.sock" && body.address(of: 0) == nil && body.address(of: 3) == nil)
    }

    @Test func dataKeyRoundTripsAndIsChecked() throws {
        let key = try CurveKeyPair.generate()
        var welcome = ControlMessageValidationTests.welcome(offsets: Self.plan.offsets)
        welcome.dataKey = DataKeyBody(publicKey: key.publicKey, secretKey: key.secretKey)
        let w = try Self.roundTrip(.welcome, welcome)
        #expect(w.dataKey?.keyPair == key)
        #expect(DataKeyBody(publicKey: key.publicKey, secretKey: "short").keyPair == nil)
        #expect(DataKeyBody(publicKey: String(key.publicKey.dropLast()) + " ", secretKey: key.secretKey).keyPair == nil)
        #expect(try Self.roundTrip(.welcome, ControlMessageValidationTests.welcome(offsets: [0])).dataKey == nil)
    }

    /// Bodies of the single-coordinator data plane (no new keys) still decode, with no owners.
    @Test func bodiesWithoutTheNewKeysStillDecode() throws {
        let hello = try JSONDecoder().decode(HelloBody.self, from: Data("""
            {"phase":"join","workerName":"w","host":"h","pid":1,"protocolVersion":1,"threads":2}
            """.utf8))
        #expect(hello.dataAddress == nil && hello.ownerOptimizer == nil)
        let assign = try JSONDecoder().decode(AssignBody.self, from: Data("""
            {"step":1,"shards":[0],"parameterVersion":1,"parameterChecksum":18446744073709551615}
            """.utf8))
        #expect(assign.owners == nil && assign.parameterChecksum == .max)
        let h = try Self.roundTrip(.hello, HelloBody(phase: .probe, workerName: "w", host: "h", pid: 3, protocolVersion: 1,
                                                     runID: nil, datasetHash: nil, threads: 1, dataAddress: "tcp://10.0.0.3:5601"))
        #expect(h.dataAddress == "tcp://10.0.0.3:5601")
    }

    /// The optimiser sharded across owners: `HelloBody.ownerOptimizer` and
    /// `RangeOwnersBody.ownersApply` round-trip, read as nil from older peers, and a map that asks
    /// owners to apply the optimiser and names a relay is refused (there is nothing to relay).
    @Test func ownersApplyRoundTripsAndRefusesARelay() throws {
        let map = try RangeOwnerMap(plan: Self.plan, owners: [2, 5], generation: 3)
        let addresses: [UInt32: String] = [2: "tcp://10.0.0.2:5601", 5: "tcp://10.0.0.5:5601"]
        let body = RangeOwnersBody(map: map, addresses: addresses, receivers: Array(addresses.values).sorted(), ownersApply: true)
        var assign = AssignBody(step: 4, shards: [1], parameterVersion: 4, parameterChecksum: 7)
        assign.owners = body
        let a = try Self.roundTrip(.assign, assign)
        #expect(a.owners?.ownersApply == true && a.owners == body)
        #expect(try a.owners?.map(plan: Self.plan).get() == map)
        let hello = try Self.roundTrip(.hello, HelloBody(phase: .join, workerName: "w", host: "h", pid: 3, protocolVersion: 1, runID: 1,
                                                         datasetHash: "d", threads: 1, ownerOptimizer: true))
        #expect(hello.ownerOptimizer == true)
        let old = try JSONDecoder().decode(RangeOwnersBody.self, from: Data(#"{"generation":1,"ranges":[],"receivers":[]}"#.utf8))
        #expect(old.ownersApply == nil)
        var relayed = body
        relayed.relay = 2
        #expect(throws: ClusterError.self) { try relayed.map(plan: Self.plan).get() }
        relayed.ownersApply = false
        #expect((try? relayed.map(plan: Self.plan).get()) == map)
    }

    @Test func badOwnerBodiesNameTheirProblem() {
        func body(_ ranges: [(Int, Int, UInt32, String?)]) -> RangeOwnersBody {
            RangeOwnersBody(generation: 1, ranges: ranges.map { OwnerRangeBody(firstChunk: $0.0, endChunk: $0.1, owner: $0.2, address: $0.3) })
        }
        let a = "tcp://h:1", b = "ipc:///x"
        #expect((try? body([(0, 2, 1, a), (2, 4, 0, nil)]).map(plan: Self.plan).get()) != nil)
        let bad: [[(Int, Int, UInt32, String?)]] = [
            [],                                          // covers nothing
            [(0, 2, 1, a)],                              // leaves chunks 2, 3 to nobody
            [(0, 2, 1, a), (2, 5, 2, b)],                // past the plan
            [(0, 2, 1, a), (3, 4, 2, b)],                // a gap
            [(0, 3, 1, a), (2, 4, 2, b)],                // an overlap
            [(2, 4, 1, a), (0, 2, 2, b)],                // out of order
            [(0, 0, 1, a), (0, 4, 2, b)],                // empty
            [(-1, 4, 1, a)], [(0, Int.max, 1, a)], [(Int.min, 4, 1, a)],
            [(0, 4, 1, nil)],                            // a worker without an address
            [(0, 4, 1, "http://h:1")], [(0, 4, 1, "tcp://")], [(0, 4, 1, "tcp://h :1")],
            [(0, 4, 1, "tcp://" + String(repeating: "h", count: 600))],
            [(0, 2, 1, a), (2, 4, 1, b)],                // one owner, two addresses
        ]
        for ranges in bad {
            #expect(throws: ClusterError.self, "\(ranges)") { try body(ranges).map(plan: Self.plan).get() }
        }
        var badReceiver = body([(0, 4, 1, a)])
        badReceiver.receivers = [a, "udp://h:1"]
        #expect(throws: ClusterError.self) { try badReceiver.map(plan: Self.plan).get() }
    }

    @Test func malformedOwnerJSONIsRefused() throws {
        let prefix = #"{"runID":1,"workerID":1,"workloadSpec":[],"datasetHash":"h","shardCount":2,"codec":"raw","heartbeatInterval":1,"coordinatorTimeout":4,"chunkOffsets":[0],"owners":"#
        for owners in [#"{"generation":-1,"ranges":[]}"#, #"{"generation":4294967296,"ranges":[]}"#,
                       #"{"ranges":[]}"#, #"{"generation":1,"ranges":[{"firstChunk":0,"endChunk":1}]}"#,
                       #"{"generation":1,"ranges":[{"firstChunk":0.5,"endChunk":1,"owner":1}]}"#,
                       #"{"generation":1,"ranges":[],"receivers":[1]}"#, "[]"] {
            let m = Message(header: MessageHeader(type: .welcome), payload: Array((prefix + owners + "}").utf8))
            #expect(throws: WireError.self, "\(owners)") { try m.decodeJSON(WelcomeBody.self, limits: .default) }
        }
    }

    /// shardDone (type 14): a shard's GradientMeta, tagged like a gradient (step, shard, shard
    /// count, version, assignment generation); every field survives the frames, and a body that
    /// is not a GradientMeta is refused with a WireError (the coordinator counts it as
    /// "badShardDone" and does not count the shard).
    @Test func shardDoneRoundTripsAndBadBodiesAreRefused() throws {
        let meta = GradientMeta(loss: 0.125, terms: ["ambient": 0.1, "consistency": -0.5], rows: 37, computeSeconds: 1.5)
        let h = MessageHeader(type: .shardDone, generation: 77, runID: 9, coordinatorIncarnation: 3, senderID: 4, senderIncarnation: 5,
                              step: 12, shard: 6, shardCount: 8, parameterVersion: 12)
        let sent = try Message.control(h, body: meta)
        let decoded = try Message.decode(frames: sent.frames(), limits: .default)
        #expect(decoded.header == sent.header && sent.header.type == .shardDone && sent.header.generation == 77)
        #expect([decoded.header.step, decoded.header.parameterVersion] == [12, 12] && decoded.header.shard == 6 && decoded.header.shardCount == 8)
        #expect(try decoded.decodeJSON(GradientMeta.self, limits: .default) == meta)
        let bad = ["", "{}", "[]", "null", #"{"loss":1,"terms":{},"rows":1}"#, #"{"loss":"1","terms":{},"rows":1,"computeSeconds":0}"#,
                   #"{"loss":1,"terms":[],"rows":1,"computeSeconds":0}"#, #"{"loss":1,"terms":{},"rows":1.5,"computeSeconds":0}"#,
                   #"{"loss":1,"terms":{},"rows":1,"computeSeconds":0"#, "\u{FF}\u{FE}"]
        for body in bad {
            let m = Message(header: h, payload: Array(body.utf8))
            let again = try Message.decode(frames: m.frames(), limits: .default)
            #expect(throws: WireError.self, "\(body)") { try again.decodeJSON(GradientMeta.self, limits: .default) }
        }
        // Over the JSON limit: refused before it is parsed.
        let big = Message(header: h, payload: Array(("{\"loss\":1,\"terms\":{\"" + String(repeating: "x", count: 5000) + "\":1},\"rows\":1,\"computeSeconds\":0}").utf8))
        #expect(throws: WireError.self) { try big.decodeJSON(GradientMeta.self, limits: WireLimits(maxPayloadBytes: 1 << 20, maxRawBytes: 1 << 20, maxJSONBytes: 1024)) }
    }
}
