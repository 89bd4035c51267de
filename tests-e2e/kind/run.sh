#!/usr/bin/env bash
# The cluster suite (tests-e2e/cluster/) on a kind cluster, for a machine with a Docker engine:
# the same tests that run on scripts/cluster.sh's node, on a second way to get a cluster.
#
#   bash tests-e2e/kind/run.sh
#
# Preflight first, before anything is built or created: a Docker engine, kind, kubectl, helm,
# hatch and python3 on PATH, the KEDA chart ($KEDA_CHART_REPO, version $KEDA_VERSION) and the
# service images (rabbitmq, postgres) reachable. Whatever is missing is named and the script
# exits 77 (not a pass, not a failure of Asya). Then: build the images with the names the suite uses
# (localhost/<component>:<version>, and a second runtime tag for the rollout test); create the
# cluster (deploy/kind/cluster.yaml); load the images; install KEDA; start RabbitMQ and
# PostgreSQL in the suite's namespace (manifests/services.yaml); forward RabbitMQ's port to this
# machine and wait until it listens; run the suite with the variables that point it at this
# cluster (ASYA_CLUSTER_KUBECONFIG and the rest, see tests-e2e/cluster/test_cluster.py). The
# cluster is deleted at the end unless KEEP_CLUSTER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
SKIP=77
CLUSTER="${CLUSTER:-asya-e2e}"
KEDA_CHART_REPO="${KEDA_CHART_REPO:-https://kedacore.github.io/charts}"
KEDA_VERSION="${KEDA_VERSION:-2.21.0}"   # the KEDA scripts/keda-build.sh builds for the local node
NS=asya                                   # the suite's namespace
SERVICE_IMAGES=(rabbitmq:4-management postgres:17)

missing=()
for tool in docker kind kubectl helm hatch python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a Docker engine (docker info fails)")
fi
if [ ${#missing[@]} -eq 0 ]; then
  helm_home="$(mktemp -d)"
  trap 'rm -rf "$helm_home"' EXIT
  export HELM_REPOSITORY_CONFIG="$helm_home/repositories.yaml" HELM_REPOSITORY_CACHE="$helm_home/cache"
  found="$(helm repo add kedacore "$KEDA_CHART_REPO" >/dev/null 2>&1 \
    && helm search repo kedacore/keda --version "$KEDA_VERSION" 2>/dev/null || true)"
  if [[ "$found" != *kedacore/keda* ]]; then
    missing+=("the KEDA chart $KEDA_VERSION at $KEDA_CHART_REPO")
  fi
  for image in "${SERVICE_IMAGES[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || docker pull -q "$image" >/dev/null 2>&1 \
      || missing+=("the image $image (docker pull fails)")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind e2e: not run: missing ${missing[*]}" >&2
  exit "$SKIP"
fi

version() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "packages/$1/src/${1//-/_}/__about__.py"; }
RUNTIME="localhost/asya-runtime:$(version asya-runtime)"
ROLLOUT="localhost/asya-runtime:rollout"

echo "== building images"
images=()
for component in asya-runtime asya-sidecar asya-gateway asya-operator; do
  tag="localhost/$component:$(version "$component")"
  docker build -q -f "packages/$component/Dockerfile" -t "$tag" . >/dev/null
  images+=("$tag")
done
docker build -q -f examples/seed/Dockerfile -t "localhost/asya-seed:$(version asya-runtime)" \
  --build-arg "RUNTIME_IMAGE=$RUNTIME" examples/seed >/dev/null
docker tag "$RUNTIME" "$ROLLOUT"
images+=("localhost/asya-seed:$(version asya-runtime)" "$ROLLOUT" "${SERVICE_IMAGES[@]}")

echo "== cluster $CLUSTER"
# The cluster's own kubeconfig (the user's ~/.kube/config is left alone); kept with the cluster.
kubeconfig="${KIND_KUBECONFIG:-$PWD/.kind-$CLUSTER.kubeconfig}"
forward=""
cleanup() {
  [ -z "$forward" ] || kill "$forward" 2>/dev/null || true
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "kind e2e: cluster $CLUSTER kept; KUBECONFIG=$kubeconfig" >&2
  else
    kind delete cluster --name "$CLUSTER" --kubeconfig "$kubeconfig"
    rm -f "$kubeconfig"
  fi
  rm -rf "$helm_home"
}
trap cleanup EXIT
kind get clusters | grep -qx "$CLUSTER" \
  || kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --kubeconfig "$kubeconfig"
kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
export KUBECONFIG="$kubeconfig"
for image in "${images[@]}"; do
  kind load docker-image --name "$CLUSTER" "$image"
done

echo "== KEDA $KEDA_VERSION, RabbitMQ, PostgreSQL"
helm upgrade --install keda kedacore/keda --version "$KEDA_VERSION" --namespace keda --create-namespace --wait
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f tests-e2e/kind/manifests/services.yaml
kubectl -n "$NS" rollout status deploy/rabbitmq deploy/postgres --timeout=300s

echo "== RabbitMQ on 127.0.0.1 for the tests"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl -n "$NS" port-forward --address 127.0.0.1 svc/rabbitmq "$port:5672" >/dev/null 2>&1 &
forward=$!
for _ in $(seq 1 120); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$forward" 2>/dev/null || { echo "kind e2e: the port-forward to RabbitMQ exited" >&2; exit 1; }
  sleep 0.5
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "kind e2e: RabbitMQ's port-forward never listened" >&2; exit 1; }

echo "== the cluster suite (CI=1: a prerequisite the suite misses fails it, never skips)"
ASYA_CLUSTER_KUBECONFIG="$kubeconfig" \
ASYA_TEST_AMQP_URL="amqp://asya:asya@127.0.0.1:$port/" \
ASYA_CLUSTER_POD_AMQP_URL="amqp://asya:asya@rabbitmq.$NS.svc:5672/" \
ASYA_CLUSTER_POD_DATABASE_URL="postgresql://asya:asya@postgres.$NS.svc:5432/asya" \
ASYA_CLUSTER_STORAGE_CLASS=standard \
ASYA_CLUSTER_ROLLOUT_IMAGE="$ROLLOUT" \
CI=1 \
  hatch run e2e:python -m pytest tests-e2e/cluster -x -q -s
echo "kind e2e: passed"
