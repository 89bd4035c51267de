#!/usr/bin/env bash
# Install (from Debian packages) and start RabbitMQ and PostgreSQL on 127.0.0.1, idempotently,
# then print the two test URLs as `export` lines:   eval "$(bash .ci/services.sh)"
# Safe to run again: what is installed is not reinstalled, what runs is not restarted.
set -euo pipefail
log() { printf 'services: %s\n' "$*" >&2; }

AMQP_USER=asya AMQP_PASS=asya-test PG_USER=asya PG_PASS=asya-test PG_DB=asya_test

need=()
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi

# --- RabbitMQ ---------------------------------------------------------------------------------
mkdir -p /etc/rabbitmq
cat > /etc/rabbitmq/rabbitmq-env.conf <<'CONF'
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
CONF
cat > /etc/rabbitmq/rabbitmq.conf <<'CONF'
listeners.tcp.default = 127.0.0.1:5672
distribution.listener.interface = 127.0.0.1
loopback_users = none
CONF
export ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost
if ! timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting rabbitmq-server"
  # Started as the rabbitmq user so the Erlang cookie and data stay where the package put them.
  su rabbitmq -s /bin/sh -c "ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost rabbitmq-server -detached" >&2 \
    || rabbitmq-server -detached >&2
  for _ in $(seq 1 60); do
    timeout 10 rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break
    sleep 1
  done
fi
timeout 120 rabbitmqctl -q await_startup >&2
if ! rabbitmqctl -q list_users 2>/dev/null | grep -q "^$AMQP_USER\b"; then
  rabbitmqctl -q add_user "$AMQP_USER" "$AMQP_PASS" >&2
  rabbitmqctl -q set_user_tags "$AMQP_USER" administrator >&2
fi
rabbitmqctl -q set_permissions -p / "$AMQP_USER" ".*" ".*" ".*" >&2

# --- PostgreSQL -------------------------------------------------------------------------------
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$"; then
  pg_createcluster "$ver" main >&2
fi
conf="/etc/postgresql/$ver/main/postgresql.conf"
grep -q "^listen_addresses = '127.0.0.1'" "$conf" || echo "listen_addresses = '127.0.0.1'" >> "$conf"
grep -q "^max_connections = 300" "$conf" || echo "max_connections = 300" >> "$conf"
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting postgresql $ver"
  pg_ctlcluster "$ver" main start >&2
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
psql_su() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
if [ "$(psql_su "select 1 from pg_roles where rolname='$PG_USER'")" != "1" ]; then
  psql_su "create role $PG_USER login createdb password '$PG_PASS'" >&2
fi
if [ "$(psql_su "select 1 from pg_database where datname='$PG_DB'")" != "1" ]; then
  psql_su "create database $PG_DB owner $PG_USER" >&2
fi

echo "export ASYA_TEST_AMQP_URL=amqp://$AMQP_USER:$AMQP_PASS@127.0.0.1:5672/"
echo "export ASYA_TEST_DATABASE_URL=postgresql://$PG_USER:$PG_PASS@127.0.0.1:5432/$PG_DB"
