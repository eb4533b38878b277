import Cluster
import Foundation
import Logging
import Testing
import Wire

/// Records what a coordinator logs.
final class CapturedLog: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var records: [(level: Logger.Level, message: String)] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        lock.lock(); defer { lock.unlock() }
        records.append((level, message.description))
    }

    func count(_ level: Logger.Level, containing text: String) -> Int {
        lock.lock(); defer { lock.unlock() }
        return records.filter { $0.level == level && $0.message.contains(text) }.count
    }
}

/// A worker of another build cannot be answered in a format it reads (the header version differs),
/// so the coordinator says why in its own log instead: at warning level, for the 1st, 2nd, 4th ...
/// such frame, not for every probe. The run itself goes on.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ProtocolVersionTests {
    @Test func aPeerOfAnotherVersionIsNamedInTheLog() throws {
        let n = 64, shards = 2, steps = 3
        let net = InMemoryNetwork()
        let workload = ToyCoordinatorWorkload(n: n, steps: steps, shards: shards)
        let worker = WorkerThread(transport: net.connect(identity: "w0/1"), name: "w0", n: n, shards: shards)
        // An old build's hello: a valid header of version 1 (its own header checksum).
        let old = net.connect(identity: "old/1")
        var h = MessageHeader(type: .hello).encode()
        h[4] = 1; h[5] = 0
        let sum = XXH64.hash(Array(h[0..<112]))
        withUnsafeBytes(of: sum.littleEndian) { h.replaceSubrange(112..<120, with: $0) }
        for _ in 0..<5 { try old.send([h, []]) }
        let log = CapturedLog()
        let c = try Coordinator(workload: workload, transport: net.server(), options: coordinatorOptions(), checkpoints: nil,
                                incarnation: 1, logger: Logger(label: "test") { _ in log })
        try c.run()
        #expect((try? worker.wait()?.get()) == .finished)
        #expect(workload.finished)
        #expect(c.stats.framesRejected["unsupported_version"] == 5)
        #expect(log.count(.warning, containing: "another wire protocol version") == 3)   // frames 1, 2 and 4
    }
}
