#!/usr/bin/env bash
# weft's main job, end to end on a local devnet of three nodes:
#   1. start three daemons on loopback (a mesh with a shared cluster secret);
#   2. on node 1, store the iris dataset and the example programs, with tags;
#   3. run the training job (placed by the scheduler on any capable node),
#      then the evaluation job, which reads the model by its tag;
#   4. fetch the model on node 2 and print the metrics;
#   5. stop the devnet.
# Installs what it needs first (Debian packages, the wasm targets).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

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
echo "model files: $(ls "$dir/model" | tr '\n' ' ')"
echo "training metrics: $(tr -d ' \n' < "$dir/model/metrics.json")"
"$weft" "${n2[@]}" get results/example-eval:v1 -o "$dir/eval"
echo "held-out metrics: $(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"accuracy {m['accuracy']:.3f} on {m['rows']} rows\")" "$dir/eval/metrics.json")"

echo "== weft job ls (on node 1)"
"$weft" "${n1[@]}" job ls
echo "== done; stopping the devnet"
