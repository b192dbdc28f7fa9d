//! The S3 gateway on real nodes, spoken to with SigV4-signed HTTP: objects
//! put through one node are read through another; listings page; multipart
//! uploads assemble; copies and deletes reach the other node.

use std::time::Duration;

use weft_tests::Cluster;
use weft_tests::s3::{Creds, send_signed};

/// One signed request; returns the status and body.
async fn call(
    creds: &Creds,
    base: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let resp = send_signed(creds, base, method, path, query, headers, body)
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body").to_vec();
    (status, bytes, headers)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls a GET through `base` until it answers 200.
async fn eventually_get(creds: &Creds, base: &str, path: &str) -> Vec<u8> {
    for _ in 0..200 {
        let (st, body, _) = call(creds, base, "GET", path, &[], &[], Vec::new()).await;
        if st == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never became readable through {base}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_put_through_one_node_are_read_through_another() {
    let (cluster, creds) = Cluster::start_s3(2).await.expect("cluster");
    let (a, b) = (cluster.s3_url(0), cluster.s3_url(1));

    let (st, body, _) = call(&creds, &a, "PUT", "/photos", &[], &[], Vec::new()).await;
    assert_eq!(st, 200, "{}", text(&body));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (st, body, h) = call(
        &creds,
        &a,
        "PUT",
        "/photos/cats/tabby one.jpg",
        &[],
        &[("content-type", "image/jpeg"), ("x-amz-meta-owner", "me")],
        data.clone(),
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    let etag = h
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("ascii")
        .to_string();
    let want = weft_protocol::Hash::of(&data);
    assert_eq!(etag, format!("\"{}\"", &want.to_hex()[..32]));

    // node 2 fetches the bytes from node 1 over the data plane
    let got = eventually_get(&creds, &b, "/photos/cats/tabby one.jpg").await;
    assert_eq!(got, data);
    let (st, part, h) = call(
        &creds,
        &b,
        "GET",
        "/photos/cats/tabby one.jpg",
        &[],
        &[("range", "bytes=1000-1999")],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 206);
    assert_eq!(part, &data[1000..2000]);
    assert_eq!(
        h.get("content-range").and_then(|v| v.to_str().ok()),
        Some("bytes 1000-1999/300000")
    );
    let (st, _, h) = call(
        &creds,
        &b,
        "HEAD",
        "/photos/cats/tabby one.jpg",
        &[],
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/jpeg")
    );
    assert_eq!(
        h.get("x-amz-meta-owner").and_then(|v| v.to_str().ok()),
        Some("me")
    );
    assert_eq!(
        h.get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );

    // a large object is streamed through node 2 while node 2 fetches it
    let big: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (st, body, _) = call(&creds, &a, "PUT", "/photos/big.bin", &[], &[], big.clone()).await;
    assert_eq!(st, 200, "{}", text(&body));
    let got = eventually_get(&creds, &b, "/photos/big.bin").await;
    assert!(got == big, "the object read through node 2 differs");
    let (st, tail, _) = call(
        &creds,
        &b,
        "GET",
        "/photos/big.bin",
        &[],
        &[("range", "bytes=-1000")],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 206);
    assert_eq!(tail, &big[big.len() - 1000..]);
    // the gateway counts what it did on /metrics
    let metrics = reqwest::get(format!("http://{}/metrics", cluster.node(1).api_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("weft_s3_requests_total{op=\"GetObject\",status=\"200\"}"),
        "{metrics}"
    );
    let sent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weft_s3_sent_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(sent >= big.len() as u64, "{sent}");

    // a copy on node 2 names the same bytes; a delete on node 1 reaches node 2
    let (st, body, _) = call(
        &creds,
        &b,
        "PUT",
        "/photos/copy.jpg",
        &[],
        &[("x-amz-copy-source", "/photos/cats/tabby%20one.jpg")],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    assert!(
        text(&body).contains(&etag.replace('"', "")),
        "{}",
        text(&body)
    );
    assert_eq!(eventually_get(&creds, &a, "/photos/copy.jpg").await, data);
    let (st, _, _) = call(
        &creds,
        &a,
        "DELETE",
        "/photos/cats/tabby one.jpg",
        &[],
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 204);
    let mut gone = false;
    for _ in 0..100 {
        let (st, body, _) = call(
            &creds,
            &b,
            "GET",
            "/photos/cats/tabby one.jpg",
            &[],
            &[],
            Vec::new(),
        )
        .await;
        if st == 404 {
            assert!(
                text(&body).contains("<Code>NoSuchKey</Code>"),
                "{}",
                text(&body)
            );
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the deletion did not reach node 2");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_page_and_group_by_delimiter_and_multipart_assembles() {
    let (cluster, creds) = Cluster::start_s3(1).await.expect("cluster");
    let a = cluster.s3_url(0);
    assert_eq!(
        call(&creds, &a, "PUT", "/list", &[], &[], Vec::new())
            .await
            .0,
        200
    );
    let keys = ["a.txt", "d/1", "d/2", "d/e/3", "e f+g", "z"];
    for k in keys {
        let (st, body, _) = call(
            &creds,
            &a,
            "PUT",
            &format!("/list/{k}"),
            &[],
            &[],
            k.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(st, 200, "{k}: {}", text(&body));
    }
    // v2, two at a time, following continuation tokens
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut q = vec![("list-type", "2"), ("max-keys", "2")];
        if let Some(t) = &token {
            q.push(("continuation-token", t.as_str()));
        }
        let (st, body, _) = call(&creds, &a, "GET", "/list", &q, &[], Vec::new()).await;
        assert_eq!(st, 200);
        let xml = text(&body);
        for part in xml.split("<Key>").skip(1) {
            seen.push(part.split("</Key>").next().unwrap_or("").to_string());
        }
        token = xml
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|s| s.split("</NextContinuationToken>").next())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
    // a delimiter groups; url encoding covers keys and prefixes
    let (_, body, _) = call(
        &creds,
        &a,
        "GET",
        "/list",
        &[
            ("list-type", "2"),
            ("delimiter", "/"),
            ("encoding-type", "url"),
        ],
        &[],
        Vec::new(),
    )
    .await;
    let xml = text(&body);
    assert!(xml.contains("<Prefix>d/</Prefix>"), "{xml}");
    assert!(xml.contains("<Key>e%20f%2Bg</Key>"), "{xml}");
    assert!(!xml.contains("<Key>d/1</Key>"), "{xml}");

    // multipart: two parts, completed, read back whole
    let (st, body, _) = call(
        &creds,
        &a,
        "POST",
        "/list/big.bin",
        &[("uploads", "")],
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    let xml = text(&body);
    let id = xml
        .split("<UploadId>")
        .nth(1)
        .and_then(|s| s.split("</UploadId>").next())
        .expect("upload id")
        .to_string();
    assert_eq!(id.len(), 32);
    let p1 = vec![1u8; 5 << 20];
    let p2 = vec![2u8; 1000];
    let mut etags = Vec::new();
    for (n, p) in [("1", &p1), ("2", &p2)] {
        let (st, body, h) = call(
            &creds,
            &a,
            "PUT",
            "/list/big.bin",
            &[("partNumber", n), ("uploadId", &id)],
            &[],
            p.clone(),
        )
        .await;
        assert_eq!(st, 200, "{}", text(&body));
        etags.push(
            h.get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        );
    }
    let done = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        etags[0], etags[1]
    );
    let (st, body, _) = call(
        &creds,
        &a,
        "POST",
        "/list/big.bin",
        &[("uploadId", &id)],
        &[],
        done.into_bytes(),
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    assert!(text(&body).contains("-2\"</ETag>"), "{}", text(&body));
    let got = eventually_get(&creds, &a, "/list/big.bin").await;
    assert_eq!(got.len(), p1.len() + p2.len());
    assert!(got[..p1.len()] == p1[..] && got[p1.len()..] == p2[..]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_whose_bytes_no_node_holds_is_answered_503_before_any_byte() {
    use weft_node::s3::names;
    use weft_node::s3::records::{Meta, etag_of};
    let (cluster, creds) = Cluster::start_s3(2).await.expect("cluster");
    let a = cluster.s3_url(0);
    assert_eq!(
        call(&creds, &a, "PUT", "/lost", &[], &[], Vec::new())
            .await
            .0,
        200
    );
    // metadata naming bytes that were never stored anywhere
    let ghost = weft_protocol::Hash::of(b"bytes nobody has");
    let meta = Meta {
        v: 1,
        data: ghost,
        size: 16,
        etag: etag_of(&ghost),
        content_type: "text/plain".into(),
        metadata: Default::default(),
        checksums: Default::default(),
        parts: 0,
    };
    let store = cluster.node(0).store().clone();
    let tag = names::object_tag("lost", "gone.txt", names::META).expect("tag");
    store
        .add_reader_kept(
            &meta.to_bytes()[..],
            &weft_node::store::Keep {
                pin: None,
                tag: Some(tag),
            },
            &(),
        )
        .expect("meta");
    let (st, _, h) = call(&creds, &a, "HEAD", "/lost/gone.txt", &[], &[], Vec::new()).await;
    assert_eq!(st, 200);
    assert_eq!(
        h.get("content-length").and_then(|v| v.to_str().ok()),
        Some("16")
    );
    let (st, body, _) = call(&creds, &a, "GET", "/lost/gone.txt", &[], &[], Vec::new()).await;
    assert_eq!(st, 503, "{}", text(&body));
    assert!(
        text(&body).contains("ServiceUnavailable"),
        "{}",
        text(&body)
    );
    cluster.stop().await;
}
