#!/usr/bin/env bash
# Interoperability check: starts carevault on a fresh data directory and drives it over
# HTTPS with Python fhirclient and fhirpy and npm fhir-kit-client (create, read, update,
# delete, searches paged through their next links, a _filter expression; fhir-kit-client also a
# transaction, POST _search, a search across types, JSON Patch and a compartment search; fhirclient also
# through a SMART authorization-code + PKCE sign-in). Installs the clients from the registries into target/interop (cached there).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CAREVAULT_BIN:-target/debug/carevault}
[ -x "$BIN" ] || cargo build --quiet --bin carevault
CACHE=target/interop
mkdir -p "$CACHE"
if [ ! -x "$CACHE/venv/bin/python" ]; then python3 -m venv "$CACHE/venv"; fi
"$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check -r interop/requirements.txt
( cd interop && npm ci --no-audit --no-fund --silent )

WORK=$(mktemp -d)
"$BIN" init --data-dir "$WORK/data" > /dev/null
CAREVAULT_OPERATOR_LISTEN=off "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 > "$WORK/out" 2> "$WORK/log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do grep -q listening "$WORK/out" && break; sleep 0.1; done
BASE=$(sed -n 's/.* on //p' "$WORK/out")
[ -n "$BASE" ] || { echo "interop: the server did not start"; cat "$WORK/log"; exit 1; }
TOKEN=$(cat "$WORK/data/admin-token")
CERT="$WORK/data/tls-cert.pem"

REQUESTS_CA_BUNDLE="$CERT" CAREVAULT_BIN="$BIN" CAREVAULT_DATA="$WORK/data" \
    "$CACHE/venv/bin/python" interop/python_clients.py "$BASE" "$TOKEN"
NODE_EXTRA_CA_CERTS="$CERT" node interop/node_client.mjs "$BASE" "$TOKEN"
echo "interop: all clients passed"
