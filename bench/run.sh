#!/usr/bin/env bash
# Benchmarks over loopback on this machine: import of the Synthea set, creates/s at
# concurrency 1 and 16, reads by id at concurrency 16; on SQLite, then on PostgreSQL.
# Usage: bench/run.sh [sqlite|postgres|both] [seconds per load run]
# Needs a release build: cargo build --release -p carevault -p carevault-load
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}
SECS=${2:-10}
BIN=target/release/carevault
LOAD=target/release/carevault-load
SYNTHEA=${SYNTHEA:-../shared/testdata/synthea}
PG_BASE=${CAREVAULT_BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -p carevault -p carevault-load

one() {
    local name=$1 db=$2
    local work
    work=$(mktemp -d)
    echo "== $name"
    if [ -n "$db" ]; then "$BIN" init --data-dir "$work/data" --database-url "$db" > /dev/null
    else "$BIN" init --data-dir "$work/data" > /dev/null; fi
    if [ -d "$SYNTHEA" ]; then "$BIN" import --data-dir "$work/data" "$SYNTHEA" | grep Imported; fi
    CAREVAULT_OPERATOR_LISTEN=off "$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
    local pid=$!
    for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
    local base
    base=$(sed -n 's/.* on //p' "$work/out")
    local args=(--base "$base" --token-file "$work/data/admin-token" --cacert "$work/data/tls-cert.pem" --seconds "$SECS")
    "$LOAD" "${args[@]}" --concurrency 1 creates
    "$LOAD" "${args[@]}" --concurrency 16 creates
    "$LOAD" "${args[@]}" --concurrency 16 reads --patients 1000
    if [ -d "$SYNTHEA" ]; then
        # Search latency at concurrency 1 over the imported Synthea set.
        local first mrn patient_id
        first=$(ls "$SYNTHEA"/*.json | head -1)
        mrn=$(python3 -c "import json,sys; b=json.load(open(sys.argv[1])); p=[e['resource'] for e in b['entry'] if e['resource']['resourceType']=='Patient'][0]; print([i['value'] for i in p['identifier'] if i.get('system')=='http://hospital.smarthealthit.org'][0])" "$first")
        patient_id=$(curl -s --cacert "$work/data/tls-cert.pem" -H "Authorization: Bearer $(cat "$work/data/admin-token")" \
            "$base/Patient?identifier=http://hospital.smarthealthit.org|$mrn" | python3 -c "import json,sys; print(json.load(sys.stdin)['entry'][0]['resource']['id'])")
        local q=(--concurrency 1)
        "$LOAD" "${args[@]}" "${q[@]}" query --path "Patient?name=ma"
        "$LOAD" "${args[@]}" "${q[@]}" query --path "Patient?identifier=http://hospital.smarthealthit.org|$mrn"
        "$LOAD" "${args[@]}" "${q[@]}" query --path "Observation?patient=Patient/$patient_id&code=8302-2"
        "$LOAD" "${args[@]}" "${q[@]}" query --path "Observation?code=8302-2&date=ge2015-01-01&_count=20"
        "$LOAD" "${args[@]}" "${q[@]}" query --path "Observation?code=8302-2&date=ge2015-01-01&_summary=count"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
    if [ -n "$db" ] && [ -z "${KEEP:-}" ]; then
        # The benchmark's own schema (KEEP=1 leaves it for a look afterwards).
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
