import Foundation
import TensorCore

/// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 28x28 grayscale clothing images in 10 classes,
/// 60,000 for training and 10,000 for testing, read from the four IDX files of the original release.
///
/// Where the files are looked for, first match wins:
/// 1. the `directory` argument, when given;
/// 2. the directory in the environment variable `AMBIENT_FASHION_MNIST_DIR`, when set;
/// 3. `/usr/share/datasets/fashion-mnist`, where Debian's `dataset-fashion-mnist` installs them.
/// A directory named by 1 or 2 must hold the files: we do not fall back past it, so that a typo
/// is reported instead of silently loading other data. In each directory the files are
/// `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
/// `t10k-labels-idx1-ubyte.gz`, or the same names without `.gz`.
public enum FashionMNIST {
    /// Which half of the dataset.
    public enum Split: String, Sendable, CaseIterable {
        case train, test

        /// The file-name prefix of the original release.
        public var filePrefix: String { self == .train ? "train" : "t10k" }
    }

    /// Class names by label.
    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    /// Image height and width in pixels.
    public static let side = 28
    /// The environment variable that names a directory holding the files.
    public static let environmentVariable = "AMBIENT_FASHION_MNIST_DIR"
    /// Where Debian's `dataset-fashion-mnist` package installs the files.
    public static let systemDirectory = "/usr/share/datasets/fashion-mnist"

    /// Loads a split: images `[N, 1, 28, 28]` scaled to [-1, 1] by `x / 127.5 - 1`, and labels in 0...9.
    ///
    /// `environment` is passed in (default: the process environment) so tests can control the lookup.
    public static func load(split: Split, directory: String? = nil,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> (images: Tensor<Float>, labels: [Int]) {
        let (imagePath, labelPath) = try locate(split: split, directory: directory, environment: environment)
        let images = try IDX.read(imagePath)
        let labels = try IDX.read(labelPath)
        guard images.shape.count == 3, images.shape[1] == side, images.shape[2] == side else {
            throw DatasetError.badShape(name: imagePath, expected: "[N, \(side), \(side)] images",
                                        found: "\(images.shape)")
        }
        guard labels.shape.count == 1 else {
            throw DatasetError.badShape(name: labelPath, expected: "[N] labels", found: "\(labels.shape)")
        }
        guard labels.shape[0] == images.shape[0] else {
            throw DatasetError.badShape(name: labelPath, expected: "\(images.shape[0]) labels, one per image of \(imagePath)",
                                        found: "\(labels.shape[0]) labels")
        }
        if let bad = labels.bytes.firstIndex(where: { Int($0) >= classNames.count }) {
            throw DatasetError.malformed(name: labelPath,
                                         problem: "label \(labels.bytes[bad]) of sample \(bad) is not a class in 0...9")
        }
        let scale = (0..<256).map { Float($0) / 127.5 - 1 }
        let pixels = images.bytes.map { scale[Int($0)] }
        return (Tensor(shape: [images.shape[0], 1, side, side], storage: pixels), labels.bytes.map { Int($0) })
    }

    /// The image and label file paths of `split`, following the lookup order above.
    public static func locate(split: Split, directory: String? = nil,
                              environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> (images: String, labels: String) {
        let chosen: String
        if let directory {
            chosen = directory
        } else if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty {
            chosen = fromEnvironment
        } else {
            chosen = systemDirectory
        }
        let base = chosen.hasSuffix("/") ? chosen : chosen + "/"
        func find(_ stem: String) throws -> String {
            let candidates = [base + stem + ".gz", base + stem]
            if let found = candidates.first(where: { FileManager.default.isReadableFile(atPath: $0) }) {
                return found
            }
            throw DatasetError.notFound(
                dataset: "Fashion-MNIST \(split.rawValue) split", searched: candidates,
                hint: "Install it with `sudo apt-get install dataset-fashion-mnist` (files go to \(systemDirectory)), "
                    + "or set \(environmentVariable) to a directory holding the four IDX files "
                    + "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                    + "t10k-labels-idx1-ubyte.gz).")
        }
        return (try find("\(split.filePrefix)-images-idx3-ubyte"), try find("\(split.filePrefix)-labels-idx1-ubyte"))
    }
}
