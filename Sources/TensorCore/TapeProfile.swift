#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Time spent in each tape primitive, forward and backward, summed over the steps a tape ran
/// while `tape.profile` was set. Off (nil) by default: then the tape pays one nil check per
/// primitive call.
public final class TapeProfile {
    public struct Entry: Sendable {
        public var calls = 0
        public var seconds = 0.0
    }

    public enum Clock: Sendable {
        /// Elapsed time (includes time the process waited for a core).
        case wall
        /// CPU time of the calling thread: the work itself, whatever else the machine runs,
        /// but without the time of other threads (use with one BLAS thread).
        case threadCPU
    }

    public let clock: Clock
    public private(set) var forward: [String: Entry] = [:]
    public private(set) var backward: [String: Entry] = [:]

    public init(clock: Clock = .wall) {
        self.clock = clock
    }

    /// The profile's clock in nanoseconds.
    @inline(__always)
    func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(clock == .wall ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    func add(_ name: String, backward isBackward: Bool, since start: UInt64) {
        let dt = Double(now() &- start) / 1e9
        if isBackward {
            backward[name, default: Entry()].calls += 1
            backward[name, default: Entry()].seconds += dt
        } else {
            forward[name, default: Entry()].calls += 1
            forward[name, default: Entry()].seconds += dt
        }
    }

    public func reset() {
        forward.removeAll()
        backward.removeAll()
    }

    public var totalSeconds: Double {
        forward.values.reduce(0) { $0 + $1.seconds } + backward.values.reduce(0) { $0 + $1.seconds }
    }

    /// Every primitive seen, most expensive (forward + backward) first.
    public var primitivesByCost: [(name: String, forward: Entry, backward: Entry)] {
        Set(forward.keys).union(backward.keys)
            .map { (name: $0, forward: forward[$0] ?? Entry(), backward: backward[$0] ?? Entry()) }
            .sorted { $0.forward.seconds + $0.backward.seconds > $1.forward.seconds + $1.backward.seconds }
    }
}
