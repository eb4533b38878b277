import Foundation
import TensorCore
import Wire

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
            throw ClusterError("cannot create checkpoint directory \(directory): \(error.localizedDescription)")
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
            throw ClusterError("checkpoint of step \(step) not written: \(error)")
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

/// An exclusive lock on a run's checkpoint directory, held by the running coordinator
/// (flock: released by the kernel when the process dies, even by kill -9). Each holder gets
/// the next incarnation number, which goes into every message header so workers notice a
/// restarted coordinator.
public final class CoordinatorLock: @unchecked Sendable {
    public let incarnation: UInt64
    private var fd: Int32

    public init(directory: String) throws {
        let path = directory + "/coordinator.lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ClusterError("cannot open \(path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = String(decoding: (try? FileBytes.contents(of: path)) ?? [], as: UTF8.self)
                .replacingOccurrences(of: "\n", with: ", ")
            close(fd)
            throw ClusterError("another coordinator holds \(path) (\(holder)); two coordinators must never write the same run: stop the other one first")
        }
        var previous: UInt64 = 0
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(fd, &buf, buf.count)
        if n > 0 {
            let text = String(decoding: buf[0..<n], as: UTF8.self)
            for line in text.split(separator: "\n") where line.hasPrefix("incarnation ") {
                previous = UInt64(line.dropFirst(12)) ?? 0
            }
        }
        incarnation = previous + 1
        let text = "incarnation \(incarnation)\npid \(getpid())\nhost \(ProcessInfo.processInfo.hostName)\n"
        _ = ftruncate(fd, 0)
        _ = lseek(fd, 0, SEEK_SET)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        _ = fsync(fd)
    }

    public func release() {
        if fd >= 0 {
            flock(fd, LOCK_UN)
            close(fd)
            fd = -1
        }
    }

    deinit { release() }
}
