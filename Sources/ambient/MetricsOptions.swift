import ArgumentParser
import Logging
import Monitoring

/// `--metrics-port` / `--metrics-address` of `ambient coordinator` and `ambient worker`:
/// Prometheus metrics over HTTP, off unless a port is given (docs/operations.md, "Monitoring").
struct MetricsOptions: ParsableArguments {
    @Option(name: .customLong("metrics-port"),
            help: "Serve Prometheus metrics at http://ADDRESS:PORT/metrics (off when not given; 0: any free port, logged).")
    var metricsPort: Int?

    @Option(name: .customLong("metrics-address"), help: "IP address the metrics endpoint listens on.")
    var metricsAddress: String = "127.0.0.1"

    func validate() throws {
        if let p = metricsPort, !(0...65535).contains(p) { throw ValidationError("--metrics-port must be in 0...65535") }
    }

    /// The metrics and their HTTP server, or nil when no port was given.
    func start(role: ClusterMetrics.Role, logger: Logger) throws -> (metrics: ClusterMetrics, server: MetricsServer)? {
        guard let port = metricsPort else { return nil }
        let metrics = ClusterMetrics(role: role)
        let server = try MetricsServer(address: metricsAddress, port: port) { metrics.render() }
        logger.notice("metrics", metadata: ["url": "http://\(metricsAddress.contains(":") ? "[\(metricsAddress)]" : metricsAddress):\(server.port)/metrics"])
        return (metrics: metrics, server: server)
    }
}
