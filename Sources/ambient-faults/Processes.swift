import FaultInjection
import Foundation

/// Everything the suite started or made that must not outlive it: child processes (by pid),
/// network namespaces, host-side veth ends and tmpfs mounts. Children are spawned with
/// Foundation's Process as LocalCluster spawns its workers (Sources/Training/LocalCluster.swift),
/// and stopped the same way: SIGKILL, then reaped. SIGINT, SIGTERM and SIGHUP clean up and exit 130.
final class Resources: @unchecked Sendable {
    static let shared = Resources()
    private let lock = NSLock()
    private var children: [Process] = []
    private var namespaces: [String] = []
    private var links: [String] = []
    private var mounts: [String] = []
    private var interrupted = false
    private var signalSources: [any DispatchSourceSignal] = []
    /// Said on stderr when a signal stops the suite.
    var workDirectory = ""

    struct Interrupted: Error {}
    var isInterrupted: Bool { lock.withLock { interrupted } }

    /// Starts `executable` with `arguments`, stdout and stderr appended to `log`, stdin empty.
    func spawn(log: String, _ executable: String, _ arguments: [String]) throws -> Process {
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ScenarioFailure("cannot open \(log): \(String(cString: strerror(errno)))") }
        let out = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        lock.lock(); defer { lock.unlock() }
        if interrupted { throw Interrupted() }
        try p.run()
        children.append(p)
        return p
    }

    /// SIGCONT and SIGKILL to every child still running, then reaps them all.
    func stopChildren() {
        lock.lock()
        let all = children
        children = []
        lock.unlock()
        for p in all where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
        }
        for p in all { p.waitUntilExit() }
    }

    func addNamespace(_ name: String) { lock.withLock { namespaces.append(name) } }
    func addLink(_ name: String) { lock.withLock { links.append(name) } }
    func addMount(_ path: String) { lock.withLock { mounts.append(path) } }
    func forgetMounts() { lock.withLock { mounts = [] } }

    /// Deletes the veth pairs (deleting one end deletes both) and the namespaces.
    func teardownNetwork() {
        let (l, n) = lock.withLock { () -> ([String], [String]) in
            defer { links = []; namespaces = [] }
            return (links, namespaces)
        }
        for x in l { _ = quietly(["ip", "link", "del", x]) }
        for x in n { _ = quietly(["ip", "netns", "del", x]) }
    }

    /// Lazily unmounts every tmpfs the suite mounted.
    func teardownMounts() {
        let m = lock.withLock { () -> [String] in defer { mounts = [] }; return mounts }
        for x in m { _ = quietly(["umount", "-l", x]) }
    }

    func cleanUp() {
        stopChildren()
        teardownNetwork()
        teardownMounts()
    }

    /// SIGINT, SIGTERM and SIGHUP: no new child, everything cleaned up, exit 130.
    func installSignalHandlers() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in
                lock.withLock { interrupted = true }
                cleanUp()
                FileHandle.standardError.write(Data("fault-injection: interrupted; work directory kept: \(workDirectory)\n".utf8))
                exit(130)
            }
            source.resume()
            signalSources.append(source)
        }
    }
}

/// Why a scenario failed (its FAIL line).
struct ScenarioFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Seconds since 1970, as events.jsonl's `time`.
func now() -> Double { Date().timeIntervalSince1970 }

/// Polls `condition` every `interval` seconds until it holds (true) or `limit` seconds passed (false).
func waitUntil(_ limit: Double, every interval: Double = 0.05, _ condition: () -> Bool) -> Bool {
    let end = now() + limit
    while !condition() {
        if now() > end { return false }
        Thread.sleep(forTimeInterval: interval)
    }
    return true
}

/// The exit status as a shell reports it: the code, or 128 + the signal that killed it.
func shellStatus(_ p: Process) -> Int32 {
    p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
}

/// Waits at most `limit` seconds for `p` to exit; its status, or 124 after SIGKILL on time-out.
@discardableResult
func waitExit(_ p: Process, _ limit: Double) -> Int32 {
    if waitUntil(limit, { !p.isRunning }) {
        p.waitUntilExit()
        return shellStatus(p)
    }
    kill(p.processIdentifier, SIGCONT)
    kill(p.processIdentifier, SIGKILL)
    p.waitUntilExit()
    return 124
}

/// The full path of a program on PATH (ip, mount, umount), or the name itself.
func which(_ name: String) -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return name
}

/// Runs a short system command (ip, mount, umount) with output discarded, bounded to 30 s;
/// true when it exited 0. Not registered as a child: it is waited for here.
func quietly(_ command: [String]) -> Bool {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: which(command[0]))
    p.arguments = Array(command.dropFirst())
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return false }
    return waitExit(p, 30) == 0
}

/// The whole file as text ("" when it cannot be read).
func readText(_ path: String) -> String {
    guard let d = FileManager.default.contents(atPath: path) else { return "" }
    return String(decoding: d, as: UTF8.self)
}

/// The last `n` lines of a file.
func tail(_ path: String, _ n: Int) -> [String] {
    Array(readText(path).split(separator: "\n").suffix(n).map(String.init))
}

/// The last step of RUNDIR/metrics.jsonl (its last 4 KiB are enough), -1 when none.
func lastStep(_ run: String) -> Int {
    guard let h = FileHandle(forReadingAtPath: run + "/metrics.jsonl") else { return -1 }
    defer { try? h.close() }
    let size = (try? h.seekToEnd()) ?? 0
    try? h.seek(toOffset: size > 4096 ? size - 4096 : 0)
    let data = (try? h.readToEnd()) ?? Data()
    var text = String(decoding: data, as: UTF8.self)
    if size > 4096, let nl = text.firstIndex(of: "\n") { text = String(text[text.index(after: nl)...]) }
    return RunLogs.lastStep(metrics: text)
}

func isFile(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

/// The names in RUNDIR/checkpoints matching `ckpt-*` and `keep`, sorted.
func checkpointFiles(_ run: String, _ keep: (String) -> Bool) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? []
    return names.filter { $0.hasPrefix("ckpt-") && keep($0) }.sorted()
}

/// A line on stdout, written at once (the lines of a long suite must show while it runs, piped or not).
/// Exits with `code`, unless a signal is stopping the suite: then the handler exits (130) once
/// everything is cleaned up, and this thread waits for it.
func leave(_ code: Int32) -> Never {
    while Resources.shared.isInterrupted { Thread.sleep(forTimeInterval: 1) }
    exit(code)
}

/// Nothing more is said once a signal stopped the suite (its children die under a scenario's feet).
func say(_ line: String = "") {
    guard !Resources.shared.isInterrupted else { return }
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
