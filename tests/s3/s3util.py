"""Helpers of the S3 suite."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

from botocore.exceptions import ClientError


def boto3_client(s3: Dict[str, Any], node: int = 0, **kw: Any) -> Any:
    """A boto3 S3 client of node ``node`` with default settings (what a user writes)."""
    import boto3

    args: Dict[str, Any] = {
        "endpoint_url": s3["endpoints"][node],
        "aws_access_key_id": s3["access_key"],
        "aws_secret_access_key": s3["secret_key"],
        "region_name": s3.get("region", "us-east-1"),
    }
    args.update(kw)
    return boto3.session.Session().client("s3", **args)


def code(e: ClientError) -> str:
    """The S3 error code of a refusal."""
    return str(e.response.get("Error", {}).get("Code"))


def status(e: ClientError) -> int:
    """The HTTP status of a refusal."""
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def eventually(f: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Polls ``f`` until it returns without a ClientError (tags reach other
    nodes by gossip, in well under a second on loopback)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return f()
        except ClientError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still {code(e)} after {timeout} s") from e
        time.sleep(0.1)


def flipped(secret: str) -> str:
    """The secret with its first character changed."""
    return ("x" if secret[0] != "x" else "y") + secret[1:]


class _Body:
    """A response body botocore can read (``read``) or drain (``stream``)."""

    def __init__(self, data: bytes) -> None:
        import io

        self._f = io.BytesIO(data)

    def read(self, amt: Any = None) -> bytes:
        return self._f.read() if amt is None else self._f.read(amt)

    def stream(self, **_: Any) -> Any:
        while True:
            b = self._f.read(65536)
            if not b:
                return
            yield b

    def close(self) -> None:
        pass


def forwarded(client: Any, to: str) -> Any:
    """Sends every request ``client`` has signed, byte for byte (its ``Host``
    header included), over plain HTTP to ``to`` (``http://IP:PORT``), as a
    TLS-terminating proxy or a DNS name pointing there would. What was sent
    is kept in ``client.sent`` (headers) and ``client.sent_urls``."""
    import http.client
    import urllib.parse

    from botocore.awsrequest import AWSResponse

    target = urllib.parse.urlsplit(to)
    sent: list = []
    urls: list = []

    def forward(request: Any, **_: Any) -> Any:
        u = urllib.parse.urlsplit(request.url)
        path = u.path + (f"?{u.query}" if u.query else "")
        headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in request.headers.items()}
        headers.setdefault("Host", u.netloc)
        sent.append(headers)
        urls.append(request.url)
        chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            body = request.body
            if chunked and body is not None and not hasattr(body, "read"):
                body = [bytes(body)]
            conn.putrequest(request.method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if body is not None:
                if isinstance(body, (bytes, bytearray)):
                    conn.send(bytes(body))
                else:
                    chunks = body if not hasattr(body, "read") else iter(lambda: body.read(1 << 20), b"")
                    for chunk in chunks:
                        if not chunk:
                            continue
                        if chunked:
                            conn.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                        else:
                            conn.send(chunk)
                    if chunked:
                        conn.send(b"0\r\n\r\n")
            r = conn.getresponse()
            data = r.read()
            return AWSResponse(request.url, r.status, dict(r.getheaders()), _Body(data))
        finally:
            conn.close()

    client.meta.events.register_first("before-send.s3", forward)
    client.sent = sent
    client.sent_urls = urls
    return client


def behind_tls_proxy(s3: Dict[str, Any], node: int = 0, **kw: Any) -> Any:
    """A default boto3 client that believes it talks HTTPS, as it does to a
    gateway behind a TLS-terminating proxy: it then sends uploads as
    ``aws-chunked`` bodies with ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` and
    the CRC32 in a trailer (what boto3 >= 1.36 does by default over TLS).
    Every request it has signed goes over plain HTTP to the node, like the
    proxy would send it."""
    import urllib.parse

    plain = urllib.parse.urlsplit(s3["endpoints"][node])
    client = boto3_client(s3, node, endpoint_url=f"https://{plain.netloc}", **kw)
    return forwarded(client, s3["endpoints"][node])


def virtual_host(s3: Dict[str, Any], node: int = 0, domain: str = "s3.localhost") -> Any:
    """A boto3 client with virtual-host addressing (``BUCKET.s3.localhost:PORT``,
    the gateway's default domain), its requests sent to the node's address."""
    import urllib.parse

    from botocore.config import Config

    port = urllib.parse.urlsplit(s3["endpoints"][node]).port
    client = boto3_client(
        s3, node, endpoint_url=f"http://{domain}:{port}", config=Config(s3={"addressing_style": "virtual"})
    )
    return forwarded(client, s3["endpoints"][node])


def replicated(source: Any, target: Any, bucket: str, prefix: str = "", timeout: float = 30.0) -> None:
    """Waits until ``target`` (another node) lists every key ``source`` lists
    under ``prefix`` (object tags reach other nodes by gossip)."""
    want = [o["Key"] for o in source.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    deadline = time.monotonic() + timeout
    while True:
        have = [o["Key"] for o in target.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        if have == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{bucket}/{prefix}: node 2 lists {have}, node 1 {want}")
        time.sleep(0.1)
