#!/bin/sh
# The image's entrypoint: `codexgate up` configured from the environment, listening on all
# addresses, the admin port (/metrics, /healthz, /readyz) included. Extra arguments go to
# `codexgate up`. The CA comes from $CODEXGATE_CA_FILE when set (one CA for the whole fleet).
set -eu
exec codexgate up \
  --listen-host "${CODEXGATE_LISTEN_HOST:-0.0.0.0}" \
  --data-dir "${CODEXGATE_HOME:-/var/lib/codexgate}" \
  --policy "${CODEXGATE_POLICY:-/etc/codexgate/policy.yaml}" \
  --store "${CODEXGATE_STORE:-embedded}" \
  --proxy-port "${CODEXGATE_PROXY_PORT:-8080}" \
  --gateway-port "${CODEXGATE_GATEWAY_PORT:-4000}" \
  --metrics-port "${CODEXGATE_METRICS_PORT:-9090}" \
  --set "codexgate_metrics_host=${CODEXGATE_METRICS_HOST:-0.0.0.0}" \
  --set "codexgate_shutdown_delay=${CODEXGATE_SHUTDOWN_DELAY:-5}" \
  "$@"
