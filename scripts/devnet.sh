#!/usr/bin/env bash
# A local devnet for people who prefer a script: builds weft, then passes its
# arguments to `weft devnet` (up, down, status).
#
#   scripts/devnet.sh up --nodes 4 [--dir DIR] [--gpu-node K]
#   scripts/devnet.sh status
#   scripts/devnet.sh down
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build -q --manifest-path "$root/Cargo.toml" -p weft-node --bin weft
exec "$root/target/debug/weft" devnet "${@:-status}"
