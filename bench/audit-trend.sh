#!/usr/bin/env bash
# One audited server, several read loads in a row (reads by id at concurrency 16): does the
# rate fall as the log grows? Prints the sizes of the audit journal, the database and its WAL
# after each run. Needs a release build. Usage: [RUNS=5] [SECS=6] bench/audit-trend.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/carevault; LOAD=target/release/carevault-load
work=$(mktemp -d)
"$BIN" init --data-dir "$work/data" > /dev/null
CAREVAULT_OPERATOR_LISTEN=off CAREVAULT_AUDIT_HEAD_SECS=3600 "$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
base=$(sed -n 's/.* on //p' "$work/out")
id=$(curl -s --cacert "$work/data/tls-cert.pem" -H "Authorization: Bearer $(cat "$work/data/admin-token")" -H "content-type: application/fhir+json" --data '{"resourceType":"Patient","active":true}' "$base/Patient" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "Patient/$id" > "$work/paths"
for i in $(seq 1 ${RUNS:-5}); do
  "$LOAD" --base "$base" --cacert "$work/data/tls-cert.pem" --seconds ${SECS:-6} --concurrency 16 --token-file "$work/data/admin-token" query --paths-file "$work/paths"
  ls -la "$work/data" | grep -E "journal|wal|db$" | awk '{print $5, $9}' | tr '\n' ' '; echo
done
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$work"
