//! The fetch engine: makes a blob, or a tree with everything below it,
//! whole in the local store.
//!
//! A fetch finds providers for its root (peers' `Has` answers and Kademlia
//! provider records), then walks the tree with at most `blob_concurrency`
//! blobs in flight, children already here skipped. Each blob starts with one
//! request for its first 2 MiB plus its last chunk group (which proves the
//! size): small blobs end there, verified in memory and stored. A larger one
//! becomes a partial blob in the store and its missing groups are split in
//! batches across every provider at once, `streams_per_peer` streams each;
//! a stream that ends takes the next batch, so faster providers take more.
//! Every group is verified against the id before it is written; a provider
//! whose bytes fail is banned for the rest of the fetch and its groups go to
//! others; a stream that stalls or fails has its remaining groups requeued.
//! Verified groups are recorded (after a sync) about every second, so a
//! fetch stopped by a crash or a restart asks only for what it lacks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bao_tree::io::{BaoContentItem, Leaf, Parent};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};
use weft_protocol::transfer::GroupRanges;
use weft_protocol::{CHUNK_GROUP_BYTES, CHUNK_GROUP_LOG, EntryKind, Hash};

use super::discover::{Provider, discover};
use super::pull::{Event, First, PullError, first_request, pull};
use super::{FetchProgress, FetchReport, TransferError, TransferHandle};
use crate::api::Metrics;
use crate::net::NetHandle;
use crate::store::records::BlobKind;
use crate::store::{PartialBlob, Store};

/// Batch sizes for the parallel phase, in groups (256 KiB to 4 MiB).
const MIN_BATCH: u64 = 16;
const MAX_BATCH: u64 = 256;

/// Verified groups recorded at least this often...
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// ...or after this many new ones (64 MiB).
const SAVE_GROUPS: u64 = 4096;

/// How often a large blob's fetch checks for stalled streams and saves.
const TICK: Duration = Duration::from_millis(200);

/// How often progress is published.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Times a blob's providers are looked up again when none is left.
const MAX_REDISCOVER: u32 = 3;

/// Failed streams after which a provider is dropped for the rest of a blob.
const MAX_FAILURES: u32 = 3;

/// What a fetch shares with the rest of the data plane.
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) net: NetHandle,
    pub(super) metrics: Arc<Metrics>,
    pub(super) local: PeerId,
    pub(super) streams_per_peer: usize,
    pub(super) blob_concurrency: usize,
    pub(super) stall_timeout: Duration,
}

/// The state of one fetch that its blobs share.
#[derive(Default)]
struct State {
    providers: Vec<Provider>,
    banned: HashSet<PeerId>,
    asked: usize,
    bytes_total: u64,
    bytes_fetched: u64,
    bytes_resumed: u64,
    bytes_present: u64,
    blobs_present: u64,
    blobs_fetched: u64,
    wire_bytes: u64,
    by_peer: BTreeMap<PeerId, u64>,
}

/// A small verified blob to store, and who waits for its id.
struct CommitJob {
    bytes: Vec<u8>,
    kind: BlobKind,
    reply: oneshot::Sender<Result<Hash, TransferError>>,
}

/// Most small blobs stored with one sync.
const MAX_COMMIT_BATCH: usize = 256;

/// One fetch.
pub(super) struct Fetch {
    shared: Arc<Shared>,
    handle: TransferHandle,
    root: Hash,
    cancel: CancellationToken,
    state: Mutex<State>,
    started: Instant,
    commits: mpsc::Sender<CommitJob>,
    commit_rx: Mutex<Option<mpsc::Receiver<CommitJob>>>,
}

/// Stores the small blobs of a fetch in batches: whatever arrived while the
/// previous batch was being synced goes in the next, so a tree of many small
/// files costs a few syncs rather than several per file.
async fn committer(store: Store, mut jobs: mpsc::Receiver<CommitJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_COMMIT_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let (blobs, replies): (Vec<(Vec<u8>, BlobKind)>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.bytes, j.kind), j.reply))
            .unzip();
        let s = store.clone();
        let n = blobs.len();
        let t = Instant::now();
        let stored = tokio::task::spawn_blocking(move || s.add_fetched_many(&blobs)).await;
        debug!(
            blobs = n,
            ms = t.elapsed().as_millis() as u64,
            "stored a batch of small blobs"
        );
        match stored {
            Ok(Ok(ids)) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Ok(Err(e)) => {
                let e = TransferError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                let e = TransferError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Bytes of a blob of `size` bytes that the groups of `ranges` hold.
fn range_bytes(ranges: &GroupRanges, size: u64) -> u64 {
    ranges
        .iter()
        .map(|(s, e)| {
            let start = s.saturating_mul(CHUNK_GROUP_BYTES).min(size);
            let end = e.saturating_mul(CHUNK_GROUP_BYTES).min(size);
            end - start
        })
        .sum()
}

/// A request stream in flight.
struct Slot {
    provider: Provider,
    remaining: GroupRanges,
    last_progress: Instant,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct ProviderStats {
    active: usize,
    bytes: u64,
    failures: u32,
    since: Option<Instant>,
}

impl ProviderStats {
    fn rate(&self) -> f64 {
        match self.since {
            Some(t) => self.bytes as f64 / t.elapsed().as_secs_f64().max(0.001),
            None => 0.0,
        }
    }
}

/// Orders providers differently for each blob, so many small blobs spread
/// over all of them.
fn rotated(providers: &[Provider], hash: &Hash) -> Vec<Provider> {
    let mut v = providers.to_vec();
    v.sort_by_cached_key(|p| {
        let mut h = blake3::Hasher::new();
        h.update(hash.as_bytes());
        h.update(&p.peer.to_bytes());
        *h.finalize().as_bytes()
    });
    v
}

impl Fetch {
    pub(super) fn new(
        shared: Arc<Shared>,
        handle: TransferHandle,
        root: Hash,
        shutdown: &CancellationToken,
    ) -> Fetch {
        let (commits, commit_rx) = mpsc::channel(MAX_COMMIT_BATCH);
        Fetch {
            shared,
            handle,
            root,
            cancel: shutdown.child_token(),
            state: Mutex::new(State::default()),
            started: Instant::now(),
            commits,
            commit_rx: Mutex::new(Some(commit_rx)),
        }
    }

    /// Stores a small verified blob (batched with others); returns its id.
    async fn commit(&self, bytes: Vec<u8>, kind: BlobKind) -> Result<Hash, TransferError> {
        let (reply, rx) = oneshot::channel();
        self.commits
            .send(CommitJob { bytes, kind, reply })
            .await
            .map_err(|_| TransferError::Stopped)?;
        rx.await.map_err(|_| TransferError::Stopped)?
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn progress(&self, rate_bps: u64) -> FetchProgress {
        let s = self.state();
        FetchProgress {
            root: self.root,
            bytes_total: s.bytes_total,
            bytes_done: s.bytes_fetched + s.bytes_resumed + s.bytes_present,
            bytes_fetched: s.bytes_fetched,
            peers: s.by_peer.len(),
            rate_bps,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    fn report(&self) -> FetchReport {
        let s = self.state();
        FetchReport {
            root: self.root,
            bytes_total: s.bytes_total,
            bytes_fetched: s.bytes_fetched,
            bytes_resumed: s.bytes_resumed,
            blobs_present: s.blobs_present,
            blobs_fetched: s.blobs_fetched,
            wire_bytes: s.wire_bytes,
            by_peer: s.by_peer.iter().map(|(p, b)| (p.to_string(), *b)).collect(),
            banned: s.banned.iter().map(|p| p.to_string()).collect(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    fn ban(&self, peer: PeerId, why: &str) {
        let mut s = self.state();
        if s.banned.insert(peer) {
            warn!(%peer, %why, "provider sent bytes that failed verification; banned for this fetch");
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.state().banned.contains(peer)
    }

    fn providers_for(&self, hash: &Hash) -> Vec<Provider> {
        let s = self.state();
        let list: Vec<Provider> = s
            .providers
            .iter()
            .filter(|p| !s.banned.contains(&p.peer))
            .copied()
            .collect();
        rotated(&list, hash)
    }

    /// Looks for providers of `hash` again and adds the new ones.
    async fn rediscover(&self, hash: Hash) -> Result<usize, TransferError> {
        let banned = self.state().banned.clone();
        let (found, asked) = discover(&self.shared, &self.handle, hash, &banned).await?;
        let mut s = self.state();
        s.asked = s.asked.max(asked);
        let mut added = 0;
        for p in found {
            if let Some(known) = s.providers.iter_mut().find(|q| q.peer == p.peer) {
                known.addr = p.addr;
            } else {
                s.providers.push(p);
                added += 1;
            }
        }
        Ok(added)
    }

    /// The root is a file of `size` bytes: that is the fetch's total.
    fn learned_size(&self, hash: Hash, kind: BlobKind, size: u64) {
        if hash == self.root && kind == BlobKind::Raw {
            self.state().bytes_total = size;
        }
    }

    fn count_verified(&self, peer: PeerId, bytes: u64) {
        let mut s = self.state();
        s.bytes_fetched += bytes;
        *s.by_peer.entry(peer).or_default() += bytes;
    }

    fn count_wire(&self, peer: PeerId, wire: u64, metrics: &Metrics) {
        self.state().wire_bytes += wire;
        if wire > 0 {
            metrics.peer_bytes(&peer.to_string(), wire, 0);
        }
    }

    /// Runs the fetch to its end, publishing progress on `progress`.
    #[instrument(skip_all, fields(root = %self.root))]
    pub(super) async fn run(
        self,
        progress: watch::Sender<FetchProgress>,
    ) -> Result<FetchReport, TransferError> {
        let root = self.root;
        let mut helpers = JoinSet::new();
        let commit_rx = self
            .commit_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = commit_rx {
            helpers.spawn(committer(self.shared.store.clone(), rx));
        }
        let store = self.shared.store.clone();
        let local = tokio::task::spawn_blocking(move || complete_locally(&store, &root)).await??;
        if !local {
            let (found, asked) =
                discover(&self.shared, &self.handle, root, &HashSet::new()).await?;
            let mut s = self.state();
            s.providers = found;
            s.asked = asked;
        }
        let mut queue: VecDeque<(Hash, Option<EntryKind>)> = VecDeque::from([(root, None)]);
        let mut seen: HashSet<Hash> = HashSet::from([root]);
        let mut running = FuturesUnordered::new();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut rate = RateMeter::default();
        let mut failure: Option<TransferError> = None;
        loop {
            while failure.is_none() && running.len() < self.shared.blob_concurrency {
                let Some((h, kind)) = queue.pop_front() else {
                    break;
                };
                running.push(self.blob_and_children(h, kind));
            }
            tokio::select! {
                next = running.next() => match next {
                    None => break,
                    Some(Ok(children)) => {
                        for (c, kind) in children {
                            if seen.insert(c) {
                                queue.push_back((c, Some(kind)));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        if failure.is_none() {
                            // let the other blobs save their progress and stop
                            self.cancel.cancel();
                            failure = Some(e);
                        }
                    }
                },
                _ = tick.tick() => {
                    let fetched = self.state().bytes_fetched;
                    progress.send_replace(self.progress(rate.sample(fetched)));
                }
            }
        }
        progress.send_replace(self.progress(0));
        if let Some(e) = failure {
            return Err(e);
        }
        let report = self.report();
        info!(
            bytes = report.bytes_total,
            fetched = report.bytes_fetched,
            resumed = report.bytes_resumed,
            blobs = report.blobs_fetched,
            peers = report.by_peer.len(),
            ms = report.elapsed_ms,
            "fetch done"
        );
        Ok(report)
    }

    /// Makes `hash` whole here; for a tree, returns the children still to
    /// fetch (and every child tree, whose children may be missing).
    async fn blob_and_children(
        &self,
        hash: Hash,
        kind_hint: Option<EntryKind>,
    ) -> Result<Vec<(Hash, EntryKind)>, TransferError> {
        let (kind, size) = self.ensure_blob(hash, kind_hint).await?;
        let is_root = hash == self.root;
        if kind != BlobKind::Tree {
            if is_root {
                self.state().bytes_total = size;
            }
            return Ok(Vec::new());
        }
        let store = self.shared.store.clone();
        let (total, children, present) = tokio::task::spawn_blocking(move || {
            let tree = store.read_tree(&hash)?;
            let mut children = Vec::new();
            let mut present = (0u64, 0u64);
            for e in tree.entries() {
                match e.kind {
                    EntryKind::Tree => children.push((e.hash, e.kind)),
                    EntryKind::File => {
                        if store.has(&e.hash)? {
                            present.0 += 1;
                            present.1 += e.size;
                        } else {
                            children.push((e.hash, e.kind));
                        }
                    }
                }
            }
            Ok::<_, crate::store::StoreError>((tree.total_size(), children, present))
        })
        .await??;
        let mut s = self.state();
        if is_root {
            s.bytes_total = total;
        }
        s.blobs_present += present.0;
        s.bytes_present += present.1;
        Ok(children)
    }

    /// Makes one blob whole here; returns its kind and size.
    async fn ensure_blob(
        &self,
        hash: Hash,
        kind_hint: Option<EntryKind>,
    ) -> Result<(BlobKind, u64), TransferError> {
        let store = self.shared.store.clone();
        let hint = kind_hint.map(|k| match k {
            EntryKind::Tree => BlobKind::Tree,
            EntryKind::File => BlobKind::Raw,
        });
        // wait for a fetch of the same blob by another task, if any
        let claim = loop {
            if let Some(found) = local_blob(&store, hash).await? {
                let mut s = self.state();
                s.blobs_present += 1;
                if found.0 == BlobKind::Raw {
                    s.bytes_present += found.1;
                }
                return Ok(found);
            }
            if hash == Hash::EMPTY {
                let s = store.clone();
                tokio::task::spawn_blocking(move || {
                    s.add_fetched(&[], hint.unwrap_or(BlobKind::Raw))
                })
                .await??;
                self.state().blobs_fetched += 1;
                return Ok((hint.unwrap_or(BlobKind::Raw), 0));
            }
            if let Some(c) = store.claim_fetch(hash) {
                break c;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(TransferError::Stopped),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        };
        if let Some(found) = local_blob(&store, hash).await? {
            return Ok(found);
        }
        let s = store.clone();
        let partial = tokio::task::spawn_blocking(move || s.partial_record(&hash)).await??;
        let result = match partial {
            Some(rec) => {
                let kind = hint.unwrap_or(rec.kind);
                self.learned_size(hash, kind, rec.size);
                let s = store.clone();
                let (p, verified) =
                    tokio::task::spawn_blocking(move || s.open_partial(&hash, rec.size, kind))
                        .await??;
                let resumed = range_bytes(&verified, rec.size);
                self.state().bytes_resumed += resumed;
                debug!(id = %hash, resumed, "resuming a partial blob");
                self.large(Arc::new(p), verified, HashSet::new()).await
            }
            None => self.fresh(hash, hint).await,
        };
        drop(claim);
        if result.is_ok() {
            self.state().blobs_fetched += 1;
            let announce = hash == self.root;
            if announce {
                self.handle.announce(hash).await;
            }
        }
        result
    }

    /// Fetches a blob with no partial: its first request, then the rest.
    async fn fresh(
        &self,
        hash: Hash,
        hint: Option<BlobKind>,
    ) -> Result<(BlobKind, u64), TransferError> {
        let mut lacking: HashSet<PeerId> = HashSet::new();
        let mut rediscovered = 0;
        loop {
            let candidates: Vec<Provider> = self
                .providers_for(&hash)
                .into_iter()
                .filter(|p| !lacking.contains(&p.peer))
                .collect();
            for p in candidates {
                if self.cancel.is_cancelled() {
                    return Err(TransferError::Stopped);
                }
                let conn = match self.handle.connect(p.peer, p.addr).await {
                    Ok(c) => c,
                    Err(TransferError::Stopped) => return Err(TransferError::Stopped),
                    Err(e) => {
                        debug!(peer = %p.peer, error = %e, "cannot reach provider");
                        lacking.insert(p.peer);
                        continue;
                    }
                };
                let first = tokio::select! {
                    _ = self.cancel.cancelled() => return Err(TransferError::Stopped),
                    r = first_request(&conn, hash) => r,
                };
                match first {
                    Ok(First::NotFound) => {
                        lacking.insert(p.peer);
                    }
                    Ok(First::Whole { bytes, tree, wire }) => {
                        self.count_wire(p.peer, wire, &self.shared.metrics);
                        let mut kind =
                            hint.unwrap_or(if tree { BlobKind::Tree } else { BlobKind::Raw });
                        if kind == BlobKind::Tree && weft_protocol::Tree::decode(&bytes).is_err() {
                            // verified bytes, but not a manifest: keep them as a file
                            kind = BlobKind::Raw;
                        }
                        let size = bytes.len() as u64;
                        if bytes.is_empty() {
                            // only the empty blob verifies with no bytes at all
                            self.ban(p.peer, "claimed a size its bytes do not have");
                            continue;
                        }
                        let stored = self.commit(bytes, kind).await?;
                        if stored != hash {
                            return Err(TransferError::Fetch {
                                hash,
                                reason: format!("verified bytes were stored as {stored}"),
                            });
                        }
                        self.count_verified(p.peer, size);
                        return Ok((kind, size));
                    }
                    Ok(First::Large {
                        size,
                        tree,
                        items,
                        wire,
                    }) => {
                        self.count_wire(p.peer, wire, &self.shared.metrics);
                        let kind =
                            hint.unwrap_or(if tree { BlobKind::Tree } else { BlobKind::Raw });
                        self.learned_size(hash, kind, size);
                        let store = self.shared.store.clone();
                        let (partial, verified, leaf_bytes) =
                            tokio::task::spawn_blocking(move || {
                                let (partial, mut verified) =
                                    store.open_partial(&hash, size, kind)?;
                                let mut leaf_bytes = 0;
                                for item in items {
                                    match item {
                                        BaoContentItem::Parent(Parent { node, pair }) => partial
                                            .write_parent(node, &pair)
                                            .map_err(crate::store::StoreError::io(
                                                std::path::Path::new("partial"),
                                            ))?,
                                        BaoContentItem::Leaf(Leaf { offset, data }) => {
                                            partial.write_leaf(offset, &data).map_err(
                                                crate::store::StoreError::io(std::path::Path::new(
                                                    "partial",
                                                )),
                                            )?;
                                            let g = offset >> (10 + CHUNK_GROUP_LOG);
                                            verified =
                                                verified.union(&GroupRanges::range(g, g + 1));
                                            leaf_bytes += data.len() as u64;
                                        }
                                    }
                                }
                                store.save_partial(&partial, &verified)?;
                                Ok::<_, crate::store::StoreError>((partial, verified, leaf_bytes))
                            })
                            .await??;
                        self.count_verified(p.peer, leaf_bytes);
                        return self.large(Arc::new(partial), verified, lacking).await;
                    }
                    Err(PullError::Corrupt(why)) | Err(PullError::Violation(why)) => {
                        self.ban(p.peer, &why);
                    }
                    Err(PullError::NotFound) => {
                        lacking.insert(p.peer);
                    }
                    Err(PullError::Local(e)) => {
                        return Err(TransferError::Fetch {
                            hash,
                            reason: format!("writing here: {e}"),
                        });
                    }
                    Err(PullError::Transient(why)) | Err(PullError::Unreachable(why)) => {
                        debug!(peer = %p.peer, %why, "first request failed");
                        lacking.insert(p.peer);
                    }
                }
            }
            if rediscovered >= MAX_REDISCOVER {
                break;
            }
            rediscovered += 1;
            if rediscovered > 1 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            self.rediscover(hash).await?;
            lacking.clear();
        }
        Err(TransferError::NoProvider {
            hash,
            asked: self.state().asked,
        })
    }

    /// Fetches the missing groups of a partial blob from every provider at
    /// once, then moves it into the store.
    async fn large(
        &self,
        partial: Arc<PartialBlob>,
        mut verified: GroupRanges,
        mut lacking: HashSet<PeerId>,
    ) -> Result<(BlobKind, u64), TransferError> {
        let hash = partial.hash();
        let size = partial.size();
        let all = GroupRanges::all(size);
        let mut pending = all.difference(&verified);
        let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4096);
        let mut streams = JoinSet::new();
        let mut slots: HashMap<u64, Slot> = HashMap::new();
        let mut stats: HashMap<PeerId, ProviderStats> = HashMap::new();
        let mut next_slot = 0u64;
        let mut saving: Option<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>> =
            None;
        let mut saved_groups = verified.group_count();
        let mut last_save = Instant::now();
        let mut rediscovered = 0;
        let mut tick = tokio::time::interval(TICK);
        let outcome: Result<(), TransferError> = loop {
            if verified == all {
                break Ok(());
            }
            // hand out work: fastest providers first, up to their stream budget
            let mut candidates: Vec<Provider> = self
                .providers_for(&hash)
                .into_iter()
                .filter(|p| !lacking.contains(&p.peer))
                .collect();
            candidates.sort_by(|a, b| {
                let ra = stats.get(&a.peer).map_or(f64::MAX, ProviderStats::rate);
                let rb = stats.get(&b.peer).map_or(f64::MAX, ProviderStats::rate);
                rb.total_cmp(&ra)
            });
            let capacity = (candidates.len() * self.shared.streams_per_peer).max(1) as u64;
            let batch = (pending.group_count() / (capacity * 2)).clamp(MIN_BATCH, MAX_BATCH);
            for p in &candidates {
                loop {
                    let st = stats.entry(p.peer).or_default();
                    if st.active >= self.shared.streams_per_peer
                        || pending.is_empty()
                        || self.is_banned(&p.peer)
                    {
                        break;
                    }
                    let ranges = pending.take_first(batch);
                    pending = pending.difference(&ranges);
                    st.active += 1;
                    st.since.get_or_insert_with(Instant::now);
                    let id = next_slot;
                    next_slot += 1;
                    let task = streams.spawn(pull(
                        self.handle.clone(),
                        *p,
                        hash,
                        size,
                        ranges.clone(),
                        partial.clone(),
                        id,
                        ev_tx.clone(),
                    ));
                    slots.insert(
                        id,
                        Slot {
                            provider: *p,
                            remaining: ranges,
                            last_progress: Instant::now(),
                            task,
                        },
                    );
                }
            }
            if slots.is_empty() && !pending.is_empty() {
                // nobody to ask: look again, a few times
                if rediscovered >= MAX_REDISCOVER {
                    break Err(TransferError::NoProvider {
                        hash,
                        asked: self.state().asked,
                    });
                }
                rediscovered += 1;
                if rediscovered > 1 {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break Err(TransferError::Stopped),
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    }
                }
                match self.rediscover(hash).await {
                    Ok(_) => lacking.clear(),
                    Err(e) => break Err(e),
                }
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break Err(TransferError::Stopped),
                Some(ev) = ev_rx.recv() => match ev {
                    Event::Verified { peer, start, end, bytes } => {
                        let g = GroupRanges::range(start, end);
                        verified = verified.union(&g);
                        pending = pending.difference(&g);
                        for slot in slots.values_mut().filter(|s| s.provider.peer == peer) {
                            if slot.remaining.contains(start) {
                                slot.remaining = slot.remaining.difference(&g);
                                slot.last_progress = Instant::now();
                            }
                        }
                        stats.entry(peer).or_default().bytes += bytes;
                        self.count_verified(peer, bytes);
                    }
                    Event::Done { slot, wire, result } => {
                        let Some(s) = slots.remove(&slot) else { continue };
                        let peer = s.provider.peer;
                        self.count_wire(peer, wire, &self.shared.metrics);
                        if let Some(st) = stats.get_mut(&peer) {
                            st.active = st.active.saturating_sub(1);
                        }
                        // whatever it did not deliver goes back to the queue
                        pending = pending.union(&s.remaining.difference(&verified));
                        match result {
                            Ok(()) => {
                                if !s.remaining.difference(&verified).is_empty() {
                                    lacking.insert(peer);
                                }
                            }
                            Err(PullError::Corrupt(why)) | Err(PullError::Violation(why)) => {
                                self.ban(peer, &why);
                                for other in slots.values().filter(|o| o.provider.peer == peer) {
                                    other.task.abort();
                                }
                            }
                            Err(PullError::NotFound) => {
                                lacking.insert(peer);
                            }
                            Err(PullError::Unreachable(why)) => {
                                debug!(%peer, %why, "cannot reach provider");
                                lacking.insert(peer);
                            }
                            Err(PullError::Local(e)) => {
                                break Err(TransferError::Fetch {
                                    hash,
                                    reason: format!("writing here: {e}"),
                                });
                            }
                            Err(PullError::Transient(why)) => {
                                debug!(%peer, %why, "stream failed; its groups go back in the queue");
                                let st = stats.entry(peer).or_default();
                                st.failures += 1;
                                if st.failures >= MAX_FAILURES {
                                    warn!(%peer, %why, "provider keeps failing; not asked again for this blob");
                                    lacking.insert(peer);
                                }
                            }
                        }
                    }
                },
                _ = tick.tick() => {
                    let stall = self.shared.stall_timeout;
                    let stalled: Vec<u64> = slots
                        .iter()
                        .filter(|(_, s)| s.last_progress.elapsed() > stall)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in stalled {
                        if let Some(s) = slots.remove(&id) {
                            warn!(peer = %s.provider.peer, ?stall, "provider stalled; asking others");
                            s.task.abort();
                            pending = pending.union(&s.remaining.difference(&verified));
                            if let Some(st) = stats.get_mut(&s.provider.peer) {
                                st.active = st.active.saturating_sub(1);
                            }
                            lacking.insert(s.provider.peer);
                        }
                    }
                }
            }
            // record progress now and then, one save at a time
            if saving.as_ref().is_some_and(|h| h.is_finished())
                && let Some(h) = saving.take()
            {
                h.await??;
            }
            let unsaved = verified.group_count().saturating_sub(saved_groups);
            if saving.is_none()
                && unsaved > 0
                && (unsaved >= SAVE_GROUPS || last_save.elapsed() >= SAVE_EVERY)
            {
                let store = self.shared.store.clone();
                let p = partial.clone();
                let snapshot = verified.clone();
                saved_groups = snapshot.group_count();
                last_save = Instant::now();
                saving = Some(tokio::task::spawn_blocking(move || {
                    store.save_partial(&p, &snapshot)
                }));
            }
        };
        if outcome.is_ok() {
            // the streams that delivered the last groups are ending: count their bytes
            let drain = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(drain);
            while !slots.is_empty() {
                tokio::select! {
                    _ = &mut drain => break,
                    ev = ev_rx.recv() => match ev {
                        Some(Event::Done { slot, wire, .. }) => {
                            if let Some(s) = slots.remove(&slot) {
                                self.count_wire(s.provider.peer, wire, &self.shared.metrics);
                            }
                        }
                        Some(Event::Verified { .. }) => {}
                        None => break,
                    },
                }
            }
        }
        streams.abort_all();
        if let Some(h) = saving.take() {
            h.await??;
        }
        match outcome {
            Ok(()) => {
                let store = self.shared.store.clone();
                let p = partial.clone();
                tokio::task::spawn_blocking(move || store.complete_partial(&p)).await??;
                debug!(id = %hash, size, "blob complete");
                Ok((partial.kind(), size))
            }
            Err(e) => {
                // keep what was verified for the next attempt
                let store = self.shared.store.clone();
                let p = partial.clone();
                let snapshot = verified.clone();
                if let Err(save) =
                    tokio::task::spawn_blocking(move || store.save_partial(&p, &snapshot)).await?
                {
                    warn!(id = %hash, error = %save, "cannot record fetch progress");
                }
                Err(e)
            }
        }
    }
}

/// Measures a receive rate over about a second.
#[derive(Default)]
struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn sample(&mut self, total: u64) -> u64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some((t, b)) if now > *t => {
                ((total - b) as f64 / now.duration_since(*t).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

/// Whether `root` and, for a tree, everything below it is here.
pub(super) fn complete_locally(
    store: &Store,
    root: &Hash,
) -> Result<bool, crate::store::StoreError> {
    if !store.has(root)? {
        return Ok(false);
    }
    if !store.is_tree(root)? {
        return Ok(true);
    }
    for h in store.closure([*root])? {
        if !store.has(&h)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A blob's kind and size if it is whole here.
async fn local_blob(store: &Store, hash: Hash) -> Result<Option<(BlobKind, u64)>, TransferError> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || {
        if !store.has(&hash)? {
            return Ok(None);
        }
        let kind = if store.is_tree(&hash)? {
            BlobKind::Tree
        } else {
            BlobKind::Raw
        };
        Ok::<_, crate::store::StoreError>(Some((kind, store.blob_size(&hash)?)))
    })
    .await??)
}
