# syntax=docker/dockerfile:1
#
# mqtt-pulse: built with the Rust toolchain image, run on distroless/cc
# (glibc, libgcc, CA certificates; no shell, no package manager) as a non-root user.
#
#   docker build -t mqtt-pulse --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -p 9883:9883 -v $PWD/deploy/mqtt-pulse:/etc/mqtt-pulse:ro \
#       mqtt-pulse --config.file=/etc/mqtt-pulse/mqtt-pulse.toml

# ---- build ------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
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

# ---- run --------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mqtt-pulse" \
      org.opencontainers.image.description="MQTT 3.1.1 client-health monitor: keeps MQTT connections alive and exports their status and keep-alive round trips as Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /src/target/release/mqtt-pulse /usr/local/bin/mqtt-pulse

# distroless's "nonroot" user; numeric so that runAsNonRoot policies can check it.
USER 65532:65532
EXPOSE 9883

# The binary checks itself (GET /-/healthy, exit 0 on 200): the image has no
# shell and no curl. tests/deploy/dockerfile.rs runs this command against a live exporter.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/mqtt-pulse", "healthcheck", "--web.listen-address=127.0.0.1:9883"]

ENTRYPOINT ["/usr/local/bin/mqtt-pulse"]
