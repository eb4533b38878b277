import ArgumentParser
import Datasets
import Diffusion
import FileIO
import Foundation
import TensorCore
import Training

extension Ambient.Classifier {
    /// `ambient classifier crop-map`: measures the crop size an optimal denoiser needs per noise level.
    struct CropMapCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "crop-map",
            abstract: "Measure the crop size an optimal denoiser needs at each noise level (the crops classifier's sigma -> crop map).",
            discussion: """
            For held-out images (Fashion-MNIST test, or the last --queries samples of a dataset directory) \
            with noise of level sigma, the centre pixel is estimated from the s x s window around it alone, \
            by the posterior mean under the empirical distribution of the same window in --database \
            training images (weights exp(-||y_W - x_i,W||^2 / 2 sigma^2), Gram matrices by DGEMM), and by \
            the linear (Wiener) estimate from the window's mean and covariance in those images. The \
            smaller of the two mean squared errors per (sigma, s), over a grid of centre positions, is \
            written to --out (both tables too) with crop(sigma) = the smallest s within --tolerance \
            (relative) of the best s, made non-decreasing in sigma. s = 28 (the image side) is the whole \
            image. Both are upper bounds of the optimal error: the first collapses onto the nearest \
            database window at low sigma and large s, the second misses non-linear structure \
            (docs/results.md). Also writes two SVG charts next to --out.

            Examples:
              ambient classifier crop-map --data fashion-mnist --out crop-map.json
              ambient classifier crop-map --database 40000 --queries 400 --out crop-map.json
            """)

        @Option(help: "fashion-mnist, or a dataset directory of images.")
        var data: String = "fashion-mnist"

        @Option(help: "Output JSON file (the charts go to the same name with -crop.svg and -mse.svg).")
        var out: String

        @Option(help: "Database images (training split).")
        var database: Int = 10000

        @Option(help: "Held-out query images.")
        var queries: Int = 200

        @Option(help: "Centre positions: a K x K grid at fractions 1/(K+1) ... K/(K+1) of the image.")
        var positions: Int = 3

        @Option(help: "Noise levels: comma-separated, or a count log-spaced in [--sigma-from, --sigma-to].")
        var sigmas: String = "13"

        @Option(name: .customLong("sigma-from"), help: "Lowest noise level of a log-spaced grid.")
        var sigmaFrom: Double = 0.01

        @Option(name: .customLong("sigma-to"), help: "Highest noise level of a log-spaced grid.")
        var sigmaTo: Double = 10

        @Option(help: "Relative tolerance of crop(sigma): the smallest s with mse(s) <= (1 + tolerance) min mse.")
        var tolerance: Double = 0.05

        @Option(help: "Seed of the image choice and the query noise.")
        var seed: UInt64 = 0

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func sigmaGrid() throws -> [Double] {
            if let n = Int(sigmas) {
                guard n >= 2, sigmaFrom > 0, sigmaTo > sigmaFrom else { throw ValidationError("--sigmas N needs N >= 2 and 0 < --sigma-from < --sigma-to") }
                return Annotator.logGrid(count: n, from: sigmaFrom, to: sigmaTo)
            }
            let values = sigmas.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! > 0 && $0!.isFinite }) else {
                throw ValidationError("--sigmas must be a count or comma-separated positive noise levels, got '\(sigmas)'")
            }
            let sorted = Array(Set(values.map { $0! })).sorted()
            return sorted
        }

        func validate() throws {
            if database < 2 || queries < 1 { throw ValidationError("--database must be >= 2 and --queries >= 1") }
            if positions < 1 { throw ValidationError("--positions must be >= 1") }
            if !(tolerance >= 0 && tolerance.isFinite) { throw ValidationError("--tolerance must be >= 0") }
            _ = try sigmaGrid()
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let grid = try sigmaGrid()
                let db: Tensor<Float>, held: Tensor<Float>
                let source: String
                func pick(_ t: Tensor<Float>, _ n: Int, step: Int) -> Tensor<Float> {
                    var rng = CounterRNG(seed: seed, purpose: .evaluation, step: step)
                    return t.gather(rows: Array(rng.permutation(t.rows).prefix(n)))
                }
                if data == "fashion-mnist" {
                    db = pick(try FashionMNIST.load(split: .train).images, database, step: 0)
                    held = pick(try FashionMNIST.load(split: .test).images, queries, step: 1)
                    source = "fashion-mnist: \(db.rows) train images (database), \(held.rows) test images (queries)"
                } else {
                    let c = try DatasetDirectory(path: data).read()
                    guard c.samples.rank == 4 else { throw TrainingError("\(data) holds vectors \(c.samples.shape), not images (N, C, H, W)") }
                    guard c.count > queries + 1 else { throw TrainingError("\(data) has \(c.count) samples; need more than --queries \(queries)") }
                    held = c.samples.rows((c.count - queries)..<c.count)
                    db = pick(c.samples.rows(0..<(c.count - queries)), database, step: 0)
                    source = "dataset \(data): \(db.rows) samples (database), the last \(held.rows) (queries)"
                }
                let shape = Array(db.shape.dropFirst())
                let side = max(shape[1], shape[2])
                let measurement = CropDenoisingMeasurement(
                    sigmas: grid, cropSizes: CropDenoisingMeasurement.defaultCropSizes(side: side),
                    positions: CropDenoisingMeasurement.gridPositions(positions, height: shape[1], width: shape[2]), seed: seed)
                let progress = quiet ? nil : ProgressReporter(label: "crop-map", total: measurement.positions.count * measurement.cropSizes.count, unit: "window")
                let started = Date()
                let kernel = measurement.measure(database: db, queries: held) { done, _ in progress?.update(done) }
                let linear = measurement.measureLinear(database: db, queries: held)
                let mse = zip(kernel, linear).map { zip($0, $1).map { min($0, $1) } }
                let (raw, monotone) = CropMap.crops(mse: mse, cropSizes: measurement.cropSizes, tolerance: tolerance)
                let map = CropMap(source: source, imageShape: shape, sigmas: grid, cropSizes: measurement.cropSizes, mse: mse,
                                  tolerance: tolerance, rawCrop: raw, crop: monotone, database: db.rows, queries: held.rows,
                                  positions: measurement.positions.map { [$0.row, $0.col] }, seed: seed,
                                  createdBy: CommandLine.arguments.joined(separator: " "), mseKernel: kernel, mseLinear: linear)
                try map.validate()
                let base = out.hasSuffix(".json") ? String(out.dropLast(5)) : out
                try writingOutputs {
                    try FileBytes.writeAtomically(try map.encoded(), to: out)
                    try FileBytes.writeAtomically(Array(Self.cropChart(map).utf8), to: base + "-crop.svg")
                    try FileBytes.writeAtomically(Array(Self.mseChart(map).utf8), to: base + "-mse.svg")
                }
                var lines = [String(format: "measured in %.1f s; sigma -> crop size (raw) and mse(crop)/mse(best), mse(1)/mse(best):", Date().timeIntervalSince(started))]
                for (k, s) in grid.enumerated() {
                    let best = mse[k].min()!
                    let j = measurement.cropSizes.firstIndex(of: monotone[k])!
                    let winner = kernel[k].min()! <= linear[k].min()! ? "kernel" : "linear"
                    lines.append(String(format: "  sigma %8.4f  crop %2d (%2d)  %.3f  %.3f  best mse %.5f (", s, monotone[k], raw[k],
                                        mse[k][j] / best, mse[k][0] / best, best) + winner + ")")
                }
                FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
            }
        }

        /// crop(sigma) against log10 sigma, raw and non-decreasing.
        static func cropChart(_ map: CropMap) -> String {
            let xs = map.sigmas.map { log10($0) }
            return SVGChart(title: "crop size needed per noise level (\(map.source.split(separator: ":").first ?? ""))",
                            xLabel: "log10 sigma", yLabel: "crop size").lines([
                .init(name: "crop(sigma)", points: zip(xs, map.crop).map { ($0, Double($1)) }),
                .init(name: "raw (smallest within tol)", points: zip(xs, map.rawCrop).map { ($0, Double($1)) }),
            ])
        }

        /// mse(s) / min_s mse(s) against s, for up to seven noise levels.
        static func mseChart(_ map: CropMap) -> String {
            let picks = Set(stride(from: 0, to: map.sigmas.count, by: max(1, (map.sigmas.count + 6) / 7)))
            let series = map.sigmas.indices.filter { picks.contains($0) }.map { k -> SVGChart.Series in
                let best = map.mse[k].min()!
                return .init(name: String(format: "sigma %.3g", map.sigmas[k]),
                             points: zip(map.cropSizes, map.mse[k]).map { (Double($0), $1 / best) })
            }
            return SVGChart(title: "centre-pixel MSE relative to the best crop size", xLabel: "crop size (28 = whole image)",
                            yLabel: "mse / best", logY: true).lines(series)
        }
    }
}
