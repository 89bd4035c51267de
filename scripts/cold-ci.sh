#!/usr/bin/env bash
# Run .ci/run as on a fresh machine, and report each step's time: a clean clone of HEAD, an empty
# HOME (so no ~/.cache: no Go build or module cache, no Kubernetes binaries, no uv or pip cache, no
# cached images; no hatch environments), hatch installed into a new venv, and podman storage of
# its own (no images). RabbitMQ, PostgreSQL and Debian packages stay the machine's.
#
#   sudo bash scripts/cold-ci.sh [--keep]      (--keep: leave the scratch folder for a warm rerun)
#
# The scratch folder (~10 GB after a run, mostly Go's caches) is removed at the end unless --keep.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
keep=0
[ "${1:-}" = "--keep" ] && keep=1
scratch=$(mktemp -d "${TMPDIR:-/tmp}/asya-cold-ci.XXXXXX")
storage="$scratch/containers"
cleanup() {
  # This run's podman storage: its containers and images go first (podman unmounts their layers),
  # then the folder. The machine's own podman storage is never touched.
  export CONTAINERS_STORAGE_CONF="$scratch/storage.conf"
  podman rm -a -f >/dev/null 2>&1 || echo "cold-ci: podman rm failed; see $storage" >&2
  podman rmi -a -f >/dev/null 2>&1 || echo "cold-ci: podman rmi failed; see $storage" >&2
  [ "$keep" = 1 ] && { echo "cold-ci: kept $scratch" >&2; return; }
  rm -rf "$scratch"
}
trap cleanup EXIT

git clone -q "$ROOT" "$scratch/main"
mkdir -p "$scratch/home" "$storage"
cat > "$scratch/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$storage/graph"
runroot = "$storage/run"
CONF
python3 -m venv "$scratch/python"
start=$SECONDS
(
  cd "$scratch/main"
  export HOME="$scratch/home" PYENV_ROOT="${PYENV_ROOT:-/root/.pyenv}"
  export PATH="$scratch/python/bin:$PATH" CONTAINERS_STORAGE_CONF="$scratch/storage.conf"
  unset GOPATH GOCACHE GOMODCACHE KUBEBUILDER_ASSETS VIRTUAL_ENV
  CI=true bash .ci/run
) 2>&1 | tee "$scratch/ci.log" | grep --line-buffered -E '^ci: |passed|failed|error' >&2
status=${PIPESTATUS[0]}
echo "cold-ci: .ci/run exited $status after $(( SECONDS - start )) s" >&2
grep -E '^ci: ' "$scratch/ci.log" >&2 || true
cp "$scratch/ci.log" "${TMPDIR:-/tmp}/asya-cold-ci.log"
echo "cold-ci: full log in ${TMPDIR:-/tmp}/asya-cold-ci.log" >&2
exit "$status"
