import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// The body of http://127.0.0.1:PORT/metrics, nil when nothing answers (5 s at most).
func scrape(_ port: Int) -> String? {
    nonisolated(unsafe) var body: String?
    let done = DispatchSemaphore(value: 0)
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    request.timeoutInterval = 5
    URLSession.shared.dataTask(with: request) { data, response, _ in
        if let data, (response as? HTTPURLResponse)?.statusCode == 200 { body = String(decoding: data, as: UTF8.self) }
        done.signal()
    }.resume()
    _ = done.wait(timeout: .now() + 6)
    return body
}

/// The value of one series (`name{labels}`) in an exposition, nil if absent.
func series(_ text: String?, _ name: String) -> Double? {
    guard let text else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") { return Double(line.dropFirst(name.count + 1)) }
    return nil
}

/// A series' value, minus infinity when absent (so every comparison with it fails).
func metric(_ text: String?, _ name: String) -> Double { series(text, name) ?? -.infinity }

/// `--metrics-port` on real processes: the coordinator's and a worker's endpoints are scraped
/// during a short cluster run and their values must move; metering changes no bit of the result.
@Suite(.serialized, .timeLimit(.minutes(10))) struct MetricsScrapeTests {
    @Test func coordinatorAndWorkerMetricsMoveDuringARun() throws {
        let dir = try scratchDirectory("metrics")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = Array(ClusterProcessTests.runOptions.dropLast(4)) + ["--steps", "300", "--seed", "3"]
        let reference = try CommandRunner.run(["train"] + options + ["--out", dir + "/reference", "--quiet"])
        #expect(reference.status == 0, "\(reference.stderr)")
        let port = freePort(), cport = freePort(), wport = freePort()
        let coordinator = try Child(["coordinator"] + options + ["--bind", "tcp://127.0.0.1:\(port)", "--plaintext", "--out", dir + "/run",
                                    "--checkpoint-every", "50", "--min-workers", "2", "--quiet", "--metrics-port", String(cport)],
                                   log: dir + "/coordinator.log")
        let w1 = try Child(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--plaintext", "--name", "w1", "--metrics-port", String(wport)],
                           log: dir + "/w1.log")
        let w2 = try Child(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--plaintext", "--name", "w2"], log: dir + "/w2.log")
        defer { for c in [coordinator, w1, w2] where c.isRunning { c.signal(SIGKILL); c.wait(5) } }

        #expect(waitUntil(60) { lastLoggedStep(dir + "/run") >= 60 || !coordinator.isRunning }, "\(coordinator.output)")
        let first = scrape(cport), firstWorker = scrape(wport)
        #expect(waitUntil(60) { lastLoggedStep(dir + "/run") >= 160 || !coordinator.isRunning })
        let second = scrape(cport), secondWorker = scrape(wport)
        try #require(first != nil && second != nil && firstWorker != nil && secondWorker != nil, "an endpoint did not answer")

        // Coordinator: the step and every counter move; both workers have their byte series.
        #expect(metric(second, "ambient_step") > metric(first, "ambient_step"))
        #expect(metric(second, "ambient_samples_total") > metric(first, "ambient_samples_total"))
        for peer in ["w1", "w2"] {
            let name = "ambient_peer_received_bytes_total{peer=\"\(peer)\"}"
            #expect(metric(second, name) > metric(first, name), "\(name)")
            #expect(metric(second, "ambient_peer_sent_bytes_total{peer=\"\(peer)\"}") > 0)
        }
        #expect(metric(second, "ambient_step_seconds_count") > metric(first, "ambient_step_seconds_count"))
        #expect(metric(second, "ambient_step_phase_seconds_sum{phase=\"reduce\"}") > 0)
        #expect(metric(second, "ambient_loss").isFinite)
        #expect(metric(second, "ambient_samples_per_second") > 0)
        #expect(series(second, "ambient_workers") == 2)
        #expect(series(second, "ambient_workers_joined_total") == 2)
        #expect(metric(second, "ambient_checkpoints_total") >= 3)
        #expect(metric(second, "ambient_checkpoint_age_seconds") >= 0)
        #expect(metric(second, "ambient_codec_ratio{direction=\"gradient\"}") > 0)
        // Worker: its own step, samples and traffic.
        #expect(metric(secondWorker, "ambient_step") > metric(firstWorker, "ambient_step"))
        #expect(metric(secondWorker, "ambient_samples_total") > metric(firstWorker, "ambient_samples_total"))
        #expect(metric(secondWorker, "ambient_peer_received_bytes_total{peer=\"coordinator\"}")
                > metric(firstWorker, "ambient_peer_received_bytes_total{peer=\"coordinator\"}"))
        #expect(metric(secondWorker, "ambient_step_phase_seconds_sum{phase=\"compute\"}") > 0)

        #expect(coordinator.wait(120) == 0, "\(coordinator.output)")
        #expect(w1.wait(20) == 0 && w2.wait(20) == 0)
        #expect(scrape(cport) == nil, "the endpoint outlived its process")
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/run/model.safetensors"))
        #expect(a == b, "metered run's weights differ from the single-process run")
    }
}
