import Dispatch

/// Data-parallel helpers for the compute threads.
///
/// Determinism rule of the project: OpenBLAS's own threading changes the bits of a product
/// (it splits work differently for different thread counts), so gradients are always computed
/// with one BLAS thread per computation, and parallelism comes from computing different shards
/// at once, or from splitting elementwise loops into ranges (whose results do not depend on the
/// split). Either way the bits do not depend on the number of threads.
public enum Parallel {
    /// Runs `body(i)` for every i in 0..<count, concurrently, and returns when all are done.
    /// Every iteration runs with the process's handling of subnormal floats (`Denormals`),
    /// whichever thread it lands on, and leaves that thread's mode as it found it.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 {
            if count == 1 { Denormals.run { body(0) } }
            return
        }
        withoutActuallyEscaping(body) { b in
            let box = UncheckedBox(b)
            DispatchQueue.concurrentPerform(iterations: count) { i in
                Denormals.run { box.value(i) }
            }
        }
    }

    /// `0..<n` cut into `parts` contiguous ranges of nearly equal size (empty ones dropped).
    public static func ranges(_ n: Int, parts: Int) -> [Range<Int>] {
        let p = max(1, min(parts, n))
        return (0..<p).map { (n * $0 / p)..<(n * ($0 + 1) / p) }.filter { !$0.isEmpty }
    }

    /// Runs `body(range)` over `0..<n` split into `threads` ranges, concurrently. For
    /// elementwise work only (each index written by exactly one range).
    public static func forRanges(_ n: Int, threads: Int, minimumPerThread: Int = 65_536, _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(threads, n / max(minimumPerThread, 1)))
        let rs = ranges(n, parts: parts)
        forEach(rs.count) { body(rs[$0]) }
    }
}

/// Hands a non-Sendable closure to concurrentPerform; callers guarantee the iterations touch
/// disjoint data.
private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
