#!/usr/bin/env bash
# Make the envtest assets (kube-apiserver, etcd) for one pinned Kubernetes version, and helm
# (deploy/ is a Helm chart), and print the directory to use as KUBEBUILDER_ASSETS.
#
# Order of preference:
#   1. KUBEBUILDER_ASSETS already set and holding both binaries;
#   2. `setup-envtest` on PATH (binaries it already has for the version);
#   3. a cached build under ~/.cache/asya/envtest/<version>/;
#   4. a build with `go build` from the Go module proxy (cached for next time).
#
# k8s.io/kubernetes and etcd's server module carry `replace` directives pointing into their own
# source trees, so `go install module@version` refuses them. We build through a small wrapper
# module that requires the release and replaces each k8s.io staging module with its published
# v0.Y.Z counterpart (etcd's replaces only point at modules that are published at the same tag,
# so requiring it from a wrapper is enough).
#
# Progress goes to stderr; the only line on stdout is the assets directory.
set -euo pipefail

K8S_VERSION="${ASYA_ENVTEST_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ASYA_ENVTEST_ETCD_VERSION:-3.6.8}"
HELM_VERSION="${ASYA_ENVTEST_HELM_VERSION:-3.19.0}"
CACHE_ROOT="${ASYA_ENVTEST_CACHE:-$HOME/.cache/asya/envtest}"
OUT="$CACHE_ROOT/$K8S_VERSION"

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

mkdir -p "$OUT"
# A KUBEBUILDER_ASSETS or setup-envtest directory without helm still gives us the binaries.
for src in "${KUBEBUILDER_ASSETS:-}"; do
  if [ -n "$src" ] && [ -x "$src/kube-apiserver" ] && [ -x "$src/etcd" ] && [ ! -x "$OUT/kube-apiserver" ]; then
    cp "$src/kube-apiserver" "$src/etcd" "$OUT/"
  fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/asya-envtest.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)

# --- kube-apiserver -------------------------------------------------------------------------
if [ ! -x "$OUT/kube-apiserver" ]; then
log "resolving k8s.io/kubernetes v$K8S_VERSION"
gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || { log "could not download k8s.io/kubernetes v$K8S_VERSION"; exit 1; }
minor="0.${K8S_VERSION#1.}"
mkdir -p "$work/kube"
{
  echo "module asya.local/envtest/kube"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  grep -E '^\s*k8s\.io/[^ ]+ => \./staging/src/' "$gomod" | awk -v v="v$minor" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$work/kube/go.mod"
cat > "$work/kube/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
log "building kube-apiserver v$K8S_VERSION (cold: many minutes on 2 cores)"
(cd "$work/kube" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w \
   -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
   -X k8s.io/component-base/version.gitMajor=1 \
   -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.}" \
   -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2)
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
fi

# --- etcd -----------------------------------------------------------------------------------
if [ ! -x "$OUT/etcd" ]; then
mkdir -p "$work/etcd"
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
(cd "$work/etcd" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
mv "$OUT/etcd.tmp" "$OUT/etcd"
fi

# --- helm (no replace directives: go install works) --------------------------------------------
if [ ! -x "$OUT/helm" ]; then
  log "building helm v$HELM_VERSION"
  GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
  mv "$work/bin/helm" "$OUT/helm"
fi

log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
