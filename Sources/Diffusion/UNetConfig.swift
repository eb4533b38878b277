import TensorCore

/// Architecture of the convolutional U-Net F (`UNetNetwork`) and of its encoder classifier
/// (`UNetEncoderClassifier`, chosen by setting `outputDimension`, as `MLPConfig` does).
///
/// JSON keys are the property names; every key but `dataDimension` may be omitted.
public struct UNetConfig: Codable, Sendable, Equatable {
    /// d = imageChannels * side * side (784 for 28x28 grayscale). Images must be square.
    public var dataDimension: Int
    /// Channels of one data image (1 for Fashion-MNIST).
    public var imageChannels: Int = 1
    /// Extra input images of size d (the mask channels of SPEC O3), concatenated to the input.
    public var conditioningChannels: Int = 0
    /// Feature channels per resolution: [16, 32, 64] works at 28, 14 and 7, [32, 64] at 28 and 14.
    /// Each further entry halves the side, which must stay even.
    public var channels: [Int] = UNetConfig.defaultChannels
    /// Residual blocks per resolution in the encoder (and in the decoder).
    public var blocksPerLevel: Int = 1
    /// GroupNorm groups; every entry of `channels` must be a multiple of it.
    public var groups: Int = 8
    /// Size of the sinusoidal embedding of c_noise.
    public var embeddingSize: Int = 64
    /// Width of the noise-embedding MLP (default 4 channels[0]).
    public var embeddingWidth: Int?
    /// Gated convolutions (`conv(x) * sigmoid(conv_g(x))`) for every 3x3 convolution but the
    /// output one, as ambient-diffusion uses for masked inputs.
    public var gated: Bool = false
    /// nil: the U-Net denoiser (output d). A number: the encoder classifier with that many
    /// logits (1 for the Ambient-Omni clean/corrupted classifier).
    public var outputDimension: Int?

    /// Three resolutions, 16 channels at 28x28, 32 at 14x14 and 64 at 7x7 for Fashion-MNIST.
    ///
    /// Three, not two: at the highest noise levels D must produce a whole garment from almost
    /// pure noise, which needs information about where in the image a pixel is. Convolutions
    /// get it only from the zero padding at the border, and at 7x7 the border is a few pixels
    /// from everywhere. Two resolutions (28, 14) sampled shapeless blobs at equal training time
    /// (docs/results.md, issue 8). Narrow, because on a CPU the number of steps in the budget
    /// matters more than width (16,32,64 is 4x cheaper per sample than 32,64,128).
    public static let defaultChannels = [16, 32, 64]

    /// The default for images of side `side`: the first entries of `defaultChannels`, as many
    /// as the side halves into while staying even (28: all three; 30: [16, 32]; 15: [16]).
    public static func defaultChannels(side: Int) -> [Int] {
        var levels = 1, s = side
        while levels < defaultChannels.count, s > 0, s % 2 == 0 {
            levels += 1
            s /= 2
        }
        return Array(defaultChannels.prefix(levels))
    }

    public init(dataDimension: Int, imageChannels: Int = 1, conditioningChannels: Int = 0, channels: [Int] = UNetConfig.defaultChannels,
                blocksPerLevel: Int = 1, groups: Int = 8, embeddingSize: Int = 64, embeddingWidth: Int? = nil,
                gated: Bool = false, outputDimension: Int? = nil) {
        self.dataDimension = dataDimension
        self.imageChannels = imageChannels
        self.conditioningChannels = conditioningChannels
        self.channels = channels
        self.blocksPerLevel = blocksPerLevel
        self.groups = groups
        self.embeddingSize = embeddingSize
        self.embeddingWidth = embeddingWidth
        self.gated = gated
        self.outputDimension = outputDimension
    }

    /// Side of the square data image (0 when d is not imageChannels times a square).
    public var side: Int {
        guard imageChannels >= 1, dataDimension >= 1, dataDimension % imageChannels == 0 else { return 0 }
        let area = dataDimension / imageChannels
        var s = Int(Double(area).squareRoot().rounded())
        while s * s > area { s -= 1 }
        while (s + 1) * (s + 1) <= area { s += 1 }
        return s * s == area ? s : 0
    }

    /// (imageChannels, side, side).
    public var imageShape: ImageShape { ImageShape(channels: imageChannels, height: side, width: side) }
    /// The network input: the image and its conditioning images stacked along channels.
    public var inputShape: ImageShape { imageShape.with(channels: imageChannels * (1 + conditioningChannels)) }
    public var resolvedEmbeddingWidth: Int { embeddingWidth ?? 4 * (channels.first ?? 1) }

    /// Checks that every size is usable; the message says which is wrong and what would work.
    public func validate() throws {
        func bad(_ s: String) -> ConfigurationError { ConfigurationError(message: "unet: " + s) }
        if imageChannels < 1 { throw bad("image channels must be >= 1, got \(imageChannels)") }
        if dataDimension < 1 { throw bad("data dimension must be positive, got \(dataDimension)") }
        if side == 0 {
            let area = dataDimension / max(imageChannels, 1)
            let below = Int(Double(area).squareRoot())
            throw bad("data dimension \(dataDimension) is not \(imageChannels) square image(s) of side s " +
                      "(d = \(imageChannels) s^2; nearest: \(imageChannels * below * below) or \(imageChannels * (below + 1) * (below + 1))); " +
                      "the U-Net needs square images, use --arch mlp for vectors")
        }
        if conditioningChannels < 0 { throw bad("conditioning channels must be >= 0, got \(conditioningChannels)") }
        if channels.isEmpty { throw bad("channels must list at least one resolution, e.g. [16, 32, 64]") }
        if groups < 1 { throw bad("groups must be >= 1, got \(groups)") }
        for c in channels where c < 1 || c % groups != 0 {
            throw bad("every channel count must be a positive multiple of the \(groups) GroupNorm groups; got \(c) in \(channels)")
        }
        let halvings = channels.count - 1
        var s = side
        for level in 0..<halvings {
            if s % 2 != 0 {
                throw bad("\(side)x\(side) images halve only \(level) time(s) (\(s)x\(s) is odd), but \(channels.count) " +
                          "resolutions need \(halvings) halvings; use at most \(level + 1) entries in channels")
            }
            s /= 2
        }
        if blocksPerLevel < 1 { throw bad("blocks per level must be >= 1, got \(blocksPerLevel)") }
        if embeddingSize < 2 || embeddingSize % 2 != 0 { throw bad("embedding size must be even and >= 2, got \(embeddingSize)") }
        if resolvedEmbeddingWidth < 1 { throw bad("embedding width must be >= 1, got \(resolvedEmbeddingWidth)") }
        if let o = outputDimension, o < 1 { throw bad("output dimension must be >= 1, got \(o)") }
    }

    enum CodingKeys: String, CodingKey {
        case dataDimension, imageChannels, conditioningChannels, channels, blocksPerLevel, groups
        case embeddingSize, embeddingWidth, gated, outputDimension
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(dataDimension: try c.decode(Int.self, forKey: .dataDimension))
        imageChannels = try c.decodeIfPresent(Int.self, forKey: .imageChannels) ?? imageChannels
        conditioningChannels = try c.decodeIfPresent(Int.self, forKey: .conditioningChannels) ?? conditioningChannels
        channels = try c.decodeIfPresent([Int].self, forKey: .channels) ?? channels
        blocksPerLevel = try c.decodeIfPresent(Int.self, forKey: .blocksPerLevel) ?? blocksPerLevel
        groups = try c.decodeIfPresent(Int.self, forKey: .groups) ?? groups
        embeddingSize = try c.decodeIfPresent(Int.self, forKey: .embeddingSize) ?? embeddingSize
        embeddingWidth = try c.decodeIfPresent(Int.self, forKey: .embeddingWidth)
        gated = try c.decodeIfPresent(Bool.self, forKey: .gated) ?? gated
        outputDimension = try c.decodeIfPresent(Int.self, forKey: .outputDimension)
    }
}
