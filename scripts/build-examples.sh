#!/usr/bin/env bash
# Builds the example WASM programs (examples/wasm) in release and copies them
# to examples/wasm/out/: NAME.wasm for wasm32-wasip1 modules, and
# hello.component.wasm, a WASI preview 2 component built for wasm32-wasip2.
# The WASI HTTP functions of examples/services (a workspace of its own, built
# for wasm32-wasip2) land in the same folder as NAME.component.wasm
# (iris-serve.component.wasm, httptest.component.wasm).
# Safe to run concurrently (a lock serialises builds) and cheap when nothing
# changed. Prints the output folder on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ws=$root/examples/wasm
out=$ws/out
target=$ws/target
mkdir -p "$target" "$out"

exec 9>"$target/.build-examples.lock"
flock 9

for t in wasm32-wasip1 wasm32-wasip2; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "build-examples: adding rust target $t" >&2
    rustup target add "$t" >&2
  fi
done

# The outer cargo (when run from a test) must not steer this build.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER

cargo build --quiet --release --locked --manifest-path "$ws/Cargo.toml" \
  --target-dir "$target" --target wasm32-wasip1 >&2
cargo build --quiet --release --locked --manifest-path "$ws/Cargo.toml" \
  --target-dir "$target" --target wasm32-wasip2 -p testprogs --bin hello >&2
svc=$root/examples/services
cargo build --quiet --release --locked --manifest-path "$svc/Cargo.toml" \
  --target-dir "$svc/target" --target wasm32-wasip2 >&2

copy() {
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
  fi
}
for f in "$target"/wasm32-wasip1/release/*.wasm; do
  copy "$f" "$out/$(basename "$f")"
done
copy "$target/wasm32-wasip2/release/hello.wasm" "$out/hello.component.wasm"
for f in iris-serve httptest; do
  copy "$svc/target/wasm32-wasip2/release/${f//-/_}.wasm" "$out/$f.component.wasm"
done
echo "$out"
