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
#   6. services: the champion served by a WASI HTTP function
#      (examples/services/iris.yaml, two replicas) and asked for predictions
#      through every node's ingress; a rolling update to a new revision; as
#      root, a container service (busybox httpd, examples/services/httpd.yaml)
#      reached only through the ingress;
#   7. stop the devnet.
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
# waits until `weft service endpoints NAME` on node 1 shows N ready
# replicas at REVISION and no other
wait_service() {
  local name=$1 n=$2 rev=$3 i
  for i in $(seq 1 600); do
    if "$weft" "${n1[@]}" --json service endpoints "$name" | python3 -c '
import json, sys
eps = json.load(sys.stdin)
n, rev = int(sys.argv[1]), int(sys.argv[2])
ok = len(eps) == n and all(e["state"] == "ready" and e["revision"] == rev for e in eps)
sys.exit(0 if ok else 1)' "$n" "$rev"; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: service $name did not reach $n ready replicas at revision $rev" >&2
  "$weft" "${n1[@]}" service status "$name" >&2
  exit 1
}

echo "== services: storing the iris-serve function on node 1"
"$weft" "${n1[@]}" add "$out/iris-serve.component.wasm" --tag examples/iris-serve:v1
echo "== weft service apply -f examples/services/iris.yaml (on node 2)"
"$weft" "${n2[@]}" service apply -f examples/services/iris.yaml
wait_service iris 2 1
echo "== weft service endpoints iris (on node 3)"
"$weft" "${n3[@]}" service endpoints iris
for i in 1 2 3; do
  ingress=$(cat "$dir/node$i/ingress")
  echo "== POST $ingress/s/iris/predict (node $i's ingress)"
  curl -sS --fail-with-body -X POST "$ingress/s/iris/predict" \
    -H 'content-type: application/json' -d '{"features": [5.1, 3.5, 1.4, 0.2]}'
  echo
done
ingress=$(cat "$dir/node3/ingress")
echo "== the same by host name: Host: iris.weft.localhost"
curl -sS --fail-with-body -X POST "$ingress/predict" -H "host: iris.weft.localhost" \
  -d '[6.7, 3.0, 5.2, 2.3]'
echo
echo "== a rolling update: three replicas, a shorter timeout (revision 2)"
sed -e 's/replicas: 2/replicas: 3/' -e 's/timeout: 5s/timeout: 3s/' examples/services/iris.yaml >"$dir/iris-v2.yaml"
"$weft" "${n3[@]}" service apply -f "$dir/iris-v2.yaml"
wait_service iris 3 2
"$weft" "${n1[@]}" service history iris
"$weft" "${n2[@]}" service status iris

if [ "$(id -u)" -eq 0 ] && command -v runc >/dev/null 2>&1; then
  echo "== a container service: busybox httpd (examples/services/httpd.yaml)"
  scripts/build-test-image.sh "$dir/busybox.tar" >/dev/null
  "$weft" "${n1[@]}" image import "$dir/busybox.tar" --tag images/busybox:v1
  "$weft" "${n1[@]}" service apply -f examples/services/httpd.yaml
  wait_service httpd 2 1
  echo "== GET $ingress/s/httpd/ (its port 8080 is open only inside the containers)"
  curl -sS --fail-with-body "$ingress/s/httpd/"
  if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/; then
    echo "error: port 8080 answers on the host" >&2
    exit 1
  fi
  "$weft" "${n1[@]}" service rm httpd
else
  echo "== (the container service needs root and runc; skipped)"
fi
echo "== weft service ls"
"$weft" "${n2[@]}" service ls
echo "== done; stopping the devnet"
