#!/usr/bin/env bash
# Builds a Python probe into a component with the Python SDK (guest-sdk/python)
# and componentize-py (installed into .venv by scripts/setup.sh).
#
#   scripts/build-python-probe.sh MODULE_DIR MODULE OUTPUT.wasm
#   e.g. scripts/build-python-probe.sh guest-sdk/python/examples redis_probe redis_probe.wasm
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 MODULE_DIR MODULE OUTPUT.wasm" >&2
    exit 2
fi
module_dir="$(cd "$1" && pwd)"
module="$2"
output="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
root="$(cd "$(dirname "$0")/.." && pwd)"
componentize="$root/.venv/bin/componentize-py"
if [ ! -x "$componentize" ]; then
    echo "componentize-py is not installed at $componentize; run scripts/setup.sh" >&2
    exit 1
fi
cd "$root"
exec "$componentize" -d wit -w probehost:probe/probe@0.1.0 componentize \
    -p guest-sdk/python -p "$module_dir" "$module" -o "$output"
