import FileIO
import Foundation
import TensorCore

/// The measured mapping from noise level to the crop size an optimal denoiser needs (SPEC O5
/// crops; Daras et al. 2025, Section 3.2 and Figs. 16-19 measure it with a trained network).
///
/// `mse[k][j]` bounds the mean squared error of the posterior mean of a pixel at `sigmas[k]` when
/// the denoiser sees only the `cropSizes[j]` x `cropSizes[j]` window around it (clipped to the
/// image; the size `max(H, W)` stands for the whole image): the smaller held-out error of two
/// estimators that see only that window, the empirical posterior mean (`mseKernel`) and the
/// linear (Wiener) one (`mseLinear`). Each is an upper bound of the optimal error. `crop[k]` is the smallest size
/// whose error is within `tolerance` (relative) of the best size at that sigma, made
/// non-decreasing in sigma (more noise never needs less context; the raw minimum is `rawCrop`).
public struct CropMap: Codable, Sendable, Equatable {
    public static let formatName = "ambient-crop-map"
    public static let formatVersion = 1

    public var format: String = CropMap.formatName
    public var formatVersion: Int = CropMap.formatVersion
    /// What the images were (database and held-out queries).
    public var source: String
    /// (C, H, W) of the images.
    public var imageShape: [Int]
    /// Ascending noise levels.
    public var sigmas: [Double]
    /// Ascending crop sizes; `max(H, W)` is the whole image.
    public var cropSizes: [Int]
    /// (sigmas, cropSizes): MSE of the centre pixel, averaged over queries, positions and
    /// channels; the element-wise minimum of the two estimators' when both were measured.
    public var mse: [[Double]]
    /// The empirical posterior mean's errors (`CropDenoisingMeasurement.measure`).
    public var mseKernel: [[Double]]?
    /// The linear estimator's errors (`CropDenoisingMeasurement.measureLinear`).
    public var mseLinear: [[Double]]?
    /// Relative tolerance of the rule `mse(s) <= (1 + tolerance) min_s' mse(s')`.
    public var tolerance: Double
    /// Per sigma: the smallest crop size within tolerance.
    public var rawCrop: [Int]
    /// Per sigma: `rawCrop` made non-decreasing (a running maximum); what `cropSize(at:)` uses.
    public var crop: [Int]
    /// Database images (training split), query images (held out), centre positions (row, col).
    public var database: Int
    public var queries: Int
    public var positions: [[Int]]
    public var seed: UInt64
    public var createdBy: String?

    public init(source: String, imageShape: [Int], sigmas: [Double], cropSizes: [Int], mse: [[Double]], tolerance: Double,
                rawCrop: [Int], crop: [Int], database: Int, queries: Int, positions: [[Int]], seed: UInt64, createdBy: String? = nil,
                mseKernel: [[Double]]? = nil, mseLinear: [[Double]]? = nil) {
        self.mseKernel = mseKernel
        self.mseLinear = mseLinear
        self.source = source
        self.imageShape = imageShape
        self.sigmas = sigmas
        self.cropSizes = cropSizes
        self.mse = mse
        self.tolerance = tolerance
        self.rawCrop = rawCrop
        self.crop = crop
        self.database = database
        self.queries = queries
        self.positions = positions
        self.seed = seed
        self.createdBy = createdBy
    }

    /// The crop size needed at noise level `sigma`: the entry of the smallest grid level
    /// `>= sigma` (the conservative side); above the grid, the whole image.
    public func cropSize(at sigma: Double) -> Int {
        guard let k = sigmas.firstIndex(where: { $0 >= sigma * (1 - 1e-9) }) else { return imageShape[1...].max()! }
        return crop[k]
    }

    /// Applies the tolerance rule to `mse`.
    public static func crops(mse: [[Double]], cropSizes: [Int], tolerance: Double) -> (raw: [Int], monotone: [Int]) {
        let raw = mse.map { row -> Int in
            let best = row.min()!
            return cropSizes[row.firstIndex { $0 <= (1 + tolerance) * best }!]
        }
        var running = 0
        return (raw, raw.map { running = max(running, $0); return running })
    }

    /// Checks the invariants a reader relies on; the message names what is wrong.
    public func validate() throws {
        func fail(_ s: String) -> ConfigurationError { ConfigurationError(message: s) }
        guard format == Self.formatName else { throw fail("format is \"\(format)\", expected \"\(Self.formatName)\"") }
        guard formatVersion == Self.formatVersion else { throw fail("format version \(formatVersion), supported: \(Self.formatVersion)") }
        guard imageShape.count == 3, imageShape.allSatisfy({ $0 >= 1 }) else { throw fail("image_shape \(imageShape) is not (C, H, W)") }
        guard !sigmas.isEmpty, zip(sigmas, sigmas.dropFirst()).allSatisfy({ $0 < $1 }), sigmas.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw fail("sigmas must be positive and strictly ascending")
        }
        guard !cropSizes.isEmpty, zip(cropSizes, cropSizes.dropFirst()).allSatisfy({ $0 < $1 }), cropSizes.first! >= 1 else {
            throw fail("crop_sizes must be >= 1 and strictly ascending")
        }
        for (name, table) in [("mse", mse), ("mse_kernel", mseKernel ?? mse), ("mse_linear", mseLinear ?? mse)] {
            guard table.count == sigmas.count, table.allSatisfy({ $0.count == cropSizes.count && $0.allSatisfy { $0 >= 0 && $0.isFinite } }) else {
                throw fail("\(name) must have one row of \(cropSizes.count) finite values >= 0 per sigma (\(sigmas.count) rows)")
            }
        }
        guard crop.count == sigmas.count, rawCrop.count == sigmas.count, crop.allSatisfy({ cropSizes.contains($0) }),
              zip(crop, crop.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw fail("crop must hold one non-decreasing crop size from crop_sizes per sigma")
        }
    }

    public static func read(_ path: String) throws -> CropMap {
        let bytes: [UInt8]
        do { bytes = try FileBytes.contents(of: path) } catch { throw ConfigurationError(message: "\(path): cannot read (\(error))") }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let map: CropMap
        do { map = try decoder.decode(CropMap.self, from: Data(bytes)) } catch {
            throw ConfigurationError(message: "\(path): not a crop map (\(error))")
        }
        do { try map.validate() } catch let e as ConfigurationError { throw ConfigurationError(message: "\(path): \(e.message)") }
        return map
    }

    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return Array(try encoder.encode(self)) + [10]
    }
}

/// Measures `CropMap.mse` without a network: the denoiser restricted to a window is the
/// posterior mean under the empirical distribution of the database's windows at the same
/// position (SPEC, Oracles: "Finite dataset"),
///
///     E[x_c | y_W] = sum_i w_i x_i,c,   w_i ∝ exp(-||y_W - x_i,W||^2 / (2 sigma^2)),
///
/// with y = x_query + sigma z the noisy held-out image and W the window. `-||y - x_i||^2` is
/// `2 y.x_i - ||x_i||^2` up to a per-query constant, and `y.x_i = x.x_i + sigma z.x_i`: two
/// Gram matrices per window serve every sigma. Pixels are ordered by ring (Chebyshev distance
/// from the centre), so each window adds one ring to running Gram matrices (one DGEMM per ring).
///
/// Bias: the database is finite. At low sigma and large windows the nearest database window is
/// far from the query compared with sigma, the weights collapse onto it and the estimate copies
/// its centre pixel; the error then grows with the window although the true posterior mean's
/// cannot. The measured curves are upper bounds that are tight for small windows and high noise.
/// z of query q is fixed (purpose evaluation, step 2, sample q), so all cells are paired.
public struct CropDenoisingMeasurement: Sendable {
    public var sigmas: [Double]
    public var cropSizes: [Int]
    public var positions: [(row: Int, col: Int)]
    public var seed: UInt64

    public init(sigmas: [Double], cropSizes: [Int], positions: [(row: Int, col: Int)], seed: UInt64) {
        precondition(!sigmas.isEmpty && !cropSizes.isEmpty && !positions.isEmpty)
        self.sigmas = sigmas
        self.cropSizes = cropSizes
        self.positions = positions
        self.seed = seed
    }

    /// Odd sizes 1, 3, ... below the image side, then the whole image.
    public static func defaultCropSizes(side: Int) -> [Int] { Array(stride(from: 1, to: side, by: 2)) + [side] }

    /// A `k` x `k` grid of centre positions at fractions (i + 1)/(k + 1) of the image.
    public static func gridPositions(_ k: Int, height: Int, width: Int) -> [(row: Int, col: Int)] {
        (0..<k).flatMap { i in (0..<k).map { j in ((i + 1) * height / (k + 1), (j + 1) * width / (k + 1)) } }
    }

    /// The rings (Chebyshev distance from the centre) a crop of size `s` covers on an image
    /// with the larger side `side`: all of them for the whole image.
    func lastRing(_ s: Int, side: Int) -> Int { s >= side ? Int.max : (s - 1) / 2 }

    /// mse[k][j] over `queries` (Q, C, H, W) against `database` (M, C, H, W).
    public func measure(database: Tensor<Float>, queries: Tensor<Float>, progress: ((Int, Int) -> Void)? = nil) -> [[Double]] {
        precondition(database.rank == 4 && queries.rank == 4 && Array(database.shape.dropFirst()) == Array(queries.shape.dropFirst()))
        let (c, h, w) = (database.shape[1], database.shape[2], database.shape[3])
        let m = database.rows, q = queries.rows, d = c * h * w, side = max(h, w)
        let noise: [Double] = (0..<q).flatMap { i -> [Double] in
            var rng = CounterRNG(seed: seed, purpose: .evaluation, step: 2, sample: i)
            return (0..<d).map { _ in rng.normal() }
        }
        var sum = [[Double]](repeating: [Double](repeating: 0, count: cropSizes.count), count: sigmas.count)
        var gx = [Double](repeating: 0, count: q * m), gz = gx
        var xdb = [Double](repeating: 0, count: m * d), xq = [Double](repeating: 0, count: q * d), zq = xq
        var centre = [Double](repeating: 0, count: m * c), truth = [Double](repeating: 0, count: q * c)
        var normDb = [Double](repeating: 0, count: m)
        var logits = [Double](repeating: 0, count: m)
        for (pi, p) in positions.enumerated() {
            // Pixels ordered by ring (channels innermost); rings[k] is the ring of the k-th pixel.
            let pixels = (0..<(h * w)).map { ($0 / w, $0 % w) }
                .sorted { (max(abs($0.0 - p.row), abs($0.1 - p.col)), $0.0, $0.1) < (max(abs($1.0 - p.row), abs($1.1 - p.col)), $1.0, $1.1) }
            let order = pixels.flatMap { px in (0..<c).map { ch in (ch * h + px.0) * w + px.1 } }
            let rings = pixels.map { max(abs($0.0 - p.row), abs($0.1 - p.col)) }
            database.storage.withUnsafeBufferPointer { src in
                for i in 0..<m { for (k, o) in order.enumerated() { xdb[i * d + k] = Double(src[i * d + o]) } }
            }
            queries.storage.withUnsafeBufferPointer { src in
                for i in 0..<q { for (k, o) in order.enumerated() { xq[i * d + k] = Double(src[i * d + o]); zq[i * d + k] = noise[i * d + o] } }
            }
            for i in 0..<m { for ch in 0..<c { centre[i * c + ch] = xdb[i * d + ch] } }
            for i in 0..<q { for ch in 0..<c { truth[i * c + ch] = xq[i * d + ch] } }
            for i in 0..<(q * m) { gx[i] = 0; gz[i] = 0 }
            for i in 0..<m { normDb[i] = 0 }
            var done = 0   // values already in the Gram matrices
            for (j, s) in cropSizes.enumerated() {
                let last = lastRing(s, side: side)
                let end = c * (rings.lastIndex { $0 <= last }! + 1)
                if end > done {
                    let k = end - done
                    xdb.withUnsafeBufferPointer { b in
                        xq.withUnsafeBufferPointer { a in gx.withUnsafeMutableBufferPointer { g in
                            Double.gemm(transA: false, transB: true, m: q, n: m, k: k, alpha: 1, a: a.baseAddress! + done, lda: d,
                                        b: b.baseAddress! + done, ldb: d, beta: 1, c: g.baseAddress!, ldc: m)
                        } }
                        zq.withUnsafeBufferPointer { a in gz.withUnsafeMutableBufferPointer { g in
                            Double.gemm(transA: false, transB: true, m: q, n: m, k: k, alpha: 1, a: a.baseAddress! + done, lda: d,
                                        b: b.baseAddress! + done, ldb: d, beta: 1, c: g.baseAddress!, ldc: m)
                        } }
                        for i in 0..<m { for v in done..<end { normDb[i] += b[i * d + v] * b[i * d + v] } }
                    }
                    done = end
                }
                for (ks, sigma) in sigmas.enumerated() {
                    let err = Self.posteriorMeanError(gx: gx, gz: gz, normDb: normDb, centre: centre, truth: truth, logits: &logits,
                                                      sigma: sigma, queries: q, database: m, channels: c)
                    sum[ks][j] += err / Double(q * c)
                }
                progress?(pi * cropSizes.count + j + 1, positions.count * cropSizes.count)
            }
        }
        return sum.map { row in row.map { $0 / Double(positions.count) } }
    }

    /// mse[k][j] of the linear (Wiener) estimate from the window,
    /// `mu_c + Sigma_cW (Sigma_WW + sigma^2 I)^-1 (y_W - mu_W)`, with the mean and covariance of
    /// the database, on the same queries and noise as `measure`. The best linear estimator does
    /// not collapse onto database points: its error can only fall as the window grows (up to
    /// the covariance's estimation error), which makes it the better bound for large windows at
    /// low noise, and the worse one wherever the posterior mean is far from linear.
    public func measureLinear(database: Tensor<Float>, queries: Tensor<Float>) -> [[Double]] {
        precondition(database.rank == 4 && queries.rank == 4 && Array(database.shape.dropFirst()) == Array(queries.shape.dropFirst()))
        let (c, h, w) = (database.shape[1], database.shape[2], database.shape[3])
        let m = database.rows, q = queries.rows, d = c * h * w, side = max(h, w)
        var mu = [Double](repeating: 0, count: d)
        database.storage.withUnsafeBufferPointer { src in
            for i in 0..<m { for v in 0..<d { mu[v] += Double(src[i * d + v]) } }
        }
        for v in 0..<d { mu[v] /= Double(m) }
        // Covariance (d, d), accumulated over chunks of centred rows.
        var cov = [Double](repeating: 0, count: d * d)
        let chunk = 1024
        var block = [Double](repeating: 0, count: chunk * d)
        var start = 0
        while start < m {
            let rows = min(chunk, m - start)
            database.storage.withUnsafeBufferPointer { src in
                for r in 0..<rows { for v in 0..<d { block[r * d + v] = Double(src[(start + r) * d + v]) - mu[v] } }
            }
            block.withUnsafeBufferPointer { b in cov.withUnsafeMutableBufferPointer { cp in
                Double.gemm(transA: true, transB: false, m: d, n: d, k: rows, alpha: 1 / Double(m - 1), a: b.baseAddress!, lda: d,
                            b: b.baseAddress!, ldb: d, beta: 1, c: cp.baseAddress!, ldc: d)
            } }
            start += rows
        }
        let noise: [Double] = (0..<q).flatMap { i -> [Double] in
            var rng = CounterRNG(seed: seed, purpose: .evaluation, step: 2, sample: i)
            return (0..<d).map { _ in rng.normal() }
        }
        var sum = [[Double]](repeating: [Double](repeating: 0, count: cropSizes.count), count: sigmas.count)
        for p in positions {
            for (j, s) in cropSizes.enumerated() {
                let last = lastRing(s, side: side)
                let window = (0..<d).filter { v in
                    let pixel = v % (h * w)
                    return Swift.max(abs(pixel / w - p.row), abs(pixel % w - p.col)) <= last
                }
                let k = window.count
                var sww = [Double](repeating: 0, count: k * k)
                for (a, va) in window.enumerated() { for (b, vb) in window.enumerated() { sww[a * k + b] = cov[va * d + vb] } }
                let (lambda, vectors) = LAPACK.symmetricEigen(sww, n: k)
                // Queries and their noise on the window, centred, in the eigenbasis: (q, k).
                var dq = [Double](repeating: 0, count: q * k), zq = dq
                queries.storage.withUnsafeBufferPointer { src in
                    for i in 0..<q { for (a, v) in window.enumerated() { dq[i * k + a] = Double(src[i * d + v]) - mu[v]; zq[i * k + a] = noise[i * d + v] } }
                }
                var u = [Double](repeating: 0, count: q * k), t = u
                vectors.withUnsafeBufferPointer { vp in
                    dq.withUnsafeBufferPointer { a in u.withUnsafeMutableBufferPointer { o in
                        Double.gemm(transA: false, transB: true, m: q, n: k, k: k, alpha: 1, a: a.baseAddress!, lda: k, b: vp.baseAddress!, ldb: k,
                                    beta: 0, c: o.baseAddress!, ldc: k)
                    } }
                    zq.withUnsafeBufferPointer { a in t.withUnsafeMutableBufferPointer { o in
                        Double.gemm(transA: false, transB: true, m: q, n: k, k: k, alpha: 1, a: a.baseAddress!, lda: k, b: vp.baseAddress!, ldb: k,
                                    beta: 0, c: o.baseAddress!, ldc: k)
                    } }
                }
                for ch in 0..<c {
                    let centre = (ch * h + p.row) * w + p.col
                    // V Sigma_Wc: the centre's covariance with the window in the eigenbasis.
                    let vb = (0..<k).map { e in (0..<k).reduce(0.0) { $0 + vectors[e * k + $1] * cov[window[$1] * d + centre] } }
                    for (ks, sigma) in sigmas.enumerated() {
                        let gain = (0..<k).map { vb[$0] / (Swift.max(lambda[$0], 0) + sigma * sigma) }
                        var err = 0.0
                        queries.storage.withUnsafeBufferPointer { src in
                            for i in 0..<q {
                                var est = mu[centre]
                                for e in 0..<k { est += gain[e] * (u[i * k + e] + sigma * t[i * k + e]) }
                                let diff = est - Double(src[i * d + centre])
                                err += diff * diff
                            }
                        }
                        sum[ks][j] += err / Double(q * c)
                    }
                }
            }
        }
        return sum.map { row in row.map { $0 / Double(positions.count) } }
    }

    /// Sum over queries and channels of the squared error of the softmax-weighted centre
    /// values; logits below the maximum minus 40 (weight < 4e-18) are skipped.
    static func posteriorMeanError(gx: [Double], gz: [Double], normDb: [Double], centre: [Double], truth: [Double],
                                   logits: inout [Double], sigma: Double, queries q: Int, database m: Int, channels c: Int) -> Double {
        let scale = 1 / (2 * sigma * sigma)
        var err = 0.0
        var estimate = [Double](repeating: 0, count: c)
        gx.withUnsafeBufferPointer { gx in gz.withUnsafeBufferPointer { gz in normDb.withUnsafeBufferPointer { nx in
            centre.withUnsafeBufferPointer { ctr in logits.withUnsafeMutableBufferPointer { lg in estimate.withUnsafeMutableBufferPointer { est in
                for qi in 0..<q {
                    let rowX = gx.baseAddress! + qi * m, rowZ = gz.baseAddress! + qi * m
                    var top = -Double.infinity
                    for i in 0..<m {
                        let l = (2 * (rowX[i] + sigma * rowZ[i]) - nx[i]) * scale
                        lg[i] = l
                        top = Swift.max(top, l)
                    }
                    var total = 0.0
                    for ch in 0..<c { est[ch] = 0 }
                    for i in 0..<m where lg[i] > top - 40 {
                        let e = Foundation.exp(lg[i] - top)
                        total += e
                        for ch in 0..<c { est[ch] += e * ctr[i * c + ch] }
                    }
                    for ch in 0..<c {
                        let diff = est[ch] / total - truth[qi * c + ch]
                        err += diff * diff
                    }
                }
            } } }
        } } }
        return err
    }
}
