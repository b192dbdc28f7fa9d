#!/usr/bin/env bash
# weft's main job, end to end on a local devnet of three nodes:
#   1. start three daemons on loopback (a mesh with a shared cluster secret);
#   2. on node 1, store the iris dataset and the example programs, with tags;
#   3. run the training job (placed by the scheduler on any capable node),
#      then the evaluation job, which reads the model by its tag;
#   4. fetch the model on node 2 and print the metrics;
#   5. the iris pipeline (examples/pipelines/iris.yaml: split, train, evaluate,
#      promote to models/iris@champion): run on node 3, run again on node 2
#      (every step cached), then the dataset tag moves to a changed dataset
#      and the pipeline's trigger runs it again by itself; its status, the
#      champion's lineage and the two evaluations side by side;
#   6. stop the devnet.
# Installs what it needs first (Debian packages, the wasm targets).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/pipeline-json.sh
. scripts/pipeline-json.sh

scripts/install-deps.sh >/dev/null
echo "== building weft and the example programs"
cargo build -q -p weft-node --bin weft
out=$(scripts/build-examples.sh | tail -n 1)
weft=$root/target/debug/weft

dir=$(mktemp -d "${TMPDIR:-/tmp}/weft-demo.XXXXXX")
cleanup() { "$weft" devnet down --dir "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== weft devnet up --nodes 3"
"$weft" devnet up --nodes 3 --dir "$dir"
n1=(--home "$dir/node1") n2=(--home "$dir/node2") n3=(--home "$dir/node3")

echo "== weft peers (on node 3)"
"$weft" "${n3[@]}" peers

echo "== storing the dataset and the programs on node 1"
"$weft" "${n1[@]}" add examples/data/iris --tag datasets/iris:v1
"$weft" "${n1[@]}" add "$out/train.wasm" --tag examples/train:v1
"$weft" "${n1[@]}" add "$out/evaluate.wasm" --tag examples/evaluate:v1

echo "== weft run -f examples/jobs/train.yaml --wait (submitted to node 3)"
"$weft" "${n3[@]}" run -f examples/jobs/train.yaml --wait
echo "== weft run -f examples/jobs/evaluate.yaml --wait (submitted to node 2)"
"$weft" "${n2[@]}" run -f examples/jobs/evaluate.yaml --wait

echo "== weft get models/example:v1 on node 2"
"$weft" "${n2[@]}" get models/example:v1 -o "$dir/model"
echo "model files: $(cd "$dir/model" && echo *)"
echo "training metrics: $(tr -d ' \n' < "$dir/model/metrics.json")"
"$weft" "${n2[@]}" get results/example-eval:v1 -o "$dir/eval"
echo "held-out metrics: $(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"accuracy {m['accuracy']:.3f} on {m['rows']} rows\")" "$dir/eval/metrics.json")"

echo "== weft job ls (on node 1)"
"$weft" "${n1[@]}" job ls

echo "== the iris pipeline: storing the split program on node 1"
"$weft" "${n1[@]}" add "$out/split.wasm" --tag examples/split:v1
pipeline=examples/pipelines/iris.yaml
# runs the pipeline on a node; prints the run's status; sets $run to its id
run_pipeline() {
  "$weft" --home "$dir/node$1" --json pipeline run -f "$pipeline" --wait >"$dir/run.json"
  run=$(pj_run "$dir/run.json" id)
  [ -n "$run" ] || { cat "$dir/run.json" >&2; echo "error: no run id in the output above" >&2; exit 1; }
  "$weft" --home "$dir/node$1" pipeline status "$run"
}
echo "== weft pipeline run -f $pipeline --wait (on node 3): every step runs"
run_pipeline 3
run1=$run
echo "== the same on node 2: every step is a cache hit"
run_pipeline 2
"$weft" "${n2[@]}" --json pipeline status "$run" >"$dir/status.json"
echo "cached steps: $(pj_run "$dir/status.json" cached) of $(pj_run "$dir/status.json" steps)"

echo "== the data moves: datasets/iris:v1 now names examples/data/iris-v2 (on node 1)"
"$weft" "${n1[@]}" add examples/data/iris-v2 --tag datasets/iris:v1
echo "waiting for the run the tag move triggers..."
deadline=$((SECONDS + 180))
triggered=
while :; do
  "$weft" "${n1[@]}" --json pipeline ls >"$dir/ls.json"
  read -r triggered state < <(pj_triggered "$dir/ls.json" "$run1"; echo) || true
  if [ -n "$triggered" ] && pj_done "$state"; then break; fi
  if [ $SECONDS -ge $deadline ]; then
    echo "error: no triggered run ended within 180 s; runs: $(cat "$dir/ls.json")" >&2
    exit 1
  fi
  sleep 1
done
echo "== weft pipeline status $triggered (triggered by the move; it $state)"
"$weft" "${n1[@]}" pipeline status "$triggered"

echo "== weft model show iris"
"$weft" "${n1[@]}" model show iris
echo "== weft lineage models/iris@champion (on node 2)"
"$weft" "${n2[@]}" lineage models/iris@champion

"$weft" "${n3[@]}" --json runs ls --experiment iris >"$dir/runs.json"
mapfile -t evals < <(pj_step_runs "$dir/runs.json" evaluate)
if [ "${#evals[@]}" -lt 2 ]; then
  echo "error: expected two evaluate runs in the experiment iris, found ${#evals[@]}" >&2
  exit 1
fi
echo "== weft runs compare (the evaluation before and after the data moved)"
"$weft" "${n3[@]}" runs compare "${evals[0]}" "${evals[-1]}"
echo "== done; stopping the devnet"
