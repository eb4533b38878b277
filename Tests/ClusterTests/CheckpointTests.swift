import Cluster
import FileIO
import Foundation
import TensorCore
import Testing
import Wire

@Suite struct CheckpointTests {
    func snapshot(_ seed: UInt64 = 1, n: Int = 300) -> StateSnapshot {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return StateSnapshot(sections: [.init(name: "params", values: rng.normals(n)), .init(name: "adam.m", values: rng.normals(n)),
                                        .init(name: "empty", values: [])],
                             counters: ["step": 12, "adam.step": 12], metadata: ["config_hash": "abc"])
    }

    func tempDir() -> String { NSTemporaryDirectory() + "ambient-ckpt-test-\(UInt32.random(in: 0...UInt32.max))" }

    @Test func roundTrip() throws {
        let s = snapshot()
        #expect(try CheckpointFormat.decode(CheckpointFormat.encode(s), name: "x") == s)
        let special = StateSnapshot(sections: [.init(name: "p", values: [.nan, .infinity, -0.0, .leastNonzeroMagnitude])])
        let back = try CheckpointFormat.decode(CheckpointFormat.encode(special), name: "x")
        #expect(back.sections[0].values.map(\.bitPattern) == special.sections[0].values.map(\.bitPattern))
    }

    @Test func everyTruncationAndBitFlipIsDetected() {
        let bytes = CheckpointFormat.encode(snapshot(n: 20))
        for cut in 0..<bytes.count {
            #expect(throws: CheckpointError.self) { _ = try CheckpointFormat.decode(Array(bytes.prefix(cut)), name: "t") }
        }
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var b = bytes
            b[i] ^= 0x10
            #expect(throws: CheckpointError.self) { _ = try CheckpointFormat.decode(b, name: "f") }
        }
        #expect(throws: CheckpointError.self) { _ = try CheckpointFormat.decode(bytes + [0], name: "extended") }
    }

    /// The temporary files of writes cut short by a kill (found left behind by
    /// scripts/fault-injection, ~100 MB each for a large model) are removed; nothing else is.
    @Test func interruptedWritesAreRemoved() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try CheckpointStore(directory: dir, keep: 3)
        try store.write(snapshot(1), step: 10)
        for name in ["ckpt-00000020.ambient.partial.Ab12Cd", "LATEST.partial.x9Y8z7", "notes.txt", "ckpt-00000030.ambient.bak"] {
            try FileBytes.writeAtomically([1, 2, 3], to: dir + "/" + name)
        }
        #expect(store.removeInterruptedWrites() == ["LATEST.partial.x9Y8z7", "ckpt-00000020.ambient.partial.Ab12Cd"])
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(left == ["LATEST", "ckpt-00000010.ambient", "ckpt-00000030.ambient.bak", "notes.txt"])
        #expect(store.loadNewest()?.step == 10)
        #expect(store.removeInterruptedWrites().isEmpty)
    }

    /// A truncated or bit-flipped newest checkpoint is passed over for the previous one.
    @Test(arguments: ["truncate", "flip", "garbage-latest"])
    func corruptNewestFallsBackToPrevious(damage: String) throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try CheckpointStore(directory: dir, keep: 3)
        try store.write(snapshot(1), step: 10)
        let newest = try store.write(snapshot(2), step: 20)
        var bytes = try FileBytes.contents(of: newest)
        switch damage {
        case "truncate": bytes = Array(bytes.prefix(bytes.count / 2))
        case "flip": bytes[bytes.count / 2] ^= 0x01
        default: try FileBytes.writeAtomically(Array("ckpt-99999999.ambient\n".utf8), to: dir + "/LATEST")
        }
        if damage != "garbage-latest" { try FileBytes.writeAtomically(bytes, to: newest) }
        var skipped: [String] = []
        let found = store.loadNewest { skipped.append($0) }
        if damage == "garbage-latest" {
            #expect(found?.step == 20)
        } else {
            #expect(found?.step == 10)
            #expect(found?.snapshot == snapshot(1))
            #expect(skipped.count == 1 && skipped[0].contains("ckpt-00000020"), "\(skipped)")
        }
    }

    @Test func keepsTheLastK() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try CheckpointStore(directory: dir, keep: 2)
        for s in [1, 2, 3, 4] { try store.write(snapshot(UInt64(s)), step: s) }
        #expect(store.list().map(\.step) == [4, 3])
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: dir)).contains { $0.contains("partial") })
    }

    /// Two coordinators never hold the same run; each holder gets the next incarnation.
    @Test func coordinatorLockIsExclusiveAndCountsIncarnations() throws {
        let dir = tempDir()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try CoordinatorLock(directory: dir)
        #expect(a.incarnation == 1)
        #expect(throws: ClusterError.self) { _ = try CoordinatorLock(directory: dir) }
        a.release()
        let b = try CoordinatorLock(directory: dir)
        #expect(b.incarnation == 2)
        b.release()
    }
}

@Suite struct ResidualFileTests {
    @Test func roundTrip() throws {
        let f = ResidualFile(step: 100, shard: 3, chunks: [.init(offset: 0, values: [1, -2.5, .leastNonzeroMagnitude]),
                                                           .init(offset: 3, values: []), .init(offset: 3, values: [7])])
        let back = try ResidualFile.decode(f.encode())
        #expect(back == f)
        #expect(ResidualFile.path(directory: "/d", step: 100, shard: 3) == "/d/step-00000100/shard-0003.residual")
    }

    @Test func badInputIsRefused() throws {
        let good = ResidualFile(step: 5, shard: 1, chunks: [.init(offset: 0, values: [1, 2, 3, 4])]).encode()
        var flipped = good
        flipped[30] ^= 0x10
        var wrongMagic = good
        wrongMagic[0] = 0
        for bad in [[], Array(good.prefix(20)), Array(good.dropLast(1)), flipped, wrongMagic, good + [0]] {
            #expect(throws: ClusterError.self) { try ResidualFile.decode(bad) }
        }
    }
}
