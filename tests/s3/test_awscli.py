"""awscli (``aws s3 cp|sync|ls``) against the gateway, configured only by
environment variables and ``--endpoint-url``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from s3util import replicated

MiB = 1024 * 1024


def aws(env: Dict[str, str], endpoint: str, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    exe = Path(sys.executable).parent / "aws"
    if not exe.exists():
        pytest.fail(f"no awscli next to {sys.executable}: make the env with scripts/python-env.sh")
    p = subprocess.run(
        [str(exe), "--endpoint-url", endpoint, *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def tree(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_aws_s3_cp_sync_ls(s3: Dict[str, Any], s3a: Any, s3b: Any, bucket: str, clean_env: Dict[str, str], tmp_path: Path) -> None:
    ep1, ep2 = s3["endpoints"][0], s3["endpoints"][1]
    small = tmp_path / "notes.txt"
    small.write_text("weft over s3\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * MiB))  # over awscli's 8 MiB threshold: multipart
    aws(clean_env, ep1, "s3", "cp", str(small), f"s3://{bucket}/notes.txt")
    aws(clean_env, ep1, "s3", "cp", str(big), f"s3://{bucket}/blobs/big.bin")
    out = aws(clean_env, ep1, "s3", "cp", f"s3://{bucket}/notes.txt", "-").stdout
    assert out == "weft over s3\n"

    # a folder up through node 1, down through node 2
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    for rel, data in {"one.txt": b"1\n", "a/two.txt": b"2\n", "a/b/three.bin": os.urandom(300_000)}.items():
        (src / rel).write_bytes(data)
    aws(clean_env, ep1, "s3", "sync", str(src), f"s3://{bucket}/set/")
    replicated(s3a, s3b, bucket)
    dest = tmp_path / "dest"
    aws(clean_env, ep2, "s3", "sync", f"s3://{bucket}/set/", str(dest))
    assert tree(dest) == tree(src)
    # a second sync has nothing to do
    again = aws(clean_env, ep1, "s3", "sync", str(src), f"s3://{bucket}/set/").stdout
    assert "upload:" not in again, again
    # a change is synced
    (src / "one.txt").write_bytes(b"one, changed\n")
    changed = aws(clean_env, ep1, "s3", "sync", str(src), f"s3://{bucket}/set/").stdout
    assert "one.txt" in changed, changed

    aws(clean_env, ep2, "s3", "cp", f"s3://{bucket}/blobs/big.bin", str(tmp_path / "big.back"))
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()

    listing = aws(clean_env, ep1, "s3", "ls", f"s3://{bucket}/").stdout
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["blobs/", "set/", "notes.txt"], listing
    rec = aws(clean_env, ep1, "s3", "ls", "--recursive", f"s3://{bucket}/set/").stdout
    rows: List[List[str]] = [line.split() for line in rec.splitlines()]
    assert sorted(r[-1] for r in rows) == ["set/a/b/three.bin", "set/a/two.txt", "set/one.txt"]
    sizes = {r[-1]: int(r[2]) for r in rows}
    assert sizes["set/a/b/three.bin"] == 300_000
    buckets = aws(clean_env, ep2, "s3", "ls").stdout
    assert bucket in buckets.split()

    # refused with a wrong secret
    env = dict(clean_env, AWS_SECRET_ACCESS_KEY=clean_env["AWS_SECRET_ACCESS_KEY"] + "x")
    bad = aws(env, ep1, "s3", "ls", f"s3://{bucket}/", check=False)
    assert bad.returncode != 0 and "SignatureDoesNotMatch" in bad.stderr, bad.stderr
