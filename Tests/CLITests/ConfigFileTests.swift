import Datasets
import Diffusion
import Foundation
import Testing
import Training
@testable import ambient

/// Run configuration files: YAML and JSON, every option, errors with file, line and column,
/// and the printed configuration loading back to the same value.
@Suite struct ConfigFileTests {
    /// A configuration with every field away from its default.
    static func everyOption(unet: Bool) -> RunConfig {
        var c = RunConfig(data: .gaussianMixture({ var g = GaussianMixtureSpec(); g.dimension = 64; g.count = 123; g.std = 0.3; g.seed = 9; return g }()),
                          corruption: .pixelMask(0.25), objective: .masked, steps: 77, batch: 48, shards: 6, seed: 12345678901234,
                          learningRate: 3.5e-4, warmupSteps: 7, emaDecay: 0.995, ambientSMax: 6.5,
                          model: unet ? .unet(UNetConfig(dataDimension: 64, imageChannels: 1, conditioningChannels: 1, channels: [8, 16],
                                                         blocksPerLevel: 2, groups: 4, embeddingSize: 32, embeddingWidth: 40, gated: true,
                                                         outputDimension: 3))
                                      : .mlp(MLPConfig(dataDimension: 64, conditioningChannels: 1, width: 96, blocks: 3, embeddingSize: 16,
                                                       outputDimension: 5)),
                          logEvery: 3)
        c.schedule.sigmaData = 0.6
        c.schedule.pMean = -1.1
        c.schedule.pStd = 1.3
        c.schedule.sigmaMin = 0.001
        c.schedule.sigmaMax = 90
        c.schedule.rho = 6
        c.furtherDelta = 0.15
        c.observedFraction = 0.75
        c.consistencyWeight = 2.5
        c.splitSigma = 0.4
        c.samplingFloor = 0.2
        c.classifierSigma = .loguniform
        return c
    }

    @Test(arguments: [false, true])
    func printedYAMLLoadsBackToTheSameConfiguration(unet: Bool) throws {
        let c = Self.everyOption(unet: unet)
        let text = ConfigFile.yaml(c)
        #expect(try ConfigFile.parse(text, file: "run.yaml") == c, "\(text)")
        // The JSON form (a --dry-run-format json file, or config.json) reads through the same mapper.
        let json = String(decoding: try JSONEncoder().encode(c), as: UTF8.self)
        #expect(try ConfigFile.parse(json, file: "run.json") == c)
        #expect(try JSONDecoder().decode(RunConfig.self, from: Data(json.utf8)) == c)
    }

    @Test func specStringsRoundTrip() throws {
        for data in ["fashion-mnist", "gmm:dim=3,components=2,count=10,std=0.5,seed=4", "npy:/tmp/a b.npy", "dir:data/x"] {
            var c = RunConfig(data: try DataSpec.parse(data), model: .mlp(MLPConfig(dataDimension: 3)))
            for corruption in ["noise:0.5", "mask:0.6", "box:4", "blur:1.5", "ood:8+9"] {
                c.corruption = try CorruptionSpec.parse(corruption)
                #expect(try ConfigFile.parse(ConfigFile.yaml(c), file: "f") == c)
            }
        }
        #expect(ConfigFile.scalar("a: b # c") == "\"a: b # c\"")
        #expect(ConfigFile.scalar("true") == "\"true\"" && ConfigFile.scalar("1.5") == "\"1.5\"" && ConfigFile.scalar("fashion-mnist") == "fashion-mnist")
    }

    @Test func minimalFileTakesDefaults() throws {
        let c = try ConfigFile.parse("data: fashion-mnist\ncorruption: noise:0.5   # comment\nsteps: 20\n", file: "f")
        var expected = RunConfig(data: .fashionMNIST, corruption: .noise(0.5), steps: 20, model: .mlp(MLPConfig(dataDimension: 1)))
        expected.shards = 4
        #expect(c == expected)
        let u = try ConfigFile.parse("data: fashion-mnist\nmodel:\n  unet:\n    channels: [16, 32]\n", file: "f")
        #expect(u.model == .unet(UNetConfig(dataDimension: 1, channels: [16, 32])))
    }

    /// Errors name the file, the line and the column of the key or value at fault.
    @Test(arguments: [
        ("data: fashion-mnist\nstpes: 10\n", "run.yaml:2:1:", "did you mean 'steps'"),
        ("data: fashion-mnist\nsteps: many\n", "run.yaml:2:8:", "must be an integer"),
        ("data: fashion-mnist\nsteps: \"5\"\n", "run.yaml:2:8:", "quoted string"),
        ("data: fashion-mnist\nsteps: 0\n", "run.yaml:2:8:", ">= 1"),
        ("data: fashion-mnist\nlr: 0.1\n", "run.yaml:2:1:", "'learningRate'"),
        ("data: fashion-mnist\nsteps: 5\nsteps: 6\n", "run.yaml:3:1:", "appears twice (first at line 2)"),
        ("data: fashion-mnist\ncorruption: frob:1\n", "run.yaml:2:13:", "invalid corruption"),
        ("data: fashion-mnist\nobjective: dms\n", "run.yaml:2:12:", "unknown objective 'dms'"),
        ("data: fashion-mnist\nannotatedRows: raw\n", "run.yaml:2:16:", "must be noisy-copy or stored"),
        ("data: fashion-mnist\nclassifierSigma: flat\n", "run.yaml:2:18:", "must be lognormal or loguniform"),
        ("data: fashion-mnist\nmodel:\n  arch: mlp\n  mlp:\n    widht: 3\n", "run.yaml:5:5:", "'model.mlp.widht'"),
        ("data: fashion-mnist\nmodel:\n  unet:\n    channels: [8, x]\n", "run.yaml:4:19:", "channels[1]"),
        ("data: fashion-mnist\nmodel:\n  unet:\n    gated: maybe\n", "run.yaml:4:12:", "true or false"),
        ("data: fashion-mnist\nschedule:\n  rho: -1\n", "run.yaml:3:8:", "must be > 0"),
        ("data: fashion-mnist\nemaDecay: 1.5\n", "run.yaml:2:11:", "[0, 1)"),
        ("data: fashion-mnist\n  steps: 5\n", "run.yaml:2:8:", "not valid YAML"),
        ("steps: 5\n", "run.yaml:1:1:", "no 'data' key"),
        ("- a\n", "run.yaml:1:1:", "must be a mapping"),
        ("{\"data\": \"fashion-mnist\", \"steps\": 1.5}", "run.yaml:1:36:", "must be an integer"),
    ])
    func errorsNameFileLineAndColumn(_ text: String, _ location: String, _ needle: String) {
        do {
            let c = try ConfigFile.parse(text, file: "run.yaml")
            Issue.record("accepted: \(c)")
        } catch {
            let message = "\(error)"
            #expect(message.hasPrefix(location), "\(message)")
            #expect(message.contains(needle), "\(message)")
        }
    }

    /// The config.json of a run directory written before specs became strings still loads,
    /// through `--config` and through JSONDecoder (sample, eval and report read it that way).
    @Test func earlierConfigJSONStillLoads() throws {
        let old = """
        {"config": {"ambientSMax": 4, "batch": 32, "corruption": {"noise": {"_0": 0.5}},
          "data": {"gaussianMixture": {"_0": {"components": 2, "count": 100, "dimension": 3, "seed": 1, "std": 0.25}}},
          "emaDecay": 0.999, "learningRate": 0.001, "logEvery": 10,
          "model": {"arch": "mlp", "mlp": {"blocks": 1, "conditioningChannels": 0, "dataDimension": 3, "embeddingSize": 64, "width": 32}},
          "objective": "ambient", "schedule": {"pMean": -1.2, "pStd": 1.2, "rho": 7, "sigmaData": 0.5, "sigmaMax": 80, "sigmaMin": 0.002},
          "seed": 0, "shards": 4, "steps": 20, "warmupSteps": 100},
         "dataSummary": "x", "formatVersion": 1, "hash": "0123456789abcdef"}
        """
        let viaFile = try ConfigFile.parse(old, file: "config.json")
        let record = try JSONDecoder().decode(ConfigRecord.self, from: Data(old.utf8))
        #expect(viaFile == record.config)
        #expect(record.config.corruption == .noise(0.5))
        #expect(record.config.data.description == "gmm:dim=3,components=2,count=100,std=0.25,seed=1")
        for (json, spec) in [("{\"npy\": {\"path\": \"/a/b.npy\"}}", DataSpec.npy(path: "/a/b.npy")),
                             ("{\"directory\": {\"path\": \"d\"}}", .directory(path: "d")), ("{\"fashionMNIST\": {}}", .fashionMNIST)] {
            #expect(try JSONDecoder().decode(DataSpec.self, from: Data(json.utf8)) == spec)
        }
        for (json, spec) in [("{\"pixelMask\": {\"_0\": 0.6}}", CorruptionSpec.pixelMask(0.6)), ("{\"box\": {\"_0\": 4}}", .box(4)),
                             ("{\"blur\": {\"_0\": 2}}", .blur(2)), ("{\"outOfDistribution\": {\"_0\": [8, 9]}}", .outOfDistribution([8, 9]))] {
            #expect(try JSONDecoder().decode(CorruptionSpec.self, from: Data(json.utf8)) == spec)
        }
        // New files hold the strings.
        let encoded = String(decoding: try JSONEncoder().encode(record.config), as: UTF8.self)
        #expect(encoded.contains("\"corruption\":\"noise:0.5\""), "\(encoded)")
    }

    /// `ambient train --dry-run` prints YAML that resolves to itself; the JSON form agrees; the
    /// hash printed is the one the run directory records; command-line options override the file.
    @Test func dryRunRoundTripsThroughTheCommandLine() throws {
        let dir = try scratchDirectory("config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = ["--data", "gmm:dim=3,count=200", "--corrupt", "noise:0.5", "--steps", "6", "--batch", "16",
                       "--width", "16", "--blocks", "1", "--lr", "0.002", "--seed", "3"]
        let yaml = try CommandRunner.run(["train"] + options + ["--dry-run"])
        #expect(yaml.status == 0, "\(yaml.stderr)")
        try yaml.stdout.write(toFile: dir + "/run.yaml", atomically: true, encoding: .utf8)
        let again = try CommandRunner.run(["train", "--config", dir + "/run.yaml", "--dry-run"])
        #expect(again.stdout == yaml.stdout, "\(again.stdout)\n\(again.stderr)")
        let json = try CommandRunner.run(["train"] + options + ["--dry-run", "--dry-run-format", "json"])
        #expect(json.status == 0 && json.stderr.contains("config hash"), "\(json.stderr)")
        try json.stdout.write(toFile: dir + "/run.json", atomically: true, encoding: .utf8)
        let fromJSON = try CommandRunner.run(["train", "--config", dir + "/run.json", "--dry-run"])
        #expect(fromJSON.stdout == yaml.stdout)
        let hash = yaml.stdout.range(of: #"config hash [0-9a-f]{16}"#, options: .regularExpression).map { String(yaml.stdout[$0].suffix(16)) }
        #expect(hash != nil)
        let t = try CommandRunner.run(["train", "--config", dir + "/run.yaml", "--out", dir + "/run", "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        let record = try JSONDecoder().decode(ConfigRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/run/config.json")))
        #expect(record.hash == hash)
        // A run's config.json is a configuration file too; options given override it.
        let override = try CommandRunner.run(["train", "--config", dir + "/run/config.json", "--steps", "9", "--dry-run"])
        #expect(override.stdout.contains("\nsteps: 9 ") && override.stdout.contains("\nlearningRate: 0.002 "), "\(override.stdout)")
        // A bad file is one clear error with its line, for the coordinator too.
        try "data: gmm\nstpes: 3\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try CommandRunner.run(["coordinator", "--config", dir + "/bad.yaml", "--bind", "tcp://127.0.0.1:1", "--plaintext",
                                         "--out", dir + "/never"])
        #expect(bad.status == 1 && bad.stderr.contains("bad.yaml:2:1: unknown key 'stpes'"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/never"))
    }
}
