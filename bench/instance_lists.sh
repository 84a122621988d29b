#!/usr/bin/env bash
# A member's list of workflow instances, GET /api/v1/workflow-instances (first page and the
# next), over INSTANCES instances in one tenant (bench/sql/instance_lists.sql), for a member who
# takes part in half of them, one in a few dozen, and none; sequential requests through
# `workledger serve`, printing a markdown table for docs/benchmarks.md.
# Usage: bash bench/instance_lists.sh   (INSTANCES=500000 REQUESTS=100 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

instances=${INSTANCES:-500000}
requests=${REQUESTS:-100}
port=18094
bin="${CARGO_TARGET_DIR:-target}/release/workledger"
cargo build --release --locked -p workledger --bin workledger

db=workledger_bench_instances
psql -h 127.0.0.1 -U postgres -qc "drop database if exists $db with (force)"
psql -h 127.0.0.1 -U postgres -qc "create database $db"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
export WORKLEDGER_ADMIN_EMAIL=admin@example.com WORKLEDGER_ADMIN_PASSWORD='benchmark admin password'
export WORKLEDGER_LOG=warn WORKLEDGER_LISTEN="127.0.0.1:$port"
"$bin" serve 2>>/tmp/workledger-bench-instances.log &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
api="http://127.0.0.1:$port/api/v1"
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

login() {
  curl -fs "$api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\": \"$1\", \"password\": \"$2\"}" | jq -r .access_token
}
admin=$(login admin@example.com "$WORKLEDGER_ADMIN_PASSWORD")
# create NAME GROUP...: a member; its id
create() {
  local name=$1; shift
  local groups; groups=$(printf '%s\n' "$@" | jq -R . | jq -sc 'map(select(. != ""))')
  curl -fs "$api/users" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
    -d "{\"email\": \"$name@example.com\", \"display_name\": \"$name\", \"password\": \"a long password for $name\",
         \"roles\": [\"member\"], \"groups\": $groups}" | jq -r .id
}
busy=$(create busy clerks)
some=$(create some g7)
fresh=$(create fresh "")
psql -h 127.0.0.1 -U postgres -d "$db" -q -v ON_ERROR_STOP=1 -v instances="$instances" \
  -v busy="$busy" -v some="$some" -v fresh="$fresh" -f bench/sql/instance_lists.sql

# time NAME PATH: p50 and p99 of $requests sequential GETs as member NAME, and items per page
time_list() {
  local token; token=$(login "$1@example.com" "a long password for $1")
  local items; items=$(curl -fs "$api$2" -H "authorization: Bearer $token" | jq '.items | length')
  for _ in $(seq 1 "$requests"); do
    curl -fs -o /dev/null -w '%{time_total}\n' "$api$2" -H "authorization: Bearer $token"
  done | sort -n | awk -v items="$items" -v who="$1" -v path="$2" '
    { t[NR] = $1 * 1000 }
    END { printf "| %s | `%s` | %d | %.1f ms | %.1f ms |\n", who, path, items, t[int(NR * 0.5)], t[int(NR * 0.99)] }'
}
echo "## Instance lists: $instances instances in the tenant, $requests sequential requests each"
echo
echo "| member | request | items | p50 | p99 |"
echo "|---|---|---:|---:|---:|"
for who in busy some fresh; do
  time_list "$who" "/workflow-instances"
  time_list "$who" "/workflow-instances?status=running"
done
