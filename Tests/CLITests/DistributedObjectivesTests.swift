import Datasets
import Foundation
import TensorCore
import Testing

/// Classifier training and annotation run on the cluster too (issue 4), with the same result
/// as in one process.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DistributedObjectivesTests {
    func ok(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> CommandResult {
        let r = try CommandRunner.run(args)
        #expect(r.status == 0, "\(args): \(r.stderr)", sourceLocation: sourceLocation)
        return r
    }

    @Test func classifierTrainingAndAnnotationAreDistributed() throws {
        let dir = try scratchDirectory("dist-omni")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=3,count=400", "--corrupt", "noise:0.4", "--clean-fraction", "0.25", "--out", data])
        let tiny = ["--width", "32", "--blocks", "1", "--batch", "32", "--shards", "4", "--steps", "20", "--quiet"]
        // The classifier: one process vs a local cluster of 2 workers, same shards.
        _ = try ok(["train", "--data", data, "--objective", "classifier", "--out", dir + "/cls1"] + tiny)
        _ = try ok(["train", "--data", data, "--objective", "classifier", "--workers", "2", "--out", dir + "/cls2"] + tiny)
        let m1 = try Data(contentsOf: URL(fileURLWithPath: dir + "/cls1/model.safetensors"))
        let m2 = try Data(contentsOf: URL(fileURLWithPath: dir + "/cls2/model.safetensors"))
        #expect(m1 == m2, "distributed classifier training differs from the single-process run")
        // Annotation: in this process vs 2 workers; the dataset gets the same annotations.
        let copy = dir + "/data2"
        try FileManager.default.copyItem(atPath: data, toPath: copy)
        _ = try ok(["annotate", "--data", data, "--classifier", dir + "/cls1", "--grid", "16", "--span", "4", "--quiet"])
        let a = try ok(["annotate", "--data", copy, "--classifier", dir + "/cls1", "--grid", "16", "--span", "4", "--workers", "2", "--quiet"])
        #expect(a.stderr.contains("annotated 300 corrupted samples"), "\(a.stderr)")
        let single = try DatasetDirectory(path: data).read().annotations!
        let distributed = try DatasetDirectory(path: copy).read().annotations!
        #expect(single.map(\.bitPattern) == distributed.map(\.bitPattern), "distributed annotations differ")
        #expect(single.suffix(300).allSatisfy { $0 > 0 } && single.prefix(100).allSatisfy { $0 == 0 })
    }
}
