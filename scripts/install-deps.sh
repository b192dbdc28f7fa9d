#!/usr/bin/env bash
# Installs what the sandbox tests and examples need, once: runc and
# busybox-static (Debian packages), promtool (Debian package prometheus,
# for scripts/test-api.sh) and the wasm32-wasip1 and wasm32-wasip2 Rust
# targets.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

for t in wasm32-wasip1 wasm32-wasip2; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "install-deps: adding rust target $t"
    rustup target add "$t"
  fi
done
echo "install-deps: ok"
