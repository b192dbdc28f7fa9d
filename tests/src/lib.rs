//! The cluster harness: N real weft nodes in one process, each with its own
//! temporary home, listening on `127.0.0.1:0`, bootstrapped off the first.
//!
//! Scenario tests in `tests/tests/` start a [`Cluster`], act on its nodes
//! through their handles or their REST APIs, and stop it.

pub mod jobs;
pub mod rogue;
pub mod s3;

pub use jobs::{
    everywhere, now_ms, peer, sleepy_cluster, sleepy_job, submit, wait_cache_record, wait_done,
    wait_state,
};

use std::future::Future;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use weft_node::config::{Config, GpuDecl, new_secret};
use weft_node::daemon::Node;
use weft_node::home::Home;

/// How the cluster's nodes are configured.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub advert_interval_ms: u64,
    pub advert_ttl_ms: u64,
    /// Nodes (0-based) that declare one GPU.
    pub gpu_nodes: Vec<usize>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            advert_interval_ms: 300,
            advert_ttl_ms: 1000,
            gpu_nodes: Vec::new(),
        }
    }
}

/// A running cluster. Stopped nodes leave `None` in their slot.
pub struct Cluster {
    pub nodes: Vec<Option<Node>>,
    secret: String,
    opts: ClusterOptions,
    bootstrap: Vec<String>,
    dir: TempDir,
}

/// A config for a node in this process: everything on loopback, ports from the OS.
pub fn loopback_config(secret: &str) -> Config {
    let mut c = Config::loopback();
    c.network.listen = vec![
        "/ip4/127.0.0.1/tcp/0".into(),
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
    ];
    c.network.cluster_secret = Some(secret.to_string());
    c
}

impl Cluster {
    /// Starts `n` nodes and returns once each lists all the others.
    pub async fn start(n: usize, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            secret: new_secret(),
            opts,
            bootstrap: Vec::new(),
            dir,
        };
        for _ in 0..n {
            cluster.add_node(|_| {}).await?;
        }
        cluster
            .wait_until(Duration::from_secs(20), "all nodes see each other", |c| {
                let want = n - 1;
                async move { c.all_see(want).await }
            })
            .await?;
        Ok(cluster)
    }

    /// This cluster's secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The config node `i` gets.
    pub fn config_for(&self, i: usize) -> Config {
        let mut c = loopback_config(&self.secret);
        c.network.advert_interval_ms = self.opts.advert_interval_ms;
        c.network.advert_ttl_ms = self.opts.advert_ttl_ms;
        c.network.bootstrap = self.bootstrap.clone();
        c.node.labels.insert("node".into(), format!("{i}"));
        // node 0 is where tests usually submit; the others are workers, so a
        // test can keep a task off the coordinator with `worker: "yes"`
        if i != 0 {
            c.node.labels.insert("worker".into(), "yes".into());
        }
        if self.opts.gpu_nodes.contains(&i) {
            c.gpus.push(GpuDecl {
                model: "test-gpu".into(),
                memory: "16Gi".into(),
                count: 1,
            });
        }
        c
    }

    /// Starts one more node (config adjusted by `tweak`); returns its index.
    pub async fn add_node(&mut self, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let mut config = self.config_for(i);
        tweak(&mut config);
        let node = Node::start(Home::at(self.dir.path().join(format!("node{i}"))), config).await?;
        if self.bootstrap.is_empty() {
            self.bootstrap = node
                .net()
                .dialable_addrs()
                .await?
                .iter()
                .map(|a| a.to_string())
                .filter(|a| a.contains("/tcp/"))
                .collect();
        }
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// Node `i`; panics if it was stopped (a test bug).
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node was stopped")
    }

    /// The running nodes with their indexes.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Stops node `i`, keeping its home.
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.stop().await;
        }
    }

    /// Restarts a stopped node on its old home, bootstrapping off another
    /// running node (its own old addresses are gone with it).
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        let mut config = self.config_for(i);
        if let Some((_, other)) = self.running().find(|(j, _)| *j != i) {
            config.network.bootstrap = other
                .net()
                .dialable_addrs()
                .await?
                .iter()
                .map(|a| a.to_string())
                .filter(|a| a.contains("/tcp/"))
                .collect();
        }
        let node = Node::start(Home::at(self.dir.path().join(format!("node{i}"))), config).await?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Peer ids that node `i` lists.
    pub async fn peers_of(&self, i: usize) -> Vec<String> {
        self.node(i)
            .net()
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.peer_id.to_string())
            .collect()
    }

    async fn all_see(&self, want: usize) -> bool {
        for (i, _) in self.running() {
            if self.peers_of(i).await.len() < want {
                return false;
            }
        }
        true
    }

    /// Polls `cond` until it holds or `timeout` passes.
    pub async fn wait_until<'a, F, Fut>(
        &'a self,
        timeout: Duration,
        what: &str,
        cond: F,
    ) -> anyhow::Result<Duration>
    where
        F: Fn(&'a Cluster) -> Fut,
        Fut: Future<Output = bool> + 'a,
    {
        let start = Instant::now();
        loop {
            if cond(self).await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("timed out after {timeout:?} waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every node.
    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }
}

/// The bytes of an example WASM program (`examples/wasm/out/NAME.wasm`),
/// building the examples first (once per test process).
pub fn example_wasm(name: &str) -> anyhow::Result<Vec<u8>> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new(root.join("scripts/build-examples.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run scripts/build-examples.sh: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/build-examples.sh failed: {status}"));
        }
        Ok(root.join("examples/wasm/out"))
    });
    let dir = out.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses a job spec, for tests.
pub fn job(yaml: &str) -> weft_protocol::JobSpec {
    match weft_protocol::JobSpec::from_yaml(yaml) {
        Ok(s) => s,
        Err(e) => panic!("test job spec does not parse: {e}\n{yaml}"),
    }
}

/// Imports the busybox test image on every running node of `cluster`,
/// tagged `tag`.
pub fn import_test_image_everywhere(cluster: &Cluster, tag: &str) -> anyhow::Result<()> {
    let archive = test_image()?;
    let tag = weft_protocol::TagName::new(tag).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (_, n) in cluster.running() {
        weft_node::image::import(n.store(), &archive, Some(&tag), false)?;
    }
    Ok(())
}

/// The busybox test image archive (`scripts/build-test-image.sh`), built
/// once per test process.
pub fn test_image() -> anyhow::Result<std::path::PathBuf> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::env::temp_dir().join(format!("weft-test-image-{}.tar", std::process::id()));
        let status = std::process::Command::new(root.join("scripts/build-test-image.sh"))
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run scripts/build-test-image.sh: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/build-test-image.sh failed: {status}"));
        }
        Ok(out)
    });
    built.clone().map_err(|e| anyhow::anyhow!("{e}"))
}
