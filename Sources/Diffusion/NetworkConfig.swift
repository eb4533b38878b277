import TensorCore

/// The architecture of a denoiser network F, selected per run (`--arch`).
///
/// Stored in JSON as `{"arch": "mlp", "mlp": {...}}`: one key per architecture, so a new
/// architecture adds a case and a key without changing how existing configs read.
public enum NetworkConfig: Codable, Sendable, Equatable {
    case mlp(MLPConfig)
    /// The convolutional U-Net (or, with `outputDimension` set, its encoder classifier).
    case unet(UNetConfig)

    /// Builds the network this configuration describes.
    public func make() -> any DenoiserNetwork {
        switch self {
        case let .mlp(c): return MLPNetwork(c)
        case let .unet(c): return c.outputDimension == nil ? UNetNetwork(c) : UNetEncoderClassifier(c)
        }
    }

    public var arch: String {
        switch self {
        case .mlp: return "mlp"
        case .unet: return "unet"
        }
    }

    /// d: size of one sample.
    public var dataDimension: Int {
        get {
            switch self {
            case let .mlp(c): return c.dataDimension
            case let .unet(c): return c.dataDimension
            }
        }
        set {
            switch self {
            case var .mlp(c):
                c.dataDimension = newValue
                self = .mlp(c)
            case var .unet(c):
                c.dataDimension = newValue
                self = .unet(c)
            }
        }
    }

    /// Extra input channels of size d (the mask channel of SPEC O3).
    public var conditioningChannels: Int {
        get {
            switch self {
            case let .mlp(c): return c.conditioningChannels
            case let .unet(c): return c.conditioningChannels
            }
        }
        set {
            switch self {
            case var .mlp(c):
                c.conditioningChannels = newValue
                self = .mlp(c)
            case var .unet(c):
                c.conditioningChannels = newValue
                self = .unet(c)
            }
        }
    }

    /// Values per sample the network returns (nil: d, a denoiser; 1: the classifier of SPEC O5).
    public var outputDimension: Int? {
        get {
            switch self {
            case let .mlp(c): return c.outputDimension
            case let .unet(c): return c.outputDimension
            }
        }
        set {
            switch self {
            case var .mlp(c):
                c.outputDimension = newValue
                self = .mlp(c)
            case var .unet(c):
                c.outputDimension = newValue
                self = .unet(c)
            }
        }
    }

    public func validate() throws {
        switch self {
        case let .mlp(c): try c.validate()
        case let .unet(c): try c.validate()
        }
    }

    enum CodingKeys: String, CodingKey { case arch, mlp, unet }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let arch = try c.decode(String.self, forKey: .arch)
        switch arch {
        case "mlp": self = .mlp(try c.decode(MLPConfig.self, forKey: .mlp))
        case "unet": self = .unet(try c.decode(UNetConfig.self, forKey: .unet))
        default:
            throw DecodingError.dataCorruptedError(forKey: .arch, in: c,
                                                   debugDescription: "unknown network architecture '\(arch)' (known: mlp, unet)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(arch, forKey: .arch)
        switch self {
        case let .mlp(m): try c.encode(m, forKey: .mlp)
        case let .unet(u): try c.encode(u, forKey: .unet)
        }
    }
}
