import Diffusion

extension RunConfig {
    /// What the user chose explicitly, by a command-line option or a configuration-file key: the
    /// defaults that depend on the data (NetworkDefaults) apply only to what was left out.
    public struct Choices: Sendable, Equatable {
        /// The network was chosen (--arch, --width, --blocks, or a file's `model`).
        public var network = false
        /// --arch unet: the U-Net whatever the data.
        public var unet = false
        public var batch = false
        public var shards = false
        public var learningRate = false
        /// The U-Net's channels from --channels.
        public var unetChannels: [Int]?
        public init(network: Bool = false, unet: Bool = false, batch: Bool = false, shards: Bool = false,
                    learningRate: Bool = false, unetChannels: [Int]? = nil) {
            (self.network, self.unet, self.batch, self.shards) = (network, unet, batch, shards)
            (self.learningRate, self.unetChannels) = (learningRate, unetChannels)
        }
    }

    /// Validates what does not need the data (so a bad option fails before a download), loads the
    /// data and completes the configuration from it (`resolved(for:_:)`).
    public func loadingData(_ choices: Choices) throws -> (RunConfig, TrainingData) {
        var c = shapedForObjective()
        c.model.dataDimension = max(c.model.dataDimension, 1)
        try c.validate()
        let data = try TrainingData.load(c)
        return (try c.resolved(for: data, choices), data)
    }

    /// The configuration completed from the data: the network's dimensions; the image network
    /// with its batch and learning rate when none was chosen; the crop size of the crops
    /// classifier; the observed fraction (O3) and the sampling floor (annotated O5). Derived
    /// values are recomputed, never taken from a file, so a printed configuration resolves to itself.
    public func resolved(for data: TrainingData, _ choices: Choices) throws -> RunConfig {
        var c = shapedForObjective()
        let kind = objective
        let buildUNet = choices.unet || !choices.network
            && NetworkDefaults.prefersUNet(objective: kind, imageShape: data.imageShape, crops: classifierCrop)
        if buildUNet, case .mlp = c.model {
            if !choices.batch {
                c.batch = NetworkDefaults.unetBatch
                if !choices.shards { c.shards = min(4, c.batch) }
            }
            if !choices.learningRate { c.learningRate = NetworkDefaults.unetLearningRate }
            var u = UNetConfig(dataDimension: data.dimension, imageChannels: data.imageShape?.first ?? 1,
                               conditioningChannels: kind == .masked ? 1 : 0, outputDimension: kind == .classifier ? 1 : nil)
            u.channels = choices.unetChannels ?? UNetConfig.defaultChannels(side: u.side)
            c.model = .unet(u)
        } else if case var .unet(u) = c.model {
            u.dataDimension = data.dimension
            u.imageChannels = data.imageShape?.first ?? u.imageChannels
            if let channels = choices.unetChannels { u.channels = channels }
            c.model = .unet(u)
        } else {
            c.model.dataDimension = data.dimension
        }
        // The crops classifier (SPEC O5 crops) takes C*S*S values of each image.
        if let s = classifierCrop {
            guard case .mlp = c.model else { throw ConfigurationError(message: "--crops trains an MLP on the flattened crops; drop --arch unet") }
            guard let shape = data.imageShape, s >= 1, s <= min(shape[1], shape[2]) else {
                throw ConfigurationError(message: "--crops \(s) needs images of at least \(s) x \(s) pixels; \(data.summary)")
            }
            c.model.dataDimension = ImageCrops.dimension(shape: shape, size: s)
        }
        c.observedFraction = kind == .masked ? data.observedFraction : nil
        c.samplingFloor = nil
        if case .directory = c.data, kind == .ambient {
            c.samplingFloor = data.samplingFloor(buffer: AmbientScoreMatching.buffer(sMax: c.ambientSMax))
        }
        try c.validate()
        return c
    }

    /// The network's inputs and outputs follow the objective: a mask channel for O3, one logit for
    /// the classifier.
    func shapedForObjective() -> RunConfig {
        var c = self
        c.model.conditioningChannels = objective == .masked ? 1 : 0
        c.model.outputDimension = objective == .classifier ? 1 : nil
        return c
    }
}
