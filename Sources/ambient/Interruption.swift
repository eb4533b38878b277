import FileIO
import Foundation
import Training
import TensorCore

// Ctrl-C and a command's outputs (docs/formats.md, "Interruption").
//
// Every file is written atomically (FileBytes.writeAtomically), so a single file is either the
// old one or the complete new one. A command that writes several files that belong together
// (samples.npy and its PNG; annotations.npy and the manifest that hashes it; a dataset
// directory; a key pair) runs those writes in `writingOutputs`: SIGINT and SIGTERM are held
// back until the last file is in place, then the command stops with status 130. Before that
// point a signal ends the command at once, with nothing written. `train` and `classifier
// train` instead stop at a step boundary with a checkpoint (Training.StopSignal).

extension StopSignal {
    /// A stop signal routed from SIGINT and SIGTERM, for a training command: it stops after the
    /// current step with a checkpoint, and the same command resumes.
    static func forCommand() -> StopSignal {
        let stop = StopSignal()
        stop.installHandlers { _ in
            FileHandle.standardError.write(Data("\nambient: stopping after the current step (Ctrl-C again to quit at once)\n".utf8))
        }
        return stop
    }
}

/// The signal that arrived while outputs were being written (0: none).
nonisolated(unsafe) private var signalDuringWrites: Int32 = 0

/// Runs `body`, which writes a command's outputs, with SIGINT and SIGTERM deferred; when one
/// arrived meanwhile, throws `InterruptedAfterWriting` once every output is complete.
func writingOutputs<T>(_ body: () throws -> T) throws -> T {
    signalDuringWrites = 0
    let previousInt = signal(SIGINT) { signalDuringWrites = $0 }
    let previousTerm = signal(SIGTERM) { signalDuringWrites = $0 }
    defer {
        signal(SIGINT, previousInt)
        signal(SIGTERM, previousTerm)
    }
    let result = try body()
    if signalDuringWrites != 0 { throw InterruptedAfterWriting(signal: signalDuringWrites) }
    return result
}

/// A stop request that arrived while a command wrote its outputs: they were completed first.
struct InterruptedAfterWriting: Error, CustomStringConvertible {
    let signal: Int32
    var description: String {
        "interrupted (\(signal == SIGTERM ? "SIGTERM" : "Ctrl-C")) while writing; the outputs were completed before stopping"
    }
}

/// Writes `value` as the commands' JSON (pretty, sorted snake-case keys, a final newline)
/// atomically to `path`, with stop requests deferred like every other output.
func writeJSONOutput<T: Encodable>(_ value: T, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    let bytes = Array(try encoder.encode(value)) + [10]
    try writingOutputs { try FileBytes.writeAtomically(bytes, to: path) }
}
