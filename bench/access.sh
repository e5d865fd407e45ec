#!/usr/bin/env bash
# What authentication and the access decision cost: reads by id at concurrency 16 of the
# same Patients, once with the bootstrap token (no decision: the system) and once with a
# physician's signed access token (signature, account, relationships, consents, and the
# compartment check in the query), in one run, alternating, on SQLite then PostgreSQL.
# Usage: bench/access.sh [sqlite|postgres|both] [seconds per load run] [rounds]
# Needs a release build: cargo build --release -p carevault -p carevault-load
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}
SECS=${2:-10}
ROUNDS=${3:-3}
BIN=target/release/carevault
LOAD=target/release/carevault-load
PG_BASE=${CAREVAULT_BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}
PATIENTS=200
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -p carevault -p carevault-load

one() {
    local name=$1 db=$2
    local work
    work=$(mktemp -d)
    echo "== $name"
    if [ -n "$db" ]; then "$BIN" init --data-dir "$work/data" --database-url "$db" > /dev/null
    else "$BIN" init --data-dir "$work/data" > /dev/null; fi
    CAREVAULT_OPERATOR_LISTEN=off "$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
    local pid=$!
    for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
    local base
    base=$(sed -n 's/.* on //p' "$work/out")
    # One practitioner with an open encounter for each of the patients read.
    python3 - "$PATIENTS" > "$work/bundle.json" <<'PY'
import json, sys
n = int(sys.argv[1])
entries = [{"fullUrl": "urn:uuid:dr", "resource": {"resourceType": "Practitioner"},
            "request": {"method": "POST", "url": "Practitioner"}}]
for i in range(n):
    entries.append({"fullUrl": f"urn:uuid:p{i}", "resource": {"resourceType": "Patient", "active": True,
                    "name": [{"family": f"Bench{i}"}]}, "request": {"method": "POST", "url": "Patient"}})
    entries.append({"resource": {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
                    "subject": {"reference": f"urn:uuid:p{i}"},
                    "participant": [{"individual": {"reference": "urn:uuid:dr"}}],
                    "period": {"start": "2026-01-01T00:00:00Z"}},
                    "request": {"method": "POST", "url": "Encounter"}})
print(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
PY
    curl -s --cacert "$work/data/tls-cert.pem" -H "Authorization: Bearer $(cat "$work/data/admin-token")" \
        -H "content-type: application/fhir+json" --data-binary @"$work/bundle.json" "$base" > "$work/response.json"
    python3 - "$work/response.json" "$work/paths" "$work/dr" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
locs = [e["response"]["location"].split("/_history")[0] for e in r["entry"]]
open(sys.argv[3], "w").write(locs[0] + "\n")
open(sys.argv[2], "w").write("\n".join(l for l in locs if l.startswith("Patient/")) + "\n")
PY
    printf 'a benchmark password\n' > "$work/pw"
    "$BIN" user add --data-dir "$work/data" --username bench --role physician \
        --practitioner "$(cat "$work/dr")" --password-file "$work/pw" > /dev/null
    "$BIN" token --data-dir "$work/data" --user bench --scope "user/*.rs" --ttl 2h > "$work/user-token"
    local args=(--base "$base" --cacert "$work/data/tls-cert.pem" --seconds "$SECS" --concurrency 16)
    if [ -n "${PROFILE:-}" ]; then
        "$LOAD" "${args[@]}" --token-file "$work/user-token" query --paths-file "$work/paths" &
        sleep 2; perf record -F 999 -g -p "$pid" -o "$PROFILE" -- sleep 4 > /dev/null 2>&1 || true; wait
    fi
    for round in $(seq 1 "$ROUNDS"); do
        echo "round $round"
        printf 'bootstrap token: '; "$LOAD" "${args[@]}" --token-file "$work/data/admin-token" query --paths-file "$work/paths"
        printf 'physician token: '; "$LOAD" "${args[@]}" --token-file "$work/user-token" query --paths-file "$work/paths"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
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
