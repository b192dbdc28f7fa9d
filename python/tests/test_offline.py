"""The client's own logic, without a daemon: spec reading, rows, errors,
the home's files, the listener check."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

import weft
from weft import _home, _spec
from weft.errors import error_for

REPO = Path(__file__).resolve().parents[2]


def test_specs_are_read_from_dicts_text_and_files(tmp_path: Path) -> None:
    assert _spec.load(REPO / "examples" / "jobs" / "train.yaml")[0] == "Job"
    kind, text = _spec.load(str(REPO / "examples" / "pipelines" / "iris.yaml"))
    assert kind == "Pipeline" and text == (REPO / "examples" / "pipelines" / "iris.yaml").read_text()
    kind, text = _spec.load({"kind": "Job", "spec": {"task": {}}})
    assert kind == "Job" and json.loads(text) == {"kind": "Job", "spec": {"task": {}}}
    assert _spec.load('{"kind": "Service", "spec": {}}')[0] == "Service"
    assert _spec.load("apiVersion: weft/v1\nkind: 'Pipeline'\n")[0] == "Pipeline"
    bad: object
    for bad in ("name: x\n", {"spec": {}}):
        with pytest.raises(weft.SpecError) as e:
            _spec.load(bad)  # type: ignore[arg-type]
        assert e.value.code == "bad_spec"
    with pytest.raises(weft.SpecError) as e:
        _spec.load(tmp_path / "missing.yaml")
    assert "missing.yaml" in e.value.detail


def test_uses_is_inlined_with_the_steps_own_fields_winning(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / "job.yaml").write_text(
        "kind: Job\nspec:\n  task: {wasm: {module: m:v1}}\n  timeout: 5m\n  retries: 2\n"
    )
    pipeline = {"kind": "Pipeline", "spec": {"steps": {"a": {"uses": "job.yaml", "retries": 0}}}}
    kind, text = _spec.load(pipeline, base_dir=tmp_path)
    step = json.loads(text)["spec"]["steps"]["a"]
    assert step == {"task": {"wasm": {"module": "m:v1"}}, "timeout": "5m", "retries": 0}
    assert "uses" in pipeline["spec"]["steps"]["a"]  # type: ignore[index]  # the caller's dict is untouched
    (tmp_path / "p.yaml").write_text("kind: Pipeline\nspec:\n  steps:\n    a:\n      uses: job.yaml\n")
    kind, text = _spec.load(tmp_path / "p.yaml")
    assert json.loads(text)["spec"]["steps"]["a"]["timeout"] == "5m"
    (tmp_path / "notjob.yaml").write_text("kind: Pipeline\n")
    with pytest.raises(weft.SpecError) as e:
        _spec.load({"kind": "Pipeline", "spec": {"steps": {"a": {"uses": "notjob.yaml"}}}}, base_dir=tmp_path)
    assert "spec.steps.a.uses" in e.value.detail


def test_runs_become_flat_rows() -> None:
    run = {
        "id": "r1", "name": "iris.train", "experiment": "iris", "status": "succeeded", "step": "train",
        "params": {"lr": "0.5", "epochs": "500"}, "metrics": {"loss": 0.1}, "tags": {"who": "me"},
        "metric_history": [{"key": "loss", "value": 0.1}],
    }
    row = weft.run_row(run)
    assert row["params.epochs"] == "500" and row["metrics.loss"] == 0.1 and row["tags.who"] == "me"
    assert "metric_history" not in row and "params" not in row
    assert all(not isinstance(v, (dict, list)) for v in row.values())


def test_errors_map_codes_then_statuses() -> None:
    e = error_for(404, "not_found", "no job")
    assert isinstance(e, weft.NotFound) and (e.status, e.code, e.detail) == (404, "not_found", "no job")
    assert "HTTP 404" in str(e) and "not_found" in str(e)
    assert isinstance(error_for(400, "invalid_parameter_value", ""), weft.BadRequest)
    assert isinstance(error_for(403, "outside_roots", ""), weft.Forbidden)
    assert isinstance(error_for(409, "exists", ""), weft.Conflict)
    assert isinstance(error_for(418, "teapot", ""), weft.WeftError)
    assert isinstance(error_for(502, "fetch_failed", ""), weft.ServerError)
    assert isinstance(error_for(503, "unknown", ""), weft.Unavailable)


def test_the_home_gives_the_address_and_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFT_HOME", str(tmp_path))
    assert _home.resolve_home() == tmp_path
    monkeypatch.delenv("WEFT_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert _home.resolve_home() == Path("/home/someone/.weft")
    (tmp_path / "api").write_text("http://127.0.0.1:1\n")
    assert _home.read_address(tmp_path) == "http://127.0.0.1:1"
    assert _home.read_token(tmp_path) is None
    (tmp_path / "api-token").write_text("a" * 64 + "\n")
    assert _home.read_token(tmp_path) == "a" * 64
    (tmp_path / "config.toml").write_text('[api]\ntoken = "from-the-config-0123"\n')
    assert _home.read_token(tmp_path) == "from-the-config-0123"
    (tmp_path / "config.toml").write_text("[api]\n")
    (tmp_path / "api-token").write_text("short")
    with pytest.raises(weft.WeftError):
        _home.read_token(tmp_path)
    # a client sends the token it read to the address it read
    (tmp_path / "api-token").write_text("b" * 64)
    c = weft.Client(home=tmp_path)
    assert c.addr == "http://127.0.0.1:1"
    assert c._t.token == "b" * 64
    # an address given without a home sends no home's token
    assert weft.Client(addr="127.0.0.1:1")._t.token is None


def test_a_port_served_by_this_user_passes_the_listener_check(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        (tmp_path / "api").write_text(f"http://127.0.0.1:{port}")
        _home.check_listener(tmp_path, f"http://127.0.0.1:{port}")  # ours: no error
        uids = _home._listener_uids(__import__("ipaddress").ip_address("127.0.0.1"), port)
        assert uids == [os.geteuid()]
    finally:
        s.close()


def test_the_token_is_not_sent_to_a_port_another_user_listens_on(tmp_path: Path) -> None:
    """After the daemon stopped, another local user may bind its port to
    collect the token: the client refuses to send it there."""
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("needs root to listen as another user")
    listener = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, socket, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        (tmp_path / "api").write_text(f"http://127.0.0.1:{port}\n")
        (tmp_path / "api-token").write_text("c" * 64)
        with pytest.raises(weft.Forbidden) as e:
            weft.Client(home=tmp_path)
        assert e.value.code == "impostor" and "uid 65534" in e.value.detail
    finally:
        listener.kill()
        listener.wait()


def test_proc_net_addresses_parse() -> None:
    import ipaddress
    import sys

    word = int.from_bytes(bytes([127, 0, 0, 1]), sys.byteorder)
    ip, port = _home._proc_addr(f"{word:08X}:1F90")  # type: ignore[misc]
    assert (str(ip), port) == ("127.0.0.1", 8080)
    mapped = b"".join(
        f"{int.from_bytes(w, sys.byteorder):08X}".encode()
        for w in (bytes(4), bytes(4), bytes([0, 0, 0xFF, 0xFF]), bytes([127, 0, 0, 1]))
    ).decode()
    ip, _ = _home._proc_addr(f"{mapped}:0050")  # type: ignore[misc]
    assert ip == ipaddress.ip_address("127.0.0.1")
    assert _home._proc_addr("zz:1") is None
