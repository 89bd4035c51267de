#!/usr/bin/env bash
# Build KEDA's operator and metrics adapter from the github.com/kedacore/keda/v2 module, in one
# `go build`, cached by version under ~/.cache/asya/keda/<version>/. Prints that directory on
# stdout; progress on stderr. KEDA's CRDs of the same release are copied from the module
# (config/crd/bases) into <dir>/crds/.
#
# KEDA's go.mod has `replace` directives, which `go install module@version` refuses, so we build
# through a wrapper module that requires the release and repeats its replaces.
#
# Environment: ASYA_KEDA_VERSION (default 2.21.0), ASYA_CACHE (default ~/.cache/asya).
set -euo pipefail

KEDA_VERSION="${ASYA_KEDA_VERSION:-2.21.0}"
CACHE="${ASYA_CACHE:-$HOME/.cache/asya}"
OUT="$CACHE/keda/$KEDA_VERSION"
log() { printf 'keda-build: %s\n' "$*" >&2; }

if [ -x "$OUT/keda-operator" ] && [ -x "$OUT/keda-adapter" ] && [ -d "$OUT/crds" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null 2>&1 || { log "no Go toolchain to build KEDA"; exit 3; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if [ -x "$OUT/keda-operator" ] && [ -x "$OUT/keda-adapter" ]; then
  log "built by another run, cached in $OUT"
  echo "$OUT"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/asya-keda-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
module=github.com/kedacore/keda/v2
gomod=$(go mod download -json "$module@v$KEDA_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || { log "could not download $module v$KEDA_VERSION"; exit 1; }
{
  echo "module asya.local/keda-build"
  echo
  echo "go 1.26"
  echo
  echo "require $module v$KEDA_VERSION"
  echo
  grep -E '^replace .+ => ' "$gomod" || true
  sed -n '/^replace (/,/^)/p' "$gomod"
} >"$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/operator"\n\t_ "%s/cmd/adapter"\n)\n' \
  "$module" "$module" >"$work/tools.go"
log "building keda-operator and keda-adapter v$KEDA_VERSION (cold: about 25 minutes on 2 cores)"
mkdir -p "$work/bin"
(cd "$work" && go mod tidy >&2 && go build -trimpath \
   -ldflags "-s -w -X $module/version.Version=$KEDA_VERSION" \
   -o "$work/bin/" "$module/cmd/operator" "$module/cmd/adapter" >&2)
# The CRDs of the same release, from the module (keda.sh and eventing.keda.sh).
mkdir -p "$OUT/crds"
cp "$(go env GOMODCACHE)/$module@v$KEDA_VERSION"/config/crd/bases/*.yaml "$OUT/crds/"
chmod 0644 "$OUT"/crds/*.yaml
mv "$work/bin/operator" "$OUT/keda-operator"
mv "$work/bin/adapter" "$OUT/keda-adapter"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
