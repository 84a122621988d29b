#!/usr/bin/env bash
# Issue 4's benchmark: load on a running `workledger serve` from a second process
# (bench/src/bin/http_load.rs), beside pgbench on the same database, in one run.
# Prints markdown for docs/benchmarks.md. Needs the local Postgres and pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."

db=workledger_bench_api
bin="${CARGO_TARGET_DIR:-target}/release"
port=${PORT:-18090}
cargo build --release --locked -p workledger -p workledger-bench --bin workledger --bin http_load

psql -h 127.0.0.1 -U postgres -qc "drop database if exists $db with (force)"
psql -h 127.0.0.1 -U postgres -qc "create database $db"
# both sides talk to the local Postgres the same way (no TLS on loopback)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
"$bin"/workledger migrate
# pgbench first: at 64 clients it needs connections the server's pool would hold
baseline=$("$bin"/http_load --password unused pgbench --database-url "$DATABASE_URL")
export WORKLEDGER_LISTEN="127.0.0.1:$port"
export WORKLEDGER_ADMIN_EMAIL=admin@example.com
export WORKLEDGER_ADMIN_PASSWORD='benchmark admin password'
export WORKLEDGER_LOG=warn

# ROLE=command-api measures the command API alone (no projectors or workers in the process)
"$bin"/workledger "${ROLE:-serve}" 2>/tmp/workledger-bench-serve.log &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.2
done

load=("$bin"/http_load --base "http://127.0.0.1:$port" --password "$WORKLEDGER_ADMIN_PASSWORD")
wrk=(); command -v wrk >/dev/null && wrk=(--wrk)
"${load[@]}" comment --pgbench "$baseline" "${wrk[@]}" "$@"
"${load[@]}" purchase-order
