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

# things for the operations to find: a file and a folder (tagged), a run,
# a model with an alias; schemathesis draws path parameters from these half
# of the time (dictionaries below) and makes up the rest
echo "== test-api: seeding $api" >&2
call() { # METHOD PATH [JSON]
  local args=(-fsS -X "$1" "$api$2" -H "Authorization: Bearer $WEFT_API_TOKEN")
  [ $# -lt 3 ] || args+=(-H 'content-type: application/json' --data-binary "$3")
  curl "${args[@]}"
}
field() { "$env/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
file_id=$(curl -fsS -X POST "$api/api/v1/artifacts?tag=api-test/file:v1" \
  -H "Authorization: Bearer $WEFT_API_TOKEN" -H 'content-type: application/octet-stream' \
  --data-binary 'a file the API tests read' | field id)
mkdir -p "$scratch/tree/sub" && echo one >"$scratch/tree/a.txt" && echo two >"$scratch/tree/sub/b.txt"
tree_id=$(call POST /api/v1/artifacts/import "{\"path\": \"$scratch/tree\", \"tag\": \"api-test/tree:v1\"}" | field id)
run_id=$(call POST /api/v1/runs '{"name": "api-test", "experiment": "api-test", "params": [{"key": "lr", "value": "0.1"}]}' | field id)
call POST "/api/v1/runs/$run_id/log-batch" '{"metrics": [{"key": "acc", "value": 0.9, "step": 1}]}' >/dev/null
call POST /api/v1/models '{"name": "api-test-model", "ref": "api-test/file:v1"}' >/dev/null
call PUT /api/v1/model-aliases/api-test-model@champion '{"version": 1}' >/dev/null
config="$scratch/schemathesis.toml"
{
  cat scripts/schemathesis.toml
  cat <<TOML

[dictionaries.references]
values = ["api-test/file:v1", "api-test/tree:v1", "$file_id", "$tree_id"]
[dictionaries.names]
values = ["api-test/file:v1", "api-test/tree:v1", "api-test-model"]
[dictionaries.ids]
values = ["$run_id"]
[dictionaries.targets]
values = ["api-test-model@champion"]
[dictionaries.paths]
values = ["$scratch/tree", "$scratch/tree/a.txt", "$scratch/nowhere"]

[parameters]
"path.reference" = { dictionary = "references", probability = 0.5 }
"path.name" = { dictionary = "names", probability = 0.5 }
"path.id" = { dictionary = "ids", probability = 0.5 }
"path.target" = { dictionary = "targets", probability = 0.5 }
# imports read the daemon's host: only from here, never all of /
"body.path" = { dictionary = "paths", probability = 1.0 }

# an export writes where its body says: never of something that exists
[[operations]]
include-path = "/api/v1/artifacts/{reference}/export"
parameters = { "path.reference" = "no-such-artifact" }
TOML
} >"$config"

echo "== test-api: schemathesis against $api/api/openapi.json" >&2
ops=$("$env/bin/python" -c '
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(sys.argv[1]))
print(sum(1 for item in doc["paths"].values() for m in item if m in ("get", "put", "post", "delete", "head", "patch")))' "$api/api/openapi.json")
status=0
# run in the scratch folder: schemathesis keeps a cache where it runs
(cd "$scratch" && "$env/bin/schemathesis" --config-file "$config" run "$api/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --continue-on-failure \
  --report junit --report-dir "$scratch/report" \
  "$@") | tee "$scratch/schemathesis.out" || status=$?
tested=$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "$scratch/schemathesis.out" | tail -n 1)
cases=$(grep -A1 '^Test cases:' "$scratch/schemathesis.out" | sed -n 's/^ *\([0-9]*\) generated.*/\1/p' | tail -n 1)
echo "test-api: schemathesis: $ops operations in the document, ${tested:-?} tested, ${cases:-?} test cases, exit $status" >&2

echo "== test-api: promtool check metrics on $api/metrics" >&2
curl -fsS "$api/metrics" -H "Authorization: Bearer $WEFT_API_TOKEN" >"$scratch/metrics.txt"
promtool check metrics <"$scratch/metrics.txt"
echo "test-api: promtool: $(grep -vc '^#' "$scratch/metrics.txt") samples ok" >&2
exit "$status"
