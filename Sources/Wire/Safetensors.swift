import FileIO
import TensorCore

/// The safetensors format (Hugging Face), the subset we need for checkpoints and parameter files.
///
/// Layout: a UInt64 little-endian header length N; N bytes of UTF-8 JSON
/// `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
///   "__metadata__": {"key": "value", ...}}`, padded with spaces so the data starts at a multiple
/// of 8 bytes; then the data buffer. Offsets count from the start of the buffer; the tensors
/// tile it exactly (no gap, no overlap, nothing left over), each `end - begin` equal to its
/// element count times the dtype size; data is little-endian, row-major.
///
/// - Writing: float32 only, tensors laid out in the order given, keys of `__metadata__` sorted
///   (omitted when empty); files written to a temporary sibling, fsynced and renamed.
/// - Reading: F32 and F64 (narrowed to Float); tensors returned in offset order, which is the
///   order they were written in. Rejected with a message: a header length past the end of the
///   file or above 100 MB, invalid UTF-8 or JSON, duplicate names, unsupported dtypes,
///   offsets out of range, overlapping, leaving gaps or not matching the shape, non-string
///   metadata, and (unless allowed) NaN or infinite values.
public enum Safetensors {
    /// Largest header accepted, as in the reference implementation.
    public static let maximumHeaderBytes = 100_000_000
    static let metadataKey = "__metadata__"

    // MARK: Encoding

    /// The safetensors bytes of `tensors` (float32, in the given order) and `metadata`.
    public static func encode(_ tensors: [(String, Tensor<Float>)], metadata: [String: String] = [:]) throws -> [UInt8] {
        var seen = Set<String>()
        for (name, _) in tensors {
            guard name != metadataKey else {
                throw SafetensorsError.invalidArgument(problem: "\"\(metadataKey)\" is reserved and cannot name a tensor")
            }
            guard seen.insert(name).inserted else { throw SafetensorsError.duplicateName(name: "<encode>", tensor: name) }
        }
        var entries: [String] = []
        var offset = 0
        for (name, t) in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append("\(JSONValue.quote(name)):{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + 4 * t.count)]}")
            offset += 4 * t.count
        }
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(JSONValue.quote($0.key)):\(JSONValue.quote($0.value))" }
            entries.append("\(JSONValue.quote(metadataKey)):{\(pairs.joined(separator: ","))}")
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        guard header.count <= maximumHeaderBytes else {
            throw SafetensorsError.invalidArgument(problem: "the header would take \(header.count) bytes, over the \(maximumHeaderBytes) limit")
        }

        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        out += header
        let dataStart = out.count
        out += [UInt8](repeating: 0, count: offset)
        out.withUnsafeMutableBytes { dst in
            var o = dataStart
            for (_, t) in tensors {
                for x in t.storage {
                    dst.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: o, as: UInt32.self)
                    o += 4
                }
            }
        }
        return out
    }

    // MARK: Decoding

    /// One tensor's header entry.
    private struct Entry {
        var name: String
        var order: Int
        var itemSize: Int
        var shape: [Int]
        var count: Int
        var begin: Int
        var end: Int
    }

    /// Decodes safetensors bytes; `name` labels errors. Tensors come back in offset order.
    public static func decode(_ bytes: [UInt8], name: String = "<bytes>", allowNonFinite: Bool = false) throws
        -> (tensors: [(String, Tensor<Float>)], metadata: [String: String]) {
        guard bytes.count >= 8 else {
            throw SafetensorsError.truncated(name: name, expectedBytes: 8, actualBytes: bytes.count)
        }
        let declared = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared <= UInt64(bytes.count - 8) else {
            throw SafetensorsError.truncated(name: name, expectedBytes: declared > UInt64(Int.max - 8) ? Int.max : 8 + Int(declared),
                                             actualBytes: bytes.count)
        }
        let headerLength = Int(declared)
        guard headerLength <= maximumHeaderBytes else {
            throw SafetensorsError.invalidHeader(name: name, problem: "header length \(headerLength) exceeds the \(maximumHeaderBytes)-byte limit")
        }
        let headerBytes = Array(bytes[8..<(8 + headerLength)])
        guard String(validating: headerBytes, as: UTF8.self) != nil else {
            throw SafetensorsError.invalidHeader(name: name, problem: "header is not valid UTF-8")
        }
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw SafetensorsError.invalidHeader(name: name, problem: "header must begin with '{'")
        }
        let root: JSONValue
        do {
            root = try JSONValue.parse(headerBytes)
        } catch let e as JSONValue.SyntaxError {
            if let key = e.duplicateKey, e.depth == 0 { throw SafetensorsError.duplicateName(name: name, tensor: key) }
            throw SafetensorsError.invalidHeader(name: name, problem: "invalid JSON at header byte \(e.offset): \(e.problem)")
        }
        guard case let .object(items) = root else {
            throw SafetensorsError.invalidHeader(name: name, problem: "header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (order, (key, value)) in items.enumerated() {
            if key == metadataKey {
                metadata = try parseMetadata(value, name: name)
            } else {
                entries.append(try parseEntry(key, value, order: order, name: name))
            }
        }

        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart
        entries.sort { ($0.begin, $0.end, $0.order) < ($1.begin, $1.end, $1.order) }
        var cursor = 0
        var previous = ""
        for e in entries {
            guard e.end >= e.begin else {
                throw SafetensorsError.badOffsets(name: name, tensor: e.name, problem: "data_offsets [\(e.begin), \(e.end)] decrease")
            }
            guard e.end <= dataLength else {
                throw SafetensorsError.badOffsets(
                    name: name, tensor: e.name,
                    problem: "data_offsets [\(e.begin), \(e.end)] run past the end of the \(dataLength)-byte data buffer "
                        + "(file truncated, or header corrupt)")
            }
            guard e.begin >= cursor else {
                throw SafetensorsError.badOffsets(name: name, tensor: e.name,
                                                  problem: "data_offsets [\(e.begin), \(e.end)] overlap tensor \"\(previous)\" (ends at \(cursor))")
            }
            guard e.begin == cursor else {
                throw SafetensorsError.badOffsets(name: name, tensor: e.name,
                                                  problem: "data_offsets [\(e.begin), \(e.end)] leave a gap after byte \(cursor)")
            }
            guard e.end - e.begin == e.count * e.itemSize else {
                throw SafetensorsError.badOffsets(
                    name: name, tensor: e.name,
                    problem: "data_offsets [\(e.begin), \(e.end)] span \(e.end - e.begin) bytes, shape \(e.shape) needs \(e.count * e.itemSize)")
            }
            cursor = e.end
            previous = e.name
        }
        guard cursor == dataLength else {
            throw SafetensorsError.badOffsets(name: name, tensor: previous,
                                              problem: "\(dataLength - cursor) bytes after the last tensor are not part of any tensor")
        }

        var tensors: [(String, Tensor<Float>)] = []
        tensors.reserveCapacity(entries.count)
        try bytes.withUnsafeBytes { raw in
            for e in entries {
                var values = [Float](repeating: 0, count: e.count)
                let base = dataStart + e.begin
                if e.itemSize == 4 {
                    for i in 0..<e.count {
                        values[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
                    }
                } else {
                    for i in 0..<e.count {
                        values[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8 * i, as: UInt64.self))))
                    }
                }
                if !allowNonFinite, let i = values.firstIndex(where: { !$0.isFinite }) {
                    throw SafetensorsError.nonFinite(name: name, tensor: e.name, index: i, value: values[i])
                }
                tensors.append((e.name, Tensor(shape: e.shape, storage: values)))
            }
        }
        return (tensors, metadata)
    }

    private static func parseMetadata(_ value: JSONValue, name: String) throws -> [String: String] {
        guard case let .object(pairs) = value else {
            throw SafetensorsError.invalidHeader(name: name, problem: "\"\(metadataKey)\" is not an object")
        }
        var out: [String: String] = [:]
        for (k, v) in pairs {
            guard case let .string(s) = v else {
                throw SafetensorsError.invalidHeader(name: name, problem: "metadata value of \"\(k)\" is not a string")
            }
            out[k] = s
        }
        return out
    }

    private static func parseEntry(_ tensor: String, _ value: JSONValue, order: Int, name: String) throws -> Entry {
        guard case let .object(fields) = value else {
            throw SafetensorsError.invalidHeader(name: name, problem: "entry \"\(tensor)\" is not an object")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let v = fields.first(where: { $0.key == key })?.value else {
                throw SafetensorsError.invalidHeader(name: name, problem: "entry \"\(tensor)\" has no \"\(key)\"")
            }
            return v
        }
        func naturals(_ key: String) throws -> [Int] {
            guard case let .array(items) = try field(key) else {
                throw SafetensorsError.invalidHeader(name: name, problem: "\"\(key)\" of \"\(tensor)\" is not an array")
            }
            return try items.map {
                guard case let .integer(i) = $0, i >= 0 else {
                    throw SafetensorsError.invalidHeader(name: name, problem: "\"\(key)\" of \"\(tensor)\" holds a non-integer or negative value")
                }
                return i
            }
        }
        guard case let .string(dtype) = try field("dtype") else {
            throw SafetensorsError.invalidHeader(name: name, problem: "\"dtype\" of \"\(tensor)\" is not a string")
        }
        let itemSize: Int
        switch dtype {
        case "F32": itemSize = 4
        case "F64": itemSize = 8
        default: throw SafetensorsError.unsupportedDType(name: name, tensor: tensor, dtype: dtype)
        }
        let shape = try naturals("shape")
        let offsets = try naturals("data_offsets")
        guard offsets.count == 2 else {
            throw SafetensorsError.badOffsets(name: name, tensor: tensor, problem: "data_offsets has \(offsets.count) numbers, expected [begin, end]")
        }
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, !p.multipliedReportingOverflow(by: itemSize).overflow else {
                throw SafetensorsError.invalidHeader(name: name, problem: "shape \(shape) of \"\(tensor)\" is too large")
            }
            count = p
        }
        return Entry(name: tensor, order: order, itemSize: itemSize, shape: shape, count: count,
                     begin: offsets[0], end: offsets[1])
    }

    // MARK: Files

    /// Writes `tensors` and `metadata` to `path` atomically (temporary sibling, fsync, rename).
    public static func write(_ tensors: [(String, Tensor<Float>)], metadata: [String: String] = [:], to path: String) throws {
        try FileBytes.writeAtomically(encode(tensors, metadata: metadata), to: path)
    }

    /// Reads a safetensors file (see `decode`).
    public static func read(_ path: String, allowNonFinite: Bool = false) throws
        -> (tensors: [(String, Tensor<Float>)], metadata: [String: String]) {
        try decode(FileBytes.contents(of: path), name: path, allowNonFinite: allowNonFinite)
    }
}
