//! `weft devnet` with the real binary, as a user runs it.

use std::process::Command;
use std::time::{Duration, Instant};

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft")
}

fn ok(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn daemons_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let s = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if s.contains("daemon") && s.contains(&*dir.to_string_lossy()) {
                found.push(s);
            }
        }
    }
    found
}

#[test]
fn devnet_up_add_peers_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    let t = Instant::now();
    let up = ok(&["devnet", "up", "--nodes", "3", "--dir", d]);
    assert!(
        up.contains(&format!("WEFT_HOME={d}/node2 weft peers")),
        "{up}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(daemons_under(dir.path()).len(), 3);

    let file = dir.path().join("data.txt");
    std::fs::write(&file, b"hello devnet").expect("write");
    let node1 = format!("{d}/node1");
    let id = ok(&["--home", &node1, "add", file.to_str().expect("utf8")]);
    assert_eq!(id.trim(), blake3::hash(b"hello devnet").to_hex().as_str());

    let node3 = format!("{d}/node3");
    let peers: serde_json::Value =
        serde_json::from_str(&ok(&["--home", &node3, "peers", "--json"])).expect("json");
    let listed: Vec<String> = peers
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["peer_id"].as_str().expect("peer id").to_string())
        .collect();
    for n in ["node1", "node2"] {
        let me: serde_json::Value =
            serde_json::from_str(&ok(&["--home", &format!("{d}/{n}"), "node"])).expect("json");
        let id = me["peer_id"].as_str().expect("peer id");
        assert!(
            listed.iter().any(|p| p == id),
            "{n} ({id}) not in node3's peers {listed:?}"
        );
    }
    let status = ok(&["devnet", "status", "--dir", d]);
    assert_eq!(status.matches("running").count(), 3, "{status}");

    ok(&["devnet", "down", "--dir", d]);
    assert!(
        daemons_under(dir.path()).is_empty(),
        "a daemon was left behind"
    );
    // no daemon: the CLI works on the home directly
    assert_eq!(ok(&["--home", &node1, "cat", id.trim()]), "hello devnet");
}

/// The examples' train and evaluate jobs across a 3-node devnet: data added
/// on node 1, jobs submitted on nodes 3 and 2, the model fetched on node 2.
#[test]
fn train_and_evaluate_across_a_devnet() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/build-examples.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("build examples");
    assert!(status.success());
    let out = root.join("examples/wasm/out");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    ok(&["devnet", "up", "--nodes", "3", "--dir", d]);
    let home = |i: usize| format!("{d}/node{i}");
    let iris = root.join("examples/data/iris");
    ok(&[
        "--home",
        &home(1),
        "add",
        iris.to_str().expect("utf8"),
        "--tag",
        "datasets/iris:v1",
    ]);
    for (m, tag) in [
        ("train", "examples/train:v1"),
        ("evaluate", "examples/evaluate:v1"),
    ] {
        let wasm = out.join(format!("{m}.wasm"));
        ok(&[
            "--home",
            &home(1),
            "add",
            wasm.to_str().expect("utf8"),
            "--tag",
            tag,
        ]);
    }
    let jobs = root.join("examples/jobs");
    let run = |node: usize, file: &str| -> serde_json::Value {
        let spec = jobs.join(file);
        serde_json::from_str(&ok(&[
            "--home",
            &home(node),
            "run",
            "-f",
            spec.to_str().expect("utf8"),
            "--wait",
            "--json",
        ]))
        .expect("status json")
    };
    // tags replicate within a few seconds; the submitting node resolves them
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(&["--home", &home(3), "tag", "ls"]).contains("examples/evaluate:v1") {
        assert!(Instant::now() < deadline, "tags did not reach node 3");
        std::thread::sleep(Duration::from_millis(100));
    }
    let train = run(3, "train.yaml");
    assert_eq!(train["state"], "succeeded", "{train:#}");
    let eval = run(2, "evaluate.yaml");
    assert_eq!(eval["state"], "succeeded", "{eval:#}");
    let model = dir.path().join("model");
    ok(&[
        "--home",
        &home(2),
        "get",
        "models/example:v1",
        "-o",
        model.to_str().expect("utf8"),
    ]);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("metrics.json")).expect("metrics"))
            .expect("json");
    assert!(
        metrics["train_accuracy"].as_f64().expect("accuracy") > 0.9,
        "{metrics}"
    );
    let res = dir.path().join("eval");
    ok(&[
        "--home",
        &home(2),
        "get",
        "results/example-eval:v1",
        "-o",
        res.to_str().expect("utf8"),
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(res.join("metrics.json")).expect("metrics"))
            .expect("json");
    assert!(m["accuracy"].as_f64().expect("accuracy") >= 0.85, "{m}");
    // the job is visible from the node that did not coordinate it
    let listed = ok(&["--home", &home(1), "job", "ls"]);
    assert!(
        listed.contains("train-iris") && listed.contains("evaluate-iris"),
        "{listed}"
    );
    ok(&["devnet", "down", "--dir", d]);
    assert!(daemons_under(dir.path()).is_empty());
}

/// Stops every daemon under a devnet folder when dropped, a panicking test
/// included: the devnet's own and any started by hand on its homes.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = weft(&["devnet", "down", "--dir", &self.0.to_string_lossy()]);
        for home in ["node1", "node2", "node3"] {
            if let Some(pid) = daemon_pid(&self.0.join(home).to_string_lossy()) {
                // SAFETY: kill(2) on a pid just read from /proc
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pid of the daemon whose command line names `home`.
fn daemon_pid(home: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "daemon") && args.iter().any(|a| a == home) {
                return Some(pid);
            }
        }
    }
    None
}

fn job_state(home: &str, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["--home", home, "job", "status", id, "--json"])).expect("json")
}

/// A coordinator killed with SIGKILL (no flush, no goodbye) while its job's
/// result is on its way loses nothing: the executor keeps the final report
/// until the restarted coordinator acknowledges it, and the job ends
/// succeeded on its first attempt instead of hanging or running again.
#[test]
fn a_coordinator_killed_while_its_result_is_in_flight_keeps_the_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    ok(&["devnet", "up", "--nodes", "2", "--dir", d]);
    // whatever happens below, no daemon of this test outlives it
    let _down = Down(dir.path().to_path_buf());
    let node1 = format!("{d}/node1");
    let node2 = format!("{d}/node2");
    // a module that spins for about a second, then exits 0
    let wasm = wat::parse_str(
        r#"(module (func (export "_start") (local i64)
             (loop (local.set 0 (i64.add (local.get 0) (i64.const 1)))
                   (br_if 0 (i64.lt_u (local.get 0) (i64.const 1000000000))))))"#,
    )
    .expect("wat");
    let module = dir.path().join("spin.wasm");
    std::fs::write(&module, wasm).expect("write");
    ok(&[
        "--home",
        &node1,
        "add",
        module.to_str().expect("utf8"),
        "--tag",
        "examples/spin:v1",
    ]);
    let spec = dir.path().join("spin.yaml");
    std::fs::write(
        &spec,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: spin}\nspec:\n  task: {wasm: {module: examples/spin:v1}}\n  constraints: {devnet: node2}\n  timeout: 2m\n",
    )
    .expect("write");
    let id = ok(&["--home", &node1, "run", "-f", spec.to_str().expect("utf8")])
        .trim()
        .to_string();
    // kill the coordinator as soon as its executor runs the task
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_state(&node1, &id)["state"] != "running" {
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = daemon_pid(&node1).expect("node1's daemon");
    // SAFETY: kill(2) on a pid we just read; a stale pid only fails the call
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // the task (about a second) ends on node 2 while its coordinator is
    // down: its final report finds no one
    std::thread::sleep(Duration::from_secs(3));
    // node 1 comes back on new ports, bootstrapping off node 2
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["--home", &node2, "node"])).expect("json");
    let home1 = weft_node::home::Home::at(&node1);
    let mut config = weft_node::config::Config::load(&home1).expect("config");
    config.network.bootstrap = info["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.contains("/tcp/"))
        .map(|a| format!("{a}/p2p/{}", info["peer_id"].as_str().expect("peer id")))
        .collect();
    config.save(&home1).expect("save config");
    let _ = std::fs::remove_file(home1.api_file());
    let log = std::fs::File::create(dir.path().join("node1-again.log")).expect("log");
    let mut again = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--home", &node1, "daemon"])
        .env_remove("WEFT_HOME")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("restart node 1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let out = weft(&["--home", &node1, "job", "status", &id, "--json"]);
        if out.status.success()
            && let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            && status["state"] == "succeeded"
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = again.kill();
            let last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let log1 =
                std::fs::read_to_string(dir.path().join("node1-again.log")).unwrap_or_default();
            let log2 = std::fs::read_to_string(format!("{node2}/daemon.log")).unwrap_or_default();
            panic!(
                "the result was not recovered within 60 s; last status:\n{last}\nnode 1:\n{log1}\nnode 2:\n{log2}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = again.kill();
    let _ = again.wait();
    ok(&["devnet", "down", "--dir", d]);
    assert_eq!(end["attempt"], 1, "recovered, not run again: {end:#}");
    assert_eq!(end["result"]["exit_code"], 0, "{end:#}");
}
