import ArgumentParser
import Cluster
import Diffusion
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient train`: one process (all shards in order), or a local cluster with --workers.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Train a denoiser and write a run directory.",
            discussion: """
            Data sources: fashion-mnist (Debian package dataset-fashion-mnist), \
            gmm[:dim=D,components=K,count=N,std=S,seed=Z] (synthetic Gaussian mixture), npy:PATH (float32 NPY \
            of shape (N, d) or (N, C, H, W)), or a dataset directory written by `ambient dataset make` (DIR \
            or dir:DIR; docs/dataset-format.md).

            Noisy data: --data-sigma S declares that the data is ALREADY noisy at level S (the real use \
            case); --corrupt simulates corrupted data from clean data, fixed per sample (noise:S, mask:P, \
            box:S, blur:S).

            Objectives: dsm (denoising score matching, SPEC O1); ambient (ambient DSM for noisy data, SPEC \
            O2; on an annotated dataset directory each sample is used at its own sigma_min, SPEC O5); masked \
            (further corruption for masked data, SPEC O3; masks become input channels); consistency (O2 plus \
            the consistency term of SPEC O4, so the model also samples below sigma_n); split (the \
            memorisation-reducing split of SPEC O6 on clean data, with --split-sigma); classifier (the \
            noise-conditioned clean-vs-corrupted classifier of SPEC O5; use ambient classifier train). \
            docs/concepts.md explains each.

            Networks: --arch unet, a convolutional U-Net (--channels gives the feature channels per \
            resolution, default 16,32,64 at 28x28, 14x14 and 7x7), is the default for square images with a \
            denoiser objective, with --batch 32 --lr 2e-3 unless given (on a CPU a small batch of convolutions \
            with a larger step trains fastest; docs/unet.md). --arch mlp (--width, --blocks; giving either \
            selects it) is the default for vectors, the classifier and --crops, with --batch 256 --lr 1e-3.

            Configuration files: --config FILE reads every option from YAML or JSON (the keys of \
            config.json; --dry-run prints them all, with their command-line options as comments); options \
            given on the command line override the file. An unknown key or a wrong value is an error that \
            names the file, line and column.

            With --workers N the run uses the cluster machinery on this machine: a coordinator in this \
            process and N worker processes, connected by a Unix socket in a directory only you can enter \
            (--local-link tcp: 127.0.0.1 with CURVE keys generated for the run). With the same --shards \
            the result is bitwise identical to the single-process run, for any N. It is for trying the \
            cluster (and its faults) on one machine, not for speed there: every worker process keeps its own \
            replica and sends its gradients through sockets, so on 2 cores a step of --workers 2 takes about \
            twice as long as the same step with --threads 2 in one process (docs/benchmarks.md).

            The run directory gets config.json (the resolved configuration and its hash), metrics.jsonl, \
            checkpoints/, model.safetensors (EMA weights, written last: its presence means the run \
            finished), and with --workers also events.jsonl (docs/formats.md). Ctrl-C stops after the \
            current step with a checkpoint; the same command resumes the run, bitwise as if never stopped.

            Examples:
              ambient train --data fashion-mnist --corrupt noise:0.5 --steps 2000 --out runs/fm
              ambient train --data npy:noisy.npy --data-sigma 0.3 --objective ambient --out runs/mine
              ambient train --data gmm:dim=8 --corrupt noise:0.7 --width 128 --blocks 2 --out runs/gmm
              ambient train --arch mlp --data fashion-mnist --corrupt noise:0.5 --steps 2000 --out runs/fm-mlp
              ambient train --data data/fm-masked --objective masked --further-delta 0.1 --out runs/masked
              ambient train --data gmm:dim=8 --corrupt noise:0.7 --objective consistency --out runs/gmm-o4
              ambient train --data data/fm-300 --objective split --split-sigma 0.5 --out runs/split
              ambient train --data fashion-mnist --corrupt noise:0.5 --workers 2 --shards 4 --out runs/fm2
              ambient train --data fashion-mnist --corrupt noise:0.5 --dry-run > run.yaml
              ambient train --config run.yaml --steps 5000 --out runs/fm-long
            """)

        @OptionGroup var training: TrainingOptions

        @Option(help: "Run directory to create.")
        var out: String?

        @Option(help: "Worker processes of a local cluster (0: train in this process).")
        var workers: Int = 0

        @OptionGroup var cluster: ClusterCommandOptions

        @Option(name: .customLong("time-limit"), help: "Stop after this many seconds of training and write the final weights (single process; for equal wall-clock comparisons; the step count then depends on the machine).")
        var timeLimit: Double?

        @Option(name: .customLong("colocated-workers"), help: "With --workers N: run this many of the N workers as threads of the coordinator's process; their gradients and updates skip the socket (with 2 workers the coordinator's link then carries half the bytes).")
        var colocatedWorkers: Int = 0

        @Option(name: .customLong("local-link"), help: "With --workers N: how the worker processes reach the coordinator: ipc (default: a Unix socket in a 0700 directory of this run, no encryption needed) or tcp (127.0.0.1 with CURVE keys made for the run, for the workers' data links too).")
        var localLink: LocalCluster.Link?

        @Flag(name: .customLong("plaintext"), help: "With --workers N: tcp on 127.0.0.1 without CURVE encryption (it costs CPU on every gradient byte).")
        var plaintext = false

        @Flag(name: .customLong("dry-run"), help: "Print the resolved configuration and its hash, and exit (nothing is written).")
        var dryRun = false

        @Option(name: .customLong("dry-run-format"), help: "Format of --dry-run: yaml (with the hash and a comment per key) or json (the hash goes to stderr).")
        var dryRunFormat: DryRunFormat = .yaml

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if workers < 0 { throw ValidationError("--workers must be >= 0") }
            if out == nil && !dryRun { throw ValidationError("--out RUNDIR is required") }
            if let t = timeLimit, !(t > 0) { throw ValidationError("--time-limit must be > 0 seconds") }
            if timeLimit != nil && workers > 0 { throw ValidationError("--time-limit applies to single-process training (no --workers)") }
            if colocatedWorkers < 0 || colocatedWorkers > workers { throw ValidationError("--colocated-workers must be between 0 and --workers") }
            if plaintext && workers == 0 { throw ValidationError("--plaintext applies to a local cluster (--workers N)") }
            if localLink != nil && workers == 0 { throw ValidationError("--local-link applies to a local cluster (--workers N)") }
            if plaintext && localLink == .ipc { throw ValidationError("--plaintext applies to --local-link tcp (ipc never uses encryption)") }
        }

        func run() throws {
            try reportingErrors {
                let (config, data) = try training.resolve()
                if dryRun {
                    print(try dryRunFormat.render(config), terminator: "")
                    if dryRunFormat == .json { FileHandle.standardError.write(Data("config hash \(config.hash)\n".utf8)) }
                    return
                }
                let logger = common.makeLogger("ambient.train")
                let stop = StopSignal.forCommand()
                if workers == 0 {
                    var trainer = Trainer(config: config, runPath: out!, logger: logger, showProgress: !quiet,
                                          threads: common.threads ?? environmentThreads())
                    trainer.checkpointEvery = cluster.checkpointEvery
                    trainer.keepCheckpoints = cluster.keep
                    trainer.stop = stop
                    trainer.timeLimit = timeLimit
                    trainer.extend = cluster.extend
                    try trainer.run(data: data)
                } else {
                    let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
                    var local = LocalCluster(workers: workers, logLevel: common.logLevel, logger: logger, executable: me)
                    local.link = localLink ?? (plaintext ? .tcp : .ipc)
                    local.plaintext = plaintext
                    local.colocated = colocatedWorkers
                    try local.run(config: config, data: data, runPath: out!, options: cluster.options(showProgress: !quiet), stop: stop)
                }
            }
        }
    }
}

/// What `ambient train --dry-run` prints.
enum DryRunFormat: String, ExpressibleByArgument, CaseIterable {
    case yaml, json

    func render(_ config: RunConfig) throws -> String {
        switch self {
        case .yaml:
            return "# Ambient run configuration, config hash \(config.hash) (written to RUNDIR/config.json when training starts).\n" +
                "# Use it with: ambient train --config FILE --out RUNDIR (options given there override it; any key may be left out).\n" +
                ConfigFile.yaml(config)
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            return String(decoding: try encoder.encode(config), as: UTF8.self) + "\n"
        }
    }
}

extension LocalCluster.Link: ExpressibleByArgument {}
