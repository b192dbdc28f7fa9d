//! Node adverts: what every node tells the mesh about itself.
//!
//! Goals: one self-describing record per node, gossiped on the
//! `weft/adverts/1` topic on an interval and whenever it changes, that carries
//! what placement needs (CPU, memory, disk, GPUs, executors, labels, load) and
//! where to reach the node (libp2p listen addresses, data-plane address). An
//! advert that is not refreshed within a few intervals expires; that is how
//! the mesh notices a node has gone.
//!
//! Wire form: a CBOR map keyed by the field names below. Decoders ignore keys
//! they do not know and fill missing ones with defaults, so fields can be
//! added without a new topic; removing or retyping one needs
//! `weft/adverts/2`. Newer-than is decided per author by
//! [`NodeAdvert::is_newer_than`]: `(started_ms, seq)`, so a restarted node
//! wins over its previous run and a late, relayed copy of an old advert does
//! not refresh a node that has stopped.
//!
//! Non-goals: trust. The net layer only accepts adverts from peers that
//! proved the cluster secret, signed by their author, and checks that
//! [`NodeAdvert::peer_id`] is that author.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::sched::JobId;

/// Largest encoded advert.
pub const MAX_ADVERT_BYTES: usize = 64 * 1024;

/// Most attempts an advert lists in [`NodeAdvert::running`] (1,024 entries
/// of at most 27 bytes stay well inside [`MAX_ADVERT_BYTES`]); an executor
/// holding more lists none (`None`), so nothing is concluded from it.
pub const MAX_ADVERT_RUNNING: usize = 1024;

/// What a node offers the mesh, as of [`NodeAdvert::timestamp_ms`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAdvert {
    /// The author's libp2p peer id (base58), checked against the gossip
    /// signature by receivers.
    pub peer_id: String,
    /// The author's weft version ([`crate::VERSION`]).
    pub version: String,
    /// Unix milliseconds when the author's net layer started; orders adverts
    /// across restarts.
    pub started_ms: u64,
    /// Publication counter, restarting at 1 with each `started_ms`.
    pub seq: u64,
    /// Unix milliseconds when this advert was published (informational: clocks
    /// differ between nodes).
    pub timestamp_ms: u64,
    /// libp2p listen addresses (multiaddrs without the `/p2p/` suffix).
    pub listen_addrs: Vec<String>,
    /// Where the QUIC data plane listens (`host:port`), once it does.
    pub data_plane_addr: Option<String>,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Logical CPUs available to the node.
    pub cpu_cores: u32,
    pub memory_total_bytes: u64,
    /// Memory available to new work (`MemAvailable`).
    pub memory_free_bytes: u64,
    /// Free space where the store lives.
    pub disk_free_bytes: u64,
    pub gpus: Vec<GpuInfo>,
    pub executors: Executors,
    /// Free-form `key = value` labels for placement constraints.
    pub labels: BTreeMap<String, String>,
    pub running_tasks: u32,
    pub queued_tasks: u32,
    /// The `(job, attempt)` pairs this node holds as an executor: claimed,
    /// running, or finished with a final report its coordinator has not yet
    /// acknowledged; at most [`MAX_ADVERT_RUNNING`]. Coordinators reconcile
    /// their placed attempts against it. `None` from a node that does not
    /// report them (an older version): nothing is concluded from its absence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<Vec<(JobId, u32)>>,
    /// The service replicas this node runs (at most
    /// [`crate::service::MAX_ADVERT_REPLICAS`]); `None` from a node that
    /// runs none or does not report them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<crate::service::ReplicaInfo>>,
}

/// One GPU a node can hand to tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuInfo {
    /// The device index tasks see (`CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    /// `nvidia`, `amd`, ...
    pub vendor: String,
    /// The model name as the driver reports it (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    pub memory_bytes: u64,
    /// Free device memory, when known.
    pub memory_free_bytes: Option<u64>,
    /// The driver's stable id (`GPU-…`), when known.
    pub uuid: Option<String>,
}

/// The task executors a node can run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Executors {
    /// WASM modules and components (wasmtime).
    pub wasm: bool,
    /// The OCI runtime found (`runc`, `crun`), if any.
    pub container_runtime: Option<String>,
}

impl NodeAdvert {
    /// Encodes the advert for gossip, refusing one above [`MAX_ADVERT_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_ADVERT_BYTES)
    }

    /// Decodes an advert received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_ADVERT_BYTES)
    }

    /// Whether `self` supersedes `other`, both from the same author.
    pub fn is_newer_than(&self, other: &NodeAdvert) -> bool {
        (self.started_ms, self.seq) > (other.started_ms, other.seq)
    }

    /// Total GPU memory, summed over devices.
    pub fn gpu_memory_bytes(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeAdvert {
        NodeAdvert {
            peer_id: "12D3KooW".into(),
            version: "0.1.0".into(),
            started_ms: 1_700_000_000_000,
            seq: 3,
            timestamp_ms: 1_700_000_004_000,
            listen_addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
            data_plane_addr: Some("10.0.0.1:4002".into()),
            arch: "x86_64".into(),
            cpu_cores: 16,
            memory_total_bytes: 64 << 30,
            memory_free_bytes: 32 << 30,
            disk_free_bytes: 1 << 40,
            gpus: vec![GpuInfo {
                index: 0,
                vendor: "nvidia".into(),
                model: "H100".into(),
                memory_bytes: 80 << 30,
                memory_free_bytes: Some(79 << 30),
                uuid: Some("GPU-1".into()),
            }],
            executors: Executors {
                wasm: true,
                container_runtime: Some("runc".into()),
            },
            labels: [("zone".to_string(), "lab-a".to_string())].into(),
            running_tasks: 1,
            queued_tasks: 2,
            running: Some(vec![(JobId::new(1, 2), 3)]),
            replicas: None,
        }
    }

    #[test]
    fn golden_bytes() {
        let bytes = sample().encode().expect("encode");
        let golden = concat!(
            "b2", // map(18)
            "67706565725f6964",
            "68313244334b6f6f57", // peer_id: "12D3KooW"
            "6776657273696f6e",
            "65302e312e30", // version: "0.1.0"
            "6a737461727465645f6d73",
            "1b0000018bcfe56800", // started_ms
            "63736571",
            "03", // seq: 3
            "6c74696d657374616d705f6d73",
            "1b0000018bcfe577a0", // timestamp_ms
            "6c6c697374656e5f6164647273",
            "81",
            "762f6970342f31302e302e302e312f7463702f34303031",
            "6f646174615f706c616e655f61646472",
            "6d31302e302e302e313a34303032",
            "6461726368",
            "667838365f3634",
            "696370755f636f726573",
            "10",
            "726d656d6f72795f746f74616c5f6279746573",
            "1b0000001000000000",
            "716d656d6f72795f667265655f6279746573",
            "1b0000000800000000",
            "6f6469736b5f667265655f6279746573",
            "1b0000010000000000",
            "6467707573",
            "81",
            "a6", // map(6): one GPU
            "65696e646578",
            "00",
            "6676656e646f72",
            "666e7669646961",
            "656d6f64656c",
            "6448313030",
            "6c6d656d6f72795f6279746573",
            "1b0000001400000000",
            "716d656d6f72795f667265655f6279746573",
            "1b00000013c0000000",
            "6475756964",
            "654750552d31",
            "696578656375746f7273",
            "a2", // map(2)
            "647761736d",
            "f5",
            "71636f6e7461696e65725f72756e74696d65",
            "6472756e63",
            "666c6162656c73",
            "a1",
            "647a6f6e65",
            "656c61622d61",
            "6d72756e6e696e675f7461736b73",
            "01",
            "6c7175657565645f7461736b73",
            "02",
            "6772756e6e696e67", // running
            "81",
            "82",
            "74",
            "3030303030303030303030313030303030303032", // job id
            "03",                                       // attempt
        );
        assert_eq!(hex::encode(&bytes), golden);
        assert_eq!(NodeAdvert::decode(&bytes).expect("decode"), sample());
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_default() {
        // {"peer_id": "x", "future_field": 1}
        let bytes = hex::decode("a267706565725f696461786c6675747572655f6669656c6401").expect("hex");
        let advert = NodeAdvert::decode(&bytes).expect("decode");
        assert_eq!(advert.peer_id, "x");
        assert_eq!(advert.cpu_cores, 0);
        assert!(advert.gpus.is_empty());
        assert_eq!(advert.running, None, "an older node lists no attempts");
    }

    #[test]
    fn a_full_running_list_fits_an_advert() {
        let mut a = sample();
        a.running = Some(
            (0..MAX_ADVERT_RUNNING as u32)
                .map(|n| (JobId::new(u64::MAX, u32::MAX - n), u32::MAX))
                .collect(),
        );
        let bytes = a.encode().expect("fits");
        assert!(bytes.len() < MAX_ADVERT_BYTES / 2, "{} bytes", bytes.len());
        assert_eq!(NodeAdvert::decode(&bytes).expect("decode"), a);
    }

    #[test]
    fn an_advert_without_running_attempts_encodes_as_before() {
        let mut a = sample();
        a.running = None;
        let bytes = hex::encode(a.encode().expect("encode"));
        assert!(bytes.starts_with("b1"), "17 fields, as older nodes send");
        assert!(!bytes.contains("6772756e6e696e67"));
    }

    #[test]
    fn garbage_and_oversized_input_is_refused() {
        assert!(NodeAdvert::decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(NodeAdvert::decode(b"").is_err());
        assert!(matches!(
            NodeAdvert::decode(&vec![0u8; MAX_ADVERT_BYTES + 1]),
            Err(CodecError::TooLarge { .. })
        ));
        let mut big = sample();
        big.labels.insert("k".into(), "v".repeat(MAX_ADVERT_BYTES));
        assert!(matches!(big.encode(), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn newer_is_ordered_by_start_then_seq() {
        let a = sample();
        let mut b = sample();
        assert!(!b.is_newer_than(&a));
        b.seq += 1;
        assert!(b.is_newer_than(&a));
        // a restart wins even with a lower counter and an older clock reading
        let mut c = sample();
        c.started_ms += 1;
        c.seq = 1;
        c.timestamp_ms = 0;
        assert!(c.is_newer_than(&b));
        assert!(!b.is_newer_than(&c));
    }
}
