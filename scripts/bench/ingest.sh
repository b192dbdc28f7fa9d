#!/usr/bin/env bash
# Import speed: `weft add` of one large file against hashing it with b3sum and
# copying it with cp, in the same run, on the same disk.
#
#   scripts/bench/ingest.sh [SIZE]     SIZE in bytes or with K/M/G (default 1G)
#
# weft reads the file once, hashing and writing together, and makes the blob
# durable (fsync) before indexing it; cp does not fsync, so a `cp` followed by
# `sync FILE` is printed too, as the durable-copy reference.
set -euo pipefail

size_arg=${1:-1G}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

to_bytes() {
  local s=$1 n unit
  n=${s%[KkMmGg]}; unit=${s#"$n"}
  case $unit in
    K|k) echo $((n << 10)) ;; M|m) echo $((n << 20)) ;; G|g) echo $((n << 30)) ;; *) echo "$n" ;;
  esac
}
bytes=$(to_bytes "$size_arg")

echo "building weft (release)..." >&2
cargo build --release -q -p weft-node --bin weft
weft=$root/target/release/weft

tools=$root/target/tools
if [ ! -x "$tools/bin/b3sum" ]; then
  echo "installing b3sum into $tools..." >&2
  cargo install -q b3sum --locked --root "$tools"
fi
b3sum=$tools/bin/b3sum

work=$(mktemp -d -p "$root/target" ingest.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
head -c "$bytes" /dev/urandom >"$data"
cat "$data" >/dev/null # in page cache for every contender

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

runs=3
weft_t=() b3_t=() cp_t=() cps_t=()
for i in $(seq $runs); do
  rm -rf "$work/home"; sync
  t0=$(now); id=$(WEFT_HOME=$work/home "$weft" add --no-pin "$data"); t1=$(now)
  weft_t+=("$(elapsed "$t0" "$t1")")
  t0=$(now); sum=$("$b3sum" --num-threads 1 "$data" | cut -d' ' -f1); t1=$(now)
  b3_t+=("$(elapsed "$t0" "$t1")")
  [ "$id" = "$sum" ] || { echo "id mismatch: weft $id, b3sum $sum" >&2; exit 1; }
  sync
  t0=$(now); cp "$data" "$work/copy"; t1=$(now)
  cp_t+=("$(elapsed "$t0" "$t1")")
  rm -f "$work/copy"; sync
  t0=$(now); cp "$data" "$work/copy"; sync "$work/copy"; t1=$(now)
  cps_t+=("$(elapsed "$t0" "$t1")")
  rm -f "$work/copy"
done

w=$(median "${weft_t[@]}"); b=$(median "${b3_t[@]}"); c=$(median "${cp_t[@]}"); cs=$(median "${cps_t[@]}")
ratio=$(python3 -c "print(f'{$w / ($b + $c):.2f}')")
ratio_durable=$(python3 -c "print(f'{$w / ($b + $cs):.2f}')")
echo "size:                 $bytes bytes (median of $runs runs)"
echo "weft add:             ${w}s   (runs: ${weft_t[*]})"
echo "b3sum --num-threads 1 ${b}s   (runs: ${b3_t[*]})"
echo "cp:                   ${c}s   (runs: ${cp_t[*]})"
echo "cp + sync FILE:       ${cs}s   (runs: ${cps_t[*]})"
echo "weft / (b3sum + cp):        $ratio"
echo "weft / (b3sum + cp + sync): $ratio_durable"
echo "result: size_bytes=$bytes weft_s=$w b3sum_s=$b cp_s=$c ratio=$ratio"
