//! The REST API against a node started in this process.

use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use weft_node::config::Config;
use weft_node::daemon::{DaemonError, Node};
use weft_node::home::Home;

async fn start(dir: &std::path::Path, f: impl FnOnce(&mut Config)) -> Result<Node, DaemonError> {
    let mut config = Config::loopback();
    f(&mut config);
    Node::start(Home::at(dir), config).await
}

/// A client that sends `node`'s API token, as the CLI does.
fn http(node: &Node) -> reqwest::Client {
    let token = node
        .home()
        .api_token()
        .expect("read token")
        .expect("the daemon made a token");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A client that sends no token.
fn anonymous() -> reqwest::Client {
    reqwest::Client::new()
}

/// Checks Prometheus text exposition syntax line by line.
fn assert_prometheus(text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            let name = parts.next().unwrap_or("");
            assert!(name.starts_with("weft_"), "bad metric name: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
            let labels = &series[name_end + 1..series.len() - 1];
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label k=v");
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(v.starts_with('"'), "{line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_endpoint_and_each_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let doc: serde_json::Value = anonymous()
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("openapi is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // what is served is what the document says, built once
    assert_eq!(&doc, weft_node::api::openapi::document());
    let mut served = 0;
    for e in weft_node::api::openapi::operations() {
        assert!(
            doc["paths"][&e.path][&e.method].is_object(),
            "{} {} missing from the document",
            e.method,
            e.path
        );
        let url = format!(
            "{base}{}",
            e.path
                .replace("{reference}", "abcd")
                .replace("{name}", "x/y:v1")
        );
        let method =
            reqwest::Method::from_bytes(e.method.to_uppercase().as_bytes()).expect("method");
        let mut req = http(&node).request(method, &url);
        if let Some(t) = e.body.first() {
            req = req.header("content-type", t.as_str());
        }
        let resp = req.send().await.expect("send");
        assert_ne!(resp.status().as_u16(), 405, "{} {}", e.method, e.path);
        assert_ne!(resp.status().as_u16(), 415, "{} {}", e.method, e.path);
        assert_ne!(resp.status().as_u16(), 401, "{} {}", e.method, e.path);
        // the document says what the guard enforces
        let op = &doc["paths"][&e.path][&e.method];
        for t in &e.body {
            assert!(
                op["requestBody"]["content"][t].is_object(),
                "{} {}",
                e.method,
                e.path
            );
        }
        if e.method != "get" && e.method != "head" {
            assert!(op["security"].is_array(), "{} {}", e.method, e.path);
            assert!(
                op["responses"]["415"].is_object(),
                "{} {}",
                e.method,
                e.path
            );
        }
        if resp.status().as_u16() == 404 && e.method != "head" {
            let body: serde_json::Value = resp.json().await.expect("json error");
            assert!(
                !body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no such endpoint"),
                "{} {} is not routed",
                e.method,
                e.path
            );
        }
        served += 1;
    }
    assert_eq!(served, weft_node::api::openapi::operations().len());
    assert!(served >= 53, "only {served} operations");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_downloads_ranges_and_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let resp = http(&node)
        .post(format!("{base}/api/v1/artifacts?tag=data/x:v1"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 201);
    let out: serde_json::Value = resp.json().await.expect("json");
    let id = out["id"].as_str().expect("id").to_string();
    assert_eq!(id, blake3::hash(&data).to_hex().as_str());

    // whole, by tag (the '/' of the tag escaped as one path segment)
    let body = http(&node)
        .get(format!("{base}/api/v1/artifacts/data%2Fx:v1"))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&body[..], &data[..]);
    // a range
    let resp = http(&node)
        .get(format!("{base}/api/v1/artifacts/{}", &id[..8]))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        resp.headers()["content-range"].to_str().expect("header"),
        "bytes 1000-1999/300000"
    );
    assert_eq!(&resp.bytes().await.expect("bytes")[..], &data[1000..2000]);
    let resp = http(&node)
        .get(format!("{base}/api/v1/artifacts/{id}"))
        .header("Range", "bytes=400000-")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status().as_u16(), 416);
    // HEAD
    let resp = http(&node)
        .head(format!("{base}/api/v1/artifacts/{id}"))
        .send()
        .await
        .expect("head");
    assert_eq!(resp.headers()["content-length"], "300000");
    assert_eq!(resp.headers()["x-weft-kind"], "file");

    // garbage JSON, unknown fields, unknown routes, unknown ids: JSON errors
    // (bodies sent as JSON, as the guard asks)
    for (method, path, body, status) in [
        ("POST", "/api/v1/artifacts/import", "{not json", 400),
        (
            "POST",
            "/api/v1/artifacts/import",
            "{\"path\": \"/x\", \"bogus\": 1}",
            400,
        ),
        ("PUT", "/api/v1/tags/a/b:v1", "[1,2,3]", 400),
        ("PUT", "/api/v1/tags/bad name", "{\"ref\": \"abcd\"}", 400),
        ("GET", "/api/v1/nowhere", "", 404),
        ("GET", "/api/v1/artifacts/ffffffff", "", 404),
        ("GET", "/api/v1/artifacts/zz", "", 400),
        ("DELETE", "/api/v1/gc", "", 405),
    ] {
        let resp = http(&node)
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
                format!("{base}{path}"),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let v: serde_json::Value = resp.json().await.expect("error body is JSON");
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    }

    let metrics = http(&node)
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_prometheus(&metrics);
    assert!(metrics.contains("weft_store_bytes 300000"), "{metrics}");
    assert!(metrics.contains("weft_api_requests_total{"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_api_needs_the_token_for_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |c| c.api.listen = "0.0.0.0:0".into())
        .await
        .expect("start: the home's token protects it");
    let port = node.api_addr().port();
    for path in ["/api/v1/node", "/api/openapi.json", "/metrics"] {
        let url = format!("http://127.0.0.1:{port}{path}");
        let resp = anonymous().get(&url).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let resp = anonymous()
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let resp = http(&node).get(&url).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    node.stop().await;

    // api.token in the config overrides the file
    let node = start(dir.path(), |c| {
        c.api.listen = "0.0.0.0:0".into();
        c.api.token = Some("s3cret-s3cret-s3cret".into());
    })
    .await
    .expect("start with token");
    let url = format!("http://127.0.0.1:{}/api/v1/node", node.api_addr().port());
    let resp = http(&node).get(&url).send().await.expect("send");
    assert_eq!(
        resp.status().as_u16(),
        401,
        "the file's token no longer serves"
    );
    let resp = anonymous()
        .get(&url)
        .bearer_auth("s3cret-s3cret-s3cret")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_home_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let err = start(dir.path(), |_| {})
        .await
        .err()
        .expect("second refused");
    assert!(
        err.to_string().contains("another weft daemon is running"),
        "{err}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_goes_through_a_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let node = start(&home, |_| {}).await.expect("start");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"through the API").expect("write");
    let weft = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    // the daemon made its token, private to its user; the CLI finds it alone
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.join("api-token"))
            .expect("token file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // the daemon holds the store; these only work through its API
    let id = weft(&["add", file.to_str().expect("utf8"), "--tag", "docs/f:v1"]);
    assert_eq!(
        id.trim(),
        blake3::hash(b"through the API").to_hex().as_str()
    );
    assert_eq!(weft(&["cat", "docs/f:v1"]), "through the API");
    let out = dir.path().join("out.txt");
    weft(&["get", &id.trim()[..10], "-o", out.to_str().expect("utf8")]);
    assert_eq!(std::fs::read(&out).expect("read"), b"through the API");
    assert!(weft(&["ls"]).contains("docs/f:v1"));
    assert!(weft(&["tag", "history", "docs/f:v1"]).contains(id.trim()));
    assert_eq!(weft(&["store", "verify"]).trim(), "ok");
    assert!(
        node.store()
            .has(&id.trim().parse().expect("id"))
            .expect("has")
    );
    node.stop().await;
    // and directly once it is gone
    assert_eq!(weft(&["cat", "docs/f:v1"]), "through the API");
}

/// Malformed parameters, oversized and mistyped bodies, and ids nobody
/// knows are each answered with a status the document lists for that
/// operation and the JSON `{error, detail}` body, never axum's plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_is_answered_with_a_documented_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let doc = weft_node::api::openapi::document();
    let big = vec![b' '; 3 * 1024 * 1024];
    let chunked = || {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..48).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    };
    // (method, url path, document path, content type, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        reqwest::Body,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/api/v1/jobs?limit=many",
            "/api/v1/jobs",
            None,
            reqwest::Body::from(""),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/lineage/abcd?depth=-1",
            "/api/v1/lineage/{reference}",
            None,
            reqwest::Body::from(""),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/artifacts?all=maybe",
            "/api/v1/artifacts",
            None,
            reqwest::Body::from(""),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/artifacts/%FF%FE",
            "/api/v1/artifacts/{reference}",
            None,
            reqwest::Body::from(""),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/v1/tags/t/x:v1",
            "/api/v1/tags/{name}",
            Some("application/json"),
            reqwest::Body::from(big.clone()),
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/v1/runs",
            "/api/v1/runs",
            Some("application/json"),
            chunked(),
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/v1/gc",
            "/api/v1/gc",
            Some("text/plain"),
            reqwest::Body::from("x"),
            415,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/api/v1/jobs/0123456789abdeadbeef",
            "/api/v1/jobs/{id}",
            None,
            reqwest::Body::from(""),
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/services/Not%20A%20Name!",
            "/api/v1/services/{service}",
            None,
            reqwest::Body::from(""),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/runs",
            "/api/v1/runs",
            Some("application/json"),
            reqwest::Body::from("{\"name\": 5}"),
            400,
            "bad_request",
        ),
    ];
    for (method, path, doc_path, ctype, body, status, code) in cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = http(&node).request(m, format!("{base}{path}")).body(body);
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        let op = &doc["paths"][doc_path][method.to_ascii_lowercase()];
        assert!(
            op["responses"][status.to_string()].is_object(),
            "{method} {doc_path} does not document {status}"
        );
        let resp = match req.send().await {
            Ok(resp) => resp,
            // a body refused before it was all read may close the
            // connection under the client's write (the raw request below
            // reads the 413 every time)
            Err(e) if status == 413 && e.is_request() && !e.is_timeout() => continue,
            Err(e) => panic!("{method} {path}: {e:?}"),
        };
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let v: serde_json::Value = resp.json().await.expect("a JSON error");
        assert_eq!(v["error"], code, "{method} {path}: {v}");
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // a declared length over the limit is answered before any body byte
    let token = node.home().api_token().expect("token").expect("a token");
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /api/v1/tags/t/x:v1 HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        big.len()
    );
    raw.write_all(head.as_bytes()).await.expect("write head");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
    // nothing was tagged by the refused bodies
    assert!(node.store().list_tags().expect("tags").is_empty());
    node.stop().await;
}
