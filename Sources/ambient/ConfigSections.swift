import Diffusion
import Yams

/// One key of a nested section of a run configuration (`model.mlp`, `model.unet`, `schedule`): how a
/// file reads it and how `--dry-run` writes it. The section tables below are the sections' one
/// schema: the known keys, the reader and the writer walk them (as `RunConfigField` does for the
/// top level), so a new network field is one entry here and its use.
struct SectionField<Value> {
    let key: String
    let comment: String
    /// Reads the value node; the String is the full key (`model.unet.groups`) for errors.
    let read: (ConfigNodeReader, Node, String, inout Value) throws -> Void
    let write: (Value) -> String

    static func int(_ key: String, _ field: WritableKeyPath<Value, Int>, min: Int, _ comment: String = "") -> Self {
        Self(key: key, comment: comment, read: { r, n, p, v in v[keyPath: field] = try r.required(r.int(n, p, min: min), n, p, "an integer") },
             write: { "\($0[keyPath: field])" })
    }

    /// An integer that may be null (derived from another field or from the objective).
    static func optionalInt(_ key: String, _ field: WritableKeyPath<Value, Int?>, min: Int, _ comment: String = "") -> Self {
        Self(key: key, comment: comment, read: { r, n, p, v in v[keyPath: field] = try r.int(n, p, min: min) },
             write: { $0[keyPath: field].map(String.init) ?? "null" })
    }

    static func number(_ key: String, _ field: WritableKeyPath<Value, Double>, _ range: ConfigNodeReader.Range, _ comment: String = "") -> Self {
        Self(key: key, comment: comment, read: { r, n, p, v in v[keyPath: field] = try r.required(r.double(n, p, range), n, p, "a number") },
             write: { RunConfigField.number($0[keyPath: field]) })
    }

    static func bool(_ key: String, _ field: WritableKeyPath<Value, Bool>, _ comment: String = "") -> Self {
        Self(key: key, comment: comment, read: { r, n, p, v in v[keyPath: field] = try r.required(r.bool(n, p), n, p, "true or false") },
             write: { $0[keyPath: field] ? "true" : "false" })
    }

    static func ints(_ key: String, _ field: WritableKeyPath<Value, [Int]>, min: Int, _ comment: String = "") -> Self {
        Self(key: key, comment: comment, read: { r, n, p, v in v[keyPath: field] = try r.ints(n, p, min: min) },
             write: { "[" + $0[keyPath: field].map(String.init).joined(separator: ", ") + "]" })
    }
}

enum ConfigSections {
    static var mlp: [SectionField<MLPConfig>] { [
        .int("dataDimension", \.dataDimension, min: 1, "resolved from the data"),
        .int("conditioningChannels", \.conditioningChannels, min: 0, "resolved from the objective (1 for masked)"),
        .int("width", \.width, min: 1, "--width"),
        .int("blocks", \.blocks, min: 0, "--blocks"),
        .int("embeddingSize", \.embeddingSize, min: 2, "sinusoidal embedding of c_noise"),
        .optionalInt("outputDimension", \.outputDimension, min: 1, "resolved from the objective (1 for classifier)"),
    ] }

    static var unet: [SectionField<UNetConfig>] { [
        .int("dataDimension", \.dataDimension, min: 1, "resolved from the data"),
        .int("imageChannels", \.imageChannels, min: 1),
        .int("conditioningChannels", \.conditioningChannels, min: 0, "resolved from the objective (1 for masked)"),
        .ints("channels", \.channels, min: 1, "--channels: feature channels per resolution"),
        .int("blocksPerLevel", \.blocksPerLevel, min: 1),
        .int("groups", \.groups, min: 1, "GroupNorm groups"),
        .int("embeddingSize", \.embeddingSize, min: 2),
        .optionalInt("embeddingWidth", \.embeddingWidth, min: 1, "null: 4 channels[0]"),
        .bool("gated", \.gated, "gated convolutions"),
        .optionalInt("outputDimension", \.outputDimension, min: 1, "resolved from the objective (1 for classifier)"),
    ] }

    static var schedule: [SectionField<EDMSchedule>] { [
        .number("sigmaData", \.sigmaData, .positive),
        .number("pMean", \.pMean, .any, "training sigma = exp(pMean + pStd N(0, 1))"),
        .number("pStd", \.pStd, .positive),
        .number("sigmaMin", \.sigmaMin, .positive, "sampling range"),
        .number("sigmaMax", \.sigmaMax, .positive),
        .number("rho", \.rho, .positive, "sampling grid curvature"),
    ] }
}

extension ConfigNodeReader {
    /// A nested section: `initial` with the keys the node gives, every key checked against `fields`.
    func section<Value>(_ node: Node?, _ path: String, _ fields: [SectionField<Value>], _ initial: Value) throws -> Value {
        var value = initial
        guard let node else { return value }
        let e = try entries(node, path, known: fields.map(\.key))
        for field in fields {
            if let (_, v) = e[field.key] { try field.read(self, v, path + "." + field.key, &value) }
        }
        return value
    }
}
