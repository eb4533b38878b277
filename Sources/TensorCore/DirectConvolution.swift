import CKernels

/// The direct 3x3 convolution of `CKernels` (AVX2 + FMA or AVX-512, Float): what `Tape.conv2d`
/// runs for 3x3 kernels when the CPU has AVX2, instead of im2col + GEMM.
///
/// Why: a 3x3 im2col copies every input value 9 times and the GEMM then packs the copy again;
/// with the U-Net's 16-64 channels a copied value feeds only 2 Cout FLOPs, so the copies cost
/// about as much as the arithmetic. The direct kernel reads shifted rows of zero-padded planes
/// and keeps a 4-channel x 16-position tile in registers (`Sources/CKernels/conv3x3.c`).
///
/// Contract (tested in `DirectConvolutionTests` against `naiveConv2d` and the im2col path):
/// the same convolution and gradients as `Tape.conv2d`'s im2col path, to Float rounding (the
/// additions happen in another order). Deterministic for a given CPU path.
public enum DirectConvolution {
    /// True on x86-64 CPUs with AVX2 and FMA.
    public static let isAvailable: Bool = ambient_conv3x3_available() != 0

    /// The kernels' vector paths. AVX2 and AVX-512 give bitwise the same results (every value
    /// receives the same operations in the same order), so machines with and without AVX-512
    /// train the same bits; the portable C loops add in another order.
    public enum Kernel: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case portable = 0, avx2 = 2, avx512 = 3
        public var description: String {
            switch self { case .portable: "portable C"; case .avx2: "AVX2"; case .avx512: "AVX-512" }
        }
    }

    /// The path this CPU runs (AVX-512 where available unless `AMBIENT_CONV3X3_AVX512=0`).
    public static let fastest: Kernel = Kernel(rawValue: ambient_conv3x3_level()) ?? .portable

    /// Floats of workspace `forward` needs.
    public static func forwardWorkspace(input: ImageShape, outChannels: Int) -> Int {
        let (h, w) = (Int32(input.height), Int32(input.width))
        return input.channels * ambient_conv3x3_plane_stride(h, w)
            + roundUp4(outChannels) * ambient_conv3x3_output_stride(h, w)
            + ambient_conv3x3_packed_weights(Int32(input.channels), Int32(outChannels))
    }

    /// Padded elements of one sample in `backward` (its output gradient and its input).
    static func backwardElementsPerSample(input: ImageShape, outChannels: Int) -> Int {
        (roundUp4(outChannels) + input.channels) * ambient_conv3x3_plane_stride(Int32(input.height), Int32(input.width))
    }

    /// Samples `backward` pads at once: as many as fit `chunkElements` (at least one).
    static func backwardChunk(input: ImageShape, outChannels: Int, samples: Int) -> Int {
        max(1, min(samples, chunkElements / backwardElementsPerSample(input: input, outChannels: outChannels)))
    }

    /// Padded elements per backward chunk: 1 MB of Float, so that a chunk stays in a 2 MB L2
    /// cache while the weight gradient passes over it once per (input channel, kernel row,
    /// 4 outputs).
    static let chunkElements = 1 << 18

    /// Floats of workspace `backward` needs for `samples` images.
    public static func backwardWorkspace(input: ImageShape, outChannels: Int, samples: Int) -> Int {
        let (h, w) = (Int32(input.height), Int32(input.width))
        let (cin, cout) = (input.channels, outChannels)
        return backwardChunk(input: input, outChannels: outChannels, samples: samples)
            * backwardElementsPerSample(input: input, outChannels: outChannels)
            + roundUp4(cin) * ambient_conv3x3_output_stride(h, w)
            + ambient_conv3x3_packed_weights(Int32(cout), Int32(cin))
    }

    /// y (samples, Cout H W) = conv3x3(x (samples, Cin H W), w (Cout, Cin, 3, 3)) + bias.
    /// `kernel` chooses a slower path than this CPU's fastest (tests compare them); a faster one
    /// than the CPU has runs the fastest it has.
    public static func forward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               _ y: UnsafeMutablePointer<Float>, input: ImageShape, outChannels: Int, samples: Int,
                               workspace: UnsafeMutablePointer<Float>, kernel: Kernel = fastest) {
        let (cin, cout, h, wd) = (Int32(input.channels), Int32(outChannels), Int32(input.height), Int32(input.width))
        let padded = workspace
        let scratch = padded + input.channels * ambient_conv3x3_plane_stride(h, wd)
        let packed = scratch + roundUp4(outChannels) * ambient_conv3x3_output_stride(h, wd)
        ambient_conv3x3_pack_weights(w, packed, cin, cout, 0)
        let outCount = outChannels * input.spatial
        for n in 0..<samples {
            ambient_conv3x3_pad(x + n * input.count, padded, cin, h, wd)
            ambient_conv3x3_forward_at(padded, packed, bias, y + n * outCount, cin, cout, h, wd, 0, scratch, kernel.rawValue)
        }
    }

    /// Accumulates the input gradient `dx += conv3x3ᵀ(dy)` and the weight gradient
    /// `dw += sum over samples of dy ⋆ x` (either may be nil), a chunk of samples at a time.
    /// The bias gradient is the caller's (a row sum of dy).
    public static func backward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>?,
                                input: ImageShape, outChannels: Int, samples: Int,
                                workspace: UnsafeMutablePointer<Float>, kernel: Kernel = fastest) {
        guard dx != nil || dw != nil else { return }
        let (cin, cout, h, wd) = (Int32(input.channels), Int32(outChannels), Int32(input.height), Int32(input.width))
        let stride = ambient_conv3x3_plane_stride(h, wd)
        let chunk = backwardChunk(input: input, outChannels: outChannels, samples: samples)
        let dyPlanes = roundUp4(outChannels)                   // per sample; the planes beyond Cout stay zero
        let paddedDY = workspace                               // chunk x dyPlanes planes
        let paddedX = paddedDY + chunk * dyPlanes * stride     // chunk x Cin planes
        let scratch = paddedX + chunk * input.channels * stride
        let packed = scratch + roundUp4(input.channels) * ambient_conv3x3_output_stride(h, wd)
        if dyPlanes > outChannels {
            for n in 0..<chunk {
                (paddedDY + (n * dyPlanes + outChannels) * stride).initialize(repeating: 0, count: (dyPlanes - outChannels) * stride)
            }
        }
        if dx != nil { ambient_conv3x3_pack_weights(w, packed, cin, cout, 1) }
        let outCount = outChannels * input.spatial
        var n0 = 0
        while n0 < samples {
            let count = min(chunk, samples - n0)
            for i in 0..<count {
                let n = n0 + i, pdy = paddedDY + i * dyPlanes * stride
                ambient_conv3x3_pad(dy + n * outCount, pdy, cout, h, wd)
                if let dx {
                    // The adjoint is a convolution from Cout planes to Cin planes with flipped kernels.
                    ambient_conv3x3_forward_at(pdy, packed, nil, dx + n * input.count, cout, cin, h, wd, 1, scratch,
                                               kernel.rawValue)
                }
                if dw != nil { ambient_conv3x3_pad(x + n * input.count, paddedX + i * input.channels * stride, cin, h, wd) }
            }
            if let dw { ambient_conv3x3_weight_gradient_at(paddedDY, paddedX, dw, cin, cout, h, wd, Int32(count), kernel.rawValue) }
            n0 += count
        }
    }

    static func roundUp4(_ n: Int) -> Int { (n + 3) / 4 * 4 }
}

extension Float {
    public static var hasDirectConv3x3: Bool { DirectConvolution.isAvailable }

    public static func directConv3x3Workspace(input: ImageShape, outChannels: Int, samples: Int) -> Int {
        max(DirectConvolution.forwardWorkspace(input: input, outChannels: outChannels),
            DirectConvolution.backwardWorkspace(input: input, outChannels: outChannels, samples: samples))
    }

    public static func directConv3x3Forward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                            _ y: UnsafeMutablePointer<Float>, input: ImageShape, outChannels: Int, samples: Int,
                                            workspace: UnsafeMutablePointer<Float>) {
        DirectConvolution.forward(x, w, bias: bias, y, input: input, outChannels: outChannels, samples: samples, workspace: workspace)
    }

    public static func directConv3x3Backward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                             dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>?,
                                             input: ImageShape, outChannels: Int, samples: Int,
                                             workspace: UnsafeMutablePointer<Float>) {
        DirectConvolution.backward(x, w, dy, dx: dx, dw: dw, input: input, outChannels: outChannels, samples: samples,
                                   workspace: workspace)
    }
}
