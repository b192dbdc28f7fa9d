"""A local devnet for notebooks and tests: ``weft devnet up`` on loopback,
one client per node, always stopped with :meth:`Devnet.down` (or ``with``).

>>> from weft.devnet import Devnet
>>> with Devnet.up(nodes=2) as net:
...     net.client(0).add(b"hi")["id"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .client import Client
from .errors import WeftError

__all__ = ["Devnet"]

PathLike = Union[str, "os.PathLike[str]"]


class Devnet:
    """A running devnet: ``dir`` holds ``devnet.json`` and one home per node
    (``node1``, ``node2``, ...); ``s3`` is ``dir/s3.json`` when the nodes
    serve the S3 gateway."""

    def __init__(self, dir: Path, binary: str, nodes: List[Dict[str, Any]], output: str) -> None:
        self.dir = dir
        self.binary = binary
        self.nodes = nodes
        #: What ``weft devnet up`` printed.
        self.output = output

    @classmethod
    def up(
        cls,
        nodes: int = 2,
        *,
        binary: Optional[str] = None,
        dir: Optional[PathLike] = None,
        timeout: float = 120.0,
    ) -> "Devnet":
        """Starts ``nodes`` daemons with ``weft devnet up --dir DIR --nodes N``.

        Args:
            binary: the ``weft`` binary; default ``$WEFT_BIN``, else ``weft`` on ``PATH``.
            dir: where the homes go; default a new temporary folder.
        """
        exe = binary or os.environ.get("WEFT_BIN") or shutil.which("weft")
        if not exe:
            raise WeftError("no_binary", "no weft binary: set WEFT_BIN or put weft on PATH")
        d = Path(dir) if dir is not None else Path(tempfile.mkdtemp(prefix="weft-devnet."))
        cmd = [exe, "devnet", "up", "--dir", str(d), "--nodes", str(nodes)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _down(exe, d)
            raise WeftError("devnet", f"`{' '.join(cmd)}` did not finish in {timeout} s") from e
        if p.returncode != 0:
            logs = _log_tails(d)
            _down(exe, d)
            raise WeftError(
                "devnet", f"`{' '.join(cmd)}` failed ({p.returncode}):\n{p.stdout}{p.stderr}{logs}"
            )
        try:
            state = json.loads((d / "devnet.json").read_text())
        except (OSError, ValueError) as e:
            _down(exe, d)
            raise WeftError("devnet", f"{d / 'devnet.json'}: {e}") from e
        return cls(d, exe, list(state["nodes"]), p.stdout)

    def home(self, i: int = 0) -> Path:
        """Node ``i``'s home (0-based)."""
        return Path(self.nodes[i]["home"])

    def client(self, i: int = 0, **kw: Any) -> Client:
        """A client of node ``i`` (0-based), found through its home."""
        return Client(home=self.home(i), **kw)

    def clients(self) -> List[Client]:
        """A client of every node."""
        return [self.client(i) for i in range(len(self.nodes))]

    @property
    def s3(self) -> Optional[Dict[str, Any]]:
        """``dir/s3.json`` (``access_key``, ``secret_key``, ``region``,
        ``endpoints``), or ``None`` when the nodes serve no S3 gateway."""
        try:
            conf = json.loads((self.dir / "s3.json").read_text())
        except FileNotFoundError:
            return None
        if not isinstance(conf, dict):
            raise WeftError("devnet", f"{self.dir / 's3.json'} is not a JSON object")
        return conf

    def cli(self, i: int, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        """Runs ``weft --home HOME_i ARGS...``."""
        p = subprocess.run(
            [self.binary, "--home", str(self.home(i)), *args], capture_output=True, text=True
        )
        if check and p.returncode != 0:
            raise WeftError("cli", f"weft {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p

    def logs(self) -> str:
        """The tail of every node's ``daemon.log``."""
        return _log_tails(self.dir)

    def down(self) -> None:
        """Stops the daemons (``weft devnet down``)."""
        _down(self.binary, self.dir)

    def __enter__(self) -> "Devnet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _down(exe: str, d: Path) -> None:
    subprocess.run(
        [exe, "devnet", "down", "--dir", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _log_tails(d: Path, lines: int = 20) -> str:
    out = []
    for log in sorted(d.glob("node*/daemon.log")):
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"\n--- {log} (last {lines} lines)\n" + "\n".join(tail))
    return "".join(out)
