import ArgumentParser
import Cluster
import Datasets
import Diffusion
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient classifier`: the noise-conditioned clean-vs-corrupted classifier of SPEC O5.
    struct Classifier: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "classifier",
            abstract: "Train the Ambient-Omni classifier that tells clean from corrupted samples under noise.",
            discussion: """
            The classifier c(x, sigma) of SPEC O5 gives the logit of "clean" for a sample with noise of \
            level sigma added. ambient annotate uses it to find, for each corrupted sample, the noise level \
            above which it can no longer be told from clean data.

            Examples:
              ambient classifier train --data data/fm-blur --width 256 --blocks 2 --steps 2000 \\
                  --out runs/classifier
              ambient annotate --data data/fm-blur --classifier runs/classifier
            """,
            subcommands: [Train.self, CropMapCommand.self, Check.self])
    }

    /// `ambient annotate`: per-sample sigma_min (SPEC O5), written into the dataset directory.
    struct Annotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "annotate",
            abstract: "Annotate each corrupted sample of a dataset with the noise level above which it counts as clean.",
            discussion: """
            With --classifier: on a grid of --grid sigma values (by default 2,048 quantiles of the \
            classifier's training log-normal, as the authors annotate; --grid-distribution loguniform: 256 \
            log-spaced in [0.002, 80]), p(sigma) is the mean over --draws noise draws of P(clean | w + sigma n); \
            it is smoothed by an exponential moving average of span --span grid levels and sigma_min is the \
            first sigma where it exceeds tau = 0.5 - --eps. The average lags by grid levels: a sparse grid \
            raises every annotation (about 4.6x on 256 log-spaced levels, 1.06-1.2x on the default at sigma \
            0.3-2). A sample that never crosses gets sigma_max (80) and is effectively unused. --floor F raises \
            every annotation below F to F. With --fixed-sigma S \
            every corrupted sample gets S. Clean samples (clean.npy) get 0.

            The annotations go to DIR/annotations.npy and the manifest records how they were made; both \
            are written only at the end (Ctrl-C before then leaves the dataset as it was). \
            ambient train --data DIR --objective ambient then trains each sample above its own sigma_min.

            With --crops-classifier RUN (repeatable; runs of ambient classifier train --crops S) and --crop-map \
            FILE (ambient classifier crop-map): the crops annotation sigma_max of each non-clean sample \
            (Ambient-Omni eq. 3.4), the highest grid sigma at which the mean over --draws crops of size \
            crop(sigma) (from the map; the narrowest classifier at least that wide) of the sample plus noise \
            has P(in-distribution) > tau; 0 when no level passes. --per-set gives every non-clean sample the \
            value of the mean over the whole set. Written to DIR/sigma-max.npy (clean samples: the \
            manifest's sigma_max); training then uses such a sample as clean below its sigma_max and, when \
            it also has a sigma_min annotation, with O2 above sigma_min (the donut). Runs in this process.

            Examples:
              ambient annotate --data data/fm-blur --classifier runs/classifier
              ambient annotate --data data/fm-blur --fixed-sigma 0.8
              ambient annotate --data data/fm-blur --classifier runs/classifier --floor 1.38
              ambient annotate --data data/fm-ood --crops-classifier runs/crops7 --crop-map crop-map.json \\
                  --grid 32
            """)

        @Option(help: "Dataset directory to annotate (updated in place).")
        var data: String

        @Option(help: "Run directory of a trained classifier (ambient classifier train).")
        var classifier: String?

        @Option(name: .customLong("fixed-sigma"), help: "Annotate every corrupted sample with this sigma_min instead.")
        var fixedSigma: Double?

        @Option(help: "With --classifier: raise every annotation below this sigma to it (our option, not the authors': for a corruption whose sound level is known, e.g. the paper's fixed annotation, so that no corrupted sample is used below it; the classifier's levels above it are kept).")
        var floor: Double?

        @Option(name: .customLong("crops-classifier"), help: "Run directory of a crops classifier (ambient classifier train --crops S); repeat for several sizes. Writes sigma_max.")
        var cropsClassifiers: [String] = []

        @Option(name: .customLong("crop-map"), help: "With --crops-classifier: the measured crop map (ambient classifier crop-map).")
        var cropMap: String?

        @Flag(name: .customLong("per-set"), help: "With --crops-classifier: one sigma_max for all non-clean samples (the mean over the set).")
        var perSet = false

        @Option(help: "Number of sigma levels of the grid (default 2048 for --grid-distribution lognormal, 256 for loguniform; 32 with --crops-classifier).")
        var grid: Int?

        @Option(name: .customLong("grid-distribution"), help: "Where the grid's levels lie: lognormal (quantiles of the classifier's training log-normal, the authors' grid) or loguniform (log-spaced in [0.002, 80]).")
        var gridDistribution: AnnotationGrid = .lognormal

        @Option(help: "Noise draws per sample and level (default 4; crops per sample and level with --crops-classifier, default 16).")
        var draws: Int?

        @Option(help: "Span of the exponential moving average along the grid.")
        var span: Double = 32

        @Option(help: "tau = 0.5 - eps.")
        var eps: Double = 0.05

        @Option(help: "Seed of the annotation noise.")
        var seed: UInt64 = 0

        @Option(help: "Shards the corrupted samples are cut into (the unit of work; results depend on it only through BLAS tiling).")
        var shards: Int = 8

        @Option(help: "Annotate on a local cluster of this many worker processes (0: in this process).")
        var workers: Int = 0

        @Option(help: "Coordinate remote workers (`ambient worker --connect`) from this ZeroMQ endpoint instead.")
        var bind: String?

        @Option(help: "With --bind: this coordinator's CURVE key file.")
        var key: String?

        @Option(help: "With --bind: allowed worker public keys (file or directory of .pub files).")
        var allow: String?

        @Flag(help: "With --bind: no authentication or encryption (loopback only).")
        var plaintext = false

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if [classifier != nil, fixedSigma != nil, !cropsClassifiers.isEmpty].filter({ $0 }).count != 1 {
                throw ValidationError("give exactly one of --classifier RUN, --fixed-sigma S and --crops-classifier RUN")
            }
            if !cropsClassifiers.isEmpty && cropMap == nil { throw ValidationError("--crops-classifier needs --crop-map FILE (ambient classifier crop-map)") }
            if cropsClassifiers.isEmpty && (cropMap != nil || perSet) { throw ValidationError("--crop-map and --per-set apply to --crops-classifier") }
            if !cropsClassifiers.isEmpty && (workers > 0 || bind != nil) { throw ValidationError("--crops-classifier runs in this process; drop --workers/--bind") }
            if floor != nil && classifier == nil { throw ValidationError("--floor applies to --classifier annotation") }
            if let f = floor, !(f > 0 && f.isFinite) { throw ValidationError("--floor must be a positive noise level, got \(f)") }
            if let s = fixedSigma, !(s > 0 && s.isFinite) { throw ValidationError("--fixed-sigma must be a positive noise level, got \(s)") }
            if (grid ?? 2) < 2 || (draws ?? 1) < 1 || span < 1 { throw ValidationError("--grid must be >= 2, --draws >= 1, --span >= 1") }
            if !(eps >= 0 && eps < 0.5) { throw ValidationError("--eps must be in [0, 0.5)") }
            if shards < 1 { throw ValidationError("--shards must be >= 1") }
            if workers < 0 { throw ValidationError("--workers must be >= 0") }
            if (workers > 0 || bind != nil) && fixedSigma != nil { throw ValidationError("--workers/--bind apply to classifier annotation") }
            if workers > 0 && bind != nil { throw ValidationError("--workers (local) and --bind (remote workers) exclude each other") }
            if let bind {
                if !plaintext && (key == nil || allow == nil) { throw ValidationError("with --bind give --key and --allow (CURVE), or --plaintext on loopback") }
                if plaintext && !isLoopback(endpoint: bind) { throw ValidationError("--plaintext is only allowed on loopback endpoints") }
            }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let directory = DatasetDirectory(path: data)
                let contents = try directory.read()
                let n = contents.count
                let clean = contents.clean ?? [Bool](repeating: false, count: n)
                let corrupted = (0..<n).filter { !clean[$0] }
                var annotations = [Double](repeating: 0, count: n)
                let note: String
                if !cropsClassifiers.isEmpty {
                    try annotateCrops(directory: directory, contents: contents, corrupted: corrupted)
                    return
                }
                if let s = fixedSigma {
                    guard s <= contents.manifest.sigmaMax else { throw TrainingError("--fixed-sigma \(s) exceeds sigma_max \(contents.manifest.sigmaMax)") }
                    for i in corrupted { annotations[i] = s }
                    note = "fixed sigma_min \(s) for the \(corrupted.count) corrupted samples"
                } else {
                    let trained = try TrainedClassifier.load(run: classifier!)
                    let d = contents.samples.rowSize
                    guard trained.classifier.dimension == d else {
                        throw TrainingError("classifier \(classifier!) takes samples of \(trained.classifier.dimension) values, \(data) has \(d)")
                    }
                    var spec = AnnotationSpec(dataset: data, classifierConfig: trained.record.config, classifierRun: classifier!,
                                              classifierHash: trained.record.hash, grid: grid ?? gridDistribution.defaultCount,
                                              gridDistribution: gridDistribution, draws: draws ?? 4, span: span, eps: eps,
                                              seed: seed, shards: shards)
                    if let floor {
                        guard floor < contents.manifest.sigmaMax else { throw TrainingError("--floor \(floor) must be below sigma_max \(contents.manifest.sigmaMax)") }
                        spec.floor = floor
                    }
                    if let bind {
                        let logger = common.makeLogger("ambient.annotate")
                        let probe = try AnnotationCoordinatorWorkload(spec: spec, showProgress: false)
                        let context = ZMQContext()
                        let server = try makeCoordinatorServer(context: context, bind: bind, key: key, allow: allow, plaintext: plaintext,
                                                               limits: ClusterTraining.limits(parameters: probe.parameterCount), logger: logger)
                        defer {
                            server.close(flushingFor: 2)
                            context.terminate()
                        }
                        var options = ClusterTraining.Options()
                        options.showProgress = !quiet
                        annotations = try ClusterTraining.annotate(spec: spec, transport: server, options: options, logger: logger)
                    } else if workers > 0 {
                        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
                        var options = ClusterTraining.Options()
                        options.showProgress = !quiet
                        options.coordinator.checkpointEvery = 0
                        annotations = try LocalCluster(workers: workers, logLevel: common.logLevel,
                                                       logger: common.makeLogger("ambient.annotate"), executable: me)
                            .annotate(spec: spec, options: options)
                    } else {
                        let progress = quiet ? nil : ProgressReporter(label: "annotate", total: shards, unit: "shard")
                        annotations = try spec.runLocally(progress: progress)
                    }
                    note = spec.note
                }
                if fixedSigma != nil { try writingOutputs { try directory.writeAnnotations(annotations, note: note) } }
                let values = corrupted.map { annotations[$0] }
                let middle = values.isEmpty ? 0 : median(values)
                let unused = values.filter { $0 >= contents.manifest.sigmaMax }.count
                FileHandle.standardError.write(Data("annotated \(corrupted.count) corrupted samples of \(data): median sigma_min \(String(format: "%.4f", middle)), \(unused) never crossed (sigma_max); \(n - corrupted.count) clean at 0\n".utf8))
            }
        }
    }
}

extension Ambient.Annotate {
    /// The crops annotation (SPEC O5 crops): sigma_max per non-clean sample, or one for the set.
    func annotateCrops(directory: DatasetDirectory, contents: DatasetDirectory.Contents, corrupted: [Int]) throws {
        let map = try CropMap.read(cropMap!)
        let shape = Array(contents.samples.shape.dropFirst())
        guard contents.samples.rank == 4 else { throw TrainingError("\(data) holds vectors, not images: crops need images") }
        guard map.imageShape == shape else { throw TrainingError("crop map \(cropMap!) was measured on images \(map.imageShape), \(data) holds \(shape)") }
        let sized = try cropsClassifiers.map { run -> CropAnnotator.SizedClassifier in
            let trained = try TrainedClassifier.load(run: run)
            guard let size = trained.record.config.classifierCrop else {
                throw TrainingError("\(run) is not a crops classifier (trained without --crops); use it with --classifier")
            }
            guard size <= min(shape[1], shape[2]) else {
                throw TrainingError("crops classifier \(run) takes \(size) x \(size) crops; the images of \(data) are \(shape[1]) x \(shape[2])")
            }
            guard trained.classifier.dimension == ImageCrops.dimension(shape: shape, size: size) else {
                throw TrainingError("crops classifier \(run) takes \(trained.classifier.dimension) values, \(size) x \(size) crops of \(data) have \(ImageCrops.dimension(shape: shape, size: size))")
            }
            return CropAnnotator.SizedClassifier(size: size, classifier: trained.classifier, store: trained.store)
        }
        let sigmaMax = contents.manifest.sigmaMax
        let annotator = CropAnnotator(grid: Annotator.logGrid(count: grid ?? 32, from: 0.002, to: sigmaMax), draws: draws ?? 16, tau: 0.5 - eps)
        let progress = quiet ? nil : ProgressReporter(label: "crops", total: annotator.grid.count, unit: "level")
        let result = annotator.annotate(images: contents.samples.gather(rows: corrupted), indices: corrupted, classifiers: sized, map: map,
                                        seed: seed) { progress?.update($0) }
        var values = [Double](repeating: sigmaMax, count: contents.count)
        for (r, i) in corrupted.enumerated() { values[i] = perSet ? result.perSet : result.perSample[r] }
        let sizes = sized.map { "\($0.size)" }.joined(separator: ",")
        let note = "ambient annotate --crops-classifier \(cropsClassifiers.joined(separator: " ")) (crop sizes \(sizes)) --crop-map \(cropMap!)" +
            ", grid \(annotator.grid.count) log-spaced in [0.002, \(sigmaMax)], \(annotator.draws) crops per level, tau \(annotator.tau), seed \(seed)" +
            (perSet ? ", per set" : ", per sample")
        try writingOutputs { try directory.writeSigmaMax(values, note: note) }
        var lines = ["sigma, crop used, mean P(in-distribution) over the \(corrupted.count) non-clean samples:"]
        for (k, s) in annotator.grid.enumerated() {
            if let p = result.meanProbability[k], let c = result.cropUsed[k] { lines.append(String(format: "  %9.4f  %2d  %.3f", s, c, p)) }
        }
        let per = corrupted.indices.map { result.perSample[$0] }
        lines.append(String(format: "sigma_max: per set %.4f; per sample median %.4f, %d of %d at 0 (never used as clean)", result.perSet,
                            per.isEmpty ? 0 : median(per), per.filter { $0 == 0 }.count, per.count) +
                     (perSet ? "; written: per set" : "; written: per sample"))
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

extension Ambient.Classifier {
    /// `ambient classifier train`.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Train the noise-conditioned classifier on a dataset directory with clean flags.",
            discussion: """
            Batches are balanced: half clean samples (label 1), half corrupted (label 0), each noised at a \
            sigma drawn log-uniformly over the annotation grid's range [0.002, 80] (default) or from EDM's \
            log-normal (SPEC's wording; it leaves the classifier untrained above sigma ~10, where annotation \
            still asks it). With --crops S it is the crops classifier of SPEC O5: each row is one uniformly \
            placed S x S crop, label 1 for crops of clean samples, 0 for crops of the others (e.g. the \
            out-of-distribution samples of a dataset made with --corrupt ood:C); ambient annotate \
            --crops-classifier turns it into sigma_max. The run directory holds config.json, metrics.jsonl (term.bce, term.accuracy) \
            and model.safetensors with ambient.kind = classifier. It takes the options of ambient train \
            (--config, --steps, --width, ...); Ctrl-C stops at a step with a checkpoint and the same command \
            resumes.

            Examples:
              ambient classifier train --data data/fm-blur --width 256 --blocks 2 --steps 2000 \\
                  --out runs/classifier
              ambient classifier train --data data/fm-blur --sigma-distribution loguniform --out runs/c-lu
              ambient classifier train --data data/fm-ood --crops 7 --steps 2000 --out runs/crops7
            """)

        @Option(name: .customLong("sigma-distribution"),
                help: "Training noise levels: lognormal (EDM's, as the authors train theirs and as ambient annotate's default grid is spaced) or loguniform over [0.002, 80].")
        var sigmaDistribution: ClassifierSigmaDistribution = .lognormal

        @OptionGroup var training: TrainingOptions

        @Option(help: "Run directory to create.")
        var out: String

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if let objective = training.objective, objective != .classifier {
                throw ValidationError("ambient classifier train trains the classifier; use ambient train for --objective \(objective.rawValue)")
            }
            if let data = training.data, !DatasetDirectory.exists(at: data.hasPrefix("dir:") ? String(data.dropFirst(4)) : data) {
                throw ValidationError("\(data) is not a dataset directory (no manifest.json); create one with ambient dataset make")
            }
        }

        func run() throws {
            try reportingErrors {
                var options = training
                options.objective = .classifier
                var (config, trainingData) = try options.resolve()
                config.classifierSigma = sigmaDistribution
                try config.validate()
                var trainer = Trainer(config: config, runPath: out, logger: common.makeLogger("ambient.classifier"), showProgress: !quiet,
                                      threads: common.threads ?? environmentThreads())
                trainer.stop = StopSignal.forCommand()
                try trainer.run(data: trainingData)
            }
        }
    }
}
