# probehost as a container image: the static binary alone on `scratch`.
#
#   docker build -t probehost .                          # compile from source (default)
#   docker build --build-arg PROBEHOST_BINARY=prebuilt -t probehost .
#                                      # use dist/probehost-x86_64-unknown-linux-musl
#                                      # (scripts/dist.sh) instead of compiling
#
# Needs BuildKit (Docker 23+'s default builder; RUN --mount caches) or buildah/podman.
# Only the stages the chosen PROBEHOST_BINARY needs are built, so the prebuilt path
# never pulls the Rust image.
# buildah 1.28 (Debian 12) overlooks the ARG's default when it picks the stages to
# skip (then: "FROM source AS binary ... source: image not known"): pass
# --build-arg PROBEHOST_BINARY=source explicitly there.
# scripts/image.sh builds the same final image without a daemon and without pulling
# anything (it supplies the `rootfs` stage itself with --build-context).
#
# The image holds exactly:
#   /probehost             the binary (ENTRYPOINT; CMD is `serve`)
#   /var/cache/probehost   compiled-component cache, 0700, uid/gid 65532 (PROBEHOST_CACHE_DIR)
#   /tmp                   1777, for SQLite's temporary files
# and runs as 65532:65532. There is no shell: exec probes are
# `["/probehost", "probe", "--live"]`. To put probehost into an application's image:
#   COPY --from=probehost /probehost /usr/local/bin/probehost

# source | prebuilt
ARG PROBEHOST_BINARY=source
ARG RUST_IMAGE=rust:1.95-bookworm
# Only creates directories: any image with sh, mkdir, chmod and chown will do.
ARG ROOTFS_IMAGE=debian:bookworm-slim

# --- the binary, compiled here ------------------------------------------------
FROM ${RUST_IMAGE} AS source
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# musl for the host binary; wasm32-wasip2 for the bundled probes (host/build.rs).
RUN rustup target add x86_64-unknown-linux-musl wasm32-wasip2
# C dependencies (SQLite, ring) are compiled for musl, not glibc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist --target x86_64-unknown-linux-musl -p probehost \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/dist/probehost /out/probehost

# --- the binary, built elsewhere (scripts/dist.sh) --------------------------------
FROM scratch AS prebuilt
COPY dist/probehost-x86_64-unknown-linux-musl /out/probehost

FROM ${PROBEHOST_BINARY} AS binary

# --- the directories, with the owners and modes `scratch` cannot set ---------------
FROM ${ROOTFS_IMAGE} AS rootfs
RUN mkdir -p /rootfs/var/cache /rootfs/tmp /cache/probehost \
 && chmod 0755 /rootfs /rootfs/var /rootfs/var/cache /cache \
 && chmod 1777 /rootfs/tmp \
 && chown 65532:65532 /cache/probehost \
 && chmod 0700 /cache/probehost

# --- the image ------------------------------------------------------------------
FROM scratch AS image
ARG PROBEHOST_VERSION=dev
ARG PROBEHOST_REVISION=unknown
# Directories first (/, /tmp, /var/cache), then the cache directory itself, whose
# mode (0700) survives because it is an entry inside the copied directory.
COPY --from=rootfs /rootfs/ /
COPY --from=rootfs --chown=65532:65532 /cache/ /var/cache/
COPY --from=binary --chmod=0755 /out/probehost /probehost
# probehost uses a cache directory only if it belongs to the user running it and is
# not writable by others; a volume mounted here must be so too (e.g. an emptyDir
# with the cache in a subdirectory: set runtime.cache_dir or this variable to it).
ENV PROBEHOST_CACHE_DIR=/var/cache/probehost
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/probehost"]
CMD ["serve"]
LABEL org.opencontainers.image.title="probehost" \
      org.opencontainers.image.description="Kubernetes liveness/readiness probes and deployment jobs, with sandboxed WebAssembly readiness probes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${PROBEHOST_VERSION}" \
      org.opencontainers.image.revision="${PROBEHOST_REVISION}"
