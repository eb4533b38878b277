import FileIO
import Foundation

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
