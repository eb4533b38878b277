import FileIO
import Foundation
import Testing
import TensorCore
@testable import Datasets

@Suite struct SHA256Tests {
    /// FIPS 180-4 examples, and a message that spans the padding boundary.
    @Test func knownDigests() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}

@Suite struct CorruptionSpecTests {
    static let images: Tensor<Float> = {
        var rng = CounterRNG(seed: 2, purpose: .evaluation)
        return Tensor(shape: [50, 1, 8, 8], storage: (0..<(50 * 64)).map { _ in Float(rng.uniform()) })
    }()

    @Test func parsesEveryFormAndRoundTrips() throws {
        for text in ["noise:0.5", "mask:0.6", "box:4", "blur:2.0", "ood:5+7"] {
            let spec = try CorruptionSpec.parse(text)
            #expect(try CorruptionSpec.parse(spec.description) == spec)
        }
    }

    @Test func unknownOrInvalidSpecsListTheValidOnes() {
        for bad in ["frobnicate:2", "noise", "noise:-1", "mask:1", "box:0", "blur:x", "ood:", "ood:a"] {
            do {
                _ = try CorruptionSpec.parse(bad)
                Issue.record("\(bad) was accepted")
            } catch {
                let text = "\(error)"
                #expect(text.contains("corruption '\(bad)'"), "\(text)")
                if bad == "frobnicate:2" { #expect(text.contains("noise:S") && text.contains("blur:S") && text.contains("ood:"), "\(text)") }
            }
        }
    }

    /// Pixel masks keep each pixel with probability 1 - p, zero the missing ones, and are fixed per sample index.
    @Test func pixelMasksAreBernoulliAndKeyedBySample() throws {
        let c = try CorruptionSpec.pixelMask(0.6).apply(Self.images, imageShape: [1, 8, 8], seed: 3)
        let masks = try #require(c.masks)
        let kept = masks.storage.reduce(0, +) / Float(masks.count)
        #expect(abs(kept - 0.4) < 0.03, "kept fraction \(kept)")
        for i in 0..<masks.count where masks.storage[i] == 0 { #expect(c.samples.storage[i] == 0) }
        let subset = try CorruptionSpec.pixelMask(0.6).apply(Self.images.gather(rows: [9, 3]), imageShape: [1, 8, 8], seed: 3, sampleIndices: [9, 3])
        #expect(subset.masks! == masks.gather(rows: [9, 3]))
    }

    @Test func boxesHideOneSquareEach() throws {
        let c = try CorruptionSpec.box(3).apply(Self.images, imageShape: [1, 8, 8], seed: 3)
        let masks = try #require(c.masks)
        for r in 0..<50 { #expect(masks[row: r].filter { $0 == 0 }.count == 9) }
        #expect(throws: DatasetError.self) { try CorruptionSpec.box(9).apply(Self.images, imageShape: [1, 8, 8], seed: 3) }
        #expect(throws: DatasetError.self) { try CorruptionSpec.box(2).apply(Self.images.reshaped([50, 64]), imageShape: nil, seed: 3) }
    }

    /// The blur kernel sums to 1 (a constant image stays constant) and smooths (lowers the variance).
    @Test func blurPreservesConstantsAndSmooths() throws {
        let constant = Tensor<Float>(shape: [2, 1, 8, 8], repeating: 0.3)
        let blurred = GaussianBlur(std: 1.5).apply(constant, channels: 1, height: 8, width: 8)
        #expect(blurred.storage.allSatisfy { abs($0 - 0.3) < 1e-5 })
        func variance(_ t: Tensor<Float>) -> Float {
            let m = t.storage.reduce(0, +) / Float(t.count)
            return t.storage.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Float(t.count)
        }
        let c = try CorruptionSpec.blur(1.5).apply(Self.images, imageShape: [1, 8, 8], seed: 0)
        #expect(variance(c.samples) < 0.5 * variance(Self.images))
        #expect(c.masks == nil && c.noiseSigma == nil)
    }
}

@Suite struct DatasetDirectoryTests {
    func contents(n: Int = 6) -> DatasetDirectory.Contents {
        var rng = CounterRNG(seed: 4, purpose: .evaluation)
        let samples = Tensor<Float>(shape: [n, 1, 2, 2], storage: (0..<(4 * n)).map { _ in Float(rng.normal()) })
        let masks = Tensor<Float>(shape: [n, 1, 2, 2], storage: (0..<(4 * n)).map { Float($0 % 3 == 0 ? 0 : 1) })
        let manifest = DatasetDirectory.Manifest(source: "test", corruption: "mask:0.3", cleanFraction: 0.5, seed: 9, count: n,
                                                 sampleShape: [1, 2, 2])
        return DatasetDirectory.Contents(manifest: manifest, samples: samples, masks: masks,
                                         noise: (0..<n).map { Double($0) / 10 }, annotations: (0..<n).map { Double($0) },
                                         labels: (0..<n).map { $0 % 4 }, clean: (0..<n).map { $0 < n / 2 })
    }

    @Test func roundTripsEveryFileAndHashesThem() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("set")
        let c = contents()
        try DatasetDirectory(path: path).write(c)
        let back = try DatasetDirectory(path: path).read()
        #expect(back.samples == c.samples && back.masks == c.masks && back.labels == c.labels && back.clean == c.clean)
        #expect(zip(back.noise!, c.noise!).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(back.manifest.files.count == 6)
        let bytes = try FileBytes.contents(of: path + "/samples.npy")
        #expect(back.manifest.files["samples.npy"]?.sha256 == SHA256.hex(bytes))
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: path)).contains { $0.contains("partial") })
        // Writing over an existing dataset is refused.
        #expect(throws: DatasetError.self) { try DatasetDirectory(path: path).write(c) }
        // Annotations can be replaced later; the manifest follows.
        try DatasetDirectory(path: path).writeAnnotations([0, 0, 0, 1, 2, 80], note: "test")
        let annotated = try DatasetDirectory(path: path).read()
        #expect(annotated.annotations == [0, 0, 0, 1, 2, 80] && annotated.manifest.annotation == "test")
    }

    func expectRejected(_ c: DatasetDirectory.Contents, mentions needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try DatasetDirectory.validate(c, name: "set")
            Issue.record("accepted", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(needle), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func rejectsInconsistentContents() {
        var c = contents()
        c.masks = Tensor(shape: [6, 1, 2, 3], repeating: 1)
        expectRejected(c, mentions: "masks.npy")
        c = contents()
        c.masks!.storage[5] = 0.5
        expectRejected(c, mentions: "not 0 (missing) or 1")
        c = contents()
        c.annotations![2] = 81
        expectRejected(c, mentions: "outside [0, sigma_max")
        c = contents()
        c.noise![1] = -0.1
        expectRejected(c, mentions: "noise.npy")
        c = contents()
        c.labels = [1, 2]
        expectRejected(c, mentions: "labels.npy")
        c = contents()
        c.samples.storage[3] = .nan
        expectRejected(c, mentions: "non-finite")
    }

    @Test func rejectsDamagedFiles() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("set")
        try DatasetDirectory(path: path).write(contents())
        // A changed byte in the samples: the hash no longer matches.
        var bytes = try FileBytes.contents(of: path + "/samples.npy")
        bytes[bytes.count - 1] ^= 0x40
        try FileBytes.writeAtomically(bytes, to: path + "/samples.npy")
        #expect { try DatasetDirectory(path: path).read() } throws: { "\($0)".contains("samples.npy") && "\($0)".contains("does not match the manifest") }
        // A missing manifest, and a manifest of another format.
        #expect { try DatasetDirectory(path: dir.file("none")).read() } throws: { "\($0)".contains("manifest.json") }
        try FileBytes.writeAtomically(Array("{\"format\": \"other\"}".utf8), to: path + "/manifest.json")
        #expect { try DatasetDirectory(path: path).read() } throws: { "\($0)".contains("manifest") }
    }

    /// Format version 2 (SPEC O5 crops): sigma-max.npy round-trips, is written as version 2, and
    /// a directory without it stays version 1 (still read, by this and older builds).
    @Test func sigmaMaxRoundTripsAndVersions() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("set")
        try DatasetDirectory(path: path).write(contents())
        #expect(try DatasetDirectory(path: path).read().manifest.formatVersion == 1)
        let values: [Double] = [80, 80, 80, 0, 0.5, 2.25]
        try DatasetDirectory(path: path).writeSigmaMax(values, note: "crops test")
        let back = try DatasetDirectory(path: path).read()
        #expect(back.sigmaMax == values && back.manifest.cropAnnotation == "crops test" && back.manifest.formatVersion == 2)
        #expect(back.annotations == contents().annotations, "the sigma_min annotations stay")
        // Replacing sigma_min keeps sigma_max, and the other way round.
        try DatasetDirectory(path: path).writeAnnotations([0, 0, 0, 1, 2, 3], note: "again")
        #expect(try DatasetDirectory(path: path).read().sigmaMax == values)
        // Written in one go.
        var c = contents()
        c.sigmaMax = values
        let path2 = dir.file("set2")
        try DatasetDirectory(path: path2).write(c)
        let again = try DatasetDirectory(path: path2).read()
        #expect(again.sigmaMax == values && again.manifest.formatVersion == 2)
    }

    @Test func rejectsBadSigmaMax() throws {
        var c = contents()
        c.sigmaMax = [0, 0, 0, 0, 0, 81]
        expectRejected(c, mentions: "outside [0, sigma_max")
        c.sigmaMax = [0, 0, 0, 0, 0, -1]
        expectRejected(c, mentions: "sigma-max.npy")
        c.sigmaMax = [0, 0, 0]
        expectRejected(c, mentions: "sigma-max.npy")
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("set")
        try DatasetDirectory(path: path).write(contents())
        #expect { try DatasetDirectory(path: path).writeSigmaMax([1, 2], note: "x") } throws: { "\($0)".contains("sigma-max.npy") }
        #expect { try DatasetDirectory(path: path).writeSigmaMax([0, 0, 0, 0, 0, 100], note: "x") } throws: { "\($0)".contains("outside") }
        // A file of the wrong shape, with a matching hash: the shape check names it.
        try DatasetDirectory(path: path).writeSigmaMax([0, 0, 0, 0, 0, 1], note: "x")
        let bytes = NPY.encode(Tensor<Float>(shape: [3, 2], storage: [0, 0, 0, 0, 0, 1]))
        try FileBytes.writeAtomically(bytes, to: path + "/sigma-max.npy")
        var manifest = try DatasetDirectory(path: path).readManifestForTest()
        manifest.files["sigma-max.npy"] = .init(sha256: SHA256.hex(bytes), bytes: bytes.count)
        try DatasetDirectory(path: path).writeManifest(manifest)
        #expect { try DatasetDirectory(path: path).read() } throws: { "\($0)".contains("sigma-max.npy") && "\($0)".contains("one value per sample") }
        // Version 1 cannot hold sigma-max.npy; unknown versions are refused.
        manifest.formatVersion = 1
        try DatasetDirectory(path: path).writeManifest(manifest)
        #expect { try DatasetDirectory(path: path).read() } throws: { "\($0)".contains("version 1") }
        manifest.formatVersion = 3
        try DatasetDirectory(path: path).writeManifest(manifest)
        #expect { try DatasetDirectory(path: path).read() } throws: { "\($0)".contains("format version 3") }
    }
}

extension DatasetDirectory {
    func readManifestForTest() throws -> Manifest {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Manifest.self, from: Data(try FileBytes.contents(of: manifestPath)))
    }
}
