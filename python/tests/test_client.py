"""The Python client against a real two-node devnet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import weft
from weft import Client
from weft.devnet import Devnet

REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------ finding the daemon


def test_client_finds_the_daemon_through_weft_home(devnet: Devnet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFT_HOME", str(devnet.home(1)))
    c = Client()
    want = devnet.client(1).node()["peer_id"]
    assert c.node()["peer_id"] == want
    assert c.addr == (devnet.home(1) / "api").read_text().strip()
    # an explicit address and token
    token = (devnet.home(1) / "api-token").read_text().strip()
    assert Client(addr=c.addr, token=token).node()["peer_id"] == want
    assert Client(addr=c.addr.replace("http://", ""), token=token).node()["peer_id"] == want
    # the node sees the other one
    peers = [p["advert"]["peer_id"] for p in c.peers()]
    assert devnet.client(0).node()["peer_id"] in peers


def test_without_the_token_the_daemon_answers_unauthorized(devnet: Devnet) -> None:
    addr = devnet.client(0).addr
    with pytest.raises(weft.Unauthorized) as e:
        Client(addr=addr).node()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(weft.Unauthorized):
        Client(addr=addr, token="0" * 64).jobs()


def test_a_home_without_a_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(weft.NoDaemon) as e:
        Client(home=tmp_path)
    assert str(tmp_path) in e.value.detail
    assert e.value.status is None


def test_a_stopped_daemon_is_a_connection_error(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(weft.ConnectionFailed) as e:
        Client(addr=f"http://127.0.0.1:{port}", token="x" * 32).node()
    assert e.value.code == "unreachable"


# ------------------------------------------------------------------- artifacts


def test_add_get_tag_round_trips(w: Client, w2: Client, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    name = unique("py/blob") + ":v1"
    out = w.add(data, tag=name)
    assert out["kind"] == "file" and out["size"] == len(data)
    assert w.resolve(name) == out["id"]
    assert w.get(name) == data
    assert w.get(out["id"][:16]) == data  # a unique id prefix
    # through the other node: the tag replicated, the bytes come from the mesh
    assert _eventually(lambda: _has_tag(w2, name))
    assert w2.get(name) == data
    assert w2.stat(name) == {"id": out["id"], "kind": "file", "size": len(data)}
    # streamed, to a path
    dest = w2.get(name, tmp_path / "blob.bin")
    assert dest.read_bytes() == data
    with pytest.raises(weft.Conflict):
        w2.get(name, dest)
    w2.get(name, dest, force=True)
    assert b"".join(w2.stream(name, chunk_size=65536)) == data

    # a file by path (streamed with its length) and a file object (chunked)
    f = tmp_path / "file.txt"
    f.write_bytes(b"weft\n" * 1000)
    by_path = w.add(f)
    by_stream = w.add(io.BytesIO(f.read_bytes()))
    assert by_path["id"] == by_stream["id"]
    assert w.get(by_path["id"]) == f.read_bytes()

    # a tag moved to another artifact keeps its history
    w.tag(name, by_path["id"])
    assert w.resolve(name) == by_path["id"]
    history = [v["target"] for v in w.tag_history(name)]
    assert history[-2:] == [out["id"], by_path["id"]]
    assert any(t["name"] == name for t in w.tags())
    w.untag(name)
    with pytest.raises(weft.NotFound) as e:
        w.resolve(name)
    assert e.value.code == "not_found"


def test_a_folder_round_trips_as_a_tree(w: Client, w2: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    (src / "sub" / "deeper" / "c.txt").write_text("gamma\n")
    run = src / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    name = unique("py/tree") + ":v1"
    out = w.add(src, tag=name)
    assert out["kind"] == "tree" and out["files"] == 4
    with pytest.raises(weft.BadRequest) as e:
        w.get(name)
    assert e.value.code == "is_tree"
    assert _eventually(lambda: _has_tag(w2, name))
    dest = w2.get(name, tmp_path / "dest")
    assert _tree(dest) == _tree(src)
    assert os.access(dest / "run.sh", os.X_OK)
    assert not os.access(dest / "a.txt", os.X_OK)


def _has_tag(c: Client, name: str) -> bool:
    try:
        c.resolve(name)
        return True
    except weft.NotFound:
        return False


def _eventually(f, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f():
            return True
        time.sleep(0.1)
    return bool(f())


def _tree(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------ jobs


def test_a_job_runs_and_reports_logs_and_metrics(w: Client, w2: Client, seeded: Dict[str, str]) -> None:
    job = w.submit(REPO / "examples" / "jobs" / "train.yaml")
    assert job["name"] == "train-iris"
    done = w.wait(job, timeout=120, check=True)
    assert done["state"] == "succeeded"
    model_id = dict(done["result"]["outputs"])["/outputs/model"]
    assert w.resolve("models/example:v1") == model_id

    lines = list(w.logs(job))
    assert any(line.stream == "stdout" and "trained on 120 rows" in line.line for line in lines), lines
    # every node answers for the job and its run
    assert _eventually(lambda: _state(w2, job["id"]) == "succeeded")
    metrics = w.metrics(job)
    assert metrics["train_accuracy"] > 0.9, metrics
    run = w.run(job)
    losses = [m for m in run["metric_history"] if m["key"] == "loss"]
    assert len(losses) > 10 and losses[-1]["value"] < losses[0]["value"]

    # the evaluation reads the model by its tag; its spec as YAML text, its logs followed
    text = (REPO / "examples" / "jobs" / "evaluate.yaml").read_text()
    assert _eventually(lambda: _has_tag(w2, "models/example:v1") and _has_tag(w2, "datasets/iris:v1"))
    ev = w2.submit(text)
    followed = list(w2.logs(ev, follow=True, timeout=120))
    assert w2.job(ev)["state"] == "succeeded"
    assert followed == list(w2.logs(ev))
    evaluation = w2.metrics(ev)
    assert evaluation["accuracy"] >= 0.9, evaluation


def _alias(c: Client, model: str, alias: str) -> Optional[int]:
    try:
        for a in c.model(model)["aliases"]:
            if a["alias"] == alias:
                return int(a["version"])
    except weft.NotFound:
        pass
    return None


def _state(c: Client, job: str) -> str:
    try:
        return str(c.job(job)["state"])
    except weft.NotFound:
        return "unknown"


def test_a_job_given_as_a_dict(w: Client, seeded: Dict[str, str]) -> None:
    spec = {
        "apiVersion": "weft/v1",
        "kind": "Job",
        "metadata": {"name": "dict-train", "experiment": unique("py-dict")},
        "spec": {
            "task": {
                "wasm": {
                    "module": "examples/train:v1",
                    "args": ["--data", "/inputs/data/train/iris.csv", "--out", "/outputs/model",
                             "--epochs", "60", "--lr", "0.5", "--metrics", "/outputs/metrics.json"],
                }
            },
            "inputs": [{"from": "datasets/iris:v1", "path": "/inputs/data"}],
            "outputs": [{"path": "/outputs/model"}],
            "resources": {"cpu": 1, "memory": "128Mi"},
            "timeout": "2m",
        },
    }
    done = w.wait(w.submit(spec), timeout=120, check=True)
    rows = w.runs(spec["metadata"]["experiment"])  # type: ignore[index]
    assert [r["id"] for r in rows] == [done["id"]]
    assert rows[0]["status"] == "succeeded"
    assert 0 < rows[0]["metrics.train_accuracy"] <= 1


def test_a_wait_times_out_and_a_cancelled_job_ends_cancelled(w: Client, w2: Client, seeded: Dict[str, str]) -> None:
    spec = {
        "apiVersion": "weft/v1",
        "kind": "Job",
        "metadata": {"name": unique("py-sleepy")},
        "spec": {
            "task": {"wasm": {"module": "examples/sleepy:v1", "args": ["600"]}},
            "resources": {"cpu": 1, "memory": "32Mi"},
            "timeout": "10m",
            "cache": False,
        },
    }
    job = w.submit(spec)
    with pytest.raises(weft.WaitTimeout) as e:
        w.wait(job, timeout=1.0)
    assert isinstance(e.value, TimeoutError) and job["id"] in e.value.detail
    assert list(w.logs(job)) == []  # nothing until the task ends
    w2_sees = _eventually(lambda: _state(w2, job["id"]) != "unknown")
    assert w2_sees
    w.cancel(job)
    with pytest.raises(weft.JobFailed) as f:
        w.wait(job["id"], timeout=60, check=True)  # by id: a job's
    assert f.value.status_record["state"] == "cancelled" and f.value.code == "cancelled"


# ------------------------------------------------------------------- pipelines


def _pipeline(experiment: str, model: str) -> str:
    text = (REPO / "examples" / "pipelines" / "iris.yaml").read_text()
    text = text.replace("metadata: {name: iris, experiment: iris}", f"metadata: {{name: {experiment}, experiment: {experiment}}}")
    text = text.replace("register: {model: iris,", f"register: {{model: {model},")
    assert experiment in text and model in text
    return text


def test_pipeline_runs_compare_register_alias_and_lineage(
    w: Client, w2: Client, seeded: Dict[str, str], tmp_path: Path
) -> None:
    experiment, promoted, model = unique("py-iris"), unique("py-promoted"), unique("py-model")
    spec = _pipeline(experiment, promoted)
    runs = [w.submit(spec, params={"epochs": epochs}) for epochs in (3, 400)]
    assert all(r["pipeline"] == experiment and r["state"] == "running" for r in runs)
    ended = [w.wait(r, timeout=180, check=True) for r in runs]
    assert [dict(e["params"])["epochs"] for e in ended] == ["3", "400"]

    # every step of both runs is a run of the experiment; rows are flat
    # (runs reach node 2 with the ledger's gossip)
    assert _eventually(
        lambda: [r["status"] for r in w2.runs(experiment)] == ["succeeded"] * 6
    ), w2.runs(experiment)
    rows: List[Dict[str, object]] = w2.runs(experiment)
    assert sorted(r["step"] for r in rows) == ["evaluate", "evaluate", "split", "split", "train", "train"]  # type: ignore[type-var]
    for r in rows:
        assert all(not isinstance(v, (dict, list)) for v in r.values()), r
    try:
        import pandas as pd  # noqa: F401

        df = pd.DataFrame(rows)
        assert "metrics.accuracy" in df.columns and "params.epochs" in df.columns
    except ImportError:
        pass
    evals = [r for r in rows if r["step"] == "evaluate"]
    best = max(evals, key=lambda r: r["metrics.accuracy"])  # type: ignore[arg-type,return-value]
    worst = min(evals, key=lambda r: r["metrics.accuracy"])  # type: ignore[arg-type,return-value]
    assert best["params.epochs"] == "400" and best["metrics.accuracy"] > worst["metrics.accuracy"]  # type: ignore[operator]

    # register each run's trained model; the best becomes the champion
    def train_job(pipeline_run: object) -> str:
        (t,) = [r for r in rows if r["step"] == "train" and r["pipeline_run"] == pipeline_run]
        return str(t["job"])

    v_worst = w.register_model(model, f"{train_job(worst['pipeline_run'])}:/outputs/model")
    v_best = w2.register_model(model, f"{train_job(best['pipeline_run'])}:/outputs/model")
    assert (v_worst["version"], v_best["version"]) == (1, 2)
    assert v_best["reference"] == f"models/{model}:2"
    moved = w.set_alias(model, "champion", v_worst["version"])
    assert moved["version"] == 1 and moved["from"] is None
    moved = w.set_alias(model, "champion", v_best["version"])
    assert (moved["version"], moved["from"]) == (2, 1)
    detail = w.model(model)
    (champion,) = [a for a in detail["aliases"] if a["alias"] == "champion"]
    assert champion["version"] == 2 and [h["version"] for h in champion["history"]] == [1, 2]
    assert w.rollback_alias(model, "champion")["version"] == 1
    w.set_alias(model, "champion", 2)
    assert _eventually(lambda: _alias(w2, model, "champion") == 2)
    assert any(m["name"] == model for m in w.models())

    # what made the champion: train <- split <- the dataset added by hand
    g = w2.lineage(f"models/{model}@champion")
    assert g["root"] == v_best["artifact"] and not g["truncated"]
    jobs = {n["step"]: n for n in g["nodes"] if n["kind"] == "job"}
    assert set(jobs) == {"train", "split"}
    assert dict(jobs["train"]["params"])["epochs"] == "400"
    added = [n["id"] for n in g["nodes"] if n["kind"] == "artifact" and n["added"]]
    assert added == [seeded["datasets/iris:v1"]]
    edges = {(e["from"], e["to"]) for e in g["edges"]}
    assert (jobs["train"]["id"], g["root"]) in edges
    # and downstream from the dataset, the same jobs
    down = w.lineage("datasets/iris:v1", direction="down", depth=1)
    assert jobs["split"]["id"] in {n["id"] for n in down["nodes"]}

    # the champion's files, from the other node
    files = w2.get(f"models/{model}@champion", tmp_path / "champion")
    assert json.loads((files / "model.json").read_text())
    assert w2.get(f"models/{model}:2", tmp_path / "v2") and _tree(tmp_path / "v2") == _tree(files)


def test_a_pipeline_file_whose_steps_use_job_files(w: Client, seeded: Dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "train.yaml").write_text((REPO / "examples" / "jobs" / "train.yaml").read_text())
    name = unique("py-uses")
    (tmp_path / "pipeline.yaml").write_text(
        f"""apiVersion: weft/v1
kind: Pipeline
metadata: {{name: {name}, experiment: {name}}}
spec:
  steps:
    train:
      uses: jobs/train.yaml
      outputs: [{{name: model, path: /outputs/model}}]
"""
    )
    run = w.wait(w.submit(tmp_path / "pipeline.yaml"), timeout=120, check=True)
    assert [(s["name"], s["state"]) for s in run["steps"]] in ([("train", "ran")], [("train", "cached")])
    (row,) = w.runs(name)
    assert row["step"] == "train" and row["metrics.train_accuracy"] > 0.9
    with pytest.raises(weft.SpecError) as e:
        w.submit(str(tmp_path / "pipeline.yaml").replace("pipeline.yaml", "missing.yaml"))
    assert "missing.yaml" in e.value.detail
    (tmp_path / "broken.yaml").write_text((tmp_path / "pipeline.yaml").read_text().replace("jobs/train.yaml", "jobs/nope.yaml"))
    with pytest.raises(weft.SpecError) as e:
        w.submit(tmp_path / "broken.yaml")
    assert "spec.steps.train.uses" in e.value.detail and "nope.yaml" in e.value.detail


# ------------------------------------------------------------ runs of your own


def test_runs_logged_by_hand(w: Client, w2: Client) -> None:
    experiment = unique("py-manual")
    with w.start_run("by-hand", experiment=experiment, params={"lr": 0.1}, tags={"who": "pytest"}) as run:
        for step, loss in enumerate([0.9, 0.5, 0.2]):
            run.log_metrics({"loss": loss}, step=step)
        run.log_params({"epochs": 3, "lr": 0.1})  # the same lr again is fine
        with pytest.raises(weft.BadRequest) as e:
            run.log_params({"lr": 0.2})
        assert (e.value.status, e.value.code) == (400, "invalid_parameter_value")
        assert "write-once" in e.value.detail
    r = w.run(run.id)
    assert r["status"] == "succeeded"
    assert [m["value"] for m in r["metric_history"]] == [0.9, 0.5, 0.2]
    assert r["params"] == {"lr": "0.1", "epochs": "3"}
    assert _eventually(lambda: len(w2.runs(experiment)) == 1)
    (row,) = w2.runs(experiment)
    assert row["metrics.loss"] == 0.2 and row["params.epochs"] == "3" and row["tags.who"] == "pytest"
    with pytest.raises(weft.Conflict) as c:
        w.end_run(run.id)
    assert (c.value.status, c.value.code) == (409, "exists")
    events = w.openlineage(run.id)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]

    failed = w.create_run("boom", experiment=experiment)
    with pytest.raises(RuntimeError):
        with weft.ActiveRun(w, failed):
            raise RuntimeError("boom")
    assert w.run(failed)["status"] == "failed"


# ---------------------------------------------------------------------- errors


def test_bad_input_answers_the_api_error_codes(w: Client, seeded: Dict[str, str]) -> None:
    unknown_job = "0" * 20
    for call in (lambda: w.job(unknown_job), lambda: w.logs(unknown_job), lambda: w.wait_job(unknown_job, 5)):
        with pytest.raises(weft.NotFound) as nf:
            call()
        assert (nf.value.status, nf.value.code) == (404, "not_found"), nf.value
        assert unknown_job in nf.value.detail
    with pytest.raises(weft.NotFound):
        w.wait(unknown_job, timeout=5)  # neither a job nor a pipeline run
    with pytest.raises(weft.BadRequest) as e:
        w.job("not-a-job-id")
    assert (e.value.status, e.value.code) == (400, "bad_request")

    bad_job = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: broken}\nspec: {}\n"
    with pytest.raises(weft.BadRequest) as e:
        w.submit(bad_job)
    assert (e.value.status, e.value.code) == (400, "bad_spec")
    bad_pipeline = _pipeline("py-bad", "py-bad").replace("steps.train.outputs.model, path", "steps.nope.outputs.model, path")
    with pytest.raises(weft.BadRequest) as e:
        w.submit(bad_pipeline)
    assert e.value.code == "bad_spec" and "nope" in e.value.detail
    with pytest.raises(weft.SpecError):
        w.submit("just: some yaml\n")

    with pytest.raises(weft.NotFound) as missing:
        w.get("py/no-such-tag:v1")
    assert missing.value.code == "not_found"
    with pytest.raises(weft.BadRequest) as e:
        w.tag("no version here", seeded["datasets/iris:v1"])
    assert e.value.code == "bad_request"
    with pytest.raises(weft.NotFound):
        w.register_model(unique("py-none"), "py/no-such-tag:v1")
    with pytest.raises(weft.NotFound):
        w.set_alias(unique("py-none"), "champion", 1)
    with pytest.raises(weft.BadRequest) as e:
        w.lineage("datasets/iris:v1", depth=0)
    assert e.value.code == "bad_request"
    with pytest.raises(weft.NotFound):
        w.run("0" * 20)
