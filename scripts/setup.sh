#!/usr/bin/env bash
# Prepares a machine to build and test probehost. Idempotent: it installs and
# starts only what is missing, then checks every service the tests use.
#
#   - Rust targets: wasm32-wasip2 (the probe components) and the musl targets
#     of the static release binaries (x86_64, and aarch64 cross-linked by zig)
#   - a nightly toolchain (with wasm32-wasip2) and cargo-fuzz, for the fuzz
#     targets (scripts/fuzz.sh)
#   - the release and image tools: musl-tools, buildah, podman, runc and
#     qemu-user-static from Debian; kubectl (kustomize) for the manifests;
#     maturin, ziglang and kubernetes-validate from PyPI into .venv
#   - memcached (installed with apt-get when missing) running on 127.0.0.1:11211
#   - PostgreSQL on 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306, started with
#     the usual Debian commands if they are installed but stopped
#   - Redis on 127.0.0.1:6379 (installed with apt-get when missing)
#   - .venv: Django, psycopg, PyMySQL and gunicorn from PyPI, for the Django fixture, and
#     componentize-py, which builds Python probes

set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"
    fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port
    for _ in $(seq 1 60); do
        listening "$2" && return 0
        sleep 0.5
    done
    return 1
}

# --- Rust targets: the components, and the static release binaries ----------
for target in wasm32-wasip2 x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        say "adding the $target Rust target"
        rustup target add "$target"
    fi
done

# --- fuzzing (scripts/fuzz.sh): cargo-fuzz needs a nightly toolchain ----------
if ! rustup target list --installed --toolchain nightly 2>/dev/null | grep -qx wasm32-wasip2; then
    # Installing (or updating) the toolchain with its target in one step: an
    # older nightly's wasm32-wasip2 may no longer be downloadable.
    say "installing the nightly Rust toolchain with wasm32-wasip2 (for cargo-fuzz)"
    rustup toolchain install nightly --profile minimal --target wasm32-wasip2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

apt_install() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    say "installing $2"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null \
        || { as_root apt-get update >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null; }
}

# musl-gcc compiles the C dependencies (SQLite) of the x86_64 static binary;
# buildah builds the image without a daemon, podman with runc runs it
# (scripts/image.sh).
apt_install musl-gcc musl-tools
apt_install buildah buildah
apt_install podman podman
apt_install runc runc
# qemu-user runs the aarch64 static binary here (scripts/check-dist.sh).
apt_install qemu-aarch64-static qemu-user-static
# kubectl renders the kustomize manifests (scripts/check-manifests.sh and the
# deploy tests); Debian's own kubernetes-client is too old for their kustomize.
apt_install kubectl kubectl \
    || die "kubectl is missing and apt has no candidate: add Kubernetes' apt repository (pkgs.k8s.io) and install kubectl"

# --- memcached ----------------------------------------------------------------
apt_install memcached memcached
if ! listening 11211; then
    say "starting memcached on 127.0.0.1:11211"
    if [ "$(id -u)" -eq 0 ]; then
        memcached -d -u nobody -l 127.0.0.1 -p 11211 -U 0
    else
        memcached -d -l 127.0.0.1 -p 11211 -U 0
    fi
fi

# --- databases ----------------------------------------------------------------
if ! listening 5432 && [ -d /etc/postgresql ]; then
    say "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! listening 3306 && [ -x /usr/sbin/mariadbd ]; then
    say "starting MariaDB"
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi

# --- Redis (the Redis probe's tests; private instances use redis-server too) --
apt_install redis-server redis-server
if ! listening 6379; then
    say "starting Redis on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
fi

# --- every service the tests use must answer ------------------------------------
missing=()
wait_for memcached 11211 || missing+=("memcached on 127.0.0.1:11211")
wait_for PostgreSQL 5432 || missing+=("PostgreSQL on 127.0.0.1:5432 (trust auth, database 'test')")
wait_for MariaDB 3306 || missing+=("MariaDB on 127.0.0.1:3306 (root without password, database 'test')")
wait_for Redis 6379 || missing+=("Redis on 127.0.0.1:6379")
if [ ${#missing[@]} -gt 0 ]; then
    die "not reachable: $(printf '%s; ' "${missing[@]}")"
fi

# The tests use the `test` database on both servers.
if command -v psql >/dev/null 2>&1 && ! psql -h 127.0.0.1 -U postgres -d test -c 'SELECT 1' >/dev/null 2>&1; then
    say "creating PostgreSQL database test"
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
fi
if command -v mariadb >/dev/null 2>&1; then
    mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
fi

# --- the Django fixture's Python environment ----------------------------------
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c 'import django, psycopg, pymysql, gunicorn' >/dev/null 2>&1; then
    say "installing the Django fixture's Python packages into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/django/requirements.txt
fi
# componentize-py builds the Python SDK's example probe in the tests.
if ! .venv/bin/componentize-py --version >/dev/null 2>&1; then
    say "installing componentize-py into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -r guest-sdk/python/requirements-build.txt
fi

# The release tools: maturin and zig (scripts/dist.sh). Pinned, so pip answers
# from what is installed when they are there.
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-dist.txt

say "ready: wasm32-wasip2, memcached, PostgreSQL, MariaDB, Redis, Django $(.venv/bin/python -c 'import django; print(django.get_version())')"

