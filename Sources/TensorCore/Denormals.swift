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
/// The mode is a per-thread register (MXCSR), so it is set where computation runs: at the start
/// of `main` for the main thread, and by `Parallel.forEach` on every thread it computes on. (An
/// OpenBLAS thread pool, used only when a command runs BLAS with several threads, keeps the
/// library's mode; training always uses one BLAS thread per computation.)
/// `AMBIENT_KEEP_DENORMALS=1` keeps subnormals, for measuring the difference.
public enum Denormals {
    /// Whether compute threads flush subnormals (unless `AMBIENT_KEEP_DENORMALS=1`).
    public static let flushed: Bool = getenv("AMBIENT_KEEP_DENORMALS").map { String(cString: $0) } != "1"

    /// Puts the calling thread in the process's mode. Cheap (reads one register; writes it
    /// only when it differs), so it can run at the start of every parallel task.
    @inline(__always)
    public static func applyToCurrentThread() {
        _ = ambient_flush_denormals(flushed ? 1 : 0)
    }

    /// Whether the calling thread currently flushes (for tests).
    public static var currentThreadFlushes: Bool {
        let was = ambient_flush_denormals(1)
        _ = ambient_flush_denormals(was)
        return was != 0
    }
}
