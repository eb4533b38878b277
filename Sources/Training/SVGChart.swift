import Foundation

/// Minimal SVG charts for the run report: line series over a shared x axis, and bars.
/// Self-contained markup (no scripts, no external resources).
public struct SVGChart {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var logY = false
    public var width = 640.0
    public var height = 300.0
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]

    public init(title: String, xLabel: String, yLabel: String, logY: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.logY = logY
    }

    /// A line chart of the series (non-finite points and, on a log axis, non-positive ones are skipped).
    public func lines(_ series: [Series]) -> String {
        let usable = series.map { s in
            Series(name: s.name, points: s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) })
        }.filter { !$0.points.isEmpty }
        guard !usable.isEmpty else { return "<p class=\"empty\">\(escapeHTML(title)): no data</p>" }
        let xs = usable.flatMap { $0.points.map(\.x) }, ys = usable.flatMap { $0.points.map { ty($0.y) } }
        let (x0, x1) = range(xs), (y0, y1) = range(ys)
        let (l, r, t, b) = (64.0, 16.0, 28.0, 40.0)
        func px(_ x: Double) -> Double { l + (x - x0) / (x1 - x0) * (width - l - r) }
        func py(_ y: Double) -> Double { height - b - (ty(y) - y0) / (y1 - y0) * (height - t - b) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\">"
        svg += "<title>\(escapeHTML(title))</title><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += "<text x=\"\(Int(width / 2))\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">\(escapeHTML(title))</text>"
        // Axes and ticks.
        svg += "<line x1=\"\(l)\" y1=\"\(height - b)\" x2=\"\(width - r)\" y2=\"\(height - b)\" stroke=\"#444\"/>"
        svg += "<line x1=\"\(l)\" y1=\"\(t)\" x2=\"\(l)\" y2=\"\(height - b)\" stroke=\"#444\"/>"
        for i in 0...4 {
            let fx = x0 + Double(i) / 4 * (x1 - x0)
            svg += "<text x=\"\(fmt(px(fx)))\" y=\"\(fmt(height - b + 14))\" text-anchor=\"middle\" font-size=\"10\">\(label(fx))</text>"
            let fy = y0 + Double(i) / 4 * (y1 - y0)
            let yv = logY ? pow(10, fy) : fy
            let yp = height - b - Double(i) / 4 * (height - t - b)
            svg += "<line x1=\"\(l)\" y1=\"\(fmt(yp))\" x2=\"\(width - r)\" y2=\"\(fmt(yp))\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(fmt(l - 4))\" y=\"\(fmt(yp + 3))\" text-anchor=\"end\" font-size=\"10\">\(label(yv))</text>"
        }
        svg += "<text x=\"\(Int(width / 2))\" y=\"\(Int(height - 6))\" text-anchor=\"middle\" font-size=\"11\">\(escapeHTML(xLabel))</text>"
        svg += "<text x=\"12\" y=\"\(Int(height / 2))\" text-anchor=\"middle\" font-size=\"11\" transform=\"rotate(-90 12 \(Int(height / 2)))\">\(escapeHTML(yLabel))</text>"
        for (i, s) in usable.enumerated() {
            let color = Self.palette[i % Self.palette.count]
            let path = s.points.map { "\(fmt(px($0.x))),\(fmt(py($0.y)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(path)\"/>"
            svg += "<rect x=\"\(fmt(width - r - 150))\" y=\"\(28 + 14 * i)\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(fmt(width - r - 136))\" y=\"\(37 + 14 * i)\" font-size=\"10\">\(escapeHTML(s.name))</text>"
        }
        return svg + "</svg>"
    }

    /// A bar chart of labelled values (histograms).
    public func bars(_ values: [(label: String, value: Double)]) -> String {
        guard !values.isEmpty else { return "<p class=\"empty\">\(escapeHTML(title)): no data</p>" }
        let maxV = max(values.map(\.value).max() ?? 1, 1e-12)
        let (l, r, t, b) = (48.0, 8.0, 28.0, 40.0)
        let bw = (width - l - r) / Double(values.count)
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\"><title>\(escapeHTML(title))</title>"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += "<text x=\"\(Int(width / 2))\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">\(escapeHTML(title))</text>"
        for (i, v) in values.enumerated() {
            let h = v.value / maxV * (height - t - b)
            svg += "<rect x=\"\(fmt(l + Double(i) * bw + 1))\" y=\"\(fmt(height - b - h))\" width=\"\(fmt(max(bw - 2, 1)))\" height=\"\(fmt(h))\" fill=\"#1f77b4\"/>"
            if values.count <= 25 || i % max(values.count / 10, 1) == 0 {
                svg += "<text x=\"\(fmt(l + (Double(i) + 0.5) * bw))\" y=\"\(fmt(height - b + 14))\" text-anchor=\"middle\" font-size=\"9\">\(escapeHTML(v.label))</text>"
            }
        }
        svg += "<text x=\"\(Int(width / 2))\" y=\"\(Int(height - 6))\" text-anchor=\"middle\" font-size=\"11\">\(escapeHTML(xLabel))</text>"
        svg += "<text x=\"\(fmt(l - 4))\" y=\"\(fmt(t + 8))\" text-anchor=\"end\" font-size=\"10\">\(label(maxV))</text>"
        return svg + "</svg>"
    }

    private func ty(_ y: Double) -> Double { logY ? log10(y) : y }

    private func range(_ v: [Double]) -> (Double, Double) {
        let lo = v.min() ?? 0, hi = v.max() ?? 1
        return lo == hi ? (lo - 0.5, hi + 0.5) : (lo, hi)
    }

    private func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

    private func label(_ v: Double) -> String {
        let a = abs(v)
        if a == 0 { return "0" }
        if a >= 1e4 || a < 1e-2 { return String(format: "%.1e", v) }
        return a >= 100 ? String(format: "%.0f", v) : String(format: "%.3g", v)
    }
}

/// Escapes text for HTML and SVG.
public func escapeHTML(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.count)
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}
