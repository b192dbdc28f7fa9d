#!/usr/bin/env bash
# Measures weft-sandbox start-to-exit latency in-process: a trivial WASM
# command (first start with compilation, then the median of 1,000 cached
# starts; target <= 1 ms) and a trivial busybox container with runc (median
# of 20; target <= 150 ms; needs root and runc, see scripts/install-deps.sh).
# Builds in release. The last line is:
#   result: wasm_first_ms=X wasm_cached_p50_ms=X container_p50_ms=X
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet -p weft-sandbox --example bench
exec "$root/target/release/examples/bench"
