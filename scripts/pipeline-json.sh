# shellcheck shell=bash
# Reading the JSON of `weft pipeline` and `weft runs` commands from shell
# scripts (sourced by scripts/demo.sh and scripts/bench/pipeline.sh).
#
#   pj_run FILE id|state|duration_ms|cached|ran|steps
#       a pipeline run (`pipeline run --json`, `pipeline status RUN --json`):
#       its id, its state, its own duration (duration_ms, else end - start;
#       a record that has ended ends at its updated_ms),
#       how many of its steps are cached, ran, and how many it has
#   pj_triggered FILE [EXCEPT_ID...]
#       from `pipeline ls --json`: "ID STATE" of the newest run that records
#       a trigger and is not one of EXCEPT_ID, or nothing
#   pj_step_runs FILE STEP
#       from `runs ls --json`: the ids of the runs of pipeline step STEP,
#       oldest first, one a line
#   pj_done STATE
#       whether a run in STATE has ended (succeeded, failed, cancelled)
# A run is an object with `id` and `state` (or `status`), at the top of the
# document or under `run`; a list is a JSON list or one under `runs`.

pj_py() {
  python3 - "$@" <<'PY'
import json, sys

what, path, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
doc = json.load(open(path))

def first(d, keys):
    for k in keys:
        if isinstance(d, dict) and d.get(k) is not None:
            return d[k]
    return None

def state(x):
    s = first(x, ["state", "status"])
    return s.get("state") if isinstance(s, dict) else s

def items(d, key):
    s = first(d, [key]) if isinstance(d, dict) else d
    s = s or []
    s = s.values() if isinstance(s, dict) else s
    return [x for x in s if isinstance(x, dict)]

def rid(x):
    v = first(x, ["id", "run_id", "run"])
    return v if isinstance(v, str) else ""

def when(x):
    v = first(x, ["created_ms", "started_ms", "start_ms", "submitted_ms", "start_time"])
    if v is None and isinstance(x.get("start"), dict):
        v = first(x["start"], ["start_ms", "started_ms"])
    return v if isinstance(v, (int, float)) else 0

ENDED = ("succeeded", "failed", "cancelled", "done", "completed")

if what == "run":
    run = doc.get("run") if isinstance(doc, dict) and isinstance(doc.get("run"), dict) else doc
    field = rest[0]
    if field == "id":
        print(rid(run))
    elif field == "state":
        print(state(run) or "")
    elif field == "duration_ms":
        d = first(run, ["duration_ms"])
        if d is None:
            start = first(run, ["started_ms", "start_ms", "created_ms", "submitted_ms"])
            end = first(run, ["ended_ms", "end_ms", "finished_ms", "done_ms", "completed_ms"])
            if end is None and state(run) in ENDED:
                # a run record's last write is its end
                end = first(run, ["updated_ms"])
            ok = isinstance(start, (int, float)) and isinstance(end, (int, float))
            d = end - start if ok else None
        print("n/a" if d is None else d)
    elif field in ("cached", "ran"):
        print(sum(1 for x in items(run, "steps") if state(x) == field))
    elif field == "steps":
        print(len(items(run, "steps")))
elif what == "triggered":
    runs = [r for r in items(doc, "runs") if first(r, ["trigger", "triggered_by"]) and rid(r) not in rest]
    runs.sort(key=when)
    if runs:
        print(rid(runs[-1]), state(runs[-1]) or "")
elif what == "step_runs":
    step = rest[0]
    def of_step(r):
        s = first(r, ["step"])
        for inner in ("start", "run"):
            if s is None and isinstance(r.get(inner), dict):
                s = first(r[inner], ["step"])
        if isinstance(s, dict):
            s = first(s, ["name", "step"])
        return s == step
    runs = sorted((r for r in items(doc, "runs") if of_step(r)), key=when)
    for r in runs:
        print(rid(r))
PY
}

pj_run() { pj_py run "$1" "$2"; }
pj_triggered() { pj_py triggered "$@"; }
pj_step_runs() { pj_py step_runs "$1" "$2"; }
pj_done() { case $1 in succeeded | failed | cancelled | done | completed) return 0 ;; *) return 1 ;; esac; }
