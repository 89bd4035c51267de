#!/usr/bin/env bash
# The seed's pipeline on a kind cluster, end to end, with the images built from this repository.
#
#   bash tests-e2e/kind/run.sh
#
# Needs: a Docker engine, kind, kubectl, helm, python3 with the e2e test environment (hatch).
# Where any of them is missing it says which and exits 77 (not a pass, not a failure of Asya).
# Steps: build every component's image and the seed example's runtime image; create the cluster
# (deploy/kind/cluster.yaml); load the images; install KEDA (Helm chart $KEDA_CHART, version
# $KEDA_VERSION, from a repository the machine has added, default kedacore/keda), RabbitMQ and
# PostgreSQL (manifests/services.yaml); install the deploy/ chart; apply the seed's Asya
# resources (scaled to zero); call the tool through the gateway with the MCP client
# (tests-e2e/kind/check.py); check that the actors scaled up from zero. The cluster is deleted at
# the end unless KEEP_CLUSTER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
SKIP=77
CLUSTER="${CLUSTER:-asya-e2e}"
KEDA_CHART="${KEDA_CHART:-kedacore/keda}"
KEDA_VERSION="${KEDA_VERSION:-2.16.1}"
NS=asya-system

missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker (client)")
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a Docker engine (docker info fails)")
fi
for tool in kind kubectl helm python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind e2e: not run: missing ${missing[*]}" >&2
  exit "$SKIP"
fi

version() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "packages/$1/src/${1//-/_}/__about__.py"; }

echo "== building images"
for component in asya-runtime asya-sidecar asya-gateway asya-operator; do
  docker build -q -f "packages/$component/Dockerfile" -t "$component:$(version "$component")" .
done
docker build -q -f examples/seed/Dockerfile -t asya-seed:dev --build-arg "RUNTIME_IMAGE=asya-runtime:$(version asya-runtime)" examples/seed

echo "== cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml
cleanup() { [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT
for image in "asya-runtime:$(version asya-runtime)" "asya-sidecar:$(version asya-sidecar)" \
             "asya-gateway:$(version asya-gateway)" "asya-operator:$(version asya-operator)" asya-seed:dev; do
  kind load docker-image --name "$CLUSTER" "$image"
done

echo "== KEDA, RabbitMQ, PostgreSQL"
helm upgrade --install keda "$KEDA_CHART" --version "$KEDA_VERSION" --namespace keda --create-namespace --wait
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f tests-e2e/kind/manifests/services.yaml
kubectl -n "$NS" rollout status deploy/rabbitmq deploy/postgres --timeout=300s

echo "== Asya"
helm upgrade --install asya deploy/helm/asya --namespace "$NS" --wait --timeout 5m \
  -f tests-e2e/kind/values.yaml \
  --set "operator.image=asya-operator:$(version asya-operator)" \
  --set "gateway.image=asya-gateway:$(version asya-gateway)"
kubectl -n "$NS" apply -f tests-e2e/kind/manifests/seed-actors.yaml
kubectl -n "$NS" wait asya --all --for=condition=Ready --timeout=300s
for actor in preprocess inference postprocess; do
  replicas=$(kubectl -n "$NS" get deploy "$actor" -o jsonpath='{.spec.replicas}')
  [ "${replicas:-0}" = 0 ] || { echo "kind e2e: $actor did not start at zero replicas ($replicas)" >&2; exit 1; }
done

echo "== the seed's tool through the gateway (MCP)"
kubectl -n "$NS" port-forward svc/asya-gateway 18080:80 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null; cleanup' EXIT
python3 tests-e2e/kind/check.py --url http://127.0.0.1:18080 --token kind-e2e-token

echo "== scaled up from zero"
for actor in preprocess inference postprocess; do
  replicas=$(kubectl -n "$NS" get deploy "$actor" -o jsonpath='{.status.replicas}')
  [ "${replicas:-0}" -ge 1 ] || { echo "kind e2e: $actor never scaled up" >&2; exit 1; }
done
echo "kind e2e: passed"
