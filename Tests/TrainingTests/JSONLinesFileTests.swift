import Foundation
import Testing
@testable import Training

/// metrics.jsonl and events.jsonl share JSONLinesFile: it appends to an existing file, truncation
/// keeps exactly the chosen objects (dropping lines that are not JSON), appends continue after a
/// truncation, and a closed file refuses appends.
@Suite struct JSONLinesFileTests {
    @Test func appendTruncateAndClose() throws {
        let path = NSTemporaryDirectory() + "jsonlines-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "{\"step\":0}\nnot json\n".write(toFile: path, atomically: true, encoding: .utf8)
        let file = try JSONLinesFile(path: path)
        for s in 1..<5 { try file.append("{\"step\":\(s)}") }
        try file.truncate { ($0["step"] as? Int).map { $0 < 3 } ?? false }
        try file.append("{\"step\":9}")
        try file.close()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "{\"step\":0}\n{\"step\":1}\n{\"step\":2}\n{\"step\":9}\n")
        #expect(throws: TrainingError.self) { try file.append("{}") }

        let log = try MetricsLog(path: path)
        try log.append(StepReport(step: 10, loss: .nan, terms: ["a": 1], gradNorm: 2, learningRate: 1e-3, seconds: 0.5), samplesPerSecond: 64)
        try log.truncate(keepingStepsBelow: 2)
        try log.append(StepReport(step: 2, loss: 1.5, terms: [:], gradNorm: 2, learningRate: 1e-3, seconds: 0.5), samplesPerSecond: 64)
        try log.close()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 3 && lines[2].hasPrefix("{\"step\":2,\"loss\":1.5,"), "\(lines)")
    }
}
