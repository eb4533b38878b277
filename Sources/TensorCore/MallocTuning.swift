#if canImport(Glibc)
import Glibc
#endif

/// Process-wide allocator settings for a trainer that allocates and frees megabyte-sized buffers
/// every step (gradient and update messages of a cluster run).
public enum MallocTuning {
    /// glibc serves allocations above its mmap threshold (128 KiB at first, at most 32 MiB) with
    /// fresh mappings and trims freed heap tops back to the kernel, so a 4 MB message buffer
    /// costs page faults and zeroing of every page on every step: 8% of all CPU in `clear_page`
    /// and 4% more in page-fault handling in a `perf record -a` of a 2-worker loopback step.
    /// Keeping buffers up to 32 MiB (glibc's maximum threshold) on the heap and not trimming lets
    /// freed blocks be reused.
    /// `AMBIENT_DEFAULT_MALLOC=1` keeps glibc's defaults (for measuring the difference).
    public static func keepLargeBuffers() {
        #if canImport(Glibc)
        if getenv("AMBIENT_DEFAULT_MALLOC").map({ String(cString: $0) }) == "1" { return }
        // mallopt is declared in <malloc.h>, which the Glibc module does not export.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3   // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        _ = mallopt(mmapThreshold, 32 << 20)   // the largest glibc accepts on 64-bit
        _ = mallopt(trimThreshold, Int32.max)
        #endif
    }
}
