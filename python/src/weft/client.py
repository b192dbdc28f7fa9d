"""The weft client: a thin layer over the daemon's REST API (``/api/v1``).

>>> import weft
>>> w = weft.Client()                     # the daemon of $WEFT_HOME (else ~/.weft)
>>> w.add(b"hello", tag="notes/hello:v1")["id"]
'ea8f163d...'
>>> w.get("notes/hello:v1")
b'hello'

Answers are the API's JSON as plain ``dict``\\ s and ``list``\\ s; errors are
:class:`~weft.errors.WeftError` subclasses carrying the API's ``code``,
``detail`` and HTTP ``status``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Union,
)

from . import _home, _spec
from ._http import CHUNK, Transport, segment
from .errors import BadRequest, Conflict, JobFailed, NotFound, WaitTimeout, WeftError

__all__ = ["Client", "LogLine", "ActiveRun", "run_row"]

JSON = Any
PathLike = Union[str, "os.PathLike[str]"]
#: A job, run, pipeline run or model version: its id, or the dict the API answered.
Ref = Union[str, Mapping[str, Any]]

#: Job states after which nothing changes.
JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
#: The longest one wait request asks the daemon to hold (it caps at 300 s).
_WAIT_SLICE_MS = 30_000


class LogLine(NamedTuple):
    """One line a task printed: ``stream`` is ``"stdout"`` or ``"stderr"``."""

    stream: str
    line: str


def _id(x: Ref) -> str:
    if isinstance(x, Mapping):
        v = x.get("id")
        if not isinstance(v, str):
            raise BadRequest("bad_request", "the record has no id")
        return v
    return str(x)


def run_row(run: Mapping[str, Any]) -> Dict[str, Any]:
    """A run as one flat row: its fields, then ``params.K``, ``metrics.K``
    (latest value) and ``tags.K`` columns, as MLflow's ``search_runs`` names
    them. Params and tags stay text, as logged."""
    row: Dict[str, Any] = {
        k: run.get(k)
        for k in (
            "id",
            "name",
            "experiment",
            "status",
            "job",
            "pipeline_run",
            "step",
            "node",
            "cached",
            "start_ms",
            "end_ms",
            "duration_ms",
        )
    }
    for prefix in ("params", "metrics", "tags"):
        for k, v in sorted((run.get(prefix) or {}).items()):
            row[f"{prefix}.{k}"] = v
    return row


class Client:
    """A connection to one weft daemon's API.

    Args:
        addr: the API's address (``http://127.0.0.1:4080`` or ``127.0.0.1:4080``).
            Default: what the daemon of ``home`` wrote to ``HOME/api``.
        token: the bearer token. Default: the home's (``api.token`` in
            ``HOME/config.toml``, else ``HOME/api-token``) when the address
            comes from the home or ``home`` is given; else none.
        home: the daemon's home. Default: ``$WEFT_HOME``, else ``~/.weft``.
        timeout: seconds to wait for the daemon on each request (waits for
            jobs add their own time to this).

    The token read from a home is sent only to a loopback port that a
    process of the home's user listens on (on Linux), as the CLI does.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        token: Optional[str] = None,
        *,
        home: Optional[PathLike] = None,
        timeout: float = 60.0,
    ) -> None:
        self.home: Optional[Path] = None
        if addr is None:
            self.home = _home.resolve_home(home)
            addr = _home.read_address(self.home)
            if token is None:
                _home.check_listener(self.home, addr)
                token = _home.read_token(self.home)
        elif token is None and home is not None:
            self.home = _home.resolve_home(home)
            token = _home.read_token(self.home)
        self._t = Transport(addr, token, timeout)

    @property
    def addr(self) -> str:
        """The API's base address."""
        return self._t.base

    def __repr__(self) -> str:
        return f"weft.Client({self.addr!r})"

    # ------------------------------------------------------------------ node

    def node(self) -> Dict[str, Any]:
        """This node: peer id, version, addresses, its advert, uptime."""
        return self._t.obj("GET", "/api/v1/node")

    def peers(self) -> List[Dict[str, Any]]:
        """The live peers this node sees, from their adverts."""
        return self._t.arr("GET", "/api/v1/peers")

    def transfers(self) -> Dict[str, Any]:
        """Fetches in progress, transfer counters, replication of pins."""
        return self._t.obj("GET", "/api/v1/transfers")

    # ------------------------------------------------------------- artifacts

    def add(
        self,
        source: Union[bytes, bytearray, memoryview, PathLike, IO[bytes]],
        *,
        tag: Optional[str] = None,
        pin: bool = True,
        server_side: bool = False,
    ) -> Dict[str, Any]:
        """Stores bytes, a file or a folder; returns ``{id, kind, size, files, new_blobs}``.

        Args:
            source: bytes; a binary file object (streamed, chunked); or a path.
                A file's bytes are streamed to the daemon. A folder becomes a
                tree: the daemon reads it by path, so it must be on the
                daemon's host (under its ``api.path_roots``).
            tag: a tag (``REPO:VERSION``) to point at the result.
            pin: keep it from garbage collection (default).
            server_side: import a file by path too (one pass on the daemon's
                host, no copy through HTTP).
        """
        query = {"tag": tag, "pin": pin}
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self._t.obj(
                "POST", "/api/v1/artifacts", query=query, body=bytes(source),
                content_type="application/octet-stream",
            )
        if not isinstance(source, (str, os.PathLike)):
            stream = source
            return self._t.obj(
                "POST", "/api/v1/artifacts", query=query, body=_chunks(stream),
                content_type="application/octet-stream",
            )
        path = Path(source)
        if server_side or path.is_dir():
            return self._t.obj(
                "POST", "/api/v1/artifacts/import",
                json_body={"path": str(path.absolute()), "tag": tag, "pin": pin},
            )
        try:
            f = open(path, "rb")
        except OSError as e:
            raise BadRequest("bad_input", f"{path}: {e}") from e
        with f:
            size = os.fstat(f.fileno()).st_size
            return self._t.obj(
                "POST", "/api/v1/artifacts", query=query, body=f, length=size,
                content_type="application/octet-stream",
            )

    def fetch(
        self, ref: str, *, progress: Optional[Callable[[Dict[str, Any]], None]] = None
    ) -> Dict[str, Any]:
        """Makes an artifact whole on this node, fetching what is missing
        from the mesh; returns the fetch report. ``progress`` is called with
        each progress event (``bytes_done``, ``bytes_total``, ``rate_bps``, ``peers``)."""
        resp = self._t.request("POST", f"/api/v1/artifacts/{segment(ref)}/fetch")
        for line in resp.iter_lines():
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as e:
                raise WeftError("decode", f"unexpected progress line from the daemon: {e}") from e
            kind = ev.get("event")
            if kind == "progress" and progress is not None:
                progress(ev)
            elif kind == "done":
                return ev.get("report") or {}
            elif kind == "error":
                from .errors import error_for

                code = str(ev.get("error", "fetch_failed"))
                raise error_for(404 if code == "not_found" else 502, code, str(ev.get("detail", "")))
        raise WeftError("fetch_failed", "the daemon ended the fetch without a result")

    def stat(self, ref: str) -> Dict[str, Any]:
        """``{id, kind, size}`` of an artifact held on this node (``HEAD``)."""
        r = self._t.request("HEAD", f"/api/v1/artifacts/{segment(ref)}")
        r.close()
        return {
            "id": r.header("x-weft-id"),
            "kind": r.header("x-weft-kind"),
            "size": int(r.header("content-length") or 0),
        }

    def stream(self, ref: str, *, fetch: bool = True, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """A file artifact's bytes in chunks as they arrive (fetched from the
        mesh first unless ``fetch=False``). Raises :class:`BadRequest`
        (``is_tree``) for a folder."""
        if fetch:
            self.fetch(ref)
        resp = self._t.request("GET", f"/api/v1/artifacts/{segment(ref)}")
        if resp.header("x-weft-kind") == "tree":
            resp.close()
            raise BadRequest(
                "is_tree", f"{ref} is a tree (a folder); write it out with get({ref!r}, dest)"
            )
        return resp.iter_chunks(chunk_size)

    def get(
        self,
        ref: str,
        dest: Optional[PathLike] = None,
        *,
        fetch: bool = True,
        force: bool = False,
    ) -> Any:
        """An artifact by id, id prefix, tag, ``models/NAME@ALIAS`` or ``models/NAME:N``.

        Without ``dest``: a file's bytes. With ``dest``: writes the file (or
        the folder, recursively) there, streamed, and returns ``dest`` as a
        :class:`~pathlib.Path`. Fetches from the mesh first what this node
        lacks, unless ``fetch=False``. An existing ``dest`` is written over
        only with ``force=True`` (files of a folder there that the artifact
        lacks stay).
        """
        if fetch:
            self.fetch(ref)
        if dest is None:
            return b"".join(self.stream(ref, fetch=False))
        out = Path(dest)
        if (out.exists() or out.is_symlink()) and not force:
            raise Conflict("exists", f"{out} exists; pass force=True to replace it")
        self._write(ref, out)
        return out

    def _write(self, ref: str, out: Path) -> None:
        resp = self._t.request("GET", f"/api/v1/artifacts/{segment(ref)}")
        if resp.header("x-weft-kind") == "tree":
            listing = resp.json()
            if out.is_symlink() or (out.exists() and not out.is_dir()):
                out.unlink()
            out.mkdir(parents=True, exist_ok=True)
            for e in listing.get("entries", []):
                name = e["name"]
                if name in ("", ".", "..") or "/" in name:
                    raise WeftError("bad_tree", f"{ref}: entry name {name!r} is not a plain name")
                self._write(e["hash"], out / name)
                if e.get("kind") == "file" and e.get("executable"):
                    os.chmod(out / name, 0o755)
            return
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_chunks():
                    f.write(chunk)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            resp.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def artifacts(self, all: bool = False) -> List[Dict[str, Any]]:
        """Artifacts held here (roots; ``all=True`` for every blob)."""
        return self._t.arr("GET", "/api/v1/artifacts", query={"all": all})

    # ------------------------------------------------------------------ tags

    def tag(self, name: str, ref: str) -> Dict[str, Any]:
        """Points tag ``name`` (``REPO:VERSION``) at ``ref`` (an id, prefix or
        another tag); returns the new version ``{target, hlc, origin}``."""
        return self._t.obj("PUT", f"/api/v1/tags/{segment(name)}", json_body={"ref": ref})

    def tags(self) -> List[Dict[str, Any]]:
        """Every live tag."""
        return self._t.arr("GET", "/api/v1/tags")

    def resolve(self, name: str) -> str:
        """The id tag ``name`` points at."""
        return str(self._t.json("GET", f"/api/v1/tags/{segment(name)}")["id"])

    def untag(self, name: str) -> Dict[str, Any]:
        """Removes a tag (a removal is a version of it too)."""
        return self._t.obj("DELETE", f"/api/v1/tags/{segment(name)}")

    def tag_history(self, name: str) -> List[Dict[str, Any]]:
        """Every version tag ``name`` has had."""
        return self._t.arr("GET", f"/api/v1/tag-history/{segment(name)}")

    def pin(self, ref: str, replicas: Optional[int] = None) -> Dict[str, Any]:
        """Pins an artifact (fetching it here first), optionally asking for ``replicas`` copies."""
        body = {} if replicas is None else {"replicas": replicas}
        return self._t.obj("PUT", f"/api/v1/pins/{segment(ref)}", json_body=body)

    def unpin(self, ref: str) -> None:
        """Unpins an artifact."""
        self._t.request("DELETE", f"/api/v1/pins/{segment(ref)}").close()

    def pins(self) -> List[Dict[str, Any]]:
        """Pinned artifacts."""
        return self._t.arr("GET", "/api/v1/pins")

    # ------------------------------------------------------ jobs, pipelines

    def submit(
        self,
        spec: Union[Mapping[str, Any], str, "os.PathLike[str]"],
        *,
        params: Optional[Mapping[str, Union[str, int, float]]] = None,
        force: bool = False,
        force_steps: Sequence[str] = (),
        local: bool = False,
        base_dir: Optional[PathLike] = None,
    ) -> Dict[str, Any]:
        """Submits a job, starts a pipeline run or applies a service.

        Args:
            spec: a dict, YAML (or JSON) text, or the path of a spec file; its
                ``kind`` (``Job``, ``Pipeline``, ``Service``) decides.
            params: a pipeline's param overrides.
            force: run every pipeline step, reusing no cached result.
            force_steps: pipeline steps to run without their cached results.
            local: run a job on this node only.
            base_dir: where a pipeline step's ``uses:`` files are found
                (default: the spec file's folder, else the current folder).

        Returns:
            The job's status (``{id, state, ...}``), the pipeline run
            (``{id, pipeline, state, steps, ...}``) or the service revision.
        """
        kind, text = _spec.load(spec, base_dir)
        if kind == "Job":
            if params or force or force_steps:
                raise BadRequest("bad_request", "params, force and force_steps are for pipelines")
            return self._t.obj("POST", "/api/v1/jobs", json_body={"spec": text, "local": local})
        if kind == "Pipeline":
            body: Dict[str, Any] = {
                "spec": text,
                "params": dict(params or {}),
                "force": force,
                "force_steps": list(force_steps),
            }
            return self._t.obj("POST", "/api/v1/pipelines/runs", json_body=body)
        if kind == "Service":
            return self._t.obj("POST", "/api/v1/services", json_body={"spec": text})
        raise BadRequest("bad_spec", f"kind {kind!r}: submit takes a Job, a Pipeline or a Service")

    def job(self, job: Ref) -> Dict[str, Any]:
        """A job's status: state, node, result (outputs, logs, metrics), history."""
        return self._t.obj("GET", f"/api/v1/jobs/{segment(_id(job))}")

    def jobs(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Jobs this node knows of."""
        return self._t.arr("GET", "/api/v1/jobs", query={"limit": limit})

    def pipeline_run(self, run: Ref) -> Dict[str, Any]:
        """A pipeline run: its state and each step's."""
        return self._t.obj("GET", f"/api/v1/pipelines/runs/{segment(_id(run))}")

    def pipeline_runs(self) -> List[Dict[str, Any]]:
        """Every pipeline run this node knows, newest first."""
        return self._t.arr("GET", "/api/v1/pipelines/runs")

    def cancel(self, x: Ref) -> Dict[str, Any]:
        """Cancels a job or a pipeline run."""
        if _is_pipeline(x):
            return self._t.obj("POST", f"/api/v1/pipelines/runs/{segment(_id(x))}/cancel")
        try:
            return self._t.obj("POST", f"/api/v1/jobs/{segment(_id(x))}/cancel")
        except NotFound:
            if isinstance(x, Mapping):
                raise
            return self._t.obj("POST", f"/api/v1/pipelines/runs/{segment(_id(x))}/cancel")

    def wait(self, x: Ref, timeout: Optional[float] = None, *, check: bool = False) -> Dict[str, Any]:
        """Waits for a job or a pipeline run to end; returns its last status.

        Args:
            x: what :meth:`submit` returned, or an id (a job's, else a pipeline run's).
            timeout: seconds; :class:`WaitTimeout` after that. Default: no limit.
            check: raise :class:`JobFailed` unless it succeeded.
        """
        if _is_pipeline(x):
            return self.wait_pipeline(x, timeout, check=check)
        if isinstance(x, Mapping):
            return self.wait_job(x, timeout, check=check)
        try:
            self.job(x)
        except NotFound:
            return self.wait_pipeline(x, timeout, check=check)
        return self.wait_job(x, timeout, check=check)

    def wait_job(self, job: Ref, timeout: Optional[float] = None, *, check: bool = False) -> Dict[str, Any]:
        """Waits for a job to end (see :meth:`wait`)."""
        jid = _id(job)
        s = self._wait(f"/api/v1/jobs/{segment(jid)}", lambda s: s.get("state") in JOB_TERMINAL, timeout, f"job {jid}")
        if check and s.get("state") != "succeeded":
            raise JobFailed(
                str(s.get("state")),
                f"job {jid} {s.get('state')}: {s.get('reason') or _job_error(s) or 'no reason given'}",
                s,
            )
        return s

    def wait_pipeline(self, run: Ref, timeout: Optional[float] = None, *, check: bool = False) -> Dict[str, Any]:
        """Waits for a pipeline run to end (see :meth:`wait`)."""
        rid = _id(run)
        s = self._wait(
            f"/api/v1/pipelines/runs/{segment(rid)}", lambda s: s.get("state") != "running", timeout, f"pipeline run {rid}"
        )
        if check and s.get("state") != "succeeded":
            failed = [f"{st['name']}: {st.get('reason', st.get('state'))}" for st in s.get("steps", []) if st.get("state") == "failed"]
            raise JobFailed(
                str(s.get("state")),
                f"pipeline run {rid} {s.get('state')}: {s.get('reason') or '; '.join(failed) or 'no reason given'}",
                s,
            )
        return s

    def _wait(self, path: str, done: Callable[[Dict[str, Any]], bool], timeout: Optional[float], what: str) -> Dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = _WAIT_SLICE_MS
            if deadline is not None:
                wait_ms = min(wait_ms, int((deadline - time.monotonic()) * 1000))
            if wait_ms <= 0:
                s = self._t.obj("GET", path)
                if done(s):
                    return s
                raise WaitTimeout("timeout", f"{what} is still {s.get('state')} after {timeout} s")
            s = self._t.obj("GET", path, query={"wait_ms": wait_ms}, timeout=self._t.timeout + wait_ms / 1000)
            if done(s):
                return s

    def logs(self, job: Ref, *, follow: bool = False, timeout: Optional[float] = None) -> Iterator[LogLine]:
        """A job's output, line by line (:class:`LogLine`: ``stream``, ``line``).

        The API hands a task's stdout and stderr over once the task has
        ended (they are stored as an artifact), so lines come then: with
        ``follow=True`` the generator first waits (up to ``timeout``) for the
        job to end; without it, a job still running yields nothing. An
        unknown job raises :class:`NotFound` here, not on iteration.
        """
        jid = _id(job)
        first = None if follow else self._t.json("GET", f"/api/v1/jobs/{segment(jid)}/logs")
        if first is None:
            self.job(jid)  # unknown: raise now

        def lines() -> Iterator[LogLine]:
            v = first
            if v is None:
                self.wait_job(jid, timeout)
                v = self._t.json("GET", f"/api/v1/jobs/{segment(jid)}/logs")
            for stream in ("stdout", "stderr"):
                for line in str(v.get(stream) or "").splitlines():
                    yield LogLine(stream, line)

        return lines()

    # ------------------------------------------------------------------ runs

    def runs(
        self, experiment: Optional[str] = None, *, limit: Optional[int] = None, raw: bool = False
    ) -> List[Dict[str, Any]]:
        """Runs (every job and pipeline step is one, plus those logged with
        :meth:`create_run`), newest first, as flat rows ready for
        ``pandas.DataFrame(rows)``: ``id``, ``name``, ``experiment``,
        ``status``, ``step``, ``node``, ``duration_ms``, ... and a column per
        param (``params.lr``), metric (``metrics.accuracy``, the latest value)
        and tag (``tags.K``). ``raw=True`` answers the API's nested runs."""
        runs = self._t.arr("GET", "/api/v1/runs", query={"experiment": experiment, "limit": limit})
        return runs if raw else [run_row(r) for r in runs]

    def run(self, run: Ref, *, history: bool = True) -> Dict[str, Any]:
        """One run, nested: params, tags, latest metrics and every metric
        point logged (``metric_history``; dropped with ``history=False``)."""
        r = self._t.obj("GET", f"/api/v1/runs/{segment(_id(run))}")
        if not history:
            r["metric_history"] = []
        return r

    def metrics(self, run: Ref) -> Dict[str, float]:
        """The latest value of each metric of a run (a job's id is its run's)."""
        return dict(self.run(run, history=False).get("metrics") or {})

    def create_run(
        self,
        name: str,
        *,
        experiment: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Records a run of your own (MLflow style); returns it. Log to it
        with :meth:`log_metrics` and friends, then :meth:`end_run`."""
        body = {
            "name": name,
            "experiment": experiment,
            "params": _kv(params),
            "tags": _kv(tags),
        }
        return self._t.obj("POST", "/api/v1/runs", json_body=body)

    def start_run(
        self,
        name: str,
        *,
        experiment: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, Any]] = None,
    ) -> "ActiveRun":
        """:meth:`create_run` as a context manager: the run ends ``succeeded``
        when the block ends, ``failed`` when it raises."""
        return ActiveRun(self, self.create_run(name, experiment=experiment, params=params, tags=tags))

    def log_metrics(
        self,
        run: Ref,
        metrics: Union[Mapping[str, float], Iterable[Mapping[str, Any]]],
        *,
        step: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
    ) -> None:
        """Logs metrics to a run: ``{"loss": 0.3}`` (at ``step``), or points
        ``[{"key", "value", "step", "timestamp"}]``. Sent in batches of at most 1000."""
        if isinstance(metrics, Mapping):
            points = [
                {"key": k, "value": float(v), "step": step, "timestamp": timestamp_ms}
                for k, v in metrics.items()
            ]
        else:
            points = [dict(p) for p in metrics]
        for p in points:
            for k in ("step", "timestamp"):
                if p.get(k) is None:
                    p.pop(k, None)
        for i in range(0, max(len(points), 1), 1000):
            self.log_batch(run, metrics=points[i : i + 1000])

    def log_params(self, run: Ref, params: Mapping[str, Any]) -> None:
        """Logs params (write-once: the same value again is fine, another is
        refused with ``invalid_parameter_value``)."""
        items = _kv(params)
        for i in range(0, max(len(items), 1), 100):
            self.log_batch(run, params=items[i : i + 100])

    def set_tags(self, run: Ref, tags: Mapping[str, Any]) -> None:
        """Sets tags on a run (the last value wins)."""
        items = _kv(tags)
        for i in range(0, max(len(items), 1), 100):
            self.log_batch(run, tags=items[i : i + 100])

    def log_batch(
        self,
        run: Ref,
        *,
        metrics: Sequence[Mapping[str, Any]] = (),
        params: Sequence[Mapping[str, str]] = (),
        tags: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """``POST /api/v1/runs/ID/log-batch`` as MLflow's ``log-batch``
        (``[{"key", "value", ...}]`` lists, MLflow's batch limits)."""
        body = {"metrics": list(metrics), "params": list(params), "tags": list(tags)}
        self._t.json("POST", f"/api/v1/runs/{segment(_id(run))}/log-batch", json_body=body)

    def end_run(self, run: Ref, status: str = "succeeded") -> Dict[str, Any]:
        """Ends a run: ``succeeded``, ``failed`` or ``cancelled``; returns it."""
        return self._t.obj("POST", f"/api/v1/runs/{segment(_id(run))}/end", json_body={"status": status})

    def openlineage(self, run: Ref) -> List[Dict[str, Any]]:
        """A run as OpenLineage RunEvents (START, then COMPLETE/FAIL/ABORT)."""
        return self._t.arr("GET", f"/api/v1/runs/{segment(_id(run))}/openlineage")

    # ---------------------------------------------------------------- models

    def register_model(self, name: str, ref: str) -> Dict[str, Any]:
        """Registers ``ref`` (an id, a tag, ``models/X@alias`` or a run's
        output ``JOB_ID:/outputs/PATH``) as the next version of model
        ``name``; returns ``{name, version, reference, artifact, run}``."""
        return self._t.obj("POST", "/api/v1/models", json_body={"name": name, "ref": ref})

    def set_alias(self, name: str, alias: str, version: int) -> Dict[str, Any]:
        """Moves ``models/NAME@ALIAS`` to ``version``; returns the move
        (``{name, alias, version, from, ...}``)."""
        return self._t.obj(
            "PUT", f"/api/v1/model-aliases/{segment(f'{name}@{alias}')}", json_body={"version": int(version)}
        )

    def rollback_alias(self, name: str, alias: str) -> Dict[str, Any]:
        """Moves an alias back to where its last move took it from."""
        return self._t.obj("POST", f"/api/v1/model-rollbacks/{segment(f'{name}@{alias}')}")

    def models(self) -> List[Dict[str, Any]]:
        """Every model: versions, aliases."""
        return self._t.arr("GET", "/api/v1/models")

    def model(self, name: str) -> Dict[str, Any]:
        """A model's versions (with their runs' metrics) and aliases with their history."""
        return self._t.obj("GET", f"/api/v1/models/{segment(name)}")

    def lineage(self, ref: str, *, direction: str = "up", depth: Optional[int] = None) -> Dict[str, Any]:
        """What made an artifact (``direction="up"``), or what was made from
        it (``"down"``): ``{root, nodes, edges, truncated}``; nodes are
        artifacts (``added``: no job made it) and jobs; edges follow the data."""
        return self._t.obj(
            "GET", f"/api/v1/lineage/{segment(ref)}", query={"direction": direction, "depth": depth}
        )

    # -------------------------------------------------------------- services

    def services(self) -> List[Dict[str, Any]]:
        """Every service."""
        return self._t.arr("GET", "/api/v1/services")

    def service(self, name: str) -> Dict[str, Any]:
        """A service's revision, replicas and rollout."""
        return self._t.obj("GET", f"/api/v1/services/{segment(name)}")


class ActiveRun:
    """A run being logged to (from :meth:`Client.start_run`)."""

    def __init__(self, client: Client, run: Dict[str, Any]) -> None:
        self.client = client
        self.info = run
        self.id: str = run["id"]

    def log_metrics(self, metrics: Mapping[str, float], *, step: Optional[int] = None) -> None:
        """See :meth:`Client.log_metrics`."""
        self.client.log_metrics(self.id, metrics, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """See :meth:`Client.log_params`."""
        self.client.log_params(self.id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """See :meth:`Client.set_tags`."""
        self.client.set_tags(self.id, tags)

    def __enter__(self) -> "ActiveRun":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.client.end_run(self.id, "succeeded" if exc_type is None else "failed")


def _kv(m: Optional[Mapping[str, Any]]) -> List[Dict[str, str]]:
    return [{"key": str(k), "value": str(v)} for k, v in (m or {}).items()]


def _is_pipeline(x: Ref) -> bool:
    return isinstance(x, Mapping) and "pipeline" in x and "steps" in x


def _job_error(s: Mapping[str, Any]) -> Optional[str]:
    err = (s.get("result") or {}).get("error")
    if isinstance(err, (list, tuple)) and len(err) == 2:
        return f"{err[0]}: {err[1]}"
    return None


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        b = f.read(CHUNK)
        if not b:
            return
        yield b
