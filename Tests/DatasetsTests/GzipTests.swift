import FileIO
import TensorCore
import Foundation
import Testing
import Datasets

@Suite struct GzipTests {
    @Test(arguments: [0, 1, 100, 300_000])
    func roundTrip(count: Int) throws {
        let data = patternBytes(count)
        #expect(try gunzip(gzip(data), name: "t") == data)
    }

    @Test func concatenatedMembersAreJoined() throws {
        let a = patternBytes(1000, seed: 1), b = patternBytes(5000, seed: 2)
        #expect(try gunzip(gzip(a) + gzip(b), name: "t") == a + b)
    }

    /// A truncated stream must be an error at every cut point, never partial data.
    @Test func truncatedStreamIsAnError() throws {
        let full = gzip(patternBytes(20_000))
        for cut in [2, 5, 10, full.count / 3, full.count / 2, full.count - 8, full.count - 4, full.count - 1] {
            let e = datasetError { _ = try gunzip(Array(full[0..<cut]), name: "cut.gz") }
            #expect(e != nil, "cut at \(cut) of \(full.count) was accepted")
            #expect(e?.description.contains("cut.gz") == true)
        }
    }

    @Test func truncatedMessageSaysTruncated() throws {
        let full = gzip(patternBytes(20_000))
        let e = datasetError { _ = try gunzip(Array(full.dropLast(100)), name: "x.gz") }
        #expect(e?.description.contains("truncated") == true, "\(String(describing: e))")
    }

    @Test func corruptChecksumAndDataAreErrors() throws {
        var badCRC = gzip(patternBytes(5000))
        badCRC[badCRC.count - 6] ^= 0xFF  // inside the CRC-32 trailer
        #expect(datasetError { _ = try gunzip(badCRC, name: "crc.gz") } != nil)
        var badLength = gzip(patternBytes(5000))
        badLength[badLength.count - 2] ^= 0x01  // inside the ISIZE trailer
        #expect(datasetError { _ = try gunzip(badLength, name: "len.gz") } != nil)
        var badData = gzip(patternBytes(5000))
        for i in stride(from: 20, to: badData.count - 8, by: 7) { badData[i] ^= 0x5A }
        #expect(datasetError { _ = try gunzip(badData, name: "data.gz") } != nil)
    }

    @Test func wrongMagicAndTrailingGarbage() throws {
        let e = datasetError { _ = try gunzip([0x50, 0x4B, 3, 4, 0, 0], name: "zip") }
        guard case .badMagic(_, "gzip", _, let found)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(found == "50 4b")
        #expect(datasetError { _ = try gunzip(gzip([1, 2, 3]) + [0, 0, 0], name: "t") } != nil)
        #expect(datasetError { _ = try gunzip([0x1f], name: "t") } != nil)
    }

    @Test func fileAPINamesMissingFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = patternBytes(4096)
        try dir.write(gzip(data), to: "a.gz")
        #expect(try gunzip(contentsOf: dir.file("a.gz")) == data)
        #expect { _ = try gunzip(contentsOf: dir.file("missing.gz")) } throws: { e in
            (e as? FileIOError).map { $0.operation == .read && $0.path == dir.file("missing.gz") } ?? false
        }
    }

    /// Our output reads with Python's gzip module, and its output reads with ours.
    @Test(.enabled(if: Python.available)) func interoperatesWithPythonGzip() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = patternBytes(50_000)
        try dir.write(gzip(data), to: "swift.gz")
        try dir.write(data, to: "raw")
        let script = """
        import gzip, sys
        d = sys.argv[1]
        raw = open(d + '/raw', 'rb').read()
        assert gzip.decompress(open(d + '/swift.gz', 'rb').read()) == raw, 'python read differs'
        open(d + '/python.gz', 'wb').write(gzip.compress(raw, compresslevel=9))
        print('ok')
        """
        let r = try Python.run(script, [dir.path])
        #expect(r.status == 0, "\(r.output)")
        #expect(try gunzip(contentsOf: dir.file("python.gz")) == data)
    }
}
