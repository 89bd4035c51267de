#!/usr/bin/env bash
# Build the Kubernetes binaries of one pinned release, in ONE `go build` invocation so that the
# packages they share (client-go, apiserver, component-base, ...) compile once, and cache them by
# version under ~/.cache/asya/k8s/<version>/. Prints that directory on stdout; progress on stderr.
#
#   bash scripts/k8s-build.sh            # kube-apiserver kubelet kube-controller-manager
#                                        # kube-scheduler kube-proxy kubectl
#
# k8s.io/kubernetes carries `replace` directives into its own source tree, so
# `go install k8s.io/kubernetes/cmd/...@version` refuses it. We build through a small wrapper
# module that requires the release and replaces each k8s.io staging module with its published
# v0.Y.Z counterpart (the same version numbers, tagged from the same commit).
#
# Environment: ASYA_K8S_VERSION (default 1.36.3), ASYA_CACHE (default ~/.cache/asya).
set -euo pipefail

K8S_VERSION="${ASYA_K8S_VERSION:-1.36.3}"
CACHE="${ASYA_CACHE:-$HOME/.cache/asya}"
OUT="$CACHE/k8s/$K8S_VERSION"
BINARIES=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

log() { printf 'k8s-build: %s\n' "$*" >&2; }

# Sets `missing` to the binaries not cached yet; prints the folder and exits when none is.
check_cache() {
  missing=()
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "$1 $OUT"
    echo "$OUT"
    exit 0
  fi
}
check_cache "cached in"
command -v go >/dev/null 2>&1 || { log "no Go toolchain to build ${missing[*]}"; exit 3; }

mkdir -p "$OUT"
# One build at a time per version: a second caller waits, then finds the binaries cached.
exec 9>"$OUT/.lock"
flock 9
check_cache "built by another run, cached in"
work=$(mktemp -d "${TMPDIR:-/tmp}/asya-k8s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)

log "resolving k8s.io/kubernetes v$K8S_VERSION"
gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || { log "could not download k8s.io/kubernetes v$K8S_VERSION"; exit 1; }
minor="0.${K8S_VERSION#1.}"
{
  echo "module asya.local/k8s-build"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  grep -E '^\s*k8s\.io/[^ ]+ => \./staging/src/' "$gomod" | awk -v v="v$minor" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$work/go.mod"
{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  for b in "${missing[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$b\""; done
} > "$work/tools.go"
pkgs=()
for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done

log "building ${missing[*]} v$K8S_VERSION in one go build (cold: about 20 minutes on 2 cores)"
mkdir -p "$work/bin"
(cd "$work" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w \
   -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
   -X k8s.io/component-base/version.gitMajor=1 \
   -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} \
   -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
   -X k8s.io/client-go/pkg/version.gitMajor=1 \
   -X k8s.io/client-go/pkg/version.gitMinor=${K8S_VERSION#1.}" \
   -o "$work/bin/" "${pkgs[@]}" >&2)
for b in "${missing[@]}"; do mv "$work/bin/$b" "$OUT/$b"; done
log "built ${missing[*]} in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
