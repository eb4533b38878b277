import ArgumentParser
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient calibrate-evaluator`: what the image evaluators' Frechet distances see.
    struct CalibrateEvaluator: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "calibrate-evaluator",
            abstract: "Print the Frechet distance of real images with known noise and blur (what the evaluators see).",
            discussion: """
            Takes --count Fashion-MNIST training images (the pick ambient eval uses for its floor), adds \
            N(0, s^2) noise for s in 0, 0.1, 0.2, 0.3 and a Gaussian blur of std 0.6 and 1.0 pixels, and \
            prints their Frechet distance to the test set in the features of the noise-aware evaluator \
            (trained with a head that predicts the noise and blur of its input) and of the class-only \
            evaluator. Noise 0 is the floor a perfect generator reaches at this count. Both evaluators \
            are trained on first use and cached like ambient eval's.

            Example:
              ambient calibrate-evaluator --out calibration.json
            """)

        @Option(help: "Real images per measurement.")
        var count: Int = 2000

        @Option(help: "Seed of the image pick and the noise.")
        var seed: UInt64 = 0

        @Option(help: "Also write the measurements as JSON here.")
        var out: String?

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if count < 2 { throw ValidationError("--count must be >= 2") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
                let classOnly = try FashionEvaluator.loadOrTrain(log: log)
                let aware = try FashionEvaluator.loadOrTrain(noiseAware: true, log: log)
                let c = try EvaluatorCalibration.measure(noiseAware: aware, classOnly: classOnly, count: count, seed: seed)
                print(c.line)
                if let out { try writeJSONOutput(c, to: out) }
            }
        }
    }
}
