#!/usr/bin/env bash
# Make the envtest assets (kube-apiserver, etcd) for one pinned Kubernetes version, and helm
# (deploy/ is a Helm chart), and print the directory to use as KUBEBUILDER_ASSETS.
#
# Order of preference:
#   1. KUBEBUILDER_ASSETS already set and holding both binaries;
#   2. `setup-envtest` on PATH (binaries it already has for the version);
#   3. builds from the Go module proxy, each cached by its own version under ~/.cache/asya/:
#      the Kubernetes binaries by scripts/k8s-build.sh (k8s/<version>/, one `go build` for all of
#      them, kubelet and the rest included, so the real-cluster suite reuses the same build),
#      etcd in etcd/<version>/, helm in helm/<version>/.
# The directory printed in case 3 is ~/.cache/asya/envtest/<k8s>-<etcd>-<helm>/, symlinks only.
#
# etcd's server module carries `replace` directives too, but they only point at modules that are
# published at the same tag, so requiring it from a wrapper module is enough.
#
# Progress goes to stderr; the only line on stdout is the assets directory.
set -euo pipefail

K8S_VERSION="${ASYA_ENVTEST_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ASYA_ENVTEST_ETCD_VERSION:-3.6.8}"
HELM_VERSION="${ASYA_ENVTEST_HELM_VERSION:-3.19.0}"
CACHE="${ASYA_CACHE:-$HOME/.cache/asya}"
OUT="$CACHE/envtest/$K8S_VERSION-$ETCD_VERSION-$HELM_VERSION"

log() { printf 'envtest-assets: %s\n' "$*" >&2; }

have_assets() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ] && [ -x "$1/helm" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have_assets "$KUBEBUILDER_ASSETS"; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

if command -v setup-envtest >/dev/null 2>&1; then
  if dir=$(setup-envtest use -i -p path "$K8S_VERSION" 2>/dev/null) && have_assets "$dir"; then
    log "using setup-envtest's $dir"
    echo "$dir"
    exit 0
  fi
fi

if have_assets "$OUT"; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "no assets found and no Go toolchain to build them"; exit 3; }

work=$(mktemp -d "${TMPDIR:-/tmp}/asya-envtest.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)

K8S_DIR=$(ASYA_K8S_VERSION="$K8S_VERSION" ASYA_CACHE="$CACHE" bash "$(dirname "$0")/k8s-build.sh")

# --- etcd -----------------------------------------------------------------------------------
ETCD_DIR="$CACHE/etcd/$ETCD_VERSION"
if [ ! -x "$ETCD_DIR/etcd" ]; then
  mkdir -p "$work/etcd" "$ETCD_DIR"
  cat > "$work/etcd/go.mod" <<GOMOD
module asya.local/envtest/etcd

go 1.26

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
  cat > "$work/etcd/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  log "building etcd v$ETCD_VERSION"
  (cd "$work/etcd" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$ETCD_DIR/etcd.tmp" "$ETCD_DIR/etcd"
fi

# --- helm (no replace directives: go install works) --------------------------------------------
HELM_DIR="$CACHE/helm/$HELM_VERSION"
if [ ! -x "$HELM_DIR/helm" ]; then
  log "building helm v$HELM_VERSION"
  mkdir -p "$HELM_DIR"
  GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
  mv "$work/bin/helm" "$HELM_DIR/helm"
fi

mkdir -p "$OUT"
ln -sfn "$K8S_DIR/kube-apiserver" "$OUT/kube-apiserver"
ln -sfn "$K8S_DIR/kubectl" "$OUT/kubectl"
ln -sfn "$ETCD_DIR/etcd" "$OUT/etcd"
ln -sfn "$HELM_DIR/helm" "$OUT/helm"
log "ready in $(( $(date +%s) - start )) s: $OUT"
echo "$OUT"
