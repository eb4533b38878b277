import Foundation
import Testing

/// The run report renders in headless Chromium with all its images (Debian `chromium`,
/// installed by scripts/test).
@Suite(.serialized, .timeLimit(.minutes(10))) struct ReportTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test func reportLoadsInHeadlessChromiumWithItsImages() throws {
        let dir = try scratchDirectory("report")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run"
        let t = try CommandRunner.run(["train", "--data", "fashion-mnist", "--corrupt", "noise:0.5", "--width", "32", "--blocks", "1",
                                       "--steps", "12", "--batch", "32", "--checkpoint-every", "6", "--workers", "2",
                                       "--out", run, "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        // An eval.json with a list of records (the denoising error per sigma) renders as a table.
        try Data(#"{"frechet_distance": 41.5, "test_denoising": [{"mse": 0.0312, "sigma": 0.577}, {"mse": 0.2101, "sigma": 5}]}"#.utf8)
            .write(to: URL(fileURLWithPath: run + "/eval.json"))
        let r = try CommandRunner.run(["report", "--run", run, "--samples", "4"])
        #expect(r.status == 0, "\(r.stderr)")
        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        #expect(html.contains("<h3>test_denoising</h3><table><tr><th>sigma</th><th>mse</th></tr><tr><td>0.577</td><td>0.0312</td></tr>"),
                "eval.json's per-sigma table is missing")
        #expect(html.contains("<td>frechet_distance</td><td>41.5</td>"))
        #expect(html.range(of: #"(src|href)\s*=\s*"(https?:)?//"#, options: .regularExpression) == nil && !html.contains("url(http"),
                "the report must not load network resources")
        for needle in ["Loss", "Throughput", "Samples", "Cluster events", "<svg", "data:image/png;base64,"] {
            #expect(html.contains(needle), "report lacks \(needle)")
        }
        guard let chromium = Self.chromium else {
            Issue.record("chromium is not installed: `sudo apt-get install chromium` (scripts/test installs it)")
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: chromium)
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(dir)/profile",
                       "--dump-dom", "file://\(run)/report.html"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        nonisolated(unsafe) var dom = Data()
        let reader = Thread { dom = out.fileHandleForReading.readDataToEndOfFile() }
        reader.start()
        #expect(waitUntil(90) { !p.isRunning }, "chromium did not finish")
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        _ = waitUntil(5) { !dom.isEmpty }
        let text = String(decoding: dom, as: UTF8.self)
        let marker = text.range(of: #"data-images="(\d+)/(\d+)""#, options: .regularExpression).map { String(text[$0]) }
        #expect(marker != nil, "no image check in the rendered page")
        if let m = marker {
            let nums = m.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            #expect(nums.count == 2 && nums[0] == nums[1] && nums[1] >= 3, "images loaded: \(m)")
        }
    }
}
