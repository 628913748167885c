# syntax=docker/dockerfile:1
#
# stickyd in a container: built with the official Rust image, run from a slim Debian image as
# a user without privileges, listening on 0.0.0.0:3000 with its built-in hello worker.
#
#   docker build -t stickyd .
#   docker run --rm -p 3000:3000 stickyd
#
# Arguments after the image name are more stickyd flags (`--workers 4 -- /app/my-worker`).
# Docker's default seccomp profile refuses io_uring: stickyd then runs on epoll and says so in
# one line. docs/src/containers.md has the details, and what a container means for upgrades.

# The builder and the runtime share a Debian release, so the binary finds the glibc it was
# linked against.
ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The registry and target caches outlive a build (BuildKit); the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/stickyd /usr/local/bin/stickyd

FROM debian:${DEBIAN_RELEASE}-slim
COPY --from=builder /usr/local/bin/stickyd /usr/local/bin/stickyd
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin stickyd
USER stickyd
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/stickyd", "--listen", "0.0.0.0:3000"]
