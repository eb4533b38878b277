import CZlib
import FileIO
import TensorCore

/// 8-bit grayscale PNG (RFC 2083 / W3C PNG specification), enough to look at samples.
///
/// Writing: signature, IHDR (bit depth 8, colour type 0, no interlace), one IDAT holding the
/// rows, each prefixed by filter byte 0, deflated with zlib `compress2`, then IEND; every chunk
/// carries the CRC-32 of its type and data. Reading (`decodeGray`) accepts the same kind of image
/// from any encoder: several IDAT chunks and all five row filters; it checks every CRC.
///
/// Grids (`writeGrid`): tiles of H x W placed left to right, top to bottom, `columns` per row,
/// with a 1-pixel line of `padValue` between neighbouring tiles (none around the border) and
/// unused tiles of the last row filled with `padValue`. A value x maps to
/// `round(255 (x - lo)/(hi - lo))` clamped to 0...255.
public enum PNG {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    /// Largest image `decodeGray` accepts, in pixels, so a hostile header cannot exhaust memory.
    public static let maximumPixels = 1 << 28

    // MARK: Encoding

    /// A PNG file holding `pixels` (row-major, `width * height` bytes, 0 = black).
    public static func encodeGray(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        precondition(width > 0 && height > 0 && width <= Int(Int32.max) && height <= Int(Int32.max),
                     "PNG dimensions must be in 1...2^31-1, got \(width) x \(height)")
        precondition(pixels.count == width * height, "\(pixels.count) pixels for \(width) x \(height)")
        var raw = [UInt8](repeating: 0, count: height * (width + 1))
        for y in 0..<height {
            raw.replaceSubrange((y * (width + 1) + 1)...(y * (width + 1) + width), with: pixels[(y * width)..<((y + 1) * width)])
        }
        var header: [UInt8] = []
        appendBigEndian(UInt32(width), to: &header)
        appendBigEndian(UInt32(height), to: &header)
        header += [8, 0, 0, 0, 0]  // bit depth, colour type gray, deflate, filter method 0, no interlace
        var out = signature
        appendChunk("IHDR", header, to: &out)
        appendChunk("IDAT", zlibCompress(raw), to: &out)
        appendChunk("IEND", [], to: &out)
        return out
    }

    /// Tiles `images` into one grayscale grid image (layout above). `images` is `[N, 1, H, W]`
    /// or `[N, H, W]`; for flat `[N, H*W]` data use `gridPixels(_:height:width:...)`.
    public static func gridPixels(_ images: Tensor<Float>, columns: Int, range: ClosedRange<Double> = -1...1,
                                  padValue: UInt8 = 128) throws -> (width: Int, height: Int, pixels: [UInt8]) {
        let s = images.shape
        guard (s.count == 4 && s[1] == 1) || s.count == 3 else {
            throw DatasetError.badShape(name: "image grid", expected: "[N, 1, H, W] or [N, H, W] (or pass height and width)",
                                        found: "\(s)")
        }
        return try gridPixels(images, height: s[s.count - 2], width: s[s.count - 1], columns: columns, range: range,
                              padValue: padValue)
    }

    /// Tiles `images` (`N` rows of `height * width` values) into one grayscale grid image.
    public static func gridPixels(_ images: Tensor<Float>, height: Int, width: Int, columns: Int,
                                  range: ClosedRange<Double> = -1...1,
                                  padValue: UInt8 = 128) throws -> (width: Int, height: Int, pixels: [UInt8]) {
        let n = images.rank == 0 ? 0 : images.rows
        guard n > 0, height > 0, width > 0, images.rowSize == height * width else {
            throw DatasetError.badShape(name: "image grid", expected: "N >= 1 images of \(height) x \(width) values",
                                        found: "\(images.shape)")
        }
        guard columns > 0 else {
            throw DatasetError.invalidArgument(what: "grid columns", expected: "at least 1", found: "\(columns)")
        }
        guard range.lowerBound.isFinite, range.upperBound.isFinite, range.upperBound > range.lowerBound else {
            throw DatasetError.invalidArgument(what: "grid value range", expected: "finite lo < hi", found: "\(range)")
        }
        try validateFinite(images, name: "image grid")
        let cols = min(columns, n)
        let rows = (n + cols - 1) / cols
        let gridWidth = cols * width + (cols - 1), gridHeight = rows * height + (rows - 1)
        var pixels = [UInt8](repeating: padValue, count: gridWidth * gridHeight)
        let lo = range.lowerBound, scale = 255 / (range.upperBound - range.lowerBound)
        for i in 0..<n {
            let top = (i / cols) * (height + 1), left = (i % cols) * (width + 1)
            for y in 0..<height {
                for x in 0..<width {
                    let v = (Double(images.storage[i * height * width + y * width + x]) - lo) * scale
                    pixels[(top + y) * gridWidth + left + x] = UInt8(min(255, max(0, v.rounded())))
                }
            }
        }
        return (gridWidth, gridHeight, pixels)
    }

    /// Writes `images` (`[N, 1, H, W]` or `[N, H, W]`) as a PNG grid, atomically.
    public static func writeGrid(_ images: Tensor<Float>, columns: Int, path: String, range: ClosedRange<Double> = -1...1,
                                 padValue: UInt8 = 128) throws {
        let g = try gridPixels(images, columns: columns, range: range, padValue: padValue)
        try FileBytes.writeAtomically(encodeGray(width: g.width, height: g.height, pixels: g.pixels), to: path)
    }

    /// Writes flat images (`N` rows of `height * width` values) as a PNG grid, atomically.
    public static func writeGrid(_ images: Tensor<Float>, height: Int, width: Int, columns: Int, path: String,
                                 range: ClosedRange<Double> = -1...1, padValue: UInt8 = 128) throws {
        let g = try gridPixels(images, height: height, width: width, columns: columns, range: range, padValue: padValue)
        try FileBytes.writeAtomically(encodeGray(width: g.width, height: g.height, pixels: g.pixels), to: path)
    }

    // MARK: Decoding

    /// Decodes an 8-bit grayscale, non-interlaced PNG; `name` labels errors.
    public static func decodeGray(_ bytes: [UInt8], name: String) throws -> (width: Int, height: Int, pixels: [UInt8]) {
        guard bytes.starts(with: signature) else {
            throw DatasetError.badMagic(name: name, format: "PNG", expected: hex(signature), found: hex(bytes.prefix(8)))
        }
        var offset = signature.count
        var width = 0, height = 0
        var compressed: [UInt8] = []
        var sawHeader = false, sawEnd = false
        while !sawEnd {
            guard bytes.count - offset >= 12 else {
                throw DatasetError.wrongLength(name: name, expectedBytes: offset + 12, actualBytes: bytes.count)
            }
            let length = Int(readBigEndian(bytes, at: offset))
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            guard length <= Int(Int32.max), bytes.count - offset - 12 >= length else {
                throw DatasetError.wrongLength(name: name, expectedBytes: offset + 12 + length, actualBytes: bytes.count)
            }
            let body = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            let stored = readBigEndian(bytes, at: offset + 8 + length)
            let computed = crc(Array(bytes[(offset + 4)..<(offset + 8)]) + body)
            guard stored == computed else {
                throw DatasetError.malformed(name: name, problem: "CRC mismatch in chunk '\(type)' at offset \(offset): "
                    + "stored \(String(stored, radix: 16)), computed \(String(computed, radix: 16))")
            }
            switch type {
            case "IHDR":
                guard !sawHeader, offset == signature.count, length == 13 else {
                    throw DatasetError.malformed(name: name, problem: "IHDR must come first, once, with 13 bytes")
                }
                sawHeader = true
                width = Int(readBigEndian(body, at: 0))
                height = Int(readBigEndian(body, at: 4))
                guard Array(body[8...]) == [8, 0, 0, 0, 0] else {
                    throw DatasetError.unsupported(name: name, found: "PNG bit depth \(body[8]), colour type \(body[9]), "
                        + "compression \(body[10]), filter \(body[11]), interlace \(body[12])",
                        supported: "8-bit grayscale (colour type 0), non-interlaced")
                }
                guard width > 0, height > 0, width <= maximumPixels / height else {
                    throw DatasetError.unsupported(name: name, found: "image size \(width) x \(height)",
                                                   supported: "1 to \(maximumPixels) pixels")
                }
            case "IDAT":
                guard sawHeader else { throw DatasetError.malformed(name: name, problem: "IDAT before IHDR") }
                compressed += body
            case "IEND":
                sawEnd = true
            default:
                guard sawHeader else { throw DatasetError.malformed(name: name, problem: "chunk '\(type)' before IHDR") }
                // Ancillary chunks (lower-case first letter) may be skipped; critical ones may not.
                guard let first = type.utf8.first, first & 0x20 != 0 else {
                    throw DatasetError.unsupported(name: name, found: "critical chunk '\(type)'", supported: "IHDR, IDAT, IEND")
                }
            }
            offset += 12 + length
        }
        let stride = width + 1
        let raw = try zlibUncompress(compressed, expectedCount: height * stride, name: name)
        var pixels = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            let filter = raw[y * stride]
            for x in 0..<width {
                let a = x > 0 ? Int(pixels[y * width + x - 1]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * width + x]) : 0
                let c = x > 0 && y > 0 ? Int(pixels[(y - 1) * width + x - 1]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4: predictor = paeth(a, b, c)
                default:
                    throw DatasetError.malformed(name: name, problem: "row \(y) has unknown filter type \(filter)")
                }
                pixels[y * width + x] = UInt8(truncatingIfNeeded: Int(raw[y * stride + 1 + x]) + predictor)
            }
        }
        return (width, height, pixels)
    }

    /// The Paeth predictor of the PNG specification (section 9.4).
    private static func paeth(_ a: Int, _ b: Int, _ c: Int) -> Int {
        let p = a + b - c
        let pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }

    // MARK: Bytes, CRC and zlib

    /// The CRC-32 (ISO-HDLC, as in PNG and gzip) of `bytes`, by zlib.
    public static func crc(_ bytes: [UInt8]) -> UInt32 {
        UInt32(truncatingIfNeeded: bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
    }

    private static func appendChunk(_ type: String, _ body: [UInt8], to out: inout [UInt8]) {
        let typeBytes = Array(type.utf8)
        appendBigEndian(UInt32(body.count), to: &out)
        out += typeBytes + body
        appendBigEndian(crc(typeBytes + body), to: &out)
    }

    private static func appendBigEndian(_ v: UInt32, to out: inout [UInt8]) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    private static func readBigEndian(_ bytes: [UInt8], at o: Int) -> UInt32 {
        UInt32(bytes[o]) << 24 | UInt32(bytes[o + 1]) << 16 | UInt32(bytes[o + 2]) << 8 | UInt32(bytes[o + 3])
    }

    /// `bytes` as one zlib stream (RFC 1950), by `compress2` at the best compression level.
    private static func zlibCompress(_ bytes: [UInt8]) -> [UInt8] {
        var capacity = compressBound(uLong(bytes.count))
        var out = [UInt8](repeating: 0, count: Int(capacity))
        let status = out.withUnsafeMutableBufferPointer { dst in
            bytes.withUnsafeBufferPointer { src in
                compress2(dst.baseAddress, &capacity, src.baseAddress, uLong(src.count), Z_BEST_COMPRESSION)
            }
        }
        precondition(status == Z_OK, "zlib compress2 failed with \(status) (out of memory)")
        return Array(out[0..<Int(capacity)])
    }

    /// Inflates a zlib stream that must hold exactly `expectedCount` bytes.
    private static func zlibUncompress(_ bytes: [UInt8], expectedCount: Int, name: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: expectedCount)
        var produced = uLong(expectedCount)
        let status = out.withUnsafeMutableBufferPointer { dst in
            bytes.withUnsafeBufferPointer { src in
                uncompress(dst.baseAddress, &produced, src.baseAddress, uLong(src.count))
            }
        }
        switch status {
        case Z_OK where Int(produced) == expectedCount:
            return out
        case Z_OK:
            throw DatasetError.malformed(name: name, problem: "image data holds \(produced) bytes, rows need \(expectedCount)")
        case Z_BUF_ERROR where bytes.isEmpty || Int(produced) < expectedCount:
            throw DatasetError.malformed(name: name, problem: "image data is truncated (\(bytes.count) compressed bytes)")
        case Z_BUF_ERROR:
            throw DatasetError.malformed(name: name, problem: "image data holds more than the \(expectedCount) bytes its rows need")
        default:
            throw DatasetError.malformed(name: name, problem: "image data is not a valid zlib stream (zlib status \(status))")
        }
    }
}
