import Foundation

/// Reading what a run writes (docs/formats.md): the last step of metrics.jsonl and the events of
/// events.jsonl. Both files are appended to while the suite reads them, and a process killed
/// with kill -9 can leave a last line cut short: such a line is skipped, never an error.
public enum RunLogs {
    /// The step of the last line of metrics.jsonl that names one, -1 when none does.
    public static func lastStep(metrics text: String) -> Int {
        for line in text.split(separator: "\n").reversed() {
            if let step = stepField(line) { return step }
        }
        return -1
    }

    /// `"step":N` in a line, as the old script's regex read it (the line need not be complete).
    static func stepField(_ line: Substring) -> Int? {
        guard let r = line.range(of: "\"step\":") else { return nil }
        let digits = line[r.upperBound...].prefix { $0.isASCII && $0.isNumber }
        return digits.isEmpty || digits.endIndex == line.endIndex ? nil : Int(digits)
    }

    /// One line of events.jsonl.
    public struct Event: Equatable, Sendable {
        public var time: Double
        public var kind: String
        public var step: Int
        public var worker: String
        public var detail: String
        public init(time: Double, kind: String, step: Int, worker: String, detail: String) {
            self.time = time; self.kind = kind; self.step = step; self.worker = worker; self.detail = detail
        }
    }

    /// The complete, well-formed events of events.jsonl, in file order.
    public static func events(_ text: String) -> [Event] {
        text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let time = (object["time"] as? NSNumber)?.doubleValue, let kind = object["kind"] as? String,
                  let step = (object["step"] as? NSNumber)?.intValue else { return nil }
            return Event(time: time, kind: kind, step: step, worker: object["worker"] as? String ?? "",
                         detail: object["detail"] as? String ?? "")
        }
    }

    /// The first event of `kind` whose worker starts with `workerPrefix` ("" for any; "w2#" for
    /// every incarnation of w2) at or after `after` (seconds since 1970).
    public static func firstEvent(_ events: [Event], kind: String, workerPrefix: String = "", after: Double) -> Event? {
        events.first { $0.kind == kind && $0.worker.hasPrefix(workerPrefix) && $0.time >= after }
    }

    /// A restore event's detail, "resumed from PATH at step N".
    public static func resumed(detail: String) -> (path: String, step: Int)? {
        guard let from = detail.range(of: "resumed from "), let at = detail.range(of: " at step ", range: from.upperBound..<detail.endIndex)
        else { return nil }
        let path = String(detail[from.upperBound..<at.lowerBound])
        let digits = detail[at.upperBound...].prefix { $0.isASCII && $0.isNumber }
        guard !path.isEmpty, !path.contains(" "), let step = Int(digits) else { return nil }
        return (path, step)
    }

    /// The endpoint in the coordinator's `listening endpoint=tcp://HOST:PORT ...` log line.
    public static func listeningEndpoint(log: String) -> String? {
        for line in log.split(separator: "\n") where line.contains("listening") {
            guard let r = line.range(of: "endpoint=tcp://") else { continue }
            let value = line[r.lowerBound...].dropFirst("endpoint=".count).prefix { $0 != " " }
            return String(value)
        }
        return nil
    }

    /// Why a `skipping checkpoint` log line skipped the file: the leftmost (then longest) of
    /// "checksum mismatch", "section X checksum mismatch", "truncated", "corrupt...", "header..."
    /// (up to the next full stop).
    public static func skipReason(_ line: String) -> String? {
        // No two alternatives start at the same character, so the first match is grep -o's.
        let pattern = #"section [^ ]* checksum mismatch|checksum mismatch|truncated|corrupt[^ ]*|header[^.]*"#
        guard let re = try? NSRegularExpression(pattern: pattern),
              let m = re.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)),
              let r = Range(m.range, in: line) else { return nil }
        return String(line[r])
    }
}

/// Times as the suite prints them.
public enum Timing {
    /// Seconds with two decimals ("0.33").
    public static func seconds(_ s: Double) -> String { String(format: "%.2f", s) }

    /// "min / median / max s (count)" of the numeric values ("n/a" is left out), "-" when there
    /// are none; the median of an even count is the lower middle value.
    public static func statistics(_ values: [String]) -> String {
        let v = values.compactMap { text -> Double? in
            guard !text.isEmpty, text.allSatisfy({ $0.isNumber || $0 == "." }) else { return nil }
            return Double(text)
        }.sorted()
        guard !v.isEmpty else { return "-" }
        return String(format: "%.2f / %.2f / %.2f s (%d)", v[0], v[(v.count + 1) / 2 - 1], v[v.count - 1], v.count)
    }

    /// A column padded on the right to `width` characters (printf's %-Ns).
    public static func padded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
