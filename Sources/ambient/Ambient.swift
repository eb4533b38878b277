import ArgumentParser
import Foundation
import Logging
import TensorCore
import Training
import Cluster

/// The `ambient` command: train diffusion models from corrupted data.
@main
struct Ambient: ParsableCommand {
    static func main() {
        BLASCore.restartWithPreferredCoreIfNeeded()
        Denormals.applyToMainThread()
        MallocTuning.keepLargeBuffers()
        Self.main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "ambient",
        abstract: "Train diffusion models from noisy, masked or otherwise corrupted data.",
        discussion: """
        Ambient learns a clean data distribution when every training sample is corrupted \
        (noisy, masked, blurred or out of distribution). A run directory holds the resolved \
        configuration, per-step metrics, checkpoints and the final weights (safetensors); \
        `ambient report` turns it into an HTML page. docs/getting-started.md is a tour, \
        docs/cli.md has every command's help.

        Examples:
          ambient train --data fashion-mnist --corrupt noise:0.5 --steps 2000 --out runs/fm
          ambient sample --run runs/fm --count 64 --out samples.npy --png samples.png
          ambient report --run runs/fm
          ambient train --config run.yaml --out runs/from-file
        """,
        subcommands: [Dataset.self, Train.self, Classifier.self, Annotate.self, Sample.self, Denoise.self, Eval.self, CalibrateEvaluator.self,
                      Report.self, CoordinatorCommand.self, WorkerCommand.self, Keys.self])
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Compute threads (default: OPENBLAS_NUM_THREADS, else the core count). Training computes this many shards at once with one BLAS thread each, so results do not depend on it; sampling and denoising use it as BLAS threads.")
    var threads: Int?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level '\(logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        if let t = threads, t < 1 { throw ValidationError("--threads must be >= 1") }
    }

    func makeLogger(_ label: String) -> Logger {
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }

    func configureBLAS() {
        if let t = threads { BLAS.setThreads(t) } else { BLAS.configureThreads(fallback: ProcessInfo.processInfo.activeProcessorCount) }
    }
}

/// `OPENBLAS_NUM_THREADS` when set.
func environmentThreads() -> Int? {
    ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil }
}

/// Runs `body`, turning any error into one clear line on stderr and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch let e as InterruptedError {
        FileHandle.standardError.write(Data("\nambient: \(e)\n".utf8))
        throw ExitCode(130)
    } catch let e as InterruptedAfterWriting {
        FileHandle.standardError.write(Data("\nambient: \(e)\n".utf8))
        throw ExitCode(130)
    } catch let e as CoordinatorStopped {
        FileHandle.standardError.write(Data("\nambient: \(e)\n".utf8))
        throw ExitCode(130)
    } catch {
        FileHandle.standardError.write(Data("ambient: error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}
