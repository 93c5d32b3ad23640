#!/bin/sh
# docker-compose.yml's first service: refuses to let the stack start with missing or
# development secrets, unless MOMENTS_DEV=1 says this is a local trial. Names the variables
# at fault, never their values.
if [ "${MOMENTS_DEV:-}" = "1" ]; then
  echo "preflight: MOMENTS_DEV=1: a local trial with development secrets; never expose it"
  exit 0
fi
missing=""
check() {  # name, value, development default
  if [ -z "$2" ] || [ "$2" = "$3" ]; then
    missing="$missing $1"
  fi
}
check POSTGRES_PASSWORD "${POSTGRES_PASSWORD:-}" "moments"
check MOMENTS_WEBHOOK_SECRET "${MOMENTS_WEBHOOK_SECRET:-}" "dev-only-webhook-secret"
check MOMENTS_API_KEYS "${MOMENTS_API_KEYS:-}" '["dev-key"]'
check MOMENTS_READ_API_KEYS "${MOMENTS_READ_API_KEYS:-}" '["dev-read-key"]'
check MOMENTS_DESK_KEYS "${MOMENTS_DESK_KEYS:-}" '["dev-agent=dev-desk-key"]'
check MOMENTS_ID_HASH_KEY "${MOMENTS_ID_HASH_KEY:-}" "dev-only-id-hash-key"
check GRAFANA_ADMIN_PASSWORD "${GRAFANA_ADMIN_PASSWORD:-}" "admin"
check GRAFANA_DB_PASSWORD "${GRAFANA_DB_PASSWORD:-}" "dev-only-grafana-reader"
if [ -n "$missing" ]; then
  echo "preflight: set real values for:$missing (in the environment or an --env-file)," \
    "or MOMENTS_DEV=1 for a local trial" >&2
  exit 1
fi
echo "preflight: secrets are set"
