import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS thread control and the naive matmul reference that the BLAS path is tested against.
public enum BLAS {
    /// Sets OpenBLAS's thread count for this process. Workers set it explicitly (the
    /// default, one thread per core, oversubscribes a machine running several workers).
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(max(1, n)))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// OpenBLAS's build configuration and the core it chose (for benchmark reports).
    public static var configuration: String {
        let config = openblas_get_config().map { String(cString: $0) } ?? "?"
        let core = openblas_get_corename().map { String(cString: $0) } ?? "?"
        return "\(config) core=\(core)"
    }

    /// Applies `OPENBLAS_NUM_THREADS` if set, otherwise `fallback` threads.
    public static func configureThreads(fallback: Int) {
        if let env = getenv("OPENBLAS_NUM_THREADS"), let n = Int(String(cString: env)), n > 0 {
            setThreads(n)
        } else {
            setThreads(fallback)
        }
    }
}

/// LAPACK through OpenBLAS.
public enum LAPACK {
    /// Eigen-decomposition of the symmetric n x n matrix `a` (row-major): eigenvalues ascending,
    /// and row i of the returned vectors is the unit eigenvector of eigenvalue i (`dsyevd`).
    /// `SymmetricEigen` is the slow reference it is tested against.
    public static func symmetricEigen(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        precondition(a.count == n * n && n >= 1)
        // Row-major symmetric = column-major symmetric; the eigenvectors come back as columns of
        // a column-major matrix, i.e. rows of a row-major one.
        var m = a, w = [Double](repeating: 0, count: n)
        var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "U"))
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var workSize = 0.0, iworkSize: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, &m, &lda, &w, &workSize, &lwork, &iworkSize, &liwork, &info)
        lwork = Int32(workSize)
        liwork = iworkSize
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &m, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        precondition(info == 0, "dsyevd failed (info \(info))")
        return (w, m)
    }
}

/// Reference matrix product, row-major, `C = alpha op(A) op(B) + beta C`, accumulated in
/// Double. Slow and obviously correct: the oracle for `Scalar.gemm`.
public func naiveGemm<T: Scalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                 alpha: T, a: UnsafePointer<T>, lda: Int,
                                 b: UnsafePointer<T>, ldb: Int,
                                 beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    for i in 0..<m {
        for j in 0..<n {
            var acc = 0.0
            for p in 0..<k {
                let aip = transA ? a[p * lda + i] : a[i * lda + p]
                let bpj = transB ? b[j * ldb + p] : b[p * ldb + j]
                acc += Double(aip) * Double(bpj)
            }
            let old: T = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = alpha * T(acc) + old
        }
    }
}
