#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that could not be read or written, with the system's reason.
public struct FileIOError: Error, CustomStringConvertible, Sendable {
    public enum Operation: String, Sendable { case read, write }
    public let operation: Operation
    public let path: String
    public let reason: String
    public var description: String {
        switch operation {
        case .read: return "cannot read \(path): \(reason). Check the path and its permissions."
        case .write: return "cannot write \(path): \(reason). Check that the directory exists, is writable and has free space."
        }
    }
}

/// Whole-file reads and crash-safe whole-file writes, with errors that name the file.
/// Every format of the project (NPY, safetensors, checkpoints, run files) writes through here.
public enum FileBytes {
    /// The bytes of the file at `path`.
    public static func contents(of path: String) throws(FileIOError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw FileIOError(operation: .read, path: path, reason: lastErrorText())
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw FileIOError(operation: .read, path: path, reason: lastErrorText())
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw FileIOError(operation: .read, path: path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: .read, path: path, reason: lastErrorText())
            }
            if n == 0 { break }  // the file shrank while we read it
            done += n
        }
        return done == size ? bytes : Array(bytes[0..<done])
    }

    /// Writes `bytes` to `path` through a temporary sibling, fsync and rename, so that a crash
    /// leaves either the old file or the complete new one, never a partial file. `mode` is set
    /// before the first byte is written (0o600 keeps a secret key private from the start).
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(FileIOError) {
        var template = Array("\(path).partial.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw FileIOError(operation: .write, path: path, reason: lastErrorText()) }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var closed = false
        do throws(FileIOError) {
            defer { if !closed { close(fd) } }
            guard fchmod(fd, mode) == 0 else { throw FileIOError(operation: .write, path: temporary, reason: lastErrorText()) }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileIOError(operation: .write, path: temporary, reason: lastErrorText())
                }
                done += n
            }
            guard fsync(fd) == 0 else { throw FileIOError(operation: .write, path: temporary, reason: lastErrorText()) }
            closed = true
            guard close(fd) == 0 else { throw FileIOError(operation: .write, path: temporary, reason: lastErrorText()) }
            guard rename(temporary, path) == 0 else { throw FileIOError(operation: .write, path: path, reason: lastErrorText()) }
        } catch {
            unlink(temporary)
            throw error
        }
        syncDirectory(of: path)
    }

    /// Makes the rename itself durable; failure here loses nothing already written, so it is ignored.
    private static func syncDirectory(of path: String) {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    public static func lastErrorText() -> String {
        String(cString: strerror(errno))
    }
}
