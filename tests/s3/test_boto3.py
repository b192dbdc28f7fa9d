"""boto3 (the pinned latest, default settings) against the gateway."""

from __future__ import annotations

import hashlib
import time
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from s3util import behind_tls_proxy, boto3_client, code, eventually, flipped, status, virtual_host

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def test_put_get_head_read_back_through_another_node(s3a: Any, s3b: Any, bucket: str) -> None:
    body = b"hello from node 1\n" * 100
    put = s3a.put_object(
        Bucket=bucket, Key="docs/hello.txt", Body=body, ContentType="text/plain",
        Metadata={"owner": "pytest"},
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200 and put["ETag"]
    got = s3a.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert got["Body"].read() == body

    # through node 2: the object, its type and its metadata
    head = eventually(lambda: s3b.head_object(Bucket=bucket, Key="docs/hello.txt"), "object on node 2")
    assert head["ContentLength"] == len(body)
    got = s3b.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "pytest"}
    assert got["ETag"] == put["ETag"]
    part = s3b.get_object(Bucket=bucket, Key="docs/hello.txt", Range="bytes=18-35")
    assert part["Body"].read() == body[18:36]
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206


def test_listings_prefixes_delimiters_pages(s3a: Any, bucket: str) -> None:
    keys = ["a.txt", "docs/b.txt", "docs/c/d.txt", "docs/hello.txt", "z/ü.txt"]
    for k in keys:
        s3a.put_object(Bucket=bucket, Key=k, Body=k.encode())
    listed = s3a.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == sorted(keys)
    assert [o["Size"] for o in listed["Contents"]] == [len(k.encode()) for k in sorted(keys)]
    top = s3a.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a.txt"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["docs/", "z/"]
    docs = s3a.list_objects_v2(Bucket=bucket, Prefix="docs/", Delimiter="/")
    assert [o["Key"] for o in docs["Contents"]] == ["docs/b.txt", "docs/hello.txt"]
    assert [p["Prefix"] for p in docs["CommonPrefixes"]] == ["docs/c/"]
    pages = s3a.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    paged: List[str] = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert paged == sorted(keys)
    v1 = s3a.list_objects(Bucket=bucket, Prefix="docs/", MaxKeys=2)
    assert v1["IsTruncated"] and [o["Key"] for o in v1["Contents"]] == ["docs/b.txt", "docs/c/d.txt"]
    rest = s3a.list_objects(Bucket=bucket, Prefix="docs/", Marker=v1["Contents"][-1]["Key"])
    assert [o["Key"] for o in rest["Contents"]] == ["docs/hello.txt"] and not rest["IsTruncated"]
    assert s3a.get_object(Bucket=bucket, Key="z/ü.txt")["Body"].read() == "z/ü.txt".encode()
    assert bucket in [b["Name"] for b in s3a.list_buckets()["Buckets"]]
    s3a.head_bucket(Bucket=bucket)


def test_keys_with_characters_that_urls_encode(s3a: Any, s3b: Any, bucket: str) -> None:
    # boto3 asks for listings with encoding-type=url and decodes the keys
    # (unquote_plus): a key with a space, a plus or a percent must come back as put
    keys = ["e f+g.txt", "100%/real", "q?a=b&c", "tab\tand,comma;semi", "~tilde/(paren)/[sq]"]
    for k in keys:
        s3a.put_object(Bucket=bucket, Key=k, Body=k.encode())
    assert [o["Key"] for o in s3a.list_objects_v2(Bucket=bucket)["Contents"]] == sorted(keys)
    assert [o["Key"] for o in s3a.list_objects(Bucket=bucket)["Contents"]] == sorted(keys)
    top = s3a.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["100%/", "~tilde/"]
    for k in keys:
        got = eventually(lambda: s3b.get_object(Bucket=bucket, Key=k), f"{k!r} on node 2")
        assert got["Body"].read() == k.encode()


def test_copy_and_delete(s3a: Any, s3b: Any, bucket: str) -> None:
    keys = ["a.txt", "docs/b.txt", "docs/hello.txt"]
    for k in keys:
        s3a.put_object(Bucket=bucket, Key=k, Body=k.encode())
    s3a.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "a.txt"})
    assert s3a.get_object(Bucket=bucket, Key="copy.txt")["Body"].read() == b"a.txt"
    eventually(lambda: s3b.head_object(Bucket=bucket, Key="docs/hello.txt"), "object on node 2")
    s3a.delete_object(Bucket=bucket, Key="docs/hello.txt")
    with pytest.raises(ClientError) as e:
        s3a.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert (code(e.value), status(e.value)) == ("NoSuchKey", 404)
    deadline = time.monotonic() + 30
    while True:  # the deletion reaches node 2
        try:
            s3b.head_object(Bucket=bucket, Key="docs/hello.txt")
        except ClientError as err:
            assert status(err) == 404
            break
        assert time.monotonic() < deadline, "the deleted object is still on node 2"
        time.sleep(0.1)
    out = s3a.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys + ["copy.txt"]]})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(keys + ["copy.txt"])
    assert s3a.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3a.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3a.head_bucket(Bucket=bucket)
    assert status(e.value) == 404


def test_multipart_upload_of_20_mib_read_back_through_another_node(
    s3a: Any, s3b: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MiB)
    src.write_bytes(data)
    parts: List[Dict[str, str]] = []

    def count_part(request: Any, **_: Any) -> None:
        parts.append({k.lower(): str(v) for k, v in request.headers.items()})

    s3a.meta.events.register("before-send.s3.UploadPart", count_part)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3a.upload_file(str(src), bucket, "data/big.bin", Config=config)
    assert len(parts) == 4, f"expected a multipart upload of 4 parts, saw {len(parts)}"
    # boto3's default: a CRC32 checksum with every part (a header over plain
    # HTTP; boto3 moves it to an aws-chunked trailer only over TLS)
    assert all("x-amz-checksum-crc32" in p or "x-amz-trailer" in p for p in parts), parts[0]

    head = eventually(lambda: s3b.head_object(Bucket=bucket, Key="data/big.bin"), "multipart object on node 2")
    assert head["ContentLength"] == len(data)
    dest = tmp_path / "back.bin"
    s3b.download_file(bucket, "data/big.bin", str(dest), Config=config)  # ranged GETs in parallel
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    tail = s3b.get_object(Bucket=bucket, Key="data/big.bin", Range=f"bytes={len(data) - 1000}-")
    assert tail["Body"].read() == data[-1000:]

    # an upload abandoned midway leaves nothing behind
    up = s3a.create_multipart_upload(Bucket=bucket, Key="data/abandoned.bin")
    s3a.upload_part(Bucket=bucket, Key="data/abandoned.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * MiB)
    listed = s3a.list_parts(Bucket=bucket, Key="data/abandoned.bin", UploadId=up["UploadId"])
    assert [p["PartNumber"] for p in listed["Parts"]] == [1]
    uploads = s3a.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert up["UploadId"] in [u["UploadId"] for u in uploads]
    s3a.abort_multipart_upload(Bucket=bucket, Key="data/abandoned.bin", UploadId=up["UploadId"])
    with pytest.raises(ClientError) as e:
        s3a.head_object(Bucket=bucket, Key="data/abandoned.bin")
    assert status(e.value) == 404


def tampered(url: str) -> str:
    """The URL with one character of its signature changed."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    out = []
    for k, v in query:
        if k in ("X-Amz-Signature", "Signature"):
            v = ("0" if v[0] != "0" else "1") + v[1:]
        out.append((k, v))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(out)))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return bytes(r.read())


@pytest.mark.parametrize("signature", ["default", "s3v4"])
def test_presigned_get_fetched_with_urllib(s3: Dict[str, Any], signature: str) -> None:
    # boto3's default presigner signs query strings with SigV2 (AWSAccessKeyId,
    # Signature, Expires) unless the client is configured for s3v4
    kw: Dict[str, Any] = {} if signature == "default" else {"config": Config(signature_version="s3v4")}
    s3a, s3b = boto3_client(s3, 0, **kw), boto3_client(s3, 1, **kw)
    bucket = f"py-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=bucket)
    body = os.urandom(100_000)
    s3a.put_object(Bucket=bucket, Key="shared/blob.bin", Body=body)
    url = s3a.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/blob.bin"}, ExpiresIn=300)
    assert ("X-Amz-Signature=" in url) == (signature == "s3v4"), url
    assert fetch(url) == body
    # through node 2, with a URL signed for it
    eventually(lambda: s3b.head_object(Bucket=bucket, Key="shared/blob.bin"), "object on node 2")
    url_b = s3b.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/blob.bin"}, ExpiresIn=300)
    assert fetch(url_b) == body
    # a tampered signature is refused
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(tampered(url))
    assert e.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()


def test_a_wrong_signature_and_an_unknown_key_are_refused(s3: Dict[str, Any], s3a: Any, bucket: str) -> None:
    s3a.put_object(Bucket=bucket, Key="k", Body=b"v")
    wrong_secret = boto3_client(s3, 0, aws_secret_access_key=flipped(s3["secret_key"]))
    for call in (
        lambda c: c.get_object(Bucket=bucket, Key="k"),
        lambda c: c.put_object(Bucket=bucket, Key="k2", Body=b"v"),
        lambda c: c.list_buckets(),
    ):
        with pytest.raises(ClientError) as e:
            call(wrong_secret)
        assert (code(e.value), status(e.value)) == ("SignatureDoesNotMatch", 403)
    unknown = boto3_client(s3, 0, aws_access_key_id="AKIAUNKNOWNKEY000000")
    with pytest.raises(ClientError) as e:
        unknown.get_object(Bucket=bucket, Key="k")
    assert (code(e.value), status(e.value)) == ("InvalidAccessKeyId", 403)
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"
    # nothing was written by the refused requests
    with pytest.raises(ClientError) as e:
        s3a.head_object(Bucket=bucket, Key="k2")
    assert status(e.value) == 404


def test_aws_chunked_uploads_with_trailing_checksums_as_boto3_sends_them_over_tls(
    s3: Dict[str, Any], s3b: Any, bucket: str, tmp_path: Path
) -> None:
    tls = behind_tls_proxy(s3, 0)
    body = os.urandom(300_000)
    tls.put_object(Bucket=bucket, Key="chunked/one.bin", Body=body)
    put = tls.sent[-1]
    assert put.get("X-Amz-Content-SHA256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", put
    assert "aws-chunked" in put.get("Content-Encoding", "") and put.get("X-Amz-Trailer") == "x-amz-checksum-crc32", put
    assert tls.get_object(Bucket=bucket, Key="chunked/one.bin")["Body"].read() == body

    src = tmp_path / "parts.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    tls.upload_file(str(src), bucket, "chunked/parts.bin", Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    parts = [h for h in tls.sent if h.get("X-Amz-Trailer")]
    assert len(parts) >= 4, len(parts)  # the single put and three parts
    eventually(lambda: s3b.head_object(Bucket=bucket, Key="chunked/parts.bin"), "chunked object on node 2")
    got = s3b.get_object(Bucket=bucket, Key="chunked/parts.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # the object is the payload, not its aws-chunked framing
    assert s3b.head_object(Bucket=bucket, Key="chunked/one.bin")["ContentLength"] == len(body)


def test_a_read_only_key_reads_its_bucket_and_nothing_else(s3_devnet: Any, s3: Dict[str, Any], s3a: Any, bucket: str) -> None:
    other = f"py-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=other)
    s3a.put_object(Bucket=bucket, Key="k", Body=b"readable")
    s3a.put_object(Bucket=other, Key="k", Body=b"not for it")
    access = "AKIA" + uuid.uuid4().hex[:16].upper()
    secret = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    s3_devnet.cli(
        0, "s3", "key", "create", "--name", "pytest-ro", "--bucket", f"{bucket}:r",
        "--access-key", access, "--secret-key", secret,
    )
    ro = boto3_client(s3, 0, aws_access_key_id=access, aws_secret_access_key=secret)
    # the gateway reads the key file when it changes
    got = eventually(lambda: ro.get_object(Bucket=bucket, Key="k"), "the new key accepted")
    assert got["Body"].read() == b"readable"
    assert [o["Key"] for o in ro.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    for call in (
        lambda: ro.put_object(Bucket=bucket, Key="k2", Body=b"no"),
        lambda: ro.delete_object(Bucket=bucket, Key="k"),
        lambda: ro.get_object(Bucket=other, Key="k"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert (code(e.value), status(e.value)) == ("AccessDenied", 403)
    assert s3a.get_object(Bucket=bucket, Key="k")["Body"].read() == b"readable"
    # removed: refused as unknown
    s3_devnet.cli(0, "s3", "key", "rm", access)
    deadline = time.monotonic() + 30
    while True:
        try:
            ro.get_object(Bucket=bucket, Key="k")
        except ClientError as err:
            assert code(err) == "InvalidAccessKeyId"
            break
        assert time.monotonic() < deadline, "the removed key is still accepted"
        time.sleep(0.1)


def test_virtual_host_addressing(s3: Dict[str, Any], s3a: Any, bucket: str) -> None:
    vh = virtual_host(s3, 0)
    vh.put_object(Bucket=bucket, Key="vh/one.txt", Body=b"by host name")
    assert vh.sent_urls[-1].startswith(f"http://{bucket}.s3.localhost:"), vh.sent_urls[-1]
    assert vh.sent[-1]["Host"].startswith(f"{bucket}.s3.localhost:")
    assert s3a.get_object(Bucket=bucket, Key="vh/one.txt")["Body"].read() == b"by host name"
    assert vh.get_object(Bucket=bucket, Key="vh/one.txt")["Body"].read() == b"by host name"
    assert [o["Key"] for o in vh.list_objects_v2(Bucket=bucket, Prefix="vh/")["Contents"]] == ["vh/one.txt"]


def test_a_dataset_added_with_weft_add_is_exposed_as_a_bucket_prefix(
    s3_devnet: Any, s3a: Any, s3b: Any, bucket: str
) -> None:
    data = REPO / "examples" / "data" / "iris"
    tag = f"datasets/iris-{bucket}:v1"
    s3_devnet.client(0).add(data, tag=tag)
    s3_devnet.cli(0, "s3", "expose", tag, "--bucket", bucket, "--prefix", "iris/")
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    want = [f"iris/{f}" for f in files]
    assert [o["Key"] for o in s3a.list_objects_v2(Bucket=bucket, Prefix="iris/")["Contents"]] == want
    # through the other node, the bytes of the dataset
    eventually(lambda: s3b.head_object(Bucket=bucket, Key=want[-1]), "exposed object on node 2")
    for f in files:
        assert s3b.get_object(Bucket=bucket, Key=f"iris/{f}")["Body"].read() == (data / f).read_bytes()
