import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernel set ("core") a process runs, and the repair for CPUs that OpenBLAS
/// does not recognise.
///
/// Debian's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels from the CPU's family
/// and model numbers when the library loads. On a CPU newer than its tables (seen here: an Intel
/// Xeon of family 6, model 207, with AVX-512) it falls back to **Prescott**, its SSE3 kernels:
/// `bench kernels --threads 1` measured sgemm 2048^3 at 24.5 GFLOPS with that choice against
/// 121.8 with `OPENBLAS_CORETYPE=SkylakeX` on the same machine (medians of five alternated
/// runs), so every GEMM of training would run 5x slower, silently. OpenBLAS reads the choice once,
/// before `main`, from `OPENBLAS_CORETYPE`; so `ambient` and `bench` start again with that
/// variable set when OpenBLAS fell back to a core without AVX on a CPU that has AVX2 or AVX-512.
/// A value the user set is never overridden (pin it on heterogeneous clusters:
/// docs/operations.md).
public enum BLASCore {
    /// The kernel set OpenBLAS chose for this process ("Prescott", "Haswell", "SkylakeX", ...).
    public static var name: String {
        openblas_get_corename().map { String(cString: $0) } ?? "unknown"
    }

    /// The widest vector level this CPU supports: 3 AVX-512, 2 AVX2 + FMA, 1 AVX, 0 older/other.
    public static var cpuVectorLevel: Int { Int(ambient_cpu_vector_level()) }

    /// The vector level of an OpenBLAS x86-64 core name; nil for names this table does not
    /// know (other architectures, newer cores), which are left alone.
    public static func vectorLevel(ofCore core: String) -> Int? {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": 3
        case "haswell", "zen", "excavator": 2
        case "sandybridge", "bulldozer", "piledriver", "steamroller": 1
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "nano", "katmai",
             "coppermine", "northwood", "banias", "athlon", "opteron", "opteron_sse3", "barcelona",
             "bobcat", "unknown": 0
        default: nil
        }
    }

    /// The core to force, or nil to keep OpenBLAS's own choice: only when the user has not set
    /// `OPENBLAS_CORETYPE` and OpenBLAS fell back to a core without AVX on a CPU that has it.
    /// (A choice of an AVX core is OpenBLAS's own judgement, Haswell kernels on some AVX-512
    /// CPUs for instance, and is kept.)
    public static func preferredCore(detected: String, cpuLevel: Int, userSetting: String?) -> String? {
        if let userSetting, !userSetting.isEmpty { return nil }
        guard vectorLevel(ofCore: detected) == 0, cpuLevel > 0 else { return nil }
        switch cpuLevel {
        case 3: return "SkylakeX"
        case 2: return "Haswell"
        case 1: return "Sandybridge"
        default: return nil
        }
    }

    /// Call first thing in `main`: when OpenBLAS fell back to an older core than this CPU
    /// supports, sets `OPENBLAS_CORETYPE` and executes this program again with the same
    /// arguments (same process id, so signals and waits of a parent still apply). Children
    /// inherit the variable and keep the choice. Returns normally when nothing needs to change
    /// or the exec fails (then training is slow, not wrong).
    public static func restartWithPreferredCoreIfNeeded() {
        #if os(Linux)
        let setting = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        guard let core = preferredCore(detected: name, cpuLevel: cpuVectorLevel, userSetting: setting) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when exec failed: undo, so children are not pinned to a choice we did not make.
        unsetenv("OPENBLAS_CORETYPE")
        #endif
    }
}
