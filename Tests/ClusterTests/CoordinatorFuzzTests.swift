import Cluster
import Foundation
import Testing

/// The coordinator's message handler under hostile input from a joined peer (CoordinatorFuzzer):
/// after every message no trap; every step ends once the honest worker has sent (no stall);
/// the final weights equal the unfuzzed run's. A short run here; `scripts/fuzz-coordinator`
/// runs at least 10^6 messages (AMBIENT_FUZZ_MESSAGES, AMBIENT_FUZZ_SEEDS=first-last,
/// AMBIENT_FUZZ_REPORT=path for the figures).
@Suite(.serialized, .timeLimit(.minutes(30))) struct CoordinatorFuzzTests {
    @Test func hostileJoinedPeerNeverTrapsStallsOrChangesTheWeights() throws {
        let env = ProcessInfo.processInfo.environment
        let perRun = Int(env["AMBIENT_FUZZ_MESSAGES"] ?? "") ?? 5000
        let seeds: ClosedRange<UInt64> = {
            let parts = (env["AMBIENT_FUZZ_SEEDS"] ?? "1-8").split(separator: "-").compactMap { UInt64($0) }
            return parts.count == 2 && parts[0] <= parts[1] ? parts[0]...parts[1] : 1...8
        }()
        let start = Date()
        var total = FuzzFigures()
        for seed in seeds {
            total.add(try fuzzCoordinator(seed: seed, messages: perRun))
        }
        let seconds = Date().timeIntervalSince(start)
        let line = "fuzz-coordinator seeds \(seeds.lowerBound)-\(seeds.upperBound): \(total); \(String(format: "%.1f", seconds)) s wall"
        print(line)
        if let path = env["AMBIENT_FUZZ_REPORT"] {
            try (line + "\n" + total.failures.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        }
        #expect(total.failures.isEmpty, "\(total.failures.prefix(20))")
        #expect(total.messages >= perRun * seeds.count)
        #expect(total.outcomes.values.reduce(0, +) > 0)
    }
}
