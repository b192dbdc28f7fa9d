//! Ledger replication: every entry written anywhere is held everywhere.
//!
//! The ledger (see `weft_protocol::ledger` and `store::ledger`) is a
//! grow-only set of immutable entries, so replicating it needs no conflict
//! resolution: entries this node writes are gossiped on `weft/ledger/1` in
//! batches as they happen, entries gossiped by others are merged, and when a
//! peer enters the membership table the two exchange every entry they hold
//! with `Request::LedgerSync`, a page at a time, so a node that was away
//! catches up.
//!
//! Where a number must be the same on every node before anyone sees it (a
//! model's version), the writer also pushes the entry to every live peer with
//! `Request::LedgerPush` and waits for each to answer with the entries it
//! holds of the same subject: any rival written before the peer saw ours is
//! in that answer, and any written after has a later clock (each peer's clock
//! observes ours), so once every live peer has answered, the number the
//! entry's place gives is final.
//!
//! What a peer sends is checked before it is stored: a gossiped or pushed
//! entry must be written by the node that sent it; an entry relayed in a sync
//! page must name a node id as its writer; no clock may run more than
//! [`weft_protocol::tag::MAX_CLOCK_SKEW_MS`] ahead of this node's; and a
//! pipeline run's record must be written by its coordinator.

pub mod registry;
pub mod triggers;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use weft_protocol::bounds::MAX_LEDGER_PAGE;
use weft_protocol::ledger::{
    AliasMove, AliasName, Entry, EntryBody, EntryKind, LedgerGossip, ModelName, ModelVersion,
};
use weft_protocol::sched::JobId;
use weft_protocol::tag::ClockSkewError;
use weft_protocol::{Bounded, ErrorCode, Hash, Request, Response, Topic};

use crate::net::NetHandle;
use crate::store::{Store, StoreError};

/// Entries per `LedgerSync` page.
const PAGE: usize = 256;
/// Entries per gossip message.
const GOSSIP_BATCH: usize = 128;
/// Encoded bytes of entries per gossip message or rpc answer, well inside
/// the 4 MiB frame.
const MESSAGE_BUDGET: usize = 1024 * 1024;
/// How long a pushed entry waits for each peer's answer.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("the ledger task failed: {0}")]
    Task(String),
}

/// Why an entry from a peer is refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryRefusal {
    #[error("the entry's writer {origin:?} is not the node that sent it")]
    NotItsOrigin { origin: String },
    #[error("the entry's writer {origin:?} is not a node id")]
    BadOrigin { origin: String },
    #[error("a pipeline run record written by {origin:?}, not by its coordinator {coordinator:?}")]
    NotCoordinator { origin: String, coordinator: String },
    #[error(transparent)]
    Clock(#[from] ClockSkewError),
}

/// Checks an entry sent by `sender` (gossip or push): it must be the
/// sender's own.
pub fn check_sent(sender: &PeerId, entry: &Entry, now_ms: u64) -> Result<(), EntryRefusal> {
    if entry.origin != sender.to_string() {
        return Err(EntryRefusal::NotItsOrigin {
            origin: entry.origin.chars().take(80).collect(),
        });
    }
    check_relayed(entry, now_ms)
}

/// Checks an entry relayed in a sync page: any writer, but a node id, a
/// sane clock, and a pipeline run's record by its coordinator.
pub fn check_relayed(entry: &Entry, now_ms: u64) -> Result<(), EntryRefusal> {
    if entry.origin.parse::<PeerId>().is_err() {
        return Err(EntryRefusal::BadOrigin {
            origin: entry.origin.chars().take(80).collect(),
        });
    }
    entry.hlc.check_skew(now_ms)?;
    if let EntryBody::PipelineRun(p) = &entry.body
        && p.coordinator != entry.origin
    {
        return Err(EntryRefusal::NotCoordinator {
            origin: entry.origin.chars().take(80).collect(),
            coordinator: p.coordinator.chars().take(80).collect(),
        });
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the replicator is told by the daemon's dispatch loop.
#[derive(Debug)]
pub enum LedgerEvent {
    /// A `weft/ledger/1` message.
    Gossip { source: PeerId, data: Vec<u8> },
    /// A peer joined: sync with it.
    PeerUp(PeerId),
}

/// Handle to the ledger: writes, registrations, and the replicator's inbox.
#[derive(Clone)]
pub struct LedgerHandle {
    store: Store,
    net: Option<NetHandle>,
    tx: mpsc::Sender<LedgerEvent>,
}

/// A model version registered here, with its number.
#[derive(Debug, Clone)]
pub struct Registered {
    pub version: u64,
    pub entry: Entry,
    /// Live peers that did not confirm holding the entry, with why. When
    /// empty the number is final; otherwise it stands unless one of them
    /// registered a rival before it could see this one.
    pub unconfirmed: Vec<(String, String)>,
}

impl LedgerHandle {
    /// Passes an event on; drops it if the replicator is far behind (the
    /// next sync repairs anything missed).
    pub fn send(&self, event: LedgerEvent) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "ledger replicator busy; event dropped, next sync repairs it");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes an entry by this node (gossiped by the replicator).
    pub async fn append(&self, body: EntryBody) -> Result<Entry, LedgerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.ledger_append(body))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))?
            .map_err(LedgerError::from)
    }

    /// Registers `artifact` as the next version of `name` and returns its
    /// number once every live peer holds the entry (see the module docs).
    pub async fn register_model(
        &self,
        name: ModelName,
        artifact: Hash,
        run: Option<JobId>,
        source: Option<String>,
    ) -> Result<Registered, LedgerError> {
        let entry = self
            .append(EntryBody::ModelVersion(ModelVersion {
                name: name.clone(),
                artifact,
                run,
                source,
            }))
            .await?;
        let unconfirmed = self.push_to_all(&entry).await;
        if !unconfirmed.is_empty() {
            tracing::warn!(model = %name, peers = ?unconfirmed, "model version not confirmed by every live peer");
        }
        let store = self.store.clone();
        let e = entry.clone();
        let version = tokio::task::spawn_blocking(move || store.model_version_number(&e))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))??
            .ok_or_else(|| LedgerError::Invalid("the registration was not stored".into()))?;
        Ok(Registered {
            version,
            entry,
            unconfirmed,
        })
    }

    /// Points `name@alias` at `version` (which must exist), recording where
    /// it pointed before; `None` removes the alias.
    pub async fn move_alias(
        &self,
        name: ModelName,
        alias: AliasName,
        version: Option<u64>,
        reason: Option<String>,
    ) -> Result<Entry, LedgerError> {
        let store = self.store.clone();
        let (n, a) = (name.clone(), alias.clone());
        let (count, from) = tokio::task::spawn_blocking(move || {
            let count = store.model_versions(&n)?.len() as u64;
            let from = store.alias_history(&n, &a)?.last().and_then(|m| m.version);
            Ok::<_, StoreError>((count, from))
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))??;
        if count == 0 {
            return Err(LedgerError::Invalid(format!(
                "no model named {name}; register one first with `weft model register {name} REF`"
            )));
        }
        if let Some(v) = version
            && (v == 0 || v > count)
        {
            return Err(LedgerError::Invalid(format!(
                "models/{name} has no version {v} (it has 1 to {count})"
            )));
        }
        let entry = self
            .append(EntryBody::Alias(AliasMove {
                name,
                alias,
                version,
                from,
                reason,
            }))
            .await?;
        Ok(entry)
    }

    /// Pushes `entry` to every live peer and merges what they hold of its
    /// subject; returns the peers that did not answer, with why. Once it
    /// returns with none, every rival entry of the subject that a live peer
    /// wrote before seeing this one is held here (a model version's number,
    /// a trigger claim).
    pub async fn push_to_all(&self, entry: &Entry) -> Vec<(String, String)> {
        let Some(net) = &self.net else {
            return Vec::new();
        };
        let peers = net.peers().await.unwrap_or_default();
        let mut asks = tokio::task::JoinSet::new();
        for p in peers {
            let net = net.clone();
            let request = Request::LedgerPush {
                entries: vec![entry.clone()],
            };
            asks.spawn(async move {
                let r = tokio::time::timeout(PUSH_TIMEOUT, net.request(p.peer_id, request)).await;
                (p.peer_id, r)
            });
        }
        let mut failed: Vec<(String, String)> = Vec::new();
        while let Some(done) = asks.join_next().await {
            let Ok((peer, r)) = done else { continue };
            match r {
                Ok(Ok(Response::Ledger { entries, .. })) => {
                    merge_relayed(&self.store, entries).await;
                }
                Ok(Ok(Response::Error { message, .. })) => {
                    failed.push((peer.to_string(), message));
                }
                Ok(Ok(_)) => failed.push((peer.to_string(), "an unexpected answer".into())),
                Ok(Err(e)) => failed.push((peer.to_string(), e.to_string())),
                Err(_) => failed.push((peer.to_string(), "no answer within 5 s".into())),
            }
        }
        failed
    }
}

/// The replicator: its handle, and the loop for the caller to spawn.
pub fn replicator(
    store: Store,
    net: Option<NetHandle>,
    shutdown: CancellationToken,
) -> (
    LedgerHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(4096);
    let local = store.subscribe_ledger_local();
    let handle = LedgerHandle {
        store: store.clone(),
        net: net.clone(),
        tx,
    };
    (handle, run(store, net, local, rx, shutdown))
}

async fn run(
    store: Store,
    net: Option<NetHandle>,
    mut local: broadcast::Receiver<Entry>,
    mut events: mpsc::Receiver<LedgerEvent>,
    shutdown: CancellationToken,
) {
    let mut syncs = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            first = local.recv() => match first {
                Ok(first) => {
                    // one message for what was written meanwhile
                    let mut batch = vec![first];
                    while batch.len() < GOSSIP_BATCH {
                        match local.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    if let Some(net) = &net {
                        publish(net, batch).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "local ledger entries outran gossip; peers catch up on their next sync");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            event = events.recv() => match event {
                Some(LedgerEvent::Gossip { source, data }) => merge_gossip(&store, source, &data).await,
                Some(LedgerEvent::PeerUp(peer)) => {
                    if let Some(net) = &net {
                        let (store, net) = (store.clone(), net.clone());
                        syncs.spawn(async move { sync_with(store, net, peer).await });
                    }
                }
                None => break,
            },
            Some(_) = syncs.join_next(), if !syncs.is_empty() => {}
        }
    }
    syncs.shutdown().await;
}

/// Splits `entries` into runs whose encoded size stays within `budget`
/// (an entry alone over it is a run of its own: entries are bounded by
/// `MAX_ENTRY_BYTES`, far below the frame).
fn by_bytes(entries: Vec<Entry>, budget: usize) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut size = 0usize;
    for e in entries {
        let n = e.encode().map(|b| b.len()).unwrap_or(budget);
        match out.last_mut() {
            Some(last) if size + n <= budget => {
                last.push(e);
                size += n;
            }
            _ => {
                out.push(vec![e]);
                size = n;
            }
        }
    }
    out
}

async fn publish(net: &NetHandle, entries: Vec<Entry>) {
    for part in by_bytes(entries, MESSAGE_BUDGET) {
        publish_one(net, part).await;
    }
}

async fn publish_one(net: &NetHandle, entries: Vec<Entry>) {
    let n = entries.len();
    let data = match (LedgerGossip { entries }).encode() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(entries = n, error = %e, "cannot encode ledger gossip");
            return;
        }
    };
    if let Err(e) = net.publish(Topic::Ledger, data).await {
        // no peer subscribed yet, or none at all: they catch up on sync
        tracing::debug!(entries = n, error = %e, "ledger entries not gossiped");
    }
}

async fn merge_gossip(store: &Store, source: PeerId, data: &[u8]) {
    let gossip = match LedgerGossip::decode(data) {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(%source, error = %e, "malformed ledger gossip dropped");
            return;
        }
    };
    let now = now_ms();
    let mut ok = Vec::with_capacity(gossip.entries.len());
    for e in gossip.entries {
        match check_sent(&source, &e, now) {
            Ok(()) => ok.push(e),
            Err(error) => tracing::warn!(%source, %error, "ledger entry refused"),
        }
    }
    merge(store, ok).await;
}

/// Stores entries relayed by a peer (sync pages, push answers) that pass
/// [`check_relayed`]; returns how many were new here.
async fn merge_relayed(store: &Store, entries: Vec<Entry>) -> usize {
    let now = now_ms();
    let ok: Vec<Entry> = entries
        .into_iter()
        .filter(|e| match check_relayed(e, now) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "relayed ledger entry refused");
                false
            }
        })
        .collect();
    merge(store, ok).await
}

async fn merge(store: &Store, entries: Vec<Entry>) -> usize {
    if entries.is_empty() {
        return 0;
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || {
        let mut fresh = 0;
        for e in &entries {
            fresh += usize::from(store.ledger_merge(e)?);
        }
        Ok::<_, StoreError>(fresh)
    })
    .await
    {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot store ledger entries");
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, "ledger merge task failed");
            0
        }
    }
}

/// Pulls every entry `peer` has, page by page, and stores those it lacks.
#[tracing::instrument(skip(store, net))]
async fn sync_with(store: Store, net: NetHandle, peer: PeerId) {
    let mut after: Option<String> = None;
    let mut merged = 0usize;
    loop {
        let response = match tokio::time::timeout(
            Duration::from_secs(30),
            net.request(
                peer,
                Request::LedgerSync {
                    after: after.clone(),
                },
            ),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "ledger sync failed");
                return;
            }
            Err(_) => {
                tracing::debug!("ledger sync timed out");
                return;
            }
        };
        let (entries, more) = match response {
            Response::Ledger { entries, more } => (entries, more),
            other => {
                tracing::debug!(response = ?other, "peer does not sync the ledger");
                return;
            }
        };
        after = entries.last().map(|e| hex::encode(e.key()));
        merged += merge_relayed(&store, entries).await;
        if !more || after.is_none() {
            break;
        }
    }
    tracing::debug!(merged, "ledger sync done");
}

/// Answers a `LedgerSync` request from the store.
pub async fn answer_sync(store: &Store, after: Option<String>) -> Response {
    let after = match after.map(hex::decode).transpose() {
        Ok(a) => a,
        Err(_) => return Response::error(ErrorCode::BadRequest, "the sync key is not hex"),
    };
    let store = store.clone();
    match tokio::task::spawn_blocking(move || {
        store.ledger_page(after.as_deref(), PAGE.min(MAX_LEDGER_PAGE))
    })
    .await
    {
        Ok(Ok((mut entries, more))) => {
            entries.retain(|e| e.check_bounds().is_ok());
            let total = entries.len();
            let entries = by_bytes(entries, MESSAGE_BUDGET)
                .into_iter()
                .next()
                .unwrap_or_default();
            // the asker continues after the last key it got
            let more = more || entries.len() < total;
            Response::Ledger { entries, more }
        }
        Ok(Err(e)) => Response::error(ErrorCode::Internal, e.to_string()),
        Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
    }
}

/// Answers a `LedgerPush`: stores the sender's own entries and answers with
/// every entry held of their subjects.
pub async fn answer_push(store: &Store, sender: PeerId, entries: Vec<Entry>) -> Response {
    let now = now_ms();
    for e in &entries {
        if let Err(error) = check_sent(&sender, e, now) {
            return Response::error(ErrorCode::BadRequest, error.to_string());
        }
    }
    let subjects: Vec<(EntryKind, String)> = entries
        .iter()
        .map(|e| (e.body.kind(), e.body.subject()))
        .collect();
    merge(store, entries).await;
    let store = store.clone();
    match tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (kind, subject) in subjects {
            out.extend(store.ledger_subject(kind, &subject)?);
        }
        Ok::<_, StoreError>(out)
    })
    .await
    {
        Ok(Ok(mut held)) => {
            held.retain(|e| e.check_bounds().is_ok());
            // the newest first, within the frame: the asker needs the rivals
            // of its own entries, which come last in clock order
            held.reverse();
            held.truncate(MAX_LEDGER_PAGE);
            let mut held = by_bytes(held, MESSAGE_BUDGET)
                .into_iter()
                .next()
                .unwrap_or_default();
            held.reverse();
            Response::Ledger {
                entries: held,
                more: false,
            }
        }
        Ok(Err(e)) => Response::error(ErrorCode::Internal, e.to_string()),
        Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hlc;
    use weft_protocol::ledger::{PipelineRunRecord, PipelineState};
    use weft_protocol::tag::MAX_CLOCK_SKEW_MS;

    fn entry(origin: String, wall_ms: u64, body: EntryBody) -> Entry {
        Entry {
            hlc: Hlc {
                wall_ms,
                counter: 0,
            },
            origin,
            body,
        }
    }

    fn version() -> EntryBody {
        EntryBody::ModelVersion(ModelVersion {
            name: ModelName::new("iris").expect("name"),
            artifact: Hash::EMPTY,
            run: None,
            source: None,
        })
    }

    #[test]
    fn sent_entries_are_their_senders_own_with_a_sane_clock() {
        let me = PeerId::random();
        let other = PeerId::random();
        let now = 1_000_000;
        assert!(check_sent(&me, &entry(me.to_string(), now, version()), now).is_ok());
        let err = check_sent(&me, &entry(other.to_string(), now, version()), now)
            .expect_err("another writer");
        assert!(matches!(err, EntryRefusal::NotItsOrigin { .. }), "{err}");
        let err = check_sent(
            &me,
            &entry(me.to_string(), now + MAX_CLOCK_SKEW_MS + 1, version()),
            now,
        )
        .expect_err("far future");
        assert!(matches!(err, EntryRefusal::Clock(_)), "{err}");
        let err = check_relayed(&entry("1111".into(), now, version()), now).expect_err("no id");
        assert!(matches!(err, EntryRefusal::BadOrigin { .. }), "{err}");
    }

    #[test]
    fn batches_stay_within_their_byte_budget() {
        let me = PeerId::random().to_string();
        let entries: Vec<Entry> = (0..100)
            .map(|i| entry(me.clone(), 1_000_000 + i, version()))
            .collect();
        let one = entries[0].encode().expect("encode").len();
        let parts = by_bytes(entries.clone(), one * 10);
        assert_eq!(parts.len(), 10);
        assert!(parts.iter().all(|p| p.len() == 10));
        assert_eq!(parts.concat(), entries, "nothing lost, order kept");
        // an entry over the budget travels alone
        assert_eq!(by_bytes(entries[..3].to_vec(), 1).len(), 3);
    }

    #[test]
    fn a_pipeline_run_record_is_written_by_its_coordinator() {
        let coordinator = PeerId::random().to_string();
        let forger = PeerId::random().to_string();
        let record = |origin: &str| {
            entry(
                origin.to_string(),
                1,
                EntryBody::PipelineRun(PipelineRunRecord {
                    id: JobId::new(1, 2),
                    pipeline: "p".into(),
                    experiment: None,
                    coordinator: coordinator.clone(),
                    state: PipelineState::Cancelled,
                    params: vec![],
                    trigger: None,
                    steps: vec![],
                    reason: None,
                    created_ms: 1,
                    updated_ms: 1,
                }),
            )
        };
        assert!(check_relayed(&record(&coordinator), 10).is_ok());
        let err = check_relayed(&record(&forger), 10).expect_err("forged");
        assert!(matches!(err, EntryRefusal::NotCoordinator { .. }), "{err}");
    }
}
