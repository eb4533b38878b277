#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file reads and crash-safe whole-file writes for Wire formats, with errors that name the file.
/// (Datasets has the same helper over its own error type; Wire does not depend on Datasets.)
enum FileBytes {
    /// The bytes of the file at `path`.
    static func contents(of path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SafetensorsError.cannotRead(path: path, reason: lastErrorText())
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw SafetensorsError.cannotRead(path: path, reason: lastErrorText())
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw SafetensorsError.cannotRead(path: path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SafetensorsError.cannotRead(path: path, reason: lastErrorText())
            }
            if n == 0 { break }  // the file shrank while we read it
            done += n
        }
        return done == size ? bytes : Array(bytes[0..<done])
    }

    /// Writes `bytes` to `path` through a temporary sibling, fsync and rename, so that a crash
    /// leaves either the old file or the complete new one, never a partial file.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        var template = Array("\(path).partial.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SafetensorsError.cannotWrite(path: path, reason: lastErrorText()) }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var closed = false
        do {
            defer { if !closed { close(fd) } }
            guard fchmod(fd, 0o644) == 0 else { throw SafetensorsError.cannotWrite(path: temporary, reason: lastErrorText()) }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw SafetensorsError.cannotWrite(path: temporary, reason: lastErrorText())
                }
                done += n
            }
            guard fsync(fd) == 0 else { throw SafetensorsError.cannotWrite(path: temporary, reason: lastErrorText()) }
            closed = true
            guard close(fd) == 0 else { throw SafetensorsError.cannotWrite(path: temporary, reason: lastErrorText()) }
            guard rename(temporary, path) == 0 else { throw SafetensorsError.cannotWrite(path: path, reason: lastErrorText()) }
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

    static func lastErrorText() -> String {
        String(cString: strerror(errno))
    }
}
