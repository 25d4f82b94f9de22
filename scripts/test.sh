#!/usr/bin/env bash
# The project's checks, as CI runs them: set up the machine, then formatting,
# lints, docs, every test against the real services (the soak among them, for
# 60 s), a short run of every fuzz target, the Kubernetes manifests' schemas,
# and the release artifacts (each built once, then proven where users put
# them: an empty chroot, a fresh venv, a container image).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
# Every fuzz target for 30 s: a crash fails the run.
scripts/fuzz.sh 30
scripts/check-manifests.sh
# x86_64 only: the aarch64 cross-build (zig) takes as long again, and
# `scripts/dist.sh && scripts/check-dist.sh` proves it under qemu on demand.
scripts/dist.sh x86_64-unknown-linux-musl
scripts/check-dist.sh
PROBEHOST_IMAGE_RUN=yes scripts/image.sh
