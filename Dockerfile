# syntax=docker/dockerfile:1
# The PAO server image: one static binary (musl), CA certificates, nothing else. Runs as UID
# 10001 with a read-only root file system; /data (SQLite, plugin cache) and /tmp are the only
# paths it writes. Build: docker build -t pao .   See docs/deploy.md.

ARG RUST_VERSION=1.95

# cargo-chef turns the workspace's manifests into a recipe: the dependency layer below is
# rebuilt only when Cargo.toml or Cargo.lock files change, not on every source edit.
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl \
 && cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
ENV CC_x86_64_unknown_linux_musl=musl-gcc
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --target x86_64-unknown-linux-musl \
      --no-default-features -p pao-server --recipe-path recipe.json
COPY . .
RUN scripts/build-static /out/pao \
 && mkdir -p /rootfs/data /rootfs/tmp /rootfs/etc/pao \
 && chmod 1777 /rootfs/tmp

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /rootfs/tmp /tmp
COPY --from=build --chown=10001:10001 /rootfs/data /data
COPY --from=build /rootfs/etc/pao /etc/pao
COPY --from=build /out/pao /pao
USER 10001:10001
WORKDIR /data
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/pao"]
# With no arguments: SQLite in /data/data/pao.db, the catalog folder /data/catalog. The Helm
# chart passes `serve --config /etc/pao/pao.toml` (or `worker …`) instead.
CMD ["serve", "--bind", "0.0.0.0:8080"]
