import TensorCore

/// Fold k of n of a dataset: the rows i with i mod n = k, in order. Cross-fitting (issue 15) trains
/// a classifier on some folds and annotates the others, so no sample is judged by a classifier
/// that saw it; `ambient dataset subset` cuts a fold out, `ambient dataset merge` puts the folds
/// back in the original order. Interleaved rather than contiguous: `dataset make` puts the clean
/// samples first, so a contiguous half could hold no clean sample at all.
public struct DatasetFold: Sendable, Equatable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, index >= 0, index < count else {
            throw DatasetError.invalidArgument(what: "fold", expected: "K/N with N >= 1 and 0 <= K < N", found: "\(index)/\(count)")
        }
        self.index = index
        self.count = count
    }

    /// "K/N", e.g. "0/2".
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) else {
            throw DatasetError.invalidArgument(what: "fold", expected: "K/N, e.g. 0/2 (the rows i with i mod N = K)", found: text)
        }
        try self.init(index: k, count: n)
    }

    /// The rows of this fold in a dataset of `total` rows.
    public func rows(of total: Int) -> [Int] { Array(stride(from: index, to: total, by: count)) }

    public var description: String { "\(index)/\(count)" }
}

extension DatasetDirectory.Contents {
    /// Which optional per-sample files are present: masks, noise, annotations, sigma_max, labels, clean.
    var perSampleFiles: [Bool] { [masks != nil, noise != nil, annotations != nil, sigmaMax != nil, labels != nil, clean != nil] }

    /// The samples at `indices`, in that order, with every per-sample file (masks, noise levels,
    /// annotations, sigma_max, labels, clean flags); the manifest counts them and recomputes the
    /// clean fraction.
    public func selecting(rows indices: [Int], createdBy: String?) -> Self {
        func pick<T>(_ a: [T]?) -> [T]? { a.map { a in indices.map { a[$0] } } }
        var c = Self(manifest: manifest, samples: samples.gather(rows: indices), masks: masks?.gather(rows: indices),
                     noise: pick(noise), annotations: pick(annotations), sigmaMax: pick(sigmaMax), labels: pick(labels),
                     clean: pick(clean))
        c.manifest.count = indices.count
        c.manifest.files = [:]
        c.manifest.createdBy = createdBy
        c.manifest.fold = nil
        if let flags = c.clean { c.manifest.cleanFraction = flags.isEmpty ? 0 : Double(flags.filter { $0 }.count) / Double(flags.count) }
        return c
    }

    /// Fold `fold` of this dataset (read from `path`), its manifest tagged "K/N of PATH".
    public func fold(_ fold: DatasetFold, of path: String, createdBy: String?) -> Self {
        var c = selecting(rows: fold.rows(of: count), createdBy: createdBy)
        c.manifest.fold = "\(fold) of \(path)"
        return c
    }

    /// The dataset whose fold k of n = parts.count is parts[k]: the inverse of cutting a dataset
    /// into all its folds. The parts must agree on the sample shape, sigma_max and which
    /// per-sample files they have, and hold as many rows as their folds of the total; a part whose
    /// manifest names its fold (`fold(_:of:)`) must be fold k of n. The manifest is part 0's,
    /// counted again; differing annotation notes are kept fold by fold.
    public static func interleaving(folds parts: [Self], createdBy: String?) throws -> Self {
        guard let first = parts.first else {
            throw DatasetError.invalidArgument(what: "folds to merge", expected: "at least one dataset", found: "none")
        }
        let n = parts.count, total = parts.reduce(0) { $0 + $1.count }
        for (k, p) in parts.enumerated() {
            if let tag = p.manifest.fold, let named = tag.split(separator: " ").first, named != "\(k)/\(n)" {
                throw DatasetError.invalidArgument(what: "dataset \(k + 1) of \(n) to merge", expected: "fold \(k)/\(n) (name the folds in order, fold 0 first)",
                                                   found: "fold \(tag)")
            }
            let expected = try DatasetFold(index: k, count: n).rows(of: total).count
            guard p.count == expected else {
                throw DatasetError.badShape(name: "fold \(k)/\(n)", expected: "\(expected) samples (rows i mod \(n) = \(k) of \(total))",
                                            found: "\(p.count)")
            }
            guard p.manifest.sampleShape == first.manifest.sampleShape, p.manifest.sigmaMax == first.manifest.sigmaMax else {
                throw DatasetError.badShape(name: "fold \(k)/\(n)", expected: "samples of shape \(first.manifest.sampleShape), sigma_max \(first.manifest.sigmaMax) as fold 0",
                                            found: "shape \(p.manifest.sampleShape), sigma_max \(p.manifest.sigmaMax)")
            }
            guard p.perSampleFiles == first.perSampleFiles else {
                throw DatasetError.malformed(name: "fold \(k)/\(n)", problem: "it has other per-sample files than fold 0 (masks, noise, annotations, sigma-max, labels, clean: \(p.perSampleFiles) against \(first.perSampleFiles))")
            }
        }
        // Row i of the whole is row i / n of part i mod n.
        let order = (0..<total).map { (part: $0 % n, row: $0 / n) }
        func merge<T>(_ arrays: [[T]?]) -> [T]? {
            guard arrays.allSatisfy({ $0 != nil }) else { return nil }
            return order.map { arrays[$0.part]![$0.row] }
        }
        func mergeRows(_ tensors: [Tensor<Float>?]) -> Tensor<Float>? {
            guard let t0 = tensors.first ?? nil, tensors.allSatisfy({ $0 != nil }) else { return nil }
            let d = t0.rowSize
            var storage = [Float]()
            storage.reserveCapacity(total * d)
            for o in order { storage += tensors[o.part]!.storage[(o.row * d)..<((o.row + 1) * d)] }
            return Tensor(shape: [total] + Array(t0.shape.dropFirst()), storage: storage)
        }
        var c = Self(manifest: first.manifest, samples: mergeRows(parts.map(\.samples))!, masks: mergeRows(parts.map(\.masks)),
                     noise: merge(parts.map(\.noise)), annotations: merge(parts.map(\.annotations)),
                     sigmaMax: merge(parts.map(\.sigmaMax)), labels: merge(parts.map(\.labels)), clean: merge(parts.map(\.clean)))
        c.manifest.count = total
        c.manifest.files = [:]
        c.manifest.createdBy = createdBy
        c.manifest.fold = nil
        if let flags = c.clean { c.manifest.cleanFraction = Double(flags.filter { $0 }.count) / Double(total) }
        func notes(_ of: (DatasetDirectory.Manifest) -> String?) -> String? {
            let all = parts.map { of($0.manifest) }
            if Set(all.map { $0 ?? "" }).count <= 1 { return all[0] }
            return all.enumerated().map { "fold \($0.offset)/\(n): \($0.element ?? "none")" }.joined(separator: "; ")
        }
        c.manifest.annotation = notes(\.annotation)
        c.manifest.cropAnnotation = notes(\.cropAnnotation)
        return c
    }
}
