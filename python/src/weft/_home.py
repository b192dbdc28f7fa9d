"""Finding the local daemon the way the ``weft`` CLI does: the home is
``WEFT_HOME``, else ``~/.weft``; the daemon writes its API address to
``HOME/api`` and its token to ``HOME/api-token`` (mode 0600); ``api.token``
in ``HOME/config.toml``, when set, is the token instead."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple, Union

from .errors import Forbidden, NoDaemon, WeftError

PathLike = Union[str, "os.PathLike[str]"]

#: The longest token file read back (as the CLI).
API_TOKEN_MAX = 1024


def resolve_home(home: Optional[PathLike] = None) -> Path:
    """The home named by ``home``, else ``WEFT_HOME``, else ``~/.weft``."""
    if home is not None:
        return Path(home)
    env = os.environ.get("WEFT_HOME")
    if env:
        return Path(env)
    user = os.environ.get("HOME")
    if not user:
        raise WeftError("no_home", "no home directory: pass home= or set WEFT_HOME")
    return Path(user) / ".weft"


def read_address(home: Path) -> str:
    """The API address the running daemon wrote into the home."""
    try:
        text = (home / "api").read_text().strip()
    except FileNotFoundError:
        raise NoDaemon(
            "no_daemon",
            f"no weft daemon is running on {home}; start one with `weft daemon` "
            "(or `weft devnet up`), or pass addr=",
        ) from None
    except OSError as e:
        raise WeftError("home", f"{home / 'api'}: {e}") from e
    if not text:
        raise NoDaemon("no_daemon", f"{home / 'api'} is empty; the daemon may be starting, try again")
    return text


def read_token(home: Path) -> Optional[str]:
    """``api.token`` from the home's config, else the ``api-token`` file, else ``None``."""
    configured = _config_token(home / "config.toml")
    if configured:
        return configured
    path = home / "api-token"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise Forbidden(
            "token_unreadable",
            f"{path} cannot be read; run as the daemon's user (the token file is mode 0600)",
        ) from None
    if len(data) > API_TOKEN_MAX:
        raise WeftError("bad_token", f"{path}: longer than {API_TOKEN_MAX} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise WeftError("bad_token", f"{path}: not text") from None
    token = text[:-1] if text.endswith("\n") else text
    if len(token) < 16 or not all(33 <= ord(c) <= 126 for c in token):
        raise WeftError("bad_token", f"{path}: not a weft API token")
    return token


def _config_token(path: Path) -> Optional[str]:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        import tomllib  # Python 3.11+

        try:
            api = tomllib.loads(text).get("api", {})
        except tomllib.TOMLDecodeError:
            return None
        token = api.get("token") if isinstance(api, dict) else None
        return token if isinstance(token, str) and token else None
    except ImportError:  # pragma: no cover - older Pythons
        section = None
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"^\[([^\]]+)\]$", line)
            if m:
                section = m.group(1).strip()
                continue
            if section == "api":
                m = re.match(r'^token\s*=\s*"([^"]*)"', line)
                if m and m.group(1):
                    return m.group(1)
        return None


def check_listener(home: Path, base: str) -> None:
    """Refuses to send the home's token to a loopback port that a process of
    another user listens on (the daemon may have stopped and someone else
    bound its port), as the CLI does. Linux only; elsewhere a no-op."""
    m = re.match(r"^http://(\[[^\]]+\]|[^:/]+):(\d+)/?$", base)
    if not m:
        return
    host = m.group(1).strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if not ip.is_loopback:
        return
    try:
        owner = os.stat(home / "api").st_uid
    except OSError:
        return
    for uid in _listener_uids(ip, int(m.group(2))):
        if uid != owner:
            raise Forbidden(
                "impostor",
                f"{host}:{m.group(2)} (from {home / 'api'}) is served by uid {uid}, not by uid {owner} "
                "that runs the daemon, so the API token is not sent there; the daemon may have "
                "stopped: start it again with `weft daemon`",
            )


def _listener_uids(ip: "ipaddress._BaseAddress", port: int) -> List[int]:
    out: List[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != "0A":  # LISTEN
                continue
            parsed = _proc_addr(fields[1])
            if parsed is None:
                continue
            lip, lport = parsed
            if lport != port or not (lip == ip or lip.is_unspecified):  # type: ignore[attr-defined]
                continue
            try:
                out.append(int(fields[7]))
            except ValueError:
                continue
    return out


def _proc_addr(s: str) -> Optional[Tuple["ipaddress._BaseAddress", int]]:
    """Parses ``0100007F:1F90``: each 32-bit word of the address in host byte order."""
    try:
        hexip, hexport = s.split(":")
        port = int(hexport, 16)
        words = [int(hexip[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexip), 8)]
    except ValueError:
        return None
    raw = b"".join(words)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw), port
    if len(raw) == 16:
        v6 = ipaddress.IPv6Address(raw)
        return (v6.ipv4_mapped or v6), port
    return None
