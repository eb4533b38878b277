// Release timings of the Wire codecs and checksums on a synthetic gradient, through the public
// `CodecBenchmark` API (the same one the `bench` executable calls with real gradients).
// Run via scripts/wire-bench.sh [elements] [repeats].
import Wire

let args = CommandLine.arguments
let count = args.count > 1 ? Int(args[1])! : 10_000_000
let repeats = args.count > 2 ? Int(args[2])! : 7
let gradient = CodecBenchmark.syntheticGradient(count: count, seed: 1)
print("synthetic gradient: \(count) Float32 (\(count * 4 / 1_000_000) MB), Gaussian layers with scales in [1e-5, 1e-1]; median of \(repeats)")
print(CodecBenchmark.tableHeader)
for row in CodecBenchmark.run(values: gradient, repeats: repeats) { print(row) }
gradient.withUnsafeBytes { bytes in
    for row in CodecBenchmark.checksums(bytes: bytes, repeats: repeats) {
        print(row.name.padding(toLength: 14, withPad: " ", startingAt: 0) + "\(Int(row.encodeMBps)) MB/s")
    }
}
