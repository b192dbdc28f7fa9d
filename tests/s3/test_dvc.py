"""dvc (with dvc-s3, its own env: ``$WEFT_PYENV_DVC``) pushing to and
pulling from an S3 remote on the gateway."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from s3util import replicated

REPO = Path(__file__).resolve().parents[2]


def dvc_bin() -> Path:
    env = os.environ.get("WEFT_PYENV_DVC") or str(REPO / "target" / "pyenv-dvc")
    exe = Path(env) / "bin" / "dvc"
    if not exe.exists():
        pytest.skip(f"no dvc at {exe}: make its env with scripts/python-env.sh dvc (or set WEFT_PYENV_DVC)")
    return exe


def dvc(env: Dict[str, str], cwd: Path, *args: str) -> str:
    p = subprocess.run([str(dvc_bin()), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=180)
    if p.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def tree(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def project(env: Dict[str, str], path: Path, bucket: str, endpoint: str, s3: Dict[str, Any]) -> None:
    """A git-less dvc project whose default remote is the gateway."""
    path.mkdir()
    dvc(env, path, "init", "--no-scm")
    dvc(env, path, "config", "core.analytics", "false")
    dvc(env, path, "remote", "add", "-d", "weft", f"s3://{bucket}/dvcstore")
    dvc(env, path, "remote", "modify", "weft", "endpointurl", endpoint)
    dvc(env, path, "remote", "modify", "weft", "region", s3.get("region", "us-east-1"))
    dvc(env, path, "remote", "modify", "--local", "weft", "access_key_id", s3["access_key"])
    dvc(env, path, "remote", "modify", "--local", "weft", "secret_access_key", s3["secret_key"])


def test_dvc_push_and_pull_through_the_gateway(
    s3: Dict[str, Any], s3a: Any, s3b: Any, bucket: str, clean_env: Dict[str, str], tmp_path: Path
) -> None:
    env = dict(clean_env, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site"))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k)  # the remote's --local config carries the key
    first = tmp_path / "first"
    project(env, first, bucket, s3["endpoints"][0], s3)
    data = first / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "iris.csv").write_bytes((REPO / "examples/data/iris/train/iris.csv").read_bytes())
    (data / "test.csv").write_bytes((REPO / "examples/data/iris/test/iris.csv").read_bytes())
    (data / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    dvc(env, first, "add", "data")
    dvc(env, first, "push")
    stored = s3a.list_objects_v2(Bucket=bucket, Prefix="dvcstore/")
    assert stored.get("KeyCount", 0) >= 4, stored  # three files and the folder's listing

    # a second checkout (the .dvc files and config, no data, no cache)
    # pulls through node 2
    second = tmp_path / "second"
    project(env, second, bucket, s3["endpoints"][1], s3)
    shutil.copy(first / "data.dvc", second / "data.dvc")
    replicated(s3a, s3b, bucket)
    dvc(env, second, "pull")
    assert tree(second / "data") == tree(data)
    status = dvc(env, second, "status", "--cloud")
    assert "in sync" in status, status
