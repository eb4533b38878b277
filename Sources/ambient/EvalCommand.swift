import ArgumentParser
import Datasets
import Diffusion
import FileIO
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient eval`: the metrics of SPEC "Evaluation" for a trained run, as JSON.
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eval",
            abstract: "Evaluate a trained run: Frechet distance, class balance, memorisation, denoising error.",
            discussion: """
            For 28x28 image runs: the Frechet distance between generated samples and the Fashion-MNIST test \
            set in the features of two evaluators trained by Ambient on the labelled training set: the \
            noise-aware one (trained on clean, noisy and blurred images with a head that predicts the noise \
            and blur of its input, so its FD sees them; ambient calibrate-evaluator shows how much) and the \
            class-only one (clean images only; its FD barely sees pixel noise), each trained on first use \
            (a few minutes) and cached in $AMBIENT_CACHE or ~/.cache/ambient with its version in the file \
            name; the residual pixel noise of the samples; the class balance of the samples, and the \
            nearest-neighbour cosine similarity of each sample to the run's training data in mean-centred \
            pixel space (fractions above 0.9 and 0.95, histogram; fresh test images give the \
            calibration), for masked runs the inpainting PSNR on 1000 test images under fresh masks of \
            the training data's observed fraction (one denoiser call at sigma 0.05 with the mask as \
            input), and otherwise the denoising error of D on 1000 noisy test images per noise level (MSE to \
            the clean images, at and above the level the model was trained down to). For Gaussian-mixture runs: the MSE of D against the posterior-mean oracle per \
            sigma.

            The JSON opens with Python's json module or a browser; written as RUNDIR/eval.json, it appears \
            in ambient report.

            Examples:
              ambient eval --run runs/fm --count 2000 --out runs/fm/eval.json --png runs/fm/eval.png
              ambient eval --run runs/fm --samples samples.npy --out eval.json
              ambient eval --run runs/gmm --out runs/gmm/eval.json
            """)

        @Option(name: .customLong("run"), help: "Run directory of a finished denoiser run.")
        var runDirectory: String

        @Option(help: "Evaluate these samples (NPY) instead of generating --count new ones.")
        var samples: String?

        @Option(help: "Samples to generate.")
        var count: Int = 2000

        @Option(help: "Noise levels of the sampling grid.")
        var steps: Int = 32

        @Option(help: "Seed of the sampler and of the evaluation draws.")
        var seed: UInt64 = 0

        @Option(help: "Output JSON file.")
        var out: String

        @Option(help: "Also write the first 64 samples as a PNG grid (image runs).")
        var png: String?

        @Flag(name: .customLong("clip-denoised"), inversion: .prefixedNo,
              help: "Sample with every denoised estimate clamped to the image range [-1, 1] (default for image runs; see ambient sample).")
        var clipDenoised: Bool?

        @Flag(help: "No progress output.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if count < 2 { throw ValidationError("--count must be >= 2") }
            if steps < 2 { throw ValidationError("--steps must be >= 2") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let model = try TrainedModel.load(run: runDirectory)
                let record = try RunDirectory(path: runDirectory).readConfig()
                let d = model.denoiser.dimension
                let clip = try HeunSampler.imageClip(requested: clipDenoised, imageData: record.imageShape != nil, run: runDirectory)
                let sampler = HeunSampler(steps: steps, stop: model.trainedFloor, clip: clip)
                let log = { (s: String) in if !quiet { FileHandle.standardError.write(Data((s + "\n").utf8)) } }
                var generated: Tensor<Float>
                if let samples {
                    let x = try NPY.readFloat(samples)
                    guard x.rank >= 2, x.rowSize == d else { throw TrainingError("\(samples) has shape \(x.shape); the run's samples have \(d) values") }
                    generated = x.reshaped([x.rows, d])
                } else {
                    let progress = quiet ? nil : ProgressReporter(label: "sample", total: count, unit: "sample")
                    generated = sampler.sample(model.denoiser, model.store, count: count, seed: seed, maskKeep: model.samplingMaskKeep) {
                        progress?.update($0)
                    }
                }
                try validateFinite(generated, name: "generated samples")
                var report = EvaluationReport(run: runDirectory, objective: model.config.objective, samples: generated.rows,
                                              samplerSteps: steps, samplerStop: model.trainedFloor, samplerMaskKeep: model.samplingMaskKeep)
                if let clip, samples == nil { report.samplerClip = [Double(clip.lowerBound), Double(clip.upperBound)] }
                let data = try TrainingData.load(model.config)
                if record.imageShape == [1, 28, 28] {
                    var evaluatorBar: ProgressReporter?
                    let evaluator = try FashionEvaluator.loadOrTrain(log: log) { step, steps in
                        if quiet { return }
                        if evaluatorBar == nil { evaluatorBar = ProgressReporter(label: "evaluator", total: steps, unit: "step") }
                        evaluatorBar?.update(step)
                    }
                    report.imageQuality = try Evaluation.imageQuality(generated, evaluator: evaluator, seed: seed)
                    var awareBar: ProgressReporter?
                    let aware = try FashionEvaluator.loadOrTrain(noiseAware: true, log: log) { step, steps in
                        if quiet { return }
                        if awareBar == nil { awareBar = ProgressReporter(label: "noise-aware evaluator", total: steps, unit: "step") }
                        awareBar?.update(step)
                    }
                    try Evaluation.addNoiseAware(&report.imageQuality!, samples: generated, evaluator: aware, seed: seed)
                    if let bad = report.imageQuality?.samplesDiverged, bad > 0 {
                        FileHandle.standardError.write(Data("warning: \(bad) of \(generated.rows) samples diverged (a value beyond +-\(Int(EvaluationReport.divergedThreshold)); the data lies in [-1, 1]): the Frechet distance is dominated by them (FD of the other samples: \(String(format: "%.3f", report.imageQuality?.frechetDistanceWithoutDiverged ?? .nan))); look at the samples (ambient sample) before comparing FDs, or sample with --clip-denoised\n".utf8))
                    }
                    let test = try FashionMNIST.load(split: .test)
                    let testImages = test.images.reshaped([test.images.rows, 784]).rows(0..<min(1000, test.images.rows))
                    if model.samplingMaskKeep == nil {
                        report.testDenoising = Evaluation.testDenoising(model, images: testImages,
                                                                        sigmas: Evaluation.testDenoisingSigmas(floor: model.trainedFloor), seed: seed)
                    } else {
                        let train = try FashionMNIST.load(split: .train).images
                        var meanImage = [Float](repeating: 0, count: 784)
                        for (k, v) in train.storage.enumerated() { meanImage[k % 784] += v / Float(train.rows) }
                        report.inpainting = Evaluation.inpainting(model, images: testImages, keep: model.config.observedFraction ?? 1,
                                                                  meanImage: meanImage, seed: seed)
                    }
                    // Compare with the clean images behind the training data when the run's data is simulated or a directory.
                    let reference = try cleanTrainingImages(model.config) ?? data.samples
                    var nearestBar: ProgressReporter?
                    report.memorization = Evaluation.memorization(generated, reference: reference,
                                                                  referenceName: "training data of the run (\(reference.rows) images)",
                                                                  testImages: testImages) { done, total in
                        if quiet { return }
                        if nearestBar == nil { nearestBar = ProgressReporter(label: "nearest neighbours", total: total, unit: "image") }
                        nearestBar?.update(done)
                    }
                    report.memorization?.calibratedCopies = Evaluation.calibratedCopies(generated, reference: reference, testImages: testImages,
                                                                                        height: 28, width: 28, seed: seed)
                }
                if let mixture = data.mixture {
                    let sn = model.config.trainingSigmaN
                    let sigmas = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2] + (sn > 0 ? [0.375 * sn, 0.75 * sn, 1.5 * sn] : [])
                    report.denoising = Evaluation.denoising(model, mixture: mixture, sigmas: sigmas.sorted(), dataSigma: sn)
                }
                let json = try report.json()
                try writingOutputs {
                    if let png, record.imageShape == [1, 28, 28] {
                        try PNG.writeGrid(generated.rows(0..<min(64, generated.rows)).reshaped([min(64, generated.rows), 1, 28, 28]), columns: 8, path: png)
                    }
                    try FileBytes.writeAtomically(json, to: out)
                }
                if let q = report.imageQuality, let fd = q.noiseAwareFrechetDistance {
                    log(String(format: "noise-aware FD %.3f (training images %.3f)%@", fd, q.noiseAwareFrechetDistanceOfTrainingImages ?? .nan,
                               report.samplerClip == nil ? "" : "; sampled with every denoised estimate clamped to [-1, 1]"))
                }
                if let q = report.imageQuality, let m = report.memorization {
                    log(String(format: "class-only FD %.3f (training images %.3f), class TV %.3f, nn-sim > 0.95: %.4f, > 0.9: %.4f", q.frechetDistance,
                               q.frechetDistanceOfTrainingImages, q.classBalanceTotalVariation, m.fractionAbove_0_95, m.fractionAbove_0_90))
                    if let c = m.calibratedCopies {
                        log(String(format: "calibrated copies: %.4f of the samples above %.3f, the similarity 95%% of training images with the samples' residual noise (+%.3f) keep (%.4f of them above 0.95; noisy test images above it: %.4f)",
                                   c.samplesAboveThreshold, c.threshold, c.matchedNoise, c.noisyCopiesAbove_0_95, c.noisyTestImagesAboveThreshold ?? .nan))
                    }
                    if let noise = q.residualNoise {
                        log(String(format: "residual pixel noise of the samples %.3f (test images %.3f; images with N(0, s^2) noise give about s, and the FD hardly sees it)",
                                   noise, q.residualNoiseOfTestImages ?? .nan))
                    }
                }
                if let p = report.inpainting {
                    log(String(format: "inpainting PSNR on %d test images under fresh masks (keep %.2f, sigma %g): %.2f dB, hidden pixels %.2f dB (mean-image fill: %.2f, %.2f)",
                               p.images, p.maskKeep, p.sigma, p.psnr, p.psnrHidden, p.psnrMeanImage, p.psnrHiddenMeanImage))
                }
                if let t = report.testDenoising {
                    log("denoising MSE on 1000 test images: " + t.map { String(format: "sigma %g: %.4f", $0.sigma, $0.mse) }.joined(separator: ", "))
                }
                log("wrote \(out)")
            }
        }

        /// The images the run trained on as stored, before any training-time noise: a dataset
        /// directory's samples, or the Fashion-MNIST training set behind simulated corruption.
        func cleanTrainingImages(_ config: RunConfig) throws -> Tensor<Float>? {
            if case let .directory(path) = config.data {
                let c = try DatasetDirectory(path: path).read()
                return c.samples.reshaped([c.count, c.samples.rowSize])
            }
            if case .fashionMNIST = config.data {
                let t = try FashionMNIST.load(split: .train)
                return t.images.reshaped([t.images.rows, 784])
            }
            return nil
        }
    }
}
