#!/usr/bin/env bash
# The API against its own description: builds weft, starts a two-node devnet
# in a temporary folder, runs schemathesis (target/pyenv, pinned in
# scripts/requirements-test.txt) against node 1's /api/openapi.json with the
# token, every operation with a bounded number of examples
# (scripts/schemathesis.toml), and checks that no answer is a server error
# and that every status, content type and body is the documented one; then
# `promtool check metrics` on /metrics. Arguments go to schemathesis (e.g.
# --include-path-regex jobs).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v promtool >/dev/null 2>&1; then
  echo "test-api: promtool is missing: run scripts/install-deps.sh (Debian package prometheus)" >&2
  exit 1
fi

echo "== test-api: building weft" >&2
cargo build -q -p weft-node --bin weft
weft="${CARGO_TARGET_DIR:-$root/target}/debug/weft"

echo "== test-api: python environment" >&2
env=$(scripts/python-env.sh | tail -n 1)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/weft-test-api.XXXXXX")
cleanup() {
  [ -e "$scratch/net/devnet.json" ] && "$weft" devnet down --dir "$scratch/net" >/dev/null 2>&1
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

echo "== test-api: devnet" >&2
"$weft" devnet up --dir "$scratch/net" --nodes 2 >"$scratch/devnet.out" 2>&1 || {
  cat "$scratch/devnet.out" >&2
  exit 1
}
read -r api home < <("$env/bin/python" -c '
import json, sys
n = json.load(open(sys.argv[1]))["nodes"][0]
api = n["api"] if n["api"].startswith("http") else "http://" + n["api"]
print(api.rstrip("/"), n["home"])' "$scratch/net/devnet.json")
WEFT_API_TOKEN=$(cat "$home/api-token")
export WEFT_API_TOKEN

echo "== test-api: schemathesis against $api/api/openapi.json" >&2
ops=$("$env/bin/python" -c '
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(sys.argv[1]))
print(sum(1 for item in doc["paths"].values() for m in item if m in ("get", "put", "post", "delete", "head", "patch")))' "$api/api/openapi.json")
status=0
"$env/bin/schemathesis" --config-file scripts/schemathesis.toml run "$api/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --continue-on-failure \
  --report junit --report-dir "$scratch/report" \
  "$@" | tee "$scratch/schemathesis.out" || status=$?
cases=$("$env/bin/python" -c '
import sys, xml.etree.ElementTree as ET, glob
n = 0
for f in glob.glob(sys.argv[1] + "/*.xml"):
    for s in ET.parse(f).getroot().iter("testsuite"):
        n += int(s.get("tests", 0))
print(n)' "$scratch/report" 2>/dev/null || echo "?")
echo "test-api: schemathesis: $ops operations in the document, $cases test cases, exit $status" >&2

echo "== test-api: promtool check metrics on $api/metrics" >&2
curl -fsS "$api/metrics" -H "Authorization: Bearer $WEFT_API_TOKEN" >"$scratch/metrics.txt"
promtool check metrics <"$scratch/metrics.txt"
echo "test-api: promtool: $(grep -vc '^#' "$scratch/metrics.txt") samples ok" >&2
exit "$status"
