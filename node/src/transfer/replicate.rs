//! The replication worker: keeps as many copies of each pinned artifact as
//! its pin asks (`replicas`), on distinct live peers.
//!
//! Every node holding a pin with `replicas` > 1 runs this check, on an
//! interval and whenever it is nudged (a pin changed, a peer's advert
//! expired, a copy arrived): it asks the live peers which of them hold each
//! such pin whole (`Request::Has` with `closure`), and when fewer than
//! `replicas` nodes do (itself included), asks the missing number of peers
//! to fetch and pin a copy (`Request::Replicate`). Peers are chosen by
//! rendezvous hashing of (artifact, peer id), so every holder running the
//! check picks the same candidates and copies are not made twice. A peer
//! asked recently counts as a holder-to-be until it holds the copy, its
//! advert expires or [`PENDING_TTL`] passes.
//!
//! Its state is visible in `GET /api/v1/transfers` and in `/metrics`.
//!
//! Answering another node's `Replicate` is bounded by [`ReplicaPolicy`]:
//! `replicas` is at most [`MAX_REPLICAS`] (a request asking more does not
//! decode), a requester may have [`MAX_REPLICATING_PER_PEER`] copies being
//! fetched at once ([`MAX_REPLICATING`] in all), and the copies this node
//! pins for one requester total at most [`MAX_REPLICA_BYTES_PER_PEER`]
//! ([`MAX_REPLICA_BYTES`] for all requesters); a copy that would go over is
//! fetched but not pinned, so GC reclaims it. The byte counts live in memory
//! and start again at zero when the node restarts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_protocol::bounds::MAX_REPLICAS;
use weft_protocol::rpc::MAX_HAS_HASHES;
use weft_protocol::{Hash, Request, Response};

use super::discover::data_addr;
use super::fetch::{Shared, complete_locally};

/// How long a peer asked to hold a copy counts as a holder-to-be.
const PENDING_TTL: Duration = Duration::from_secs(300);

/// How long a peer has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Nudges closer together than this are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Copies one peer may have this node fetch at once for `Replicate`.
pub(super) const MAX_REPLICATING_PER_PEER: usize = 4;

/// Copies this node fetches at once for `Replicate`, all peers together.
pub(super) const MAX_REPLICATING: usize = 16;

/// Bytes of copies this node pins for one requester.
pub(super) const MAX_REPLICA_BYTES_PER_PEER: u64 = 16 << 30;

/// Bytes of copies this node pins for requesters, all together.
pub(super) const MAX_REPLICA_BYTES: u64 = 64 << 30;

/// What this node agrees to hold for other nodes' `Replicate` requests.
#[derive(Debug, Default)]
pub(super) struct ReplicaPolicy {
    fetching: HashMap<PeerId, usize>,
    pinned: HashMap<PeerId, u64>,
    pinned_total: u64,
}

impl ReplicaPolicy {
    /// Whether to start fetching a copy for `peer`; on `Ok` the caller calls
    /// [`ReplicaPolicy::fetched`] when the fetch ends.
    pub(super) fn admit(&mut self, peer: PeerId) -> Result<(), String> {
        let mine = self.fetching.get(&peer).copied().unwrap_or(0);
        let all: usize = self.fetching.values().sum();
        if mine >= MAX_REPLICATING_PER_PEER || all >= MAX_REPLICATING {
            return Err(format!(
                "already fetching {mine} copies for this node and {all} in all; retry later"
            ));
        }
        if self.pinned.get(&peer).copied().unwrap_or(0) >= MAX_REPLICA_BYTES_PER_PEER
            || self.pinned_total >= MAX_REPLICA_BYTES
        {
            return Err("this node holds all the copies it agrees to hold".to_string());
        }
        *self.fetching.entry(peer).or_default() += 1;
        Ok(())
    }

    /// A fetch admitted for `peer` ended; with its size, whether to pin the
    /// copy (and count it against the requester's share).
    pub(super) fn fetched(&mut self, peer: PeerId, bytes: Option<u64>) -> bool {
        if let Some(n) = self.fetching.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.fetching.remove(&peer);
            }
        }
        let Some(bytes) = bytes else {
            return false;
        };
        let mine = self.pinned.get(&peer).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > MAX_REPLICA_BYTES_PER_PEER
            || self.pinned_total.saturating_add(bytes) > MAX_REPLICA_BYTES
        {
            return false;
        }
        self.pinned.insert(peer, mine + bytes);
        self.pinned_total += bytes;
        true
    }
}

/// One pin the worker looks after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinReplication {
    pub id: Hash,
    /// Copies asked for.
    pub wanted: u32,
    /// Live nodes holding it whole, this one included.
    pub holders: Vec<String>,
    /// Peers asked to fetch a copy that do not hold it yet.
    pub pending: Vec<String>,
}

/// The worker's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub pins: Vec<PinReplication>,
    pub passes: u64,
    /// Replicate requests sent.
    pub requests: u64,
    /// Unix milliseconds of the last pass.
    pub last_pass_ms: u64,
    pub last_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Orders candidates for holding `id`; every node computes the same order.
fn rendezvous(id: &Hash, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"weft-replica-v1");
    h.update(id.as_bytes());
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

/// Runs the worker until `shutdown`.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut nudges: mpsc::Receiver<()>,
    status: watch::Sender<ReplicationStatus>,
    shutdown: CancellationToken,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    let mut pending: HashMap<(Hash, PeerId), Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            n = nudges.recv() => {
                if n.is_none() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while nudges.try_recv().is_ok() {}
            }
        }
        let result = pass(&shared, &mut pending, &status).await;
        status.send_modify(|s| {
            s.passes += 1;
            s.last_pass_ms = now_ms();
            s.last_error = result.err();
        });
    }
}

/// One check of every pin.
async fn pass(
    shared: &Shared,
    pending: &mut HashMap<(Hash, PeerId), Instant>,
    status: &watch::Sender<ReplicationStatus>,
) -> Result<(), String> {
    let store = shared.store.clone();
    let pins = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for p in store.list_pins()? {
            if p.replicas > 1 && complete_locally(&store, &p.id)? {
                out.push(p);
            }
        }
        Ok::<_, crate::store::StoreError>(out)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if pins.is_empty() {
        pending.clear();
        status.send_modify(|s| s.pins.clear());
        return Ok(());
    }
    let peers: Vec<PeerId> = shared
        .net
        .peers()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|p| p.peer_id != shared.local && data_addr(p).is_some())
        .map(|p| p.peer_id)
        .collect();
    let live: HashSet<PeerId> = peers.iter().copied().collect();
    // who holds what
    let ids: Vec<Hash> = pins.iter().map(|p| p.id).collect();
    let answers = futures::future::join_all(peers.iter().map(|&peer| {
        let net = shared.net.clone();
        let ids = ids.clone();
        async move {
            let mut held = HashSet::new();
            for chunk in ids.chunks(MAX_HAS_HASHES) {
                let req = Request::Has {
                    hashes: chunk.to_vec(),
                    closure: true,
                };
                match tokio::time::timeout(ASK_TIMEOUT, net.request(peer, req)).await {
                    Ok(Ok(Response::Have { blobs })) => {
                        held.extend(blobs.into_iter().map(|b| b.hash))
                    }
                    Ok(Ok(other)) => debug!(%peer, answer = ?other, "unexpected answer to Has"),
                    Ok(Err(e)) => debug!(%peer, error = %e, "Has failed"),
                    Err(_) => debug!(%peer, "Has timed out"),
                }
            }
            (peer, held)
        }
    }))
    .await;
    let mut holders: HashMap<Hash, Vec<PeerId>> = HashMap::new();
    for (peer, held) in answers {
        for h in held {
            holders.entry(h).or_default().push(peer);
        }
    }
    pending.retain(|(h, peer), at| {
        at.elapsed() < PENDING_TTL
            && live.contains(peer)
            && !holders.get(h).is_some_and(|v| v.contains(peer))
    });
    let mut report = Vec::new();
    let mut sent = 0u64;
    for pin in &pins {
        let held_by = holders.remove(&pin.id).unwrap_or_default();
        let waiting: Vec<PeerId> = pending
            .keys()
            .filter(|(h, _)| *h == pin.id)
            .map(|(_, p)| *p)
            .collect();
        let have = 1 + held_by.len();
        // peers refuse more; a pin asking more keeps this many copies
        let wanted = pin.replicas.min(MAX_REPLICAS);
        let need = (wanted as usize).saturating_sub(have + waiting.len());
        if need > 0 {
            let mut candidates: Vec<PeerId> = peers
                .iter()
                .filter(|p| !held_by.contains(p) && !waiting.contains(p))
                .copied()
                .collect();
            candidates.sort_by_key(|p| std::cmp::Reverse(rendezvous(&pin.id, p)));
            if candidates.len() < need {
                debug!(id = %pin.id, wanted = pin.replicas, live = peers.len() + 1, "not enough peers for the copies asked");
            }
            for peer in candidates.into_iter().take(need) {
                let req = Request::Replicate {
                    hash: pin.id,
                    replicas: wanted,
                };
                sent += 1;
                match tokio::time::timeout(ASK_TIMEOUT, shared.net.request(peer, req)).await {
                    Ok(Ok(Response::Replicating { .. })) => {
                        info!(id = %pin.id, %peer, holders = have, wanted = pin.replicas, "asked a peer to hold a copy");
                        pending.insert((pin.id, peer), Instant::now());
                    }
                    Ok(Ok(other)) => {
                        warn!(id = %pin.id, %peer, answer = ?other, "peer declined to hold a copy")
                    }
                    Ok(Err(e)) => {
                        warn!(id = %pin.id, %peer, error = %e, "cannot ask peer to hold a copy")
                    }
                    Err(_) => warn!(id = %pin.id, %peer, "peer did not answer a replicate request"),
                }
            }
        }
        let mut holder_names = vec![shared.local.to_string()];
        holder_names.extend(held_by.iter().map(|p| p.to_string()));
        report.push(PinReplication {
            id: pin.id,
            wanted: pin.replicas,
            holders: holder_names,
            pending: pending
                .keys()
                .filter(|(h, _)| *h == pin.id)
                .map(|(_, p)| p.to_string())
                .collect(),
        });
    }
    status.send_modify(|s| {
        s.pins = report;
        s.requests += sent;
    });
    Ok(())
}
