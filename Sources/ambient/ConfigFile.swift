import Datasets
import Diffusion
import FileIO
import Foundation
import TensorCore
import Training
import Yams

/// Run configuration files (`--config run.yaml` or `run.json`): one schema, the keys of
/// `RunConfig` (as in a run directory's config.json), in YAML or JSON syntax. Both are read by
/// the YAML parser (JSON is YAML's flow style) and mapped by hand from the node tree, so every
/// unknown key, repeated key, wrong type or out-of-range value is reported with the file, line
/// and column. Keys left out take their defaults; the derived ones (data dimension, mask
/// channels, observed fraction, sampling floor) are recomputed from the data when training starts.
enum ConfigFile {
    /// Reads a configuration file: the configuration and the top-level keys the file gives (the
    /// defaults that depend on the data, such as the image network, apply only to what the file
    /// leaves out). `dataGiven`: `--data` is on the command line, so the file may leave `data` out.
    static func loadDocument(_ path: String, dataGiven: Bool = false) throws -> (config: RunConfig, keys: Set<String>) {
        let bytes: [UInt8]
        do {
            bytes = try FileBytes.contents(of: path)
        } catch {
            throw ConfigurationError(message: "--config: \(error)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(message: "\(path) is not UTF-8 text; a run configuration is YAML or JSON")
        }
        return try parseDocument(text, file: path, dataGiven: dataGiven)
    }

    /// Maps the text of a configuration file; `file` names it in errors.
    static func parse(_ text: String, file: String, dataGiven: Bool = false) throws -> RunConfig {
        try parseDocument(text, file: file, dataGiven: dataGiven).config
    }

    static func parseDocument(_ text: String, file: String, dataGiven: Bool = false) throws -> (config: RunConfig, keys: Set<String>) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigurationError(message: syntaxError(error, file: file))
        }
        guard var node = root, !(node.scalar.map { ConfigNodeReader.isNull($0) } ?? false) else {
            throw ConfigurationError(message: "\(file) is empty: expected run options such as `data: fashion-mnist` (ambient train --dry-run prints them all)")
        }
        let reader = ConfigNodeReader(file: file)
        // A run directory's config.json ({formatVersion, hash, config, ...}) holds the options under `config`.
        if let m = node.mapping, m["formatVersion"] != nil, let inner = m["config"] { node = inner }
        let keys = Set(node.mapping.map { $0.keys.compactMap(\.string) } ?? [])
        return (try reader.runConfig(node, dataGiven: dataGiven), keys)
    }

    static func syntaxError(_ error: YamlError, file: String) -> String {
        switch error {
        case let .scanner(context, problem, mark, yaml), let .parser(context, problem, mark, yaml),
             let .composer(context, problem, mark, yaml):
            let where_ = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return "\(file):\(mark.line):\(mark.column): not valid YAML: \(problem)\(where_)\n" + mark.snippet(from: yaml)
        default:
            return "\(file): not valid YAML: \(error)"
        }
    }
}

// MARK: Writing

extension ConfigFile {
    /// The configuration as a YAML file that `load` reads back to the same value: every key,
    /// `null` for options left at the objective's default, a comment naming each key's
    /// command-line option.
    static func yaml(_ c: RunConfig) -> String {
        var lines: [(String, String)] = []
        func put(_ indent: Int, _ key: String, _ value: String?, _ comment: String = "") {
            lines.append((String(repeating: "  ", count: indent) + key + ":" + (value.map { " " + $0 } ?? ""), comment))
        }
        for field in RunConfigField.all {
            if let value = field.write(c) { put(0, field.key, value, field.comment) }
        }
        put(0, "model", nil, "--arch mlp (--width, --blocks) or --arch unet (--channels)")
        put(1, "arch", c.model.arch)
        switch c.model {
        case let .mlp(m):
            put(1, "mlp", nil)
            for f in ConfigSections.mlp { put(2, f.key, f.write(m), f.comment) }
        case let .unet(u):
            put(1, "unet", nil)
            for f in ConfigSections.unet { put(2, f.key, f.write(u), f.comment) }
        }
        put(0, "schedule", nil, "EDM (SPEC, Conventions)")
        for f in ConfigSections.schedule { put(1, f.key, f.write(c.schedule), f.comment) }
        let width = lines.map(\.0.count).filter { $0 <= 36 }.max() ?? 0   // a long data spec keeps its comment close
        return lines.map { $0.1.isEmpty ? $0.0 : $0.0.padding(toLength: max(width, $0.0.count) + 2, withPad: " ", startingAt: 0) + "# " + $0.1 }
            .joined(separator: "\n") + "\n"
    }

    /// A string as a YAML scalar: plain when that reads back as the same string, else double-quoted.
    static func scalar(_ s: String) -> String {
        let safe = s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "_./-".unicodeScalars.contains($0) }
        let special = ["", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"].contains(s.lowercased())
        if safe && !special && Double(s) == nil && !s.hasPrefix("-") && !s.hasPrefix(".") { return s }
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
