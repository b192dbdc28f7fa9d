#!/usr/bin/env bash
# Splits an iris CSV (header `150,4,setosa,versicolor,virginica`, then rows of
# four features and a class index) deterministically into the example data:
# every fifth row (the 5th, 10th, ...) goes to the test split, the rest to
# the train split; each split gets its own header with its row count.
# Usage: scripts/split-iris.sh [SOURCE.csv]   (default ../shared/data/iris.csv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$root/../shared/data/iris.csv}
out=$root/examples/data/iris
mkdir -p "$out/train" "$out/test"
header=$(head -n 1 "$src")
classes=${header#*,*,}
features=$(echo "$header" | cut -d, -f2)
tail -n +2 "$src" | awk 'NR % 5 != 0' > "$out/train/rows.tmp"
tail -n +2 "$src" | awk 'NR % 5 == 0' > "$out/test/rows.tmp"
for split in train test; do
  n=$(wc -l < "$out/$split/rows.tmp")
  { echo "$n,$features,$classes"; cat "$out/$split/rows.tmp"; } > "$out/$split/iris.csv"
  rm "$out/$split/rows.tmp"
done
echo "split-iris: $(head -n1 "$out/train/iris.csv") / $(head -n1 "$out/test/iris.csv")"
