import Foundation
import Testing

/// The network a run trains when none is chosen (Training/NetworkDefaults): the U-Net with its
/// batch and learning rate for square images and a denoiser objective, the MLP otherwise; anything
/// the user gave (option or file key) wins. Checked on what `--dry-run` prints, which is what the
/// run directory records.
@Suite struct NetworkDefaultsTests {
    func dryRun(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let r = try CommandRunner.run(["train"] + args + ["--dry-run"])
        #expect(r.status == 0, "\(r.stderr)", sourceLocation: sourceLocation)
        return r.stdout
    }

    func line(_ key: String, _ yaml: String) -> String {
        let prefix = key + ":"
        return yaml.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)).split(separator: "#")[0]
                .trimmingCharacters(in: .whitespaces) } ?? "(missing)"
    }

    @Test func imagesTrainTheUNetAndEverythingElseTheMLP() throws {
        let dir = try scratchDirectory("network-defaults")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let images = dir + "/images.npy"
        try writeNPY(images, shape: "(8, 1, 8, 8)", values: (0..<512).map { Float($0 % 7) / 7 - 0.5 })
        let data = ["--data", "npy:" + images, "--corrupt", "noise:0.5"]

        let unet = try dryRun(data)
        #expect(line("arch", unet) == "unet", "\(unet)")
        #expect(line("batch", unet) == "32" && line("learningRate", unet) == "0.002" && line("shards", unet) == "4", "\(unet)")
        let masked = try dryRun(["--data", "npy:" + images, "--corrupt", "mask:0.5", "--objective", "masked"])
        #expect(line("arch", masked) == "unet" && line("conditioningChannels", masked) == "1", "\(masked)")

        // Whatever the user chose stays.
        let given = try dryRun(data + ["--batch", "8", "--lr", "0.0005"])
        #expect(line("arch", given) == "unet" && line("batch", given) == "8" && line("learningRate", given) == "0.0005", "\(given)")
        for mlp in [["--arch", "mlp"], ["--width", "64"], ["--blocks", "2"], ["--objective", "classifier"]] {
            let out = try dryRun(data + mlp)
            #expect(line("arch", out) == "mlp" && line("batch", out) == "256" && line("learningRate", out) == "0.001", "\(mlp): \(out)")
        }
        let vectors = try dryRun(["--data", "gmm:dim=4,count=50", "--corrupt", "noise:0.5"])
        #expect(line("arch", vectors) == "mlp" && line("batch", vectors) == "256", "\(vectors)")

        // A file that names its network or batch keeps them; one that does not gets the defaults,
        // and what --dry-run prints resolves to itself.
        try "data: npy:\(images)\ncorruption: noise:0.5\nbatch: 64\n".write(toFile: dir + "/batch.yaml", atomically: true, encoding: .utf8)
        let fileBatch = try dryRun(["--config", dir + "/batch.yaml"])
        #expect(line("arch", fileBatch) == "unet" && line("batch", fileBatch) == "64" && line("learningRate", fileBatch) == "0.002", "\(fileBatch)")
        try "data: npy:\(images)\ncorruption: noise:0.5\nmodel:\n  arch: mlp\n".write(toFile: dir + "/mlp.yaml", atomically: true, encoding: .utf8)
        let fileMLP = try dryRun(["--config", dir + "/mlp.yaml"])
        #expect(line("arch", fileMLP) == "mlp" && line("batch", fileMLP) == "256", "\(fileMLP)")
        try unet.write(toFile: dir + "/printed.yaml", atomically: true, encoding: .utf8)
        #expect(try dryRun(["--config", dir + "/printed.yaml"]) == unet)
    }
}
