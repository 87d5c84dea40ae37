# syntax=docker/dockerfile:1
# Build with the Rust toolchain, run on a small Debian image as a non-root user.
# The deploy issue (Dockerfile hardening, HEALTHCHECK, OCI labels) builds on this.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mqtt-pulse

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 mqtt-pulse
COPY --from=build /src/target/release/mqtt-pulse /usr/local/bin/mqtt-pulse
USER mqtt-pulse
EXPOSE 9883
ENTRYPOINT ["/usr/local/bin/mqtt-pulse"]
