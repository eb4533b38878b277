import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A timeline of training steps across the processes of one machine, for finding where a step's
/// time goes (scripts/step-timeline reads it; docs/operations.md, "Where a step's time goes").
///
/// Off unless `AMBIENT_TRACE` names a file. Each event appends one JSON line,
/// `{"t": <CLOCK_MONOTONIC seconds>, "pid": <pid>, "role": "...", "event": "...", "step": N}`, with
/// one `write` on a descriptor opened with O_APPEND, so the coordinator and the workers of a local
/// cluster can share the file and their times compare (the clock is the machine's, not the process's).
/// A few events per step and process: the cost is nothing against a step.
public enum StepTrace {
    private static let descriptor: Int32? = {
        guard let path = ProcessInfo.processInfo.environment["AMBIENT_TRACE"], !path.isEmpty else { return nil }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        return fd >= 0 ? fd : nil
    }()

    /// Records `event` of `step` for `role` (e.g. "coordinator", "worker 2").
    public static func mark(_ role: @autoclosure () -> String, _ event: StaticString, step: Int) {
        guard let fd = descriptor else { return }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let t = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        let line = "{\"t\":\(String(format: "%.6f", t)),\"pid\":\(getpid()),\"role\":\"\(role())\",\"event\":\"\(event)\",\"step\":\(step)}\n"
        line.utf8CString.withUnsafeBufferPointer { buf in
            _ = write(fd, buf.baseAddress, buf.count - 1)
        }
    }
}
