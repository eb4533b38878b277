# Ambient in a container: multi-stage. The `build` stage compiles with the Swift toolchain image
# (static Swift standard library); the runtime is slim Debian bookworm with only the libraries
# ambient links against, a non-root user (uid 10001), a volume for data and checkpoints, and a
# health check. docs/operations.md ("Docker") explains it; scripts/docker-test exercises it.
#
#   docker build -t ambient .                          # full build (needs the Swift image)
#   docker build --build-arg FASHION_MNIST=1 -t ambient .
#   docker build --target prebuilt -t ambient CONTEXT  # CONTEXT holds a static `ambient` binary
#   docker run --rm -v "$PWD/runs:/data/runs" ambient train --data gmm --corrupt noise:0.5 --out runs/g
#
# Stages are in the order the classic builder needs: `--target prebuilt` never reaches `build`.
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim

FROM ${RUNTIME_BASE} AS runtime-base
# 1: also install Debian's Fashion-MNIST (dataset-fashion-mnist, ~30 MB) for --data fashion-mnist.
ARG FASHION_MNIST=0
RUN set -eux; \
    extra=""; if [ "$FASHION_MNIST" = 1 ]; then extra=dataset-fashion-mnist; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libzmq5 libopenblas0-pthread liblz4-1 zlib1g libstdc++6 libgcc-s1 $extra; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 ambient; \
    useradd --system --uid 10001 --gid ambient --home-dir /data --no-create-home --shell /usr/sbin/nologin ambient; \
    mkdir -p /data; chown ambient:ambient /data
# One BLAS thread per process: the bits of a gradient depend on it (docs/architecture.md).
ENV OPENBLAS_NUM_THREADS=1
VOLUME ["/data"]
WORKDIR /data
# Loads the binary and every library it links, and makes a CURVE key pair (libzmq + libsodium).
HEALTHCHECK --interval=60s --timeout=10s --start-period=5s --retries=3 \
    CMD ["sh", "-c", "d=$(mktemp -d) && ambient keys generate --name health --dir \"$d\" >/dev/null; s=$?; rm -rf \"$d\"; exit $s"]

# The runtime around a binary built elsewhere (`swift build -c release --static-swift-stdlib`):
# what scripts/docker-test builds when the Swift image cannot be pulled.
FROM runtime-base AS prebuilt
COPY ambient /usr/local/bin/ambient
USER ambient
ENTRYPOINT ["ambient"]
CMD ["--help"]

FROM ${SWIFT_IMAGE} AS build
RUN set -eux; apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libzmq3-dev libopenblas-dev liblz4-dev zlib1g-dev pkg-config; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product ambient \
 && install -D -m 0755 "$(swift build -c release --static-swift-stdlib --show-bin-path)/ambient" /out/ambient

FROM runtime-base AS runtime
COPY --from=build /out/ambient /usr/local/bin/ambient
USER ambient
ENTRYPOINT ["ambient"]
CMD ["--help"]
