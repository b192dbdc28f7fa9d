#!/usr/bin/env bash
# The suites that drive real Python clients against devnets of the debug
# weft binary:
#   python/tests  weft's own Python client (python/): jobs, logs, metrics,
#                 pipelines, runs, the model registry, lineage, artifacts
#   tests/s3      the S3 gateway from boto3, awscli, dvc (its own env) and
#                 MLflow
# Builds weft and the example programs, makes both Python environments
# (scripts/python-env.sh), and runs pytest; each suite starts its own devnet
# in a fresh temporary folder and stops it, and the trap below stops any a
# killed run left behind. Arguments go to pytest (e.g. -k multipart -x).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "== test-python: building weft and the example programs" >&2
cargo build -q -p weft-node --bin weft
export WEFT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/weft"
WEFT_EXAMPLES=$(scripts/build-examples.sh | tail -n 1)
export WEFT_EXAMPLES

echo "== test-python: python environments" >&2
env=$(scripts/python-env.sh | tail -n 1)
WEFT_PYENV_DVC=$(scripts/python-env.sh dvc | tail -n 1)
export WEFT_PYENV_DVC
# the client under test is this checkout's, whichever checkout made the env
if ! "$env/bin/python" -c 'import sys, weft; sys.exit(0 if weft.__file__.startswith(sys.argv[1]) else 1)' \
  "$root/python/" 2>/dev/null; then
  "$env/bin/pip" install -q --disable-pip-version-check -e "$root/python" >&2
fi

# every devnet of the run lives under one folder, stopped and removed at exit
scratch=$(mktemp -d "${TMPDIR:-/tmp}/weft-test-python.XXXXXX")
cleanup() {
  local state
  for state in "$scratch"/*/devnet.json; do
    [ -e "$state" ] || continue
    "$WEFT_BIN" devnet down --dir "$(dirname "$state")" >/dev/null 2>&1 || true
  done
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
export TMPDIR=$scratch

echo "== test-python: pytest python/tests tests/s3" >&2
"$env/bin/python" -m pytest -q -rs -p no:cacheprovider --rootdir "$root" python/tests tests/s3 "$@"
