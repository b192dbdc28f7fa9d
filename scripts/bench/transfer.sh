#!/usr/bin/env bash
# Transfer speed: one node fetching a file from another over weft's QUIC data
# plane, against sendme (iroh-blobs over QUIC, BLAKE3-verified streaming) and
# nginx + curl (plain HTTP, sendfile), in the same run, on the same machine,
# the same file, written to the same disk. Then fan-out: the same file fetched
# by 4 nodes at once, their time divided by one node's.
#
#   scripts/bench/transfer.sh [SIZE]     SIZE in bytes or with K/M/G (default 1G)
#
# What is timed: weft's node-to-node fetch (`POST /api/v1/artifacts/ID/fetch`
# on the receiving node: every 16 KiB verified, written into its store and
# synced), `sendme receive` (its fetch into its store, then the export to a
# file; sendme does not time the two apart), and `curl -o FILE` from nginx
# (one write, not synced). `weft get ID -o FILE` (the fetch, then a copy out of
# the store) is printed too. Fan-out: 4 nodes fetch at once; their time over
# one node's fetch. Each figure is the median of 3 runs.
#
# Needs: cargo (weft is built in release; sendme is installed once with
# `cargo install sendme --root target/tools`, about 8 minutes on 2 cores),
# nginx (Debian's nginx-light is installed if missing), curl, python3.
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
runs=3

echo "building weft (release)..." >&2
cargo build --release -q -p weft-node --bin weft
weft=$root/target/release/weft

tools=$root/target/tools
if [ ! -x "$tools/bin/sendme" ]; then
  echo "installing sendme into $tools (once; several minutes)..." >&2
  cargo install -q --locked sendme --root "$tools" || cargo install -q sendme --root "$tools"
fi
sendme=$tools/bin/sendme

nginx=$(command -v nginx || true)
[ -n "$nginx" ] || nginx=/usr/sbin/nginx
if [ ! -x "$nginx" ]; then
  echo "installing nginx-light..." >&2
  apt-get install -y -q nginx-light >/dev/null
fi

work=$(mktemp -d -p "$root/target" bench-transfer.XXXXXX)
chmod 755 "$work" # nginx's worker reads the file as another user
sender_pid=
cleanup() {
  set +e
  [ -n "$sender_pid" ] && kill "$sender_pid" 2>/dev/null
  "$weft" devnet down --dir "$work/devnet" >/dev/null 2>&1
  [ -f "$work/nginx/nginx.pid" ] && "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e stderr -s stop 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

data=$work/data
head -c "$bytes" /dev/urandom >"$data"
cat "$data" >/dev/null # in page cache for every contender

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
mib_s() { python3 -c "print(f'{$bytes / 1048576 / $1:.1f}')"; }
same() { cmp -s "$data" "$1" || { echo "error: $1 differs from the source" >&2; exit 1; }; }

# ---- weft ----------------------------------------------------------------------
echo "starting a devnet of 6 nodes..." >&2
"$weft" devnet up --nodes 6 --dir "$work/devnet" >/dev/null
home() { echo "$work/devnet/node$1"; }
# CPU seconds (user + system) the daemons of the given nodes have used so far
cpu_s() {
  python3 - "$@" <<PY
import os, sys
homes = {os.path.realpath("$work/devnet/node" + n) for n in sys.argv[1:]}
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    args = [a.decode(errors="replace") for a in args]
    if "daemon" in args and any(os.path.realpath(a) in homes for a in args if a):
        total += int(stat[11]) + int(stat[12])
print(f"{total / tick:.2f}")
PY
}
cpu_delta() { python3 -c "print(f'{$2 - $1:.2f}')"; }
api() { cat "$(home "$1")/api"; }
auth() { echo "Authorization: Bearer $(cat "$(home "$1")/api-token")"; }
id=$("$weft" --home "$(home 1)" add --no-pin "$data")
# the source holds it; give Kademlia a moment to hear about it
sleep 1

fetch_only=() weft_t=() fetch_cpu_src=() fetch_cpu_dst=()
for i in $(seq $runs); do
  # fetch alone, into node 2's store (NDJSON progress; the last line is the result)
  c_src0=$(cpu_s 1); c_dst0=$(cpu_s 2)
  t0=$(now)
  last=$(curl -s -N -X POST -H "$(auth 2)" "$(api 2)/api/v1/artifacts/$id/fetch" | tail -n 1)
  t1=$(now)
  fetch_cpu_src+=("$(cpu_delta "$c_src0" "$(cpu_s 1)")")
  fetch_cpu_dst+=("$(cpu_delta "$c_dst0" "$(cpu_s 2)")")
  case $last in *'"done"'*) ;; *) echo "error: fetch failed: $last" >&2; exit 1 ;; esac
  fetch_only+=("$(elapsed "$t0" "$t1")")
  "$weft" --home "$(home 2)" gc >/dev/null
  # end to end: weft get into a file
  rm -f "$work/out2"
  t0=$(now); "$weft" --home "$(home 2)" get "$id" -o "$work/out2"; t1=$(now)
  weft_t+=("$(elapsed "$t0" "$t1")")
  same "$work/out2"
  rm -f "$work/out2"
  "$weft" --home "$(home 2)" gc >/dev/null
done
sync

# fan-out: nodes 3-6 fetch at once
fan_t=() fan_cpu_src=() fan_cpu_dst=()
for i in $(seq $runs); do
  c_src0=$(cpu_s 1); c_dst0=$(cpu_s 3 4 5 6)
  t0=$(now)
  pids=()
  for n in 3 4 5 6; do
    curl -s -N -X POST -H "$(auth $n)" "$(api $n)/api/v1/artifacts/$id/fetch" | tail -n 1 >"$work/fan$n.json" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  t1=$(now)
  fan_t+=("$(elapsed "$t0" "$t1")")
  fan_cpu_src+=("$(cpu_delta "$c_src0" "$(cpu_s 1)")")
  fan_cpu_dst+=("$(cpu_delta "$c_dst0" "$(cpu_s 3 4 5 6)")")
  for n in 3 4 5 6; do
    grep -q '"done"' "$work/fan$n.json" || { echo "error: fetch on node $n failed: $(cat "$work/fan$n.json")" >&2; exit 1; }
    "$weft" --home "$(home $n)" gc >/dev/null
  done
done
"$weft" devnet down --dir "$work/devnet" >/dev/null
sync

# ---- sendme --------------------------------------------------------------------
mkdir -p "$work/send" "$work/recv"
(cd "$work/send" && exec "$sendme" send --relay disabled --ticket-type addresses --no-progress \
  --magic-ipv4-addr 127.0.0.1:0 "$data" >"$work/send.log" 2>&1) &
sender_pid=$!
ticket=
for _ in $(seq 600); do
  ticket=$(grep -o 'blob[a-z0-9]*' "$work/send.log" | head -n 1 || true)
  [ -n "$ticket" ] && break
  sleep 0.1
done
[ -n "$ticket" ] || { echo "error: sendme printed no ticket:" >&2; cat "$work/send.log" >&2; exit 1; }
sendme_t=()
for i in $(seq $runs); do
  rm -rf "$work/recv"; mkdir -p "$work/recv"
  t0=$(now)
  (cd "$work/recv" && "$sendme" receive --relay disabled "$ticket" >"$work/recv.log" 2>&1)
  t1=$(now)
  sendme_t+=("$(elapsed "$t0" "$t1")")
  same "$work/recv/data"
done
kill "$sender_pid" 2>/dev/null || true
wait "$sender_pid" 2>/dev/null || true
sender_pid=
rm -rf "$work/send" "$work/recv"
sync

# ---- nginx + curl ----------------------------------------------------------------
mkdir -p "$work/nginx/www" "$work/nginx/tmp"
ln "$data" "$work/nginx/www/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$port;
    root $work/nginx/www;
  }
}
EOF
"$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e stderr
nginx_t=()
for i in $(seq $runs); do
  rm -f "$work/curl.out"
  t0=$(now); curl -sf -o "$work/curl.out" "http://127.0.0.1:$port/data"; t1=$(now)
  nginx_t+=("$(elapsed "$t0" "$t1")")
  same "$work/curl.out"
done
rm -f "$work/curl.out"

# ---- results -----------------------------------------------------------------------
f=$(median "${fetch_only[@]}"); w=$(median "${weft_t[@]}"); s=$(median "${sendme_t[@]}")
n=$(median "${nginx_t[@]}"); fo=$(median "${fan_t[@]}")
weft_mib=$(mib_s "$f"); sendme_mib=$(mib_s "$s"); nginx_mib=$(mib_s "$n")
vs_sendme=$(python3 -c "print(f'{$s / $f:.2f}')")
vs_nginx=$(python3 -c "print(f'{$n / $f:.2f}')")
fanout=$(python3 -c "print(f'{$fo / $f:.2f}')")
echo "size:                       $bytes bytes (median of $runs runs)"
echo "weft fetch (node to node):  ${f}s  $weft_mib MiB/s   (runs: ${fetch_only[*]})"
echo "weft get -o FILE:           ${w}s  $(mib_s "$w") MiB/s   (runs: ${weft_t[*]})"
echo "sendme receive:             ${s}s  $sendme_mib MiB/s   (runs: ${sendme_t[*]})"
echo "nginx + curl -o FILE:       ${n}s  $nginx_mib MiB/s   (runs: ${nginx_t[*]})"
echo "4 nodes fetching at once:   ${fo}s   (runs: ${fan_t[*]})"
echo "weft vs sendme (speed):     $vs_sendme   (weft get: $(python3 -c "print(f'{$s / $w:.2f}')"))"
echo "weft vs nginx (speed):      $vs_nginx   (weft get: $(python3 -c "print(f'{$n / $w:.2f}')"))"
echo "fan-out time ratio (4/1):   $fanout"
# where the time goes: CPU seconds of the sending and the receiving daemons
cores=$(nproc)
fs=$(median "${fetch_cpu_src[@]}"); fd=$(median "${fetch_cpu_dst[@]}")
gs=$(median "${fan_cpu_src[@]}"); gd=$(median "${fan_cpu_dst[@]}")
echo "cpu, one fetch:             sender ${fs}s + receiver ${fd}s over ${f}s ($(python3 -c "print(f'{($fs + $fd) / $f:.2f}')") of $cores cores busy)"
echo "cpu, 4 at once:             sender ${gs}s + receivers ${gd}s over ${fo}s ($(python3 -c "print(f'{($gs + $gd) / $fo:.2f}')") of $cores cores busy)"
echo "fan-out floor on $cores cores:     $(python3 -c "print(f'{($gs + $gd) / $cores / $f:.2f}')")   (the 4 fetches' CPU seconds / $cores cores / one fetch's time)"
echo "result: size_bytes=$bytes weft_mib_s=$weft_mib sendme_mib_s=$sendme_mib nginx_mib_s=$nginx_mib vs_sendme=$vs_sendme vs_nginx=$vs_nginx fanout4=$fanout"
