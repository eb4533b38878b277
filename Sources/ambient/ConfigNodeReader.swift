import Datasets
import Diffusion
import FileIO
import Foundation
import TensorCore
import Training
import Yams

/// Maps YAML nodes to the configuration types, checking every key, type and simple range.
struct ConfigNodeReader {
    let file: String

    func fail(_ node: Node?, _ message: String) -> ConfigurationError {
        ConfigurationError(message: "\(file)\(node?.mark.map { ":\($0.line):\($0.column)" } ?? ""): \(message)")
    }

    static func isNull(_ s: Node.Scalar) -> Bool {
        s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string) || s.style == .any && s.string.isEmpty
    }

    /// The entries of a mapping by key, refusing unknown and repeated keys (with a suggestion).
    func entries(_ node: Node, _ path: String, known: [String]) throws -> [String: (key: Node, value: Node)] {
        guard let mapping = node.mapping else {
            throw fail(node, "\(path.isEmpty ? "the file" : "'\(path)'") must be a mapping of keys to values, got \(describe(node))")
        }
        var out: [String: (key: Node, value: Node)] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else { throw fail(key, "keys must be plain names, got \(describe(key))") }
            let full = path.isEmpty ? name : path + "." + name
            guard known.contains(name) else {
                throw fail(key, "unknown key '\(full)'\(suggestion(name, known: known)); known keys\(path.isEmpty ? "" : " of '\(path)'"): \(known.joined(separator: ", "))")
            }
            if let first = out[name] {
                throw fail(key, "key '\(full)' appears twice (first at line \(first.key.mark?.line ?? 0))")
            }
            out[name] = (key, value)
        }
        return out
    }

    func describe(_ node: Node) -> String {
        switch node {
        case let .scalar(s): return ConfigNodeReader.isNull(s) ? "null" : "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    /// "did you mean" for a misspelt key, a snake/kebab-case key, or a command-line option name.
    func suggestion(_ name: String, known: [String]) -> String {
        let folded = name.lowercased().filter { $0.isLetter || $0.isNumber }
        if let k = known.first(where: { $0.lowercased() == folded }) { return " (did you mean '\(k)'?)" }
        if let k = RunConfigField.optionNames[name.hasPrefix("--") ? String(name.dropFirst(2)) : name], known.contains(k) {
            return " (the option --\(name.hasPrefix("--") ? String(name.dropFirst(2)) : name) is the key '\(k)')"
        }
        let close = known.map { ($0, editDistance($0.lowercased(), name.lowercased())) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }
        return close.map { " (did you mean '\($0.0)'?)" } ?? ""
    }

    // MARK: Scalars

    func scalarText(_ node: Node, _ key: String, expected: String) throws -> String? {
        guard let s = node.scalar else { throw fail(node, "'\(key)' must be \(expected), got \(describe(node))") }
        if ConfigNodeReader.isNull(s) { return nil }
        if s.style != .plain && s.style != .any && expected != "a string" {
            throw fail(node, "'\(key)' must be \(expected), got the quoted string \"\(s.string)\"")
        }
        return s.string
    }

    func required<T>(_ value: T?, _ node: Node, _ key: String, _ expected: String) throws -> T {
        guard let value else { throw fail(node, "'\(key)' must be \(expected), got null") }
        return value
    }

    func int(_ node: Node, _ key: String, min: Int? = nil) throws -> Int? {
        guard let text = try scalarText(node, key, expected: "an integer") else { return nil }
        guard let v = Int(text) else { throw fail(node, "'\(key)' must be an integer, got '\(text)'") }
        if let min, v < min { throw fail(node, "'\(key)' must be >= \(min), got \(v)") }
        return v
    }

    func uint64(_ node: Node, _ key: String) throws -> UInt64? {
        guard let text = try scalarText(node, key, expected: "a non-negative integer") else { return nil }
        guard let v = UInt64(text) else { throw fail(node, "'\(key)' must be a non-negative integer, got '\(text)'") }
        return v
    }

    enum Range { case any, positive, nonNegative, unit }

    func double(_ node: Node, _ key: String, _ range: Range = .any) throws -> Double? {
        guard let text = try scalarText(node, key, expected: "a number") else { return nil }
        guard let v = Double(text), v.isFinite else { throw fail(node, "'\(key)' must be a finite number, got '\(text)'") }
        switch range {
        case .any: break
        case .positive where !(v > 0): throw fail(node, "'\(key)' must be > 0, got \(text)")
        case .nonNegative where !(v >= 0): throw fail(node, "'\(key)' must be >= 0, got \(text)")
        case .unit where !(v >= 0 && v < 1): throw fail(node, "'\(key)' must be in [0, 1), got \(text)")
        default: break
        }
        return v
    }

    func bool(_ node: Node, _ key: String) throws -> Bool? {
        guard let text = try scalarText(node, key, expected: "true or false") else { return nil }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: throw fail(node, "'\(key)' must be true or false, got '\(text)'")
        }
    }

    func string(_ node: Node, _ key: String) throws -> String? {
        try scalarText(node, key, expected: "a string")
    }

    /// One of an enum's names (nil for null); `names` lists them in the error.
    func choice<E: RawRepresentable>(_ node: Node, _ key: String, _ names: String) throws -> E? where E.RawValue == String {
        guard let s = try string(node, key) else { return nil }
        guard let value = E(rawValue: s) else { throw fail(node, "'\(key)' must be \(names), got '\(s)'") }
        return value
    }

    func ints(_ node: Node, _ key: String, min: Int) throws -> [Int] {
        guard let seq = node.sequence else { throw fail(node, "'\(key)' must be a list of integers such as [16, 32, 64], got \(describe(node))") }
        return try seq.enumerated().map { i, n in try required(int(n, "\(key)[\(i)]", min: min), n, "\(key)[\(i)]", "an integer") }
    }

    // MARK: Configuration types

    func runConfig(_ node: Node, dataGiven: Bool) throws -> RunConfig {
        let e = try entries(node, "", known: RunConfigField.keys)
        if e["data"] == nil && !dataGiven {
            throw fail(node, "no 'data' key: say where the training data comes from (e.g. `data: fashion-mnist`), or give --data")
        }
        var c = RunConfig(data: .fashionMNIST, model: .mlp(MLPConfig(dataDimension: 1)))
        c.shards = min(4, c.batch)
        for field in RunConfigField.all {
            if let (_, v) = e[field.key] { try field.read(self, v, &c) }
        }
        if let (_, v) = e["model"] { c.model = try network(v) }
        if let (_, v) = e["schedule"] { c.schedule = try schedule(v) }
        return c
    }

    /// A data spec: the string `--data` takes, or the object form of earlier config.json files.
    func dataSpec(_ node: Node) throws -> DataSpec {
        if let s = node.scalar, !ConfigNodeReader.isNull(s) {
            do { return try DataSpec.parse(s.string) } catch { throw fail(node, "'data': \(error)") }
        }
        if node.mapping != nil { return try legacy(node, DataSpec.self, key: "data") }
        throw fail(node, "'data' must be a data source such as fashion-mnist, gmm:dim=8, npy:PATH or dir:PATH, got \(describe(node))")
    }

    func corruptionSpec(_ node: Node) throws -> CorruptionSpec {
        if let s = node.scalar {
            do { return try CorruptionSpec.parse(s.string) } catch { throw fail(node, "'corruption': \(error)") }
        }
        if node.mapping != nil { return try legacy(node, CorruptionSpec.self, key: "corruption") }
        throw fail(node, "'corruption' must be a spec such as noise:0.5 or mask:0.6, got \(describe(node))")
    }

    /// Decodes the synthesized object form of older run directories through the types' Codable.
    func legacy<T: Decodable>(_ node: Node, _ type: T.Type, key: String) throws -> T {
        do {
            let json = try JSONSerialization.data(withJSONObject: plain(node))
            return try JSONDecoder().decode(T.self, from: json)
        } catch {
            throw fail(node, "'\(key)' is neither a spec string nor the object form of an earlier config.json")
        }
    }

    /// A node as Foundation values (numbers for plain numeric scalars), for `legacy`.
    func plain(_ node: Node) -> Any {
        switch node {
        case let .scalar(s):
            if s.style == .plain || s.style == .any, let i = Int(s.string) { return i }
            if s.style == .plain || s.style == .any, let d = Double(s.string) { return d }
            return s.string
        case let .mapping(m):
            var d: [String: Any] = [:]
            for (k, v) in m { d[k.scalar?.string ?? ""] = plain(v) }
            return d
        case let .sequence(s): return s.map(plain)
        }
    }

    func network(_ node: Node) throws -> NetworkConfig {
        let e = try entries(node, "model", known: ["arch", "mlp", "unet"])
        let arch = try e["arch"].map { try required(string($0.value, "model.arch"), $0.value, "model.arch", "mlp or unet") }
            ?? (e["unet"] != nil ? "unet" : "mlp")
        switch arch {
        case "mlp":
            if let u = e["unet"] { throw fail(u.key, "'model.unet' given but model.arch is mlp") }
            return .mlp(try mlp(e["mlp"]?.value))
        case "unet":
            if let m = e["mlp"] { throw fail(m.key, "'model.mlp' given but model.arch is unet") }
            return .unet(try unet(e["unet"]?.value))
        default:
            throw fail(e["arch"]?.value, "unknown 'model.arch' '\(arch)'; choose mlp or unet")
        }
    }

    func mlp(_ node: Node?) throws -> MLPConfig {
        try section(node, "model.mlp", ConfigSections.mlp, MLPConfig(dataDimension: 1))
    }

    func unet(_ node: Node?) throws -> UNetConfig {
        try section(node, "model.unet", ConfigSections.unet, UNetConfig(dataDimension: 1))
    }

    func schedule(_ node: Node) throws -> EDMSchedule {
        let s = try section(node, "schedule", ConfigSections.schedule, EDMSchedule())
        if s.sigmaMin >= s.sigmaMax {
            let key = { (name: String) in node.mapping?.first { $0.key.string == name }?.key }
            throw fail(key("sigmaMin") ?? key("sigmaMax"), "'schedule.sigmaMin' (\(s.sigmaMin)) must be below 'schedule.sigmaMax' (\(s.sigmaMax))")
        }
        return s
    }
}

/// Levenshtein distance, for "did you mean".
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    var row = Array(0...b.count)
    for i in 1...a.count {
        var previous = row[0]
        row[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            let old = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = old
        }
    }
    return row[b.count]
}
