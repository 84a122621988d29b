#!/usr/bin/env bash
# Issue 4's benchmark: load on a running `workledger serve` from a second process
# (bench/src/bin/http_load.rs), beside pgbench on the same database, in rounds: at each
# concurrency pgbench runs just before the closed loop it is compared with.
# Prints markdown for docs/benchmarks.md. Needs the local Postgres and pgbench.
# ROUNDS (default 3) rounds of each; extra arguments go to `http_load comment`.
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
export WORKLEDGER_LISTEN="127.0.0.1:$port"
export WORKLEDGER_ADMIN_EMAIL=admin@example.com
export WORKLEDGER_ADMIN_PASSWORD='benchmark admin password'
export WORKLEDGER_LOG=warn
# pgbench runs beside the server: its 64 clients, the server's pool (16), its kept
# connections (16) and its two LISTEN connections (appended events, ended sessions) fit in
# Postgres's default max_connections of 100
export WORKLEDGER_DB_MAX_CONNECTIONS=16
rounds=${ROUNDS:-3}

# The command API alone by default (no projectors or workers in the process), as DESIGN §1
# deploys it; ROLE=serve runs everything in one process, whose projectors and workers hold
# more connections: its pool is halved so that pgbench's 64 clients still fit.
role=${ROLE:-command-api}
if [ "$role" = serve ]; then export WORKLEDGER_DB_MAX_CONNECTIONS=8; fi
"$bin"/workledger "$role" 2>/tmp/workledger-bench-serve.log &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.2
done

load=("$bin"/http_load --base "http://127.0.0.1:$port" --password "$WORKLEDGER_ADMIN_PASSWORD")
wrk=(); command -v wrk >/dev/null && wrk=(--wrk)
# purchase orders, then the comment load
"${load[@]}" purchase-order --rounds "$rounds"
"${load[@]}" comment --rounds "$rounds" "${wrk[@]}" "$@"
