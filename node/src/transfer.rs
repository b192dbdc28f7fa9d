//! The data plane: one quinn endpoint per node that serves verified blob
//! ranges to other nodes, and the fetch engine that pulls whatever this node
//! lacks from the mesh.
//!
//! What it does:
//! - listens on `data.listen` (UDP) with TLS bound to the node key and ALPN
//!   `weft/blobs/1`; every connection proves the cluster secret on its first
//!   stream, both ways, before anything is served (see
//!   `weft_protocol::transfer` for the wire format);
//! - serves ranges of the blobs the store holds whole, bao-encoded from the
//!   blob and its outboard and checked against the id as they are read;
//! - fetches a blob or a whole tree: providers are found by asking peers
//!   (`Request::Has`) and Kademlia; a blob's missing chunk groups are split in
//!   batches across every provider at once, faster providers taking more; each
//!   group is verified before it is written; a provider sending bad bytes is
//!   banned for the rest of the fetch; a provider that stalls or goes away is
//!   replaced; progress survives restarts (the store's partial blobs);
//! - keeps the copies pins ask for (`replicas`), asking peers to fetch
//!   (`Request::Replicate`) until enough distinct peers hold each pin, and
//!   again when a holder's advert expires;
//! - announces the roots this node holds in Kademlia.
//!
//! The rest of the node talks to it through [`TransferHandle`]:
//! [`TransferHandle::fetch`] is what the scheduler uses to bring job inputs
//! here.
//!
//! **Architecture Invariant:** only this module touches the quinn endpoint;
//! nothing is written into the store that was not verified against its id.

mod actor;
mod discover;
mod endpoint;
mod fetch;
mod pull;
mod replicate;
mod serve;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_protocol::auth::SECRET_LEN;
use weft_protocol::{Hash, Request, Response};

use crate::api::Metrics;
use crate::net::NetHandle;
use crate::store::{Store, StoreError};

pub use replicate::{PinReplication, ReplicationStatus};

/// Commands queued to the actor before senders wait.
const COMMAND_QUEUE: usize = 256;

/// How the data plane runs.
#[derive(Clone)]
pub struct TransferConfig {
    /// The node's identity: its certificate, and the peer id others check.
    pub keypair: Keypair,
    /// The cluster secret, proven on every connection.
    pub cluster_secret: [u8; SECRET_LEN],
    /// UDP address of the endpoint.
    pub listen: SocketAddr,
    /// Request streams open at once to each provider of a blob.
    pub streams_per_peer: usize,
    /// Blobs of a tree fetched at once.
    pub blob_concurrency: usize,
    /// A stream that delivers nothing for this long is given up and its
    /// groups asked of another provider.
    pub stall_timeout: Duration,
    /// How often the replication worker checks pins without being nudged.
    pub replication_interval: Duration,
    /// Faults to inject, for tests only.
    pub faults: Faults,
}

impl TransferConfig {
    /// Defaults: 4 streams per provider, 32 blobs at once, 5 s stall
    /// timeout, replication checked every 10 s, no faults.
    pub fn new(keypair: Keypair, cluster_secret: [u8; SECRET_LEN], listen: SocketAddr) -> Self {
        TransferConfig {
            keypair,
            cluster_secret,
            listen,
            streams_per_peer: 4,
            blob_concurrency: 256,
            stall_timeout: Duration::from_secs(5),
            replication_interval: Duration::from_secs(10),
            faults: Faults::default(),
        }
    }
}

impl fmt::Debug for TransferConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("streams_per_peer", &self.streams_per_peer)
            .field("blob_concurrency", &self.blob_concurrency)
            .field("stall_timeout", &self.stall_timeout)
            .field("replication_interval", &self.replication_interval)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Misbehaviour a serving node can be told to show, so tests can check
/// that fetchers cope. Never set outside tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Flip one byte in every chunk of encoded data sent.
    pub flip_bytes: bool,
    /// Send at most this many bytes per second, all streams together.
    pub max_send_rate: Option<u64>,
}

/// What went wrong on the data plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error("invalid data-plane config: {0}")]
    Config(String),
    #[error("cannot listen on {addr} (data.listen): {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(
        "no peer holds {hash} ({asked} peers asked); add it on some node first, or check `weft peers`"
    )]
    NoProvider { hash: Hash, asked: usize },
    #[error("cannot reach {peer} at {addr}: {reason}")]
    Connect {
        peer: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("peer {peer} failed the cluster-secret check: {reason}")]
    Auth { peer: String, reason: String },
    #[error("fetching {hash} failed: {reason}")]
    Fetch { hash: Hash, reason: String },
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("mesh: {0}")]
    Net(String),
    #[error("the data plane has stopped")]
    Stopped,
}

impl From<StoreError> for TransferError {
    fn from(e: StoreError) -> Self {
        TransferError::Store(Arc::new(e))
    }
}

impl From<crate::net::NetError> for TransferError {
    fn from(e: crate::net::NetError) -> Self {
        match e {
            crate::net::NetError::Stopped => TransferError::Stopped,
            e => TransferError::Net(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for TransferError {
    fn from(e: tokio::task::JoinError) -> Self {
        TransferError::Config(format!("worker task failed: {e}"))
    }
}

/// What one fetch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReport {
    /// The artifact fetched.
    pub root: Hash,
    /// Bytes of content below the root (a file's size, a tree's files).
    pub bytes_total: u64,
    /// Verified bytes received by this fetch.
    pub bytes_fetched: u64,
    /// Bytes of partial blobs verified by an earlier, interrupted fetch and
    /// not asked for again.
    pub bytes_resumed: u64,
    /// Blobs already whole here before the fetch.
    pub blobs_present: u64,
    /// Blobs this fetch completed.
    pub blobs_fetched: u64,
    /// Bytes read off the wire (encoding overhead and discarded bytes included).
    pub wire_bytes: u64,
    /// Verified bytes received from each provider (peer id → bytes).
    pub by_peer: BTreeMap<String, u64>,
    /// Providers banned for sending bytes that failed verification.
    pub banned: Vec<String>,
    pub elapsed_ms: u64,
}

/// A fetch in progress, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchProgress {
    pub root: Hash,
    /// Bytes of content below the root, once known (0 before).
    pub bytes_total: u64,
    /// Bytes verified here so far: fetched, resumed or already present.
    pub bytes_done: u64,
    /// Of those, received by this fetch.
    pub bytes_fetched: u64,
    /// Providers that have sent verified bytes.
    pub peers: usize,
    /// Receive rate over the last second or so.
    pub rate_bps: u64,
    pub elapsed_ms: u64,
}

impl FetchProgress {
    /// Nothing done yet.
    pub fn new(root: Hash) -> Self {
        FetchProgress {
            root,
            bytes_total: 0,
            bytes_done: 0,
            bytes_fetched: 0,
            peers: 0,
            rate_bps: 0,
            elapsed_ms: 0,
        }
    }
}

/// A started fetch: its progress, and its result once done.
#[derive(Debug)]
pub struct FetchTicket {
    pub progress: watch::Receiver<FetchProgress>,
    result: oneshot::Receiver<Result<FetchReport, TransferError>>,
    done: bool,
}

/// What [`FetchTicket::next`] yields.
#[derive(Debug)]
pub enum FetchEvent {
    Progress(FetchProgress),
    Finished(Result<FetchReport, TransferError>),
}

impl FetchTicket {
    /// Waits for the fetch to end.
    pub async fn finished(self) -> Result<FetchReport, TransferError> {
        self.result.await.unwrap_or(Err(TransferError::Stopped))
    }

    /// The next progress update, or the result; `None` after the result.
    pub async fn next(&mut self) -> Option<FetchEvent> {
        if self.done {
            return None;
        }
        tokio::select! {
            biased;
            r = &mut self.result => {
                self.done = true;
                Some(FetchEvent::Finished(r.unwrap_or(Err(TransferError::Stopped))))
            }
            changed = self.progress.changed() => match changed {
                Ok(()) => Some(FetchEvent::Progress(self.progress.borrow_and_update().clone())),
                Err(_) => {
                    // the fetch ended; its result is on its way
                    self.done = true;
                    let r = (&mut self.result).await;
                    Some(FetchEvent::Finished(r.unwrap_or(Err(TransferError::Stopped))))
                }
            },
        }
    }
}

/// Whether `root` and, for a tree, every blob below it is whole in `store`.
pub fn complete_locally(store: &Store, root: &Hash) -> Result<bool, StoreError> {
    fetch::complete_locally(store, root)
}

/// What the data plane is doing, for the API and metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferStatus {
    /// The endpoint's address.
    pub listen: String,
    pub fetches: Vec<FetchProgress>,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
    pub bytes_fetched: u64,
    pub providers_banned: u64,
    /// Data-plane connections this node opened and keeps.
    pub connections: Vec<ConnectionInfo>,
    pub replication: ReplicationStatus,
}

/// One data-plane connection this node opened, as quinn sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub peer: String,
    pub addr: String,
    pub rtt_us: u64,
    /// Largest UDP payload path MTU discovery has found.
    pub mtu: u16,
    pub congestion_window: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub received_datagrams: u64,
    /// Receive system calls (fewer than datagrams when the kernel batches).
    pub receive_ios: u64,
}

/// Requests to the actor, each with its reply.
enum Command {
    Connect {
        peer: PeerId,
        addr: SocketAddr,
        reply: oneshot::Sender<Result<quinn::Connection, TransferError>>,
    },
    Fetch {
        hash: Hash,
        reply: oneshot::Sender<FetchTicket>,
    },
    Answer {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    Announce(Hash),
    Nudge,
    Status(oneshot::Sender<TransferStatus>),
}

/// A cloneable handle on the data plane.
#[derive(Clone)]
pub struct TransferHandle {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    /// Who answers data-plane streams that carry service requests.
    streams: Arc<std::sync::OnceLock<Arc<dyn ServiceStreams>>>,
}

/// Answers a data-plane stream that began with
/// [`weft_protocol::service::SERVICE_STREAM_MAGIC`] (the magic already
/// read), from an authenticated peer.
pub trait ServiceStreams: Send + Sync {
    fn serve(
        &self,
        peer: PeerId,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> futures::future::BoxFuture<'static, ()>;
}

impl fmt::Debug for TransferHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferHandle")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl TransferHandle {
    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn send(&self, c: Command) -> Result<(), TransferError> {
        self.commands
            .send(c)
            .await
            .map_err(|_| TransferError::Stopped)
    }

    /// Starts fetching `hash` (a blob or a tree with everything below it),
    /// or joins the fetch of it already running.
    pub async fn start_fetch(&self, hash: Hash) -> Result<FetchTicket, TransferError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Fetch { hash, reply }).await?;
        rx.await.map_err(|_| TransferError::Stopped)
    }

    /// Makes `hash` (and, for a tree, everything below it) whole in the local
    /// store, fetching what is missing from the mesh.
    pub async fn fetch(&self, hash: Hash) -> Result<FetchReport, TransferError> {
        self.start_fetch(hash).await?.finished().await
    }

    /// Answers a data-plane request another node sent on `/weft/rpc/1`
    /// (`Has`, `Replicate`).
    pub async fn answer(&self, peer: PeerId, request: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        if self
            .send(Command::Answer {
                peer,
                request,
                reply,
            })
            .await
            .is_err()
        {
            return Response::error(weft_protocol::ErrorCode::Busy, "the data plane is stopping");
        }
        rx.await.unwrap_or_else(|_| {
            Response::error(
                weft_protocol::ErrorCode::Internal,
                "no answer from the data plane",
            )
        })
    }

    /// Tells the mesh (Kademlia) that this node holds `hash`.
    pub async fn announce(&self, hash: Hash) {
        let _ = self.send(Command::Announce(hash)).await;
    }

    /// Asks the replication worker to check the pins now (a pin changed, a
    /// peer left).
    pub async fn nudge_replication(&self) {
        let _ = self.send(Command::Nudge).await;
    }

    /// Fetches in progress, counters and the replication worker's state.
    pub async fn status(&self) -> Result<TransferStatus, TransferError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status(reply)).await?;
        rx.await.map_err(|_| TransferError::Stopped)
    }

    /// Roots of the fetches in progress, for GC to keep.
    pub async fn active_roots(&self) -> Vec<Hash> {
        self.status()
            .await
            .map(|s| s.fetches.into_iter().map(|f| f.root).collect())
            .unwrap_or_default()
    }

    /// Prometheus lines about transfers and replication.
    pub async fn render_metrics(&self) -> String {
        match self.status().await {
            Ok(s) => render_metrics(&s),
            Err(_) => String::new(),
        }
    }

    /// Sets who answers service streams (once; later calls change nothing).
    pub fn set_service_streams(&self, streams: Arc<dyn ServiceStreams>) {
        let _ = self.streams.set(streams);
    }

    /// A connection to `peer`'s endpoint at `addr` that has passed the
    /// cluster-secret exchange, from the pool or new.
    pub(crate) async fn connect(
        &self,
        peer: PeerId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TransferError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connect { peer, addr, reply }).await?;
        rx.await.map_err(|_| TransferError::Stopped)?
    }
}

fn render_metrics(s: &TransferStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "weft_transfer_fetches_active",
        "gauge",
        "Fetches in progress.",
        s.fetches.len() as u64,
    );
    metric(
        "weft_transfer_fetches_ok_total",
        "counter",
        "Fetches that completed.",
        s.fetches_ok,
    );
    metric(
        "weft_transfer_fetches_failed_total",
        "counter",
        "Fetches that failed.",
        s.fetches_failed,
    );
    metric(
        "weft_transfer_fetched_bytes_total",
        "counter",
        "Verified bytes fetched from peers.",
        s.bytes_fetched,
    );
    metric(
        "weft_transfer_providers_banned_total",
        "counter",
        "Providers banned from a fetch for bytes that failed verification.",
        s.providers_banned,
    );
    metric(
        "weft_transfer_connections",
        "gauge",
        "Data-plane connections this node opened and keeps.",
        s.connections.len() as u64,
    );
    let r = &s.replication;
    metric(
        "weft_replication_pins",
        "gauge",
        "Pins asking for more than one copy.",
        r.pins.len() as u64,
    );
    metric(
        "weft_replication_under_replicated",
        "gauge",
        "Of those, pins with fewer live holders than asked.",
        r.pins
            .iter()
            .filter(|p| p.holders.len() < p.wanted as usize)
            .count() as u64,
    );
    metric(
        "weft_replication_requests_total",
        "counter",
        "Replicate requests sent to peers.",
        r.requests,
    );
    metric(
        "weft_replication_passes_total",
        "counter",
        "Passes of the replication worker.",
        r.passes,
    );
    out
}

/// Starts the data plane: binds the endpoint and returns the handle and the
/// actor's future, which runs until `shutdown` is cancelled (the caller owns
/// the task).
pub async fn spawn(
    config: TransferConfig,
    store: Store,
    net: NetHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(TransferHandle, impl Future<Output = ()> + Send + 'static), TransferError> {
    if config.streams_per_peer == 0 || config.blob_concurrency == 0 {
        return Err(TransferError::Config(
            "streams_per_peer and blob_concurrency must be above zero".into(),
        ));
    }
    // aws-lc seeds its random generator on first use, which takes tens of
    // milliseconds: do it now rather than in the first fetch
    tokio::task::spawn_blocking(|| {
        let mut seed = [0u8; 16];
        let _ = rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut seed);
    })
    .await?;
    let endpoint::Bound {
        endpoint,
        loopback_server,
    } = endpoint::bind(&config.keypair, config.listen)?;
    let local_addr = endpoint.local_addr().map_err(|e| TransferError::Bind {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = TransferHandle {
        commands: tx,
        local_addr,
        streams: Arc::default(),
    };
    let span = tracing::info_span!("transfer", node = %config.keypair.public().to_peer_id());
    let actor = actor::Actor::new(
        config,
        endpoint,
        loopback_server,
        store,
        net,
        metrics,
        handle.clone(),
        rx,
        shutdown,
    );
    tracing::info!(parent: &span, addr = %local_addr, "data plane listening");
    Ok((handle, tracing::Instrument::instrument(actor.run(), span)))
}
