import Testing
@testable import Wire

@Suite("Error feedback")
struct ErrorFeedbackTests {
    /// Σ sent + residual = Σ gradients (up to float rounding) and the residual stays bounded.
    @Test("over many steps the decoded updates track the gradient sum, residual bounded",
          arguments: ["topk:0.05", "bf16", "fp16-lz4", "topk:0.001"])
    func tracksGradientSum(name: String) throws {
        let codec = try CodecRegistry.codec(named: name)
        let n = 2000, steps = 300
        var feedback = ErrorFeedback(count: n)
        var sumGradients = [Double](repeating: 0, count: n)
        var sumSent = [Double](repeating: 0, count: n)
        var out: [UInt8] = []
        var maxResidual: Float = 0
        for step in 0..<steps {
            let g = gaussianGradient(n, seed: UInt64(1000 + step)).map { $0 + 0.01 }  // a persistent bias too
            try g.withUnsafeBufferPointer { p throws(WireError) in try feedback.compensateAndEncode(p, codec: codec, into: &out) }
            let sent = try codec.decode(out, count: n)
            for i in 0..<n {
                sumGradients[i] += Double(g[i])
                sumSent[i] += Double(sent[i])
            }
            maxResidual = max(maxResidual, feedback.residual.map(\.magnitude).max()!)
        }
        var worst = 0.0
        for i in 0..<n {
            let gap = sumGradients[i] - sumSent[i] - Double(feedback.residual[i])
            worst = max(worst, abs(gap) / max(1, abs(sumGradients[i])))
        }
        #expect(worst < 1e-3, "Σg − Σsent − r drifted by \(worst)")
        // The residual holds at most about 1/fraction steps of gradient (scale ≤ 100 in the test data).
        #expect(maxResidual < 100 * 3000, "residual grew to \(maxResidual)")
        if !name.hasPrefix("topk") { #expect(maxResidual < 1, "rounding residual \(maxResidual)") }
    }

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
