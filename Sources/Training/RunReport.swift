import Datasets
import Diffusion
import FileIO
import Foundation
import TensorCore
import Wire

/// A static HTML page about a run (`ambient report`): configuration, loss curves per term,
/// throughput and the compute/communication split, sample grids at checkpoints, evaluation
/// results, and the cluster's events. One file, no network resources (images are data URIs),
/// readable in any browser.
public struct RunReport {
    public var runPath: String
    /// Samples per grid, and sampler steps, for the checkpoints' sample grids.
    public var samplesPerGrid = 16
    public var samplerSteps = 18
    public var maxCheckpointGrids = 3
    /// Called with (grids drawn, grids to draw) while the sample grids are drawn.
    public var progress: ((Int, Int) -> Void)?

    public init(runPath: String) { self.runPath = runPath }

    /// Writes `RUNDIR/report.html` (atomically) and returns its path.
    @discardableResult
    public func write(to path: String? = nil) throws -> String {
        let html = try render()
        let out = path ?? runPath + "/report.html"
        try FileBytes.writeAtomically(Array(html.utf8), to: out)
        return out
    }

    public func render() throws -> String {
        let dir = RunDirectory(path: runPath)
        let record = try dir.readConfig()
        let metrics = readJSONLines(dir.metricsPath)
        let events = readJSONLines(dir.eventsPath)
        let finished = FileManager.default.fileExists(atPath: dir.modelPath)
        let lastStep = metrics.compactMap { $0["step"] as? Int }.max()

        var body = ""
        body += "<h1>Run report</h1>"
        body += "<p><code>\(escapeHTML(runPath))</code> · config hash <code>\(record.hash)</code> · "
        body += finished ? "<b>finished</b> (\(record.config.steps) steps)"
            : "<b>not finished</b> (last logged step \(lastStep.map(String.init) ?? "none") of \(record.config.steps))"
        if let earlier = record.earlierLengths, !earlier.isEmpty {
            body += " · extended from " + earlier.map { "\($0.steps)" }.joined(separator: ", then ")
                + " steps (earlier weights: " + earlier.map { "<code>model-step-\($0.steps).safetensors</code>" }.joined(separator: ", ") + ")"
        }
        body += "<br>\(escapeHTML(record.dataSummary))</p>"

        body += section("Configuration", configTable(record))
        body += section("Loss", lossCharts(metrics))
        body += section("Throughput", throughput(metrics, batch: record.config.batch))
        body += section("Samples", try sampleGrids(dir, record: record))
        body += section("Evaluation", evaluation(dir))
        body += section("Cluster events", eventsTable(events))

        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Ambient run \(escapeHTML((runPath as NSString).lastPathComponent))</title>
        <style>
        body { font-family: sans-serif; margin: 24px; max-width: 1100px; color: #222; }
        table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
        th { background: #f4f4f4; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
        figure { display: inline-block; margin: 8px; vertical-align: top; } figcaption { font-size: 12px; text-align: center; }
        img.grid { image-rendering: pixelated; width: 232px; border: 1px solid #ccc; }
        .empty { color: #888; font-style: italic; } code { font-size: 12px; }
        </style></head>
        <body>
        \(body)
        <p id="image-check" data-images="pending"></p>
        <script>
        window.addEventListener('load', function () {
          var imgs = Array.prototype.slice.call(document.images);
          var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
          var el = document.getElementById('image-check');
          el.setAttribute('data-images', ok + '/' + imgs.length);
          el.textContent = ok + ' of ' + imgs.length + ' images loaded';
        });
        </script>
        </body></html>
        """
    }

    // MARK: Sections

    private func section(_ title: String, _ content: String) -> String {
        "<h2>\(escapeHTML(title))</h2>\n\(content)\n"
    }

    private func configTable(_ record: ConfigRecord) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(record.config),
              let obj = try? JSONSerialization.jsonObject(with: data) else { return "" }
        var rows: [(String, String)] = []
        func flatten(_ prefix: String, _ v: Any) {
            if let d = v as? [String: Any] {
                for k in d.keys.sorted() { flatten(prefix.isEmpty ? k : prefix + "." + k, d[k]!) }
            } else {
                rows.append((prefix, "\(v)"))
            }
        }
        flatten("", obj)
        return "<table><tr><th>option</th><th>value</th></tr>" +
            rows.map { "<tr><td>\(escapeHTML($0.0))</td><td>\(escapeHTML($0.1))</td></tr>" }.joined() + "</table>"
    }

    private func lossCharts(_ metrics: [[String: Any]]) -> String {
        func series(_ key: String, name: String) -> SVGChart.Series {
            SVGChart.Series(name: name, points: metrics.compactMap { m in
                guard let s = m["step"] as? Int, let v = m[key] as? Double else { return nil }
                return (Double(s), v)
            })
        }
        let termKeys = Set(metrics.flatMap { $0.keys.filter { $0.hasPrefix("term.") } }).sorted()
        var all = [series("loss", name: "loss (total)")]
        all += termKeys.map { series($0, name: String($0.dropFirst(5))) }
        let chart = SVGChart(title: "Training loss per objective term (batch mean)", xLabel: "step", yLabel: "loss", logY: true)
        let grad = SVGChart(title: "Gradient norm", xLabel: "step", yLabel: "||g||", logY: true)
        return chart.lines(all) + grad.lines([series("grad_norm", name: "gradient norm")])
    }

    private func throughput(_ metrics: [[String: Any]], batch: Int) -> String {
        let rate = SVGChart.Series(name: "samples/s", points: metrics.compactMap { m in
            guard let s = m["step"] as? Int, let v = m["samples_per_second"] as? Double else { return nil }
            return (Double(s), v)
        })
        var html = SVGChart(title: "Throughput", xLabel: "step", yLabel: "samples/s").lines([rate])
        let steps = metrics.compactMap { $0["step_seconds"] as? Double }
        let compute = metrics.compactMap { $0["compute_seconds"] as? Double }
        if !steps.isEmpty {
            let st = median(steps)
            html += "<table><tr><th>median step time</th><td>\(String(format: "%.1f ms", st * 1000))</td></tr>"
            html += "<tr><th>median samples/s</th><td>\(String(format: "%.1f", Double(batch) / st))</td></tr>"
            if !compute.isEmpty {
                let c = median(compute)
                html += "<tr><th>median compute per shard (workers)</th><td>\(String(format: "%.1f ms", c * 1000))</td></tr>"
                html += "<tr><th>rest of the step (communication, reduction, optimiser)</th><td>\(String(format: "%.1f ms (%.0f%%)", max(st - c, 0) * 1000, max(st - c, 0) / st * 100))</td></tr>"
            }
            html += "</table>"
        }
        return html
    }

    /// Sample grids from the newest checkpoints (their EMA weights) and the final model.
    private func sampleGrids(_ dir: RunDirectory, record: ConfigRecord) throws -> String {
        guard let shape = record.imageShape, shape.count == 3, shape[0] == 1 else {
            return "<p class=\"empty\">sample grids are drawn for single-channel image data; this run trained on vectors of dimension \(record.config.model.dataDimension)</p>"
        }
        if record.config.objective == .classifier {
            return "<p class=\"empty\">a classifier run (SPEC O5): it draws no samples; use it with ambient annotate</p>"
        }
        var sources: [(label: String, weights: [Float])] = []
        if let store = try? CheckpointStore(directory: dir.checkpointsPath) {
            for (step, path) in store.list().prefix(maxCheckpointGrids).reversed() {
                if let bytes = try? FileBytes.contents(of: path), let snap = try? CheckpointFormat.decode(bytes, name: path),
                   let ema = snap.section("ema") {
                    sources.append(("checkpoint, step \(step)", ema))
                }
            }
        }
        if let model = try? TrainedModel.load(run: dir.path) {
            sources.append(("final model, step \(record.config.steps)", model.store.snapshot()))
        }
        guard !sources.isEmpty else { return "<p class=\"empty\">no checkpoint or model yet</p>" }
        let network = record.config.model.make()
        let denoiser = Denoiser(network: network, schedule: record.config.schedule)
        let stop = record.config.trainedFloor   // the same sampler as `ambient sample`
        var html = ""
        let drawable = sources.filter { $0.weights.count == network.layout.count }
        progress?(0, drawable.count)
        for (i, (label, weights)) in drawable.enumerated() {
            let store = ParameterStore<Float>(layout: network.layout)
            store.load(weights)
            let samples = HeunSampler(steps: samplerSteps, stop: stop).sample(denoiser, store, count: samplesPerGrid, seed: 0,
                                                                              maskKeep: record.config.samplingMaskKeep)
            progress?(i + 1, drawable.count)
            let g = try PNG.gridPixels(samples.reshaped([samplesPerGrid] + shape), columns: 4)
            let png = PNG.encodeGray(width: g.width, height: g.height, pixels: g.pixels)
            html += "<figure><img class=\"grid\" alt=\"samples \(escapeHTML(label))\" src=\"data:image/png;base64,\(Data(png).base64EncodedString())\">"
            html += "<figcaption>\(escapeHTML(label))</figcaption></figure>"
        }
        return html + "<p>\(samplesPerGrid) samples each, EDM Heun sampler, \(samplerSteps) noise levels, seed 0\(stop.map { String(format: ", stopped at sigma %.3f (one-step denoised)", $0) } ?? "").</p>"
    }

    /// Renders `RUNDIR/eval.json` (written by `ambient eval`) when present: its scalar figures
    /// and any histogram it holds.
    private func evaluation(_ dir: RunDirectory) -> String {
        let path = dir.path + "/eval.json"
        guard let bytes = try? FileBytes.contents(of: path),
              let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            return "<p class=\"empty\">not evaluated (run <code>ambient eval --run \(escapeHTML(dir.path))</code>)</p>"
        }
        var scalars: [(String, String)] = []
        var html = ""
        func walk(_ prefix: String, _ v: Any) {
            if let d = v as? [String: Any] {
                if let counts = d["counts"] as? [Double], let edges = d["edges"] as? [Double], edges.count == counts.count + 1 {
                    let bars = counts.enumerated().map { (String(format: "%.2f", edges[$0.offset]), $0.element) }
                    html += SVGChart(title: prefix, xLabel: "bin (lower edge)", yLabel: "count").bars(bars)
                    return
                }
                for k in d.keys.sorted() { walk(prefix.isEmpty ? k : prefix + "." + k, d[k]!) }
            } else if let rows = v as? [[String: Any]], let first = rows.first {
                // A list of records (denoising error per sigma): one table, a column per key.
                let keys = first.keys.sorted { ($0 == "sigma" ? 0 : 1, $0) < ($1 == "sigma" ? 0 : 1, $1) }
                html += "<h3>\(escapeHTML(prefix))</h3><table><tr>" + keys.map { "<th>\(escapeHTML($0))</th>" }.joined() + "</tr>"
                for r in rows {
                    html += "<tr>" + keys.map { k in
                        let cell = (r[k] as? NSNumber).map { String(format: "%.5g", $0.doubleValue) } ?? (r[k].map { "\($0)" } ?? "")
                        return "<td>\(escapeHTML(cell))</td>"
                    }.joined() + "</tr>"
                }
                html += "</table>"
            } else if let n = v as? NSNumber {
                scalars.append((prefix, "\(n)"))
            } else if let s = v as? String {
                scalars.append((prefix, s))
            }
        }
        walk("", obj)
        return "<table><tr><th>figure</th><th>value</th></tr>" +
            scalars.map { "<tr><td>\(escapeHTML($0.0))</td><td>\(escapeHTML($0.1))</td></tr>" }.joined() + "</table>" + html
    }

    private func eventsTable(_ events: [[String: Any]]) -> String {
        guard !events.isEmpty else { return "<p class=\"empty\">no cluster events (single-process run)</p>" }
        let fmt = DateFormatter()
        fmt.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
        fmt.timeZone = TimeZone(identifier: "UTC")
        var counts: [String: Int] = [:]
        for e in events { counts[(e["kind"] as? String) ?? "?", default: 0] += 1 }
        var html = "<p>" + counts.keys.sorted().map { "\($0): \(counts[$0]!)" }.joined(separator: " · ") + "</p>"
        html += "<table><tr><th>time (UTC)</th><th>kind</th><th>step</th><th>worker</th><th>detail</th></tr>"
        for e in events.suffix(500) {
            let t = (e["time"] as? Double).map { fmt.string(from: Date(timeIntervalSince1970: $0)) } ?? ""
            html += "<tr><td>\(t)</td><td>\(escapeHTML((e["kind"] as? String) ?? ""))</td><td>\((e["step"] as? Int).map(String.init) ?? "")</td>"
            html += "<td>\(escapeHTML((e["worker"] as? String) ?? ""))</td><td>\(escapeHTML((e["detail"] as? String) ?? ""))</td></tr>"
        }
        return html + "</table>"
    }
}

/// The JSON objects of a JSON-lines file (unreadable lines skipped; a missing file is empty).
func readJSONLines(_ path: String) -> [[String: Any]] {
    guard let bytes = try? FileBytes.contents(of: path) else { return [] }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}
