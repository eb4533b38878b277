import Datasets
import FileIO
import Foundation
import TensorCore
import Testing

/// Classifier training and annotation run on the cluster too (issue 4), with the same result
/// as in one process.
@Suite(.serialized, .timeLimit(.minutes(10))) struct DistributedObjectivesTests {
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

    /// SPEC O5 crops end to end on a tiny image dataset: crop map, crops classifier (one process
    /// vs 2 workers), sigma_max annotation, and donut training (one process vs 2 workers).
    @Test func cropsPipelineIsDistributed() throws {
        let dir = try scratchDirectory("dist-crops")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"
        // 8x8 images: 40 clean ones (label 0), 120 out-of-distribution ones (label 1).
        var rng = CounterRNG(seed: 1, purpose: .evaluation)
        let n = 160
        let samples = Tensor<Float>(shape: [n, 1, 8, 8], storage: (0..<(n * 64)).map { i in
            Float(i / 64 < 40 ? rng.uniform() - 0.5 : (rng.uniform() < 0.5 ? -0.8 : 0.8)) })
        let manifest = DatasetDirectory.Manifest(source: "test images", corruption: "ood:1", cleanFraction: 0.25, seed: 0, count: n,
                                                 sampleShape: [1, 8, 8])
        try DatasetDirectory(path: data).write(.init(manifest: manifest, samples: samples, labels: (0..<n).map { $0 < 40 ? 0 : 1 },
                                                     clean: (0..<n).map { $0 < 40 }))
        let map = try ok(["classifier", "crop-map", "--data", data, "--database", "100", "--queries", "20", "--positions", "2",
                          "--sigmas", "0.1,0.5,2", "--out", dir + "/map.json", "--quiet"])
        #expect(map.stderr.contains("sigma -> crop size"), "\(map.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/map-crop.svg") && FileManager.default.fileExists(atPath: dir + "/map-mse.svg"))
        let tiny = ["--width", "32", "--blocks", "1", "--batch", "32", "--shards", "4", "--steps", "20", "--quiet"]
        _ = try ok(["train", "--data", data, "--objective", "classifier", "--crops", "5", "--out", dir + "/c1"] + tiny)
        _ = try ok(["train", "--data", data, "--objective", "classifier", "--crops", "5", "--workers", "2", "--out", dir + "/c2"] + tiny)
        _ = try ok(["classifier", "train", "--data", data, "--crops", "3", "--out", dir + "/c3"] + tiny)
        let c3 = try String(contentsOfFile: dir + "/c3/config.json", encoding: .utf8)
        #expect(c3.contains("\"classifierCrop\" : 3") && c3.contains("\"dataDimension\" : 9"), "\(c3)")
        let m1 = try Data(contentsOf: URL(fileURLWithPath: dir + "/c1/model.safetensors"))
        let m2 = try Data(contentsOf: URL(fileURLWithPath: dir + "/c2/model.safetensors"))
        #expect(m1 == m2, "distributed crops classifier training differs from the single-process run")
        let a = try ok(["annotate", "--data", data, "--crops-classifier", dir + "/c1", "--crop-map", dir + "/map.json", "--grid", "8",
                        "--draws", "4", "--quiet"])
        #expect(a.stderr.contains("sigma_max: per set"), "\(a.stderr)")
        let annotated = try DatasetDirectory(path: data).read()
        #expect(annotated.manifest.formatVersion == 2 && annotated.sigmaMax?.prefix(40).allSatisfy { $0 == 80 } == true)
        // Force some low-noise use so that the donut rows exist whatever the tiny classifier said.
        try DatasetDirectory(path: data).writeSigmaMax((0..<n).map { $0 < 40 ? 80 : ($0 % 2 == 0 ? 0.3 : 0) }, note: "test")
        _ = try ok(["annotate", "--data", data, "--fixed-sigma", "0.6"])
        let train = ["train", "--data", data, "--objective", "ambient"] + tiny
        let t1 = try ok(train + ["--out", dir + "/o1"])
        _ = try ok(train + ["--workers", "2", "--out", dir + "/o2"])
        let w1 = try Data(contentsOf: URL(fileURLWithPath: dir + "/o1/model.safetensors"))
        let w2 = try Data(contentsOf: URL(fileURLWithPath: dir + "/o2/model.safetensors"))
        #expect(w1 == w2, "distributed donut training differs from the single-process run")
        _ = t1
        let config = try String(contentsOfFile: dir + "/o1/config.json", encoding: .utf8)
        #expect(config.contains("crops annotation (60 samples used as clean below their sigma_max"), "\(config)")
        // Bad inputs: no map, a file that is not a map, a map of other images, a run that is not a crops classifier.
        let bad = try CommandRunner.run(["annotate", "--data", data, "--crops-classifier", dir + "/c1"])
        #expect(bad.status != 0 && bad.stderr.contains("--crop-map"), "\(bad.stderr)")
        try FileBytes.writeAtomically(Array("{}".utf8), to: dir + "/junk.json")
        let junk = try CommandRunner.run(["annotate", "--data", data, "--crops-classifier", dir + "/c1", "--crop-map", dir + "/junk.json"])
        #expect(junk.status != 0 && junk.stderr.contains("not a crop map"), "\(junk.stderr)")
        let text = try String(contentsOfFile: dir + "/map.json", encoding: .utf8)
        try FileBytes.writeAtomically(Array(text.replacingOccurrences(of: "\"image_shape\" : [\n    1,\n    8,\n    8\n  ]",
                                                                          with: "\"image_shape\" : [1, 28, 28]").utf8), to: dir + "/map28.json")
        let other = try CommandRunner.run(["annotate", "--data", data, "--crops-classifier", dir + "/c1", "--crop-map", dir + "/map28.json"])
        #expect(other.status != 0 && other.stderr.contains("was measured on images [1, 28, 28]"), "\(other.stderr)")
        let whole = try CommandRunner.run(["annotate", "--data", data, "--crops-classifier", dir + "/o1", "--crop-map", dir + "/map.json"])
        #expect(whole.status != 0 && !whole.stderr.contains("Fatal error"), "\(whole.stderr)")
    }
}
