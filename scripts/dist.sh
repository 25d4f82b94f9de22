#!/usr/bin/env bash
# Builds the release artifacts into dist/, each compiled once:
#
#   dist/probehost-<target>                 the static binary (musl, no dynamic
#                                           dependencies, bundled probes inside)
#   dist/probehost-<version>-py3-none-<tags>.whl
#                                           the wheel (maturin, bindings = "bin"):
#                                           that same binary on PATH, plus the
#                                           Python SDK; tagged manylinux2014 and
#                                           musllinux_1_2
#   dist/SHA256SUMS
#
#   scripts/dist.sh [TARGET...]    default: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#
# x86_64 links with the musl toolchain (musl-tools); aarch64 is cross-linked
# with zig (maturin --zig, `ziglang` from PyPI). scripts/setup.sh installs both.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'dist: error: %s\n' "$*" >&2; exit 1; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

maturin=.venv/bin/maturin
[ -x "$maturin" ] || die "maturin is not installed in .venv; run scripts/setup.sh"
export PATH="$PWD/.venv/bin:$PATH" # maturin --zig finds python -m ziglang there

# Cargo's target directory, wherever CARGO_TARGET_DIR or a config puts it.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

mkdir -p dist
for target in "${targets[@]}"; do
    rustup target list --installed | grep -qx "$target" \
        || die "the Rust target $target is not installed; run scripts/setup.sh"
    zig=()
    case "$target" in
        x86_64-unknown-linux-musl)
            command -v musl-gcc >/dev/null || die "musl-gcc is missing (apt-get install musl-tools)"
            # C dependencies (SQLite) are compiled for musl, not glibc.
            export CC_x86_64_unknown_linux_musl=musl-gcc
            ;;
        *) zig=(--zig) ;;
    esac
    printf 'dist: building %s\n' "$target"
    start=$SECONDS
    rm -f dist/probehost-*"${target%%-*}"*.whl
    "$maturin" build --locked --profile dist --target "$target" "${zig[@]}" \
        --compatibility manylinux2014 musllinux_1_2 --out dist
    cp "$target_dir/$target/dist/probehost" "dist/probehost-$target"
    printf 'dist: %s built in %ss\n' "$target" $((SECONDS - start))
done

(cd dist && sha256sum probehost-*-linux-musl probehost-*.whl > SHA256SUMS)
ls -l dist
