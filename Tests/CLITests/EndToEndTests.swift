import Foundation
import Testing
import TensorCore

/// The README's workflow on a tiny synthetic problem: train, sample, denoise.
@Suite struct EndToEndTests {
    @Test func trainSampleDenoise() throws {
        let dir = try scratchDirectory("e2e")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run"
        let t = try CommandRunner.run(["train", "--data", "gmm:dim=3,count=400", "--corrupt", "noise:0.5", "--objective", "ambient",
                                       "--steps", "20", "--batch", "32", "--width", "32", "--blocks", "1", "--out", run, "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        for f in ["config.json", "metrics.jsonl", "model.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: run + "/" + f), "missing \(f)")
        }
        let s = try CommandRunner.run(["sample", "--run", run, "--count", "10", "--steps", "8", "--out", dir + "/s.npy", "--quiet"])
        #expect(s.status == 0, "\(s.stderr)")
        #expect(s.stderr.contains("stopped at sigma"))   // ambient model: sampler stops at b sigma_n
        let d = try CommandRunner.run(["denoise", "--run", run, "--input", dir + "/s.npy", "--sigma", "0.8", "--out", dir + "/d.npy"])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/d.npy"))
        // --png on vector data is a clear error.
        let p = try CommandRunner.run(["sample", "--run", run, "--count", "4", "--out", dir + "/p.npy", "--png", dir + "/p.png"])
        #expect(p.status != 0 && p.stderr.contains("image data"), "\(p.stderr)")
    }

    /// `ambient` runs OpenBLAS's vector kernels even where OpenBLAS's own detection falls back to
    /// its SSE3 ones (BLASCore): the training log names the core, which must use the CPU's vector
    /// level, unless the user pinned a core, which is kept.
    @Test func blasCoreMatchesTheCPU() throws {
        let dir = try scratchDirectory("blas-core")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["train", "--data", "gmm:dim=3,count=100", "--corrupt", "noise:0.5", "--steps", "2", "--batch", "8",
                    "--width", "8", "--blocks", "1"]
        func core(_ r: CommandResult) -> String? {
            r.stderr.split(separator: " ").first { $0.hasPrefix("blas=") }.map { String($0.dropFirst(5)) }
        }
        let auto = try CommandRunner.run(args + ["--out", dir + "/auto"], unsetting: ["OPENBLAS_CORETYPE"])
        #expect(auto.status == 0, "\(auto.stderr)")
        let chosen = try #require(core(auto), "no blas= in the log: \(auto.stderr)")
        if BLASCore.cpuVectorLevel > 0, let level = BLASCore.vectorLevel(ofCore: chosen) {
            #expect(level > 0, "OpenBLAS runs \(chosen) on a CPU of vector level \(BLASCore.cpuVectorLevel)")
        }
        let pinned = try CommandRunner.run(args + ["--out", dir + "/pinned"], environment: ["OPENBLAS_CORETYPE": "Prescott"])
        #expect(pinned.status == 0, "\(pinned.stderr)")
        #expect(core(pinned)?.lowercased() == "prescott", "\(pinned.stderr)")
    }

    /// The same workflow with the U-Net on 8x8 "images" (a 64-dimensional mixture).
    @Test func unetTrainSampleDenoise() throws {
        let dir = try scratchDirectory("e2e-unet")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run"
        let t = try CommandRunner.run(["train", "--arch", "unet", "--channels", "8,16", "--data", "gmm:dim=64,count=200",
                                       "--corrupt", "noise:0.5", "--objective", "ambient", "--steps", "4", "--batch", "8",
                                       "--out", run, "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        let config = try String(contentsOfFile: run + "/config.json", encoding: .utf8)
        #expect(config.contains("\"arch\" : \"unet\"") || config.contains("\"arch\":\"unet\""), "\(config)")
        let s = try CommandRunner.run(["sample", "--run", run, "--count", "3", "--steps", "4", "--out", dir + "/s.npy", "--quiet"])
        #expect(s.status == 0, "\(s.stderr)")
        let d = try CommandRunner.run(["denoise", "--run", run, "--input", dir + "/s.npy", "--sigma", "0.8", "--out", dir + "/d.npy"])
        #expect(d.status == 0, "\(d.stderr)")
    }

    /// Without --channels the U-Net takes as many of the default resolutions (16, 32, 64
    /// channels) as the image side halves into: 8x8 -> 8, 4, 2; 6x6 -> 6, 3.
    @Test(arguments: [(64, "[16,32,64]"), (36, "[16,32]")])
    func unetDefaultChannelsFollowTheImageSide(dimension: Int, channels: String) throws {
        let r = try CommandRunner.run(["train", "--arch", "unet", "--data", "gmm:dim=\(dimension),count=50", "--corrupt", "noise:0.5",
                                       "--dry-run", "--dry-run-format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let compact = r.stdout.filter { !$0.isWhitespace }
        #expect(compact.contains("\"channels\":\(channels)"), "\(r.stdout)")
    }

    @Test(arguments: [[], ["train"], ["sample"], ["denoise"]])
    func helpIsComplete(_ command: [String]) throws {
        let r = try CommandRunner.run(command + ["--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("USAGE") || r.stdout.contains("Usage"), "\(r.stdout)")
        if !command.isEmpty { #expect(r.stdout.contains("Example"), "no examples in help of \(command)") }
    }
}
