import FileIO
import Foundation
import Testing
import TensorCore
import Wire

/// Safetensors bytes assembled by hand from a header string and a data buffer.
private func file(header: String, data: [UInt8], pad: Bool = true) -> [UInt8] {
    var h = Array(header.utf8)
    if pad { h += [UInt8](repeating: 0x20, count: (8 - h.count % 8) % 8) }
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt64(h.count).littleEndian) { out += $0 }
    return out + h + data
}

private func floatBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

/// The error `body` throws as a `SafetensorsError`, recording an issue otherwise.
private func safetensorsError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> SafetensorsError? {
    do {
        try body()
        Issue.record("expected a SafetensorsError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as SafetensorsError {
        return e
    } catch {
        Issue.record("expected a SafetensorsError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

private func tensor(_ shape: [Int], seed: UInt64) -> Tensor<Float> {
    var rng = CounterRNG(seed: seed, purpose: .evaluation)
    return Tensor(shape: shape, storage: rng.normals(shape.reduce(1, *)))
}

private func python(_ script: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["timeout", "30", "python3", "-c", script] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

private let numpyAvailable: Bool = (try? python("import numpy", []).status) == 0

@Suite struct SafetensorsTests {
    static let tensors: [(String, Tensor<Float>)] = [
        ("z.weight", tensor([3, 4], seed: 1)), ("a.bias", tensor([4], seed: 2)), ("scalar", tensor([], seed: 3)),
        ("empty", tensor([0, 3], seed: 4)), ("m", tensor([2, 1, 3], seed: 5)),
    ]
    static let metadata = ["format": "pt", "step": "1200", "note": "quote \" backslash \\ newline \n unicode é ∑ 🙂"]

    static func same(_ a: [(String, Tensor<Float>)], _ b: [(String, Tensor<Float>)]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    @Test func roundTripPreservesOrderValuesAndMetadata() throws {
        let bytes = try Safetensors.encode(Self.tensors, metadata: Self.metadata)
        let back = try Safetensors.decode(bytes)
        #expect(Self.same(back.tensors, Self.tensors))
        #expect(back.metadata == Self.metadata)
        let n = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect((8 + n) % 8 == 0 && bytes[8] == UInt8(ascii: "{"))
        #expect(try Safetensors.decode(Safetensors.encode([])).tensors.isEmpty)
    }

    /// Header order and data order may differ: tensors come back in data order.
    @Test func tensorsAreReturnedInOffsetOrder() throws {
        let header = #"{"second":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"first":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{}}"#
        let back = try Safetensors.decode(file(header: header, data: floatBytes([1, 2])))
        #expect(back.tensors.map(\.0) == ["first", "second"] && back.tensors[1].1.storage == [2])
        // Unpadded headers and F64 data are read too.
        let f64 = #"{"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#
        let doubles = [1.5, -3e-5].flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        #expect(try Safetensors.decode(file(header: f64, data: doubles, pad: false)).tensors[0].1.storage == [1.5, Float(-3e-5)])
    }

    @Test func rejectsTruncatedFiles() throws {
        let bytes = try Safetensors.encode(Self.tensors, metadata: Self.metadata)
        guard case .truncated(_, 8, 5)? = safetensorsError({ _ = try Safetensors.decode(Array(bytes.prefix(5))) }) else {
            Issue.record("length field"); return
        }
        guard case .truncated? = safetensorsError({ _ = try Safetensors.decode(Array(bytes.prefix(40))) }) else {
            Issue.record("header cut"); return
        }
        let e = safetensorsError { _ = try Safetensors.decode(Array(bytes.dropLast(4)), name: "ckpt.safetensors") }
        guard case .badOffsets("ckpt.safetensors", _, let problem)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(problem.contains("truncated"))
        for cut in 0..<bytes.count { _ = try? Safetensors.decode(Array(bytes.prefix(cut))) }
    }

    @Test func rejectsBadHeaders() throws {
        let data = floatBytes([1, 2])
        let invalid = [
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,           // unterminated
            #"["a"]"#,                                                            // not an object
            #" {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,         // must start with {
            #"{"a":{"dtype":"F32","shape":[2]}}"#,                                // no offsets
            #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,         // negative
            #"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#,        // fractional
            #"{"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}}"#,               // dtype not a string
            #"{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, // duplicate field
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":1}}"#, // metadata value
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":[]}"#,
            #"{"a":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,8]}}"#,
            String(repeating: "[", count: 500),
        ]
        for h in invalid {
            guard case .invalidHeader? = safetensorsError({ _ = try Safetensors.decode(file(header: h, data: data)) }) else {
                Issue.record("accepted or misreported: \(h)"); continue
            }
        }
        // Not UTF-8.
        var bytes = file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: data)
        bytes[10] = 0xFF
        guard case .invalidHeader? = safetensorsError({ _ = try Safetensors.decode(bytes) }) else { Issue.record("utf8"); return }
        // Header length past the end of the file.
        var long = bytes
        long[0] = 0xFF
        long[3] = 0x01
        guard case .truncated? = safetensorsError({ _ = try Safetensors.decode(long) }) else { Issue.record("length"); return }
    }

    @Test func rejectsDuplicateNamesAndUnsupportedDTypes() throws {
        let dup = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        guard case .duplicateName(_, "a")? = safetensorsError({ _ = try Safetensors.decode(file(header: dup, data: floatBytes([1, 2]))) }) else {
            Issue.record("duplicate"); return
        }
        let bf16 = #"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#
        let e = safetensorsError { _ = try Safetensors.decode(file(header: bf16, data: [0, 0, 0, 0])) }
        guard case .unsupportedDType(_, "w", "BF16")? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(e!.description.contains("F32"))
        let t = tensor([2], seed: 1)
        guard case .duplicateName? = safetensorsError({ _ = try Safetensors.encode([("x", t), ("x", t)]) }) else {
            Issue.record("encode duplicate"); return
        }
        guard case .invalidArgument? = safetensorsError({ _ = try Safetensors.encode([("__metadata__", t)]) }) else {
            Issue.record("reserved name"); return
        }
    }

    @Test func rejectsBadOffsets() throws {
        let data = floatBytes([1, 2, 3, 4])
        let cases: [(String, String)] = [
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, "overlap"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#, "gap"),
            (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, "needs"),
            (#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}}"#, "past the end"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, "decrease"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, "not part of any tensor"),
            (#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8,16]}}"#, "expected [begin, end]"),
        ]
        for (header, expected) in cases {
            let e = safetensorsError { _ = try Safetensors.decode(file(header: header, data: data)) }
            guard case .badOffsets(_, _, let problem)? = e else { Issue.record("\(expected): \(String(describing: e))"); continue }
            #expect(problem.contains(expected), "\(problem)")
        }
    }

    @Test func nonFiniteValuesAreReportedUnlessAllowed() throws {
        var t = tensor([3, 3], seed: 9)
        t.storage[4] = .nan
        let bytes = try Safetensors.encode([("ok", tensor([2], seed: 1)), ("w", t)])
        guard case .nonFinite(_, "w", 4, _)? = safetensorsError({ _ = try Safetensors.decode(bytes) }) else {
            Issue.record("NaN accepted"); return
        }
        #expect(try Safetensors.decode(bytes, allowNonFinite: true).tensors[1].1.storage[4].isNaN)
    }

    @Test func fuzzedBytesNeverCrash() throws {
        let valid = try Safetensors.encode(Array(Self.tensors.prefix(2)), metadata: ["k": "v"])
        var rng = CounterRNG(seed: 5, purpose: .evaluation)
        for _ in 0..<3000 {
            var b = valid
            for _ in 0..<(1 + rng.int(below: 3)) { b[rng.int(below: b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? Safetensors.decode(b)
        }
    }

    @Test func filesAreWrittenAtomically() throws {
        let dir = NSTemporaryDirectory() + "ambient-wire-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Safetensors.write(Self.tensors, metadata: Self.metadata, to: dir + "/m.safetensors")
        try Safetensors.write(Array(Self.tensors.prefix(1)), to: dir + "/m.safetensors")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["m.safetensors"])
        let back = try Safetensors.read(dir + "/m.safetensors")
        #expect(Self.same(back.tensors, Array(Self.tensors.prefix(1))) && back.metadata.isEmpty)
        #expect { try Safetensors.write([], to: dir + "/no/such/m.safetensors") } throws: { e in
            (e as? FileIOError).map { $0.operation == .write && $0.path.hasPrefix(dir + "/no/such/m.safetensors") } ?? false
        }
        #expect { _ = try Safetensors.read(dir + "/missing") } throws: { e in
            (e as? FileIOError).map { $0.operation == .read && $0.path == dir + "/missing" } ?? false
        }
    }

    /// Our files parse with a from-the-spec reader in Python (json + struct + numpy), and that
    /// reader's writer produces files we read.
    @Test(.enabled(if: numpyAvailable)) func interoperatesWithPython() throws {
        let dir = NSTemporaryDirectory() + "ambient-wire-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Safetensors.write(Self.tensors, metadata: Self.metadata, to: dir + "/swift.safetensors")
        var expected = ""
        for (name, t) in Self.tensors {
            expected += "    \(name.debugDescription): (\(t.shape), [\(t.storage.map { "\($0.bitPattern)" }.joined(separator: ","))]),\n"
        }
        let script = """
        import json, struct, sys, numpy as np
        d = sys.argv[1]
        b = open(d + '/swift.safetensors', 'rb').read()
        n, = struct.unpack('<Q', b[:8])
        header = json.loads(b[8:8 + n].decode('utf-8'))
        data = b[8 + n:]
        meta = header.pop('__metadata__')
        assert meta == {'format': 'pt', 'step': '1200', 'note': 'quote " backslash \\\\ newline \\n unicode é ∑ 🙂'}, meta
        expected = {
        \(expected)}
        assert set(header) == set(expected), header.keys()
        order = sorted(header, key=lambda k: header[k]['data_offsets'][0])
        assert order == list(expected), order
        for name, (shape, bits) in expected.items():
            e = header[name]
            assert e['dtype'] == 'F32' and e['shape'] == shape, e
            lo, hi = e['data_offsets']
            a = np.frombuffer(data[lo:hi], dtype='<f4').reshape(shape)
            assert np.array_equal(a.ravel(), np.array(bits, dtype=np.uint32).view(np.float32)), name

        # A writer from the spec: F64 and F32, metadata first, header padded to 8.
        x = np.arange(6, dtype=np.float64).reshape(2, 3) / 3
        y = np.array([-1.5, 2.5], dtype=np.float32)
        h = {'__metadata__': {'by': 'python'},
             'y': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
             'x': {'dtype': 'F64', 'shape': [2, 3], 'data_offsets': [8, 56]}}
        hb = json.dumps(h).encode()
        hb += b' ' * (-len(hb) % 8)
        open(d + '/python.safetensors', 'wb').write(struct.pack('<Q', len(hb)) + hb + y.tobytes() + x.tobytes())
        print('ok')
        """
        let r = try python(script, [dir])
        #expect(r.status == 0, "\(r.output)")
        guard r.status == 0 else { return }
        let back = try Safetensors.read(dir + "/python.safetensors")
        #expect(back.metadata == ["by": "python"])
        #expect(back.tensors.map(\.0) == ["y", "x"])
        #expect(back.tensors[0].1.storage == [-1.5, 2.5])
        #expect(back.tensors[1].1.shape == [2, 3] && back.tensors[1].1.storage == (0..<6).map { Float(Double($0) / 3) })
    }
}
