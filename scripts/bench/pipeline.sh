#!/usr/bin/env bash
# Pipeline overhead on a local 3-node devnet, against plain jobs.
#
#   scripts/bench/pipeline.sh            (WEFT_BIN=PATH uses that weft instead of a release build)
#
# Every step is a trivial WASM program (examples/wasm/testprogs relay: it
# copies /inputs/prev/trail.txt to /outputs/trail.txt and appends its
# arguments), so a step takes about no time and what is measured is weft.
# Each step has its own arguments, so no two steps are the same job.
#   1. plain chain: 20 jobs submitted one by one to node 1 with
#      `weft run -f jobN.yaml --wait`, job N reading job N-1's output by tag;
#   2. chain: a 20-step pipeline (step N reads step N-1's output), run with
#      `weft pipeline run -f chain.yaml --wait` on node 1;
#   3. the same pipeline again, fully cached: on node 1, then on node 2 (the
#      time of the whole command, and the run's own duration from
#      `weft pipeline status RUN --json` where it gives one);
#   4. fan-out: a root step and 20 steps that each read its output.
# Checked on the way: each chain carried every step's line to its end, every
# step of a first run ran, every step of a re-run was cached.
# step_overhead_ms = (chain_first_s - plain_chain_s) * 1000 / 20: what a
# pipeline step costs over a plain job (target: at most 20 ms).
# chain_cached_ms is the cached re-run of the whole command on node 2, the
# node that did not run the chain (target: at most 100 ms).
set -euo pipefail
shopt -s inherit_errexit
steps=20
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if [ -n "${WEFT_BIN:-}" ]; then
  weft=$WEFT_BIN
else
  echo "building weft (release)..." >&2
  cargo build --release -q -p weft-node --bin weft
  weft=$root/target/release/weft
fi
scripts/build-examples.sh >/dev/null
relay=$root/examples/wasm/out/relay.wasm

mkdir -p "$root/target"
dir=$(mktemp -d -p "$root/target" pipeline-bench.XXXXXX)
cleanup() { "$weft" devnet down --dir "$dir/devnet" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
echo "starting a devnet of 3 nodes..." >&2
"$weft" devnet up --nodes 3 --dir "$dir/devnet" >/dev/null
on() { local n=$1; shift; "$weft" --home "$dir/devnet/node$n" "$@"; }
# a command whose output is shown only when it fails
quiet() {
  "$@" >"$dir/last.log" 2>&1 || { cat "$dir/last.log" >&2; echo "error: failed: $*" >&2; exit 1; }
}

# shellcheck source=scripts/pipeline-json.sh
. "$root/scripts/pipeline-json.sh"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1000:.3f}')" "$1"; }

# the program and the chain's first input on every node (no transfer is timed)
mkdir -p "$dir/seed"
echo seed >"$dir/seed/trail.txt"
for n in 1 2 3; do
  on "$n" add "$relay" --tag bench/relay:v1 >/dev/null
  on "$n" add "$dir/seed" --tag bench/seed:v1 >/dev/null
done

job_yaml() { # NAME ARGS INPUT_TAG OUTPUT_TAG
  cat <<EOF
apiVersion: weft/v1
kind: Job
metadata: {name: $1}
spec:
  task:
    wasm: {module: bench/relay:v1, args: [$2]}
  inputs: [{from: $3, path: /inputs/prev}]
  outputs: [{path: /outputs, tag: $4}]
  timeout: 1m
EOF
}

# the last line of trail.txt in a tag's artifact, checked to have LINES lines
check_trail() { # NODE TAG LINES
  local out=$dir/check-$RANDOM
  on "$1" get "$2" -o "$out" >/dev/null
  local n
  n=$(wc -l <"$out/trail.txt")
  if [ "$n" -ne "$3" ]; then
    echo "error: $2 holds $n lines, not $3: the steps did not each read the one before" >&2
    exit 1
  fi
  rm -rf "$out"
}

# warm-up: each node compiles the module and opens its connections
for i in 1 2 3 4 5 6; do
  job_yaml "warm-$i" "\"warm\", \"$i\"" bench/seed:v1 "bench/warm-$i:v1" >"$dir/warm.yaml"
  quiet on $(((i - 1) % 3 + 1)) run -f "$dir/warm.yaml" --wait
done

# 1. plain chain
for i in $(seq 1 $steps); do
  prev=bench/seed:v1
  if [ "$i" -gt 1 ]; then prev=bench/plain-$((i - 1)):v1; fi
  job_yaml "plain-$i" "\"plain\", \"$i\"" "$prev" "bench/plain-$i:v1" >"$dir/job$i.yaml"
done
t0=$(now_ms)
for i in $(seq 1 $steps); do
  quiet on 1 run -f "$dir/job$i.yaml" --wait
done
plain_ms=$(($(now_ms) - t0))
check_trail 2 "bench/plain-$steps:v1" $((steps + 1))
plain_chain_s=$(secs "$plain_ms")
echo "plain chain:          ${plain_chain_s} s for $steps jobs with weft run --wait, one by one"

# the pipelines
{
  printf 'apiVersion: weft/v1\nkind: Pipeline\nmetadata: {name: bench-chain}\nspec:\n  steps:\n'
  for i in $(seq 1 $steps); do
    from=bench/seed:v1 tag=
    if [ "$i" -gt 1 ]; then from=steps.s$(printf %02d $((i - 1))).outputs.out; fi
    if [ "$i" -eq $steps ]; then tag=", tag: bench/chain-last:v1"; fi
    printf '    s%02d:\n' "$i"
    printf '      task: {wasm: {module: bench/relay:v1, args: ["chain", "%d"]}}\n' "$i"
    printf '      inputs: [{from: %s, path: /inputs/prev}]\n' "$from"
    printf '      outputs: [{name: out, path: /outputs%s}]\n' "$tag"
  done
} >"$dir/chain.yaml"
{
  printf 'apiVersion: weft/v1\nkind: Pipeline\nmetadata: {name: bench-fanout}\nspec:\n  steps:\n'
  printf '    root:\n'
  printf '      task: {wasm: {module: bench/relay:v1, args: ["fan", "root"]}}\n'
  printf '      inputs: [{from: bench/seed:v1, path: /inputs/prev}]\n'
  printf '      outputs: [{name: out, path: /outputs}]\n'
  for i in $(seq 1 $steps); do
    printf '    f%02d:\n' "$i"
    printf '      task: {wasm: {module: bench/relay:v1, args: ["fan", "%d"]}}\n' "$i"
    printf '      inputs: [{from: steps.root.outputs.out, path: /inputs/prev}]\n'
    printf '      outputs: [{name: out, path: /outputs, tag: bench/fan-%d:v1}]\n' "$i"
  done
} >"$dir/fanout.yaml"

pipeline_run() { # NODE FILE OUT_JSON -> the command's wall time in ms
  local t0 t1
  t0=$(now_ms)
  if ! on "$1" --json pipeline run -f "$2" --wait >"$3"; then
    cat "$3" >&2
    echo "error: weft pipeline run -f $2 --wait failed on node $1" >&2
    exit 1
  fi
  t1=$(now_ms)
  local state
  state=$(pj_run "$3" state)
  case $state in
    "" | succeeded | done | completed) ;;
    *) echo "error: pipeline run of $2 ended $state" >&2; cat "$3" >&2; exit 1 ;;
  esac
  echo $((t1 - t0))
}

status_of() { # NODE RUN OUT_JSON
  on "$1" --json pipeline status "$2" >"$3"
}

# 2. chain, first run
chain_ms=$(pipeline_run 1 "$dir/chain.yaml" "$dir/chain1.json")
chain_first_s=$(secs "$chain_ms")
check_trail 3 bench/chain-last:v1 $((steps + 1))
# every step of a first run ran (none was answered from a cache)
all_ran() { # NODE RUN_JSON STEPS -> the run's own duration
  local run own=n/a ran
  run=$(pj_run "$2" id)
  if [ -n "$run" ]; then
    status_of "$1" "$run" "$dir/status.json"
    own=$(pj_run "$dir/status.json" duration_ms)
    ran=$(pj_run "$dir/status.json" ran)
    if [ "$ran" != "$3" ]; then
      echo "error: $ran of $3 steps of run $run ran; a first run runs them all" >&2
      exit 1
    fi
  fi
  echo "$own"
}
own1=$(all_ran 1 "$dir/chain1.json" $steps)
echo "chain, first run:     ${chain_first_s} s for $steps steps (the run's own duration: $own1 ms)"

# 3. chain, fully cached, on node 1 then on node 2
for n in 1 2; do
  ms=$(pipeline_run "$n" "$dir/chain.yaml" "$dir/cached$n.json")
  run=$(pj_run "$dir/cached$n.json" id)
  own=n/a cached=unknown
  if [ -n "$run" ]; then
    status_of "$n" "$run" "$dir/cstatus$n.json"
    own=$(pj_run "$dir/cstatus$n.json" duration_ms)
    cached=$(pj_run "$dir/cstatus$n.json" cached)
    if [ "$cached" != "$steps" ]; then
      echo "error: the re-run on node $n has $cached cached steps, not $steps" >&2
      cat "$dir/cstatus$n.json" >&2
      exit 1
    fi
  fi
  echo "chain, cached, node $n: ${ms} ms for the command (the run's own duration: $own ms; $cached of $steps steps cached)"
  chain_cached_ms=$ms # the last: node 2
done

# 4. fan-out, first run
fan_ms=$(pipeline_run 1 "$dir/fanout.yaml" "$dir/fan1.json")
fanout_first_s=$(secs "$fan_ms")
all_ran 1 "$dir/fan1.json" $((steps + 1)) >/dev/null
for i in 1 $steps; do check_trail 2 "bench/fan-$i:v1" 3; done
echo "fan-out, first run:   ${fanout_first_s} s for a root and $steps steps that read it"

read -r step_overhead_ms chain_ratio fan_ratio < <(python3 -c "
import sys
chain, plain, fan, n = (float(x) for x in sys.argv[1:])
print(f'{(chain - plain) * 1000 / n:.1f} {chain / plain:.2f} {fan / chain:.2f}')
" "$chain_first_s" "$plain_chain_s" "$fanout_first_s" "$steps")
echo "ratios:               chain / plain chain = $chain_ratio, fan-out / chain = $fan_ratio"
echo "plain_chain_s=$plain_chain_s"
echo "result: chain_first_s=$chain_first_s chain_cached_ms=$chain_cached_ms fanout_first_s=$fanout_first_s step_overhead_ms=$step_overhead_ms"
