//! The scheduler: jobs from any node, placed on capable peers near their
//! data, retried when an executor is lost, memoized by a cache key.
//!
//! Two actors per node. The **coordinator** owns the jobs submitted to this
//! node: it resolves tags, computes the cache key (the task's program and
//! input ids), answers at once from the cache, and otherwise places the job:
//! it filters and ranks the live adverts (see [`placement`]) and sends
//! reservations to the best one or two nodes (Sparrow-style); the first
//! executor to claim the task gets it and the others are released. It
//! persists every change in sled, follows the executor's updates, re-places
//! the job when the executor's advert expires (with backoff, within the
//! spec's retries), enforces the deadline, and gossips each change on
//! `weft/jobs/1` in batches; every node keeps a bounded table of what it
//! hears, so any node can answer for any job.
//!
//! The **executor** runs tasks for any coordinator: reservations wait in a
//! queue until the node's CPU, memory and GPUs allow (GPUs are assigned
//! whole and exclusively), then it claims the task, fetches the inputs,
//! runs the sandbox, stores outputs (tagged as the spec asks) and logs, and
//! reports the result.
//!
//! Trust and faults:
//! - A coordinator grants a claim only to a node it asked to reserve that
//!   attempt, and takes a report (any state) only from the node that
//!   claimed the attempt; anything else is refused and logged.
//! - An executor signs each success with its node key over
//!   [`weft_protocol::sched::signed_result`] (cache key, job, attempt,
//!   coordinator, executor, outputs, logs). A cache record is kept from
//!   gossip only when the gossip's signed author is the job's coordinator
//!   and the signature verifies against the executor it names. Only the
//!   coordinator of a job moves tags for it (a cache hit tags its outputs
//!   there, and that tag change is gossiped signed by it); heard statuses
//!   move nothing.
//! - A cache hit with outputs is used only once each output is found
//!   complete here or at a live peer (`Has`, within 4 s); otherwise the
//!   record is dropped and the job runs.
//! - Executors list the attempts they hold in their advert; a placed
//!   attempt that its executor's adverts stop listing (two in a row, after
//!   a grace of one advert TTL from the claim) is lost and placed again,
//!   so a lost claim reply or a restarted executor costs seconds.
//! - A final report is kept on disk by its executor until acknowledged
//!   (retried with backoff, sent again after a restart); the coordinator
//!   acknowledges it only once the job record is flushed, and persists
//!   each attempt's deadline so it holds across a restart.
//! - The table of other coordinators' jobs is bounded in bytes, overall
//!   and per coordinator, and evicts the oldest received first.

mod coordinator;
mod executor;
pub(crate) mod placement;
mod records;
pub(crate) mod runs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_protocol::sched::{JobId, JobStatus, Submission};
use weft_protocol::{Hash, NodeAdvert, Request, Response};

use crate::net::NetHandle;
use crate::store::{Store, StoreError};

/// How long a peer has to say which inputs it holds, when a job is placed.
pub(crate) const HELD_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a peer is asked which inputs it holds before it counts as
/// holding none.
const HELD_ATTEMPTS: usize = 3;

pub use coordinator::{
    CoordinatorHandle, Faults, TABLE_BYTES, TABLE_BYTES_PER_COORDINATOR, TABLE_ENTRY_OVERHEAD,
};
pub use executor::ExecutorHandle;

/// Why a scheduler call failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{0}")]
    BadSpec(String),
    #[error("no job {0} is known here; `weft job ls` lists the jobs this node has heard of")]
    NotFound(JobId),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler has stopped")]
    Stopped,
}

/// Brings a job's inputs to this node (the data plane, or nothing when the
/// node runs alone) and tells where inputs already are.
pub trait Fetcher: Send + Sync {
    /// Makes `hash` (and everything in it, for a tree) local.
    fn fetch(&self, hash: Hash) -> BoxFuture<'_, Result<(), String>>;
    /// Bytes of `hashes` each of `peers` holds, as far as can be learned quickly.
    fn held(&self, peers: Vec<String>, hashes: Vec<Hash>) -> BoxFuture<'_, Vec<(String, u64)>>;
}

/// A fetcher for a node without a data plane: inputs must already be local.
pub struct LocalOnly {
    pub store: Store,
    pub me: String,
}

impl Fetcher for LocalOnly {
    fn fetch(&self, hash: Hash) -> BoxFuture<'_, Result<(), String>> {
        let store = self.store.clone();
        Box::pin(async move {
            let ok = tokio::task::spawn_blocking(move || {
                store
                    .closure([hash])
                    .map(|all| all.iter().all(|h| store.has(h).unwrap_or(false)))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{hash} is not in this node's store and no data plane runs here to fetch it"
                ))
            }
        })
    }

    fn held(&self, _peers: Vec<String>, hashes: Vec<Hash>) -> BoxFuture<'_, Vec<(String, u64)>> {
        let store = self.store.clone();
        let me = self.me.clone();
        Box::pin(async move {
            let bytes = tokio::task::spawn_blocking(move || {
                hashes
                    .iter()
                    .filter(|h| store.has(h).unwrap_or(false))
                    // held counts even when empty
                    .map(|h| store.content_size(h).unwrap_or(0).max(1))
                    .sum::<u64>()
            })
            .await
            .unwrap_or(0);
            vec![(me, bytes)]
        })
    }
}

/// The fetcher of a node in a mesh: inputs come over the data plane from
/// whichever peers hold them; where they are is asked with `Has`.
pub struct MeshFetcher {
    transfer: crate::transfer::TransferHandle,
    net: NetHandle,
    store: Store,
}

impl MeshFetcher {
    pub fn new(
        transfer: crate::transfer::TransferHandle,
        net: NetHandle,
        store: Store,
    ) -> MeshFetcher {
        MeshFetcher {
            transfer,
            net,
            store,
        }
    }
}

impl Fetcher for MeshFetcher {
    fn fetch(&self, hash: Hash) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let store = self.store.clone();
            let here = tokio::task::spawn_blocking(move || {
                crate::transfer::complete_locally(&store, &hash)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if !here {
                self.transfer.fetch(hash).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    fn held(&self, peers: Vec<String>, hashes: Vec<Hash>) -> BoxFuture<'_, Vec<(String, u64)>> {
        Box::pin(async move {
            // what each input weighs: its content size when this node knows
            // the manifest, else a token so holding it still counts
            let store = self.store.clone();
            let hs = hashes.clone();
            let weights: Vec<(Hash, u64)> = tokio::task::spawn_blocking(move || {
                hs.iter()
                    .map(|h| (*h, store.content_size(h).unwrap_or(1).max(1)))
                    .collect()
            })
            .await
            .unwrap_or_default();
            let weight = |h: &Hash| weights.iter().find(|(x, _)| x == h).map_or(1, |(_, w)| *w);
            let me = self.net.local_peer_id().to_string();
            let asks = peers.into_iter().map(|peer| {
                let hashes = hashes.clone();
                let store = self.store.clone();
                let net = self.net.clone();
                let me = me.clone();
                async move {
                    let held: Vec<Hash> = if peer == me {
                        tokio::task::spawn_blocking(move || {
                            hashes
                                .into_iter()
                                .filter(|h| {
                                    crate::transfer::complete_locally(&store, h).unwrap_or(false)
                                })
                                .collect()
                        })
                        .await
                        .unwrap_or_default()
                    } else {
                        let Ok(pid) = peer.parse::<PeerId>() else {
                            return (peer, Vec::new());
                        };
                        // each peer answers on its own clock: a slow one
                        // counts as holding nothing, the others still count;
                        // a request lost while a connection is set up is
                        // asked again
                        let ask = async {
                            for attempt in 0..HELD_ATTEMPTS {
                                let req = Request::Has {
                                    hashes: hashes.clone(),
                                    closure: true,
                                };
                                match net.request(pid, req).await {
                                    Ok(Response::Have { blobs }) => {
                                        return blobs.into_iter().map(|b| b.hash).collect();
                                    }
                                    Ok(other) => {
                                        tracing::debug!(%peer, answer = ?other, "unexpected answer to Has");
                                        return Vec::new();
                                    }
                                    Err(e) => {
                                        tracing::debug!(%peer, error = %e, attempt, "Has failed");
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                    }
                                }
                            }
                            Vec::new()
                        };
                        tokio::time::timeout(HELD_TIMEOUT, ask)
                            .await
                            .unwrap_or_else(|_| {
                                tracing::debug!(%peer, "no answer to Has in time");
                                Vec::new()
                            })
                    };
                    (peer, held)
                }
            });
            futures::future::join_all(asks)
                .await
                .into_iter()
                .map(|(peer, held)| (peer, held.iter().map(&weight).sum()))
                .collect()
        })
    }
}

/// What the scheduler needs from the rest of the node.
pub struct SchedConfig {
    pub me: PeerId,
    /// This node's key: an executor signs its successful results with it.
    pub keypair: libp2p::identity::Keypair,
    pub store: Store,
    pub net: NetHandle,
    pub sandbox: weft_sandbox::Sandbox,
    pub fetcher: Arc<dyn Fetcher>,
    /// Where tasks get their working folders.
    pub work_dir: PathBuf,
    /// This node's advert (its capacity); the executor updates task counts.
    pub advert: watch::Sender<NodeAdvert>,
    /// How long a peer's advert lives: an executor unseen this long is lost.
    pub advert_ttl: Duration,
}

/// The scheduler's handle, for the API and the dispatch loop.
#[derive(Clone)]
pub struct SchedHandle {
    pub coordinator: CoordinatorHandle,
    pub executor: ExecutorHandle,
    net: NetHandle,
    fetcher: Arc<dyn Fetcher>,
    faults: Arc<Faults>,
}

/// Starts both actors; returns the handle and the loops to spawn.
pub fn start(
    config: SchedConfig,
    shutdown: CancellationToken,
) -> Result<(SchedHandle, Vec<BoxFuture<'static, ()>>), SchedError> {
    let (coord_tx, coord_rx) = mpsc::channel(4096);
    let (exec_tx, exec_rx) = mpsc::channel(4096);
    let coordinator = CoordinatorHandle { tx: coord_tx };
    let executor = ExecutorHandle { tx: exec_tx };
    let faults = Arc::new(Faults::default());
    let coord_loop = coordinator::Coordinator::new(
        &config,
        executor.clone(),
        coord_rx,
        faults.clone(),
        shutdown.clone(),
    )?;
    let exec_loop = executor::Executor::new(&config, coordinator.clone(), exec_rx, shutdown)?;
    Ok((
        SchedHandle {
            coordinator,
            executor,
            net: config.net.clone(),
            fetcher: config.fetcher.clone(),
            faults,
        },
        vec![Box::pin(coord_loop.run()), Box::pin(exec_loop.run())],
    ))
}

impl SchedHandle {
    /// Submits a job to this node, which becomes its coordinator.
    pub async fn submit(&self, submission: Submission) -> Result<JobStatus, SchedError> {
        self.coordinator.submit(submission).await
    }

    /// A job's status: from its coordinator when reachable, else as heard.
    pub async fn status(&self, job: JobId) -> Result<JobStatus, SchedError> {
        match self.coordinator.known(job.clone()).await? {
            Some((s, true)) => Ok(s),
            Some((heard, false)) => {
                let Ok(coordinator) = heard.coordinator.parse::<PeerId>() else {
                    return Ok(heard);
                };
                let asked = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.net.request(coordinator, Request::GetJob { job }),
                )
                .await;
                match asked {
                    Ok(Ok(Response::Job(s))) if s.revision >= heard.revision => Ok(*s),
                    _ => Ok(heard),
                }
            }
            None => self.ask_around(job).await,
        }
    }

    /// Asks every peer for a job this node has not heard of yet (its gossip
    /// may still be on the way); the coordinator answers.
    async fn ask_around(&self, job: JobId) -> Result<JobStatus, SchedError> {
        let peers = self.net.peers().await.unwrap_or_default();
        if peers.is_empty() {
            // nobody to ask (and `select_ok` takes at least one)
            return Err(SchedError::NotFound(job));
        }
        let asks = peers.into_iter().map(|p| {
            let net = self.net.clone();
            let job = job.clone();
            Box::pin(async move {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    net.request(p.peer_id, Request::GetJob { job }),
                )
                .await
                {
                    Ok(Ok(Response::Job(s))) => Ok(*s),
                    _ => Err(()),
                }
            })
        });
        match futures::future::select_ok(asks).await {
            Ok((status, _)) => Ok(status),
            Err(()) => Err(SchedError::NotFound(job)),
        }
    }

    /// Waits until the job is over or `timeout` passes; returns its status.
    pub async fn wait(&self, job: JobId, timeout: Duration) -> Result<JobStatus, SchedError> {
        self.coordinator.wait(job, timeout).await
    }

    /// Faults tests inject (inert unless set).
    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The job whose signed result is this node's cache record of `key`.
    #[doc(hidden)]
    pub async fn cache_record(&self, key: Hash) -> Result<Option<JobId>, SchedError> {
        self.coordinator.cache_record(key).await
    }

    /// Jobs this node coordinates or has heard of, newest first.
    pub async fn list(&self) -> Result<Vec<JobStatus>, SchedError> {
        self.coordinator.list().await
    }

    /// Cancels a job, wherever it was submitted.
    pub async fn cancel(&self, job: JobId) -> Result<JobStatus, SchedError> {
        let heard = match self.coordinator.known(job.clone()).await? {
            Some((_, true)) => return self.coordinator.cancel_here(job).await,
            Some((heard, false)) => heard,
            None => self.ask_around(job.clone()).await?,
        };
        let coordinator = heard
            .coordinator
            .parse::<PeerId>()
            .map_err(|_| SchedError::Unavailable(format!("job {job} has no valid coordinator")))?;
        match self
            .net
            .request(coordinator, Request::CancelJob { job: job.clone() })
            .await
        {
            Ok(Response::Job(s)) => Ok(*s),
            Ok(Response::Error { message, .. }) => Err(SchedError::Unavailable(message)),
            Ok(other) => Err(SchedError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(SchedError::Unavailable(format!(
                "cannot reach job {job}'s coordinator {coordinator}: {e}"
            ))),
        }
    }

    /// Answers a scheduler request from a peer; `None` if it is not one.
    pub async fn answer(&self, peer: PeerId, request: Request) -> Option<Response> {
        match request {
            Request::Reserve {
                job,
                attempt,
                needs,
            } => Some(
                self.executor
                    .reserve(peer.to_string(), job, attempt, *needs)
                    .await,
            ),
            Request::Release { job, attempt } => {
                self.executor.release_from(peer.to_string(), job, attempt);
                Some(Response::Ack)
            }
            Request::CancelTask { job, attempt } => {
                self.executor.cancel_from(peer.to_string(), job, attempt);
                Some(Response::Ack)
            }
            Request::Claim { job, attempt } => {
                Some(self.coordinator.claim(peer.to_string(), job, attempt).await)
            }
            Request::TaskUpdate {
                job,
                attempt,
                state,
                reason,
                result,
            } => Some(
                self.coordinator
                    .update(
                        peer.to_string(),
                        job,
                        attempt,
                        state,
                        reason,
                        result.map(|r| *r),
                    )
                    .await,
            ),
            Request::CancelJob { job } => Some(match self.coordinator.cancel_here(job).await {
                Ok(s) => Response::Job(Box::new(s)),
                Err(e) => Response::error(weft_protocol::ErrorCode::NotFound, e.to_string()),
            }),
            Request::GetJob { job } => Some(match self.coordinator.own_status(job).await {
                Some(s) => Response::Job(Box::new(s)),
                None => Response::error(
                    weft_protocol::ErrorCode::NotFound,
                    "not a job this node coordinates",
                ),
            }),
            _ => None,
        }
    }

    /// Makes an artifact local (a job's logs, say), from the mesh if need be.
    pub async fn fetch(&self, hash: Hash) -> Result<(), String> {
        self.fetcher.fetch(hash).await
    }

    /// Job gossip from a peer.
    pub fn gossip(&self, source: PeerId, data: Vec<u8>) {
        self.coordinator.gossip(source, data);
    }

    /// A peer's advert expired.
    pub fn peer_gone(&self, peer: PeerId) {
        self.coordinator.peer_gone(peer.to_string());
    }

    /// A peer joined: pending jobs may fit now.
    pub fn peer_up(&self) {
        self.coordinator.peer_up();
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    crate::store::now_ms()
}

/// Replies on a oneshot, ignoring a caller that went away.
pub(crate) fn reply<T>(tx: oneshot::Sender<T>, value: T) {
    let _ = tx.send(value);
}
