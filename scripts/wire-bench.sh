#!/usr/bin/env bash
# Codec and checksum throughput in release mode (docs/protocol.md, "Measured performance").
# Usage: scripts/wire-bench.sh [elements=10000000] [repeats=7]
# Builds the Wire target in release and links a small driver against it, because the `bench`
# executable does not depend on Wire yet.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${SCRATCH_PATH:-.build-wire}"
swift build -c release --scratch-path "$scratch" --target Wire >/dev/null
release="$scratch/release"
swiftc -O -I "$release/Modules" \
    -Xcc -fmodule-map-file=Sources/CLZ4/module.modulemap \
    -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap \
    -Xcc -fmodule-map-file=Sources/COpenBLAS/module.modulemap \
    scripts/wire-bench/main.swift "$release"/Wire.build/*.o "$release"/TensorCore.build/*.o \
    -llz4 -lz -lopenblas -o "$scratch/wire-bench"
"$scratch/wire-bench" "$@"
