import FileIO
import TensorCore
/// An unsigned-byte array read from an IDX file: its dimensions and its elements in row-major order.
public struct IDXArray: Equatable, Sendable {
    public var shape: [Int]
    public var bytes: [UInt8]

    public init(shape: [Int], bytes: [UInt8]) {
        self.shape = shape
        self.bytes = bytes
    }
}

/// The IDX format of the (Fashion-)MNIST files (LeCun et al., "THE MNIST DATABASE").
///
/// Layout: two zero bytes, a type byte (0x08 = unsigned byte), a rank byte r, r big-endian
/// UInt32 dimensions, then the elements in row-major order. Images are `00 00 08 03`
/// (`[N, rows, cols]`), labels `00 00 08 01` (`[N]`). Only the unsigned-byte type is read:
/// it is the only one the datasets use.
public enum IDX {
    /// Element types of the IDX format, by type byte, for error messages.
    private static let typeNames: [UInt8: String] = [
        0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "Int16", 0x0C: "Int32", 0x0D: "Float32", 0x0E: "Float64",
    ]

    /// Parses IDX bytes; `name` labels errors. The byte count must match the dimensions exactly.
    public static func decode(_ bytes: [UInt8], name: String) throws -> IDXArray {
        guard bytes.count >= 4 else {
            throw DatasetError.wrongLength(name: name, expectedBytes: 4, actualBytes: bytes.count)
        }
        guard bytes[0] == 0, bytes[1] == 0, typeNames[bytes[2]] != nil, bytes[3] >= 1 else {
            throw DatasetError.badMagic(name: name, format: "IDX", expected: "00 00 08 0r (r = rank >= 1)",
                                        found: hex(bytes.prefix(4)))
        }
        guard bytes[2] == 0x08 else {
            throw DatasetError.unsupported(name: name, found: "IDX element type \(typeNames[bytes[2]] ?? "?")",
                                           supported: "unsigned byte (type 0x08)")
        }
        let rank = Int(bytes[3])
        let headerBytes = 4 + 4 * rank
        guard bytes.count >= headerBytes else {
            throw DatasetError.wrongLength(name: name, expectedBytes: headerBytes, actualBytes: bytes.count)
        }
        var shape: [Int] = []
        var elements = 1
        for axis in 0..<rank {
            let o = 4 + 4 * axis
            let dimension = Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
            shape.append(dimension)
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw DatasetError.malformed(name: name, problem: "dimensions \(shape) overflow the element count")
            }
            elements = product
        }
        let (expected, overflow) = headerBytes.addingReportingOverflow(elements)
        guard !overflow, bytes.count == expected else {
            throw DatasetError.wrongLength(name: name, expectedBytes: overflow ? Int.max : expected,
                                           actualBytes: bytes.count)
        }
        return IDXArray(shape: shape, bytes: Array(bytes[headerBytes...]))
    }

    /// Serialises an unsigned-byte array (rank 1 to 255, dimensions below 2^32) as IDX.
    public static func encode(_ array: IDXArray) throws -> [UInt8] {
        guard (1...255).contains(array.shape.count),
              array.shape.allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) }),
              array.shape.reduce(1, *) == array.bytes.count else {
            throw DatasetError.invalidArgument(
                what: "IDX array", expected: "rank 1...255, dimensions in 0..<2^32, product = element count",
                found: "shape \(array.shape) with \(array.bytes.count) elements")
        }
        var out: [UInt8] = [0, 0, 0x08, UInt8(array.shape.count)]
        for d in array.shape {
            out += [UInt8(truncatingIfNeeded: d >> 24), UInt8(truncatingIfNeeded: d >> 16),
                    UInt8(truncatingIfNeeded: d >> 8), UInt8(truncatingIfNeeded: d)]
        }
        return out + array.bytes
    }

    /// Reads an IDX file, gunzipping it first when it starts with the gzip signature.
    public static func read(_ path: String) throws -> IDXArray {
        let raw = try FileBytes.contents(of: path)
        let bytes = raw.starts(with: [0x1f, 0x8b]) ? try gunzip(raw, name: path) : raw
        return try decode(bytes, name: path)
    }
}
