#!/usr/bin/env bash
# What the audit log costs: reads by id at concurrency 16 (every one appends an entry that is
# durable before the response), against a benchmark-only build whose append is a no-op, on
# the same data, alternating, in one run; SQLite then PostgreSQL. The audited rate is also the
# audit append rate (one entry per request).
# With FLOOR=1 a third build joins the rounds: its append is only one durable file write per
# group (--features bench-audit-fsync-floor), the floor any durable audit log pays;
# CAREVAULT_FLOOR_MODE=inline|handoff|write|sync|leader (sync is the default) takes that floor
# apart (leader: no writer thread, a request leads each group's sync on its own worker).
# Usage: [FLOOR=1] [REBUILD=1] [CONC=16] bench/audit.sh [sqlite|postgres|both] [seconds per load run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}
SECS=${2:-8}
ROUNDS=${3:-3}
BIN=target/release/carevault
NOAUDIT=target/release/carevault-noaudit
FLOORBIN=target/release/carevault-fsync-floor
LOAD=target/release/carevault-load
PG_BASE=${CAREVAULT_BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}
PATIENTS=200
CONC=${CONC:-16}
if [ ! -x "$NOAUDIT" ] || [ -n "${REBUILD:-}" ]; then
    cargo build --release -p carevault --features bench-audit-noop
    cp "$BIN" "$NOAUDIT"
fi
VARIANTS="audited no-op"
if [ -n "${FLOOR:-}" ]; then
    VARIANTS="audited fsync-floor no-op"
    if [ ! -x "$FLOORBIN" ] || [ -n "${REBUILD:-}" ]; then
        cargo build --release -p carevault --features bench-audit-fsync-floor
        cp "$BIN" "$FLOORBIN"
    fi
fi
cargo build --release -p carevault -p carevault-load

serve() { # binary data-dir out log
    CAREVAULT_OPERATOR_LISTEN=off CAREVAULT_AUDIT_HEAD_SECS=3600 "$1" serve --data-dir "$2" --listen 127.0.0.1:0 > "$3" 2> "$4" &
    echo $!
}

one() {
    local name=$1 db=$2
    local work
    work=$(mktemp -d)
    echo "== $name"
    if [ -n "$db" ]; then "$BIN" init --data-dir "$work/data" --database-url "$db" > /dev/null
    else "$BIN" init --data-dir "$work/data" > /dev/null; fi
    local pid
    pid=$(serve "$BIN" "$work/data" "$work/out" "$work/log")
    for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
    local base
    base=$(sed -n 's/.* on //p' "$work/out")
    python3 - "$PATIENTS" > "$work/bundle.json" <<'PY'
import json, sys
n = int(sys.argv[1])
entries = [{"resource": {"resourceType": "Patient", "active": True, "name": [{"family": f"Bench{i}"}]},
            "request": {"method": "POST", "url": "Patient"}} for i in range(n)]
print(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
PY
    curl -s --cacert "$work/data/tls-cert.pem" -H "Authorization: Bearer $(cat "$work/data/admin-token")" \
        -H "content-type: application/fhir+json" --data-binary @"$work/bundle.json" "$base" > "$work/response.json"
    python3 - "$work/response.json" "$work/paths" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write("\n".join(e["response"]["location"].split("/_history")[0] for e in r["entry"]) + "\n")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
    for round in $(seq 1 "$ROUNDS"); do
        echo "round $round"
        for variant in $VARIANTS; do
            local bin=$BIN
            [ "$variant" = no-op ] && bin=$NOAUDIT
            [ "$variant" = fsync-floor ] && bin=$FLOORBIN
            : > "$work/out"
            pid=$(serve "$bin" "$work/data" "$work/out" "$work/log")
            for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
            base=$(sed -n 's/.* on //p' "$work/out")
            printf '%s: ' "$variant"
            "$LOAD" --base "$base" --cacert "$work/data/tls-cert.pem" --seconds "$SECS" --concurrency "$CONC" \
                --token-file "$work/data/admin-token" query --paths-file "$work/paths"
            kill "$pid"; wait "$pid" 2>/dev/null || true
        done
    done
    "$BIN" audit verify --data-dir "$work/data" | tail -1
    rm -rf "$work"
    if [ -n "$db" ]; then
        local schema=${db##*%3D}
        psql "$PG_BASE" -qc "SET client_min_messages TO warning; DROP SCHEMA $schema CASCADE" > /dev/null
    fi
}

fresh_schema() {
    local schema="cv_bench_$(date +%s%N)"
    psql "$PG_BASE" -qc "CREATE SCHEMA $schema" > /dev/null
    echo "$PG_BASE?options=-csearch_path%3D$schema"
}

case "$WHICH" in
    sqlite) one sqlite "" ;;
    postgres) one postgres "$(fresh_schema)" ;;
    both) one sqlite ""; one postgres "$(fresh_schema)" ;;
esac
