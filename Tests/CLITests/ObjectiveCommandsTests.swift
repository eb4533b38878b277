import Datasets
import FileIO
import Foundation
import TensorCore
import Testing

/// The commands of issue 3 on tiny synthetic data: dataset make, classifier train, annotate,
/// train on a directory (O2 annotated, O3, O4, O6), sample (fixed-mask, posterior), eval; and
/// their bad inputs, each one clear error line and a non-zero exit.
@Suite struct ObjectiveCommandsTests {
    func ok(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> CommandResult {
        let r = try CommandRunner.run(args)
        #expect(r.status == 0, "\(args): \(r.stderr)", sourceLocation: sourceLocation)
        return r
    }

    func fails(_ args: [String], mentions needles: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try CommandRunner.run(args)
        #expect(r.status != 0 && r.status != 124, "exit \(r.status) for \(args)", sourceLocation: sourceLocation)
        for needle in needles {
            #expect(r.stderr.lowercased().contains(needle.lowercased()), "stderr lacks '\(needle)': \(r.stderr)", sourceLocation: sourceLocation)
        }
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack dump"), "crashed: \(r.stderr)", sourceLocation: sourceLocation)
    }

    let tiny = ["--width", "32", "--blocks", "1", "--batch", "32", "--quiet"]

    @Test func annotatedPipelineAndSamplers() throws {
        let dir = try scratchDirectory("omni")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=3,count=400", "--corrupt", "noise:0.4", "--clean-fraction", "0.25", "--out", data])
        _ = try ok(["classifier", "train", "--data", data, "--steps", "30", "--out", dir + "/cls"] + tiny)
        let a = try ok(["annotate", "--data", data, "--classifier", dir + "/cls", "--grid", "16", "--span", "4", "--quiet"])
        #expect(a.stderr.contains("annotated 300 corrupted samples"), "\(a.stderr)")
        let annotated = try DatasetDirectory(path: data).read()
        #expect(annotated.annotations!.prefix(100).allSatisfy { $0 == 0 } && annotated.annotations!.suffix(300).allSatisfy { $0 > 0 })
        #expect(annotated.manifest.annotation?.contains("grid 16") == true)
        // --floor raises the annotations below it and leaves the others; the manifest says so.
        // (This tiny classifier gives every sample the same level, so one floor above it and one
        // below it; AnnotationFloorTests checks a spread of levels.)
        let levels = annotated.annotations!.suffix(300)
        for floor in [levels.min()! * 1.5, levels.min()! / 2] {
            _ = try ok(["annotate", "--data", data, "--classifier", dir + "/cls", "--grid", "16", "--span", "4", "--floor", String(floor), "--quiet"])
            let floored = try DatasetDirectory(path: data).read()
            #expect(floored.annotations!.suffix(300) == ArraySlice(levels.map { Double(Float(max($0, floor))) }))
            #expect(floored.annotations!.prefix(100).allSatisfy { $0 == 0 })
            #expect(floored.manifest.annotation?.contains("floored at \(floor)") == true, "\(floored.manifest.annotation ?? "")")
        }
        try fails(["annotate", "--data", data, "--fixed-sigma", "0.6", "--floor", "1"], mentions: ["--floor applies to --classifier"])
        try fails(["annotate", "--data", data, "--classifier", dir + "/cls", "--floor=-1"], mentions: ["--floor must be a positive"])
        try fails(["annotate", "--data", data, "--classifier", dir + "/cls", "--floor", "1000"], mentions: ["must be below sigma_max"])
        _ = try ok(["annotate", "--data", data, "--classifier", dir + "/cls", "--grid", "16", "--span", "4", "--quiet"])
        #expect(try DatasetDirectory(path: data).read().annotations!.suffix(300) == levels)
        _ = try ok(["train", "--data", data, "--objective", "ambient", "--steps", "10", "--out", dir + "/omni"] + tiny)
        let e = try ok(["eval", "--run", dir + "/omni", "--count", "20", "--steps", "4", "--out", dir + "/eval.json", "--quiet"])
        _ = e
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/eval.json"))) as? [String: Any]
        #expect((json?["denoising"] as? [Any])?.isEmpty == false, "\(String(describing: json))")
        // Fixed sigma_min instead of a classifier.
        _ = try ok(["annotate", "--data", data, "--fixed-sigma", "0.6"])
        #expect(try DatasetDirectory(path: data).read().annotations!.suffix(300).allSatisfy { abs($0 - 0.6) < 1e-6 })

        // An O2 model of a directory whose samples are all noisy stops at b sigma_n when sampled.
        let noisy = dir + "/noisy"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=3,count=100", "--corrupt", "noise:0.4", "--out", noisy])
        _ = try ok(["train", "--data", noisy, "--objective", "ambient", "--steps", "3", "--out", dir + "/o2"] + tiny)
        let stopped = try ok(["sample", "--run", dir + "/o2", "--count", "4", "--steps", "4", "--out", dir + "/o2.npy", "--quiet"])
        #expect(stopped.stderr.contains("stopped at sigma 0.46"), "\(stopped.stderr)")
        // The clamp to [-1, 1] is for images; vectors have no known range.
        try fails(["sample", "--run", dir + "/o2", "--clip-denoised", "--out", dir + "/c.npy"], mentions: ["--clip-denoised", "vectors"])
        try fails(["eval", "--run", dir + "/o2", "--clip-denoised", "--out", dir + "/c.json"], mentions: ["--clip-denoised", "vectors"])

        // O3 on masks with the fixed-mask sampler, O4, O6; posterior sampling.
        let masked = dir + "/masked"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=3,count=200", "--corrupt", "mask:0.3", "--out", masked])
        _ = try ok(["train", "--data", masked, "--objective", "masked", "--steps", "5", "--out", dir + "/o3"] + tiny)
        _ = try ok(["sample", "--run", dir + "/o3", "--count", "4", "--steps", "4", "--out", dir + "/o3.npy", "--quiet"])
        _ = try ok(["train", "--data", "gmm:dim=3,count=200", "--corrupt", "noise:0.5", "--objective", "consistency", "--steps", "5",
                    "--out", dir + "/o4"] + tiny)
        let s = try ok(["sample", "--run", dir + "/o4", "--count", "4", "--steps", "4", "--out", dir + "/o4.npy", "--quiet"])
        #expect(!s.stderr.contains("stopped at sigma"), "an O4 model samples to sigma_min: \(s.stderr)")
        _ = try ok(["train", "--data", "gmm:dim=3,count=200", "--objective", "split", "--split-sigma", "0.5", "--steps", "5",
                    "--out", dir + "/o6"] + tiny)
        let p = try ok(["sample", "--run", dir + "/o4", "--from", dir + "/o4.npy", "--sigma", "0.3", "--steps", "4", "--out", dir + "/post.npy"])
        _ = p
        #expect(try NPY.readFloat(dir + "/post.npy").shape == [4, 3])
    }

    /// Rewrites one file of a dataset directory and its manifest entry, so that only the content
    /// check (not the hash) can catch it.
    func replace(_ name: String, in data: String, with bytes: [UInt8]) throws {
        try FileBytes.writeAtomically(bytes, to: data + "/" + name)
        let url = URL(fileURLWithPath: data + "/manifest.json")
        var manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var files = manifest["files"] as! [String: Any]
        files[name] = ["sha256": SHA256.hex(bytes), "bytes": bytes.count]
        manifest["files"] = files
        try JSONSerialization.data(withJSONObject: manifest).write(to: url)
    }

    @Test func badInputsGiveOneClearError() throws {
        let dir = try scratchDirectory("bad-objectives")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Unknown corruption spec: the error lists the valid ones.
        try fails(["dataset", "make", "--source", "gmm", "--corrupt", "frobnicate:2", "--out", dir + "/x"],
                  mentions: ["corruption 'frobnicate:2'", "noise:S", "mask:P", "box:S", "blur:S", "ood:"])
        try fails(["train", "--data", "gmm", "--corrupt", "smudge:1", "--out", dir + "/r"], mentions: ["corruption 'smudge:1'", "blur:S"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/x") && !FileManager.default.fileExists(atPath: dir + "/r"))

        // A mask file whose shape disagrees with the data.
        let masked = dir + "/masked"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=4,count=50", "--corrupt", "mask:0.3", "--out", masked])
        try replace("masks.npy", in: masked, with: NPY.encode(Tensor<Float>(shape: [50, 3], repeating: 1)))
        try fails(["train", "--data", masked, "--objective", "masked", "--steps", "1", "--out", dir + "/r1"] + tiny,
                  mentions: ["masks.npy", "shape", "[50, 4]"])
        try fails(["dataset", "verify", masked], mentions: ["masks.npy"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/r1"))
        // A damaged file (hash mismatch).
        var bytes = try FileBytes.contents(of: masked + "/samples.npy")
        bytes[bytes.count - 2] ^= 1
        try FileBytes.writeAtomically(bytes, to: masked + "/samples.npy")
        try fails(["dataset", "verify", masked], mentions: ["samples.npy", "does not match the manifest"])

        // Annotations outside [0, sigma_max].
        let noisy = dir + "/noisy"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=4,count=50", "--corrupt", "noise:0.3", "--clean-fraction", "0.2", "--out", noisy])
        try replace("annotations.npy", in: noisy, with: NPY.encode(Tensor<Float>(shape: [50], storage: (0..<50).map { $0 == 7 ? 100 : 0.5 })))
        try fails(["train", "--data", noisy, "--objective", "ambient", "--steps", "1", "--out", dir + "/r2"] + tiny,
                  mentions: ["annotations.npy", "100", "outside [0, sigma_max = 80"])
        try replace("annotations.npy", in: noisy, with: NPY.encode(Tensor<Float>(shape: [50], storage: (0..<50).map { $0 == 3 ? -1 : 0.5 })))
        try fails(["dataset", "verify", noisy], mentions: ["annotations.npy", "-1"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/r2"))

        // A classifier checkpoint used as a denoiser, and the other way round.
        let clean = dir + "/mixed"
        _ = try ok(["dataset", "make", "--source", "gmm:dim=4,count=80", "--corrupt", "noise:0.3", "--clean-fraction", "0.5", "--out", clean])
        _ = try ok(["classifier", "train", "--data", clean, "--steps", "2", "--out", dir + "/cls"] + tiny)
        try fails(["sample", "--run", dir + "/cls", "--out", dir + "/s.npy"], mentions: ["classifier", "not a denoiser"])
        try fails(["eval", "--run", dir + "/cls", "--out", dir + "/e.json"], mentions: ["classifier", "not a denoiser"])
        try fails(["denoise", "--run", dir + "/cls", "--input", dir + "/none.npy", "--sigma", "1", "--out", dir + "/d.npy"],
                  mentions: ["not a denoiser"])
        _ = try ok(["train", "--data", clean, "--objective", "dsm", "--steps", "2", "--out", dir + "/den"] + tiny)
        try fails(["annotate", "--data", clean, "--classifier", dir + "/den"], mentions: ["denoiser", "not a classifier"])
        // Classifier training without clean flags, masked objective without masks.
        try fails(["classifier", "train", "--data", masked, "--steps", "1", "--out", dir + "/r3"] + tiny, mentions: ["samples.npy"])
        try fails(["train", "--data", "gmm", "--objective", "masked", "--steps", "1", "--out", dir + "/r4"] + tiny, mentions: ["masks"])
        try fails(["train", "--data", "gmm", "--objective", "split", "--steps", "1", "--out", dir + "/r5"] + tiny, mentions: ["split-sigma"])
    }

    @Test(arguments: [["dataset", "make"], ["dataset", "verify"], ["classifier", "train"], ["annotate"], ["eval"]])
    func helpHasExamples(_ command: [String]) throws {
        let r = try CommandRunner.run(command + ["--help"])
        #expect(r.status == 0 && r.stdout.contains("Example"), "\(r.stdout)")
    }
}
