import Datasets
import Diffusion
import Training
import Yams

/// One top-level key of a run configuration: how a file reads it, how `--dry-run` writes it, and
/// which command-line option of `TrainingOptions` overrides it.
///
/// `RunConfigField.all` is the one schema of the run configuration: the file reader
/// (`ConfigNodeReader.runConfig`), the writer (`ConfigFile.yaml`), the known keys and their
/// "did you mean" suggestions, and the overrides of `TrainingOptions.resolve` all walk it. Adding
/// an option means one entry here, the `@Option` in TrainingOptions, and its use. `model` and
/// `schedule` are nested sections with readers and writers of their own (ConfigFile.swift).
struct RunConfigField {
    /// The key in YAML/JSON files and config.json.
    let key: String
    /// The command-line option that sets it, without `--` (nil: resolved from the data).
    let option: String?
    /// The comment `--dry-run` prints after the value.
    let comment: String
    /// Reads the key's value node into the configuration (only called when the key is present).
    let read: (ConfigNodeReader, Node, inout RunConfig) throws -> Void
    /// The YAML value, or nil to leave the key out of the file.
    let write: (RunConfig) -> String?
    /// Applies the command-line option when given.
    let apply: (TrainingOptions, inout RunConfig) throws -> Void

    /// Every top-level scalar key, in the order `--dry-run` prints them and the options apply
    /// (batch before shards, dataSigma before corruption: later entries see the earlier ones).
    static var all: [RunConfigField] { [
        RunConfigField(key: "data", option: "data", comment: "--data: fashion-mnist, gmm[:dim=D,...], npy:PATH or dir:PATH",
                       read: { r, n, c in c.data = try r.dataSpec(n) },
                       write: { ConfigFile.scalar($0.data.description) },
                       apply: { o, c in if let d = o.data { c.data = try DataSpec.parse(d) } }),
        RunConfigField(key: "dataSigma", option: "data-sigma", comment: "--data-sigma: noise level the data already has",
                       read: { r, n, c in c.dataSigma = try r.double(n, "dataSigma", .positive) },
                       write: { number($0.dataSigma) },
                       apply: { o, c in if let s = o.dataSigma { c.dataSigma = s; c.corruption = nil } }),
        RunConfigField(key: "corruption", option: "corrupt", comment: "--corrupt: noise:S, mask:P, box:S, blur:S, ood:C+C",
                       read: { r, n, c in c.corruption = try n.scalar.map(ConfigNodeReader.isNull) == true ? nil : r.corruptionSpec(n) },
                       write: { $0.corruption.map { ConfigFile.scalar($0.description) } ?? "null" },
                       apply: { o, c in
                           if let s = o.corrupt { c.corruption = try CorruptionSpec.parse(s); if o.dataSigma == nil { c.dataSigma = nil } }
                       }),
        RunConfigField(key: "objective", option: "objective", comment: "--objective: " + ObjectiveKind.names,
                       read: { r, n, c in
                           let name = try r.required(r.string(n, "objective"), n, "objective", "an objective name")
                           guard let kind = ObjectiveKind(rawValue: name) else {
                               throw r.fail(n, "unknown objective '\(name)'; choose one of: \(ObjectiveKind.names)")
                           }
                           c.objective = kind
                       },
                       write: { ConfigFile.scalar($0.objective.rawValue) },
                       apply: { o, c in if let kind = o.objective { c.objective = kind } }),
        int("steps", option: "steps", "--steps", \.steps, min: 1, from: \.steps),
        RunConfigField(key: "batch", option: "batch", comment: "--batch: samples per step",
                       read: { r, n, c in
                           c.batch = try r.required(r.int(n, "batch", min: 1), n, "batch", "an integer")
                           c.shards = min(4, c.batch)   // the default shard count follows the batch
                       },
                       write: { "\($0.batch)" },
                       apply: { o, c in
                           guard let b = o.batch else { return }
                           c.batch = b
                           if o.shards == nil && c.shards > b { c.shards = min(4, b) }
                       }),
        int("shards", option: "shards", "--shards: the unit of parallelism; results depend on it", \.shards, min: 1, from: \.shards),
        RunConfigField(key: "seed", option: "seed", comment: "--seed",
                       read: { r, n, c in c.seed = try r.required(r.uint64(n, "seed"), n, "seed", "an integer") },
                       write: { "\($0.seed)" },
                       apply: { o, c in if let s = o.seed { c.seed = s } }),
        double("learningRate", option: "lr", "--lr (Adam)", \.learningRate, .positive, from: \.lr),
        optionalDouble("weightDecay", option: "weight-decay", "--weight-decay: AdamW's decoupled decay (null: none)", \.weightDecay,
                       .nonNegative, from: \.weightDecay),
        int("warmupSteps", option: "warmup", "--warmup", \.warmupSteps, min: 0, from: \.warmup),
        double("emaDecay", option: "ema", "--ema", \.emaDecay, .unit, from: \.ema),
        double("ambientSMax", option: "s-max", "--s-max: buffer b = sqrt(1 + 1/(s_max - 1))", \.ambientSMax, .any, from: \.sMax),
        int("logEvery", option: "log-every", "--log-every: metrics.jsonl line every N steps", \.logEvery, min: 1, from: \.logEvery),
        optionalDouble("furtherDelta", option: "further-delta", "--further-delta (masked, O3; null: 0.1)", \.furtherDelta, .unit,
                       from: \.furtherDelta),
        optionalDouble("consistencyWeight", option: "consistency-weight", "--consistency-weight (consistency, O4; null: 1)",
                       \.consistencyWeight, .nonNegative, from: \.consistencyWeight),
        optionalDouble("splitSigma", option: "split-sigma", "--split-sigma (split, O6)", \.splitSigma, .positive, from: \.splitSigma),
        RunConfigField(key: "annotatedRows", option: "annotated-rows",
                       comment: "--annotated-rows: noisy-copy or stored (O5; null: noisy-copy)",
                       read: { r, n, c in c.annotatedRows = try r.choice(n, "annotatedRows", "noisy-copy or stored") },
                       write: { $0.annotatedRows.map { ConfigFile.scalar($0.rawValue) } },   // only runs that chose have the key
                       apply: { o, c in if let rows = o.annotatedRows { c.annotatedRows = rows } }),
        RunConfigField(key: "classifierSigma", option: "sigma-distribution",
                       comment: "classifier train --sigma-distribution (null: lognormal)",
                       read: { r, n, c in c.classifierSigma = try r.choice(n, "classifierSigma", "lognormal or loguniform") },
                       write: { $0.classifierSigma.map { ConfigFile.scalar($0.rawValue) } ?? "null" },
                       apply: { _, _ in }),   // an option of `classifier train`, which sets it itself
        RunConfigField(key: "classifierCrop", option: "crops", comment: "--crops: the crops classifier's crop side (O5 crops)",
                       read: { r, n, c in c.classifierCrop = try r.int(n, "classifierCrop", min: 1) },
                       write: { $0.classifierCrop.map { "\($0)" } },   // only crops runs have the key
                       apply: { o, c in if let s = o.crops { c.classifierCrop = s } }),
        resolved("observedFraction", "resolved from the data (masked)", \.observedFraction),
        resolved("samplingFloor", "resolved from the data (ambient on a dataset directory)", \.samplingFloor),
    ] }

    /// The keys a file may have: the fields, then the nested sections.
    static var keys: [String] { all.map(\.key) + ["model", "schedule"] }

    /// Command-line option names that differ from their keys, for "did you mean" (the network's
    /// options all live under `model`).
    static var optionNames: [String: String] {
        var names = ["arch": "model", "width": "model", "blocks": "model", "channels": "model"]
        for f in all { if let o = f.option, o != f.key { names[o] = f.key } }
        return names
    }

    static func number(_ x: Double?) -> String { x.map { "\($0)" } ?? "null" }

    static func int(_ key: String, option: String, _ comment: String, _ field: WritableKeyPath<RunConfig, Int>, min: Int,
                    from given: KeyPath<TrainingOptions, Int?>) -> RunConfigField {
        RunConfigField(key: key, option: option, comment: comment,
                       read: { r, n, c in c[keyPath: field] = try r.required(r.int(n, key, min: min), n, key, "an integer") },
                       write: { "\($0[keyPath: field])" },
                       apply: { o, c in if let v = o[keyPath: given] { c[keyPath: field] = v } })
    }

    static func double(_ key: String, option: String, _ comment: String, _ field: WritableKeyPath<RunConfig, Double>,
                       _ range: ConfigNodeReader.Range, from given: KeyPath<TrainingOptions, Double?>) -> RunConfigField {
        RunConfigField(key: key, option: option, comment: comment,
                       read: { r, n, c in c[keyPath: field] = try r.required(r.double(n, key, range), n, key, "a number") },
                       write: { number($0[keyPath: field]) },
                       apply: { o, c in if let v = o[keyPath: given] { c[keyPath: field] = v } })
    }

    /// A number that may be null (the objective's default).
    static func optionalDouble(_ key: String, option: String, _ comment: String, _ field: WritableKeyPath<RunConfig, Double?>,
                               _ range: ConfigNodeReader.Range, from given: KeyPath<TrainingOptions, Double?>) -> RunConfigField {
        RunConfigField(key: key, option: option, comment: comment,
                       read: { r, n, c in c[keyPath: field] = try r.double(n, key, range) },
                       write: { number($0[keyPath: field]) },
                       apply: { o, c in if let v = o[keyPath: given] { c[keyPath: field] = v } })
    }

    /// A value resolved from the data when training starts (read back from config.json, never an option).
    static func resolved(_ key: String, _ comment: String, _ field: WritableKeyPath<RunConfig, Double?>) -> RunConfigField {
        RunConfigField(key: key, option: nil, comment: comment,
                       read: { r, n, c in c[keyPath: field] = try r.double(n, key, .positive) },
                       write: { number($0[keyPath: field]) },
                       apply: { _, _ in })
    }
}
