import Foundation
import Testing
import TensorCore
import Datasets

@Suite struct FashionMNISTTests {
    /// Writes a tiny Fashion-MNIST-shaped split (n images) into `dir`, gzipped like the release.
    static func writeSplit(_ split: FashionMNIST.Split, n: Int, into dir: TemporaryDirectory,
                           side: Int = 28, labels: [UInt8]? = nil, labelCount: Int? = nil) throws {
        let pixels = (0..<(n * side * side)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let labelBytes = labels ?? (0..<(labelCount ?? n)).map { UInt8($0 % 10) }
        try dir.write(gzip(IDX.encode(IDXArray(shape: [n, side, side], bytes: pixels))),
                      to: "\(split.filePrefix)-images-idx3-ubyte.gz")
        try dir.write(gzip(IDX.encode(IDXArray(shape: [labelBytes.count], bytes: labelBytes))),
                      to: "\(split.filePrefix)-labels-idx1-ubyte.gz")
    }

    @Test func loadsAndScalesToMinusOneOne() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try Self.writeSplit(.test, n: 3, into: dir)
        let (images, labels) = try FashionMNIST.load(split: .test, directory: dir.path, environment: [:])
        #expect(images.shape == [3, 1, 28, 28])
        #expect(labels == [0, 1, 2])
        for i in [0, 1, 37, 2351] {
            let byte = Float(UInt8(truncatingIfNeeded: i * 7))
            #expect(abs(images.storage[i] - (byte / 127.5 - 1)) < 1e-6)
        }
        #expect(images.storage.min()! >= -1 && images.storage.max()! <= 1)
        #expect(images.storage[0] == -1)  // byte 0
    }

    @Test func lookupOrderExplicitThenEnvironmentThenSystem() throws {
        let explicit = try TemporaryDirectory(), fromEnv = try TemporaryDirectory()
        defer { explicit.remove(); fromEnv.remove() }
        try Self.writeSplit(.train, n: 2, into: explicit)
        try Self.writeSplit(.train, n: 4, into: fromEnv)
        let env = [FashionMNIST.environmentVariable: fromEnv.path]
        #expect(try FashionMNIST.load(split: .train, directory: explicit.path, environment: env).labels.count == 2)
        #expect(try FashionMNIST.load(split: .train, environment: env).labels.count == 4)
        let located = try? FashionMNIST.locate(split: .train, environment: [:])
        if let located { #expect(located.images.hasPrefix(FashionMNIST.systemDirectory)) }
        // Uncompressed files are found too.
        let plain = try TemporaryDirectory()
        defer { plain.remove() }
        try plain.write(IDX.encode(IDXArray(shape: [1, 28, 28], bytes: [UInt8](repeating: 255, count: 784))),
                        to: "t10k-images-idx3-ubyte")
        try plain.write(IDX.encode(IDXArray(shape: [1], bytes: [3])), to: "t10k-labels-idx1-ubyte")
        let one = try FashionMNIST.load(split: .test, directory: plain.path, environment: [:])
        #expect(one.labels == [3] && one.images.storage.allSatisfy { $0 == 1 })
    }

    @Test func missingDirectorySaysHowToInstall() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let e = datasetError { _ = try FashionMNIST.load(split: .test, environment: [FashionMNIST.environmentVariable: dir.path]) }
        guard case .notFound(_, let searched, _)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(searched.first == dir.path + "/t10k-images-idx3-ubyte.gz")
        let text = e?.description ?? ""
        #expect(text.contains("sudo apt-get install dataset-fashion-mnist") && text.contains("AMBIENT_FASHION_MNIST_DIR"))
    }

    @Test func inconsistentFilesAreRejected() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try Self.writeSplit(.test, n: 3, into: dir, labelCount: 4)
        guard case .badShape? = datasetError({ _ = try FashionMNIST.load(split: .test, directory: dir.path) }) else {
            Issue.record("count mismatch accepted"); return
        }
        try Self.writeSplit(.test, n: 3, into: dir, side: 27)
        guard case .badShape? = datasetError({ _ = try FashionMNIST.load(split: .test, directory: dir.path) }) else {
            Issue.record("27x27 accepted"); return
        }
        try Self.writeSplit(.test, n: 2, into: dir, labels: [1, 10])
        guard case .malformed? = datasetError({ _ = try FashionMNIST.load(split: .test, directory: dir.path) }) else {
            Issue.record("label 10 accepted"); return
        }
        // A truncated download: the error names the file.
        try Self.writeSplit(.test, n: 3, into: dir)
        let path = dir.file("t10k-images-idx3-ubyte.gz")
        let gz = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        try dir.write(Array(gz.dropLast(20)), to: "t10k-images-idx3-ubyte.gz")
        let e = datasetError { _ = try FashionMNIST.load(split: .test, directory: dir.path) }
        #expect(e?.description.contains(path) == true, "\(String(describing: e))")
    }

    @Test func classNames() {
        #expect(FashionMNIST.classNames.count == 10)
        #expect(FashionMNIST.classNames[0] == "T-shirt/top" && FashionMNIST.classNames[9] == "Ankle boot")
    }

    static let installed = FileManager.default.fileExists(atPath: FashionMNIST.systemDirectory + "/t10k-labels-idx1-ubyte.gz")

    /// The real test split: size, balanced classes, known first labels and first-image pixel sum.
    @Test(.enabled(if: installed)) func realTestSplit() throws {
        let (images, labels) = try FashionMNIST.load(split: .test, directory: FashionMNIST.systemDirectory)
        #expect(images.shape == [10_000, 1, 28, 28])
        #expect(Array(labels.prefix(10)) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        var counts = [Int](repeating: 0, count: 10)
        for l in labels { counts[l] += 1 }
        #expect(counts == [Int](repeating: 1000, count: 10))
        let firstSum = images.storage.prefix(784).reduce(0) { $0 + Int((($1 + 1) * 127.5).rounded()) }
        #expect(firstSum == 33456)
    }

    @Test(.enabled(if: installed)) func realTrainSplit() throws {
        let (images, labels) = try FashionMNIST.load(split: .train, directory: FashionMNIST.systemDirectory)
        #expect(images.shape == [60_000, 1, 28, 28] && labels.count == 60_000)
        #expect(Array(labels.prefix(10)) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        var counts = [Int](repeating: 0, count: 10)
        for l in labels { counts[l] += 1 }
        #expect(counts == [Int](repeating: 6000, count: 10))
        let firstSum = images.storage.prefix(784).reduce(0) { $0 + Int((($1 + 1) * 127.5).rounded()) }
        #expect(firstSum == 76247)
    }
}
