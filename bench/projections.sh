#!/usr/bin/env bash
# Issue 5's benchmarks, from a second process (bench/src/bin/queries) against the release
# binary, printing markdown for docs/benchmarks.md:
#   inbox   GET /api/v1/tasks over TASKS tasks, open loop at RATE req/s (query-api role)
#   export  the audit export of AUDIT_ENTRIES entries: GET /api/v1/audit/export (a fresh
#           query-api process) and `workledger audit export`, rows/s and peak RSS
#   lag     live projector lag while bench/src/bin/http_load.rs `comment` runs on `serve`
# Usage: bash bench/projections.sh [inbox] [export] [lag]   (all three by default)
# Needs the local Postgres; takes about half an hour on 2 shared cores at the default sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

tasks=${TASKS:-1000000}
audit_entries=${AUDIT_ENTRIES:-10000000}
rate=${RATE:-200}
seconds=${SECONDS_PER_RUN:-30}
parts=("${@:-inbox export lag}")
parts=" ${parts[*]} "
bin="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --locked -p workledger -p workledger-bench \
  --bin workledger --bin queries --bin http_load

export WORKLEDGER_ADMIN_EMAIL=admin@example.com
export WORKLEDGER_ADMIN_PASSWORD='benchmark admin password'
export WORKLEDGER_LOG=warn
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
# start ROLE PORT: runs `workledger ROLE` on PORT until it is ready; its pid in $started
start() {
  WORKLEDGER_LISTEN="127.0.0.1:$2" "$bin"/workledger "$1" 2>>"/tmp/workledger-bench-$1.log" &
  started=$!
  pids+=("$started")
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$2/readyz" >/dev/null && return 0
    sleep 0.2
  done
  echo "workledger $1 did not become ready (see /tmp/workledger-bench-$1.log)" >&2
  exit 1
}
fresh_database() {
  psql -h 127.0.0.1 -U postgres -qc "drop database if exists $1 with (force)"
  psql -h 127.0.0.1 -U postgres -qc "create database $1"
  # both sides talk to the local Postgres the same way (no TLS on loopback)
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$1?sslmode=disable"
  "$bin"/workledger migrate >/dev/null
}
queries() { "$bin"/queries --api "http://127.0.0.1:$api_port" "$@"; }

api_port=18091
query_port=18092
if [[ $parts == *" inbox "* || $parts == *" export "* ]]; then
  fresh_database workledger_bench_queries
  start command-api "$api_port"
fi

if [[ $parts == *" inbox "* ]]; then
  queries seed-tasks --tasks "$tasks"
  # the tasks read model, as a rebuild builds it (no orchestrator reacting to the bulk events)
  "$bin"/workledger replay --projection tasks >&2
  # the rebuild analyzed the table before swapping it in; vacuum sets its visibility map too
  # (index-only scans), as autovacuum would soon after
  psql -h 127.0.0.1 -U postgres -d workledger_bench_queries -qc "vacuum analyze tasks"
  start query-api "$query_port"
  queries inbox --query "http://127.0.0.1:$query_port" --rate "$rate" --seconds "$seconds"
  echo
  kill "$started"; wait "$started" 2>/dev/null || true
fi

if [[ $parts == *" export "* ]]; then
  if [[ $parts != *" inbox "* ]]; then queries seed-tasks --tasks 0 --tenants 1; fi
  queries seed-audit --tenant default --entries "$audit_entries"
  psql -h 127.0.0.1 -U postgres -d workledger_bench_queries -qc "vacuum analyze audit_entries"
  queries export-header --entries "$audit_entries"
  # a fresh query API process: its peak RSS is the export's
  start query-api "$query_port"
  queries export-http --query "http://127.0.0.1:$query_port" --pid "$started"
  queries export-cli --bin "$bin/workledger" --output "${EXPORT_FILE:-/tmp/workledger-bench-audit.jsonl}"
  echo
fi
stop_all

if [[ $parts == *" lag "* ]]; then
  serve_port=18093
  fresh_database workledger_bench_lag
  start serve "$serve_port"
  load=("$bin"/http_load --base "http://127.0.0.1:$serve_port" --password "$WORKLEDGER_ADMIN_PASSWORD")
  # closed loop then open loop at half, $seconds each; the probe starts once the load's
  # tasks exist and stops before it ends
  "${load[@]}" comment --connections 16 --seconds "$seconds" &
  load_pid=$!
  sleep 5
  "$bin"/queries --api "http://127.0.0.1:$serve_port" lag --seconds $((2 * seconds - 7))
  echo
  wait "$load_pid"
fi
