#!/usr/bin/env bash
# Run the fuzz targets (fuzz/, cargo-fuzz with libFuzzer), each for a bounded
# time: `scripts/fuzz.sh [SECONDS] [TARGET...]` (default 30 s, every target).
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly --profile minimal
#   rustup target add wasm32-wasip2 --toolchain nightly
#   cargo install cargo-fuzz --locked
# New inputs that grow coverage are added to fuzz/corpus/TARGET; a crash
# leaves its reproducer in fuzz/artifacts/TARGET (turn it into a test).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Without a sanitizer: the code under test is safe Rust and wasmtime; the
# build stays a plain optimised one (with debug assertions).
cargo +nightly fuzz build -s none -O
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run -s none -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|Done)" || true
    # A crash fails the run (cargo fuzz exits non-zero and leaves an artifact).
    if compgen -G "artifacts/$target/crash-*" > /dev/null; then
        echo "fuzz: $target crashed; reproducers in fuzz/artifacts/$target" >&2
        exit 1
    fi
done
