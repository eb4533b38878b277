import ArgumentParser
import Datasets
import Foundation
import Training

extension Ambient {
    /// `ambient dataset`: build and check dataset directories (docs/dataset-format.md).
    struct Dataset: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dataset",
            abstract: "Build and verify dataset directories of corrupted data.",
            discussion: """
            A dataset directory holds the samples as stored (corrupted), with their masks, noise levels, \
            annotations, labels and clean flags as NPY files, and a manifest with the SHA-256 of every \
            file, written last (docs/dataset-format.md). ambient train, classifier train, annotate and eval \
            read it.

            Examples:
              ambient dataset make --source fashion-mnist --corrupt noise:0.5 --out data/fm-noisy
              ambient dataset make --source fashion-mnist --corrupt blur:2 --clean-fraction 0.1 \\
                  --out data/fm-blur
              ambient dataset verify data/fm-blur
            """,
            subcommands: [Make.self, Verify.self, Subset.self, Merge.self])
    }
}

extension Ambient.Dataset {
    /// `ambient dataset make`.
    struct Make: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "make",
            abstract: "Write a dataset directory: clean source data, corrupted and fixed per sample.",
            discussion: """
            Corruptions (--corrupt): \(CorruptionSpec.forms).

            Every random choice of sample i (noise, mask, box position) is keyed by (seed, i), so the \
            corrupted copy of a sample is fixed. With --clean-fraction F the first round(F*N) samples stay \
            clean and are flagged in clean.npy (the trusted set of Ambient-Omni, SPEC O5).

            The manifest is written last: a directory without one is incomplete (an interrupted make) and \
            no command reads it; make it again with the same command.

            Examples:
              ambient dataset make --source fashion-mnist --corrupt noise:0.5 --out data/fm-noisy
              ambient dataset make --source fashion-mnist --corrupt mask:0.6 --count 20000 \\
                  --out data/fm-masked
              ambient dataset make --source fashion-mnist --corrupt blur:2 --clean-fraction 0.1 \\
                  --out data/fm-blur
              ambient dataset make --source fashion-mnist --classes 0+1+2 --corrupt ood:8+9 \\
                  --clean-fraction 0.5 --out data/fm-ood
              ambient dataset make --source gmm:dim=8,count=5000 --corrupt noise:0.3 --out data/gmm
              ambient dataset make --source fashion-mnist --count 300 --out data/fm-300
            """)

        @Option(help: "Clean source: fashion-mnist or gmm[:dim=D,components=K,count=N,std=S,seed=Z].")
        var source: String

        @Option(help: "Corruption of the non-clean samples (omit for a clean dataset).")
        var corrupt: String?

        @Option(name: .customLong("clean-fraction"), help: "Fraction of samples left clean and flagged as such.")
        var cleanFraction: Double = 0

        @Option(help: "Number of samples (default: all the source offers).")
        var count: Int?

        @Option(help: "In-distribution classes, e.g. 0+2+4 (default: all, minus out-of-distribution ones).")
        var classes: String?

        @Option(help: "Seed of the sample order and of every corruption draw.")
        var seed: UInt64 = 0

        @Option(help: "Dataset directory to create.")
        var out: String

        @Flag(help: "No progress bar.")
        var quiet = false

        func run() throws {
            try reportingErrors {
                let spec = try DataSpec.parse(source)
                let corruption = try corrupt.map(CorruptionSpec.parse)
                let classList = try classes.map { text in
                    try text.split(separator: "+").map { part -> Int in
                        guard let c = Int(part), c >= 0 else { throw ValidationError("--classes: '\(part)' is not a class label") }
                        return c
                    }
                }
                let recipe = DatasetRecipe(source: spec, corruption: corruption, cleanFraction: cleanFraction, count: count,
                                           classes: classList, seed: seed,
                                           createdBy: "ambient " + CommandLine.arguments.dropFirst().joined(separator: " "))
                var corruptBar: ProgressReporter?
                let contents = try recipe.make { done, total in
                    if quiet { return }
                    if corruptBar == nil { corruptBar = ProgressReporter(label: "corrupt", total: total, unit: "sample") }
                    corruptBar?.update(done)
                }
                try writingOutputs { try DatasetDirectory(path: out).write(contents) }
                let clean = contents.clean?.filter { $0 }.count ?? contents.count
                FileHandle.standardError.write(Data("wrote \(out): \(contents.count) samples of shape \(contents.manifest.sampleShape), \(clean) clean, corruption \(corruption?.description ?? "none")\n".utf8))
            }
        }
    }

    /// `ambient dataset verify`.
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check a dataset directory: manifest, content hashes, shapes and value ranges.",
            discussion: """
            Reads the whole directory as training would and prints one line about it; any problem is an \
            error that names the file (a changed or damaged file fails its SHA-256).

            Examples:
              ambient dataset verify data/fm-blur
              ambient dataset verify data/fm-blur --png blur.png
            """)

        @Argument(help: "Dataset directory.")
        var directory: String

        @Option(help: "Also write 64 samples spread over the set as a PNG grid (image data).")
        var png: String?

        func run() throws {
            try reportingErrors {
                let c = try DatasetDirectory(path: directory).read()
                let files = c.manifest.files.keys.sorted().joined(separator: ", ")
                if let png {
                    guard c.samples.rank == 4 else { throw TrainingError("--png needs image data; \(directory) holds vectors of shape \(c.manifest.sampleShape)") }
                    let n = min(64, c.count)
                    try PNG.writeGrid(c.samples.gather(rows: (0..<n).map { $0 * c.count / n }), columns: 8, path: png)   // spread over the set
                }
                print("\(directory): ok, \(c.count) samples of shape \(c.manifest.sampleShape) from \(c.manifest.source), corruption \(c.manifest.corruption ?? "none"); files \(files)")
            }
        }
    }
}
