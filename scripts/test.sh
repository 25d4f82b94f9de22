#!/usr/bin/env bash
# The project's checks, as CI runs them: set up the machine, then formatting,
# lints, docs and every test against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
