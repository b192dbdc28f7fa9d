//! Mesh commands: `weft peers`, `weft node`, and `weft devnet` (a local
//! multi-node cluster on loopback, each node its own daemon process).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::backend::daemon_client;
use super::output::{self, Table, human_bytes, human_duration};
use crate::api::client::ApiClient;
use crate::config::{Config, GpuDecl, new_secret};
use crate::home::{Home, write_atomic};

/// The API of the running daemon, or an error that says how to start one.
async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

#[derive(Debug, Deserialize, Serialize)]
struct PeerRow {
    peer_id: String,
    addrs: Vec<String>,
    connected: bool,
    last_seen_ms: u64,
    advert: weft_protocol::NodeAdvert,
}

/// `weft peers`.
pub(crate) async fn peers(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let rows: Vec<PeerRow> = client.get("/api/v1/peers").await?;
    if json {
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "PEER",
        "ADDRESS",
        "SEEN",
        "CPU",
        "MEMORY",
        "DISK",
        "GPUS",
        "EXECUTORS",
        "LABELS",
    ]);
    for p in rows {
        let a = &p.advert;
        let gpus = if a.gpus.is_empty() {
            "-".to_string()
        } else {
            a.gpus
                .iter()
                .map(|g| format!("{} {}", g.model, human_bytes(g.memory_bytes)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut executors = Vec::new();
        if a.executors.wasm {
            executors.push("wasm".to_string());
        }
        if let Some(r) = &a.executors.container_runtime {
            executors.push(r.clone());
        }
        t.row(vec![
            p.peer_id,
            // a loopback address of another machine says nothing: the first
            // other one, unless the peer runs here
            p.addrs
                .iter()
                .find(|a| !a.starts_with("/ip4/127.") && !a.starts_with("/ip6/::1/"))
                .or(p.addrs.first())
                .cloned()
                .unwrap_or_default(),
            human_duration(Duration::from_millis(p.last_seen_ms)) + " ago",
            a.cpu_cores.to_string(),
            format!(
                "{} / {}",
                human_bytes(a.memory_free_bytes),
                human_bytes(a.memory_total_bytes)
            ),
            human_bytes(a.disk_free_bytes),
            gpus,
            executors.join(","),
            a.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft node`.
pub(crate) async fn node(home: &Home) -> anyhow::Result<ExitCode> {
    if let Some(client) = daemon_client(home).await? {
        let v: serde_json::Value = client.get("/api/v1/node").await?;
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    // no daemon: what the home says (an install script prints join commands
    // from it before the service starts)
    if !home.config_path().exists() {
        bail!(
            "{} has no config and no daemon runs there; run `weft init` first",
            home.root().display()
        );
    }
    let config = Config::load(home)?;
    let peer = home.identity()?.public().to_peer_id();
    output::json(&serde_json::json!({
        "peer_id": peer.to_string(),
        "version": weft_protocol::VERSION,
        "running": false,
        "listen": config.network.listen,
        "data_listen": config.data.listen,
        "bootstrap": config.network.bootstrap,
    }))?;
    Ok(ExitCode::SUCCESS)
}

// ---- devnet --------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct DevnetNode {
    name: String,
    home: PathBuf,
    pid: u32,
    api: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DevnetState {
    nodes: Vec<DevnetNode>,
    /// The S3 gateways: `DIR/s3.json`'s document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s3: Option<DevnetS3>,
}

/// `DIR/s3.json`: the key every node of the devnet accepts and each
/// node's S3 endpoint, in node order.
#[derive(Debug, Serialize, Deserialize)]
struct DevnetS3 {
    v: u32,
    access_key: String,
    secret_key: String,
    region: String,
    endpoints: Vec<String>,
}

/// Where a devnet lives unless `--dir` says otherwise.
pub(crate) fn default_devnet_dir() -> PathBuf {
    std::env::var_os("WEFT_DEVNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("weft-devnet"))
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("devnet.json")
}

fn load_state(dir: &Path) -> anyhow::Result<Option<DevnetState>> {
    match fs::read(state_path(dir)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{}: not a devnet state file", state_path(dir).display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", state_path(dir).display())),
    }
}

/// Whether `pid` is a weft daemon running on `home`.
fn is_our_daemon(pid: u32, home: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter().any(|a| a == "daemon") && args.iter().any(|a| Path::new(a) == home)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid read from our own state file, checked to be
    // a weft daemon on the devnet's home just before.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

async fn wait_for_api(
    home: &Home,
    child: &mut std::process::Child,
    deadline: Instant,
) -> anyhow::Result<ApiClient> {
    loop {
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(home.root().join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "the daemon on {} exited ({status}); last log lines:\n{}",
                home.root().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(c) = daemon_client(home).await? {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon on {} did not come up in time; see {}/daemon.log",
                home.root().display(),
                home.root().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn_daemon(home: &Home) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let log = fs::File::create(home.root().join("daemon.log"))
        .with_context(|| format!("{}/daemon.log", home.root().display()))?;
    let exe = std::env::current_exe().context("finding the weft binary")?;
    let child = std::process::Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("WEFT_HOME")
        // its own process group: a Ctrl-C on this terminal does not stop it
        .process_group(0)
        .spawn()
        .context("starting a daemon")?;
    Ok(child)
}

/// `weft devnet up`.
pub(crate) async fn devnet_up(
    dir: &Path,
    nodes: usize,
    gpu_nodes: &[usize],
) -> anyhow::Result<ExitCode> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if let Some(k) = gpu_nodes.iter().find(|k| **k == 0 || **k > nodes) {
        bail!("--gpu-node {k} is not one of the nodes 1..={nodes}");
    }
    if let Some(state) = load_state(dir)?
        && state.nodes.iter().any(|n| is_our_daemon(n.pid, &n.home))
    {
        bail!(
            "a devnet is already running in {}; stop it with `weft devnet down --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let dir = fs::canonicalize(dir)?;
    let secret = new_secret();
    let s3_key = crate::s3::keys::Key {
        access_key: crate::s3::keys::new_access_key(),
        secret_key: crate::s3::keys::new_secret_key(),
        name: "devnet".into(),
        created_ms: crate::s3::gateway::now_ms(),
        all: Some(crate::s3::keys::Perm::Write),
        buckets: Default::default(),
    };
    let homes: Vec<Home> = (1..=nodes)
        .map(|i| Home::at(dir.join(format!("node{i}"))))
        .collect();
    let config_for = |i: usize, bootstrap: Vec<String>| {
        let mut c = Config::default();
        c.api.listen = "127.0.0.1:0".into();
        c.ingress.listen = "127.0.0.1:0".into();
        c.s3.listen = "127.0.0.1:0".into();
        c.data.listen = "127.0.0.1:0".into();
        c.network.listen = vec![
            "/ip4/127.0.0.1/tcp/0".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ];
        c.network.mdns = false;
        c.network.bootstrap = bootstrap;
        c.network.cluster_secret = Some(secret.clone());
        c.network.advert_interval_ms = 1000;
        c.network.advert_ttl_ms = 3000;
        c.node.labels.insert("devnet".into(), format!("node{i}"));
        if gpu_nodes.contains(&i) {
            // a declared (not detected) GPU: how machines without a driver,
            // and this devnet, describe one
            c.gpus.push(GpuDecl {
                model: "devnet-gpu".into(),
                memory: "16Gi".into(),
                count: 1,
            });
        }
        c
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut state = DevnetState {
        nodes: Vec::new(),
        s3: None,
    };
    for home in &homes {
        home.ensure()?;
        let _ = fs::remove_file(home.s3_file());
        let path = home.s3_keys_path();
        let mut keys = crate::s3::keys::KeyFile::load(&path).unwrap_or_default();
        keys.keys.retain(|k| k.name != "devnet");
        keys.keys.push(s3_key.clone());
        keys.save(&path)?;
    }
    let mut children = Vec::new();

    // node 1 first: the others bootstrap off it
    homes[0].ensure()?;
    config_for(1, Vec::new()).save(&homes[0])?;
    let _ = fs::remove_file(homes[0].api_file());
    let mut first = spawn_daemon(&homes[0])?;
    let client = wait_for_api(&homes[0], &mut first, deadline).await?;
    let info: serde_json::Value = client.get("/api/v1/node").await?;
    let bootstrap: Vec<String> = info["addrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .filter(|a| a.contains("/tcp/"))
                .collect()
        })
        .unwrap_or_default();
    if bootstrap.is_empty() {
        bail!(
            "node 1 reports no TCP listen address; see {}/daemon.log",
            homes[0].root().display()
        );
    }
    state.nodes.push(DevnetNode {
        name: "node1".into(),
        home: homes[0].root().to_path_buf(),
        pid: first.id(),
        api: client.base().to_string(),
    });
    children.push(first);

    for (i, home) in homes.iter().enumerate().skip(1) {
        home.ensure()?;
        config_for(i + 1, bootstrap.clone()).save(home)?;
        let _ = fs::remove_file(home.api_file());
        children.push(spawn_daemon(home)?);
    }
    for (i, home) in homes.iter().enumerate().skip(1) {
        let client = wait_for_api(home, &mut children[i], deadline).await?;
        state.nodes.push(DevnetNode {
            name: format!("node{}", i + 1),
            home: home.root().to_path_buf(),
            pid: children[i].id(),
            api: client.base().to_string(),
        });
    }
    let mut endpoints = Vec::new();
    for n in &state.nodes {
        match fs::read_to_string(n.home.join("s3")) {
            Ok(url) => endpoints.push(url.trim().to_string()),
            Err(_) => break,
        }
    }
    let s3_path = dir.join("s3.json");
    if endpoints.len() == state.nodes.len() {
        let s3 = DevnetS3 {
            v: 1,
            access_key: s3_key.access_key.clone(),
            secret_key: s3_key.secret_key.clone(),
            region: Config::default().s3.region,
            endpoints,
        };
        write_atomic(&s3_path, &serde_json::to_vec_pretty(&s3)?, 0o600)?;
        state.s3 = Some(s3);
    } else {
        let _ = fs::remove_file(&s3_path);
    }
    write_atomic(
        &state_path(&dir),
        &serde_json::to_vec_pretty(&state)?,
        0o644,
    )?;

    // wait until every node lists every other
    loop {
        let mut all = true;
        for n in &state.nodes {
            let peers: Vec<serde_json::Value> = match ApiClient::from_home(&Home::at(&n.home)) {
                Ok(c) => c.get("/api/v1/peers").await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if peers.len() + 1 < nodes {
                all = false;
                break;
            }
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the nodes did not all see each other within 30 s; see the daemon.log files in {} (`weft devnet down --dir {}` stops them)",
                dir.display(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("devnet of {nodes} nodes up in {}", dir.display());
    let mut t = Table::new(&["NODE", "PID", "API", "INGRESS", "S3", "HOME"]);
    for n in &state.nodes {
        let ingress = fs::read_to_string(n.home.join("ingress")).unwrap_or_default();
        let s3 = fs::read_to_string(n.home.join("s3")).unwrap_or_default();
        t.row(vec![
            n.name.clone(),
            n.pid.to_string(),
            n.api.clone(),
            ingress.trim().to_string(),
            s3.trim().to_string(),
            n.home.display().to_string(),
        ]);
    }
    t.print()?;
    println!();
    println!("address a node with its home, e.g.:");
    println!("  WEFT_HOME={}/node2 weft peers", dir.display());
    println!("  weft --home {}/node1 add FILE", dir.display());
    if state.s3.is_some() {
        println!(
            "S3: endpoints and a key in {} (e.g. `aws --endpoint-url URL s3 ls` with its key)",
            s3_path.display()
        );
    }
    println!("stop them with: weft devnet down --dir {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `weft devnet down`.
pub(crate) async fn devnet_down(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(state) = load_state(dir)? else {
        println!("no devnet in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let live: Vec<&DevnetNode> = state
        .nodes
        .iter()
        .filter(|n| is_our_daemon(n.pid, &n.home))
        .collect();
    for n in &live {
        signal(n.pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.iter().any(|n| is_our_daemon(n.pid, &n.home)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in live.iter().filter(|n| is_our_daemon(n.pid, &n.home)) {
        tracing::warn!(node = %n.name, pid = n.pid, "did not stop on SIGTERM; killing it");
        signal(n.pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.iter().any(|n| is_our_daemon(n.pid, &n.home)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a node killed mid-task leaves its task volumes mounted (its next
    // start would sweep them): nothing of the devnet stays mounted
    for n in &state.nodes {
        weft_sandbox::unmount_under(&n.home);
    }
    fs::remove_file(state_path(dir)).with_context(|| format!("{}", state_path(dir).display()))?;
    println!("stopped {} nodes in {}", live.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `weft devnet status`.
pub(crate) async fn devnet_status(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let Some(state) = load_state(dir)? else {
        println!("no devnet in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let mut rows = Vec::new();
    for n in &state.nodes {
        let running = is_our_daemon(n.pid, &n.home);
        let peers = if running {
            match ApiClient::from_home(&Home::at(&n.home)) {
                Ok(c) => c
                    .get::<Vec<serde_json::Value>>("/api/v1/peers")
                    .await
                    .map(|p| p.len())
                    .ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        rows.push(serde_json::json!({
            "name": n.name, "pid": n.pid, "api": n.api, "home": n.home,
            "running": running, "peers": peers,
        }));
    }
    if json {
        output::json(&rows)?;
    } else {
        let mut t = Table::new(&["NODE", "STATE", "PEERS", "API", "HOME"]);
        for r in &rows {
            t.row(vec![
                r["name"].as_str().unwrap_or("").to_string(),
                if r["running"] == true {
                    "running"
                } else {
                    "stopped"
                }
                .to_string(),
                r["peers"]
                    .as_u64()
                    .map(|p| p.to_string())
                    .unwrap_or("-".into()),
                r["api"].as_str().unwrap_or("").to_string(),
                r["home"].as_str().unwrap_or("").to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod devnet_s3_tests {
    use super::DevnetS3;

    #[test]
    fn golden_s3_json() {
        let s3 = DevnetS3 {
            v: 1,
            access_key: "WKAAAAAAAAAAAAAAAAAA".into(),
            secret_key: "s".repeat(40),
            region: "us-east-1".into(),
            endpoints: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
        };
        let want = format!(
            "{{\n  \"v\": 1,\n  \"access_key\": \"WKAAAAAAAAAAAAAAAAAA\",\n  \"secret_key\": \"{}\",\n  \"region\": \"us-east-1\",\n  \"endpoints\": [\n    \"http://127.0.0.1:1\",\n    \"http://127.0.0.1:2\"\n  ]\n}}",
            "s".repeat(40)
        );
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&s3).expect("json")).expect("utf8"),
            want
        );
    }
}
