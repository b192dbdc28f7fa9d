#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (Debian packages, the wasm target), builds the example programs, runs every
# test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -x scripts/install-deps.sh ]; then
  scripts/install-deps.sh
fi
if [ -x scripts/build-examples.sh ]; then
  scripts/build-examples.sh
fi
cargo test --workspace --locked "$@"
