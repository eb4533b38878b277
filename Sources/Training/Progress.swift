import Foundation

/// Progress of a long operation on standard error: a redrawn bar with rate and ETA when
/// stderr is a terminal, plain periodic lines otherwise (logs, CI).
public final class ProgressReporter: @unchecked Sendable {
    public let label: String
    public let total: Int
    public let unit: String
    private let interactive: Bool
    private let start = DispatchTime.now()
    private var lastDraw: UInt64 = 0
    private let minInterval: UInt64
    private var finished = false
    private let output: (String) -> Void

    /// - Parameter plainInterval: seconds between plain lines when not on a terminal.
    public init(label: String, total: Int, unit: String = "it", interactive: Bool? = nil,
                plainInterval: Double = 10, output: ((String) -> Void)? = nil) {
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.interactive = interactive ?? (isatty(STDERR_FILENO) == 1)
        self.minInterval = UInt64((self.interactive ? 0.1 : plainInterval) * 1e9)
        self.output = output ?? { s in FileHandle.standardError.write(s.data(using: .utf8)!) }
    }

    public var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }

    /// Reports that `done` of `total` units are complete, with an optional status suffix.
    public func update(_ done: Int, status: String = "") {
        let now = DispatchTime.now().uptimeNanoseconds
        let last = done >= total
        guard last || now - lastDraw >= minInterval, !finished else { return }
        lastDraw = now
        let t = elapsed
        let rate = t > 0 ? Double(done) / t : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let pct = Double(done) / Double(total)
        let stats = "\(done)/\(total) \(unit) \(String(format: "%.1f", rate)) \(unit)/s elapsed \(Self.clock(t)) eta \(Self.clock(eta))"
        if interactive {
            let width = 24
            let filled = Int(pct * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            output("\r\u{1B}[2K\(label) [\(bar)] \(stats)\(status.isEmpty ? "" : " | " + status)" + (last ? "\n" : ""))
        } else {
            output("\(label): \(stats)\(status.isEmpty ? "" : " | " + status)\n")
        }
        if last { finished = true }
    }

    static func clock(_ s: Double) -> String {
        guard s.isFinite else { return "--:--" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%02d:%02d", t / 60, t % 60)
    }
}
