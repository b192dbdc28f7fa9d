"""Fixtures: a real two-node devnet of the built ``weft`` binary
(``$WEFT_BIN``, else the repository's ``target/debug/weft``), started once
per session and always stopped; the example WASM programs
(``$WEFT_EXAMPLES``, else built by ``scripts/build-examples.sh``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator

import pytest

from weft import Client
from weft.devnet import Devnet

REPO = Path(__file__).resolve().parents[2]


def weft_bin() -> str:
    exe = os.environ.get("WEFT_BIN") or str(REPO / "target" / "debug" / "weft")
    if not os.access(exe, os.X_OK):
        pytest.fail(f"no weft binary at {exe}: build it (cargo build -p weft-node --bin weft) or set WEFT_BIN")
    return exe


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    exe = weft_bin()
    d = tempfile.mkdtemp(prefix="weft-pytest.")
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
def examples() -> Path:
    """The folder of the example WASM programs."""
    env = os.environ.get("WEFT_EXAMPLES")
    if env:
        return Path(env)
    p = subprocess.run(
        [str(REPO / "scripts" / "build-examples.sh")], capture_output=True, text=True, check=False
    )
    if p.returncode != 0:
        pytest.fail(f"scripts/build-examples.sh failed: {p.stderr[-2000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def w(devnet: Devnet) -> Client:
    """A client of node 1."""
    return devnet.client(0)


@pytest.fixture(scope="session")
def w2(devnet: Devnet) -> Client:
    """A client of node 2."""
    return devnet.client(1)


@pytest.fixture(scope="session")
def seeded(w: Client, examples: Path) -> Dict[str, str]:
    """The iris data and the example programs stored on node 1 under the
    tags the example specs use; returns their ids by tag."""
    ids = {"datasets/iris:v1": w.add(REPO / "examples" / "data" / "iris", tag="datasets/iris:v1")["id"]}
    for prog in ("split", "train", "evaluate", "sleepy"):
        tag = f"examples/{prog}:v1"
        ids[tag] = w.add(examples / f"{prog}.wasm", tag=tag)["id"]
    return ids
