import Foundation

/// Runs the built `ambient` binary with a time limit and captures its output.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum CommandRunner {
    /// The directory holding the built products (the test bundle sits beside them).
    static var productsDirectory: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // .build/<config>/AmbientPackageTests.xctest (a file on Linux, a bundle on macOS)
        while url.pathComponents.count > 1 && !FileManager.default.fileExists(atPath: url.appendingPathComponent("ambient").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    static var ambient: String { productsDirectory.appendingPathComponent("ambient").path }

    /// Runs `ambient args` and waits at most `timeout` seconds (then kills it and records 124).
    /// `unsetting` names variables of this process's environment the child must not inherit.
    /// `executable` replaces the binary (e.g. /bin/sh for a shell line); `directory` is the working directory.
    static func run(_ args: [String], environment: [String: String] = [:], unsetting: [String] = [],
                    timeout: Double = 120, executable: String? = nil, directory: String? = nil) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable ?? ambient)
        p.arguments = args
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        for (k, v) in environment { env[k] = v }
        for k in unsetting { env[k] = nil }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Drain both pipes concurrently so a chatty child never blocks on a full pipe.
        nonisolated(unsafe) var outData = Data(), errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        var status: Int32
        if p.isRunning {
            p.terminate()
            usleep(200_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            status = 124
        } else {
            p.waitUntilExit()
            status = p.terminationStatus
        }
        _ = group.wait(timeout: .now() + 10)
        return CommandResult(status: status, stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData, as: UTF8.self))
    }
}

/// A fresh temporary directory, removed by the caller.
func scratchDirectory(_ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "ambient-cli-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Writes a little-endian NPY file by hand (any descr, so bad files can be written too).
func writeNPY(_ path: String, descr: String = "<f4", shape: String, values: [Float]) throws {
    var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
    while (10 + header.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.count & 0xff), UInt8(header.count >> 8)]
    bytes += Array(header.utf8)
    values.withUnsafeBytes { bytes += Array($0) }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}
