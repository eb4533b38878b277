// ambient-compute: the numerics of an Ambient worker as a child process, for workers written in
// other languages (scripts/python-worker). The caller speaks the wire protocol (docs/protocol.md)
// and hands this process only what is arithmetic: building the run's workload from the welcome,
// loading a replica state, applying an update with the run's optimiser, computing a shard's
// gradient. The same library code as `ambient worker`, so the numbers are the same bits.
//
// Requests and replies on stdin / stdout, each: u32 LE length + JSON object, then u64 LE length
// + raw bytes (Float32 little-endian arrays, or the welcome's JSON payload).
//   {"op":"build"}  + welcome payload          -> {"datasetHash","parameterCount"}
//   {"op":"load","sections","counts","counters"} + state floats -> {"version","checksum"}
//   {"op":"apply"} + update floats (all chunks) -> {"version","checksum"}
//   {"op":"gradient","step","shard","chunkOffsets"} -> {"meta"} + gradient floats
// A failed request gets {"error": "..."} and the process goes on.
import Cluster
import Foundation
import Logging
import TensorCore
import Training
import Wire

struct Request: Decodable {
    var op: String
    var step: Int?
    var shard: Int?
    var chunkOffsets: [Int]?
    var sections: [String]?
    var counts: [Int]?
    var counters: [String: Int]?
}

struct Reply: Encodable {
    var error: String?
    var datasetHash: String?
    var parameterCount: Int?
    var version: Int?
    var checksum: UInt64?
    var meta: GradientMeta?
}

struct Failure: Error, CustomStringConvertible { let description: String }

func readExactly(_ n: Int) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(n)
    while out.count < n {
        let d = FileHandle.standardInput.readData(ofLength: n - out.count)
        if d.isEmpty { return nil }
        out += d
    }
    return out
}

func le<T: FixedWidthInteger>(_ bytes: [UInt8], _: T.Type) -> T {
    bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(as: T.self)) }
}

func write(_ reply: Reply, _ payload: [UInt8] = []) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json = [UInt8]((try? encoder.encode(reply)) ?? Data("{\"error\":\"unencodable reply\"}".utf8))
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt32(json.count).littleEndian) { out += $0 }
    out += json
    withUnsafeBytes(of: UInt64(payload.count).littleEndian) { out += $0 }
    out += payload
    FileHandle.standardOutput.write(Data(out))
}

func floats(_ bytes: [UInt8]) -> [Float] {
    let n = bytes.count / 4
    var v = [Float](repeating: 0, count: n)
    v.withUnsafeMutableBytes { $0.copyBytes(from: bytes.prefix(n * 4)) }
    return v
}

// As `ambient` (main): on a CPU Debian's OpenBLAS does not know it falls back to its SSE3 kernels
// (Prescott), and `ambient` restarts itself with the kernels the CPU supports. This process did
// not, so on an AVX-512 machine its shard gradients came from other kernels than a Swift worker's
// and differed in the last bits (scripts/python-worker/run failed there, 2026-12-05). Stdin and
// stdout survive the exec.
BLASCore.restartWithPreferredCoreIfNeeded()
BLAS.setThreads(1)   // as `ambient worker`: one BLAS thread, the same bits on every worker
// As `ambient` (main): subnormals flushed on this, the compute thread, so a shard's gradient has
// the bits a Swift worker computes wherever a subnormal would appear (Denormals).
Denormals.applyToMainThread()
let logger = Logger(label: "ambient-compute") { StreamLogHandler.standardError(label: $0) }
var workload: (any WorkerWorkload)?

while let head = readExactly(4) {
    guard let json = readExactly(Int(le(head, UInt32.self))), let lengthBytes = readExactly(8) else { break }
    let length = le(lengthBytes, UInt64.self)
    guard length <= 1 << 34, let payload = readExactly(Int(length)) else { break }
    do {
        let request = try JSONDecoder().decode(Request.self, from: Data(json))
        switch request.op {
        case "build":
            let welcome = try JSONDecoder().decode(WelcomeBody.self, from: Data(payload))
            if let problem = welcome.problem { throw Failure(description: "invalid welcome: \(problem)") }
            let w = try DenoiserWorkerWorkload.factory(logger: logger, threads: 1)(welcome)
            workload = w
            write(Reply(datasetHash: w.datasetHash, parameterCount: w.parameterCount))
        case "load":
            guard let w = workload, let names = request.sections, let counts = request.counts, names.count == counts.count,
                  counts.allSatisfy({ $0 >= 0 }) else { throw Failure(description: "load before build, or a bad section table") }
            let flat = floats(payload)
            guard counts.reduce(0, +) == flat.count else { throw Failure(description: "section sizes do not add up") }
            var sections: [StateSnapshot.Section] = []
            var at = 0
            for (name, c) in zip(names, counts) {
                sections.append(.init(name: name, values: Array(flat[at..<(at + c)])))
                at += c
            }
            try w.restore(replica: StateSnapshot(sections: sections, counters: request.counters ?? [:]))
            write(Reply(version: w.version, checksum: w.parameterChecksum))
        case "apply":
            guard let w = workload, payload.count == 4 * w.parameterCount else { throw Failure(description: "apply needs parameterCount floats") }
            floats(payload).withUnsafeBufferPointer { w.apply(gradient: $0.baseAddress!) }
            write(Reply(version: w.version, checksum: w.parameterChecksum))
        case "gradient":
            guard let w = workload, let step = request.step, let shard = request.shard, step >= 0, shard >= 0,
                  let offsets = request.chunkOffsets else { throw Failure(description: "gradient needs build, step, shard, chunkOffsets") }
            let n = w.parameterCount
            guard offsets.first == 0, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }), let last = offsets.last, last < n else {
                throw Failure(description: "chunk offsets must start at 0, increase and stay below \(n)")
            }
            let chunks = offsets.indices.map { i in offsets[i]..<(i + 1 < offsets.count ? offsets[i + 1] : n) }
            let meta = w.computeShard(step: step, shard: shard, slot: 0, chunks: chunks) { _ in }
            let g = w.gradientBuffer(slot: 0)
            write(Reply(meta: meta), Array(UnsafeRawBufferPointer(g)))
        default:
            throw Failure(description: "unknown op \(request.op)")
        }
    } catch {
        write(Reply(error: "\(error)"))
    }
}
