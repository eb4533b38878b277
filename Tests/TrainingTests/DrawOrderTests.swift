import Datasets
import Diffusion
import Foundation
import TensorCore
import Testing
import Training

/// SPEC O5 "Draw order": sigma from the training distribution first, then a row usable at it.
@Suite(.serialized) struct DrawOrderTests {
    static let edm = EDMSchedule()
    static func phi(_ x: Double) -> Double { 1 - NormalDistribution.upperTail(x) }
    /// CDF of the training log-normal.
    static func lognormalCDF(_ s: Double) -> Double { phi((log(s) - edm.pMean) / edm.pStd) }

    /// Kolmogorov-Smirnov distance between `values` and `cdf`.
    static func ks(_ values: [Double], _ cdf: (Double) -> Double) -> Double {
        let v = values.sorted(), n = Double(v.count)
        var d = 0.0
        for (i, x) in v.enumerated() {
            let f = cdf(x)
            d = max(d, abs(f - Double(i) / n), abs(f - Double(i + 1) / n))
        }
        return d
    }

    /// Three populations, the two-level layout of Ambient-o data plus crops rows: 100 clean
    /// rows (usable at every sigma), 800 corrupted rows usable above lo = b sigma_min and,
    /// with `crops`, 100 rows used as clean only up to hi. Between the bounds the usable
    /// population is constant for the corrupted and the crops rows, so each must see its sigma
    /// distributed as the log-normal restricted to its usable range, and the batch's sigmas as
    /// the log-normal (every level has a usable row). 40,000 draws; the KS threshold is the 1%
    /// critical value 1.63/sqrt(n) for each group's n.
    @Test(arguments: [false, true]) func sigmaOfDrawnRowsIsTheRestrictedTrainingDistribution(crops: Bool) throws {
        let b = AmbientScoreMatching.buffer(sMax: 4), sigmaMin = 1.0, lo = b * sigmaMin, hi = 0.3
        let n = crops ? 1000 : 900
        let lower = (0..<n).map { $0 >= 100 && $0 < 900 ? lo : 0 }
        let upper = (0..<n).map { $0 >= 900 ? hi : Double.infinity }
        let draw = try UsableRowDraw(lower: lower, upper: upper, schedule: Self.edm, seed: 7)
        var all: [Double] = [], clean: [Double] = [], corrupted: [Double] = [], low: [Double] = []
        for step in 0..<500 {
            let d = draw.draw(step: step, rows: 0..<80)
            for (i, s) in zip(d.indices, d.sigmas) {
                #expect(s > lower[i] && s <= upper[i])
                all.append(s)
                if i < 100 { clean.append(s) } else if i < 900 { corrupted.append(s) } else { low.append(s) }
            }
        }
        let tail = 1 - Self.lognormalCDF(lo), head = Self.lognormalCDF(hi)
        let restrictedAbove = { (s: Double) in max(0, Self.lognormalCDF(s) - Self.lognormalCDF(lo)) / tail }
        let restrictedBelow = { (s: Double) in min(Self.lognormalCDF(s), head) / head }
        let crit = { (k: Int) in 1.63 / Double(k).squareRoot() }
        let dAll = Self.ks(all, Self.lognormalCDF), dCorrupted = Self.ks(corrupted, restrictedAbove)
        let report = "KS all \(dAll) (crit \(crit(all.count))), corrupted \(dCorrupted) (n \(corrupted.count), crit \(crit(corrupted.count)))"
        #expect(dAll < crit(all.count), "\(report)")
        #expect(dCorrupted < crit(corrupted.count), "\(report)")
        if crops {
            let dLow = Self.ks(low, restrictedBelow)
            #expect(dLow < crit(low.count), "crops rows: KS \(dLow) (n \(low.count))")
        }
        // The share of corrupted rows is P(sigma > lo) times their share of the usable rows
        // there (800 of the 900 clean and corrupted rows; crops rows stop below lo): about 0.12
        // at sigma_min = 1, where drawing the row first gives 0.8-0.9.
        let share = Double(corrupted.count) / Double(all.count), expected = tail * 800 / 900
        let sd = (expected * (1 - expected) / Double(all.count)).squareRoot()
        #expect(abs(share - expected) < 4 * sd, "corrupted share \(share), expected \(expected)")
        // Below lo only clean and crops rows are usable: they take every such draw.
        #expect(all.filter { $0 <= lo }.count == clean.filter { $0 <= lo }.count + low.count)
    }

    /// The draw is a function of (seed, step, global row) only: a shard's rows are the same
    /// whatever range they are drawn in.
    @Test func drawDependsOnlyOnStepAndRow() throws {
        let draw = try UsableRowDraw(lower: [0, 1, 2, 3], upper: [.infinity, .infinity, .infinity, .infinity], schedule: Self.edm, seed: 3)
        let whole = draw.draw(step: 5, rows: 0..<8)
        let halves = (draw.draw(step: 5, rows: 0..<4), draw.draw(step: 5, rows: 4..<8))
        #expect(whole.indices == halves.0.indices + halves.1.indices && whole.sigmas == halves.0.sigmas + halves.1.sigmas)
        #expect(draw.draw(step: 6, rows: 0..<8).sigmas != whole.sigmas)
        // Rows usable nowhere useful: a clear error, not an endless draw.
        #expect(throws: ConfigurationError.self) {
            _ = try UsableRowDraw(lower: [0, 0], upper: [1e-9, 1e-9], schedule: Self.edm, seed: 3)
        }
    }

    /// An annotated dataset directory: 40 clean samples of a 3-d mixture, 160 annotated at
    /// sigma_min between 0.2 and 2.
    static func annotatedDirectory() throws -> String {
        let dir = temporaryDirectory("annotated")
        var spec = GaussianMixtureSpec()
        spec.dimension = 3
        spec.count = 200
        let samples = try spec.mixture().sample(count: 200, seed: 2).x
        let manifest = DatasetDirectory.Manifest(source: "test", corruption: "blur", cleanFraction: 0.2, seed: 1, count: 200, sampleShape: [3])
        let annotations: [Double] = (0..<200).map { (i: Int) -> Double in i < 40 ? 0 : 0.2 + 1.8 * Double(i % 17) / 16 }
        try DatasetDirectory(path: dir).write(.init(manifest: manifest, samples: samples, annotations: annotations,
                                                    clean: (0..<200).map { $0 < 40 }))
        return dir
    }

    /// A small O2 run on `annotatedDirectory()`.
    static func annotatedConfig(_ dir: String) -> RunConfig {
        RunConfig(data: .directory(path: dir), objective: .ambient, steps: 8, batch: 32, shards: 4, seed: 5,
                  model: .mlp(MLPConfig(dataDimension: 3, width: 32, blocks: 2, embeddingSize: 16)), logEvery: 4)
    }

    /// Annotated O2 training draws sigma first, and stays bitwise identical for the
    /// single-process trainer and 1 or 2 workers.
    @Test func annotatedTrainingIsBitwiseEqualAcrossWorkerCounts() throws {
        let dir = try Self.annotatedDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = Self.annotatedConfig(dir)
        let data = try TrainingData.load(config)
        let computer = try makeShardComputer(config: config, data: data, store: ParameterStore(layout: config.model.make().layout))
        #expect((computer as? ShardGradientComputer)?.rowDraw != nil, "annotated data must use the sigma-first draw")
        let cluster = ClusterInProcessTests()
        let (p0, e0) = try cluster.singleProcess(config)
        for w in [1, 2] {
            let (p, e, _) = try cluster.distributed(config, workers: w)
            #expect(p.withUnsafeBytes { Array($0) } == p0.withUnsafeBytes { Array($0) }, "\(w) workers: parameters differ")
            #expect(e.withUnsafeBytes { Array($0) } == e0.withUnsafeBytes { Array($0) }, "\(w) workers: EMA differs")
        }
    }

    /// `--annotated-rows stored` (the authors' pixel code): annotated samples stay as stored, at
    /// sigma_n 0, and are drawn only above b sigma_min (their floor); training stays bitwise
    /// equal across worker counts. With the default the same rows are the fixed noisy copies.
    @Test func storedRowsAreTrainedAsStoredAboveTheirFloor() throws {
        let dir = try Self.annotatedDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = Self.annotatedConfig(dir)
        let noisy = try TrainingData.load(config)
        config.annotatedRows = .stored
        try config.validate()
        let data = try TrainingData.load(config)
        let stored = try DatasetDirectory(path: dir).read()
        let annotations = try #require(stored.annotations)
        #expect(noisy.sigmaFloor == nil && noisy.sigmaN == annotations)
        #expect(data.samples.storage == stored.samples.storage, "stored rows are the samples as stored")
        #expect(noisy.samples.storage != stored.samples.storage, "noisy-copy rows are not")
        #expect(data.sigmaN.allSatisfy { $0 == 0 } && data.sigmaFloor == annotations)
        let computer = try makeShardComputer(config: config, data: data, store: ParameterStore(layout: config.model.make().layout))
        let draw = try #require((computer as? ShardGradientComputer)?.rowDraw, "stored rows need the sigma-first draw")
        let b = AmbientScoreMatching.buffer(sMax: config.ambientSMax)
        for step in 0..<200 {
            let d = draw.draw(step: step, rows: 0..<32)
            for (i, s) in zip(d.indices, d.sigmas) { #expect(s > b * annotations[i], "row \(i) drawn at \(s), below b sigma_min") }
        }
        let cluster = ClusterInProcessTests()
        let (p0, _) = try cluster.singleProcess(config)
        let (p2, _, _) = try cluster.distributed(config, workers: 2)
        #expect(p2.withUnsafeBytes { Array($0) } == p0.withUnsafeBytes { Array($0) }, "2 workers: parameters differ")
        config.objective = .dsm
        #expect(throws: (any Error).self) { try config.validate() }
    }
}
