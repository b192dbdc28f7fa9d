#!/usr/bin/env bash
# Scheduler throughput and latency on a local 4-node devnet.
#
#   scripts/bench/scheduler.sh [JOBS]     (default 1000)
#
# Trivial WASM jobs (a module that exits at once; each job has its own
# argument, so none is a cache hit) are spread over the 4 nodes' APIs, in two
# rounds of JOBS each:
#   1. a burst, submitted as fast as 16 HTTP clients can: the throughput
#      (first accepted to last done), and the latencies a saturated cluster
#      gives (they are mostly the queue);
#   2. an open-loop stream at 300 jobs/s (the throughput target): the
#      latencies a job sees at that rate.
# Every job's history gives its latencies: submit-to-done is from the moment
# the coordinator accepted the job to its `succeeded` transition, placement
# to its `placed` transition (all nodes share this machine's clock).
# Then failover: a sleeping job runs on some node, that node's daemon is
# killed (SIGKILL), and the time until the job runs elsewhere is printed.
# The result line gives round 1's throughput and round 2's latencies.
set -euo pipefail
jobs=${1:-1000}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

echo "building weft (release)..." >&2
cargo build --release -q -p weft-node --bin weft
scripts/build-examples.sh >/dev/null
weft=$root/target/release/weft

dir=$(mktemp -d -p "$root/target" sched-bench.XXXXXX)
cleanup() { "$weft" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
"$weft" devnet up --nodes 4 --dir "$dir" >/dev/null

# a WASI module that exits at once: (module (memory (export "memory") 1) (func (export "_start")))
printf '0061736d01000000010401600000030201000503010001071302066d656d6f72790200065f737461727400000a040102000b' \
  | xxd -r -p >"$dir/noop.wasm"
for i in 1 2 3 4; do
  "$weft" --home "$dir/node$i" add "$dir/noop.wasm" --tag bench/noop:v1 >/dev/null
  "$weft" --home "$dir/node$i" add examples/wasm/out/sleepy.wasm --tag bench/sleepy:v1 >/dev/null
done

python3 - "$dir" "$jobs" "$weft" <<'PY'
import json, os, signal, statistics, subprocess, sys, threading, time, urllib.request

dir_, n, weft = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = json.load(open(os.path.join(dir_, "devnet.json")))
nodes = state["nodes"]
apis = [x["api"] for x in nodes]
# each daemon's API token, from its home (what the CLI sends)
tokens = {x["api"]: open(os.path.join(x["home"], "api-token")).read().strip() for x in nodes}

def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    token = next(t for a, t in tokens.items() if url.startswith(a + "/"))
    headers = {"authorization": "Bearer " + token}
    if data is not None:
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)

def spec(i):
    return ("apiVersion: weft/v1\nkind: Job\nmetadata: {name: noop-%d}\nspec:\n"
            "  task:\n    wasm: {module: bench/noop:v1, args: [\"%d\"]}\n  timeout: 1m\n" % (i, i))

def cpu_seconds():
    """User plus system CPU time of the four daemons so far."""
    total = 0
    for x in nodes:
        try:
            fields = open(f"/proc/{x['pid']}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")

def run_round(label, offset, rate):
    """Submits n jobs (as fast as possible, or `rate` per second) and waits
    for all; returns (jobs/s, latencies, placements, per-node counts)."""
    ids = [None] * n
    lock = threading.Lock()
    next_i = [0]
    cpu0 = cpu_seconds()
    start = time.time()
    def worker():
        while True:
            with lock:
                i = next_i[0]; next_i[0] += 1
            if i >= n:
                return
            if rate:
                delay = start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            api = apis[i % len(apis)]
            s = call("POST", api + "/api/v1/jobs", {"spec": spec(offset + i)})
            ids[i] = (api, s["id"])
    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    submit_s = time.time() - start
    done = {}
    deadline = time.time() + 300
    while len(done) < n and time.time() < deadline:
        for i, (api, jid) in enumerate(ids):
            if i in done:
                continue
            s = call("GET", f"{api}/api/v1/jobs/{jid}?wait_ms=5000")
            if s["state"] in ("succeeded", "failed", "cancelled"):
                done[i] = s
    failed = [s for s in done.values() if s["state"] != "succeeded"]
    if len(done) < n or failed:
        print(f"error: {n - len(done)} jobs unfinished, {len(failed)} failed", file=sys.stderr)
        for s in failed[:5]:
            print(json.dumps(s)[:400], file=sys.stderr)
        sys.exit(1)
    def at(s, state):
        return next(t["at_ms"] for t in s["history"] if t["state"] == state)
    lat = sorted(at(s, "succeeded") - s["created_ms"] for s in done.values())
    place = sorted(at(s, "placed") - s["created_ms"] for s in done.values())
    first = min(s["created_ms"] for s in done.values())
    last = max(at(s, "succeeded") for s in done.values())
    per_node = {}
    for s in done.values():
        per_node[s["node"]] = per_node.get(s["node"], 0) + 1
    jps = n / max((last - first) / 1000, 1e-9)
    print(f"{label}: {n} jobs submitted in {submit_s:.2f} s, per node {sorted(per_node.values())}")
    print(f"  throughput:         {jps:.0f} jobs/s (first accepted to last done)")
    print(f"  submit-to-done:     p50 {pct(lat, 50)} ms, p99 {pct(lat, 99)} ms, max {lat[-1]} ms")
    print(f"  placement:          p50 {pct(place, 50)} ms, p99 {pct(place, 99)} ms")
    print(f"  daemons' CPU:       {(cpu_seconds() - cpu0) * 1000 / n:.2f} ms per job (all four nodes, user + system)")
    return jps, lat, place

def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

jps, _, _ = run_round("burst", 0, None)
_, lat, place = run_round("at 300 jobs/s", n, 300)

# failover: a sleeping job on some node other than node1, whose daemon is killed
victim = None
for attempt in range(20):
    s = call("POST", apis[0] + "/api/v1/jobs", {"spec":
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: failover-%d}\nspec:\n"
        "  task:\n    wasm: {module: bench/sleepy:v1, args: [\"4\"]}\n  timeout: 2m\n  cache: false\n" % attempt})
    jid = s["id"]
    while True:
        s = call("GET", f"{apis[0]}/api/v1/jobs/{jid}")
        if s["state"] == "running":
            break
        time.sleep(0.02)
    node = s["node"]
    owner = [x for x in nodes if call("GET", x["api"] + "/api/v1/node")["peer_id"] == node]
    if owner and owner[0]["api"] != apis[0]:
        victim = (jid, owner[0])
        break
    call("POST", f"{apis[0]}/api/v1/jobs/{jid}/cancel")
if victim is None:
    print("error: no job landed off node1 for the failover test", file=sys.stderr)
    sys.exit(1)
jid, owner = victim
killed = time.time()
os.kill(owner["pid"], signal.SIGKILL)
while True:
    s = call("GET", f"{apis[0]}/api/v1/jobs/{jid}")
    rerun = [t for t in s["history"] if t["state"] == "running" and t["attempt"] >= 2]
    if rerun:
        failover = rerun[0]["at_ms"] / 1000 - killed
        break
    if time.time() - killed > 60:
        print("error: the job never ran elsewhere", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.05)
print(f"failover:             {failover:.2f} s from SIGKILL of the executor to the job running elsewhere")
print(f"result: jobs={n} jobs_per_s={jps:.0f} p50_ms={pct(lat, 50)} p99_ms={pct(lat, 99)} "
      f"placement_p50_ms={pct(place, 50)} failover_s={failover:.2f}")
PY
