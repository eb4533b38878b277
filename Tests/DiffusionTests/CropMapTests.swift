import Foundation
import TensorCore
import Testing
@testable import Diffusion

/// The crop-size -> sigma measurement (SPEC O5 crops): the ring-by-ring Gram matrices agree
/// with a naive posterior mean over explicitly cut windows; the rule and the file format.
@Suite struct CropMapTests {
    static func images(_ n: Int, side: Int, seed: UInt64) -> Tensor<Float> {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return Tensor(shape: [n, 1, side, side], storage: (0..<(n * side * side)).map { _ in Float(rng.uniform() * 2 - 1) })
    }

    /// The naive reference: for each query, position, window and sigma, the window's pixels,
    /// distances in a plain loop, the softmax-weighted centre pixel.
    static func naive(_ m: CropDenoisingMeasurement, database: Tensor<Float>, queries: Tensor<Float>) -> [[Double]] {
        let side = database.shape[2], d = side * side
        var out = [[Double]](repeating: [Double](repeating: 0, count: m.cropSizes.count), count: m.sigmas.count)
        for p in m.positions {
            for (j, s) in m.cropSizes.enumerated() {
                let r = s >= side ? side : (s - 1) / 2
                let window = (0..<d).filter { max(abs($0 / side - p.row), abs($0 % side - p.col)) <= r }
                for (k, sigma) in m.sigmas.enumerated() {
                    var err = 0.0
                    for q in 0..<queries.rows {
                        var rng = CounterRNG(seed: m.seed, purpose: .evaluation, step: 2, sample: q)
                        let z = (0..<d).map { _ in rng.normal() }
                        let y = (0..<d).map { Double(queries.storage[q * d + $0]) + sigma * z[$0] }
                        let logw = (0..<database.rows).map { i in
                            -window.reduce(0.0) { acc, v in let e = y[v] - Double(database.storage[i * d + v]); return acc + e * e } / (2 * sigma * sigma)
                        }
                        let top = logw.max()!
                        let w = logw.map { exp($0 - top) }
                        let c = p.row * side + p.col
                        let est = zip(w, 0..<database.rows).reduce(0.0) { $0 + $1.0 * Double(database.storage[$1.1 * d + c]) } / w.reduce(0, +)
                        err += (est - Double(queries.storage[q * d + c])) * (est - Double(queries.storage[q * d + c]))
                    }
                    out[k][j] += err / Double(queries.rows) / Double(m.positions.count)
                }
            }
        }
        return out
    }

    @Test func fastMeasurementMatchesNaiveReference() {
        let db = Self.images(40, side: 6, seed: 1), q = Self.images(5, side: 6, seed: 2)
        let m = CropDenoisingMeasurement(sigmas: [0.1, 0.5, 2], cropSizes: CropDenoisingMeasurement.defaultCropSizes(side: 6),
                                         positions: [(1, 1), (3, 4)], seed: 7)
        #expect(m.cropSizes == [1, 3, 5, 6])
        let fast = m.measure(database: db, queries: q), slow = Self.naive(m, database: db, queries: q)
        for k in 0..<3 { for j in 0..<4 {
            #expect(abs(fast[k][j] - slow[k][j]) <= 1e-9 + 1e-7 * slow[k][j], "sigma \(m.sigmas[k]) crop \(m.cropSizes[j]): \(fast[k][j]) vs \(slow[k][j])")
        } }
    }

    /// The naive linear reference: sample mean and covariance by loops, the Wiener gain by
    /// Gaussian elimination per window and sigma.
    static func naiveLinear(_ m: CropDenoisingMeasurement, database: Tensor<Float>, queries: Tensor<Float>) -> [[Double]] {
        let side = database.shape[2], d = side * side, n = database.rows
        let mu = (0..<d).map { v in (0..<n).reduce(0.0) { $0 + Double(database.storage[$1 * d + v]) } / Double(n) }
        func cov(_ a: Int, _ b: Int) -> Double {
            (0..<n).reduce(0.0) { $0 + (Double(database.storage[$1 * d + a]) - mu[a]) * (Double(database.storage[$1 * d + b]) - mu[b]) } / Double(n - 1)
        }
        var out = [[Double]](repeating: [Double](repeating: 0, count: m.cropSizes.count), count: m.sigmas.count)
        for p in m.positions {
            let c = p.row * side + p.col
            for (j, s) in m.cropSizes.enumerated() {
                let r = s >= side ? side : (s - 1) / 2
                let window = (0..<d).filter { max(abs($0 / side - p.row), abs($0 % side - p.col)) <= r }
                let k = window.count
                for (ks, sigma) in m.sigmas.enumerated() {
                    // Solve (Sigma_WW + sigma^2 I) g = Sigma_Wc.
                    var a = (0..<k).map { i in (0..<k).map { jj in cov(window[i], window[jj]) + (i == jj ? sigma * sigma : 0) } + [cov(window[i], c)] }
                    for col in 0..<k {
                        let pivot = (col..<k).max { abs(a[$0][col]) < abs(a[$1][col]) }!
                        a.swapAt(col, pivot)
                        for row in 0..<k where row != col {
                            let f = a[row][col] / a[col][col]
                            for x in col...k { a[row][x] -= f * a[col][x] }
                        }
                    }
                    let g = (0..<k).map { a[$0][k] / a[$0][$0] }
                    var err = 0.0
                    for q in 0..<queries.rows {
                        var rng = CounterRNG(seed: m.seed, purpose: .evaluation, step: 2, sample: q)
                        let z = (0..<d).map { _ in rng.normal() }
                        var est = mu[c]
                        for (e, v) in window.enumerated() { est += g[e] * (Double(queries.storage[q * d + v]) + sigma * z[v] - mu[v]) }
                        err += (est - Double(queries.storage[q * d + c])) * (est - Double(queries.storage[q * d + c]))
                    }
                    out[ks][j] += err / Double(queries.rows) / Double(m.positions.count)
                }
            }
        }
        return out
    }

    @Test func linearMeasurementMatchesNaiveReference() {
        let db = Self.images(60, side: 5, seed: 4), q = Self.images(6, side: 5, seed: 5)
        let m = CropDenoisingMeasurement(sigmas: [0.05, 0.5, 2], cropSizes: CropDenoisingMeasurement.defaultCropSizes(side: 5),
                                         positions: [(1, 1), (2, 3)], seed: 8)
        let fast = m.measureLinear(database: db, queries: q), slow = Self.naiveLinear(m, database: db, queries: q)
        for k in 0..<3 { for j in 0..<m.cropSizes.count {
            #expect(abs(fast[k][j] - slow[k][j]) <= 1e-9 + 1e-7 * slow[k][j], "sigma \(m.sigmas[k]) crop \(m.cropSizes[j]): \(fast[k][j]) vs \(slow[k][j])")
        } }
    }

    /// dsyevd agrees with the Jacobi reference and reconstructs the matrix.
    @Test func lapackEigenMatchesJacobi() {
        var rng = CounterRNG(seed: 6, purpose: .evaluation)
        let n = 7
        let b = (0..<(n * n)).map { _ in rng.normal() }
        let a = (0..<(n * n)).map { i in (0..<n).reduce(0.0) { $0 + b[(i / n) * n + $1] * b[(i % n) * n + $1] } }
        let (values, vectors) = LAPACK.symmetricEigen(a, n: n)
        let reference = SymmetricEigen.decompose(a, n: n).values
        for i in 0..<n { #expect(abs(values[i] - reference[i]) < 1e-9 * max(1, abs(reference[i]))) }
        for i in 0..<n { for j in 0..<n {
            let r = (0..<n).reduce(0.0) { $0 + vectors[$1 * n + i] * values[$1] * vectors[$1 * n + j] }
            #expect(abs(r - a[i * n + j]) < 1e-9 * 10)
        } }
    }

    /// Images whose pixels copy the centre's row-neighbour: a 3x3 window sees two copies of the
    /// centre value, so at moderate noise it beats the single pixel, and more context adds nothing.
    @Test func redundantNeighboursAreFoundByTheWindow() {
        var rng = CounterRNG(seed: 3, purpose: .evaluation)
        func make(_ n: Int) -> Tensor<Float> {
            var x = [Float](repeating: 0, count: n * 25)
            for i in 0..<n { for r in 0..<5 { let v = Float(rng.uniform() < 0.5 ? -1 : 1); for c in 0..<5 { x[i * 25 + r * 5 + c] = c < 3 ? v : Float(rng.uniform() * 2 - 1) } } }
            return Tensor(shape: [n, 1, 5, 5], storage: x)
        }
        let m = CropDenoisingMeasurement(sigmas: [0.8], cropSizes: [1, 3, 5], positions: [(2, 1)], seed: 1)
        let mse = m.measure(database: make(400), queries: make(100))
        #expect(mse[0][1] < 0.8 * mse[0][0], "\(mse)")
    }

    @Test func ruleLookupAndFormat() throws {
        let mse: [[Double]] = [[1.0, 0.5, 0.52, 0.6], [2.0, 1.0, 0.9, 0.89], [3.0, 1.5, 1.6, 1.45]]
        let (raw, monotone) = CropMap.crops(mse: mse, cropSizes: [1, 3, 5, 8], tolerance: 0.05)
        #expect(raw == [3, 5, 3] && monotone == [3, 5, 5])
        var map = CropMap(source: "t", imageShape: [1, 8, 8], sigmas: [0.1, 1, 10], cropSizes: [1, 3, 5, 8], mse: mse, tolerance: 0.05,
                          rawCrop: raw, crop: monotone, database: 10, queries: 2, positions: [[4, 4]], seed: 0)
        #expect(map.cropSize(at: 0.01) == 3 && map.cropSize(at: 0.1) == 3 && map.cropSize(at: 0.2) == 5 && map.cropSize(at: 11) == 8)
        let back = try JSONDecoder.snake.decode(CropMap.self, from: Data(try map.encoded()))
        #expect(back == map)
        map.crop = [5, 3, 8]
        #expect(throws: ConfigurationError.self) { try map.validate() }
        map.crop = monotone
        map.mse = [[1]]
        #expect(throws: ConfigurationError.self) { try map.validate() }
        map.mse = mse
        map.formatVersion = 9
        #expect(throws: ConfigurationError.self) { try map.validate() }
    }

    /// Crops copy the right pixels of every channel.
    @Test func cropExtraction() {
        let image = (0..<(2 * 4 * 5)).map(Float.init)   // (2, 4, 5)
        var crop = [Float](repeating: 0, count: 2 * 2 * 2)
        image.withUnsafeBufferPointer { src in crop.withUnsafeMutableBufferPointer { dst in
            ImageCrops.extract(src.baseAddress!, shape: [2, 4, 5], top: 1, left: 3, size: 2, into: dst.baseAddress!)
        } }
        #expect(crop == [8, 9, 13, 14, 28, 29, 33, 34])
    }
}

extension JSONDecoder {
    static var snake: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}
