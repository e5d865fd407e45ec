#!/usr/bin/env bash
# The scale benchmark: N generated patients (Synthea-sized records, about 270 resources
# each, `carevault generate`) imported into a fresh store; then index bytes per resource and
# search latency at concurrency 1, each query taken in turn over 200 sampled patients.
# Usage: bench/scale.sh [sqlite|postgres] PATIENTS [seconds per query]
#        KEEP=DIR keeps the imported data directory; REUSE=DIR measures it again.
# Needs a release build: cargo build --release -p carevault -p carevault-load
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-sqlite}
N=${2:-1000}
SECS=${3:-10}
BIN=target/release/carevault
LOAD=target/release/carevault-load
GEN=${GEN_DIR:-${TMPDIR:-/tmp}/carevault-scale-$N}
PG_BASE=${CAREVAULT_BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -p carevault -p carevault-load

if [ ! -f "$GEN/0000-reference.json" ] || [ "$(ls "$GEN" | wc -l)" -ne $((N + 1)) ]; then
    rm -rf "$GEN"
    "$BIN" generate --out "$GEN" --patients "$N"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db=""
if [ -n "${REUSE:-}" ]; then
    # Measure an existing data directory again (REUSE=DIR), skipping init and import.
    ln -s "$(realpath "$REUSE")" "$work/data"
    db=$(sed -n 's/^database_url *= *"\(.*\)"/\1/p' "$work/data/carevault.toml")
    echo "== $WHICH, $N patients (reusing $REUSE)"
elif [ "$WHICH" = postgres ]; then
    schema="cv_scale_$(date +%s%N)"
    psql "$PG_BASE" -qc "CREATE SCHEMA $schema" > /dev/null
    db="$PG_BASE?options=-csearch_path%3D$schema"
    "$BIN" init --data-dir "$work/data" --database-url "$db" > /dev/null
else
    "$BIN" init --data-dir "$work/data" > /dev/null
fi
if [ -z "${REUSE:-}" ]; then
    echo "== $WHICH, $N patients"
    "$BIN" import --data-dir "$work/data" "$GEN" | grep -E "Imported|Refreshed"
fi

if [ "$WHICH" = postgres ]; then
    psql "$db" -qAt -c "SELECT 'index bytes per resource: ' || round(sum(pg_total_relation_size(c.oid))::numeric /
        (SELECT count(*) FROM resources), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r' AND (c.relname LIKE 'search_%' OR c.relname = 'identifier_index')"
    psql "$db" -qAt -c "SELECT 'database bytes per resource: ' || round(sum(pg_total_relation_size(c.oid))::numeric /
        (SELECT count(*) FROM resources), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r'"
else
    sqlite3 "$work/data/carevault.db" "SELECT 'index bytes per resource: ' || ((SELECT sum(pgsize) FROM dbstat
        WHERE name LIKE 'search_%' OR name LIKE 'identifier_index%') / (SELECT count(*) FROM resources));
        SELECT 'database bytes per resource: ' || ((SELECT sum(pgsize) FROM dbstat) / (SELECT count(*) FROM resources));"
fi

CAREVAULT_OPERATOR_LISTEN=off "$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
pid=$!
cleanup() {
    kill $pid 2>/dev/null || true
    if [ -n "${KEEP:-}" ] && [ -z "${REUSE:-}" ]; then
        # KEEP=DIR keeps the data directory (and its PostgreSQL schema) for REUSE=DIR.
        rm -rf "$KEEP"; mv "$work/data" "$KEEP"; echo "kept the data directory in $KEEP"
    elif [ "$WHICH" = postgres ] && [ -z "${REUSE:-}" ]; then
        psql "$PG_BASE" -qc "SET client_min_messages TO warning; DROP SCHEMA $schema CASCADE" > /dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 300); do grep -q listening "$work/out" && break; sleep 0.1; done
base=$(sed -n 's/.* on //p' "$work/out")

# 200 sampled patients: their name prefix, MRN and server id.
python3 - "$GEN" "$base" "$work/data" "$work" <<'PY'
import json, os, random, ssl, sys, urllib.request
gen, base, data, out = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=os.path.join(data, "tls-cert.pem"))
token = open(os.path.join(data, "admin-token")).read().strip()
files = sorted(f for f in os.listdir(gen) if f.startswith("patient-"))
random.seed(7)
sample = random.sample(files, min(200, len(files)))
q = {k: [] for k in ["name", "identifier", "obs", "code_date", "code_count", "revinclude", "everything"]}
for i, f in enumerate(sample):
    bundle = json.load(open(os.path.join(gen, f)))
    p = bundle["entry"][0]["resource"]
    ident = p["identifier"][0]
    req = urllib.request.Request(f"{base}/Patient?identifier={ident['system']}|{ident['value']}",
                                 headers={"Authorization": f"Bearer {token}"})
    pid = json.load(urllib.request.urlopen(req, context=ctx))["entry"][0]["resource"]["id"]
    year = 2005 + i % 20
    q["name"].append(f"Patient?name={p['name'][0]['family'][:3].lower()}")
    q["identifier"].append(f"Patient?identifier={ident['system']}|{ident['value']}")
    q["obs"].append(f"Observation?patient=Patient/{pid}&code=8867-4")
    q["code_date"].append(f"Observation?code=8867-4&date=ge{year}-01-01&_count=20")
    q["code_count"].append(f"Observation?code=8867-4&date=ge{year}-01-01&_summary=count")
    q["revinclude"].append(f"Encounter?patient=Patient/{pid}&_revinclude=Observation:encounter")
    q["everything"].append(f"Patient/{pid}/$everything")
for k, v in q.items():
    open(os.path.join(out, k + ".txt"), "w").write("\n".join(v) + "\n")
PY

args=(--base "$base" --token-file "$work/data/admin-token" --cacert "$work/data/tls-cert.pem" --seconds "$SECS" --concurrency 1)
for q in name identifier obs code_date code_count revinclude everything; do
    printf '%-12s %s\n' "$q" "$(head -1 "$work/$q.txt" | sed 's/Patient\/[0-9a-f-]*/Patient\/{id}/; s/|MRN[0-9]*/|{mrn}/')"
    "$LOAD" "${args[@]}" query --paths-file "$work/$q.txt"
done
