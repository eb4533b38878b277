import FileIO
import Foundation
import TensorCore

/// Checkpoints of a run in a (shared) directory:
///
///     DIR/ckpt-00001000.ambient   one file per checkpoint (CheckpointFormat), step in the name
///     DIR/LATEST                  name of the newest committed checkpoint
///
/// A checkpoint is written to a temporary name, fsynced, renamed and the directory fsynced
/// (FileBytes.writeAtomically); only then is LATEST updated and are checkpoints beyond the
/// newest `keep` deleted, so the previous one always survives a crash mid-write.
public final class CheckpointStore: @unchecked Sendable {
    public let directory: String
    public let keep: Int

    public init(directory: String, keep: Int = 3) throws {
        precondition(keep >= 1)
        self.directory = directory
        self.keep = keep
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CheckpointStoreError("cannot create checkpoint directory \(directory): \(error.localizedDescription)")
        }
    }

    public static func fileName(step: Int) -> String { String(format: "ckpt-%08d.ambient", step) }

    /// Writes a checkpoint of `step` and returns its path.
    @discardableResult
    public func write(_ snapshot: StateSnapshot, step: Int) throws -> String {
        let name = Self.fileName(step: step)
        let path = directory + "/" + name
        do {
            try FileBytes.writeAtomically(CheckpointFormat.encode(snapshot), to: path)
            try FileBytes.writeAtomically(Array((name + "\n").utf8), to: directory + "/LATEST")
        } catch {
            throw CheckpointStoreError("checkpoint of step \(step) not written: \(error)")
        }
        prune()
        return path
    }

    /// Checkpoint files, newest first.
    public func list() -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { n -> (Int, String)? in
            guard n.hasPrefix("ckpt-"), n.hasSuffix(".ambient"),
                  let s = Int(n.dropFirst(5).dropLast(8)) else { return nil }
            return (s, directory + "/" + n)
        }.sorted { $0.0 > $1.0 }
    }

    /// The newest checkpoint that verifies: LATEST first, then every file newest first.
    /// Corrupt or truncated files are reported through `skipped` and passed over.
    public func loadNewest(skipped: (String) -> Void = { _ in }) -> (snapshot: StateSnapshot, step: Int, path: String)? {
        var candidates = list()
        if let latest = try? FileBytes.contents(of: directory + "/LATEST") {
            let name = String(decoding: latest, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if let i = candidates.firstIndex(where: { $0.path.hasSuffix("/" + name) }) {
                candidates.insert(candidates.remove(at: i), at: 0)
            }
        }
        for (step, path) in candidates {
            do {
                let bytes = try FileBytes.contents(of: path)
                let snap = try CheckpointFormat.decode(bytes, name: path)
                return (snap, step, path)
            } catch {
                skipped("\(error)")
            }
        }
        return nil
    }

    /// Deletes the temporary files of checkpoint writes that never finished (`ckpt-*.partial.*`,
    /// `LATEST.partial.*`: the writer was killed between creating and renaming them; each can be
    /// as large as a checkpoint) and returns their names. Call it only while no other process
    /// writes to the directory, i.e. while holding the `CoordinatorLock`.
    @discardableResult
    public func removeInterruptedWrites() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let stale = names.filter { ($0.hasPrefix("ckpt-") || $0.hasPrefix("LATEST")) && $0.contains(".partial.") }.sorted()
        return stale.filter { unlink(directory + "/" + $0) == 0 }
    }

    private func prune() {
        for (_, path) in list().dropFirst(keep) { unlink(path) }
    }
}

/// Why the store could not create its directory or commit a checkpoint (the reason names the
/// file and what to do). A bad checkpoint *file* is a `CheckpointError`.
public struct CheckpointStoreError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
