import ArgumentParser
import Datasets
import Foundation
import Training

extension Ambient.Dataset {
    /// `ambient dataset subset`: one fold of a dataset directory.
    struct Subset: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "subset",
            abstract: "Write one fold of a dataset directory: the samples i with i mod N = K.",
            discussion: """
            Every per-sample file comes along (masks, noise levels, annotations, sigma_max, labels, clean \
            flags). Folds are interleaved, not contiguous: `dataset make` puts the clean samples first, so \
            every fold of a dataset with clean samples has some. For cross-fitting an Ambient-o \
            classifier: train it on some folds, annotate the others with it, and put the folds back \
            together with `ambient dataset merge` (docs/dataset-format.md, "Folds").

            Examples:
              ambient dataset subset --data data/fm-blur --fold 0/2 --out data/fm-blur-0
              ambient dataset subset --data data/fm-blur --fold 1/2 --out data/fm-blur-1
            """)

        @Option(help: "Dataset directory to read.")
        var data: String

        @Option(help: "The fold K/N to write: the samples i with i mod N = K, in order.")
        var fold: String

        @Option(help: "Dataset directory to create.")
        var out: String

        func run() throws {
            try reportingErrors {
                let f = try DatasetFold(parsing: fold)
                let whole = try DatasetDirectory(path: data).read()
                let rows = f.rows(of: whole.count)
                guard !rows.isEmpty else {
                    throw TrainingError("fold \(f) of \(data) is empty: it has only \(whole.count) samples")
                }
                let part = whole.fold(f, of: data, createdBy: "ambient " + CommandLine.arguments.dropFirst().joined(separator: " "))
                try writingOutputs { try DatasetDirectory(path: out).write(part) }
                let clean = part.clean?.filter { $0 }.count ?? 0
                FileHandle.standardError.write(Data("wrote \(out): fold \(f) of \(data), \(part.count) of \(whole.count) samples, \(clean) clean\n".utf8))
            }
        }
    }

    /// `ambient dataset merge`: the folds of a dataset back in their order.
    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "merge",
            abstract: "Put the folds 0/N ... N-1/N of a dataset back together, in the original order.",
            discussion: """
            The inverse of `ambient dataset subset` over every fold: sample i of the result is sample i / N \
            of fold i mod N. The folds must have the same sample shape and per-sample files, and the sizes \
            their folds of the total have. Annotation notes that differ between folds are kept fold by fold \
            in the manifest.

            Example (cross-fitting; see `ambient dataset subset`):
              ambient dataset merge data/fm-blur-0 data/fm-blur-1 --out data/fm-blur-crossfit
            """)

        @Argument(help: "The fold directories, fold 0 first.")
        var folds: [String]

        @Option(help: "Dataset directory to create.")
        var out: String

        func run() throws {
            try reportingErrors {
                guard !folds.isEmpty else { throw TrainingError("name the fold directories to merge, fold 0 first") }
                let parts = try folds.map { try DatasetDirectory(path: $0).read() }
                let whole = try DatasetDirectory.Contents.interleaving(
                    folds: parts, createdBy: "ambient " + CommandLine.arguments.dropFirst().joined(separator: " "))
                try writingOutputs { try DatasetDirectory(path: out).write(whole) }
                FileHandle.standardError.write(Data("wrote \(out): \(whole.count) samples from \(folds.count) folds\n".utf8))
            }
        }
    }
}
