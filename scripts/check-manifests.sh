#!/usr/bin/env bash
# Render the Kubernetes manifests (the kustomize base and every overlay) with
# `kubectl kustomize` and validate every document strictly (unknown fields are
# errors) against the Kubernetes 1.29 schemas with kubernetes-validate.
#
# Needs:
#   kubectl with kustomize v4 or later (Debian's kubernetes-client 1.20 embeds
#     kustomize v2, which cannot read the overlay)
#   .venv/bin/kubernetes-validate, pinned:
#     .venv/bin/pip install kubernetes-validate==1.37.0
#
# Exits non-zero, naming what is wrong, if a tool is missing or any document
# fails, or if a document is skipped (e.g. a kind it has no schema for).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.29.0
KUBERNETES_VALIDATE_VERSION=1.37.0
VALIDATE=.venv/bin/kubernetes-validate
PYTHON=.venv/bin/python

fail() {
    echo "check-manifests: $*" >&2
    exit 1
}

command -v kubectl >/dev/null 2>&1 ||
    fail "kubectl not found on PATH; install it (apt-get install -y kubectl) — kubectl with kustomize v4+ is needed to render deploy/kubernetes"
kustomize_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}\([0-9][0-9]*\).*/\1/p')
if [ -z "$kustomize_version" ] || [ "$kustomize_version" -lt 4 ]; then
    fail "kubectl ($(command -v kubectl)) embeds kustomize ${kustomize_version:-older than v4} ('kubectl version --client' shows no v4+ Kustomize Version); deploy/kubernetes needs kustomize v4 or later (kubectl 1.21+)"
fi

[ -x "$VALIDATE" ] ||
    fail "kubernetes-validate not found at $VALIDATE; install it: .venv/bin/pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
installed=$("$VALIDATE" --version 2>/dev/null) ||
    fail "kubernetes-validate at $VALIDATE does not run ($VALIDATE --version failed); reinstall it: .venv/bin/pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
[ "$installed" = "$KUBERNETES_VALIDATE_VERSION" ] ||
    fail "kubernetes-validate $installed is installed, $KUBERNETES_VALIDATE_VERSION is pinned: .venv/bin/pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
total=0
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
    dir=${dir%/}
    name=$(echo "$dir" | tr / _)
    rendered="$work/$name.yaml"
    if ! kubectl kustomize "$dir" >"$rendered" 2>"$work/$name.err"; then
        cat "$work/$name.err" >&2
        echo "FAIL $dir: kubectl kustomize could not render it" >&2
        failed=1
        continue
    fi
    # kustomize's warnings (deprecated fields and the like) are shown, not fatal.
    cat "$work/$name.err" >&2
    documents=$("$PYTHON" -c '
import sys, yaml
with open(sys.argv[1]) as f:
    print(sum(1 for d in yaml.safe_load_all(f) if d))
' "$rendered")
    if [ "$documents" -eq 0 ]; then
        echo "FAIL $dir: renders no documents" >&2
        failed=1
        continue
    fi
    if ! "$VALIDATE" --strict -k "$KUBERNETES_VERSION" "$rendered" >"$work/$name.out" 2>&1; then
        sed "s|$rendered|$dir|" "$work/$name.out" >&2
        echo "FAIL $dir: kubernetes-validate --strict -k $KUBERNETES_VERSION rejected it" >&2
        failed=1
        continue
    fi
    passed=$(grep -c ' passed for resource ' "$work/$name.out" || true)
    if [ "$passed" -ne "$documents" ]; then
        sed "s|$rendered|$dir|" "$work/$name.out" >&2
        echo "FAIL $dir: kubernetes-validate validated $passed of $documents documents (the others were skipped)" >&2
        failed=1
        continue
    fi
    kinds=$(sed -n 's/.* passed for resource \([^/]*\)\/.*/\1/p' "$work/$name.out" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
    echo "ok   $dir: $documents documents valid against Kubernetes $KUBERNETES_VERSION ($kinds)"
    total=$((total + documents))
done

[ "$failed" -eq 0 ] || fail "manifests are not valid (see above)"
echo "check-manifests: all $total documents valid (kubernetes-validate $installed, --strict)"
