/// The shape (C, H, W) of one image. The tape stays 2-D: a batch of images is a node of
/// shape (rows, C H W), channel-major per sample (NCHW flattened), and the image primitives
/// carry this geometry in their payload.
public struct ImageShape: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public var channels: Int
    public var height: Int
    public var width: Int

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
    }

    /// Pixels per channel, H W.
    public var spatial: Int { height * width }
    /// Values per sample, C H W.
    public var count: Int { channels * height * width }

    public func with(channels c: Int) -> ImageShape { ImageShape(channels: c, height: height, width: width) }
    /// After 2x2 average pooling.
    public var halved: ImageShape { ImageShape(channels: channels, height: height / 2, width: width / 2) }
    /// After nearest 2x up-sampling.
    public var doubled: ImageShape { ImageShape(channels: channels, height: height * 2, width: width * 2) }

    public var description: String { "(\(channels), \(height), \(width))" }
}

/// A stride-1 convolution with 'same' zero padding and an odd k x k kernel:
/// (inChannels, H, W) -> (outChannels, H, W). Weights are (outChannels, inChannels, k, k),
/// i.e. a row-major (outChannels, inChannels k k) matrix, as in PyTorch.
public struct ConvShape: Sendable, Equatable, Hashable {
    public var input: ImageShape
    public var outChannels: Int
    public var kernel: Int

    public init(input: ImageShape, outChannels: Int, kernel: Int) {
        self.input = input
        self.outChannels = outChannels
        self.kernel = kernel
    }

    public var output: ImageShape { input.with(channels: outChannels) }
    /// Rows of the im2col patch matrix, inChannels k k (the GEMM's inner dimension).
    public var patchSize: Int { input.channels * kernel * kernel }
    public var weightCount: Int { outChannels * patchSize }
    /// Multiply-accumulates of the forward pass per sample: Cout Cin k k H W.
    public var macsPerSample: Int { weightCount * input.spatial }
}

/// Direct convolution, accumulated in Double: the slow, obviously correct reference for the
/// im2col + GEMM path of `Tape.conv2d`. x is (rows, Cin H W), w (Cout, Cin k k), b (Cout) or
/// nil, y (rows, Cout H W).
public func naiveConv2d<T: Scalar>(_ x: UnsafePointer<T>, _ w: UnsafePointer<T>, _ b: UnsafePointer<T>?,
                                   _ y: UnsafeMutablePointer<T>, rows: Int, shape: ConvShape) {
    let (cin, h, wd) = (shape.input.channels, shape.input.height, shape.input.width)
    let (cout, k) = (shape.outChannels, shape.kernel)
    let pad = k / 2
    for n in 0..<rows {
        for co in 0..<cout {
            for i in 0..<h {
                for j in 0..<wd {
                    var acc = b.map { Double($0[co]) } ?? 0
                    for ci in 0..<cin {
                        for ky in 0..<k {
                            let si = i + ky - pad
                            if si < 0 || si >= h { continue }
                            for kx in 0..<k {
                                let sj = j + kx - pad
                                if sj < 0 || sj >= wd { continue }
                                acc += Double(w[((co * cin + ci) * k + ky) * k + kx]) *
                                    Double(x[((n * cin + ci) * h + si) * wd + sj])
                            }
                        }
                    }
                    y[((n * cout + co) * h + i) * wd + j] = T(acc)
                }
            }
        }
    }
}
