import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Subnormal floats (below 1.2e-38 in Float) are flushed to zero in all of Ambient's compute.
///
/// Why: Intel cores handle arithmetic on subnormals in microcode, many times slower than normal
/// arithmetic. After a gradient-norm spike (325,617 at step 7,160 of the reference MLP on noisy
/// Fashion-MNIST, lr 1e-3) training produced subnormals and the step rate fell from about 1,240
/// to 150-500 samples/s for the rest of a 60-minute run. Resumed from that run's step-7,403
/// checkpoint: 278 and 283 samples/s keeping subnormals, 1,119 and 1,245 flushing them (two
/// alternated rounds; docs/benchmarks.md). Flushing is what ML frameworks do on CPUs; it changes
/// a result only where a subnormal would have appeared (the first 520 steps of that run are
/// bitwise the same either way), and the same way on every machine, so runs stay reproducible.
///
/// The mode is a per-thread register (MXCSR). The main thread is ours and keeps it for the whole
/// process (`applyToMainThread` at the start of `main`). Dispatch's pool threads are shared with
/// other work, so `Parallel.forEach` sets it for each iteration and restores the thread's
/// previous mode afterwards (`run`): a mode left behind on a pool thread would make the bits of
/// whatever ran there next depend on which thread it landed on (Swift's own Float16 conversion
/// reads subnormal halves as zero under it, for one). An OpenBLAS thread pool, used only when a
/// command runs BLAS with several threads, keeps the library's mode; training always uses one
/// BLAS thread per computation.
/// `AMBIENT_KEEP_DENORMALS=1` keeps subnormals, for measuring the difference.
public enum Denormals {
    /// Whether compute flushes subnormals (unless `AMBIENT_KEEP_DENORMALS=1`).
    public static let flushed: Bool = getenv("AMBIENT_KEEP_DENORMALS").map { String(cString: $0) } != "1"

    /// Puts the calling thread in the process's mode for good: for the main thread, at the
    /// start of `main`.
    public static func applyToMainThread() {
        _ = ambient_flush_denormals(flushed ? 1 : 0)
    }

    /// Runs `body` in the process's mode and restores the thread's previous mode. Cheap (one
    /// register read, and writes only when the mode changes), so it wraps every parallel task.
    @inline(__always)
    public static func run<R>(_ body: () throws -> R) rethrows -> R {
        let previous = ambient_flush_denormals(flushed ? 1 : 0)
        defer { ambient_restore_denormals(previous) }
        return try body()
    }

    /// Whether the calling thread currently flushes (for tests).
    public static var currentThreadFlushes: Bool {
        let previous = ambient_flush_denormals(1)
        ambient_restore_denormals(previous)
        return previous != 0
    }
}
