#!/usr/bin/env bash
# Builds the probehost container image from the Dockerfile, here, without a daemon
# and without pulling anything, then checks what it built.
#
#   scripts/dist.sh x86_64-unknown-linux-musl   # first: dist/probehost-x86_64-unknown-linux-musl
#   scripts/image.sh                            # build + check: localhost/probehost:<version>
#   PROBEHOST_IMAGE_RUN=yes scripts/image.sh    # and run it with podman
#
# Needs (Debian): apt-get install -y buildah   (+ podman runc curl for PROBEHOST_IMAGE_RUN=yes)
#
# How: `buildah build` of the Dockerfile's final stage (`image`) with
# PROBEHOST_BINARY=prebuilt, so the Rust stage is skipped and never pulled. The one
# other stage the final stage copies from, `rootfs` (directories with the owners and
# modes `scratch` cannot set), needs a base image with a shell; this script supplies
# that stage's result instead, as a directory (--build-context rootfs=DIR), so the
# final stage is built from the Dockerfile itself and nothing is pulled.
#
# Environment:
#   PROBEHOST_IMAGE          tag to build (default localhost/probehost:<workspace version>)
#   PROBEHOST_IMAGE_RUN      yes: also run the image with podman (probe --live,
#                            precompile, serve + GET /livez)
#   PROBEHOST_IMAGE_PORT     loopback port for the serve check (default 18080)
#   PROBEHOST_IMAGE_RUNTIME  OCI runtime for podman (default runc when installed;
#                            empty: podman's default). crun 1.8 (Debian 12) refuses
#                            to start containers on hosts with hybrid cgroups
#                            ("cgroups in hybrid mode not supported").
#   PROBEHOST_IMAGE_STORAGE_DRIVER
#                            containers/storage driver, passed to buildah and podman as
#                            --storage-driver (default vfs: needs no overlay support, so
#                            it works in containers and sandboxes). It must match the
#                            driver of an existing store, or podman refuses with
#                            "database configuration mismatch".
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'image: %s\n' "$*"; }

BINARY=dist/probehost-x86_64-unknown-linux-musl
CACHE_DIR=/var/cache/probehost
USER_ID=65532:65532
storage=${PROBEHOST_IMAGE_STORAGE_DRIVER:-vfs}

version=$(awk -F '"' '/^version = "/ { print $2; exit }' Cargo.toml)
[ -n "$version" ] || die "no version = \"...\" in Cargo.toml"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
image=${PROBEHOST_IMAGE:-localhost/probehost:$version}
run=${PROBEHOST_IMAGE_RUN:-no}
case "$run" in yes | no) ;; *) die "PROBEHOST_IMAGE_RUN must be yes or no, not '$run'" ;; esac

# Every buildah and podman call uses the same store (STORAGE_DRIVER in the
# environment is not honoured by buildah 1.28 / podman 4.3).
buildah() { command buildah --storage-driver "$storage" "$@"; }
podman() { command podman --storage-driver "$storage" "$@"; }

need() { type -P "$1" >/dev/null || die "$1 is not installed (apt-get install -y $2)"; }
need buildah buildah
need tar tar
need gzip gzip
need awk mawk
need diff diffutils
need cmp diffutils
need od coreutils
need comm coreutils
if [ "$run" = yes ]; then
    need podman podman
    need curl curl
fi

# --- the binary: a static x86-64 ELF (a scratch image has no dynamic loader) --------
[ -f "$BINARY" ] || die "$BINARY is missing; build it with scripts/dist.sh x86_64-unknown-linux-musl"
[ -x "$BINARY" ] || die "$BINARY is not executable"
elf_u() { od -A n -t "u$2" -j "$1" -N "$2" "$BINARY" | tr -d ' '; } # offset, width
[ "$(od -A n -t x1 -N 5 "$BINARY" | tr -d ' ')" = 7f454c4602 ] \
    || die "$BINARY is not a 64-bit ELF executable"
[ "$(elf_u 18 2)" = 62 ] || die "$BINARY is not an x86-64 executable (e_machine $(elf_u 18 2))"
phoff=$(elf_u 32 8) phentsize=$(elf_u 54 2) phnum=$(elf_u 56 2)
for ((i = 0; i < phnum; i++)); do
    # PT_INTERP (3): the binary asks for a dynamic loader, which scratch does not have.
    [ "$(elf_u $((phoff + i * phentsize)) 4)" != 3 ] \
        || die "$BINARY is dynamically linked; the image needs the static musl build"
done

# --- the `rootfs` stage's result, made here ---------------------------------------
# Mirrors the Dockerfile's rootfs stage; the owner of the cache directory is set by
# the final stage's COPY --chown, so no chown is needed here (works rootless too).
work=$(mktemp -d)
serve_ctr=""
cleanup() {
    if [ -n "$serve_ctr" ]; then podman rm -f "$serve_ctr" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs-context
mkdir -p "$rootfs/rootfs/var/cache" "$rootfs/rootfs/tmp" "$rootfs/cache/probehost"
chmod 0755 "$rootfs" "$rootfs/rootfs" "$rootfs/rootfs/var" "$rootfs/rootfs/var/cache" "$rootfs/cache"
chmod 1777 "$rootfs/rootfs/tmp"
chmod 0700 "$rootfs/cache/probehost"

# --- build ------------------------------------------------------------------------
# The build leaves the prebuilt stage's image untagged (as it does the image this tag
# named before), and buildah 1.28 keeps a working container on it for the `binary`
# stage; those, and only those, are removed after the build.
dangling() { buildah images --quiet --no-trunc --filter dangling=true | sort; }
dangling_before=$(dangling)
say "building $image from Dockerfile (target image, PROBEHOST_BINARY=prebuilt, storage $storage)"
buildah build \
    --pull=never \
    --file Dockerfile \
    --target image \
    --build-arg PROBEHOST_BINARY=prebuilt \
    --build-arg PROBEHOST_VERSION="$version" \
    --build-arg PROBEHOST_REVISION="$revision" \
    --build-context rootfs="$rootfs" \
    --tag "$image" \
    . || die "buildah build failed (see above)"
for id in $(comm -13 <(echo "$dangling_before") <(dangling)); do
    for ctr in $(buildah containers --notruncate --format '{{.ContainerID}} {{.ImageID}}' \
        | awk -v id="${id#sha256:}" '$2 == id { print $1 }'); do
        buildah rm "$ctr" >/dev/null || die "could not remove the build container $ctr"
    done
    buildah rmi "$id" >/dev/null || die "could not remove the intermediate image $id"
done

# --- check the configuration ------------------------------------------------------
inspect() { buildah inspect --type image --format "$1" "$image"; }
check() { # what, got, expected
    [ "$2" = "$3" ] || die "image $1 is '$2', expected '$3'"
    say "  $1: $2"
}
say "checking $image"
check entrypoint "$(inspect '{{range .OCIv1.Config.Entrypoint}}[{{.}}]{{end}}')" "[/probehost]"
check cmd "$(inspect '{{range .OCIv1.Config.Cmd}}[{{.}}]{{end}}')" "[serve]"
check user "$(inspect '{{.OCIv1.Config.User}}')" "$USER_ID"
check "cache env" "$(inspect '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' | grep '^PROBEHOST_CACHE_DIR=' || true)" \
    "PROBEHOST_CACHE_DIR=$CACHE_DIR"
check "label version" "$(inspect '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}')" "$version"
check "label revision" "$(inspect '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}')" "$revision"
check "label licenses" "$(inspect '{{index .OCIv1.Config.Labels "org.opencontainers.image.licenses"}}')" "Apache-2.0"

# --- check the files: exactly these, with these owners and modes --------------------
# Read from an exported archive, so no mount (and no root) is needed.
buildah push --quiet "$image" "docker-archive:$work/image.tar:$image" \
    || die "buildah push to a docker-archive failed (see above)"
layers=$(tar -xOf "$work/image.tar" manifest.json | sed -n 's/.*"Layers":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '"')
[ -n "$layers" ] || die "no layers in the exported image"
: >"$work/files"
: >"$work/layers"
for layer in $layers; do
    tar -xOf "$work/image.tar" "$layer" >>"$work/layers"
    tar -xOf "$work/image.tar" "$layer" | tar --numeric-owner -tvf - \
        | awk '{ sub(/\/$/, "", $6); print $1, $2, $6 }' >>"$work/files"
done
sort -k3 -o "$work/files" "$work/files"
cat >"$work/expected" <<EOF
-rwxr-xr-x 0/0 probehost
drwxrwxrwt 0/0 tmp
drwxr-xr-x 0/0 var
drwxr-xr-x 0/0 var/cache
drwx------ ${USER_ID/:/\/} ${CACHE_DIR#/}
EOF
sort -k3 -o "$work/expected" "$work/expected"
if ! diff -u "$work/expected" "$work/files" >"$work/files.diff"; then
    cat "$work/files.diff" >&2
    die "the image's files differ from the expected ones (- expected, + found)"
fi
sed 's/^/image:   /' "$work/files"
for layer in $layers; do # the last layer holding it wins
    if tar -xOf "$work/image.tar" "$layer" | tar -xOf - probehost >"$work/layer-probehost" 2>/dev/null; then
        mv "$work/layer-probehost" "$work/probehost"
    fi
done
cmp -s "$BINARY" "$work/probehost" || die "/probehost in the image is not $BINARY"
say "  /probehost is $BINARY"

size=$(buildah images --format '{{.Size}}' "$image")
raw=$(wc -c <"$work/layers")
packed=$(gzip -9 -c "$work/layers" | wc -c)
say "size: $size ($raw bytes of layers, $packed gzipped; binary $(wc -c <"$BINARY") bytes)"

# --- run it -----------------------------------------------------------------------
if [ "$run" = yes ]; then
    runtime=${PROBEHOST_IMAGE_RUNTIME-$(if type -P runc >/dev/null; then echo runc; fi)}
    # Podman asks for RLIMIT_NOFILE/NPROC of 1048576 by default; without
    # CAP_SYS_RESOURCE (containers, sandboxes) the runtime cannot raise them and fails
    # with "error setting rlimit type 7/6: operation not permitted". Ask for what this
    # shell may have instead (podman may itself hold fewer processes than `ulimit -Hu`).
    nofile=$(ulimit -Hn)
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
    nproc=$(ulimit -Hu)
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
    flags=(--pull=never --network=host --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
    [ -z "$runtime" ] || flags+=(--runtime "$runtime")
    say "running with podman ${flags[*]}"

    out=$(podman run --rm "${flags[@]}" "$image" probe --live) \
        || die "podman run $image probe --live failed (exit $?)"
    [ "$out" = Ok ] || die "probe --live printed '$out', expected 'Ok'"
    say "  probe --live: $out"

    out=$(podman run --rm "${flags[@]}" "$image" precompile) \
        || die "podman run $image precompile failed (exit $?): the cache directory is not usable"
    say "  precompile: $(echo "$out" | tr '\n' ';' | sed 's/;$//')"

    port=${PROBEHOST_IMAGE_PORT:-18080}
    url=http://127.0.0.1:$port/livez
    if curl -s -o /dev/null --max-time 2 "$url"; then
        die "something already answers on 127.0.0.1:$port; set PROBEHOST_IMAGE_PORT"
    fi
    serve_ctr=probehost-image-check-$$
    podman run -d --name "$serve_ctr" "${flags[@]}" "$image" serve --listen "127.0.0.1:$port" >/dev/null \
        || die "podman run $image serve failed"
    body=""
    for _ in $(seq 1 50); do
        body=$(curl -sf --max-time 2 "$url") && break
        [ "$(podman inspect --format '{{.State.Running}}' "$serve_ctr")" = true ] || break
        sleep 0.2
    done
    if [ "$body" != Ok ]; then
        podman logs "$serve_ctr" >&2 || true
        die "GET $url did not answer 200 Ok (got '$body')"
    fi
    say "  serve: GET /livez -> 200 $body"
    # SIGTERM: probehost drains (server.drain, 5 s by default) and exits 0.
    podman stop --time 30 "$serve_ctr" >/dev/null || die "podman stop failed"
    code=$(podman inspect --format '{{.State.ExitCode}}' "$serve_ctr")
    if [ "$code" != 0 ]; then
        podman logs "$serve_ctr" >&2 || true
        die "serve exited $code after SIGTERM, expected 0"
    fi
    say "  serve: exit 0 after SIGTERM"
    podman rm "$serve_ctr" >/dev/null
    serve_ctr=""
fi
say "ok: $image"
