import ArgumentParser
import Datasets
import Diffusion
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient sample`: EDM Heun samples from a trained run (EMA weights).
    struct Sample: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sample",
            abstract: "Generate samples from a trained run with the EDM Heun sampler.",
            discussion: """
            A model trained with the ambient objective alone never saw noise below b*sigma_n: by default \
            its sampler stops there and returns the one-step denoised sample (SPEC, Sampling); \
            --full-range integrates down to sigma_min anyway.

            For image runs every denoised estimate is clamped to the data range [-1, 1], as the ambient \
            sampler of the authors' code does (and DDPM's clip_denoised); --no-clip-denoised turns it \
            off (EDM's own sampler does not clip). Without it, a denoiser poorly trained at the highest \
            noise levels can send an occasional trajectory off to values of 1e8 (docs/results.md). Vector \
            runs are never clamped: Ambient does not know their range.

            A model trained on masked data (objective masked, SPEC O3) is sampled with the fixed-mask \
            sampler.

            Posterior sampling (the noising attack of paper T, section 3.3): --from X.npy --sigma S starts \
            the sampler at sigma S from each row of X instead of from pure noise.

            The NPY file and the PNG grid are written together at the end: Ctrl-C before then writes \
            nothing (an earlier file of the same name stays as it was).

            Examples:
              ambient sample --run runs/fm --count 64 --out samples.npy --png samples.png
              ambient sample --run runs/gmm --count 10000 --steps 40 --out gmm-samples.npy
              ambient sample --run runs/fm --from noisy.npy --sigma 0.8 --out posterior.npy \\
                  --png posterior.png
            """)

        @Option(name: .customLong("run"), help: "Run directory of a finished training run.")
        var runDirectory: String

        @Option(help: "Number of samples.")
        var count: Int = 64

        @Option(help: "Noise levels of the sampling grid (Heun steps = steps - 1).")
        var steps: Int = 32

        @Option(help: "Seed of the initial noise.")
        var seed: UInt64 = 0

        @Option(help: "Output NPY file: (count, C, H, W) for images, (count, d) otherwise.")
        var out: String

        @Option(help: "Also write the samples as a PNG grid (image data only).")
        var png: String?

        @Option(help: "Posterior sampling: NPY file of noisy observations to start from (needs --sigma).")
        var from: String?

        @Option(help: "Noise level of the observations given with --from.")
        var sigma: Double?

        @Flag(name: .customLong("full-range"), help: "Integrate to sigma_min even for a model trained only above b*sigma_n.")
        var fullRange = false

        @Flag(name: .customLong("clip-denoised"), inversion: .prefixedNo,
              help: "Clamp every denoised estimate D(x, sigma) to the image range [-1, 1] (default for image runs; vector runs cannot).")
        var clipDenoised: Bool?

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if count < 1 { throw ValidationError("--count must be >= 1") }
            if steps < 2 { throw ValidationError("--steps must be >= 2") }
            if (from == nil) != (sigma == nil) { throw ValidationError("--from and --sigma go together (posterior sampling)") }
            if let s = sigma, !(s > 0 && s.isFinite) { throw ValidationError("--sigma must be a positive noise level, got \(s)") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let model = try TrainedModel.load(run: runDirectory)
                let imageShape = try RunDirectory(path: runDirectory).readConfig().imageShape
                if png != nil && imageShape == nil {
                    throw ConfigurationError(message: "--png needs image data; run \(runDirectory) was trained on vectors of dimension \(model.denoiser.dimension)")
                }
                let clip = try HeunSampler.imageClip(requested: clipDenoised, imageData: imageShape != nil, run: runDirectory)
                let stop = fullRange ? nil : model.trainedFloor
                let sampler = HeunSampler(steps: steps, stop: stop, clip: clip)
                let samples: Tensor<Float>
                let progress = { (total: Int) in quiet ? nil : ProgressReporter(label: "sample", total: total, unit: "sample") }
                if let from, let sigma {
                    let x = try NPY.readFloat(from)
                    let d = model.denoiser.dimension
                    guard x.rank >= 2, x.rowSize == d else {
                        throw TrainingError("\(from) has shape \(x.shape); the model of \(runDirectory) needs (N, \(d)) or (N, ...) with \(d) values per sample")
                    }
                    let bar = progress(x.rows)
                    samples = sampler.posterior(model.denoiser, model.store, observations: x.reshaped([x.rows, d]), sigma: sigma, seed: seed,
                                                maskKeep: model.samplingMaskKeep) { bar?.update($0) }
                } else {
                    let bar = progress(count)
                    samples = sampler.sample(model.denoiser, model.store, count: count, seed: seed, maskKeep: model.samplingMaskKeep) { bar?.update($0) }
                }
                let count = samples.rows
                let shaped = imageShape.map { samples.reshaped([count] + $0) } ?? samples
                try writingOutputs {
                    try NPY.write(shaped, to: out)
                    if let png, let shape = imageShape {
                        try PNG.writeGrid(samples.reshaped([count] + shape), columns: Int(Double(count).squareRoot().rounded(.up)), path: png)
                    }
                }
                FileHandle.standardError.write(Data("wrote \(count) samples to \(out)\(png.map { " and \($0)" } ?? "")\(stop.map { " (stopped at sigma \(String(format: "%.4f", $0)))" } ?? "")\n".utf8))
            }
        }
    }

    /// `ambient denoise`: applies the trained denoiser D(x, sigma) to each row.
    struct Denoise: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "denoise",
            abstract: "Apply a trained denoiser D(x, sigma) to every sample of an NPY file.",
            discussion: """
            The input must have the run's data shape: (N, d) or (N, C, H, W); the output has the input's \
            shape. D(x, sigma) is the model's estimate of E[x0 | x] for x = x0 + sigma z (one step, no \
            sampling). A model trained on masked data needs masks: use ambient sample --from instead.

            Example:
              ambient denoise --run runs/fm --input noisy.npy --sigma 0.8 --out denoised.npy
            """)

        @Option(name: .customLong("run"), help: "Run directory of a finished training run.")
        var runDirectory: String

        @Option(help: "Input NPY file (float32).")
        var input: String

        @Option(help: "Noise level of the input.")
        var sigma: Double

        @Option(help: "Output NPY file.")
        var out: String

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard sigma > 0, sigma.isFinite else { throw ValidationError("--sigma must be a positive noise level, got \(sigma)") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let model = try TrainedModel.load(run: runDirectory)
                if model.samplingMaskKeep != nil {
                    throw ConfigurationError(message: "\(runDirectory) was trained on masked data and denoises only with masks; use ambient sample --from X.npy --sigma S (fixed-mask posterior sampling)")
                }
                let x = try NPY.readFloat(input)
                let d = model.denoiser.dimension
                guard x.rank >= 2, x.rowSize == d else {
                    throw TrainingError("\(input) has shape \(x.shape); the model of \(runDirectory) needs (N, \(d)) or (N, ...) with \(d) values per sample")
                }
                try validateFinite(x, name: input)
                if let floor = model.trainedFloor, sigma < floor {
                    FileHandle.standardError.write(Data("ambient: warning: sigma \(sigma) is below the lowest level this model was trained at (\(floor))\n".utf8))
                }
                let progress = quiet ? nil : ProgressReporter(label: "denoise", total: x.rows, unit: "sample")
                let y = model.denoise(x.reshaped([x.rows, d]), sigma: sigma) { progress?.update($0) }.reshaped(x.shape)
                try NPY.write(y, to: out)
            }
        }
    }
}
