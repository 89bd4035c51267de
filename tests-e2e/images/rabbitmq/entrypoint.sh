#!/bin/sh
# Configure the broker from the environment testcontainers sets, then run it in the foreground.
set -eu
cat > "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.tcp.default = ${RABBITMQ_NODE_PORT:-5672}
loopback_users = none
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}
CONF
exec rabbitmq-server
