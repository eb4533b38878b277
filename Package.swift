// swift-tools-version:6.0
// Ambient: distributed data-parallel training of diffusion models from corrupted data.
// Layers (docs/architecture.md): ambient (CLI) -> Training -> Cluster -> Wire
//                                                 └-> Diffusion -> TensorCore -> COpenBLAS, CKernels
//                                                 └-> Datasets  -> TensorCore, CZlib
import PackageDescription

// Numeric kernels are hot loops: always optimise them, even in debug builds, so the
// test suite and a debug CLI stay usable.
let optimizedKernels: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "Ambient",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ambient", targets: ["ambient"]),
        .executable(name: "bench", targets: ["bench"]),
        .executable(name: "ambient-faults", targets: ["ambient-faults"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // YAML run configurations (`--config run.yaml`), in the CLI only.
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        // Prometheus exposition of a cluster run's metrics (`--metrics-port`), in Monitoring only.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // SHA-256 of dataset files (BoringSSL's assembly; docs/dataset-format.md), in Datasets only.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // C libraries from Debian packages.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ",
                       providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4",
                       providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),

        // Hand-written C kernels BLAS lacks (the direct 3x3 convolution, AVX2 chosen at run time).
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O2"])]),
        // Tensors, BLAS, kernels, the tape, RNG, parameters and optimiser.
        // Whole-file reads and crash-safe writes with errors that name the file (every format uses it).
        .target(name: "FileIO", path: "Sources/FileIO"),
        .target(name: "TensorCore", dependencies: ["COpenBLAS", "CKernels"], swiftSettings: optimizedKernels),
        // EDM preconditioning, networks, objectives (SPEC O1-O6), samplers, oracles.
        .target(name: "Diffusion", dependencies: ["TensorCore", "FileIO"], swiftSettings: optimizedKernels),
        // Loaders, formats (IDX, NPY, PNG), synthetic data, corruption.
        .target(name: "Datasets", dependencies: ["TensorCore", "FileIO", "CZlib", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: optimizedKernels),
        // Byte formats: safetensors, and (cluster) headers and codecs. Pure functions over bytes.
        .target(name: "Wire", dependencies: ["TensorCore", "FileIO", "CLZ4", "CZlib"], swiftSettings: optimizedKernels),
        // Transports (ZeroMQ, in-memory), coordinator, worker, membership, checkpoints, CURVE keys.
        // Knows nothing of diffusion: it drives workloads through protocols Training implements.
        .target(name: "Cluster",
                dependencies: ["Wire", "TensorCore", "FileIO", "CZeroMQ", .product(name: "Logging", package: "swift-log")]),
        // Run configuration, the training loop, run directories.
        .target(name: "Training",
                dependencies: ["TensorCore", "FileIO", "Diffusion", "Datasets", "Wire", "Cluster",
                               .product(name: "Logging", package: "swift-log")]),
        // Prometheus metrics of coordinator and workers (metering transports, the step observer)
        // and the small HTTP server that exposes them.
        .target(name: "Monitoring",
                dependencies: ["Cluster", "Wire", .product(name: "Prometheus", package: "swift-prometheus")]),
        .executableTarget(name: "ambient",
                          dependencies: ["Training", "Cluster", "Monitoring", "Diffusion", "Datasets", "Wire", "TensorCore", "FileIO",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log"),
                                         .product(name: "Yams", package: "Yams")]),
        // The numerics of a worker as a child process, for workers in other languages
        // (scripts/python-worker).
        .executableTarget(name: "ambient-compute",
                          dependencies: ["Training", "Cluster", "TensorCore", "Wire",
                                         .product(name: "Logging", package: "swift-log")]),
        // The fault-injection suite (scripts/fault-injection): its pure logic (log parsing, seeded
        // choices, statistics, options) and the executable that drives real ambient processes.
        .target(name: "FaultInjection", path: "Sources/FaultInjection"),
        .executableTarget(name: "ambient-faults",
                          dependencies: ["FaultInjection", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "bench",
                          dependencies: ["Training", "Diffusion", "TensorCore", "Datasets", "Wire", "FileIO",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          swiftSettings: optimizedKernels),

        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "TensorCore"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TensorCore", "FileIO"]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "TensorCore"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "CZeroMQ", "Wire", "TensorCore", "FileIO"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Cluster", "Diffusion", "Datasets", "TensorCore", "Wire"]),
        .testTarget(name: "FaultInjectionTests", dependencies: ["FaultInjection"]),
        .testTarget(name: "MonitoringTests", dependencies: ["Monitoring", "Cluster", "Wire"]),
        .testTarget(name: "CLITests", dependencies: ["ambient", "Training", "Diffusion", "Datasets", "TensorCore", "FileIO"],
                    exclude: ["Snapshots"]),
    ]
)
