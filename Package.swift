// swift-tools-version:6.0
// lora-pipeline: LoRA / QLoRA fine-tuning of Llama-family models on CPU, as small Unix tools.
import PackageDescription

let package = Package(
    name: "lora-pipeline",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "LoRAShared", targets: ["LoRAShared", "LoRATrain", "LoRAEngine", "LoRAConvert", "LoRAModel", "LoRAQuant",
                                               "LoRATokenizer", "LoRAFormats", "LoRAKernels"]),
        .executable(name: "lora-quantize", targets: ["lora-quantize"]),
        .executable(name: "lora-init", targets: ["lora-init"]),
        .executable(name: "lora-eval", targets: ["lora-eval"]),
        .executable(name: "lora-train", targets: ["lora-train"]),
        .executable(name: "lora-merge", targets: ["lora-merge"]),
        .executable(name: "lora-generate", targets: ["lora-generate"]),
        .executable(name: "lora-inspect", targets: ["lora-inspect"]),
        .executable(name: "lora-export", targets: ["lora-export"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // --config run files: YAML 1.1 (comments, nested sections, lists, anchors and merge keys) through libyaml.
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: nil,
            providers: [.apt(["libopenblas-dev"])]
        ),
        // gzip data files (.jsonl.gz, gzip on stdin) through zlib (Debian zlib1g-dev).
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            pkgConfig: nil,
            providers: [.apt(["zlib1g-dev"])]
        ),
        // bf16 GEMMs through oneDNN (Debian libdnnl-dev) and the CPU feature checks behind --compute-dtype.
        .target(
            name: "CBF16",
            path: "Sources/CBF16",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("gomp")]
        ),
        // MPI for data-parallel lora-train, loaded at run time (dlopen) only when launched by mpirun / srun: nothing
        // links libmpi or includes mpi.h, so builds and single-process runs need no MPI installed.
        .target(
            name: "CMPI",
            path: "Sources/CMPI",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // The numeric kernels (GEMM, elementwise and attention kernels, threads, the compute backend): the only
        // Swift code built with -Ounchecked, over raw pointers whose bounds the callers establish. Optimized in
        // debug builds too: the test suite runs them on a real model, and unoptimized SIMD code is two orders of
        // magnitude slower.
        .target(
            name: "LoRAKernels",
            dependencies: ["CBLAS", "CBF16"],
            path: "Sources/LoRAKernels",
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
                            .unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // The file formats: JSON, JSONL, safetensors (read and atomic write), sharded weights, config.json, the
        // error contract and limits. Checked (-O), so every precondition and bounds check of the parsers holds in
        // release builds; it sees the kernels' conversions and nothing above it.
        .target(
            name: "LoRAFormats",
            dependencies: ["LoRAKernels", "CZlib"],
            path: "Sources/LoRAFormats",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // tokenizer.json (normalizers, pre-tokenizers, BPE, decoders) and the Jinja chat-template interpreter with
        // its limits. Checked (-O); sees only the formats and kernels below it.
        .target(
            name: "LoRATokenizer",
            dependencies: ["LoRAFormats"],
            path: "Sources/LoRATokenizer",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // The bitsandbytes 4-bit codec and tensor layout. Checked (-O); sees only the formats.
        .target(
            name: "LoRAQuant",
            dependencies: ["LoRAFormats"],
            path: "Sources/LoRAQuant",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // Model folders (config, weights, Linear modules), frozen weights in their stored form, PEFT adapters.
        // Checked (-O).
        .target(
            name: "LoRAModel",
            dependencies: ["LoRAQuant"],
            path: "Sources/LoRAModel",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // Model folder → model folder (the quantizer and the merger) and → GGUF (lora-export, which reads the
        // tokenizer for llama.cpp's vocabulary metadata). Checked (-O); never sees the engine.
        .target(
            name: "LoRAConvert",
            dependencies: ["LoRAModel", "LoRATokenizer"],
            path: "Sources/LoRAConvert",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // The transformer: LoRA linear, decoder layer, head, eval forward, training step, decoding. Checked (-O).
        .target(
            name: "LoRAEngine",
            dependencies: ["LoRAModel", "LoRATokenizer"],
            path: "Sources/LoRAEngine",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // Data, batching, optimizer, checkpoints, the training loop. Checked (-O).
        .target(
            name: "LoRATrain",
            dependencies: ["LoRAEngine"],
            path: "Sources/LoRATrain",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // The umbrella the tools and tests import: re-exports every layer.
        .target(
            name: "LoRAShared",
            dependencies: ["LoRATrain", "LoRAConvert", "LoRAEngine", "LoRAModel", "LoRAQuant", "LoRATokenizer",
                           "LoRAFormats", "LoRAKernels"],
            path: "Sources/LoRAShared"
        ),
        // lora-inspect's logic: recognizes a model dir, adapter, checkpoint, run or safetensors file and describes it
        // (config, tensors, adapter norms, training state, tensor statistics, diffs). Checked (-O); read-only; not
        // part of the LoRAShared umbrella.
        .target(
            name: "LoRAInspect",
            dependencies: ["LoRATrain", "LoRAConvert"],
            path: "Sources/LoRAInspect",
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        .target(
            name: "LoRACLI",
            dependencies: [
                "LoRAShared",
                "CMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Sources/LoRACLI"
        ),
        .executableTarget(name: "lora-quantize", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-init", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-eval", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-train", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-merge", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-generate", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-inspect", dependencies: ["LoRACLI", "LoRAShared", "LoRAInspect",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "lora-export", dependencies: ["LoRACLI", "LoRAShared",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(
            name: "LoRASharedTests",
            dependencies: ["LoRAShared", "LoRACLI", "LoRAInspect"],
            path: "Tests/LoRASharedTests",
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
