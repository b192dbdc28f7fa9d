//! `weft init` for a machine joining a cluster (`--cluster-secret`,
//! `--bootstrap`) and `weft node` before its daemon runs: what an install
//! script reads to print the join commands.

use std::path::Path;
use std::process::{Command, Output};

fn weft(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("WEFT_HOME")
        .env_remove("WEFT_CLUSTER_SECRET")
        .output()
        .expect("run weft")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

#[test]
fn init_joins_a_cluster_through_bootstrap_peers_and_node_prints_its_id_without_a_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("b");
    let secret = weft_node::config::new_secret();
    let boot = format!("/ip4/198.18.0.5/udp/4001/quic-v1/p2p/{PEER}");
    let out = weft(
        &home,
        &["init", "--cluster-secret", &secret, "--bootstrap", &boot],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let peer = printed
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .expect("init prints the node id")
        .to_string();

    let config = weft_node::config::Config::parse(
        &std::fs::read_to_string(home.join("config.toml")).expect("config"),
    )
    .expect("parse");
    assert_eq!(config.network.bootstrap, vec![boot.clone()]);
    assert_eq!(
        config.network.cluster_secret.as_deref(),
        Some(secret.as_str())
    );

    // no daemon: the id and the configured addresses, from the home
    let out = weft(&home, &["node"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["peer_id"], peer.as_str());
    assert_eq!(v["running"], false);
    assert_eq!(v["bootstrap"][0], boot.as_str());
    assert!(
        v["listen"]
            .as_array()
            .expect("listen")
            .iter()
            .any(|a| a == "/ip4/0.0.0.0/udp/4001/quic-v1"),
        "{v}"
    );
    assert!(
        !text(&out.stdout).contains(&secret),
        "weft node prints the secret"
    );

    // --force keeps the identity and takes new bootstrap peers
    let other = format!("/ip4/198.18.0.7/tcp/4001/p2p/{PEER}");
    let out = weft(
        &home,
        &[
            "init",
            "--force",
            "--cluster-secret",
            &secret,
            "--bootstrap",
            &other,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("node {peer}")));
}

#[test]
fn init_refuses_a_bootstrap_that_is_not_a_multiaddr_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("b");
    let out = weft(&home, &["init", "--bootstrap", "198.18.0.5:4001"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("198.18.0.5:4001") && err.contains("multiaddr"),
        "{err}"
    );
    assert!(!home.join("config.toml").exists());
}

#[test]
fn node_without_a_config_says_to_run_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("empty");
    std::fs::create_dir_all(&home).expect("mkdir");
    let out = weft(&home, &["node"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("weft init"), "{err}");
}
