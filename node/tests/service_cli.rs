//! `weft service ...` through a running daemon: the desired state's
//! commands (apply, history, scale, rollback, rm, ls) and their refusals.

use std::process::{Command, Output};

use weft_node::config::Config;
use weft_node::daemon::Node;
use weft_node::home::Home;

fn spec(replicas: &str, version: &str) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  task:\n    wasm: {{module: examples/httptest:v1, env: {{VERSION: {version}}}}}\n  health: {{http: /healthz}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_commands_apply_scale_roll_back_and_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let config = Config::loopback();
    let node = Node::start(Home::at(&home), config).await.expect("start");
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .output()
            .expect("run")
    };
    let weft = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let refused = |args: &[&str]| {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).expect("utf8");
        assert!(err.starts_with("error: "), "{err}");
        err
    };
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf8").to_string()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&weft(&all)).expect("json")
    };

    // apply: revision 1; the same again: unchanged; a change: revision 2
    let v1 = write("v1.yaml", &spec("2", "one"));
    assert_eq!(
        weft(&["service", "apply", "-f", &v1]).trim(),
        "service web: revision 1"
    );
    assert_eq!(
        weft(&["service", "apply", "-f", &v1]).trim(),
        "service web: revision 1 (unchanged)"
    );
    // the same spec written differently is no new revision either
    let v1b = write("v1b.yaml", &format!("# a comment\n{}", spec("2", "one")));
    assert_eq!(
        weft(&["service", "apply", "-f", &v1b]).trim(),
        "service web: revision 1 (unchanged)"
    );
    let v2 = write("v2.yaml", &spec("3", "two"));
    let applied = json(&["service", "apply", "-f", &v2]);
    assert_eq!(applied["name"], "web");
    assert_eq!(applied["revision"], 2);
    assert_eq!(applied["changed"], true);

    let s = json(&["service", "status", "web"]);
    assert_eq!(s["revision"], 2);
    assert_eq!(s["desired"], 3);
    assert_eq!(s["kind"], "wasm");
    assert!(
        s["spec"]
            .as_str()
            .is_some_and(|t| t.contains("VERSION: two")),
        "{s}"
    );
    let status = weft(&["service", "status", "web"]);
    assert!(
        status.starts_with("service   web\nrevision  2\n"),
        "{status}"
    );

    // scale, then roll back to revision 1 (its own replica count)
    assert_eq!(
        weft(&["service", "scale", "web", "5"]).trim(),
        "service web: 5 replicas"
    );
    assert_eq!(json(&["service", "status", "web"])["desired"], 5);
    assert_eq!(
        weft(&["service", "rollback", "web", "--to-revision", "1"]).trim(),
        "service web: revision 1"
    );
    let s = json(&["service", "status", "web"]);
    assert_eq!(
        (s["revision"].as_u64(), s["desired"].as_u64()),
        (Some(1), Some(2))
    );
    // without --to-revision: back to the one current before (2)
    assert_eq!(json(&["service", "rollback", "web"])["revision"], 2);
    let err = refused(&["service", "rollback", "web", "--to-revision", "2"]);
    assert!(err.contains("already current"), "{err}");
    let err = refused(&["service", "rollback", "web", "--to-revision", "9"]);
    assert!(
        err.contains("no revision 9") && err.contains("weft service history web"),
        "{err}"
    );

    // history: every change, oldest first
    let h = json(&["service", "history", "web"]);
    let changes: Vec<&str> = h
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["change"].as_str().expect("change"))
        .collect();
    assert_eq!(changes, ["apply", "apply", "scale", "rollback", "rollback"]);
    assert_eq!(h[2]["replicas"], 5);
    assert_eq!(h[3]["revision"], 1);
    let table = weft(&["service", "history", "web"]);
    assert!(table.starts_with("WHEN"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");

    let ls = weft(&["service", "ls"]);
    assert!(ls.starts_with("SERVICE"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("web") && l.contains("wasm")),
        "{ls}"
    );
    // the module was never added: a replica the owner placed meanwhile
    // (timing decides whether there is one yet) fails and says why
    let endpoints = json(&["service", "endpoints", "web"]);
    for e in endpoints.as_array().expect("endpoints array") {
        assert_ne!(e["state"], "ready", "{endpoints}");
        if e["state"] == "failed" {
            assert!(
                e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("examples/httptest:v1")),
                "{endpoints}"
            );
        }
    }
    assert!(json(&["service", "logs", "web"]).is_array());

    let listed = json(&["service", "ls"]);
    assert_eq!(listed[0]["name"], "web");
    assert_eq!(listed[0]["revision"], 2);
    // rm: no longer listed; its status and history stay
    assert_eq!(
        weft(&["service", "rm", "web"]).trim(),
        "service web removed"
    );
    let listed = json(&["service", "ls"]);
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .all(|s| s["name"] != "web" || s["revision"].is_null()),
        "{listed}"
    );
    assert_eq!(json(&["service", "status", "web"])["rollout"], "removed");
    let err = refused(&["service", "scale", "web", "2"]);
    assert!(
        err.contains("removed") && err.contains("weft service apply"),
        "{err}"
    );
    let err = refused(&["service", "rm", "web"]);
    assert!(err.contains("removed"), "{err}");
    // applying again brings it back as a new revision
    assert_eq!(
        weft(&["service", "apply", "-f", &v1]).trim(),
        "service web: revision 3"
    );

    // the owner's revert of a failed rollout: a rollback with its reason,
    // clipped to what peers accept
    node.services()
        .revert(
            "web",
            2,
            format!("revision 3 not ready within 60s{}", "!".repeat(20_000)),
        )
        .await
        .expect("revert");
    let s = json(&["service", "status", "web"]);
    assert_eq!(s["revision"], 2);
    let h = json(&["service", "history", "web"]);
    let last = h.as_array().and_then(|a| a.last()).expect("history");
    assert_eq!(last["change"], "rollback");
    let reason = last["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("revision 3 not ready within 60s"),
        "{reason}"
    );
    assert!(
        reason.len() <= weft_protocol::bounds::MAX_REASON_BYTES,
        "{}",
        reason.len()
    );
    assert!(node.services().revert("web", 9, "x".into()).await.is_err());

    // a service that scales itself is not scaled by hand
    let auto = write(
        "auto.yaml",
        "apiVersion: weft/v1\nkind: Service\nmetadata: {name: fn}\nspec:\n  replicas: auto\n  autoscale: {min: 0, max: 4, targetConcurrency: 2}\n  task: {wasm: {module: examples/httptest:v1}}\n",
    );
    assert_eq!(
        weft(&["service", "apply", "-f", &auto]).trim(),
        "service fn: revision 1"
    );
    let err = refused(&["service", "scale", "fn", "3"]);
    assert!(
        err.contains("replicas: auto") && err.contains("autoscale"),
        "{err}"
    );

    // refusals: the field path, the file, what to do
    let bad = write(
        "bad.yaml",
        &spec("2", "x").replace(
            "health: {http: /healthz}",
            "health: {http: /h, interval: 2x}",
        ),
    );
    let err = refused(&["service", "apply", "-f", &bad]);
    assert!(
        err.contains("bad.yaml")
            && err.contains("spec.health.interval")
            && err.contains("invalid duration"),
        "{err}"
    );
    let err = refused(&[
        "service",
        "apply",
        "-f",
        &write(
            "t.yaml",
            &spec("2", "x").replace(
                "  task:\n    wasm: {module: examples/httptest:v1, env: {VERSION: x}}\n",
                "",
            ),
        ),
    ]);
    assert!(err.contains("spec.task: missing"), "{err}");
    let err = refused(&["service", "status", "nope"]);
    assert!(
        err.contains("no service named \"nope\"") && err.contains("weft service ls"),
        "{err}"
    );
    let err = refused(&["service", "scale", "nope", "1"]);
    assert!(err.contains("no service named"), "{err}");
    let err = refused(&["service", "scale", "web", "100000"]);
    assert!(err.contains("most"), "{err}");

    // the API answers a bad spec sent straight to it with 400 and the path,
    // an unknown service with 404
    let client = weft_node::api::client::ApiClient::from_home(&Home::at(&home)).expect("client");
    let resp = client
        .request(reqwest::Method::POST, "/api/v1/services")
        .header("content-type", "application/yaml")
        .body(spec("300", "x"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("spec.replicas:")),
        "{body}"
    );
    let resp = client
        .request(reqwest::Method::GET, "/api/v1/services/nope/history")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    // YAML straight to the API: the current spec (revision 2) again is 200,
    // not a new revision
    let resp = client
        .request(reqwest::Method::POST, "/api/v1/services")
        .header("content-type", "application/yaml")
        .body(spec("3", "two"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    node.stop().await;
}
