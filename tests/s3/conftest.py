"""Fixtures for the S3 gateway suite: a real two-node devnet (S3 is on in
every devnet node: ``DIR/s3.json`` names each node's endpoint and the
shared key), clients of each node, a fresh bucket per test.

Every test skips, saying why, when the binary's devnet writes no
``s3.json`` (a build without the gateway)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from weft.devnet import Devnet

from s3util import boto3_client

REPO = Path(__file__).resolve().parents[2]


def weft_bin() -> str:
    exe = os.environ.get("WEFT_BIN") or str(REPO / "target" / "debug" / "weft")
    if not os.access(exe, os.X_OK):
        pytest.fail(f"no weft binary at {exe}: build it (cargo build -p weft-node --bin weft) or set WEFT_BIN")
    return exe


@pytest.fixture(scope="session")
def s3_devnet() -> Iterator[Devnet]:
    exe = weft_bin()
    d = tempfile.mkdtemp(prefix="weft-s3-pytest.")
    try:
        net = Devnet.up(2, binary=exe, dir=d)  # stops what it started if it fails
        try:
            yield net
        finally:
            net.down()
    finally:
        if not os.environ.get("WEFT_KEEP_DEVNET"):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(s3_devnet: Devnet) -> Dict[str, Any]:
    """``DIR/s3.json``: ``access_key``, ``secret_key``, ``region``, ``endpoints`` (node order)."""
    conf = s3_devnet.s3
    if conf is None:
        pytest.skip(
            f"no S3 gateway: `weft devnet up` wrote no {s3_devnet.dir / 's3.json'} "
            "(this weft binary is built without the gateway)"
        )
    assert conf.get("v") == 1, conf
    assert len(conf["endpoints"]) == len(s3_devnet.nodes), conf
    return conf


@pytest.fixture
def s3a(s3: Dict[str, Any]) -> Any:
    """boto3 on node 1."""
    return boto3_client(s3, 0)


@pytest.fixture
def s3b(s3: Dict[str, Any]) -> Any:
    """boto3 on node 2."""
    return boto3_client(s3, 1)


@pytest.fixture
def bucket(s3a: Any) -> str:
    """A new bucket, made through node 1."""
    name = f"py-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=name)
    return name


@pytest.fixture
def clean_env(tmp_path: Path, s3: Dict[str, Any]) -> Dict[str, str]:
    """An environment for the command-line clients: the key in
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a throwaway ``HOME`` and
    AWS config files, no proxy."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "aws-config").write_text("")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DVC_", "MLFLOW_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "HOME": str(home),
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_ACCESS_KEY_ID": s3["access_key"],
            "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
            "AWS_DEFAULT_REGION": s3.get("region", "us-east-1"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env
