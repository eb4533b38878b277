import ArgumentParser
import Datasets
import Diffusion
import Foundation
import TensorCore
import Training

extension Ambient.Classifier {
    /// `ambient classifier check`: does the classifier judge corruption or recognise images?
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check that a classifier annotates by corruption, on images it never saw whose answer is known.",
            discussion: """
            Annotates (as ambient annotate does, same grid, draws, span and tau) --count images of each group: \
            corrupted and clean training images of --data; Fashion-MNIST test images (never in a dataset made \
            with ambient dataset make, which reads the training split) corrupted as the dataset's manifest \
            says; the same test images clean, which must come out near 0 (median <= 0.05); and with Gaussian \
            noise of level s = 0.05, 0.2, 0.5, which must come out near s (median within a factor 5). A \
            classifier that learnt which training images are clean instead of what corruption looks like \
            annotates the unseen clean images high, and its training images' annotations differ from the \
            unseen corrupted ones'. Prints a table with PASS/FAIL per group with a known answer and the held-out \
            loss: the classifier's training loss (BCE and accuracy, sigma drawn as in training) on 1,000 other \
            test images (from row 5,000, so never the groups' images), each once clean and once corrupted as the data; \
            held-out early stopping trains classifiers of several lengths and keeps the one with the lowest. \
            With --out, writes groups and held-out loss as JSON. Exits with status 0 either way: the report is \
            the result.

            Examples:
              ambient classifier check --data data/fm-blur --classifier runs/classifier
              ambient classifier check --data data/fm-blur --classifier runs/classifier \\
                  --count 100 --out check.json
            """)

        @Option(help: "Dataset directory the classifier was trained on (with clean.npy).")
        var data: String
        @Option(help: "Run directory of the classifier (ambient classifier train).")
        var classifier: String
        @Option(help: "Images per group.")
        var count: Int = 200
        @Option(help: "Number of sigma levels of the annotation grid (default 2048 for lognormal, 256 for loguniform).")
        var grid: Int?
        @Option(name: .customLong("grid-distribution"), help: "Where the grid's levels lie: lognormal (quantiles of the classifier's training log-normal) or loguniform (log-spaced in [0.002, 80]).")
        var gridDistribution: AnnotationGrid = .lognormal
        @Option(help: "Noise draws per image and level.")
        var draws: Int = 4
        @Option(help: "Span of the exponential moving average along the grid.")
        var span: Double = 32
        @Option(help: "tau = 0.5 - eps.")
        var eps: Double = 0.05
        @Option(help: "Seed of the noise.")
        var seed: UInt64 = 0
        @Option(help: "Write the groups as JSON to this file.")
        var out: String?
        @OptionGroup var common: CommonOptions

        /// The JSON of --out.
        struct Report: Encodable {
            var groups: [ClassifierCheck.Group]
            var heldOut: ClassifierCheck.HeldOut?
        }

        func validate() throws {
            if count < 1 || (grid ?? 2) < 2 || draws < 1 || span < 1 { throw ValidationError("--count, --draws, --span must be >= 1 and --grid >= 2") }
            if !(eps >= 0 && eps < 0.5) { throw ValidationError("--eps must be in [0, 0.5)") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let contents = try DatasetDirectory(path: data).read()
                guard contents.manifest.source.hasPrefix("fashion-mnist") else {
                    throw TrainingError("\(data) comes from \(contents.manifest.source): the check needs unseen images of the same source, which it has only for fashion-mnist")
                }
                let trained = try TrainedClassifier.load(run: classifier)
                guard trained.classifier.dimension == contents.samples.rowSize else {
                    throw TrainingError("classifier \(classifier) takes samples of \(trained.classifier.dimension) values, \(data) has \(contents.samples.rowSize)")
                }
                let test = try FashionMNIST.load(split: .test)
                let unseen = test.images.reshaped([test.images.rows, test.images.rowSize])
                let levels = gridDistribution.levels(count: grid, schedule: trained.record.config.schedule,
                                                     sigmaMax: contents.manifest.sigmaMax)
                let annotator = Annotator(grid: levels, draws: draws, span: span,
                                          tau: 0.5 - eps, sigmaMax: contents.manifest.sigmaMax)
                let check = ClassifierCheck(annotator: annotator, seed: seed)
                let groups = try check.run(trained.classifier, trained.store, contents: contents, unseen: unseen, count: count)
                print(ClassifierCheck.table(groups))
                let heldOut = check.heldOut(trained.classifier, trained.store, contents: contents, unseen: unseen)
                if let h = heldOut {
                    print(String(format: "held-out loss (%d unseen test images from row %d, each clean and corrupted as the data): BCE %.4f, accuracy %.3f",
                                 h.count / 2, ClassifierCheck.heldOutStart, h.bce, h.accuracy))
                }
                if let out { try writeJSONOutput(Report(groups: groups, heldOut: heldOut), to: out) }
            }
        }
    }
}
