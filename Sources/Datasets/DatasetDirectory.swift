import FileIO
import Foundation
import TensorCore

/// A dataset directory (docs/dataset-format.md): the samples and their per-sample metadata as
/// NPY files, and `manifest.json` with provenance and the SHA-256 of every file.
///
///     manifest.json     format, version, source, corruption, seed, counts, sigma_max, file hashes
///     samples.npy       float32 (N, C, H, W) or (N, d): the data as stored (corrupted)
///     masks.npy         optional float32, same shape: 1 observed, 0 missing (SPEC O3)
///     noise.npy         optional float32 (N,): Gaussian noise level each sample already carries
///     annotations.npy   optional float32 (N,): annotated sigma_min per sample (SPEC O5), 0 = clean
///     sigma-max.npy     optional float32 (N,): crops annotation sigma_max per sample (SPEC O5 crops, version 2)
///     labels.npy        optional int64 (N,): class labels
///     clean.npy         optional int64 (N,): 1 = sample of the trusted clean set S_G (SPEC O5)
///
/// Every file is written atomically and the manifest last, so a directory with a manifest is
/// complete; the reader checks hashes, shapes and value ranges and names the file at fault.
public struct DatasetDirectory: Sendable {
    public static let formatName = "ambient-dataset"
    /// Version 2 added sigma-max.npy and `crop_annotation`; version 1 directories still read.
    public static let formatVersion = 2
    public static let readableVersions = [1, 2]
    public static let manifestName = "manifest.json"
    /// The data files a dataset directory may hold.
    public static let fileNames = ["samples.npy", "masks.npy", "noise.npy", "annotations.npy", "sigma-max.npy", "labels.npy", "clean.npy"]

    /// One file of the directory: its SHA-256 and byte count.
    public struct FileEntry: Codable, Sendable, Equatable {
        public var sha256: String
        public var bytes: Int
    }

    /// The content of manifest.json.
    public struct Manifest: Codable, Sendable, Equatable {
        public var format: String = DatasetDirectory.formatName
        public var formatVersion: Int = DatasetDirectory.formatVersion
        /// Where the clean data came from (e.g. "fashion-mnist train, classes 0-9").
        public var source: String
        /// The corruption spec (`CorruptionSpec.description`), nil for clean data.
        public var corruption: String?
        /// Fraction of samples left clean (the trusted set S_G of SPEC O5).
        public var cleanFraction: Double
        public var seed: UInt64
        public var count: Int
        /// Shape of one sample: (C, H, W) for images, (d) for vectors.
        public var sampleShape: [Int]
        /// Largest admissible noise level or annotation (the sampler's sigma_max).
        public var sigmaMax: Double
        /// How the annotations were made, when there are any.
        public var annotation: String?
        /// How sigma-max.npy was made (crops classifiers, crop map, tau), when present.
        public var cropAnnotation: String?
        /// The command that wrote the directory.
        public var createdBy: String?
        /// "K/N of PATH" when the directory is fold K/N of the dataset at PATH (`ambient dataset
        /// subset`); `ambient dataset merge` checks that fold k comes k-th.
        public var fold: String?
        /// File name to hash and size.
        public var files: [String: FileEntry]

        public init(source: String, corruption: String?, cleanFraction: Double, seed: UInt64, count: Int,
                    sampleShape: [Int], sigmaMax: Double = 80, createdBy: String? = nil) {
            self.source = source
            self.corruption = corruption
            self.cleanFraction = cleanFraction
            self.seed = seed
            self.count = count
            self.sampleShape = sampleShape
            self.sigmaMax = sigmaMax
            self.createdBy = createdBy
            self.files = [:]
        }
    }

    /// A dataset in memory.
    public struct Contents: Sendable {
        public var manifest: Manifest
        public var samples: Tensor<Float>
        public var masks: Tensor<Float>?
        public var noise: [Double]?
        public var annotations: [Double]?
        /// Per sample: the noise level up to which it is used as clean (SPEC O5 crops); the
        /// manifest's sigma_max for clean samples, 0 for samples never used so.
        public var sigmaMax: [Double]?
        public var labels: [Int]?
        public var clean: [Bool]?

        public init(manifest: Manifest, samples: Tensor<Float>, masks: Tensor<Float>? = nil, noise: [Double]? = nil,
                    annotations: [Double]? = nil, sigmaMax: [Double]? = nil, labels: [Int]? = nil, clean: [Bool]? = nil) {
            self.manifest = manifest
            self.samples = samples
            self.masks = masks
            self.noise = noise
            self.annotations = annotations
            self.sigmaMax = sigmaMax
            self.labels = labels
            self.clean = clean
        }

        public var count: Int { samples.rows }
    }

    public let path: String
    public init(path: String) { self.path = path }

    public var manifestPath: String { path + "/" + Self.manifestName }
    public func file(_ name: String) -> String { path + "/" + name }

    /// True when `path` is a directory holding a manifest.
    public static func exists(at path: String) -> Bool {
        FileManager.default.fileExists(atPath: path + "/" + manifestName)
    }

    // MARK: Writing

    /// Writes every file, then the manifest (atomically). The directory may exist but must not
    /// already hold a dataset.
    public func write(_ contents: Contents) throws {
        try Self.validate(contents, name: path)
        if Self.exists(at: path) {
            throw DatasetError.invalidArgument(what: "output directory \(path)", expected: "a new or empty directory",
                                               found: "an existing dataset (\(Self.manifestName)); remove it or choose another --out")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw DatasetError.invalidArgument(what: "output directory \(path)", expected: "a directory that can be created", found: "\(error.localizedDescription)")
        }
        // Files of an earlier write that stopped before its manifest: not part of this dataset.
        for name in Self.fileNames where FileManager.default.fileExists(atPath: file(name)) {
            try? FileManager.default.removeItem(atPath: file(name))
        }
        var manifest = contents.manifest
        manifest.count = contents.count
        manifest.sampleShape = Array(contents.samples.shape.dropFirst())
        manifest.files = [:]
        // Version 2 only when its one addition is present, so older builds read the rest.
        manifest.formatVersion = contents.sigmaMax == nil && manifest.cropAnnotation == nil ? 1 : 2
        func put(_ name: String, _ bytes: [UInt8]) throws {
            try FileBytes.writeAtomically(bytes, to: file(name))
            manifest.files[name] = FileEntry(sha256: SHA256.hex(bytes), bytes: bytes.count)
        }
        let n = contents.count
        try put("samples.npy", NPY.encode(contents.samples))
        if let m = contents.masks { try put("masks.npy", NPY.encode(m)) }
        if let s = contents.noise { try put("noise.npy", NPY.encode(Tensor(shape: [n], storage: s.map { Float($0) }))) }
        if let a = contents.annotations { try put("annotations.npy", NPY.encode(Tensor(shape: [n], storage: a.map { Float($0) }))) }
        if let a = contents.sigmaMax { try put("sigma-max.npy", NPY.encode(Tensor(shape: [n], storage: a.map { Float($0) }))) }
        if let l = contents.labels { try put("labels.npy", NPY.encode(integers: l, shape: [n])) }
        if let c = contents.clean { try put("clean.npy", NPY.encode(integers: c.map { $0 ? 1 : 0 }, shape: [n])) }
        try writeManifest(manifest)
    }

    /// Replaces the annotations (SPEC O5) of an existing dataset and records how they were made.
    public func writeAnnotations(_ annotations: [Double], note: String) throws {
        try replacePerSampleValues(annotations, file: "annotations.npy", what: "annotations",
                                   set: { $0.annotations = annotations }, record: { $0.annotation = note })
    }

    /// Replaces the crops annotation sigma_max (SPEC O5 crops) of an existing dataset and records
    /// how it was made. Writes format version 2.
    public func writeSigmaMax(_ values: [Double], note: String) throws {
        try replacePerSampleValues(values, file: "sigma-max.npy", what: "values", set: { $0.sigmaMax = values }) {
            $0.cropAnnotation = note
            $0.formatVersion = Self.formatVersion
        }
    }

    /// Validates the dataset with one per-sample column replaced (`set`), writes that column's
    /// NPY atomically, then the manifest with its new hash and what `record` adds.
    private func replacePerSampleValues(_ values: [Double], file name: String, what: String,
                                        set: (inout Contents) -> Void, record: (inout Manifest) -> Void) throws {
        var contents = try read()
        guard values.count == contents.count else {
            throw DatasetError.badShape(name: file(name), expected: "\(contents.count) \(what)", found: "\(values.count)")
        }
        set(&contents)
        try Self.validate(contents, name: path)
        let bytes = NPY.encode(Tensor(shape: [values.count], storage: values.map { Float($0) }))
        try FileBytes.writeAtomically(bytes, to: file(name))
        var manifest = contents.manifest
        manifest.files[name] = FileEntry(sha256: SHA256.hex(bytes), bytes: bytes.count)
        record(&manifest)
        try writeManifest(manifest)
    }

    func writeManifest(_ manifest: Manifest) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try FileBytes.writeAtomically(Array(try encoder.encode(manifest)) + [10], to: manifestPath)
    }

    // MARK: Reading

    /// Reads and validates the whole directory: manifest, hashes, shapes and value ranges.
    public func read() throws -> Contents {
        let manifestBytes: [UInt8]
        do {
            manifestBytes = try FileBytes.contents(of: manifestPath)
        } catch {
            throw DatasetError.notFound(dataset: "dataset directory \(path)", searched: [manifestPath],
                                        hint: "Create one with `ambient dataset make --source fashion-mnist --out \(path)`.")
        }
        let manifest: Manifest
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            manifest = try decoder.decode(Manifest.self, from: Data(manifestBytes))
        } catch {
            throw DatasetError.malformed(name: manifestPath, problem: "not a dataset manifest (\(error))")
        }
        guard manifest.format == Self.formatName else {
            throw DatasetError.badMagic(name: manifestPath, format: "dataset manifest", expected: "format \"\(Self.formatName)\"",
                                        found: "\"\(manifest.format)\"")
        }
        guard Self.readableVersions.contains(manifest.formatVersion) else {
            throw DatasetError.unsupported(name: manifestPath, found: "format version \(manifest.formatVersion)",
                                           supported: "versions \(Self.readableVersions.map(String.init).joined(separator: ", "))")
        }
        if manifest.formatVersion < 2 && (manifest.files["sigma-max.npy"] != nil || manifest.cropAnnotation != nil) {
            throw DatasetError.malformed(name: manifestPath, problem: "format version 1 has no sigma-max.npy (crops annotation came with version 2)")
        }
        let known = Self.fileNames
        for name in manifest.files.keys where !known.contains(name) {
            throw DatasetError.malformed(name: manifestPath, problem: "lists unknown file \(name) (known: \(known.joined(separator: ", ")))")
        }
        guard manifest.files["samples.npy"] != nil else {
            throw DatasetError.malformed(name: manifestPath, problem: "lists no samples.npy")
        }
        func load(_ name: String) throws -> [UInt8]? {
            guard let entry = manifest.files[name] else { return nil }
            let bytes = try FileBytes.contents(of: file(name))
            let hash = SHA256.hex(bytes)
            guard hash == entry.sha256, bytes.count == entry.bytes else {
                throw DatasetError.malformed(name: file(name),
                                             problem: "content does not match the manifest (SHA-256 \(hash.prefix(12))..., \(bytes.count) bytes; manifest: \(entry.sha256.prefix(12))..., \(entry.bytes) bytes): the file was changed or damaged after the dataset was written")
            }
            return bytes
        }
        func floats(_ name: String) throws -> Tensor<Float>? {
            try load(name).map { try NPY.decodeFloat($0, name: file(name)) }
        }
        func perSample(_ name: String) throws -> [Double]? {
            guard let t = try floats(name) else { return nil }
            guard t.shape == [manifest.count] else {
                throw DatasetError.badShape(name: file(name), expected: "(\(manifest.count),): one value per sample", found: "\(t.shape)")
            }
            return t.storage.map { Double($0) }
        }
        func integers(_ name: String) throws -> [Int]? {
            guard let bytes = try load(name) else { return nil }
            let (shape, values) = try NPY.decodeIntegers(bytes, name: file(name))
            guard shape == [manifest.count] else {
                throw DatasetError.badShape(name: file(name), expected: "(\(manifest.count),): one value per sample", found: "\(shape)")
            }
            return values
        }
        guard let samples = try floats("samples.npy") else { preconditionFailure("checked above") }
        let flags = try integers("clean.npy")
        if let flags, let bad = flags.firstIndex(where: { $0 != 0 && $0 != 1 }) {
            throw DatasetError.malformed(name: file("clean.npy"), problem: "value \(flags[bad]) at sample \(bad) is not 0 or 1")
        }
        let contents = Contents(manifest: manifest, samples: samples, masks: try floats("masks.npy"), noise: try perSample("noise.npy"),
                                annotations: try perSample("annotations.npy"), sigmaMax: try perSample("sigma-max.npy"),
                                labels: try integers("labels.npy"),
                                clean: flags.map { $0.map { $0 == 1 } })
        try Self.validate(contents, name: path)
        return contents
    }

    /// Shapes agree with the manifest and each other; masks are 0/1; noise levels and
    /// annotations lie in [0, sigma_max].
    public static func validate(_ c: Contents, name: String) throws {
        let m = c.manifest
        let n = c.count
        let file = { (f: String) in name + "/" + f }
        guard c.samples.rank >= 2, n >= 1 else {
            throw DatasetError.badShape(name: file("samples.npy"), expected: "(N, d) or (N, C, H, W) with N >= 1", found: "\(c.samples.shape)")
        }
        if m.count != 0 || !m.files.isEmpty {
            guard c.samples.shape == [m.count] + m.sampleShape else {
                throw DatasetError.badShape(name: file("samples.npy"), expected: "\([m.count] + m.sampleShape) as the manifest says",
                                            found: "\(c.samples.shape)")
            }
        }
        try validateFinite(c.samples, name: file("samples.npy"))
        guard m.sigmaMax > 0, m.sigmaMax.isFinite else {
            throw DatasetError.malformed(name: file(manifestName), problem: "sigma_max \(m.sigmaMax) is not a positive number")
        }
        guard m.cleanFraction >= 0, m.cleanFraction <= 1 else {
            throw DatasetError.malformed(name: file(manifestName), problem: "clean_fraction \(m.cleanFraction) is outside [0, 1]")
        }
        if let masks = c.masks {
            guard masks.shape == c.samples.shape else {
                throw DatasetError.badShape(name: file("masks.npy"), expected: "\(c.samples.shape), the shape of samples.npy",
                                            found: "\(masks.shape)")
            }
            if let bad = masks.storage.firstIndex(where: { $0 != 0 && $0 != 1 }) {
                throw DatasetError.malformed(name: file("masks.npy"),
                                             problem: "value \(masks.storage[bad]) at sample \(bad / max(masks.rowSize, 1)) is not 0 (missing) or 1 (observed)")
            }
        }
        for (label, values) in [("noise.npy", c.noise), ("annotations.npy", c.annotations), ("sigma-max.npy", c.sigmaMax)] {
            guard let values else { continue }
            guard values.count == n else {
                throw DatasetError.badShape(name: file(label), expected: "(\(n),): one value per sample", found: "(\(values.count),)")
            }
            if let bad = values.firstIndex(where: { !($0 >= 0 && $0 <= m.sigmaMax) }) {
                throw DatasetError.malformed(name: file(label),
                                             problem: "value \(values[bad]) at sample \(bad) is outside [0, sigma_max = \(m.sigmaMax)]")
            }
        }
        if let l = c.labels, l.count != n {
            throw DatasetError.badShape(name: file("labels.npy"), expected: "(\(n),)", found: "(\(l.count),)")
        }
        if let f = c.clean, f.count != n {
            throw DatasetError.badShape(name: file("clean.npy"), expected: "(\(n),)", found: "(\(f.count),)")
        }
    }
}
