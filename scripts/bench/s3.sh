#!/usr/bin/env bash
# The S3 gateway's speed: a 1 GiB file PUT and GET through the gateway with
# boto3 (multipart, 8 threads), against, in the same run, on the same machine
# and the same file, weft's own path (`weft add` on node 1, `weft get` on
# node 2) and nginx as the plain-HTTP anchor (WebDAV PUT, static GET, driven
# by curl). Targets: the gateway at least 0.7x weft's own path and at least
# 0.5x nginx, both ways.
#
#   scripts/bench/s3.sh [SIZE]     SIZE in bytes or with K/M/G (default 1G)
#
# What is timed (each figure the median of 3 runs; the file is in page
# cache; every output is a file on the same disk):
#   weft PUT     `weft add --no-pin FILE` on node 1 (hashed, stored, synced)
#   weft GET     `weft get ID -o FILE` on node 2: fetched from node 1 over the
#                data plane, then written out
#   S3 PUT       boto3 `upload_file` to node 1's gateway (TransferConfig:
#                16 MiB parts, 8 threads)
#   S3 GET       boto3 `download_file` of that object from node 2's gateway
#                (read through the other node; 8 threads, ranged GETs)
# Before each run both nodes' stores are emptied (`weft gc`, the S3 object
# deleted), so node 1 stores the file anew and node 2 fetches all of it.
#   nginx PUT    `curl -T FILE` to nginx with `dav_methods PUT`
#   nginx GET    `curl -o FILE` from nginx (sendfile)
# boto3 is timed inside Python, around the transfer only.
#
# Needs: cargo (weft in release), python3 with venv (boto3 from
# scripts/python-env.sh), nginx (Debian's nginx-light, installed if missing),
# curl. The devnet writes DIR/s3.json (access_key, secret_key, region,
# endpoints: one per node) when its nodes serve S3.
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
target=${CARGO_TARGET_DIR:-$root/target}

echo "building weft (release)..." >&2
cargo build --release -q --locked -p weft-node --bin weft
weft=$target/release/weft
pyenv=$(scripts/python-env.sh | tail -n 1)
py=$pyenv/bin/python

nginx=$(command -v nginx || true)
[ -n "$nginx" ] || nginx=/usr/sbin/nginx
if [ ! -x "$nginx" ]; then
  echo "installing nginx-light..." >&2
  apt-get install -y -q nginx-light >/dev/null
fi

mkdir -p "$target"
work=$(mktemp -d -p "$target" bench-s3.XXXXXX)
chmod 755 "$work" # nginx's worker reads and writes as another user
cleanup() {
  set +e
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

# ---- weft's own path --------------------------------------------------------------
echo "starting a devnet of 2 nodes..." >&2
"$weft" devnet up --nodes 2 --dir "$work/devnet" >/dev/null
home() { echo "$work/devnet/node$1"; }
native_put=() native_get=()
gc_both() { "$weft" --home "$(home 1)" gc >/dev/null; "$weft" --home "$(home 2)" gc >/dev/null; }
for _ in $(seq $runs); do
  # each run starts with both stores empty: node 1 stores the file anew,
  # node 2 fetches all of it from node 1
  gc_both
  rm -f "$work/out"; sync
  t0=$(now); id=$("$weft" --home "$(home 1)" add --no-pin "$data"); t1=$(now)
  native_put+=("$(elapsed "$t0" "$t1")")
  sync; sleep 1 # the mesh hears that node 1 holds it
  t0=$(now); "$weft" --home "$(home 2)" get "$id" -o "$work/out"; t1=$(now)
  native_get+=("$(elapsed "$t0" "$t1")")
  same "$work/out"
done
rm -f "$work/out"
"$weft" --home "$(home 1)" gc >/dev/null
"$weft" --home "$(home 2)" gc >/dev/null

# ---- the S3 gateway, with boto3 ---------------------------------------------------------
s3json=$work/devnet/s3.json
[ -f "$s3json" ] || { echo "error: the devnet wrote no $s3json: this weft has no S3 gateway" >&2; exit 1; }
cat >"$work/s3client.py" <<'PY'
"""One timed boto3 transfer: put FILE or get FILE, through endpoint N of s3.json."""
import json, sys, time
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

op, conf_path, node, bucket, key, path = sys.argv[1:7]
conf = json.load(open(conf_path))
endpoints = conf["endpoints"]
if isinstance(endpoints, dict):
    endpoints = [endpoints[k] for k in sorted(endpoints)]
endpoint = endpoints[min(int(node), len(endpoints) - 1)]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=conf["access_key"],
    aws_secret_access_key=conf["secret_key"],
    region_name=conf.get("region", "us-east-1"),
    config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
)
mib = 1 << 20
tc = TransferConfig(multipart_threshold=16 * mib, multipart_chunksize=16 * mib,
                    max_concurrency=8, use_threads=True)
if op == "mkbucket":
    from botocore.exceptions import ClientError
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    print(endpoint)
elif op == "delete":
    s3.delete_object(Bucket=bucket, Key=key)
elif op == "put":
    t0 = time.perf_counter()
    s3.upload_file(path, bucket, key, Config=tc)
    print(f"{time.perf_counter() - t0:.3f}")
elif op == "get":
    t0 = time.perf_counter()
    s3.download_file(bucket, key, path, Config=tc)
    print(f"{time.perf_counter() - t0:.3f}")
else:
    sys.exit(f"unknown op {op}")
PY
s3() { "$py" "$work/s3client.py" "$@"; }
put_endpoint=$(s3 mkbucket "$s3json" 0 bench - -)
get_endpoint=$(s3 mkbucket "$s3json" 1 bench - -)
s3_put=() s3_get=()
for _ in $(seq $runs); do
  # as above: the object deleted and both stores emptied first, so node 1
  # stores it anew and node 2 fetches it from node 1 while it is read
  s3 delete "$s3json" 0 bench data - >/dev/null 2>&1 || true
  gc_both
  rm -f "$work/out"; sync
  s3_put+=("$(s3 put "$s3json" 0 bench data "$data")")
  sync; sleep 1 # the tag reaches node 2
  s3_get+=("$(s3 get "$s3json" 1 bench data "$work/out")")
  same "$work/out"
done
rm -f "$work/out"
# each daemon's peak resident memory over weft's own and the S3 transfers of
# the whole file: streamed, it stays far below the file's size
"$py" - "$work/devnet/devnet.json" <<'PY' >&2
import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    hwm = next(l.split()[1] for l in open(f"/proc/{n['pid']}/status") if l.startswith("VmHWM:"))
    print(f"daemon {n['pid']}: peak resident memory {int(hwm) // 1024} MiB")
PY
"$weft" devnet down --dir "$work/devnet" >/dev/null
sync

# ---- nginx: WebDAV PUT, static GET -------------------------------------------------------
mkdir -p "$work/nginx/www" "$work/nginx/tmp"
chmod 777 "$work/nginx/www" "$work/nginx/tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_max_body_size 0;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$port;
    root $work/nginx/www;
    dav_methods PUT;
    create_full_put_path on;
    dav_access user:rw group:r all:r;
  }
}
EOF
"$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e stderr
nginx_put=() nginx_get=()
for _ in $(seq $runs); do
  rm -f "$work/nginx/www/data"; sync
  t0=$(now); curl -sf -T "$data" "http://127.0.0.1:$port/data"; t1=$(now)
  nginx_put+=("$(elapsed "$t0" "$t1")")
done
same "$work/nginx/www/data"
for _ in $(seq $runs); do
  rm -f "$work/out"; sync
  t0=$(now); curl -sf -o "$work/out" "http://127.0.0.1:$port/data"; t1=$(now)
  nginx_get+=("$(elapsed "$t0" "$t1")")
  same "$work/out"
done
rm -f "$work/out"

# ---- results -------------------------------------------------------------------------------
put=$(mib_s "$(median "${s3_put[@]}")"); get=$(mib_s "$(median "${s3_get[@]}")")
nput=$(mib_s "$(median "${native_put[@]}")"); nget=$(mib_s "$(median "${native_get[@]}")")
xput=$(mib_s "$(median "${nginx_put[@]}")"); xget=$(mib_s "$(median "${nginx_get[@]}")")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
verdict() { python3 -c "print('meets' if $1 / $2 >= $3 else 'MISSES')"; }
echo "size:                     $bytes bytes (median of $runs runs)"
echo "S3 PUT (boto3, node 1):   $put MiB/s   (runs: ${s3_put[*]} s; $put_endpoint)"
echo "S3 GET (boto3, node 2):   $get MiB/s   (runs: ${s3_get[*]} s; $get_endpoint)"
echo "weft add (node 1):        $nput MiB/s   (runs: ${native_put[*]} s)"
echo "weft get (node 2):        $nget MiB/s   (runs: ${native_get[*]} s)"
echo "nginx PUT (curl -T):      $xput MiB/s   (runs: ${nginx_put[*]} s)"
echo "nginx GET (curl -o):      $xget MiB/s   (runs: ${nginx_get[*]} s)"
echo "S3 / weft, PUT:           $(ratio "$put" "$nput")   target >= 0.7: $(verdict "$put" "$nput" 0.7)"
echo "S3 / weft, GET:           $(ratio "$get" "$nget")   target >= 0.7: $(verdict "$get" "$nget" 0.7)"
echo "S3 / nginx, PUT:          $(ratio "$put" "$xput")   target >= 0.5: $(verdict "$put" "$xput" 0.5)"
echo "S3 / nginx, GET:          $(ratio "$get" "$xget")   target >= 0.5: $(verdict "$get" "$xget" 0.5)"
echo "result: put_mib_s=$put get_mib_s=$get native_put_mib_s=$nput native_get_mib_s=$nget nginx_put_mib_s=$xput nginx_get_mib_s=$xget"
