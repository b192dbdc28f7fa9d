//! The API is no open door: attacks from a local user without the token, a
//! web page of another site, a DNS-rebound name, and a token holder reaching
//! outside `api.path_roots`, each against a real node in this process (and
//! the real `weft` binary where the CLI's answer matters).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use weft_node::config::Config;
use weft_node::daemon::{DaemonError, Node};
use weft_node::home::Home;
use weft_protocol::TagName;

async fn start(dir: &Path, f: impl FnOnce(&mut Config)) -> Result<Node, DaemonError> {
    let mut config = Config::loopback();
    f(&mut config);
    Node::start(Home::at(dir), config).await
}

fn token(node: &Node) -> String {
    node.home()
        .api_token()
        .expect("read token")
        .expect("the daemon made a token")
}

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

/// An artifact in the node's store, and a tag request body naming it.
fn stored(node: &Node, bytes: &[u8]) -> (String, String) {
    let (id, _) = node
        .store()
        .add_bytes(bytes, weft_node::store::records::BlobKind::Raw)
        .expect("add");
    (
        id.to_string(),
        serde_json::json!({ "ref": id.to_string() }).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_on_loopback_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(&dir.path().join("home"), |_| {})
        .await
        .expect("start");
    let base = node.api_url();
    let http = reqwest::Client::new();
    let (_, body) = stored(&node, b"data");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"secret").expect("write");

    for (method, path, ctype, body) in [
        (
            "PUT",
            "/api/v1/tags/x/y:v1".to_string(),
            "application/json",
            body.clone(),
        ),
        (
            "POST",
            "/api/v1/artifacts/import".to_string(),
            "application/json",
            serde_json::json!({ "path": file, "tag": "x/z:v1" }).to_string(),
        ),
        (
            "POST",
            "/api/v1/artifacts?tag=x/w:v1".to_string(),
            "application/octet-stream",
            "uploaded".to_string(),
        ),
        (
            "POST",
            "/api/v1/gc".to_string(),
            "application/json",
            String::new(),
        ),
    ] {
        let resp = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
                format!("{base}{path}"),
            )
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let v: serde_json::Value = resp.json().await.expect("json error");
        assert!(
            v["detail"].as_str().unwrap_or("").contains("api-token"),
            "{v}"
        );
    }
    // nothing changed: no tag, nothing imported or uploaded
    for t in ["x/y:v1", "x/z:v1", "x/w:v1"] {
        assert_eq!(node.store().tag(&tag(t)).expect("tag"), None, "{t}");
    }
    assert!(node.store().list(false).expect("list").is_empty());
    let secret = blake3::hash(b"secret").to_hex().to_string();
    assert!(!node.store().has(&secret.parse().expect("id")).expect("has"));

    // reads of the store need the token too; the document and metrics do not
    for path in [
        "/api/v1/tags",
        "/api/v1/artifacts",
        "/api/v1/node",
        "/api/v1/jobs",
    ] {
        let resp = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/api/openapi.json", "/metrics"] {
        let resp = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    // with the token, the same write works
    let resp = http
        .put(format!("{base}/api/v1/tags/x/y:v1"))
        .bearer_auth(token(&node))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(node.store().tag(&tag("x/y:v1")).expect("tag").is_some());
    node.stop().await;
}

/// Every documented endpoint (pipelines, models, runs and lineage included)
/// refuses a request without the token, and a cross-site request with it,
/// before any handler runs: nothing reaches the store or the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_a_request_without_the_token_or_from_another_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let t = token(&node);
    let http = reqwest::Client::new();
    let mut checked = 0;
    for e in weft_node::api::openapi::operations() {
        if e.open {
            assert!(
                e.path == "/metrics" || e.path == "/api/openapi.json",
                "{} {} is open",
                e.method,
                e.path
            );
            continue; // public on loopback by design
        }
        // every path parameter filled with something a handler would take
        let path = e
            .path
            .replace("{reference}", "models/iris@champion")
            .replace("{name}", "iris")
            .replace("{service}", "iris")
            .replace("{target}", "iris@champion")
            .replace("{id}", "0123456789abdeadbeef");
        let method = reqwest::Method::from_bytes(e.method.to_uppercase().as_bytes()).expect("m");
        let request = |auth: bool, site: Option<&str>| {
            let mut r = http.request(method.clone(), format!("{base}{path}"));
            if let Some(ctype) = e.body.first() {
                let body = if ctype == "application/octet-stream" {
                    "x"
                } else {
                    "{}"
                };
                r = r.header("content-type", ctype.as_str()).body(body);
            }
            if auth {
                r = r.bearer_auth(&t);
            }
            if let Some(site) = site {
                r = r
                    .header("origin", "http://evil.example")
                    .header("sec-fetch-site", site);
            }
            r.send()
        };
        let resp = request(false, None).await.expect("send");
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{} {path}",
            e.method
        );
        if e.method != "get" {
            let resp = request(true, Some("cross-site")).await.expect("send");
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{} {path}", e.method);
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} endpoints checked");
    // nothing was written: no ledger entry (run, model, pipeline), no tag
    let (entries, _) = node.store().ledger_page(None, 10).expect("ledger");
    assert!(entries.is_empty(), "{entries:?}");
    assert!(node.store().list_tags().expect("tags").is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_writes_are_refused_even_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let t = token(&node);
    let (_, body) = stored(&node, b"data");
    let put = |origin: Option<&str>, site: Option<&str>| {
        let mut r = reqwest::Client::new()
            .put(format!("{base}/api/v1/tags/web/page:v1"))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for (origin, site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (
            Some(&*format!(
                "http://localhost.evil.example:{}",
                node.api_addr().port()
            )),
            None,
        ),
        (None, Some("cross-site")),
    ] {
        let resp = put(origin, site).await.expect("send");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["error"], "cross_origin");
        assert_eq!(node.store().tag(&tag("web/page:v1")).expect("tag"), None);
    }
    // the daemon's own origin, with the token
    let own = format!("http://{}", node.api_addr());
    let resp = put(Some(&own), Some("same-origin")).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        node.store()
            .tag(&tag("web/page:v1"))
            .expect("tag")
            .is_some()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_browser_sends_without_preflight_are_refused_with_415() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |_| {}).await.expect("start");
    let base = node.api_url();
    let t = token(&node);
    let (_, body) = stored(&node, b"data");
    let send = |method: &str, path: &str, ctype: Option<&str>, body: String| {
        let mut r = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
                format!("{base}{path}"),
            )
            .bearer_auth(&t)
            .body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r.send()
    };
    let spec = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  task:\n    wasm: {module: none/x:v1}\n";
    for (method, path, ctype, b) in [
        (
            "PUT",
            "/api/v1/tags/t/x:v1",
            Some("text/plain"),
            body.clone(),
        ),
        (
            "PUT",
            "/api/v1/tags/t/x:v1",
            Some("text/plain;charset=UTF-8"),
            body.clone(),
        ),
        (
            "PUT",
            "/api/v1/tags/t/x:v1",
            Some("application/x-www-form-urlencoded"),
            body.clone(),
        ),
        (
            "PUT",
            "/api/v1/tags/t/x:v1",
            Some("multipart/form-data; boundary=x"),
            body.clone(),
        ),
        ("PUT", "/api/v1/tags/t/x:v1", None, body.clone()),
        (
            "POST",
            "/api/v1/artifacts?tag=t/x:v1",
            Some("text/plain"),
            "uploaded".into(),
        ),
        (
            "POST",
            "/api/v1/artifacts?tag=t/x:v1",
            None,
            "uploaded".into(),
        ),
        ("POST", "/api/v1/jobs", Some("text/plain"), spec.into()),
        ("POST", "/api/v1/gc", Some("text/plain"), String::new()),
        (
            "PUT",
            "/api/v1/pins/t%2Fx:v1",
            Some("text/plain"),
            "{}".into(),
        ),
    ] {
        let resp = send(method, path, ctype, b).await.expect("send");
        assert_eq!(
            resp.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path} {ctype:?}"
        );
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["error"], "unsupported_media_type", "{v}");
        assert!(
            v["detail"].as_str().unwrap_or("").contains("Content-Type")
                || v["detail"].as_str().unwrap_or("").contains("takes"),
            "{v}"
        );
    }
    assert_eq!(node.store().tag(&tag("t/x:v1")).expect("tag"), None);
    assert!(node.store().list(false).expect("list").is_empty());
    // their real types pass
    let resp = send(
        "PUT",
        "/api/v1/tags/t/x:v1",
        Some("application/json; charset=utf-8"),
        body,
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        "POST",
        "/api/v1/artifacts",
        Some("application/octet-stream"),
        "up".into(),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    // a YAML spec passes the guard (and reaches the scheduler, which finds no module)
    let resp = send(
        "POST",
        "/api/v1/jobs",
        Some("application/yaml"),
        spec.into(),
    )
    .await
    .expect("send");
    assert_ne!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_the_daemon_is_refused_for_reads_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), |c| {
        c.api.allowed_hosts = vec!["weft.lab".into()]
    })
    .await
    .expect("start");
    let base = node.api_url();
    let port = node.api_addr().port();
    let t = token(&node);
    let (_, body) = stored(&node, b"data");
    let get = |path: &str, host: String| {
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(&t)
            .header("host", host)
            .send()
    };
    for host in [
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
    ] {
        for path in [
            "/api/openapi.json",
            "/api/v1/node",
            "/api/v1/artifacts",
            "/metrics",
        ] {
            let resp = get(path, host.clone()).await.expect("send");
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{host} {path}");
            let v: serde_json::Value = resp.json().await.expect("json");
            assert_eq!(v["error"], "bad_host");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("api.allowed_hosts"),
                "{v}"
            );
        }
    }
    let resp = reqwest::Client::new()
        .put(format!("{base}/api/v1/tags/h/x:v1"))
        .bearer_auth(&t)
        .header("host", format!("evil.example:{port}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(node.store().tag(&tag("h/x:v1")).expect("tag"), None);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("weft.lab:{port}"),
    ] {
        let resp = get("/api/v1/node", host.clone()).await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
    node.stop().await;
}

/// `root/ok` is the one allowed root; `root/no` is outside it.
struct Roots {
    _dir: tempfile::TempDir,
    ok: PathBuf,
    no: PathBuf,
}

fn roots() -> Roots {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(dir.path()).expect("canonical");
    let ok = base.join("ok");
    let no = base.join("no");
    std::fs::create_dir_all(&ok).expect("mkdir");
    std::fs::create_dir_all(no.join("deep")).expect("mkdir");
    std::fs::write(no.join("secret"), b"outside the root").expect("write");
    std::fs::write(ok.join("inside"), b"inside the root").expect("write");
    std::os::unix::fs::symlink(no.join("secret"), ok.join("to-secret")).expect("symlink");
    std::os::unix::fs::symlink(&no, ok.join("to-no")).expect("symlink");
    Roots { _dir: dir, ok, no }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_stay_under_the_configured_roots() {
    let r = roots();
    let home = r.ok.parent().expect("base").join("home");
    let ok_root = r.ok.clone();
    let node = start(&home, move |c| c.api.path_roots = vec![ok_root])
        .await
        .expect("start");
    let base = node.api_url();
    let t = token(&node);
    let post = |path: String, body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .bearer_auth(&t)
            .json(&body)
            .send()
    };
    let import = |p: PathBuf, follow: bool| {
        post(
            "/api/v1/artifacts/import".into(),
            serde_json::json!({ "path": p, "follow_symlinks": follow }),
        )
    };
    let secret_id: weft_protocol::Hash = blake3::hash(b"outside the root")
        .to_hex()
        .as_str()
        .parse()
        .expect("id");

    // outside, through `..`, through a linked folder, a linked file, following links
    for (p, follow, code) in [
        (r.no.join("secret"), false, "outside_roots"),
        (r.ok.join("../no/secret"), false, "outside_roots"),
        (r.ok.join("to-no/secret"), false, "outside_roots"),
        (r.ok.join("to-secret"), false, "bad_input"),
        (r.ok.join("to-secret"), true, "outside_roots"),
        (r.no.clone(), false, "outside_roots"),
    ] {
        let resp = import(p.clone(), follow).await.expect("send");
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.expect("json");
        assert!(status.is_client_error(), "{}: {status} {v}", p.display());
        assert_eq!(v["error"], code, "{}: {v}", p.display());
        if code == "outside_roots" {
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("api.path_roots"),
                "{v}"
            );
        }
    }
    assert!(
        !node.store().has(&secret_id).expect("has"),
        "nothing outside was stored"
    );
    assert!(node.store().list(false).expect("list").is_empty());
    // an image archive outside: refused before it is opened
    let resp = post(
        "/api/v1/images/import".into(),
        serde_json::json!({ "path": r.no.join("secret") }),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // ... and through a link inside the root to a file outside: not followed
    let resp = post(
        "/api/v1/images/import".into(),
        serde_json::json!({ "path": r.ok.join("to-secret") }),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("symbolic link"),
        "{v}"
    );

    // an image archive inside is read (through the file opened beneath the root)
    let archive = r.ok.join("busybox.tar");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new(root.join("scripts/build-test-image.sh"))
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/build-test-image.sh");
    assert!(built.success());
    let resp = post(
        "/api/v1/images/import".into(),
        serde_json::json!({ "path": archive, "tag": "images/busybox:test" }),
    )
    .await
    .expect("send");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert!(
        node.store()
            .tag(&tag("images/busybox:test"))
            .expect("tag")
            .is_some()
    );

    // inside works
    let resp = import(r.ok.join("inside"), false).await.expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.expect("json");
    let id = v["id"].as_str().expect("id").to_string();

    // export: outside, through `..`, through a linked folder: nothing written
    for p in [
        r.no.join("out"),
        r.ok.join("../no/out"),
        r.ok.join("to-no/out"),
        r.ok.join("to-no/new/out"),
    ] {
        let resp = post(
            format!("/api/v1/artifacts/{id}/export"),
            serde_json::json!({ "path": p, "force": true }),
        )
        .await
        .expect("send");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{}", p.display());
    }
    assert!(!r.no.join("out").exists());
    assert!(!r.no.join("new").exists());
    // a forced export over a link to a file outside replaces the link, not the file
    let resp = post(
        format!("/api/v1/artifacts/{id}/export"),
        serde_json::json!({ "path": r.ok.join("to-secret"), "force": true }),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(r.no.join("secret")).expect("read"),
        b"outside the root"
    );
    assert_eq!(
        std::fs::read(r.ok.join("to-secret")).expect("read"),
        b"inside the root"
    );
    // a forced export of a tree does not write through a link inside the root
    let tree_src = r.ok.join("tree");
    std::fs::create_dir_all(tree_src.join("deep")).expect("mkdir");
    std::fs::write(tree_src.join("deep/planted"), b"planted").expect("write");
    let resp = import(tree_src.clone(), false).await.expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let tree_id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let dest = r.ok.join("dest");
    std::fs::create_dir_all(&dest).expect("mkdir");
    std::os::unix::fs::symlink(&r.no, dest.join("deep")).expect("symlink");
    let resp = post(
        format!("/api/v1/artifacts/{tree_id}/export"),
        serde_json::json!({ "path": dest, "force": true }),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!r.no.join("deep/planted").exists() && !r.no.join("planted").exists());
    // inside, into folders that do not exist yet
    let resp = post(
        format!("/api/v1/artifacts/{id}/export"),
        serde_json::json!({ "path": r.ok.join("a/b/out") }),
    )
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(r.ok.join("a/b/out")).expect("read"),
        b"inside the root"
    );
    node.stop().await;
}

fn weft(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_how_to_fix_a_refusal() {
    let r = roots();
    let home = r.ok.parent().expect("base").join("home");
    let ok_root = r.ok.clone();
    let node = start(&home, move |c| c.api.path_roots = vec![ok_root])
        .await
        .expect("start");
    // the CLI finds the token by itself
    let out = weft(&home, &["add", r.ok.join("inside").to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // outside the roots: the error names the roots and the config
    let out = weft(&home, &["add", r.no.join("secret").to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.path_roots"), "{err}");
    assert!(err.contains("config.toml"), "{err}");
    // a token that does not match: the error names the token file
    let token_path = home.join("api-token");
    std::fs::write(
        &token_path,
        "0000000000000000000000000000000000000000000000000000000000000000\n",
    )
    .expect("write");
    let out = weft(&home, &["tag", "ls"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(token_path.to_str().expect("utf8")), "{err}");
    assert!(err.contains("hint:"), "{err}");
    node.stop().await;
}

#[test]
fn a_token_file_others_may_read_stops_the_daemon_with_advice() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let secret = weft_node::config::new_secret();
    let out = weft(&home, &["init", "--cluster-secret", &secret]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_path = home.join("api-token");
    let mode = std::fs::metadata(&token_path)
        .expect("init made the token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--home")
        .arg(&home)
        .args([
            "daemon",
            "--api-listen",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-listen",
            "127.0.0.1:0",
            "--no-mdns",
        ])
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft daemon");
    assert!(!out.status.success(), "the daemon must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(err.contains(token_path.to_str().expect("utf8")), "{err}");
    assert!(!home.join("api").exists(), "no API was served");
}

#[test]
fn the_cli_sends_no_token_to_a_port_another_user_took_over() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to listen as another user");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::at(dir.path().join("home"));
    home.ensure().expect("home");
    let token = home.ensure_api_token().expect("token");
    // a daemon that died left its address; another user now listens there
    let mut squatter = Command::new("python3")
        .args([
            "-c",
            "import socket,sys,select\n\
             s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
             print(s.getsockname()[1], flush=True)\n\
             sys.stdin.readline()\n\
             r,_,_=select.select([s],[],[],0)\n\
             print('connected' if r else 'none', flush=True)\n",
        ])
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(squatter.stdout.take().expect("stdout"));
    let mut port = String::new();
    out.read_line(&mut port).expect("port");
    let port: u16 = port.trim().parse().expect("port number");
    std::fs::write(home.api_file(), format!("http://127.0.0.1:{port}\n")).expect("api file");

    // (bounded: a CLI that did connect would wait on the squatter's answer)
    let cli = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_weft"))
        .arg("--home")
        .arg(home.root())
        .args(["tag", "ls"])
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft");
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(!err.contains(&token));
    // the squatter never even saw a connection
    let mut stdin = squatter.stdin.take().expect("stdin");
    writeln!(stdin).expect("go on");
    let mut seen = String::new();
    out.read_line(&mut seen).expect("answer");
    assert_eq!(seen.trim(), "none");
    squatter.wait().expect("wait");
}
