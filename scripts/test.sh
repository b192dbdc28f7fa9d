#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (Debian packages, the wasm target), builds the example programs, runs every
# test of the workspace, the suites that drive real clients against a devnet,
# then a bounded run of every fuzz target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -x scripts/install-deps.sh ]; then
  scripts/install-deps.sh
fi
if [ -x scripts/build-examples.sh ]; then
  scripts/build-examples.sh
fi
# the example programs' own tests (the split's determinism, the model's scores)
cargo test --locked --manifest-path examples/wasm/Cargo.toml
cargo test --locked --manifest-path examples/services/Cargo.toml
cargo test --workspace --locked "$@"
# the real clients against a devnet: the Python client and S3 tools, the API
# document (schemathesis, promtool), the packaging (manifests, install script)
for suite in scripts/test-python.sh scripts/test-api.sh scripts/test-deploy.sh; do
  if [ -x "$suite" ]; then
    "$suite"
  fi
done
# every decoder of peer bytes, fuzzed for a bounded time (fuzz/ is its own workspace)
scripts/fuzz.sh 20
