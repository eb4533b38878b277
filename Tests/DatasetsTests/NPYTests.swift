import FileIO
import Foundation
import Testing
import TensorCore
import Datasets

@Suite struct NPYTests {
    static func tensor(_ shape: [Int], seed: UInt64 = 3) -> Tensor<Float> {
        var rng = CounterRNG(seed: seed, purpose: .evaluation)
        return Tensor(shape: shape, storage: rng.normals(shape.reduce(1, *)))
    }

    /// A hand-made `.npy`: version 1.0, `header` text padded to 64 bytes, then `data`.
    static func npy(header: String, data: [UInt8], major: UInt8 = 1) -> [UInt8] {
        var text = Array(header.utf8)
        let preamble = major == 1 ? 10 : 12
        text += [UInt8](repeating: 0x20, count: (64 - (preamble + text.count + 1) % 64) % 64) + [0x0A]
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
        if major == 1 {
            out += [UInt8(text.count & 0xFF), UInt8(text.count >> 8)]
        } else {
            out += [UInt8(text.count & 0xFF), UInt8((text.count >> 8) & 0xFF), UInt8(text.count >> 16), 0]
        }
        return out + text + data
    }

    static func littleEndian<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
        values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    }

    @Test(arguments: [[], [0], [5], [2, 3, 4], [1, 0, 3], [1, 1, 1, 7]])
    func floatRoundTrip(shape: [Int]) throws {
        let t = Self.tensor(shape)
        let bytes = NPY.encode(t)
        #expect(try NPY.decodeFloat(bytes, name: "t") == t)
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        #expect((10 + headerLength) % 64 == 0 && bytes[9 + headerLength] == 0x0A && bytes[6] == 1)
    }

    @Test func extremeFloatsSurvive() throws {
        let values: [Float] = [0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1e-38, .pi]
        let t = Tensor(shape: [values.count], storage: values)
        let back = try NPY.decodeFloat(NPY.encode(t), name: "t")
        #expect(back.storage.map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test func hugeHeaderUsesVersion2() throws {
        let t = Tensor<Float>(shape: [Int](repeating: 1, count: 30_000), storage: [2.5])
        let bytes = NPY.encode(t)
        #expect(bytes[6] == 2)
        #expect(try NPY.decodeFloat(bytes, name: "t") == t)
    }

    @Test func integersRoundTrip() throws {
        let values = [0, -1, 42, Int(Int64.max), Int(Int64.min), 7]
        let bytes = try NPY.encode(integers: values, shape: [2, 3])
        let back = try NPY.decodeIntegers(bytes, name: "t")
        #expect(back.shape == [2, 3] && back.values == values)
        #expect(throws: DatasetError.self) { _ = try NPY.encode(integers: [1, 2, 3], shape: [2, 2]) }
    }

    @Test func readsEveryIntegerDType() throws {
        let cases: [(String, [UInt8], [Int])] = [
            ("|u1", [0, 255, 7], [0, 255, 7]),
            ("|i1", [0, 255, 128], [0, -1, -128]),
            ("|b1", [1, 0, 1], [1, 0, 1]),
            ("<u2", Self.littleEndian([UInt16(1), 65535, 300]), [1, 65535, 300]),
            ("<i2", Self.littleEndian([Int16(-2), 32767, 300]), [-2, 32767, 300]),
            ("<i4", Self.littleEndian([Int32(-5), Int32.max, 0]), [-5, Int(Int32.max), 0]),
            ("<u4", Self.littleEndian([UInt32.max, 1, 2]), [Int(UInt32.max), 1, 2]),
            ("<i8", Self.littleEndian([Int64(-9), 1 << 40, 3]), [-9, 1 << 40, 3]),
            ("<u8", Self.littleEndian([UInt64(9), 1 << 40, 3]), [9, 1 << 40, 3]),
        ]
        for (descr, data, expected) in cases {
            let bytes = Self.npy(header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (3,), }", data: data)
            let r = try NPY.decodeIntegers(bytes, name: descr)
            #expect(r.values == expected, "\(descr)")
        }
    }

    @Test func readsFloat64AsFloat() throws {
        let doubles: [Double] = [1.5, -2.25, 1e-3, 3e30]
        let data = Self.littleEndian(doubles.map(\.bitPattern))
        let t = try NPY.decodeFloat(Self.npy(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", data: data), name: "t")
        #expect(t.shape == [2, 2] && t.storage == doubles.map { Float($0) })
    }

    /// Header dicts as people and other writers produce them.
    @Test func headerParsingIsRobust() throws {
        let data = Self.littleEndian([Float(1), 2, 3, 4, 5, 6].map(\.bitPattern))
        let headers = [
            "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
            "{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,3,),}",
            "{ 'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 ) , }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
        ]
        for h in headers {
            let t = try NPY.decodeFloat(Self.npy(header: h, data: data), name: "t")
            #expect(t.shape == [2, 3] && t.storage == [1, 2, 3, 4, 5, 6], "\(h)")
        }
        let scalar = try NPY.decodeFloat(Self.npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': ()}",
                                                  data: Self.littleEndian([Float(7).bitPattern])), name: "t")
        #expect(scalar.shape == [] && scalar.storage == [7])
        let v2 = try NPY.decodeFloat(Self.npy(header: headers[0], data: data, major: 2), name: "t")
        #expect(v2.storage == [1, 2, 3, 4, 5, 6])
        // Fortran order is harmless in rank 1.
        let f1 = try NPY.decodeFloat(Self.npy(header: "{'descr': '<f4', 'fortran_order': True, 'shape': (6,)}", data: data), name: "t")
        #expect(f1.shape == [6])
    }

    @Test func truncatedAndTrailingReportByteCounts() throws {
        let bytes = NPY.encode(Self.tensor([4, 5]))
        let e = datasetError { _ = try NPY.decodeFloat(Array(bytes.dropLast(3)), name: "a.npy") }
        guard case .wrongLength("a.npy", let expected, let actual)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(expected == bytes.count && actual == bytes.count - 3)
        #expect(e!.description.contains("truncated"))
        guard case .wrongLength? = datasetError({ _ = try NPY.decodeFloat(bytes + [0], name: "t") }) else {
            Issue.record("trailing byte accepted"); return
        }
        // Cut inside the header, and inside the preamble.
        #expect(datasetError { _ = try NPY.decodeFloat(Array(bytes.prefix(40)), name: "t") } != nil)
        #expect(datasetError { _ = try NPY.decodeFloat(Array(bytes.prefix(7)), name: "t") } != nil)
    }

    @Test func rejectsWrongMagicVersionDTypeOrderAndEndianness() throws {
        var bytes = NPY.encode(Self.tensor([3]))
        bytes[1] = UInt8(ascii: "n")
        guard case .badMagic? = datasetError({ _ = try NPY.decodeFloat(bytes, name: "t") }) else { Issue.record("magic"); return }
        bytes[1] = UInt8(ascii: "N")
        bytes[6] = 4
        guard case .unsupported? = datasetError({ _ = try NPY.decodeFloat(bytes, name: "t") }) else { Issue.record("version"); return }

        let four = [UInt8](repeating: 0, count: 16)
        func reason(_ header: String, integers: Bool = false) -> DatasetError? {
            datasetError {
                let b = Self.npy(header: header, data: four)
                if integers { _ = try NPY.decodeIntegers(b, name: "t") } else { _ = try NPY.decodeFloat(b, name: "t") }
            }
        }
        guard case .unsupported(_, let f1, _)? = reason("{'descr': '<i4', 'fortran_order': False, 'shape': (4,)}") else {
            Issue.record("int as float"); return
        }
        #expect(f1.contains("<i4"))
        guard case .unsupported? = reason("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", integers: true) else {
            Issue.record("float as int"); return
        }
        guard case .unsupported? = reason("{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}") else { Issue.record("complex"); return }
        guard case .unsupported(_, let f2, _)? = reason("{'descr': '>f4', 'fortran_order': False, 'shape': (4,)}") else {
            Issue.record("big endian"); return
        }
        #expect(f2.contains("big-endian"))
        guard case .unsupported(_, let f3, _)? = reason("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}") else {
            Issue.record("fortran"); return
        }
        #expect(f3.contains("Fortran"))
        guard case .unsupported? = reason("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}") else {
            Issue.record("structured"); return
        }
        guard case .unsupported? = reason("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}") else { Issue.record("object"); return }
    }

    @Test func rejectsMalformedHeaders() throws {
        let data = [UInt8](repeating: 0, count: 8)
        let headers = [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",         // unterminated
            "{'descr': '<f4', 'fortran_order': False}",                        // missing shape
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", // extra key
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",             // not a bool
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",        // negative
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",          // list, not tuple
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", // duplicate
            "['descr', '<f4']",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
            String(repeating: "(", count: 100),
        ]
        for h in headers {
            let e = datasetError { _ = try NPY.decodeFloat(Self.npy(header: h, data: data), name: "h.npy") }
            guard case .malformed("h.npy", _)? = e else { Issue.record("\(h): \(String(describing: e))"); continue }
        }
        // Shape product that overflows Int.
        let e = datasetError {
            _ = try NPY.decodeFloat(Self.npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}",
                                             data: data), name: "t")
        }
        #expect(e != nil)
    }

    @Test func nonFiniteIsReportedWithSampleAndPosition() throws {
        var t = Self.tensor([4, 3])
        t.storage[7] = .nan
        let e = datasetError { _ = try NPY.decodeFloat(NPY.encode(t), name: "nan.npy") }
        guard case .nonFinite("nan.npy", 2, 1, _)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(try NPY.decodeFloat(NPY.encode(t), name: "t", allowNonFinite: true).storage[7].isNaN)
        let bools = Self.npy(header: "{'descr': '|b1', 'fortran_order': False, 'shape': (2,)}", data: [1, 2])
        guard case .malformed? = datasetError({ _ = try NPY.decodeIntegers(bools, name: "t") }) else { Issue.record("bool 2"); return }
        let big = Self.npy(header: "{'descr': '<u8', 'fortran_order': False, 'shape': (1,)}", data: Self.littleEndian([UInt64.max]))
        guard case .malformed? = datasetError({ _ = try NPY.decodeIntegers(big, name: "t") }) else { Issue.record("u8 max"); return }
    }

    /// Random corruption of valid files must throw or decode, never trap.
    @Test func fuzzedBytesNeverCrash() throws {
        let valid = NPY.encode(Self.tensor([3, 2]))
        for cut in 0..<valid.count { _ = try? NPY.decodeFloat(Array(valid.prefix(cut)), name: "t") }
        var rng = CounterRNG(seed: 11, purpose: .evaluation)
        for _ in 0..<3000 {
            var b = valid
            for _ in 0..<(1 + rng.int(below: 4)) {
                b[rng.int(below: 80)] = UInt8(truncatingIfNeeded: rng.next())
            }
            _ = try? NPY.decodeFloat(b, name: "t")
            _ = try? NPY.decodeIntegers(b, name: "t")
        }
    }

    @Test func filesAreWrittenAtomically() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let t = Self.tensor([2, 5])
        try NPY.write(t, to: dir.file("a.npy"))
        try NPY.write(Self.tensor([3]), to: dir.file("a.npy"))  // overwrite
        try NPY.write(integers: [1, 2, 3], shape: [3], to: dir.file("i.npy"))
        #expect(try dir.listing() == ["a.npy", "i.npy"])
        #expect(try NPY.readFloat(dir.file("a.npy")) == Self.tensor([3]))
        #expect(try NPY.readIntegers(dir.file("i.npy")).values == [1, 2, 3])
        #expect { try NPY.write(t, to: dir.file("no/such/dir/a.npy")) } throws: { e in
            (e as? FileIOError).map { $0.operation == .write } ?? false
        }
        #expect { _ = try NPY.readFloat(dir.file("missing.npy")) } throws: { e in
            (e as? FileIOError).map { $0.operation == .read && $0.path == dir.file("missing.npy") } ?? false
        }
    }

    /// Files written here load in numpy with the same values, and numpy's files load here.
    @Test(.enabled(if: Python.hasNumpy)) func interoperatesWithNumpy() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let shapes = [[2, 3, 4], [], [0, 5], [7]]
        for (i, s) in shapes.enumerated() { try NPY.write(Self.tensor(s, seed: UInt64(i)), to: dir.file("s\(i).npy")) }
        try NPY.write(integers: [-3, 0, 1 << 40], shape: [3], to: dir.file("ints.npy"))
        var script = "import numpy as np, sys\nd = sys.argv[1]\n"
        for (i, s) in shapes.enumerated() {
            let t = Self.tensor(s, seed: UInt64(i))
            let bits = t.storage.map { "\($0.bitPattern)" }.joined(separator: ",")
            script += "a = np.load(d + '/s\(i).npy'); assert a.dtype == np.float32 and a.shape == tuple(\(s)), (a.dtype, a.shape)\n"
            script += "assert np.array_equal(a.ravel(), np.array([\(bits)], dtype=np.uint32).view(np.float32)), 's\(i) values'\n"
        }
        script += """
        b = np.load(d + '/ints.npy'); assert b.dtype == np.int64 and list(b) == [-3, 0, 1 << 40]
        np.save(d + '/f4.npy', np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7)
        np.save(d + '/f8.npy', np.linspace(-1, 1, 5))
        np.save(d + '/u1.npy', np.array([[0, 255], [3, 4]], dtype=np.uint8))
        np.save(d + '/b1.npy', np.array([True, False, True]))
        np.save(d + '/i4.npy', np.array([-7, 8], dtype=np.int32))
        np.save(d + '/i8.npy', np.array([-(1 << 50), 2]))
        np.save(d + '/scalar.npy', np.float32(3.5))
        np.save(d + '/empty.npy', np.zeros((0, 4), dtype=np.float32))
        np.save(d + '/fortran.npy', np.asfortranarray(np.ones((3, 2), dtype=np.float32)))
        np.save(d + '/big.npy', np.arange(3, dtype='>f4'))
        print('ok')
        """
        let r = try Python.run(script, [dir.path])
        #expect(r.status == 0, "\(r.output)")
        guard r.status == 0 else { return }

        let f4 = try NPY.readFloat(dir.file("f4.npy"))
        #expect(f4.shape == [2, 3, 4] && f4.storage == (0..<24).map { Float($0) / 7 })
        let f8 = try NPY.readFloat(dir.file("f8.npy"))
        #expect(f8.storage == [-1, -0.5, 0, 0.5, 1])
        let u1 = try NPY.readIntegers(dir.file("u1.npy"))
        #expect(u1.shape == [2, 2] && u1.values == [0, 255, 3, 4])
        #expect(try NPY.readIntegers(dir.file("b1.npy")).values == [1, 0, 1])
        #expect(try NPY.readIntegers(dir.file("i4.npy")).values == [-7, 8])
        #expect(try NPY.readIntegers(dir.file("i8.npy")).values == [-(1 << 50), 2])
        let scalar = try NPY.readFloat(dir.file("scalar.npy"))
        #expect(scalar.shape == [] && scalar.storage == [3.5])
        #expect(try NPY.readFloat(dir.file("empty.npy")).shape == [0, 4])
        guard case .unsupported? = datasetError({ _ = try NPY.readFloat(dir.file("fortran.npy")) }) else { Issue.record("fortran"); return }
        guard case .unsupported? = datasetError({ _ = try NPY.readFloat(dir.file("big.npy")) }) else { Issue.record("big-endian"); return }
    }
}
