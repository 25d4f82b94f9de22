#!/usr/bin/env bash
# Builds a Python probe into a component with the Python SDK (guest-sdk/python)
# and componentize-py (installed into .venv by scripts/setup.sh), the same way
# `python -m probehost_sdk build` does for an installed SDK.
#
#   scripts/build-python-probe.sh MODULE_DIR MODULE OUTPUT.wasm
#   e.g. scripts/build-python-probe.sh guest-sdk/python/examples redis_probe redis_probe.wasm
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 MODULE_DIR MODULE OUTPUT.wasm" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    echo "the project's .venv is missing; run scripts/setup.sh" >&2
    exit 1
fi
PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/guest-sdk/python" \
    exec "$python" -m probehost_sdk build "$2" -p "$1" -o "$3"
