import Foundation
import Testing
import TensorCore
import Datasets

@Suite struct PNGTests {
    /// The chunks of a PNG as (type, data, stored CRC), read without our decoder.
    static func chunks(_ png: [UInt8]) -> [(String, [UInt8], UInt32)] {
        var out: [(String, [UInt8], UInt32)] = []
        var o = 8
        func u32(_ i: Int) -> UInt32 { UInt32(png[i]) << 24 | UInt32(png[i + 1]) << 16 | UInt32(png[i + 2]) << 8 | UInt32(png[i + 3]) }
        while o + 12 <= png.count {
            let n = Int(u32(o))
            out.append((String(decoding: png[(o + 4)..<(o + 8)], as: UTF8.self), Array(png[(o + 8)..<(o + 8 + n)]), u32(o + 8 + n)))
            o += 12 + n
        }
        return out
    }

    @Test(arguments: [(1, 1), (7, 3), (28, 28), (300, 2)])
    func roundTrip(width: Int, height: Int) throws {
        let pixels = patternBytes(width * height, seed: UInt32(width))
        let png = PNG.encodeGray(width: width, height: height, pixels: pixels)
        let back = try PNG.decodeGray(png, name: "t")
        #expect(back.width == width && back.height == height && back.pixels == pixels)
    }

    @Test func chunksAndCRCs() {
        #expect(PNG.crc(Array("IEND".utf8)) == 0xAE42_6082)  // the CRC every PNG ends with
        let png = PNG.encodeGray(width: 3, height: 2, pixels: [0, 1, 2, 3, 4, 5])
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let c = Self.chunks(png)
        #expect(c.map(\.0) == ["IHDR", "IDAT", "IEND"])
        #expect(c[0].1 == [0, 0, 0, 3, 0, 0, 0, 2, 8, 0, 0, 0, 0])
        for (type, data, stored) in c { #expect(PNG.crc(Array(type.utf8) + data) == stored, "\(type)") }
    }

    @Test func gridLayoutAndValueMapping() throws {
        // 5 images of 3 x 2 (H x W), 2 columns: 3 rows of tiles.
        var values = [Float](repeating: 0, count: 30)
        for i in 0..<5 { values[i * 6] = Float(i) / 2 - 1 }  // top-left pixel of tile i: -1, -0.5, 0, 0.5, 1
        values[1] = 3  // clamps to 255
        values[2] = -3  // clamps to 0
        let images = Tensor(shape: [5, 1, 3, 2], storage: values)
        let g = try PNG.gridPixels(images, columns: 2)
        #expect(g.width == 2 * 2 + 1 && g.height == 3 * 3 + 2)
        func at(_ x: Int, _ y: Int) -> UInt8 { g.pixels[y * g.width + x] }
        #expect(at(0, 0) == 0 && at(3, 0) == 64 && at(0, 4) == 128 && at(3, 4) == 191 && at(0, 8) == 255)
        #expect(at(1, 0) == 255 && at(0, 1) == 0)
        #expect(at(2, 0) == 128 && at(0, 3) == 128)  // padding column and row
        #expect(at(3, 8) == 128 && at(4, 10) == 128)  // empty sixth tile
        #expect(at(1, 1) == 128)  // value 0 maps to 127.5, rounded up
        let flat = try PNG.gridPixels(images.reshaped([5, 6]), height: 3, width: 2, columns: 2)
        #expect(flat.pixels == g.pixels)
        let custom = try PNG.gridPixels(images, columns: 5, range: 0...1, padValue: 0)
        #expect(custom.width == 5 * 2 + 4 && custom.height == 3 && custom.pixels[9] == 128 && custom.pixels[2] == 0)
    }

    @Test func gridRejectsBadInput() throws {
        var values = [Float](repeating: 0, count: 12)
        values[7] = .nan
        guard case .nonFinite(_, 1, 1, _)? = datasetError({ _ = try PNG.gridPixels(Tensor(shape: [2, 1, 2, 3], storage: values), columns: 2) }) else {
            Issue.record("NaN accepted"); return
        }
        let ok = Tensor<Float>(zeros: [2, 1, 2, 3])
        guard case .invalidArgument? = datasetError({ _ = try PNG.gridPixels(ok, columns: 0) }) else { Issue.record("columns 0"); return }
        guard case .invalidArgument? = datasetError({ _ = try PNG.gridPixels(ok, columns: 1, range: 1...1) }) else { Issue.record("range"); return }
        guard case .badShape? = datasetError({ _ = try PNG.gridPixels(Tensor<Float>(zeros: [2, 3, 2, 3]), columns: 1) }) else {
            Issue.record("3 channels"); return
        }
        guard case .badShape? = datasetError({ _ = try PNG.gridPixels(ok.reshaped([2, 6]), height: 4, width: 2, columns: 1) }) else {
            Issue.record("flat size"); return
        }
        guard case .badShape? = datasetError({ _ = try PNG.gridPixels(Tensor<Float>(zeros: [0, 1, 2, 2]), columns: 1) }) else {
            Issue.record("empty"); return
        }
    }

    @Test func decoderRejectsCorruptFiles() throws {
        let png = PNG.encodeGray(width: 5, height: 4, pixels: patternBytes(20))
        var bad = png
        bad[0] = 0x88
        guard case .badMagic? = datasetError({ _ = try PNG.decodeGray(bad, name: "t") }) else { Issue.record("magic"); return }
        bad = png
        bad[43] ^= 0x01  // inside IDAT: its CRC no longer matches
        let e = datasetError { _ = try PNG.decodeGray(bad, name: "crc.png") }
        guard case .malformed("crc.png", let problem)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(problem.contains("CRC"))
        for cut in [8, 20, 33, 40, png.count - 12, png.count - 1] {
            #expect(datasetError { _ = try PNG.decodeGray(Array(png.prefix(cut)), name: "t") } != nil, "cut \(cut)")
        }
        // An RGB header with a valid CRC: unsupported, not misread.
        var rgb = png
        rgb[8 + 8 + 9] = 2
        let crc = PNG.crc(Array(rgb[12..<29]))
        rgb.replaceSubrange(29..<33, with: [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)])
        guard case .unsupported? = datasetError({ _ = try PNG.decodeGray(rgb, name: "t") }) else { Issue.record("rgb"); return }
        var rng = CounterRNG(seed: 2, purpose: .evaluation)
        for _ in 0..<2000 {
            var b = png
            b[rng.int(below: b.count)] = UInt8(truncatingIfNeeded: rng.next())
            _ = try? PNG.decodeGray(b, name: "t")
        }
    }

    /// Python (standard library only) checks signature, CRCs, size and pixels of our grid, and
    /// writes a PNG using every row filter for our decoder.
    @Test(.enabled(if: Python.available)) func interoperatesWithPython() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let images = Tensor<Float>(shape: [3, 1, 2, 2], storage: [-1, 1, 0, -1, 1, 1, 1, 1, -1, -1, -1, -1])
        try PNG.writeGrid(images, columns: 2, path: dir.file("grid.png"))
        #expect(try dir.listing() == ["grid.png"])
        let script = """
        import struct, sys, zlib
        d = sys.argv[1]
        b = open(d + '/grid.png', 'rb').read()
        assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
        o, idat, chunks = 8, b'', []
        while o < len(b):
            n, = struct.unpack('>I', b[o:o+4]); t = b[o+4:o+8]; data = b[o+8:o+8+n]
            crc, = struct.unpack('>I', b[o+8+n:o+12+n])
            assert zlib.crc32(t + data) == crc, t
            chunks.append(t)
            if t == b'IHDR': w, h, depth, color = struct.unpack('>IIBB', data[:10])
            if t == b'IDAT': idat += data
            o += 12 + n
        assert chunks[0] == b'IHDR' and chunks[-1] == b'IEND'
        assert (w, h, depth, color) == (5, 5, 8, 0), (w, h, depth, color)
        raw = zlib.decompress(idat)
        rows = [raw[y*(w+1)+1:(y+1)*(w+1)] for y in range(h)]
        assert all(raw[y*(w+1)] == 0 for y in range(h))
        assert list(rows[0]) == [0, 255, 128, 255, 255], list(rows[0])
        assert list(rows[1]) == [128, 0, 128, 255, 255], list(rows[1])
        assert list(rows[2]) == [128] * 5 and list(rows[3]) == [0, 0, 128, 128, 128]

        # A 6 x 5 image written with filters 0..4 (one per row, the last row filter 4 again).
        W, H = 6, 5
        px = [[(x * 37 + y * 91 + x * y * 13) % 256 for x in range(W)] for y in range(H)]
        def paeth(a, b, c):
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            return a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out = b''
        for y in range(H):
            f = min(y, 4); row = [f]
            for x in range(W):
                a = px[y][x-1] if x else 0; up = px[y-1][x] if y else 0; c = px[y-1][x-1] if x and y else 0
                pred = [0, a, up, (a + up) // 2, paeth(a, up, c)][f]
                row.append((px[y][x] - pred) % 256)
            out += bytes(row)
        def chunk(t, data): return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t + data))
        z = zlib.compress(out)
        png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', W, H, 8, 0, 0, 0, 0))
        png += chunk(b'tEXt', b'Comment\\x00made by python') + chunk(b'IDAT', z[:7]) + chunk(b'IDAT', z[7:]) + chunk(b'IEND', b'')
        open(d + '/filtered.png', 'wb').write(png)
        print('ok')
        """
        let r = try Python.run(script, [dir.path])
        #expect(r.status == 0, "\(r.output)")
        guard r.status == 0 else { return }
        let filtered = try PNG.decodeGray([UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("filtered.png")))), name: "filtered")
        #expect(filtered.width == 6 && filtered.height == 5)
        for y in 0..<5 {
            for x in 0..<6 { #expect(Int(filtered.pixels[y * 6 + x]) == (x * 37 + y * 91 + x * y * 13) % 256, "(\(x), \(y))") }
        }
    }
}
