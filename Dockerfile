# syntax=docker/dockerfile:1
#
# mqtt-pulse: built with the Rust toolchain image, run on distroless/cc
# (glibc, libgcc, CA certificates; no shell, no package manager) as a non-root user.
#
#   docker build -t mqtt-pulse --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -p 9883:9883 -v $PWD/deploy/mqtt-pulse:/etc/mqtt-pulse:ro \
#       mqtt-pulse --config.file=/etc/mqtt-pulse/mqtt-pulse.toml
#
# Podman builds the same file: podman build --format docker (the HEALTHCHECK is
# a Docker-format field; OCI images drop it).
#
# Build arguments for registries of your own and for machines that cannot pull:
#   BUILD_IMAGE    the Rust toolchain the build stage compiles with
#   RUNTIME_IMAGE  what the binary runs on: glibc 2.36 or newer, libgcc, CA
#                  certificates and the user 65532
#   BINARY_FROM    where the binary comes from, at /src/target/release/mqtt-pulse:
#                  "build" (the default) compiles it in the build stage; or name an
#                  image that holds a release binary built elsewhere (on a glibc
#                  no newer than the runtime's), and the toolchain is not pulled:
#     cargo build --release --locked
#     tar -C target/release --transform 's,^,src/target/release/,' -cf - mqtt-pulse \
#         | docker import - mqtt-pulse-binary
#     docker build --build-arg BINARY_FROM=mqtt-pulse-binary -t mqtt-pulse .
#   (tests/deploy/image.rs builds the runtime stage that way, on a base image of
#   its own.)
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=build

# ---- build ------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src

# The git revision for --version and mqtt_pulse_build_info (build.rs reads it;
# .git is not in the build context).
ARG REVISION=unknown
ENV MQTT_PULSE_REVISION=${REVISION}

# Dependencies first, in their own layer: this layer is rebuilt only when the
# manifest, the lock file or build.rs change. The stubs stand in for every target
# Cargo.toml names (the library, the binary, the benches), so that the manifest
# loads; they are built, then the package's own artifacts are forgotten so the
# real sources below are always compiled.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/dispatch.rs \
    && echo 'fn main() {}' > benches/scrape.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/mqtt-pulse-* \
        target/release/deps/mqtt_pulse-* target/release/deps/libmqtt_pulse-* \
        target/release/mqtt-pulse target/release/libmqtt_pulse.*

COPY src ./src
# The same command as scripts/demo and the tests (tests/deploy/dockerfile.rs checks it).
RUN cargo build --release --locked

# ---- the binary: the build stage's, or an image's (BINARY_FROM) ------------------
# BuildKit and Podman build only the stages the last one needs: with an image
# here, the build stage is skipped.
FROM ${BINARY_FROM} AS binary

# ---- run --------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG RUNTIME_IMAGE
LABEL org.opencontainers.image.title="mqtt-pulse" \
      org.opencontainers.image.description="MQTT 3.1.1 client-health monitor: keeps MQTT connections alive and exports their status and keep-alive round trips as Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

COPY --from=binary /src/target/release/mqtt-pulse /usr/local/bin/mqtt-pulse

# distroless's "nonroot" user; numeric so that runAsNonRoot policies can check it.
USER 65532:65532
EXPOSE 9883

# The binary checks itself (GET /-/healthy, exit 0 on 200): the image has no
# shell and no curl. tests/deploy/dockerfile.rs runs this command against a live
# exporter, tests/deploy/image.rs inside the built image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/mqtt-pulse", "healthcheck", "--web.listen-address=127.0.0.1:9883"]

ENTRYPOINT ["/usr/local/bin/mqtt-pulse"]
