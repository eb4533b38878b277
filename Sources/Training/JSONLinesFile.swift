import FileIO
import Foundation
import TensorCore

/// An append-only file of JSON objects, one per line: metrics.jsonl and events.jsonl
/// (docs/formats.md). Created when missing, appended to otherwise (a resumed run continues it);
/// appends from several threads are serialised.
public final class JSONLinesFile: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var handle: FileHandle?

    public init(path: String) throws {
        self.path = path
        handle = try Self.open(path)
    }

    private static func open(_ path: String) throws -> FileHandle {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw TrainingError("cannot create \(path)") }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw TrainingError("cannot open \(path) for writing") }
        h.seekToEndOfFile()
        return h
    }

    /// Appends one line (`object` is a JSON object without the newline).
    public func append(_ object: String) throws {
        lock.lock(); defer { lock.unlock() }
        guard let handle else { throw TrainingError("\(path) is closed") }
        try handle.write(contentsOf: Data((object + "\n").utf8))
    }

    /// Keeps only the lines whose object satisfies `keep` (and drops lines that are not JSON
    /// objects), replacing the file atomically; appending continues after them.
    public func truncate(keeping keep: ([String: Any]) -> Bool) throws {
        lock.lock(); defer { lock.unlock() }
        try handle?.synchronize()
        let text = String(decoding: (try? FileBytes.contents(of: path)) ?? [], as: UTF8.self)
        let kept = text.split(separator: "\n").filter { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return false }
            return keep(object)
        }
        try FileBytes.writeAtomically(Array((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8), to: path)
        try handle?.close()
        handle = try Self.open(path)
    }

    /// Flushes to disk and closes; later appends fail.
    public func close() throws {
        lock.lock(); defer { lock.unlock() }
        guard let h = handle else { return }
        handle = nil
        try h.synchronize()
        try h.close()
    }
}
