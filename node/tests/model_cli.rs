//! `weft model ...` through a running daemon.

use std::process::{Command, Output};

use weft_node::config::Config;
use weft_node::daemon::Node;
use weft_node::home::Home;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_commands_register_alias_roll_back_and_list() {
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
    for (i, text) in ["first model", "second model"].iter().enumerate() {
        let file = dir.path().join(format!("m{i}.bin"));
        std::fs::write(&file, text).expect("write");
        let tag = format!("artifacts/iris:v{}", i + 1);
        weft(&["add", file.to_str().expect("utf8"), "--tag", &tag]);
        assert_eq!(
            weft(&["model", "register", "iris", &tag]).trim(),
            format!("models/iris:{}", i + 1)
        );
    }
    assert_eq!(
        weft(&["model", "alias", "iris@champion", "1"]).trim(),
        "models/iris@champion -> 1 (was -)"
    );
    assert_eq!(
        weft(&["model", "alias", "models/iris@champion", "2"]).trim(),
        "models/iris@champion -> 2 (was 1)"
    );
    assert_eq!(
        weft(&["model", "rollback", "iris@champion"]).trim(),
        "models/iris@champion -> 1 (was 2)"
    );
    // the alias resolves wherever a reference is taken
    let out = dir.path().join("champion.bin");
    weft(&[
        "get",
        "models/iris@champion",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(std::fs::read(&out).expect("read"), b"first model");
    assert_eq!(weft(&["cat", "models/iris:2"]), "second model");

    let ls = weft(&["model", "ls"]);
    assert!(ls.starts_with("MODEL"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("iris") && l.contains("champion=1")),
        "{ls}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&weft(&["--json", "model", "ls"])).expect("json");
    assert_eq!(listed[0]["name"], "iris");
    assert_eq!(listed[0]["versions"], 2);
    let show = weft(&["model", "show", "iris"]);
    assert!(show.contains("alias iris@champion -> 1"), "{show}");
    assert!(show.contains("(rollback)"), "{show}");
    let shown: serde_json::Value =
        serde_json::from_str(&weft(&["model", "show", "iris", "--json"])).expect("json");
    assert_eq!(shown["versions"].as_array().expect("versions").len(), 2);
    assert_eq!(shown["versions"][0]["source"], "artifacts/iris:v1");
    assert_eq!(
        shown["aliases"][0]["history"]
            .as_array()
            .expect("history")
            .len(),
        3
    );

    // refusals: one error line that says what to do
    let out = run(&["model", "rollback", "iris@staging"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("weft model alias iris@staging"),
        "{err}"
    );
    let out = run(&["model", "alias", "iris", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NAME@ALIAS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop().await;
}
