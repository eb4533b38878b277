import Diffusion

/// Which network a run trains when the user did not choose one, and the batch and learning rate
/// that go with it.
///
/// The U-Net is the image default because it measured best on images in the same time budget
/// (docs/results.md, "U-Net against the MLP": the ambient MLP's samples carried residual noise
/// 0.30 where the U-Net's carried 0.059, at a lower Frechet distance; the README demo's U-Net run
/// measured 0.031). Its batch and learning rate are the ones those runs used: on a CPU a small
/// batch of convolutions with a larger step trains fastest (docs/unet.md).
public enum NetworkDefaults {
    /// Global batch of a U-Net run whose batch was not given (the MLP's default stays 256).
    public static let unetBatch = 32
    /// Adam learning rate of a U-Net run whose rate was not given (the MLP's default stays 1e-3).
    public static let unetLearningRate = 2e-3

    /// Whether a run whose network was not chosen trains the U-Net: a denoiser objective on whole
    /// images. Vectors (gmm, npy of shape (N, d)) train the MLP; so do the classifier, whose
    /// corruption check was measured with the MLP (docs/results.md, Ambient-o), and the crops
    /// classifier, which flattens its crops.
    public static func prefersUNet(objective: ObjectiveKind?, imageShape: [Int]?, crops: Int?) -> Bool {
        guard let shape = imageShape, shape.count == 3, shape[1] == shape[2], shape[1] >= 2 else { return false }
        guard crops == nil, let objective, objective != .classifier else { return false }
        return true
    }
}
