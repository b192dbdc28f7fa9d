//! The transfer actor: owns the endpoint, the pool of outgoing connections,
//! the fetches in flight and every task the data plane spawns, from one
//! `tokio::select!` loop over handle commands, incoming connections and the
//! tasks ending.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use quinn::{Connection, VarInt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use weft_protocol::auth::SECRET_LEN;
use weft_protocol::bounds::MAX_REPLICAS;
use weft_protocol::rpc::MAX_HAS_HASHES;
use weft_protocol::transfer::CLOSE_SHUTDOWN;
use weft_protocol::{ErrorCode, Hash, HaveBlob, Request, Response};

use super::fetch::{Fetch, Shared, complete_locally};
use super::replicate::{self, ReplicaPolicy, ReplicationStatus};
use super::serve::{self, ServeCtx};
use super::{
    Command, ConnectionInfo, FetchProgress, FetchReport, FetchTicket, TransferConfig,
    TransferError, TransferHandle, TransferStatus, endpoint,
};
use crate::api::Metrics;
use crate::net::NetHandle;
use crate::store::Store;

/// How long shutdown waits for fetches to record their progress.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Roots re-announced in Kademlia this often (and once shortly after start).
const REANNOUNCE_EVERY: Duration = Duration::from_secs(300);
const FIRST_ANNOUNCE: Duration = Duration::from_secs(3);

type FetchResult = Result<FetchReport, TransferError>;

/// A fetch in flight and who waits for it.
struct Active {
    progress: watch::Receiver<FetchProgress>,
    waiters: Vec<oneshot::Sender<FetchResult>>,
}

pub(super) struct Actor {
    endpoint: quinn::Endpoint,
    keypair: Keypair,
    secret: [u8; SECRET_LEN],
    shared: Arc<Shared>,
    serve_ctx: Arc<ServeCtx>,
    handle: TransferHandle,
    commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    replication_interval: Duration,
    connections: HashMap<PeerId, Connection>,
    pending_connects: HashMap<PeerId, Vec<oneshot::Sender<Result<Connection, TransferError>>>>,
    connecting: JoinSet<(PeerId, Result<Connection, TransferError>)>,
    fetches: HashMap<Hash, Active>,
    fetching: JoinSet<(Hash, FetchResult)>,
    serving: JoinSet<()>,
    background: JoinSet<()>,
    nudges: Option<mpsc::Sender<()>>,
    replication: watch::Receiver<ReplicationStatus>,
    replication_tx: Option<watch::Sender<ReplicationStatus>>,
    fetches_ok: u64,
    fetches_failed: u64,
    bytes_fetched: u64,
    providers_banned: u64,
    /// What this node agrees to hold for others' `Replicate`.
    replica_policy: Arc<std::sync::Mutex<ReplicaPolicy>>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: TransferConfig,
        endpoint: quinn::Endpoint,
        loopback_server: Arc<quinn::ServerConfig>,
        store: Store,
        net: NetHandle,
        metrics: Arc<Metrics>,
        handle: TransferHandle,
        commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Actor {
        let local = config.keypair.public().to_peer_id();
        let shared = Arc::new(Shared {
            store: store.clone(),
            net,
            metrics: metrics.clone(),
            local,
            streams_per_peer: config.streams_per_peer,
            blob_concurrency: config.blob_concurrency,
            stall_timeout: config.stall_timeout,
        });
        let serve_ctx = Arc::new(ServeCtx::new(
            store,
            metrics,
            local,
            config.cluster_secret,
            config.faults,
            loopback_server,
            handle.streams.clone(),
        ));
        let (replication_tx, replication) = watch::channel(ReplicationStatus::default());
        Actor {
            endpoint,
            keypair: config.keypair,
            secret: config.cluster_secret,
            shared,
            serve_ctx,
            handle,
            commands,
            shutdown,
            replication_interval: config.replication_interval,
            connections: HashMap::new(),
            pending_connects: HashMap::new(),
            connecting: JoinSet::new(),
            fetches: HashMap::new(),
            fetching: JoinSet::new(),
            serving: JoinSet::new(),
            background: JoinSet::new(),
            nudges: None,
            replication,
            replication_tx: Some(replication_tx),
            fetches_ok: 0,
            fetches_failed: 0,
            bytes_fetched: 0,
            providers_banned: 0,
            replica_policy: Arc::default(),
        }
    }

    pub(super) async fn run(mut self) {
        // the replication worker, and the first announcement of what is here
        let (nudge_tx, nudge_rx) = mpsc::channel(16);
        self.nudges = Some(nudge_tx);
        if let Some(status) = self.replication_tx.take() {
            self.background.spawn(
                replicate::run(
                    self.shared.clone(),
                    nudge_rx,
                    status,
                    self.shutdown.clone(),
                    self.replication_interval,
                )
                .in_current_span(),
            );
        }
        let mut reannounce = tokio::time::interval_at(
            tokio::time::Instant::now() + FIRST_ANNOUNCE,
            REANNOUNCE_EVERY,
        );
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        self.serving.spawn(serve::connection(incoming, self.serve_ctx.clone()).in_current_span());
                    }
                    None => break,
                },
                Some(done) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    if let Ok((peer, result)) = done {
                        self.connected(peer, result);
                    }
                }
                Some(done) = self.fetching.join_next(), if !self.fetching.is_empty() => {
                    match done {
                        Ok((hash, result)) => self.fetched(hash, result),
                        Err(e) => warn!(error = %e, "fetch task failed"),
                    }
                }
                Some(_) = self.serving.join_next(), if !self.serving.is_empty() => {}
                Some(_) = self.background.join_next(), if !self.background.is_empty() => {}
                _ = reannounce.tick() => self.reannounce(),
            }
        }
        self.stop().await;
    }

    async fn stop(mut self) {
        // no more commands: whoever waits on one hears that the plane stopped
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        // fetches see the same token: they record their progress and end
        let waited = tokio::time::timeout(STOP_GRACE, async {
            while let Some(done) = self.fetching.join_next().await {
                if let Ok((hash, result)) = done {
                    self.fetched(hash, result);
                }
            }
        })
        .await;
        if waited.is_err() {
            warn!("fetches did not stop in time");
            self.fetching.abort_all();
        }
        for (_, active) in self.fetches.drain() {
            for w in active.waiters {
                let _ = w.send(Err(TransferError::Stopped));
            }
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"node stopping");
        self.serving.abort_all();
        self.background.abort_all();
        self.connecting.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        info!("data plane stopped");
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Connect { peer, addr, reply } => self.connect(peer, addr, reply),
            Command::Fetch { hash, reply } => {
                let _ = reply.send(self.start_fetch(hash));
            }
            Command::Answer {
                peer,
                request,
                reply,
            } => self.answer(peer, request, reply),
            Command::Announce(hash) => self.announce(vec![hash]),
            Command::Nudge => {
                if let Some(n) = &self.nudges {
                    let _ = n.try_send(());
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn status(&self) -> TransferStatus {
        TransferStatus {
            listen: self
                .endpoint
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            fetches: self
                .fetches
                .values()
                .map(|a| a.progress.borrow().clone())
                .collect(),
            fetches_ok: self.fetches_ok,
            fetches_failed: self.fetches_failed,
            bytes_fetched: self.bytes_fetched,
            providers_banned: self.providers_banned,
            connections: self
                .connections
                .iter()
                .filter(|(_, c)| c.close_reason().is_none())
                .map(|(peer, c)| {
                    let st = c.stats();
                    ConnectionInfo {
                        peer: peer.to_string(),
                        addr: c.remote_address().to_string(),
                        rtt_us: st.path.rtt.as_micros() as u64,
                        mtu: st.path.current_mtu,
                        congestion_window: st.path.cwnd,
                        sent_packets: st.path.sent_packets,
                        lost_packets: st.path.lost_packets,
                        received_datagrams: st.udp_rx.datagrams,
                        receive_ios: st.udp_rx.ios,
                    }
                })
                .collect(),
            replication: self.replication.borrow().clone(),
        }
    }

    fn connect(
        &mut self,
        peer: PeerId,
        addr: SocketAddr,
        reply: oneshot::Sender<Result<Connection, TransferError>>,
    ) {
        if let Some(c) = self.connections.get(&peer) {
            if c.close_reason().is_none() && c.remote_address() == addr {
                let _ = reply.send(Ok(c.clone()));
                return;
            }
            self.connections.remove(&peer);
        }
        let waiting = self.pending_connects.entry(peer).or_default();
        waiting.push(reply);
        if waiting.len() > 1 {
            return;
        }
        let endpoint = self.endpoint.clone();
        let keypair = self.keypair.clone();
        let secret = self.secret;
        self.connecting.spawn(
            async move {
                let r = endpoint::connect(&endpoint, &keypair, &secret, peer, addr).await;
                (peer, r)
            }
            .in_current_span(),
        );
    }

    fn connected(&mut self, peer: PeerId, result: Result<Connection, TransferError>) {
        match &result {
            Ok(c) => {
                debug!(%peer, addr = %c.remote_address(), "data-plane connection up");
                self.connections.insert(peer, c.clone());
            }
            Err(e) => debug!(%peer, error = %e, "data-plane connection failed"),
        }
        for w in self.pending_connects.remove(&peer).unwrap_or_default() {
            let _ = w.send(result.clone());
        }
    }

    fn start_fetch(&mut self, hash: Hash) -> FetchTicket {
        let (tx, rx) = oneshot::channel();
        if let Some(active) = self.fetches.get_mut(&hash) {
            active.waiters.push(tx);
            return FetchTicket {
                progress: active.progress.clone(),
                result: rx,
                done: false,
            };
        }
        let (progress_tx, progress) = watch::channel(FetchProgress::new(hash));
        let fetch = Fetch::new(
            self.shared.clone(),
            self.handle.clone(),
            hash,
            &self.shutdown,
        );
        self.fetching
            .spawn(async move { (hash, fetch.run(progress_tx).await) }.in_current_span());
        self.fetches.insert(
            hash,
            Active {
                progress: progress.clone(),
                waiters: vec![tx],
            },
        );
        FetchTicket {
            progress,
            result: rx,
            done: false,
        }
    }

    fn fetched(&mut self, hash: Hash, result: FetchResult) {
        match &result {
            Ok(report) => {
                self.fetches_ok += 1;
                self.bytes_fetched += report.bytes_fetched;
                self.providers_banned += report.banned.len() as u64;
            }
            Err(e) => {
                self.fetches_failed += 1;
                if !matches!(e, TransferError::Stopped) {
                    warn!(id = %hash, error = %e, "fetch failed");
                }
            }
        }
        if let Some(active) = self.fetches.remove(&hash) {
            for w in active.waiters {
                let _ = w.send(result.clone());
            }
        }
    }

    fn answer(&mut self, peer: PeerId, request: Request, reply: oneshot::Sender<Response>) {
        match request {
            Request::Has { hashes, closure } => {
                let store = self.shared.store.clone();
                self.background.spawn(async move {
                    let answer =
                        tokio::task::spawn_blocking(move || have(&store, &hashes, closure))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                    let _ = reply.send(match answer {
                        Ok(blobs) => Response::Have { blobs },
                        Err(e) => Response::error(ErrorCode::Internal, e),
                    });
                });
            }
            Request::Replicate { hash, replicas } => {
                let replicas = replicas.clamp(1, MAX_REPLICAS);
                if let Err(why) = self
                    .replica_policy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .admit(peer)
                {
                    info!(%peer, id = %hash, %why, "declined to hold a copy");
                    let _ = reply.send(Response::error(ErrorCode::Busy, why));
                    return;
                }
                info!(%peer, id = %hash, replicas, "asked to hold a copy");
                let _ = reply.send(Response::Replicating { hash });
                let handle = self.handle.clone();
                let store = self.shared.store.clone();
                let policy = self.replica_policy.clone();
                self.background.spawn(
                    async move {
                        let fetched = handle.fetch(hash).await;
                        let keep = policy
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .fetched(peer, fetched.as_ref().ok().map(|r| r.bytes_total));
                        match fetched {
                            Ok(report) if !keep => {
                                warn!(%peer, id = %hash, bytes = report.bytes_total, "not pinning a copy over what this node holds for that peer");
                            }
                            Ok(report) => {
                                let pinned = tokio::task::spawn_blocking(move || {
                                    store.pin(&hash, replicas)?;
                                    store.mark_root(&hash)?;
                                    store.flush()
                                })
                                .await;
                                match pinned {
                                    Ok(Ok(())) => {
                                        info!(id = %hash, fetched = report.bytes_fetched, "holding a copy");
                                        handle.announce(hash).await;
                                        handle.nudge_replication().await;
                                    }
                                    Ok(Err(e)) => warn!(id = %hash, error = %e, "cannot pin the copy"),
                                    Err(e) => warn!(id = %hash, error = %e, "cannot pin the copy"),
                                }
                            }
                            Err(e) => warn!(id = %hash, error = %e, "cannot fetch the copy asked for"),
                        }
                    }
                    .in_current_span(),
                );
            }
            other => {
                debug!(%peer, request = ?other, "not a data-plane request");
                let _ = reply.send(Response::error(
                    ErrorCode::Unsupported,
                    "the data plane does not serve that request",
                ));
            }
        }
    }

    fn announce(&mut self, hashes: Vec<Hash>) {
        let net = self.shared.net.clone();
        self.background.spawn(
            async move {
                for h in hashes {
                    match tokio::time::timeout(Duration::from_secs(10), net.start_providing(h))
                        .await
                    {
                        Ok(Ok(())) => debug!(id = %h, "announced"),
                        Ok(Err(e)) => debug!(id = %h, error = %e, "announcement not stored"),
                        Err(_) => debug!(id = %h, "announcement timed out"),
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// Announces every root here: artifacts added by name, pinned or tagged.
    fn reannounce(&mut self) {
        let store = self.shared.store.clone();
        let net = self.shared.net.clone();
        self.background.spawn(
            async move {
                let roots = tokio::task::spawn_blocking(move || {
                    store.list(false).map(|l| {
                        l.into_iter()
                            .filter(|a| a.complete)
                            .map(|a| a.id)
                            .collect::<Vec<_>>()
                    })
                })
                .await;
                let roots = match roots {
                    Ok(Ok(r)) => r,
                    _ => return,
                };
                for h in roots.into_iter().take(10_000) {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), net.start_providing(h)).await;
                }
            }
            .in_current_span(),
        );
    }
}

/// The blobs of `hashes` held whole here (with `closure`, trees only when
/// everything below them is held too).
fn have(
    store: &Store,
    hashes: &[Hash],
    closure: bool,
) -> Result<Vec<HaveBlob>, crate::store::StoreError> {
    let mut out = Vec::new();
    for h in hashes.iter().take(MAX_HAS_HASHES) {
        if !store.has(h)? {
            continue;
        }
        let tree = store.is_tree(h)?;
        if closure && tree && !complete_locally(store, h)? {
            continue;
        }
        out.push(HaveBlob {
            hash: *h,
            size: store.blob_size(h)?,
            tree,
        });
    }
    Ok(out)
}
