import Testing
import Datasets

@Suite struct IDXTests {
    static let images = IDXArray(shape: [3, 4, 5], bytes: patternBytes(60))
    static let labels = IDXArray(shape: [3], bytes: [9, 0, 4])

    @Test func roundTrip() throws {
        for a in [Self.images, Self.labels, IDXArray(shape: [0, 28, 28], bytes: [])] {
            let bytes = try IDX.encode(a)
            #expect(try IDX.decode(bytes, name: "t") == a)
        }
        #expect(Array(try IDX.encode(Self.images).prefix(8)) == [0, 0, 8, 3, 0, 0, 0, 3])
    }

    @Test func readsPlainAndGzippedFiles() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try dir.write(IDX.encode(Self.images), to: "a-idx3-ubyte")
        try dir.write(gzip(IDX.encode(Self.images)), to: "a-idx3-ubyte.gz")
        #expect(try IDX.read(dir.file("a-idx3-ubyte")) == Self.images)
        #expect(try IDX.read(dir.file("a-idx3-ubyte.gz")) == Self.images)
    }

    @Test func truncatedNamesFileAndByteCounts() throws {
        let full = try IDX.encode(Self.images)
        let e = datasetError { _ = try IDX.decode(Array(full.dropLast(7)), name: "imgs") }
        guard case .wrongLength("imgs", let expected, let actual)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(expected == 16 + 60 && actual == 16 + 53)
        #expect(e?.description.contains("truncated") == true)
        // Cut inside the dimensions, and trailing bytes.
        #expect(datasetError { _ = try IDX.decode(Array(full.prefix(9)), name: "t") } != nil)
        guard case .wrongLength? = datasetError({ _ = try IDX.decode(full + [0], name: "t") }) else {
            Issue.record("trailing byte accepted"); return
        }
    }

    @Test func wrongMagicAndDType() throws {
        var bytes = try IDX.encode(Self.labels)
        bytes[0] = 1
        guard case .badMagic? = datasetError({ _ = try IDX.decode(bytes, name: "t") }) else { Issue.record("magic"); return }
        bytes[0] = 0
        bytes[2] = 0x0D  // float32 elements
        guard case .unsupported(_, let found, _)? = datasetError({ _ = try IDX.decode(bytes, name: "t") }) else {
            Issue.record("dtype"); return
        }
        #expect(found.contains("Float32"))
        guard case .badMagic? = datasetError({ _ = try IDX.decode([0, 0, 8, 0], name: "t") }) else { Issue.record("rank 0"); return }
    }

    /// Dimensions whose product overflows must be rejected, not trap.
    @Test func hugeDimensionsAreRejected() throws {
        let bytes: [UInt8] = [0, 0, 8, 3] + [0xFF, 0xFF, 0xFF, 0xFF] + [0xFF, 0xFF, 0xFF, 0xFF] + [0xFF, 0xFF, 0xFF, 0xFF] + [1, 2]
        #expect(datasetError { _ = try IDX.decode(bytes, name: "t") } != nil)
        #expect(throws: DatasetError.self) { try IDX.encode(IDXArray(shape: [2, 2], bytes: [1, 2, 3])) }
    }
}
