import FileIO
import TensorCore

/// NumPy's `.npy` format (numpy.lib.format, versions 1.0, 2.0 and 3.0), the subset we need.
///
/// Layout: the magic `\x93NUMPY`, a major and a minor version byte, the header length (UInt16
/// little-endian in 1.0, UInt32 in 2.0 and 3.0), the header: a Python dict literal
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and ended by
/// `\n` so the data starts at a multiple of 64 bytes, then the elements.
///
/// - Writing: float32 `'<f4'` or int64 `'<i8'`, C order, any shape, version 1.0 (2.0 only when
///   the header exceeds 65,535 bytes). Files are written to a temporary sibling and renamed.
/// - Reading floats: `'<f4'`, `'<f8'` (narrowed to Float). Reading integers: `'|b1'`, `'|u1'`,
///   `'|i1'`, `'<u2'`, `'<i2'`, `'<u4'`, `'<i4'`, `'<u8'`, `'<i8'`.
/// - Rejected with a message: big-endian data, Fortran order (for rank >= 2: in rank 0 and 1
///   it is the same bytes), structured dtypes, object arrays, a byte count that differs from
///   the shape, and (unless allowed) NaN or infinite floats.
public enum NPY {
    static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    /// numpy aligns the start of the data to this many bytes.
    static let alignment = 64

    // MARK: Encoding

    /// The `.npy` bytes of `t` as little-endian float32 in C order.
    public static func encode(_ t: Tensor<Float>) -> [UInt8] {
        var out = header(descr: "<f4", shape: t.shape)
        let start = out.count
        out += [UInt8](repeating: 0, count: 4 * t.count)
        t.storage.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in
                for (i, x) in src.enumerated() {
                    dst.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: start + 4 * i, as: UInt32.self)
                }
            }
        }
        return out
    }

    /// The `.npy` bytes of `integers` with `shape`, as little-endian int64 in C order.
    public static func encode(integers: [Int], shape: [Int]) throws -> [UInt8] {
        guard shape.allSatisfy({ $0 >= 0 }), elementCount(shape) == integers.count else {
            throw DatasetError.invalidArgument(what: "NPY integer array", expected: "shape whose product is \(integers.count)",
                                               found: "\(shape)")
        }
        var out = header(descr: "<i8", shape: shape)
        for v in integers { withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 } }
        return out
    }

    /// Preamble and padded header for `descr` and `shape`, ending where the data starts.
    static func header(descr: String, shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        var preamble = 10  // magic, version, UInt16 length
        var major: UInt8 = 1
        if preamble + dict.count + 1 > 65_535 {
            preamble = 12
            major = 2
        }
        let padding = (alignment - (preamble + dict.count + 1) % alignment) % alignment
        dict += [UInt8](repeating: 0x20, count: padding) + [0x0A]
        var out = magic + [major, 0]
        if major == 1 {
            withUnsafeBytes(of: UInt16(dict.count).littleEndian) { out += $0 }
        } else {
            withUnsafeBytes(of: UInt32(dict.count).littleEndian) { out += $0 }
        }
        return out + dict
    }

    // MARK: Decoding

    /// Decodes float32 or float64 `.npy` bytes; `name` labels errors. NaN and infinities are an
    /// error unless `allowNonFinite`.
    public static func decodeFloat(_ bytes: [UInt8], name: String, allowNonFinite: Bool = false) throws -> Tensor<Float> {
        let (header, offset) = try parseHeader(bytes, name: name)
        let type = try header.elementType(name: name)
        guard type.kind == "f", type.size == 4 || type.size == 8 else {
            throw DatasetError.unsupported(name: name, found: "dtype '\(header.descr)' for a float array",
                                           supported: "'<f4', '<f8' (use NPY.readIntegers for integer and boolean dtypes)")
        }
        let count = try checkLength(bytes, header: header, dataOffset: offset, itemSize: type.size, name: name)
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            if type.size == 4 {
                for i in 0..<count {
                    values[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * i, as: UInt32.self)))
                }
            } else {
                for i in 0..<count {
                    values[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8 * i, as: UInt64.self))))
                }
            }
        }
        let tensor = Tensor(shape: header.shape, storage: values)
        if !allowNonFinite { try validateFinite(tensor, name: name) }
        return tensor
    }

    /// Decodes integer or boolean `.npy` bytes into `Int`s; `name` labels errors.
    public static func decodeIntegers(_ bytes: [UInt8], name: String) throws -> (shape: [Int], values: [Int]) {
        let (header, offset) = try parseHeader(bytes, name: name)
        let type = try header.elementType(name: name)
        let supported = "'|b1', '|u1', '|i1', '<u2', '<i2', '<u4', '<i4', '<u8', '<i8' (use NPY.readFloat for floats)"
        guard "biu".contains(type.kind), [1, 2, 4, 8].contains(type.size), type.kind != "b" || type.size == 1 else {
            throw DatasetError.unsupported(name: name, found: "dtype '\(header.descr)' for an integer array", supported: supported)
        }
        let count = try checkLength(bytes, header: header, dataOffset: offset, itemSize: type.size, name: name)
        var values = [Int](repeating: 0, count: count)
        var badIndex: Int? = nil
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                let o = offset + type.size * i
                switch (type.kind, type.size) {
                case ("b", _), ("u", 1): values[i] = Int(raw[o])
                case ("i", 1): values[i] = Int(Int8(bitPattern: raw[o]))
                case ("u", 2): values[i] = Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
                case ("i", 2): values[i] = Int(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int16.self)))
                case ("u", 4): values[i] = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                case ("i", 4): values[i] = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int32.self)))
                case ("u", _):
                    let v = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
                    if v > UInt64(Int.max) { badIndex = badIndex ?? i } else { values[i] = Int(v) }
                default: values[i] = Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self)))
                }
                if type.kind == "b", values[i] > 1 { badIndex = badIndex ?? i }
            }
        }
        if let i = badIndex {
            throw DatasetError.malformed(name: name, problem: type.kind == "b"
                ? "boolean element \(i) is \(values[i]), neither 0 nor 1"
                : "uint64 element \(i) does not fit in a signed 64-bit Int")
        }
        return (header.shape, values)
    }

    /// The header of `.npy` bytes and the offset where the data starts.
    static func parseHeader(_ bytes: [UInt8], name: String) throws -> (NPYHeader, Int) {
        guard bytes.count >= 10 else {
            throw DatasetError.wrongLength(name: name, expectedBytes: 10, actualBytes: bytes.count)
        }
        guard bytes.starts(with: magic) else {
            throw DatasetError.badMagic(name: name, format: "NPY", expected: "93 4e 55 4d 50 59 (\\x93NUMPY)",
                                        found: hex(bytes.prefix(6)))
        }
        let major = bytes[6]
        let headerStart: Int
        let headerLength: Int
        switch major {
        case 1:
            headerStart = 10
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        case 2, 3:
            guard bytes.count >= 12 else {
                throw DatasetError.wrongLength(name: name, expectedBytes: 12, actualBytes: bytes.count)
            }
            headerStart = 12
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        default:
            throw DatasetError.unsupported(name: name, found: "NPY format version \(major).\(bytes[7])",
                                           supported: "versions 1.0, 2.0, 3.0")
        }
        guard bytes.count >= headerStart + headerLength else {
            throw DatasetError.wrongLength(name: name, expectedBytes: headerStart + headerLength, actualBytes: bytes.count)
        }
        let header = try NPYHeader(Array(bytes[headerStart..<(headerStart + headerLength)]), name: name)
        return (header, headerStart + headerLength)
    }

    /// Checks that the data holds exactly `product(shape) * itemSize` bytes; returns the element count.
    private static func checkLength(_ bytes: [UInt8], header: NPYHeader, dataOffset: Int, itemSize: Int,
                                    name: String) throws -> Int {
        if header.fortranOrder && header.shape.filter({ $0 > 1 }).count > 1 {
            throw DatasetError.unsupported(name: name, found: "Fortran (column-major) order for shape \(header.shape)",
                                           supported: "C order (save with np.ascontiguousarray)")
        }
        guard let count = checkedElementCount(header.shape),
              case let (dataBytes, false) = count.multipliedReportingOverflow(by: itemSize),
              case let (total, false) = dataOffset.addingReportingOverflow(dataBytes) else {
            throw DatasetError.malformed(name: name, problem: "shape \(header.shape) is too large to address")
        }
        guard bytes.count == total else {
            throw DatasetError.wrongLength(name: name, expectedBytes: total, actualBytes: bytes.count)
        }
        return count
    }

    // MARK: Files

    /// Reads a float32 or float64 `.npy` file as a `Tensor<Float>` (see `decodeFloat`).
    public static func readFloat(_ path: String, allowNonFinite: Bool = false) throws -> Tensor<Float> {
        try decodeFloat(FileBytes.contents(of: path), name: path, allowNonFinite: allowNonFinite)
    }

    /// Reads an integer or boolean `.npy` file (see `decodeIntegers`).
    public static func readIntegers(_ path: String) throws -> (shape: [Int], values: [Int]) {
        try decodeIntegers(FileBytes.contents(of: path), name: path)
    }

    /// Writes `t` as a float32 `.npy` file, atomically (temporary sibling, fsync, rename).
    public static func write(_ t: Tensor<Float>, to path: String) throws {
        try FileBytes.writeAtomically(encode(t), to: path)
    }

    /// Writes `integers` with `shape` as an int64 `.npy` file, atomically.
    public static func write(integers: [Int], shape: [Int], to path: String) throws {
        try FileBytes.writeAtomically(encode(integers: integers, shape: shape), to: path)
    }
}

/// The product of non-negative dimensions, or nil when it overflows.
func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        n = p
    }
    return n
}

/// The product of dimensions, or -1 when it overflows or a dimension is negative.
func elementCount(_ shape: [Int]) -> Int { checkedElementCount(shape) ?? -1 }
