#!/usr/bin/env bash
# Builds weft's fuzz targets (fuzz/) on stable Rust and runs each for a
# bounded time: scripts/fuzz.sh [--no-lint] [SECONDS] [TARGET...]
#
# The fuzz crate is a workspace of its own, so first it is checked like the
# main one: cargo fmt --check, clippy -D warnings and the harness's own
# tests (--no-lint skips these).
#
# libFuzzer comes from the libfuzzer-sys crate (compiled with the system C++
# compiler); coverage comes from LLVM's sanitizer-coverage passes, enabled
# with stable -C flags (no -Z flags, no sanitizer runtime). Builds go to
# target/fuzz (release, debug assertions and overflow checks on).
#
# Each target runs SECONDS (default 15; 0 runs the seeds and the corpus
# once) on its working corpus (target/fuzz/corpus/TARGET, kept between
# runs), seeds freshly built from the encoders and the inputs committed in
# fuzz/corpus/TARGET (regressions), with bounded memory, input length and
# time per input.
# One line per target says executions, coverage and the result. A crash,
# hang or oversized allocation exits non-zero and leaves the input in
# fuzz/artifacts/TARGET/; replay it with
#   target/fuzz/HOST/release/TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

lint=1
if [ "${1:-}" = --no-lint ]; then
  lint=0
  shift
fi
seconds=${1:-15}
shift || true
case $seconds in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [--no-lint] [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

all=(rpc_request rpc_response gossip tree transfer bao job_yaml job_cbor image pipeline_yaml service_yaml service_head)
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=("${all[@]}")
fi

# Longest input, and dictionary, per target.
max_len() {
  case $1 in
    bao) echo 4096 ;;
    job_yaml | pipeline_yaml | service_yaml) echo 16384 ;;
    image) echo 32768 ;;
    *) echo 65536 ;;
  esac
}
dict() {
  case $1 in
    job_yaml | pipeline_yaml | service_yaml) echo fuzz/dict/yaml.dict ;;
    image) echo fuzz/dict/image.dict ;;
    bao) echo "" ;;
    *) echo fuzz/dict/cbor.dict ;;
  esac
}

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$root/target/fuzz"
if [ "$lint" = 1 ]; then
  cargo fmt --manifest-path fuzz/Cargo.toml --check
  cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
  cargo test --manifest-path fuzz/Cargo.toml --locked --quiet
fi
# Sanitizer coverage for libFuzzer, as cargo-fuzz sets it, minus the
# sanitizers. --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "fuzz: building ${#targets[@]} targets (target/fuzz, release)" >&2
start=$(date +%s)
cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$host" "${bins[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s" >&2

bindir="$CARGO_TARGET_DIR/$host/release"
work="$CARGO_TARGET_DIR/run"
# Scratch files of the image target (unpacked images) go to memory when
# possible, and are removed at the end.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  scratch=$(mktemp -d /dev/shm/weft-fuzz.XXXXXX)
else
  mkdir -p "$work"
  scratch=$(mktemp -d "$work/tmp.XXXXXX")
fi
trap 'rm -rf "$scratch"' EXIT

failed=0
for t in "${targets[@]}"; do
  corpus="$CARGO_TARGET_DIR/corpus/$t"
  seeds="$work/seeds/$t"
  artifacts="fuzz/artifacts/$t"
  log="$work/logs/$t.log"
  rm -rf "$seeds"
  mkdir -p "$corpus" "$seeds" "$artifacts" "$(dirname "$log")"
  if [ "$seconds" -eq 0 ]; then
    args=(-runs=0) # the seeds and the corpus once, no fuzzing
  else
    args=(-max_total_time="$seconds")
  fi
  args+=(
    -rss_limit_mb=2048
    -max_len="$(max_len "$t")"
    -timeout=10
    -print_final_stats=1
    -artifact_prefix="$artifacts/"
  )
  d=$(dict "$t")
  [ -n "$d" ] && args+=(-dict="$d")
  dirs=("$corpus" "$seeds")
  [ -d "fuzz/corpus/$t" ] && dirs+=("fuzz/corpus/$t")
  rc=0
  WEFT_FUZZ_SEEDS="$seeds" TMPDIR="$scratch" \
    timeout -k 10 $((seconds + 120)) "$bindir/$t" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -ao 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -ao 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  units=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    failed=1
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result="FAILED (exit $rc${input:+, input $input}; log $log)"
  fi
  printf '%-13s execs=%-9s exec/s=%-7s cov=%-6s ft=%-6s corpus=%-6s %s\n' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$units" "$result"
  if [ "$rc" -ne 0 ]; then
    grep -av '^#[0-9]' "$log" | tail -n 30 | sed 's/^/    /' >&2
  fi
done
exit "$failed"
