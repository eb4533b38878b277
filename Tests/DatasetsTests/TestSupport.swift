import Foundation
import Testing
import Datasets

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "ambient-datasets-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ bytes: [UInt8], to name: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: file(name)))
    }

    /// Names of the files in the directory (to check that no temporary file was left behind).
    func listing() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs `python3 -c script args...` (the first python3 on PATH), with a time limit.
enum Python {
    struct Result {
        var status: Int32
        var output: String
    }

    /// `timeout` (coreutils) bounds the run, so a hung interpreter cannot hang the suite.
    static func run(_ script: String, _ arguments: [String] = [], timeout seconds: Int = 30) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["timeout", "\(seconds)", "python3", "-c", script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    /// True when python3 runs at all (tests that need only its standard library).
    static let available: Bool = (try? run("print(1)").status) == 0
    /// True when python3 can import numpy (interoperability tests).
    static let hasNumpy: Bool = (try? run("import numpy").status) == 0
}

/// The error `body` throws as a `DatasetError`, recording an issue when it throws nothing or something else.
func datasetError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> DatasetError? {
    do {
        try body()
        Issue.record("expected a DatasetError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as DatasetError {
        return e
    } catch {
        Issue.record("expected a DatasetError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A small deterministic byte pattern with some structure (compressible, but not trivially).
func patternBytes(_ count: Int, seed: UInt32 = 1) -> [UInt8] {
    var state = seed &* 2_654_435_761 | 1
    return (0..<count).map { i in
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        return i % 7 == 0 ? UInt8(truncatingIfNeeded: state) : UInt8(truncatingIfNeeded: i / 3)
    }
}
