import Testing
@testable import Wire

@Suite("Error feedback")
struct ErrorFeedbackTests {
    /// Σ sent + residual = Σ gradients (up to float rounding) and the residual stays bounded.
    ///
    /// Bound: top-k keeps at least the fraction δ = k/n of ‖c‖², so ‖r_t‖ ≤ √(1−δ)(‖r_{t−1}‖ + ‖g_t‖),
    /// hence ‖r_t‖ ≤ √(1−δ)/(1−√(1−δ)) · max‖g‖ at every step. bf16 rounding leaves at most 2^-8
    /// of each element, so ‖r_t‖ ≤ 2^-8 ‖c_t‖ (δ = 1 − 2^-16 below); fp16 leaves 2^-11 of normal
    /// values but all of those it flushes to zero, which here carry a negligible share of ‖c‖.
    @Test("over many steps the decoded updates track the gradient sum, residual bounded",
          arguments: ["topk:0.05", "topk:0.001", "bf16", "fp16-lz4"])
    func tracksGradientSum(name: String) throws {
        let codec = try CodecRegistry.codec(named: name)
        let n = 2000, steps = 300
        var feedback = ErrorFeedback(count: n)
        var sumGradients = [Double](repeating: 0, count: n)
        var sumSent = [Double](repeating: 0, count: n)
        var out: [UInt8] = []
        var maxGradientNorm = 0.0
        let delta = codec.id == .topK ? Double((codec as! TopKCodec).keptCount(for: n)) / Double(n) : 1 - 0x1p-16
        let growth = (1 - delta).squareRoot()
        for step in 0..<steps {
            // Small scales so fp16 never overflows, plus a persistent bias.
            let g = gaussianGradient(n, seed: UInt64(1000 + step)).map { min(max($0, -100), 100) * 0.01 + 0.001 }
            try g.withUnsafeBufferPointer { p throws(WireError) in try feedback.compensateAndEncode(p, codec: codec, into: &out) }
            let sent = try codec.decode(out, count: n)
            for i in 0..<n {
                sumGradients[i] += Double(g[i])
                sumSent[i] += Double(sent[i])
            }
            maxGradientNorm = max(maxGradientNorm, norm(g))
            let bound = growth / (1 - growth) * maxGradientNorm * 1.0001
            #expect(norm(feedback.residual) <= bound, "step \(step): ‖r‖ = \(norm(feedback.residual)) > \(bound)")
        }
        var worst = 0.0
        for i in 0..<n {
            let gap = sumGradients[i] - sumSent[i] - Double(feedback.residual[i])
            worst = max(worst, abs(gap) / max(1, abs(sumGradients[i])))
        }
        #expect(worst < 1e-4, "Σg − Σsent − r drifted by \(worst)")
    }

    private func norm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }

    @Test("with a lossless codec the residual stays exactly zero")
    func lossless() throws {
        var feedback = ErrorFeedback(count: 100)
        var out: [UInt8] = []
        let g = gaussianGradient(100)
        try g.withUnsafeBufferPointer { p throws(WireError) in try feedback.compensateAndEncode(p, codec: ShuffleLZ4Codec(), into: &out) }
        #expect(feedback.residual.allSatisfy { $0.bitPattern == 0 })
        #expect(bits(try ShuffleLZ4Codec().decode(out, count: 100)) == bits(g))
    }

    @Test("non-finite gradients and wrong sizes are refused without touching the residual")
    func refusesBadInput() throws {
        var feedback = ErrorFeedback(count: 3)
        var out: [UInt8] = []
        let codec = TopKCodec(fraction: 0.34)
        try [Float(1), 2, 3].withUnsafeBufferPointer { p throws(WireError) in try feedback.compensateAndEncode(p, codec: codec, into: &out) }
        let before = feedback.residual
        #expect(before == [1, 0, 0])  // k = ceil(0.34 · 3) = 2: 3 and 2 sent, 1 kept
        let nan = [Float(1), .nan, 3]
        #expect(nan.withUnsafeBufferPointer { p in wireError { try feedback.compensateAndEncode(p, codec: codec, into: &out) } }
            == .nonFiniteValue(index: 1))
        #expect(bits(feedback.residual) == bits(before))
        #expect([Float(1), 2].withUnsafeBufferPointer { p in wireError { try feedback.compensateAndEncode(p, codec: codec, into: &out) } }
            == .elementCountMismatch(expected: 3, found: 2))
        // fp16 overflow: the message would carry infinity; refused, the compensated sum is kept.
        var fp = ErrorFeedback(count: 2)
        #expect([Float(1e6), 1].withUnsafeBufferPointer { p in
            wireError { try fp.compensateAndEncode(p, codec: HalfPrecisionCodec(format: .binary16, compressed: false), into: &out) }
        } == .nonFiniteValue(index: 0))
        #expect(fp.residual == [1e6, 1])
        fp.reset()
        #expect(fp.residual == [0, 0])
    }
}
