"""The HTTP layer: one ``http.client`` connection per request, the bearer
token on every request, errors turned into :class:`~weft.errors.WeftError`."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union

from .errors import ConnectionFailed, WeftError, error_for

Body = Union[bytes, IO[bytes], Iterable[bytes], None]

#: Bytes read from or written to a socket at a time when streaming.
CHUNK = 1 << 20

USER_AGENT = "weft-python/0.1.0"


def segment(s: str) -> str:
    """Percent-encodes one path segment (tag names carry ``/``, ``:`` and ``@``)."""
    return urllib.parse.quote(s, safe="-_.~")


class Response:
    """A response whose body has not been read yet; close it (or use it as a
    context manager) when done."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self.status: int = resp.status
        self.headers = resp.headers

    def header(self, name: str) -> Optional[str]:
        return self._resp.getheader(name)

    def read(self) -> bytes:
        try:
            return self._resp.read()
        finally:
            self.close()

    def json(self) -> Any:
        data = self.read()
        try:
            return json.loads(data) if data else None
        except ValueError as e:
            raise WeftError("decode", f"unexpected answer from the weft daemon: {e}") from e

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body in chunks as it arrives."""
        try:
            while True:
                chunk = self._resp.read1(size) if hasattr(self._resp, "read1") else self._resp.read(size)
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def iter_lines(self) -> Iterator[bytes]:
        """The body line by line (without the line end) as it arrives."""
        try:
            while True:
                line = self._resp.readline()
                if not line:
                    return
                yield line.rstrip(b"\r\n")
        finally:
            self.close()

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport:
    """Sends requests to one daemon's API."""

    def __init__(self, base: str, token: Optional[str], timeout: float) -> None:
        if "://" not in base:
            base = "http://" + base
        u = urllib.parse.urlsplit(base)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise WeftError("bad_address", f"{base!r} is not an http:// address of a weft daemon")
        self.base = f"{u.scheme}://{u.netloc}"
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, blocksize=CHUNK)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout, blocksize=CHUNK)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        body: Body = None,
        content_type: Optional[str] = None,
        length: Optional[int] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Response:
        """Sends a request; returns the response when it succeeded, raises the
        API's error otherwise. The caller reads (and so closes) the response."""
        url = self._prefix + path
        if query:
            q = {k: _query_value(v) for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        h: Dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "application/json, */*"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        chunked = False
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            h["Content-Type"] = content_type
        if isinstance(body, (bytes, bytearray, memoryview)):
            h["Content-Length"] = str(len(body))
        elif body is not None:
            if length is not None:
                h["Content-Length"] = str(length)
            else:
                chunked = True
        if headers:
            h.update(headers)
        conn = self._connect(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, url, body=body, headers=h, encode_chunked=chunked)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if isinstance(e, socket.timeout):
                raise ConnectionFailed(
                    "timeout", f"the weft daemon at {self.base} did not answer {method} {path} in time"
                ) from e
            raise ConnectionFailed(
                "unreachable", f"cannot reach the weft daemon at {self.base}: {e}"
            ) from e
        r = Response(conn, resp)
        if 200 <= resp.status < 300:
            return r
        data = r.read()
        try:
            err = json.loads(data)
            code, detail = str(err["error"]), str(err["detail"])
        except (ValueError, KeyError, TypeError):
            code = "unknown"
            detail = f"HTTP {resp.status}: {data[:500].decode('utf-8', 'replace')}"
        raise error_for(resp.status, code, detail)

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """Sends a request and returns its JSON answer."""
        return self.request(method, path, **kw).json()

    def obj(self, method: str, path: str, **kw: Any) -> Dict[str, Any]:
        """Sends a request whose answer is a JSON object."""
        v = self.json(method, path, **kw)
        if not isinstance(v, dict):
            raise WeftError("decode", f"unexpected answer from the weft daemon to {method} {path}: not an object")
        return v

    def arr(self, method: str, path: str, **kw: Any) -> List[Dict[str, Any]]:
        """Sends a request whose answer is a JSON array."""
        v = self.json(method, path, **kw)
        if not isinstance(v, list):
            raise WeftError("decode", f"unexpected answer from the weft daemon to {method} {path}: not a list")
        return v


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
