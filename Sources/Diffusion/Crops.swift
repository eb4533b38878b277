import TensorCore

/// Square crops of images stored as rows (C, H, W) flattened: the input of the Ambient-Omni
/// crops classifier (SPEC O5 crops; Daras et al. 2025, Section 3.2).
public enum ImageCrops {
    /// Copies the `size` x `size` crop at (`top`, `left`) of every channel of `image` (C*H*W
    /// values) into `crop` (C*size*size values, channel-major like the image).
    public static func extract<T: Scalar>(_ image: UnsafePointer<T>, shape: [Int], top: Int, left: Int, size: Int,
                                          into crop: UnsafeMutablePointer<T>) {
        let (c, h, w) = (shape[0], shape[1], shape[2])
        precondition(top >= 0 && left >= 0 && top + size <= h && left + size <= w, "crop outside the image")
        for ch in 0..<c {
            for y in 0..<size {
                (crop + (ch * size + y) * size).update(from: image + (ch * h + top + y) * w + left, count: size)
            }
        }
    }

    /// A uniformly random crop position: (top, left) in [0, H - size] x [0, W - size].
    public static func randomPosition(shape: [Int], size: Int, _ rng: inout CounterRNG) -> (top: Int, left: Int) {
        (rng.int(below: shape[1] - size + 1), rng.int(below: shape[2] - size + 1))
    }

    /// The values of one crop of an image with C channels.
    public static func dimension(shape: [Int], size: Int) -> Int { shape[0] * size * size }
}
