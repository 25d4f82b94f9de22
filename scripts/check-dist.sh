#!/usr/bin/env bash
# Proves the release artifacts of scripts/dist.sh work where users put them:
#
#   1. the static binary has no dynamic dependencies, and runs `probe --live`,
#      `config check` and `serve` inside an empty chroot (nothing but the
#      binary, its config and /tmp: no /etc, no /lib, no shell), as in a
#      `FROM scratch` image; there `serve` answers /livez, and /readyz against
#      PostgreSQL on loopback; the aarch64 binary, if dist/ holds one, does
#      the same under qemu-user;
#   2. the wheel installs into a fresh venv, where `probehost probe --live`
#      works, `probehost lockedmigrate` migrates the Django fixture with that
#      venv's python, and the SDK builds the Redis example probe;
#   3. figures: sizes, and `probe --live` wall time of the static binary
#      against the glibc one (when a glibc build is there to compare with).
#
# Needs root (chroot), PostgreSQL on 127.0.0.1:5432 and PyPI (the fixture's
# requirements). Run scripts/dist.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

say() { printf 'check-dist: %s\n' "$*"; }
die() { printf 'check-dist: FAILED: %s\n' "$*" >&2; exit 1; }

target=x86_64-unknown-linux-musl
binary=dist/probehost-$target
[ -x "$binary" ] || die "$binary is missing; run scripts/dist.sh $target"
wheel=$(ls dist/probehost-*-py3-none-*x86_64*.whl 2>/dev/null | head -n1)
[ -n "$wheel" ] || die "no x86_64 wheel in dist/; run scripts/dist.sh $target"
[ "$(id -u)" -eq 0 ] || die "the chroot check needs root"
command -v psql >/dev/null || die "psql is missing (PostgreSQL client)"
psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null \
    || die "PostgreSQL is not reachable on 127.0.0.1:5432"

work=$(mktemp -d)
server=
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits for an HTTP answer: get PORT PATH -> "STATUS BODY"
get() {
    python3 - "$1" "$2" <<'PY'
import sys, time, urllib.request, urllib.error
port, path = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 20
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            print(r.status, r.read().decode().strip()); break
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode().strip()); break
    except OSError:
        if time.monotonic() > deadline: print("000 no answer"); break
        time.sleep(0.1)
PY
}

# --- 1. static ---------------------------------------------------------------
description=$(file -b "$binary")
say "file: $description"
case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$binary is not static: $description" ;;
esac
if ldd_out=$(ldd "$binary" 2>&1); then
    case "$ldd_out" in
        *"statically linked"* | *"not a dynamic executable"*) ;;
        *) die "ldd lists dynamic dependencies: $ldd_out" ;;
    esac
fi

jail=$work/jail
mkdir -p "$jail/tmp"
chmod 1777 "$jail/tmp"
cp "$binary" "$jail/probehost"
cat > "$jail/probehost.toml" <<'TOML'
[server]
listen = "127.0.0.1:18580"
drain = "100ms"

[databases.default]
url = "postgres://postgres@127.0.0.1:5432/postgres"

[probes.database]
component = "builtin:database"

[runtime]
cache_dir = "/tmp/cache"
TOML
say "chroot holds: $(cd "$jail" && find . | sort | tr '\n' ' ')"
chroot=$(command -v chroot) || die "chroot is missing"
# No environment either: no PATH, HOME or locale, as in a bare container.
in_jail() { env -i "$chroot" "$jail" /probehost --config /probehost.toml "$@"; }

in_jail probe --live || die "probe --live failed in the empty chroot"
say "chroot: probe --live exits 0"
in_jail config check >"$work/check.out" 2>&1 || { cat "$work/check.out"; die "config check failed in the empty chroot"; }
say "chroot: config check passes"

# serves LABEL PORT COMMAND...: runs COMMAND (a probehost serve listening on
# 127.0.0.1:PORT) and checks /livez and /readyz answer 200 and SIGTERM ends it
# with 0. COMMAND is run as a simple command, so $! is probehost itself (env,
# chroot and qemu exec or become it).
serves() {
    local label=$1 port=$2 livez readyz
    shift 2
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null \
        && die "127.0.0.1:$port is already taken: another server would answer for $label"
    "$@" >"$work/serve.log" 2>&1 &
    server=$!
    livez=$(get "$port" /livez)
    readyz=$(get "$port" /readyz)
    kill -TERM "$server"
    wait "$server" || { cat "$work/serve.log"; die "$label: serve did not exit cleanly on SIGTERM"; }
    server=
    [ "${livez%% *}" = 200 ] || { cat "$work/serve.log"; die "$label: /livez answered $livez"; }
    [ "${readyz%% *}" = 200 ] || { cat "$work/serve.log"; die "$label: /readyz answered $readyz"; }
    say "$label: serve answers /livez $livez, /readyz $readyz (PostgreSQL)"
}
serves chroot 18580 env -i "$chroot" "$jail" /probehost --config /probehost.toml serve

# The aarch64 binary, when scripts/dist.sh built it, under user-mode emulation.
arm=dist/probehost-aarch64-unknown-linux-musl
if [ -e "$arm" ]; then
    qemu=$(command -v qemu-aarch64-static) \
        || die "$arm is there but qemu-aarch64-static is not (apt-get install qemu-user-static)"
    case "$(file -b "$arm")" in
        *"ARM aarch64"*"statically linked"*) ;;
        *) die "$arm is not a static aarch64 binary: $(file -b "$arm")" ;;
    esac
    "$qemu" "$arm" probe --live >/dev/null || die "aarch64: probe --live failed"
    sed 's/18580/18581/; s|/tmp/cache|'"$work"'/arm-cache|' "$jail/probehost.toml" >"$work/arm.toml"
    serves "aarch64 (qemu)" 18581 "$qemu" "$arm" --config "$work/arm.toml" serve
else
    say "aarch64: not built here (scripts/dist.sh aarch64-unknown-linux-musl builds it)"
fi

# --- 2. the wheel in a fresh venv ---------------------------------------------
venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${wheel}[sdk]" -r tests/django/requirements.txt
installed=$(command -v "$venv/bin/probehost") || die "the wheel put no probehost on the venv's PATH"
cmp -s "$installed" "$binary" || die "the wheel's probehost is not the static binary dist.sh built"
say "wheel: $(basename "$wheel") installs probehost into the venv's bin/"

export PATH="$venv/bin:$PATH"
(cd "$work" && env -u PROBEHOST_CONFIG probehost probe --live) || die "venv: probe --live failed"
say "venv: probehost probe --live exits 0"

db=probehost_dist_check
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
(cd tests/django && env -u PROBEHOST_CONFIG DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
    probehost lockedmigrate >"$work/migrate.log" 2>&1) || { cat "$work/migrate.log"; die "venv: lockedmigrate failed"; }
applied=$(psql -h 127.0.0.1 -U postgres -d "$db" -Atc "SELECT count(*) FROM django_migrations WHERE app = 'shop'")
[ "$applied" -ge 1 ] || die "venv: lockedmigrate ran but applied no shop migration"
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE $db" >/dev/null
say "venv: lockedmigrate migrated the Django fixture ($applied shop migrations) with $(python -c 'import sys; print(sys.executable)')"

(cd "$work" && python -m probehost_sdk build "$root_dir/guest-sdk/python/examples/redis_probe.py" -o redis_probe.wasm >"$work/sdk.log" 2>&1) \
    || { cat "$work/sdk.log"; die "venv: the SDK did not build the Redis example"; }
probehost plugin check "$work/redis_probe.wasm" >"$work/plugin-check.out" 2>&1 \
    || { cat "$work/plugin-check.out"; die "venv: plugin check rejects the SDK-built Redis probe"; }
say "venv: python -m probehost_sdk build made a probe that plugin check accepts ($(stat -c %s "$work/redis_probe.wasm") bytes)"

# --- 3. figures ---------------------------------------------------------------
# Median wall time of N runs of `BINARY probe --live`, in microseconds.
wall() {
    python3 - "$1" <<'PY'
import os, statistics, subprocess, sys, time
env = {"PATH": "/usr/bin:/bin"}
samples = []
for _ in range(41):
    start = time.perf_counter()
    subprocess.run([sys.argv[1], "probe", "--live"], check=True, env=env, stdout=subprocess.DEVNULL)
    samples.append((time.perf_counter() - start) * 1e6)
print(round(statistics.median(samples)))
PY
}
say "static binary: $(stat -c %s "$binary") bytes; wheel: $(stat -c %s "$wheel") bytes"
static_us=$(wall "$binary")
glibc=
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
for candidate in "$target_dir/dist/probehost" "$target_dir/release/probehost"; do
    if [ -x "$candidate" ]; then glibc=$candidate; break; fi
done
if [ -n "$glibc" ]; then
    glibc_us=$(wall "$glibc")
    say "probe --live median of 41: static $static_us us, glibc ($glibc) $glibc_us us, ratio $(python3 -c "print(round($static_us/$glibc_us, 2))")"
else
    say "probe --live median of 41: static $static_us us (no glibc release build to compare with: cargo build --profile dist)"
fi
say "all checks passed"
