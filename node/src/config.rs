//! The node's configuration: `$WEFT_HOME/config.toml`, overridden by flags
//! and `WEFT_*` environment variables (see `weft daemon --help`).
//!
//! Unknown keys are refused, so a typo is an error rather than a silently
//! ignored setting.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::home::{Home, write_atomic};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub network: NetworkSection,
    pub data: DataSection,
    pub api: ApiSection,
    pub sandbox: SandboxSection,
    pub ingress: IngressSection,
    pub s3: S3Section,
    /// GPUs this node declares (machines without a driver, tests).
    #[serde(rename = "gpu", skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuDecl>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Labels advertised to the mesh, matched by job constraints.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// libp2p listen multiaddrs (TCP and QUIC).
    pub listen: Vec<String>,
    /// Peers to dial at start (multiaddrs ending in /p2p/PEER_ID).
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network.
    pub mdns: bool,
    /// The cluster's shared secret: 64 hex digits.
    pub cluster_secret: Option<String>,
    /// How often the node gossips its advert, in milliseconds.
    pub advert_interval_ms: u64,
    /// How long an advert stays valid without a refresh, in milliseconds.
    pub advert_ttl_ms: u64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            cluster_secret: None,
            advert_interval_ms: 2000,
            advert_ttl_ms: 6000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// UDP address of the QUIC data plane.
    pub listen: String,
    /// Request streams open at once to each provider of a blob.
    pub streams_per_peer: usize,
    /// How often pins with `replicas` > 1 are checked (they are also checked
    /// whenever a pin changes or a peer leaves), in milliseconds.
    pub replication_interval_ms: u64,
    /// Faults to inject. For tests only: never set these on a real node.
    #[serde(skip_serializing_if = "DataFaults::is_off")]
    pub faults: DataFaults,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            listen: "0.0.0.0:4002".into(),
            streams_per_peer: 4,
            replication_interval_ms: 10_000,
            faults: DataFaults::default(),
        }
    }
}

/// `[data.faults]`: misbehaviour for tests of the data plane. For tests
/// only: a node with these set serves bad bytes or serves slowly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataFaults {
    /// Flip a byte in every chunk of blob data this node serves.
    pub flip_bytes: bool,
    /// Serve at most this many bytes per second (0: no limit).
    pub max_send_rate: u64,
}

impl DataFaults {
    /// Whether no fault is set.
    pub fn is_off(&self) -> bool {
        *self == DataFaults::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// TCP address of the REST API.
    pub listen: String,
    /// Bearer token. Default: the one the daemon keeps in `api-token` in the
    /// home (mode 0600), which the CLI reads.
    pub token: Option<String>,
    /// Host names (`name` for the API's port, or `name:port`) accepted in
    /// the `Host` header besides the listen address, `localhost`,
    /// `127.0.0.1` and `[::1]`: the names remote clients use. Any other
    /// name is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Where import and export by daemon-side path may read and write:
    /// absolute folders, compared after every symbolic link is resolved.
    /// Default `["/"]`: anywhere the daemon's user may go, which is the user
    /// the token file belongs to. Narrow it when the token is handed out.
    pub path_roots: Vec<PathBuf>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:4080".into(),
            token: None,
            allowed_hosts: Vec::new(),
            path_roots: vec![PathBuf::from("/")],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// OCI runtime to use (a name on PATH or a path); default: runc, then crun.
    pub runtime: Option<String>,
    /// Bytes a task may write to /outputs and /tmp together, held in a
    /// tmpfs (memory, swappable) per task; 0 for no quota. Default 1 GiB.
    pub task_disk_quota: u64,
    /// Run containers in a user namespace (container root is an
    /// unprivileged host id); turn off only where the kernel refuses them.
    pub userns: bool,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            runtime: None,
            task_disk_quota: weft_sandbox::DEFAULT_TASK_DISK_QUOTA,
            userns: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSection {
    /// TCP address of the HTTP ingress that serves every service; `""`
    /// turns it off. Default `127.0.0.1:4480`; `0.0.0.0:4480` serves other
    /// machines.
    pub listen: String,
    /// Services answer as `NAME.<domain>` (the `Host` header), and on
    /// every host name as `/s/NAME/...`. Default `weft.localhost`, which
    /// resolves to the loopback address without DNS.
    pub domain: String,
}

impl Default for IngressSection {
    fn default() -> Self {
        IngressSection {
            listen: "127.0.0.1:4480".into(),
            domain: "weft.localhost".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// TCP address of the S3 gateway; `""` (the default) turns it off.
    pub listen: String,
    /// The region clients sign for. Default `us-east-1`.
    pub region: String,
    /// Buckets answer as `BUCKET.<domain>` (virtual-host addressing) as
    /// well as path-style. Default `s3.localhost`.
    pub domain: String,
}

impl Default for S3Section {
    fn default() -> Self {
        S3Section {
            listen: String::new(),
            region: "us-east-1".into(),
            domain: "s3.localhost".into(),
        }
    }
}

/// A GPU declared in config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpuDecl {
    pub model: String,
    /// Memory, e.g. "80Gi".
    pub memory: String,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Config {
    /// A node alone on loopback: every listener on `127.0.0.1:0` (TCP only
    /// for libp2p), no mDNS, a new cluster secret. For tests and one-off
    /// nodes.
    pub fn loopback() -> Config {
        let mut c = Config::default();
        c.api.listen = "127.0.0.1:0".into();
        c.ingress.listen = "127.0.0.1:0".into();
        c.data.listen = "127.0.0.1:0".into();
        c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        c.network.mdns = false;
        c.network.cluster_secret = Some(new_secret());
        c
    }

    /// Reads the home's config file; a missing file means all defaults.
    pub fn load(home: &Home) -> Result<Config, ConfigError> {
        let path = home.config_path();
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError::Parse { path, message }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check_labels().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The node's labels fit what peers accept in an advert (more, or longer
    /// ones, would make every peer refuse this node's advert).
    pub fn check_labels(&self) -> Result<(), ConfigError> {
        use weft_protocol::bounds::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS};
        let labels = &self.node.labels;
        if labels.len() > MAX_LABELS {
            return Err(ConfigError::Invalid(format!(
                "node.labels has {} labels; peers accept at most {MAX_LABELS}",
                labels.len()
            )));
        }
        for (k, v) in labels {
            if k.len() > MAX_LABEL_KEY_BYTES || v.len() > MAX_LABEL_VALUE_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "node.labels.{k:.40}: keys may have {MAX_LABEL_KEY_BYTES} bytes and values {MAX_LABEL_VALUE_BYTES}"
                )));
            }
        }
        Ok(())
    }

    /// Writes the config file atomically.
    pub fn save(&self, home: &Home) -> Result<(), ConfigError> {
        let path = home.config_path();
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        home.ensure()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|source| ConfigError::Io { path, source })
    }

    /// The cluster secret as bytes, if configured.
    pub fn cluster_secret(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        self.network
            .cluster_secret
            .as_deref()
            .map(parse_secret)
            .transpose()
    }

    /// The API address, checked.
    pub fn api_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.api.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "api.listen = {:?} is not an address like 127.0.0.1:4080",
                self.api.listen
            ))
        })
    }

    /// The ingress address, checked; `None` when turned off.
    pub fn ingress_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.ingress.listen.is_empty() {
            return Ok(None);
        }
        self.ingress.listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "ingress.listen = {:?} is not an address like 127.0.0.1:4480 (or \"\" to turn it off)",
                self.ingress.listen
            ))
        })
    }

    /// The data-plane address, checked.
    pub fn data_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.data.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "data.listen = {:?} is not an address like 0.0.0.0:4002",
                self.data.listen
            ))
        })
    }
}

/// Parses a 64-hex-digit cluster secret.
pub fn parse_secret(s: &str) -> Result<[u8; 32], ConfigError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| {
        ConfigError::Invalid(
            "cluster secret must be 64 hex digits (32 bytes); `weft init` makes one".into(),
        )
    })?;
    Ok(out)
}

/// A new random cluster secret, as hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_file() {
        let c = Config::parse("").expect("empty");
        assert!(c.network.mdns);
        assert_eq!(c.api.listen, "127.0.0.1:4080");
        assert_eq!(c.api.path_roots, [PathBuf::from("/")]);
        assert!(c.api.allowed_hosts.is_empty());
        let c = Config::parse(
            r#"
[node]
labels = { zone = "lab-a" }
[network]
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
mdns = false
cluster_secret = "0000000000000000000000000000000000000000000000000000000000000001"
[api]
listen = "0.0.0.0:4080"
token = "t"
allowed_hosts = ["weft.lab", "10.0.0.5:4080"]
path_roots = ["/srv/data"]
[[gpu]]
model = "A100"
memory = "80Gi"
"#,
        )
        .expect("full");
        assert_eq!(c.node.labels["zone"], "lab-a");
        // more labels than peers accept are refused here, not by every peer
        let many: String = (0..=weft_protocol::bounds::MAX_LABELS)
            .map(|i| format!("l{i} = \"x\"\n"))
            .collect();
        let e = Config::parse(&format!("[node.labels]\n{many}")).expect_err("too many");
        assert!(e.contains("peers accept at most 64"), "{e}");
        let long = "v".repeat(weft_protocol::bounds::MAX_LABEL_VALUE_BYTES + 1);
        let e = Config::parse(&format!("[node.labels]\nzone = \"{long}\"\n")).expect_err("long");
        assert!(e.contains("node.labels.zone"), "{e}");
        assert!(!c.network.mdns);
        assert_eq!(c.api.allowed_hosts, ["weft.lab", "10.0.0.5:4080"]);
        assert_eq!(c.api.path_roots, [PathBuf::from("/srv/data")]);
        assert_eq!(c.cluster_secret().expect("secret").map(|s| s[31]), Some(1));
        assert_eq!(
            c.gpus,
            vec![GpuDecl {
                model: "A100".into(),
                memory: "80Gi".into(),
                count: 1
            }]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("[network]\nmdsn = false\n").expect_err("typo");
        assert!(e.contains("mdsn"), "{e}");
        let c = Config::parse("[network]\ncluster_secret = \"abc\"\n").expect("parses");
        let e = c.cluster_secret().expect_err("short secret");
        assert!(e.to_string().contains("64 hex digits"));
        let c = Config::parse("[api]\nlisten = \"nowhere\"\n").expect("parses");
        assert!(c.api_addr().is_err());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        let mut c = Config::default();
        c.network.cluster_secret = Some(new_secret());
        c.save(&home).expect("save");
        let back = Config::load(&home).expect("load");
        assert_eq!(back.network.cluster_secret, c.network.cluster_secret);
    }
}
