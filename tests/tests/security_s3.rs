//! Attacks on the S3 gateway: forged and stale signatures, unknown and
//! revoked keys, keys used beyond their grants, bad checksums, hostile XML,
//! path-like keys, and bodies that claim or bring too much.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_node::s3::keys::{Key, KeyFile, Perm};
use weft_tests::Cluster;
use weft_tests::s3::{Creds, payload_hash, presign_get, send_signed, sign, sign_at};

async fn send(
    creds: &Creds,
    base: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    try_send(creds, base, method, path, query, headers, body)
        .await
        .expect("send")
}

/// As [`send`], but a request the gateway refused before reading all of
/// its body may end with the connection closed under the client's write.
async fn try_send(
    creds: &Creds,
    base: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, String), reqwest::Error> {
    let resp = send_signed(creds, base, method, path, query, headers, body).await?;
    let st = resp.status().as_u16();
    Ok((st, resp.text().await.unwrap_or_default()))
}

/// CRC32 (IEEE), as `x-amz-checksum-crc32` carries it (base64 of the
/// big-endian value).
fn crc32_b64(data: &[u8]) -> String {
    let mut c: u32 = !0;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    let v = (!c).to_be_bytes();
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = u32::from_be_bytes([v[0], v[1], v[2], 0]);
    let m = u32::from_be_bytes([v[3], 0, 0, 0]);
    let mut out = String::new();
    for i in 0..4 {
        out.push(A[((n >> (26 - 6 * i)) & 63) as usize] as char);
    }
    out.push(A[((m >> 26) & 63) as usize] as char);
    out.push(A[((m >> 20) & 63) as usize] as char);
    out.push_str("==");
    out
}

/// An `aws-chunked` upload with its CRC32 in a trailer, as boto3 sends it
/// over TLS.
async fn put_chunked(
    creds: &Creds,
    base: &str,
    path: &str,
    data: &[u8],
    trailer_crc: &str,
) -> (u16, String) {
    let extra = vec![
        ("content-encoding".to_string(), "aws-chunked".to_string()),
        (
            "x-amz-decoded-content-length".to_string(),
            data.len().to_string(),
        ),
        (
            "x-amz-trailer".to_string(),
            "x-amz-checksum-crc32".to_string(),
        ),
    ];
    let s = sign(
        creds,
        "PUT",
        base,
        path,
        &[],
        &extra,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    );
    let mut body = format!("{:x}\r\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(
        format!("\r\n0\r\nx-amz-checksum-crc32:{trailer_crc}\r\n\r\n").as_bytes(),
    );
    let mut r = reqwest::Client::new().put(&s.url);
    for (k, v) in &s.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    let resp = r.body(body).send().await.expect("send");
    let st = resp.status().as_u16();
    (st, resp.text().await.unwrap_or_default())
}

fn code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or("")
}

fn add_key(cluster: &Cluster, key: Key) {
    let path = cluster.s3_keys_path(0);
    let mut f = KeyFile::load(&path).expect("keys");
    f.keys.push(key);
    f.save(&path).expect("save");
}

fn new_creds() -> Creds {
    Creds {
        access_key: weft_node::s3::keys::new_access_key(),
        secret_key: weft_node::s3::keys::new_secret_key(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_unknown_revoked_and_ungranted_requests_are_refused() {
    let (cluster, creds) = Cluster::start_s3(1).await.expect("cluster");
    let a = cluster.s3_url(0);
    for b in ["/open", "/closed"] {
        assert_eq!(
            send(&creds, &a, "PUT", b, &[], &[], Vec::new()).await.0,
            200
        );
    }
    assert_eq!(
        send(&creds, &a, "PUT", "/open/k", &[], &[], b"v".to_vec())
            .await
            .0,
        200
    );

    // wrong secret
    let wrong = Creds {
        access_key: creds.access_key.clone(),
        secret_key: format!("x{}", &creds.secret_key[1..]),
    };
    let (st, body) = send(&wrong, &a, "PUT", "/open/k2", &[], &[], b"v".to_vec()).await;
    assert_eq!((st, code(&body)), (403, "SignatureDoesNotMatch"), "{body}");
    // unknown key
    let (st, body) = send(&new_creds(), &a, "GET", "/open/k", &[], &[], Vec::new()).await;
    assert_eq!((st, code(&body)), (403, "InvalidAccessKeyId"), "{body}");
    // no signature at all
    let resp = reqwest::get(format!("{a}/open/k")).await.expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    // a signed request altered on the way (another key name, same signature)
    let s = sign(&creds, "GET", &a, "/open/k", &[], &[], &payload_hash(b""));
    let mut r = reqwest::Client::new().get(s.url.replace("/open/k", "/closed/k"));
    for (k, v) in &s.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    let resp = r.send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        code(&resp.text().await.unwrap_or_default()),
        "SignatureDoesNotMatch"
    );

    // a read-only key granted one bucket
    let ro = new_creds();
    let mut buckets = BTreeMap::new();
    buckets.insert("open".to_string(), Perm::Read);
    add_key(
        &cluster,
        Key {
            access_key: ro.access_key.clone(),
            secret_key: ro.secret_key.clone(),
            name: "ro".into(),
            created_ms: 0,
            all: None,
            buckets,
        },
    );
    assert_eq!(
        send(&ro, &a, "GET", "/open/k", &[], &[], Vec::new())
            .await
            .0,
        200
    );
    for (method, path) in [
        ("PUT", "/open/k3"),
        ("DELETE", "/open/k"),
        ("GET", "/closed/k"),
        ("PUT", "/newbucket"),
    ] {
        let (st, body) = send(&ro, &a, method, path, &[], &[], Vec::new()).await;
        assert_eq!(
            (st, code(&body)),
            (403, "AccessDenied"),
            "{method} {path}: {body}"
        );
    }
    // a copy whose source the key may not read
    let rw_open = new_creds();
    let mut buckets = BTreeMap::new();
    buckets.insert("open".to_string(), Perm::Write);
    add_key(
        &cluster,
        Key {
            access_key: rw_open.access_key.clone(),
            secret_key: rw_open.secret_key.clone(),
            name: "rw".into(),
            created_ms: 0,
            all: None,
            buckets,
        },
    );
    assert_eq!(
        send(&creds, &a, "PUT", "/closed/secret", &[], &[], b"s".to_vec())
            .await
            .0,
        200
    );
    let (st, body) = send(
        &rw_open,
        &a,
        "PUT",
        "/open/stolen",
        &[],
        &[("x-amz-copy-source", "/closed/secret")],
        Vec::new(),
    )
    .await;
    assert_eq!((st, code(&body)), (403, "AccessDenied"), "{body}");
    // listing buckets shows only what the key may read
    let (st, body) = send(&ro, &a, "GET", "/", &[], &[], Vec::new()).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("<Name>open</Name>") && !body.contains("<Name>closed</Name>"),
        "{body}"
    );

    // revoked: the gateway reads the key file again
    let path = cluster.s3_keys_path(0);
    let mut f = KeyFile::load(&path).expect("keys");
    f.keys.retain(|k| k.access_key != ro.access_key);
    f.save(&path).expect("save");
    let (st, body) = send(&ro, &a, "GET", "/open/k", &[], &[], Vec::new()).await;
    assert_eq!((st, code(&body)), (403, "InvalidAccessKeyId"), "{body}");
    // nothing refused was written
    let (st, _) = send(&creds, &a, "GET", "/open/k3", &[], &[], Vec::new()).await;
    assert_eq!(st, 404);
    let (st, _) = send(&creds, &a, "GET", "/open/stolen", &[], &[], Vec::new()).await;
    assert_eq!(st, 404);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_and_tampered_presigned_urls_are_refused() {
    let (cluster, creds) = Cluster::start_s3(1).await.expect("cluster");
    let a = cluster.s3_url(0);
    assert_eq!(
        send(&creds, &a, "PUT", "/pre", &[], &[], Vec::new())
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            &creds,
            &a,
            "PUT",
            "/pre/blob",
            &[],
            &[],
            b"secret bytes".to_vec()
        )
        .await
        .0,
        200
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = presign_get(&creds, &a, "/pre/blob", 300, now);
    let resp = reqwest::get(&good).await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.expect("text"), "secret bytes");
    // expired: signed an hour ago for 60 s
    let old = presign_get(&creds, &a, "/pre/blob", 60, now - 3600);
    let resp = reqwest::get(&old).await.expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    // tampered signature
    let sig_at = good.find("X-Amz-Signature=").expect("sig") + "X-Amz-Signature=".len();
    let mut bad = good.clone().into_bytes();
    bad[sig_at] = if bad[sig_at] == b'0' { b'1' } else { b'0' };
    let resp = reqwest::get(String::from_utf8(bad).expect("utf8"))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        code(&resp.text().await.unwrap_or_default()),
        "SignatureDoesNotMatch"
    );
    // another object with the same signature
    assert_eq!(
        send(&creds, &a, "PUT", "/pre/other", &[], &[], b"o".to_vec())
            .await
            .0,
        200
    );
    let resp = reqwest::get(good.replace("/pre/blob", "/pre/other"))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    // a header-signed request from long ago
    let s = sign_at(
        &creds,
        "GET",
        &a,
        "/pre/blob",
        &[],
        &[],
        &payload_hash(b""),
        now - 3 * 3600,
    );
    let mut r = reqwest::Client::new().get(&s.url);
    for (k, v) in &s.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    assert_eq!(r.send().await.expect("send").status().as_u16(), 403);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_bodies_hostile_xml_and_path_like_keys() {
    let (cluster, creds) = Cluster::start_s3(1).await.expect("cluster");
    let a = cluster.s3_url(0);
    assert_eq!(
        send(&creds, &a, "PUT", "/bad", &[], &[], Vec::new())
            .await
            .0,
        200
    );

    // a CRC32 that does not match: BadDigest, nothing stored
    let (st, body) = send(
        &creds,
        &a,
        "PUT",
        "/bad/sum",
        &[],
        &[("x-amz-checksum-crc32", "AAAAAA==")],
        b"payload".to_vec(),
    )
    .await;
    assert_eq!((st, code(&body)), (400, "BadDigest"), "{body}");
    assert_eq!(
        send(&creds, &a, "GET", "/bad/sum", &[], &[], Vec::new())
            .await
            .0,
        404
    );
    // the right one is taken (crc32("payload") = 0x2B4CC4A8? computed by the server's echo)
    let (st, body) = send(
        &creds,
        &a,
        "PUT",
        "/bad/sum",
        &[],
        &[("x-amz-sdk-checksum-algorithm", "CRC32")],
        b"payload".to_vec(),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // the same in an aws-chunked trailer; and the right CRC32, both ways
    let data = b"chunked payload".to_vec();
    let (st, body) = put_chunked(&creds, &a, "/bad/chunked", &data, "AAAAAA==").await;
    assert_eq!((st, code(&body)), (400, "BadDigest"), "{body}");
    assert_eq!(
        send(&creds, &a, "GET", "/bad/chunked", &[], &[], Vec::new())
            .await
            .0,
        404
    );
    let (st, body) = put_chunked(&creds, &a, "/bad/chunked", &data, &crc32_b64(&data)).await;
    assert_eq!(st, 200, "{body}");
    let (st, got) = send(&creds, &a, "GET", "/bad/chunked", &[], &[], Vec::new()).await;
    assert_eq!((st, got.as_bytes()), (200, &data[..]));
    let (st, body) = send(
        &creds,
        &a,
        "PUT",
        "/bad/sum2",
        &[],
        &[("x-amz-checksum-crc32", &crc32_b64(b"payload"))],
        b"payload".to_vec(),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // malformed and oversized XML
    let (st, body) = send(
        &creds,
        &a,
        "POST",
        "/bad",
        &[("delete", "")],
        &[],
        b"<Delete><Object><Key>x</Key></Obj".to_vec(),
    )
    .await;
    assert_eq!((st, code(&body)), (400, "MalformedXML"), "{body}");
    let mut huge = b"<Delete>".to_vec();
    while huge.len() < 3 << 20 {
        huge.extend_from_slice(
            b"<Object><Key>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</Key></Object>",
        );
    }
    huge.extend_from_slice(b"</Delete>");
    // refused from its Content-Length, before the body is read: either the
    // answer arrives or the connection closes under the client's write (the
    // requests below show the gateway still serves)
    match try_send(&creds, &a, "POST", "/bad", &[("delete", "")], &[], huge).await {
        Ok((st, body)) => assert!(
            (400..500).contains(&st),
            "oversized XML answered {st}: {body}"
        ),
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "oversized XML: {e:?}"),
    }
    // an entity declaration is not expanded
    let bomb = br#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">]><Delete><Object><Key>&a;</Key></Object></Delete>"#;
    let (st, _) = send(
        &creds,
        &a,
        "POST",
        "/bad",
        &[("delete", "")],
        &[],
        bomb.to_vec(),
    )
    .await;
    assert!((400..500).contains(&st), "an XML entity answered {st}");

    // keys that look like paths are names
    for key in ["../../etc/passwd", "./x", "a/../b", "..", "//"] {
        let path = format!("/bad/{key}");
        let (st, body) = send(&creds, &a, "PUT", &path, &[], &[], key.as_bytes().to_vec()).await;
        if st != 200 {
            // the path layer may refuse it outright; it must never escape
            assert!((400..500).contains(&st), "{key}: {st} {body}");
            continue;
        }
        let (st, got) = send(&creds, &a, "GET", &path, &[], &[], Vec::new()).await;
        assert_eq!((st, got.as_str()), (200, key), "{key}");
    }
    assert!(!cluster.node(0).home().root().join("etc").exists());

    // a declared Content-Length beyond the limit is refused before any byte is read
    let s = sign(&creds, "PUT", &a, "/bad/huge", &[], &[], "UNSIGNED-PAYLOAD");
    let addr = a.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "PUT /bad/huge HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        6u64 << 30
    );
    for (k, v) in &s.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&[0u8; 4096]).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer before the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 413"),
        "{answer}"
    );
    assert!(answer.contains("EntityTooLarge"), "{answer}");
    cluster.stop().await;
}
