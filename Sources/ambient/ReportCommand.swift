import ArgumentParser
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient report`: a static HTML page about a run.
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report",
            abstract: "Write a static HTML report of a run (opens in any browser, no network needed).",
            discussion: """
            The page shows the configuration, loss curves per objective term, throughput and the \
            compute/communication split, sample grids from the newest checkpoints and the final model \
            (image data), evaluation results (RUNDIR/eval.json) and the cluster's events. It works on \
            unfinished runs too. Images are embedded: the file can be copied or mailed on its own. The \
            path of the page is printed on standard output.

            Examples:
              ambient report --run runs/fm                  (writes runs/fm/report.html)
              ambient report --run runs/fm --out /tmp/fm.html
            """)

        @Option(name: .customLong("run"), help: "Run directory.")
        var runDirectory: String

        @Option(help: "Output file (default RUNDIR/report.html).")
        var out: String?

        @Option(name: .customLong("samples"), help: "Samples per grid.")
        var samples: Int = 16

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if samples < 1 || samples > 256 { throw ValidationError("--samples must be in 1...256") }
        }

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                var report = RunReport(runPath: runDirectory)
                report.samplesPerGrid = samples
                var bar: ProgressReporter?
                report.progress = { done, total in
                    if quiet { return }
                    if bar == nil { bar = ProgressReporter(label: "report sample grids", total: total, unit: "grid") }
                    bar?.update(done)
                }
                let path = try report.write(to: out)
                print(path)
            }
        }
    }
}
