#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine: no Docker, no registry, no cloud.
#
#   sudo bash scripts/cluster.sh up           build what is missing (cached), start, wait for Ready
#   sudo bash scripts/cluster.sh down [--wipe] stop every process this script started (by pid)
#   sudo bash scripts/cluster.sh import IMG.. podman image(s) -> the node's containerd
#   sudo bash scripts/cluster.sh env          print KUBECONFIG and the addresses pods use
#   sudo bash scripts/cluster.sh status       which of the cluster's processes run
#
# The processes run on the host, as hack/local-up-cluster.sh runs them: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd (Debian's), kubelet and kube-proxy, KEDA's
# operator and metrics adapter (registered as the external.metrics.k8s.io APIService), plus two
# socat relays so pods reach the host's RabbitMQ and PostgreSQL. Kubernetes binaries come from
# scripts/k8s-build.sh (one `go build`, cached under ~/.cache/asya/k8s/<version>/), etcd from
# scripts/envtest-assets.sh, KEDA from scripts/keda-build.sh.
#
# Network: a bridge $BRIDGE with $GATEWAY/24 is made before anything starts. The API server and
# the kubelet listen on $GATEWAY (pods reach the API server through the `kubernetes` Service,
# 10.96.0.1:443, which kube-proxy routes to $GATEWAY:$APISERVER_PORT); etcd, the controller
# manager's and scheduler's ports and every health port listen on 127.0.0.1. The CNI bridge does
# not masquerade (ipMasq false): pod traffic cannot leave the machine.
#
# State and logs go to $ASYA_CLUSTER_DIR (default /var/tmp/asya-cluster): pki/, logs/, pids/, and
# each component's data. `down --wipe` removes it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

DIR="${ASYA_CLUSTER_DIR:-/var/tmp/asya-cluster}"
BRIDGE="${ASYA_CLUSTER_BRIDGE:-asya0}"
GATEWAY=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
APISERVER_PORT=16443
ETCD_PORT=23791
NODE=asya-node
PAUSE_IMAGE=localhost/pause:3.10
AMQP_HOST_PORT="${ASYA_CLUSTER_AMQP_PORT:-5672}"
PG_HOST_PORT="${ASYA_CLUSTER_PG_PORT:-5432}"
PKI="$DIR/pki" LOGS="$DIR/logs" PIDS="$DIR/pids" RUN="$DIR/run"
KUBECONFIG_FILE="$PKI/admin.kubeconfig"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- processes ----------------------------------------------------------------------------------
# A pid file counts only while its pid is still the process it names (pids are reused once a
# machine's processes were ended without this script).
alive() {
  local pid
  [ -s "$PIDS/$1" ] || return 1
  pid=$(cat "$PIDS/$1")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$(cat "$PIDS/$1.cmd")"
}
start() { # start <name> <command...>: in the background, logged, its pid recorded
  local name=$1
  shift
  if alive "$name"; then log "$name already running (pid $(cat "$PIDS/$name"))"; return; fi
  "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name"
  # What the pid must still be running: the program, past an `env VAR=value` prefix (env execs it).
  local program=$1 arg
  if [ "$program" = env ]; then
    for arg in "${@:2}"; do case "$arg" in *=*) ;; *) program=$arg; break ;; esac; done
  fi
  printf '%s' "$program" >"$PIDS/$name.cmd"
}
stop() { # stop <name>: TERM, then KILL after 15 s; waits until the pid is gone
  local name=$1 pid i
  [ -s "$PIDS/$name" ] || return 0
  pid=$(cat "$PIDS/$name")
  if alive "$name"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop on TERM; killing it"; kill -9 "$pid" 2>/dev/null || true; }
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDS/$name" "$PIDS/$name.cmd"
}
wait_for() { # wait_for <what> <seconds> <command...>: until the command succeeds, or fail
  local what=$1 limit=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= limit )); then
      die "$what not ready after ${limit} s (logs in $LOGS)"
    fi
    sleep 0.5
  done
  log "$what ready in $(( SECONDS - t0 )) s"
}

# --- tools and binaries -------------------------------------------------------------------------
ensure_packages() {
  local need=() pkg
  for pkg in containerd runc iptables conntrack socat openssl gcc libc6-dev containernetworking-plugins podman; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
  # Debian starts its own containerd when the package is installed; ours has its own socket and
  # root, so the two do not meet. Leave the system's service alone.
}

binaries() {
  K8S=$(bash "$ROOT/scripts/k8s-build.sh")
  ENVTEST=$(bash "$ROOT/scripts/envtest-assets.sh")
  CNI_BIN=/usr/lib/cni
  for b in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do
    [ -x "$K8S/$b" ] || die "$K8S/$b is missing"
  done
  [ -x "$ENVTEST/etcd" ] || die "no etcd in $ENVTEST"
  [ -x "$CNI_BIN/bridge" ] || die "no CNI bridge plugin in $CNI_BIN"
}

# --- PKI ----------------------------------------------------------------------------------------
cert() { # cert <name> <subject> <ext or ""> <ca>: a key and a certificate signed by <ca>
  local name=$1 subject=$2 ext=$3 ca=$4
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  if [ -n "$ext" ]; then
    printf '%s\n' "$ext" >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
      -CAcreateserial -days 365 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  else
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
      -CAcreateserial -days 365 -out "$PKI/$name.crt" 2>/dev/null
  fi
}
pki() {
  [ -s "$KUBECONFIG_FILE" ] && return
  log "making the cluster's certificates in $PKI"
  mkdir -p "$PKI"
  local ca
  for ca in ca front-proxy-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=asya-cluster-$ca" \
      -keyout "$PKI/$ca.key" -out "$PKI/$ca.crt" 2>/dev/null
  done
  cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:$GATEWAY,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth" ca
  cert kubelet "/CN=$NODE" "subjectAltName=IP:$GATEWAY,DNS:$NODE
extendedKeyUsage=serverAuth" ca
  # One client identity for the control plane's own components (system:masters), as
  # hack/local-up-cluster.sh does. The chart's pods use their ServiceAccounts and RBAC.
  cert admin "/O=system:masters/CN=asya-cluster-admin" "extendedKeyUsage=clientAuth" ca
  cert front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth" front-proxy-ca
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  cat >"$KUBECONFIG_FILE.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: asya
  cluster:
    server: https://$GATEWAY:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: asya
  context: {cluster: asya, user: admin}
current-context: asya
KC
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

# --- network ------------------------------------------------------------------------------------
bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $GATEWAY/" || ip addr add "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Same-bridge Service traffic (pod -> ClusterIP -> pod) needs bridged packets to see iptables.
  modprobe br_netfilter 2>/dev/null || true
  if [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  fi
  mkdir -p "$DIR/cni"
  cat >"$DIR/cni/10-asya.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "asya",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

# --- components ---------------------------------------------------------------------------------
etcd_up() {
  start etcd "$ENVTEST/etcd" --name asya --data-dir "$DIR/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
    --initial-cluster asya=http://127.0.0.1:23801 --listen-metrics-urls http://127.0.0.1:23811
}
apiserver_up() {
  start kube-apiserver "$K8S/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$GATEWAY" --advertise-address "$GATEWAY" --secure-port "$APISERVER_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false
}
kube() { "$K8S/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
controllers_up() {
  start kube-controller-manager "$K8S/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port 10357 --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
    --horizontal-pod-autoscaler-sync-period 5s --profiling=false
  start kube-scheduler "$K8S/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port 10359 --leader-elect=false --profiling=false
}
containerd_up() {
  mkdir -p "$RUN" "$DIR/containerd"
  cat >"$DIR/containerd/config.toml" <<TOML
version = 2
root = "$DIR/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[debug]
  address = "$RUN/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
TOML
  start containerd containerd --config "$DIR/containerd/config.toml"
}
ctr_() { ctr --address "$RUN/containerd.sock" -n k8s.io "$@"; }
pause_image() {
  ctr_ images ls -q 2>/dev/null | grep -qx "$PAUSE_IMAGE" && return
  local build
  build=$(mktemp -d "${TMPDIR:-/tmp}/asya-pause.XXXXXX")
  gcc -static -Os -s -o "$build/pause" "$ROOT/scripts/cluster/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$build/Containerfile"
  CONTAINERS_CONF="$ROOT/scripts/podman/containers.conf" podman build -q -t "$PAUSE_IMAGE" "$build" >/dev/null
  rm -rf "$build"
  import_images "$PAUSE_IMAGE"
}
import_images() { # podman image names -> containerd's k8s.io namespace
  local image archive
  for image in "$@"; do
    archive=$(mktemp "${TMPDIR:-/tmp}/asya-image.XXXXXX")
    CONTAINERS_CONF="$ROOT/scripts/podman/containers.conf" podman save -q -o "$archive" "$image"
    ctr_ images import "$archive" >/dev/null
    rm -f "$archive"
    # Manifests that name an image without a registry (asya-sidecar:0.1.0) mean docker.io/library/.
    case "$image" in
      localhost/*) ctr_ images tag --force "$image" "docker.io/library/${image#localhost/}" >/dev/null ;;
    esac
    log "imported $image"
  done
}
kubelet_up() {
  mkdir -p "$DIR/kubelet"
  cat >"$DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$RUN/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
YAML
  start kubelet "$K8S/kubelet" --config "$DIR/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --root-dir "$DIR/kubelet/root" --node-ip "$GATEWAY" --hostname-override "$NODE"
}
proxy_up() {
  start kube-proxy "$K8S/kube-proxy" --kubeconfig "$KUBECONFIG_FILE" --hostname-override "$NODE" \
    --proxy-mode iptables --cluster-cidr "$POD_CIDR" --conntrack-max-per-core 0 \
    --bind-address 127.0.0.1 --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249 --nodeport-addresses "$GATEWAY/32"
}
relays_up() { # pods reach the host's 127.0.0.1-only RabbitMQ and PostgreSQL on the bridge address
  start relay-amqp socat "TCP-LISTEN:5672,bind=$GATEWAY,fork,reuseaddr" "TCP:127.0.0.1:$AMQP_HOST_PORT"
  start relay-postgres socat "TCP-LISTEN:5432,bind=$GATEWAY,fork,reuseaddr" "TCP:127.0.0.1:$PG_HOST_PORT"
}
# --- KEDA (operator and metrics adapter on the host, registered as external.metrics.k8s.io) --------
KEDA_ENV=(env WATCH_NAMESPACE="" POD_NAMESPACE=keda KEDA_CLUSTER_OBJECT_NAMESPACE=keda KUBECONFIG="$KUBECONFIG_FILE")
ADAPTER_METRICS_PORT=18090
keda_operator() {
  start keda-operator "${KEDA_ENV[@]}" "$KEDA/keda-operator" \
    --metrics-bind-address 127.0.0.1:18080 --health-probe-bind-address 127.0.0.1:18081 \
    --metrics-service-bind-address 127.0.0.1:19666 --leader-elect=false \
    --enable-cert-rotation=true --cert-dir "$DIR/keda/certs" \
    --enable-webhook-patching=false --enable-apiservice-patching=false
}
keda_certs() { # the certificates KEDA's rotation wrote into Secret keda/kedaorg-certs, as files
  local key value
  for key in tls.crt tls.key ca.crt; do
    value=$(kube -n keda get secret kedaorg-certs -o "jsonpath={.data.${key//./\\.}}" 2>/dev/null) || return 1
    [ -n "$value" ] || return 1
    printf '%s' "$value" | base64 -d >"$DIR/keda/certs/$key"
  done
}
keda_up() {
  KEDA=$(bash "$ROOT/scripts/keda-build.sh")
  mkdir -p "$DIR/keda/certs"
  kube apply --server-side --force-conflicts -f "$KEDA/crds" >/dev/null
  kube get namespace keda >/dev/null 2>&1 || kube create namespace keda >/dev/null
  # With cert rotation on, KEDA's first start writes its Secret and exits on purpose ("exiting
  # so pod can be restarted"); in a pod the kubelet restarts it. Here we do.
  if ! keda_certs; then
    keda_operator
    wait_for "KEDA's certificates" 120 keda_certs
    local i
    for i in $(seq 100); do alive keda-operator || break; sleep 0.2; done
    stop keda-operator
  fi
  keda_operator
  # The adapter's own metrics server listens on every interface and has no bind flag: keep it
  # to loopback with a firewall rule.
  iptables -C INPUT -p tcp --dport "$ADAPTER_METRICS_PORT" ! -i lo -j DROP 2>/dev/null \
    || iptables -I INPUT -p tcp --dport "$ADAPTER_METRICS_PORT" ! -i lo -j DROP
  start keda-adapter "${KEDA_ENV[@]}" "$KEDA/keda-adapter" \
    --secure-port 16444 --bind-address "$GATEWAY" --port "$ADAPTER_METRICS_PORT" \
    --cert-dir "$DIR/keda/certs" \
    --tls-cert-file "$DIR/keda/certs/tls.crt" --tls-private-key-file "$DIR/keda/certs/tls.key" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --lister-kubeconfig "$KUBECONFIG_FILE" \
    --metrics-service-address 127.0.0.1:19666 \
    --metrics-service-grpc-authority keda-operator.keda.svc.cluster.local
  kube apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec:
  ports: [{name: https, port: 443, targetPort: 16444}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: keda-metrics-apiserver
  namespace: keda
  labels: {kubernetes.io/service-name: keda-metrics-apiserver}
addressType: IPv4
endpoints: [{addresses: [$GATEWAY]}]
ports: [{name: https, port: 16444, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  service: {name: keda-metrics-apiserver, namespace: keda, port: 443}
  group: external.metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
  wait_for "KEDA's metrics API" 120 kube get --raw /apis/external.metrics.k8s.io/v1beta1
}

node_ready() {
  kube get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (the kubelet, containerd and the bridge need it)"
  local t0=$SECONDS
  ensure_packages
  binaries
  mkdir -p "$LOGS" "$PIDS" "$RUN"
  pki
  bridge
  etcd_up
  apiserver_up
  wait_for kube-apiserver 60 kube get --raw /readyz
  controllers_up
  containerd_up
  wait_for containerd 30 ctr_ version
  pause_image
  kubelet_up
  proxy_up
  relays_up
  wait_for "node $NODE" 90 node_ready
  wait_for "default ServiceAccount" 60 kube get serviceaccount default
  keda_up
  log "up in $(( SECONDS - t0 )) s; export KUBECONFIG=$KUBECONFIG_FILE"
}

down() {
  local wipe=${1:-}
  K8S=$(bash "$ROOT/scripts/k8s-build.sh" 2>/dev/null) || K8S=""
  if [ -n "$K8S" ] && alive kubelet && [ -s "$KUBECONFIG_FILE" ]; then
    # Pods first, while the kubelet can still stop them (their shims outlive containerd).
    kube delete pods --all --all-namespaces --grace-period=5 --wait=false >/dev/null 2>&1 || true
  fi
  stop kubelet
  if alive containerd; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  local name
  for name in keda-adapter keda-operator relay-postgres relay-amqp kube-proxy containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  # The shims this cluster's containerd started (found by its socket), if any outlived it.
  pkill -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null || true
  if [ -n "$K8S" ]; then
    "$K8S/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  iptables -D INPUT -p tcp --dport "$ADAPTER_METRICS_PORT" ! -i lo -j DROP 2>/dev/null || true
  if [ "$wipe" = --wipe ]; then
    grep " $DIR/" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$DIR"
    ip link del "$BRIDGE" 2>/dev/null || true
    log "wiped $DIR and the bridge $BRIDGE"
  fi
  log "down"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy relay-amqp relay-postgres keda-operator keda-adapter; do
    if alive "$name"; then echo "$name running (pid $(cat "$PIDS/$name"))"; else echo "$name stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down "${2:-}" ;;
  import) shift; binaries; import_images "$@" ;;
  env)
    binaries >/dev/null 2>&1 || die "binaries missing: run up first"
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    echo "export ASYA_CLUSTER_GATEWAY=$GATEWAY"
    echo "export ASYA_CLUSTER_KUBECTL=$K8S/kubectl"
    echo "export ASYA_CLUSTER_HELM=$ENVTEST/helm"
    ;;
  status) status ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
