//! The coordinator actor: the jobs submitted to this node, from submission
//! to result, and the table of every other job heard of by gossip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_protocol::job::{self, JobSpec};
use weft_protocol::sched::{
    Assignment, ExecutorKind, JobGossip, JobId, JobResult, JobState, JobStatus, Needs, Program,
    Submission, Transition,
};
use weft_protocol::{ErrorCode, Hash, NodeAdvert, Request, Response, Topic};

use super::executor::ExecutorHandle;
use super::records::{CacheRecord, CacheRecordError, JobRecord};
use super::runs;
use super::{Fetcher, SchedConfig, SchedError, now_ms, placement, reply};
use crate::net::{NetHandle, PeerInfo};
use crate::store::Store;
use crate::store::records::Record;

/// Bytes of other coordinators' statuses kept in the table (encoded size
/// plus [`TABLE_ENTRY_OVERHEAD`] each); the oldest heard are evicted first.
pub const TABLE_BYTES: usize = 32 << 20;
/// Bytes of one coordinator's statuses kept in the table, so one member
/// cannot push every other coordinator's jobs out.
pub const TABLE_BYTES_PER_COORDINATOR: usize = 8 << 20;
/// What an entry costs beyond its encoded status (maps, indexes).
pub const TABLE_ENTRY_OVERHEAD: usize = 160;
/// Finished jobs of this node kept in memory (all stay in sled).
const DONE_CAP: usize = 10_000;
/// Default CPU for a task that asks for none.
const DEFAULT_CPU_MILLIS: u32 = 250;
/// Default memory for a task that asks for none.
const DEFAULT_WASM_MEMORY: u64 = 256 << 20;
const DEFAULT_CONTAINER_MEMORY: u64 = 512 << 20;
/// Default deadline for a task that sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Extra time past a deadline before the coordinator gives up on an
/// executor (whose own deadline should have ended the task first): a
/// quarter of the timeout, from 2 s to 30 s.
fn deadline_grace_ms(timeout_ms: u64) -> u64 {
    (timeout_ms / 4).clamp(2_000, 30_000)
}
/// How many of an executor's adverts, published after the grace, may miss
/// a placed attempt before it counts as lost.
const UNLISTED_ADVERTS: u64 = 2;
/// How long a cache hit's outputs may take to be found (here or at a peer).
const CACHE_CHECK_TIMEOUT: Duration = Duration::from_secs(4);
/// How often gossip batches go out.
const GOSSIP_EVERY: Duration = Duration::from_millis(50);
/// Statuses per gossip message.
const GOSSIP_BATCH: usize = 64;

pub(crate) enum Command {
    Submit {
        submission: Submission,
        reply: oneshot::Sender<Result<JobStatus, SchedError>>,
    },
    Status {
        job: JobId,
        reply: oneshot::Sender<Option<(JobStatus, bool)>>,
    },
    Wait {
        job: JobId,
        reply: oneshot::Sender<Option<JobStatus>>,
    },
    List {
        reply: oneshot::Sender<Vec<JobStatus>>,
    },
    CacheRecord {
        key: Hash,
        reply: oneshot::Sender<Option<JobId>>,
    },
    Cancel {
        job: JobId,
        reply: oneshot::Sender<Result<JobStatus, SchedError>>,
    },
    Claim {
        peer: String,
        job: JobId,
        attempt: u32,
        reply: oneshot::Sender<Response>,
    },
    Update {
        peer: String,
        job: JobId,
        attempt: u32,
        state: JobState,
        reason: Option<String>,
        result: Option<JobResult>,
        reply: oneshot::Sender<Response>,
    },
    Gossip {
        source: PeerId,
        data: Vec<u8>,
    },
    PeerUp,
    PeerGone(String),
    /// A reservation request came back.
    Reserved {
        job: JobId,
        attempt: u32,
        peer: String,
        ok: bool,
        why: Option<String>,
    },
    /// Input locality for a placement came back.
    Held {
        job: JobId,
        attempt: u32,
        held: Vec<(String, u64)>,
    },
    /// Whether a cache hit's outputs still exist somewhere.
    CacheChecked {
        job: JobId,
        hit: CacheRecord,
        found: bool,
    },
    /// The job tree was flushed: these terminal reports may be acknowledged.
    Flushed,
}

/// Faults tests can inject; inert unless set.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Faults {
    /// Claim replies to drop: the claim is granted, the claimant is told it
    /// failed (as when the reply is lost on the way).
    pub drop_claim_replies: std::sync::atomic::AtomicU32,
}

impl Faults {
    fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        counter
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
    }
}

/// Handle to the coordinator.
#[derive(Clone)]
pub struct CoordinatorHandle {
    pub(crate) tx: mpsc::Sender<Command>,
}

impl CoordinatorHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SchedError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| SchedError::Stopped)?;
        rx.await.map_err(|_| SchedError::Stopped)
    }

    pub(crate) async fn submit(&self, submission: Submission) -> Result<JobStatus, SchedError> {
        self.ask(|reply| Command::Submit { submission, reply })
            .await?
    }

    /// The status this node knows, and whether it is the coordinator.
    pub(crate) async fn known(&self, job: JobId) -> Result<Option<(JobStatus, bool)>, SchedError> {
        self.ask(|reply| Command::Status { job, reply }).await
    }

    pub(crate) async fn own_status(&self, job: JobId) -> Option<JobStatus> {
        match self.known(job).await {
            Ok(Some((s, true))) => Some(s),
            _ => None,
        }
    }

    pub(crate) async fn cache_record(&self, key: Hash) -> Result<Option<JobId>, SchedError> {
        self.ask(|reply| Command::CacheRecord { key, reply }).await
    }

    pub(crate) async fn list(&self) -> Result<Vec<JobStatus>, SchedError> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub(crate) async fn cancel_here(&self, job: JobId) -> Result<JobStatus, SchedError> {
        self.ask(|reply| Command::Cancel { job, reply }).await?
    }

    pub(crate) async fn claim(&self, peer: String, job: JobId, attempt: u32) -> Response {
        self.ask(|reply| Command::Claim {
            peer,
            job,
            attempt,
            reply,
        })
        .await
        .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()))
    }

    pub(crate) async fn update(
        &self,
        peer: String,
        job: JobId,
        attempt: u32,
        state: JobState,
        reason: Option<String>,
        result: Option<JobResult>,
    ) -> Response {
        self.ask(|reply| Command::Update {
            peer,
            job,
            attempt,
            state,
            reason,
            result,
            reply,
        })
        .await
        .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()))
    }

    pub(crate) fn gossip(&self, source: PeerId, data: Vec<u8>) {
        if self.tx.try_send(Command::Gossip { source, data }).is_err() {
            tracing::warn!("scheduler busy: job gossip dropped");
        }
    }

    pub(crate) fn peer_gone(&self, peer: String) {
        let _ = self.tx.try_send(Command::PeerGone(peer));
    }

    pub(crate) fn peer_up(&self) {
        let _ = self.tx.try_send(Command::PeerUp);
    }
}

/// A job this node coordinates.
struct Entry {
    status: JobStatus,
    submission: Submission,
    assignment: Assignment,
    /// Nodes probed in this placement round.
    tried: HashSet<String>,
    /// Reservations in flight.
    outstanding: usize,
    /// Nodes holding a reservation for the current attempt.
    reserved: HashSet<String>,
    /// Input bytes per node, once asked.
    held: Option<HashMap<String, u64>>,
    asking_held: bool,
    next_try: Instant,
    deadline: Option<Instant>,
    /// The same deadline in Unix ms, as persisted.
    deadline_ms: Option<u64>,
    /// When the executor was last seen missing from the membership table.
    executor_missing_since: Option<Instant>,
    /// When the current attempt was claimed (this run of the process).
    claimed_at: Option<Instant>,
    /// The executor's first advert, after the grace, that did not list the
    /// attempt: `(started_ms, seq)`.
    unlisted: Option<(u64, u64)>,
    /// A cache hit's outputs are being looked for.
    checking_cache: bool,
    /// Answered from the cache: the executor of the result reused.
    hit_executor: Option<String>,
    /// The end of its run is written.
    run_ended: bool,
}

impl Entry {
    fn new(status: JobStatus, submission: Submission, assignment: Assignment) -> Entry {
        Entry {
            status,
            submission,
            assignment,
            tried: HashSet::new(),
            outstanding: 0,
            reserved: HashSet::new(),
            held: None,
            asking_held: false,
            next_try: Instant::now(),
            deadline: None,
            deadline_ms: None,
            executor_missing_since: None,
            claimed_at: None,
            unlisted: None,
            checking_cache: false,
            hit_executor: None,
            run_ended: false,
        }
    }

    /// Whether `peer` was the executor of `attempt` (it claimed it).
    fn executed(&self, peer: &str, attempt: u32) -> bool {
        self.status.history.iter().any(|t| {
            t.attempt == attempt && t.state == JobState::Placed && t.node.as_deref() == Some(peer)
        })
    }

    fn claimed_by(&self) -> Option<&str> {
        match self.status.state {
            JobState::Placed | JobState::Fetching | JobState::Running | JobState::Uploading => {
                self.status.node.as_deref()
            }
            _ => None,
        }
    }
}

pub(crate) struct Coordinator {
    me: String,
    store: Store,
    net: NetHandle,
    fetcher: Arc<dyn Fetcher>,
    executor: ExecutorHandle,
    jobs_tree: sled::Tree,
    cache_tree: sled::Tree,
    advert: watch::Receiver<NodeAdvert>,
    ttl: Duration,
    jobs: HashMap<JobId, Entry>,
    /// Finished jobs of this node, oldest first, for eviction.
    done: BTreeMap<JobId, ()>,
    table: Table,
    faults: Arc<Faults>,
    /// Replies sent once the job tree is flushed: to submissions (a job
    /// accepted is a job a crash cannot lose) and to final reports.
    unflushed: Vec<Durable>,
    flushing: bool,
    peers: Vec<PeerInfo>,
    peers_at: Option<Instant>,
    dirty: Vec<JobId>,
    waiters: HashMap<JobId, Vec<oneshot::Sender<Option<JobStatus>>>>,
    spread: u64,
    rx: mpsc::Receiver<Command>,
    /// For tasks this actor spawns to report back (reservations, locality).
    self_tx: mpsc::Sender<Command>,
    loopback: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
}

/// A reply held until the job tree is flushed.
type Durable = Box<dyn FnOnce() + Send>;

fn err(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::error(code, message)
}

/// Where a task's metrics are read from when its spec names no file.
pub(crate) const DEFAULT_METRICS_FILE: &str = "/outputs/metrics.json";

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6)).min(10_000))
}

/// The cache key: the program and the inputs (ids and where they go), the
/// output paths asked for, and the metrics file when it is not the default
/// (so every key of a job without one is what it was before metrics).
fn cache_key(
    program: &Program,
    inputs: &[(Hash, String)],
    outputs: &[(String, Option<weft_protocol::TagName>)],
    metrics: &str,
) -> Hash {
    let paths: Vec<&str> = outputs.iter().map(|(p, _)| p.as_str()).collect();
    let bytes = if metrics == DEFAULT_METRICS_FILE {
        weft_protocol::encode(&(1u8, program, inputs, paths), usize::MAX)
    } else {
        weft_protocol::encode(&(1u8, program, inputs, paths, metrics), usize::MAX)
    }
    .unwrap_or_default();
    Hash::of(&bytes)
}

impl Coordinator {
    pub(crate) fn new(
        config: &SchedConfig,
        executor: ExecutorHandle,
        rx: mpsc::Receiver<Command>,
        faults: Arc<Faults>,
        shutdown: CancellationToken,
    ) -> Result<Coordinator, SchedError> {
        let (self_tx, loopback) = mpsc::channel::<Command>(4096);
        let mut c = Coordinator {
            me: config.me.to_string(),
            store: config.store.clone(),
            net: config.net.clone(),
            fetcher: config.fetcher.clone(),
            executor,
            jobs_tree: config.store.db_tree("sched_jobs")?,
            cache_tree: config.store.db_tree("sched_cache")?,
            advert: config.advert.subscribe(),
            ttl: config.advert_ttl,
            jobs: HashMap::new(),
            done: BTreeMap::new(),
            table: Table::new(TABLE_BYTES, TABLE_BYTES_PER_COORDINATOR),
            faults,
            unflushed: Vec::new(),
            flushing: false,
            peers: Vec::new(),
            peers_at: None,
            dirty: Vec::new(),
            waiters: HashMap::new(),
            spread: 0,
            rx,
            self_tx,
            loopback,
            shutdown,
        };
        c.resume()?;
        Ok(c)
    }

    /// Loads the jobs this node was coordinating before a restart.
    fn resume(&mut self) -> Result<(), SchedError> {
        let mut resumed = 0;
        for kv in self.jobs_tree.iter() {
            let (_, v) = kv.map_err(crate::store::StoreError::from)?;
            let rec = match JobRecord::from_bytes(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable job record");
                    continue;
                }
            };
            if rec.status.state.is_terminal() {
                self.done.insert(rec.status.id.clone(), ());
            }
            let id = rec.status.id.clone();
            let terminal = rec.status.state.is_terminal();
            // the deadline holds across the restart: one already past ends
            // the attempt on the first tick
            let deadline_ms = rec.deadline_ms(deadline_grace_ms);
            let mut entry = Entry::new(rec.status, rec.submission, rec.assignment);
            if entry.claimed_by().is_some() {
                entry.deadline_ms = deadline_ms;
                entry.deadline = deadline_ms
                    .map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(now_ms())));
                // the claim is as old as the restart, for reconciliation
                entry.claimed_at = Some(Instant::now());
            }
            // an executor that does not show up within a TTL is lost
            entry.executor_missing_since = Some(Instant::now());
            self.jobs.insert(id, entry);
            if !terminal {
                resumed += 1;
            }
        }
        self.evict_done();
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resumed tracking unfinished jobs");
        }
        Ok(())
    }

    pub(crate) async fn run(mut self) {
        // the loop's own sender, for tasks that report back
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gossip = tokio::time::interval(GOSSIP_EVERY);
        gossip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers_refresh = tokio::time::interval(Duration::from_millis(250));
        peers_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.handle(cmd).await,
                Some(cmd) = self.loopback.recv() => self.handle(cmd).await,
                _ = peers_refresh.tick() => self.refresh_peers().await,
                _ = tick.tick() => self.tick(),
                _ = gossip.tick() => self.flush_gossip().await,
            }
            self.start_flush();
        }
        self.flush_gossip().await;
        if self.jobs_tree.flush().is_ok() {
            for send in self.unflushed.drain(..) {
                send();
            }
        }
    }

    /// Makes the job tree durable, then sends the replies waiting on it
    /// (submissions and final reports): one flush for all that came in
    /// meanwhile.
    fn start_flush(&mut self) {
        if self.flushing || self.unflushed.is_empty() {
            return;
        }
        self.flushing = true;
        let waiting = std::mem::take(&mut self.unflushed);
        let tree = self.jobs_tree.clone();
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            match tree.flush_async().await {
                Ok(_) => {
                    for send in waiting {
                        send();
                    }
                }
                Err(error) => {
                    // unacknowledged: an executor sends its report again, a
                    // submitter sees its request fail
                    tracing::error!(%error, "cannot flush the job records; submissions and final reports not acknowledged");
                }
            }
            let _ = tx.send(Command::Flushed).await;
        });
    }

    async fn refresh_peers(&mut self) {
        if let Ok(p) = self.net.peers().await {
            self.peers = p;
            self.peers_at = Some(Instant::now());
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                submission,
                reply: r,
            } => {
                // place against a fresh view of the mesh
                if self
                    .peers_at
                    .is_none_or(|t| t.elapsed() > Duration::from_millis(100))
                {
                    self.refresh_peers().await;
                }
                match self.submit(submission) {
                    // acknowledged once its record is on disk
                    Ok(status) => self.unflushed.push(Box::new(move || reply(r, Ok(status)))),
                    Err(e) => reply(r, Err(e)),
                }
            }
            Command::Status { job, reply: r } => {
                let found = match self.jobs.get(&job) {
                    Some(e) => Some((e.status.clone(), true)),
                    None => self.table.get(&job).cloned().map(|s| (s, false)),
                };
                reply(r, found);
            }
            Command::Wait { job, reply: r } => {
                let current = self
                    .jobs
                    .get(&job)
                    .map(|e| e.status.clone())
                    .or_else(|| self.table.get(&job).cloned());
                match current {
                    Some(s) if s.state.is_terminal() => reply(r, Some(s)),
                    Some(_) => self.waiters.entry(job).or_default().push(r),
                    None => reply(r, None),
                }
            }
            Command::List { reply: r } => {
                let mut all: Vec<JobStatus> =
                    self.jobs.values().map(|e| e.status.clone()).collect();
                all.extend(self.table.values().cloned());
                all.sort_by(|a, b| b.id.cmp(&a.id));
                reply(r, all);
            }
            Command::Cancel { job, reply: r } => {
                let result = self.cancel(&job);
                reply(r, result);
            }
            Command::Claim {
                peer,
                job,
                attempt,
                reply: r,
            } => {
                let response = self.claim(&peer, &job, attempt);
                if matches!(response, Response::Assignment(_))
                    && Faults::take(&self.faults.drop_claim_replies)
                {
                    tracing::warn!(job = %job, %peer, "fault: claim reply dropped");
                    drop(r);
                } else {
                    reply(r, response);
                }
            }
            Command::Update {
                peer,
                job,
                attempt,
                state,
                reason,
                result,
                reply: r,
            } => {
                let (response, durable) = self.update(&peer, &job, attempt, state, reason, result);
                if durable {
                    // a terminal state is acknowledged once it is on disk
                    self.unflushed.push(Box::new(move || reply(r, response)));
                } else {
                    reply(r, response);
                }
            }
            Command::Gossip { source, data } => self.merge_gossip(source, &data),
            Command::PeerUp => {
                // pending jobs may fit the newcomer
                for e in self.jobs.values_mut() {
                    if e.status.state == JobState::Pending && e.outstanding == 0 {
                        e.tried.clear();
                        e.next_try = Instant::now();
                    }
                }
            }
            Command::PeerGone(peer) => {
                self.peers.retain(|p| p.peer_id.to_string() != peer);
                let lost: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|(_, e)| e.claimed_by() == Some(peer.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in lost {
                    self.attempt_lost(&id, format!("executor {peer} lost (its advert expired)"));
                }
                for e in self.jobs.values_mut() {
                    e.reserved.remove(&peer);
                }
            }
            Command::Reserved {
                job,
                attempt,
                peer,
                ok,
                why,
            } => self.reserved(&job, attempt, peer, ok, why),
            Command::Flushed => self.flushing = false,
            Command::CacheRecord { key, reply: r } => {
                reply(r, self.cached(&key).map(|rec| rec.job));
            }
            Command::CacheChecked { job, hit, found } => self.cache_checked(&job, hit, found),
            Command::Held { job, attempt, held } => {
                if let Some(e) = self.jobs.get_mut(&job)
                    && e.status.attempt == attempt
                {
                    e.held = Some(held.into_iter().collect());
                    e.asking_held = false;
                    e.next_try = Instant::now();
                    self.try_place(&job);
                }
            }
        }
    }

    // ---- submission --------------------------------------------------------

    fn resolve(&self, r: &weft_protocol::ArtifactRef, what: &str) -> Result<Hash, SchedError> {
        self.store
            .resolve(r)
            .map_err(|e| SchedError::BadSpec(format!("{what}: {e}")))
    }

    fn submit(&mut self, submission: Submission) -> Result<JobStatus, SchedError> {
        let spec: &JobSpec = &submission.spec;
        let s = &spec.spec;
        let (program, executor) = match &s.task {
            job::Task::Wasm(w) => (
                Program::Wasm {
                    module: self.resolve(&w.module, "spec.task.wasm.module")?,
                    args: w.args.iter().map(|a| a.as_str().to_string()).collect(),
                    env: w
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                        .collect(),
                },
                ExecutorKind::Wasm,
            ),
            job::Task::Container(c) => (
                Program::Container {
                    image: self.resolve(&c.image, "spec.task.container.image")?,
                    command: c.command.iter().map(|a| a.as_str().to_string()).collect(),
                    args: c.args.iter().map(|a| a.as_str().to_string()).collect(),
                    env: c
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                        .collect(),
                    workdir: c.workdir.as_ref().map(|w| w.as_str().to_string()),
                },
                ExecutorKind::Container,
            ),
        };
        let mut inputs = Vec::new();
        for (i, input) in s.inputs.iter().enumerate() {
            let id = self.resolve(&input.from, &format!("spec.inputs[{i}].from"))?;
            inputs.push((id, input.path.as_str().to_string()));
        }
        let outputs: Vec<(String, Option<weft_protocol::TagName>)> = s
            .outputs
            .iter()
            .map(|o| (o.path.as_str().to_string(), o.tag.clone()))
            .collect();
        let needs = Needs {
            executor,
            cpu_millis: s.resources.cpu.map_or(DEFAULT_CPU_MILLIS, |c| c.millis()),
            memory_bytes: s.resources.memory.map_or(
                match executor {
                    ExecutorKind::Wasm => DEFAULT_WASM_MEMORY,
                    ExecutorKind::Container => DEFAULT_CONTAINER_MEMORY,
                },
                |m| m.bytes(),
            ),
            gpu: s.resources.gpu.clone(),
        };
        let metrics_file = s
            .metrics
            .as_ref()
            .map_or(DEFAULT_METRICS_FILE, |m| m.as_str())
            .to_string();
        let key = cache_key(&program, &inputs, &outputs, &metrics_file);
        let now = now_ms();
        let id = JobId::new(now, rand::random());
        let assignment = Assignment {
            job: id.clone(),
            attempt: 0,
            name: spec.name().to_string(),
            program,
            inputs,
            outputs,
            needs,
            timeout_ms: s
                .timeout
                .map_or(DEFAULT_TIMEOUT, |t| t.duration())
                .as_millis() as u64,
            cache_key: key,
            metrics: Some(metrics_file),
        };
        let mut status = JobStatus {
            id: id.clone(),
            name: spec.name().to_string(),
            coordinator: self.me.clone(),
            state: JobState::Pending,
            attempt: 1,
            node: None,
            reason: Some("placing".into()),
            result: None,
            cache_key: key,
            history: vec![Transition {
                state: JobState::Pending,
                at_ms: now,
                attempt: 1,
                node: None,
                reason: None,
            }],
            created_ms: now,
            updated_ms: now,
            revision: 1,
        };
        // memoized: the same task on the same inputs succeeded before;
        // used at once when it has no outputs, else once they are found
        let hit = if s.cache { self.cached(&key) } else { None };
        let mut check = None;
        let mut hit_executor = None;
        if let Some(hit) = hit {
            if hit.result.outputs.is_empty() {
                answer_from_cache(&mut status, &hit, now);
                self.apply_output_tags(&assignment, &hit.result);
                hit_executor = Some(hit.executor.clone());
            } else {
                status.reason = Some("checking that the cached outputs still exist".into());
                check = Some(hit);
            }
        }
        let mut entry = Entry::new(status.clone(), submission, assignment);
        entry.checking_cache = check.is_some();
        entry.hit_executor = hit_executor;
        let terminal = entry.status.state.is_terminal();
        runs::started(&self.store, &entry.status, &entry.submission);
        self.jobs.insert(id.clone(), entry);
        self.persist(&id);
        if terminal {
            self.finished(&id);
        } else if let Some(hit) = check {
            self.check_cache(&id, hit);
        } else {
            self.try_place(&id);
        }
        tracing::debug!(job = %id, name = %status.name, cached = terminal, "job submitted");
        Ok(self
            .jobs
            .get(&id)
            .map(|e| e.status.clone())
            .unwrap_or(status))
    }

    /// The cache record of `key`; an unsigned (version 1) or unreadable
    /// one is dropped.
    fn cached(&self, key: &Hash) -> Option<CacheRecord> {
        let bytes = self.cache_tree.get(key.as_bytes()).ok()??;
        match CacheRecord::load(&bytes) {
            Ok(Some(rec)) => Some(rec),
            Ok(None) => {
                tracing::debug!(%key, "unsigned cache record (version 1) dropped");
                let _ = self.cache_tree.remove(key.as_bytes());
                None
            }
            Err(error) => {
                tracing::warn!(%key, %error, "unreadable cache record dropped");
                let _ = self.cache_tree.remove(key.as_bytes());
                None
            }
        }
    }

    /// Looks for a cache hit's outputs: here first, then at every live
    /// peer (`Has`, closure complete), within [`CACHE_CHECK_TIMEOUT`].
    fn check_cache(&self, id: &JobId, hit: CacheRecord) {
        let fetcher = self.fetcher.clone();
        let me = self.me.clone();
        let peers: Vec<String> = self.peers.iter().map(|p| p.peer_id.to_string()).collect();
        let tx = self.self_tx.clone();
        let job = id.clone();
        let outputs: Vec<Hash> = hit.result.outputs.iter().map(|(_, h)| *h).collect();
        tokio::spawn(async move {
            let find = async {
                for h in outputs {
                    let here = fetcher.held(vec![me.clone()], vec![h]).await;
                    if here.iter().any(|(_, bytes)| *bytes > 0) {
                        continue;
                    }
                    let there = fetcher.held(peers.clone(), vec![h]).await;
                    if !there.iter().any(|(_, bytes)| *bytes > 0) {
                        tracing::info!(job = %job, output = %h, "a cached output exists nowhere: the job runs");
                        return false;
                    }
                }
                true
            };
            let found = tokio::time::timeout(CACHE_CHECK_TIMEOUT, find)
                .await
                .unwrap_or(false);
            let _ = tx.send(Command::CacheChecked { job, hit, found }).await;
        });
    }

    /// A cache hit was checked: answer from it, or drop it and run the job.
    fn cache_checked(&mut self, id: &JobId, hit: CacheRecord, found: bool) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        if !e.checking_cache {
            return;
        }
        e.checking_cache = false;
        if e.status.state != JobState::Pending {
            return;
        }
        if found {
            let assignment = e.assignment.clone();
            e.hit_executor = Some(hit.executor.clone());
            answer_from_cache(&mut e.status, &hit, now_ms());
            self.apply_output_tags(&assignment, &hit.result);
            self.finished(id);
            return;
        }
        // stale: forget it (unless replaced meanwhile) and run the job
        if self
            .cached(&hit.key)
            .is_some_and(|r| r.job == hit.job && r.attempt == hit.attempt)
        {
            let _ = self.cache_tree.remove(hit.key.as_bytes());
        }
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        e.status.reason = Some("placing (the cached outputs no longer exist)".into());
        e.next_try = Instant::now();
        self.touch(id);
        self.try_place(id);
    }

    /// Keeps a result as the cache record of its key, replacing an older one.
    fn record_cache(&self, rec: &CacheRecord) {
        let bytes = match rec.to_bytes() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "cannot record a cached result");
                return;
            }
        };
        if let Err(error) = self.cache_tree.insert(rec.key.as_bytes(), bytes) {
            tracing::warn!(%error, "cannot record a cached result");
        }
    }

    /// Points the spec's output tags at a reused result's outputs.
    fn apply_output_tags(&self, assignment: &Assignment, result: &JobResult) {
        for (path, tag) in &assignment.outputs {
            let Some(tag) = tag else { continue };
            if let Some((_, id)) = result.outputs.iter().find(|(p, _)| p == path)
                && let Err(e) = self.store.set_tag(tag, Some(*id))
            {
                tracing::warn!(%tag, error = %e, "cannot tag a cached output");
            }
        }
    }

    // ---- placement -----------------------------------------------------------

    fn own_advert(&self) -> NodeAdvert {
        let mut a = self.advert.borrow().clone();
        a.peer_id = self.me.clone();
        a
    }

    fn try_place(&mut self, id: &JobId) {
        let own = self.own_advert();
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        if e.status.state != JobState::Pending
            || e.outstanding > 0
            || !e.reserved.is_empty()
            || e.checking_cache
        {
            return;
        }
        let adverts: Vec<&NodeAdvert> = if e.submission.local {
            vec![&own]
        } else {
            std::iter::once(&own)
                .chain(self.peers.iter().map(|p| &p.advert))
                .collect()
        };
        let constraints = &e.submission.spec.spec.constraints;
        // jobs with inputs: learn where the inputs are first
        if !e.assignment.inputs.is_empty() && e.held.is_none() {
            if !e.asking_held {
                e.asking_held = true;
                let peers: Vec<String> = adverts
                    .iter()
                    .filter(|a| placement::capable(a, &e.assignment.needs, constraints))
                    .map(|a| a.peer_id.clone())
                    .collect();
                let hashes: Vec<Hash> = e.assignment.inputs.iter().map(|(h, _)| *h).collect();
                let fetcher = self.fetcher.clone();
                let tx = self.self_tx.clone();
                let (job, attempt) = (id.clone(), e.status.attempt);
                tokio::spawn(async move {
                    let held =
                        tokio::time::timeout(super::HELD_TIMEOUT * 2, fetcher.held(peers, hashes))
                            .await
                            .unwrap_or_default();
                    let _ = tx.send(Command::Held { job, attempt, held }).await;
                });
            }
            return;
        }
        let held = e.held.clone().unwrap_or_default();
        let ranked = placement::rank(
            adverts.iter().copied(),
            &e.assignment.needs,
            constraints,
            &|p| held.get(p).copied().unwrap_or(0),
        );
        if ranked.is_empty() {
            let reason =
                placement::explain(adverts.iter().copied(), &e.assignment.needs, constraints);
            e.next_try = Instant::now() + Duration::from_secs(1);
            if e.status.reason.as_deref() != Some(reason.as_str()) {
                e.status.reason = Some(reason);
                self.touch(id);
            }
            return;
        }
        self.spread = self.spread.wrapping_add(1);
        let tried = e.tried.clone();
        let probes = placement::probe_set(&ranked, &|p| tried.contains(p), self.spread);
        tracing::debug!(
            job = %id,
            held = ?held,
            ranked = ?ranked.iter().map(|c| (&c.peer, c.local_bytes, c.load)).collect::<Vec<_>>(),
            ?probes,
            "placing"
        );
        if probes.is_empty() {
            // everyone capable refused this round: start over shortly
            e.tried.clear();
            e.next_try = Instant::now() + Duration::from_millis(200);
            let reason = format!(
                "waiting: the {} capable {} busy",
                ranked.len(),
                if ranked.len() == 1 {
                    "peer is"
                } else {
                    "peers are"
                }
            );
            if e.status.reason.as_deref() != Some(reason.as_str()) {
                e.status.reason = Some(reason);
                self.touch(id);
            }
            return;
        }
        let attempt = e.status.attempt;
        let needs = e.assignment.needs.clone();
        for peer in probes {
            e.tried.insert(peer.clone());
            e.outstanding += 1;
            let tx = self.self_tx.clone();
            let job = id.clone();
            let needs = needs.clone();
            if peer == self.me {
                let exec = self.executor.clone();
                let me = self.me.clone();
                tokio::spawn(async move {
                    let r = exec.reserve(me.clone(), job.clone(), attempt, needs).await;
                    report_reserved(tx, job, attempt, me, r).await;
                });
            } else {
                let net = self.net.clone();
                let Ok(pid) = peer.parse::<PeerId>() else {
                    e.outstanding -= 1;
                    continue;
                };
                tokio::spawn(async move {
                    let r = match net
                        .request(
                            pid,
                            Request::Reserve {
                                job: job.clone(),
                                attempt,
                                needs: Box::new(needs),
                            },
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => err(ErrorCode::Busy, e.to_string()),
                    };
                    report_reserved(tx, job, attempt, peer, r).await;
                });
            }
        }
    }

    fn reserved(&mut self, id: &JobId, attempt: u32, peer: String, ok: bool, why: Option<String>) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        if e.status.attempt != attempt {
            return;
        }
        e.outstanding = e.outstanding.saturating_sub(1);
        if ok {
            if e.status.state == JobState::Pending {
                e.reserved.insert(peer);
            } else {
                // placed meanwhile, or over: free it at once
                self.release(vec![peer], id, attempt);
            }
        } else {
            tracing::debug!(job = %id, %peer, why = why.as_deref().unwrap_or(""), "reservation refused");
            if e.outstanding == 0 && e.reserved.is_empty() && e.status.state == JobState::Pending {
                self.try_place(id);
            }
        }
    }

    fn release(&self, peers: Vec<String>, job: &JobId, attempt: u32) {
        for peer in peers {
            if peer == self.me {
                self.executor.release(job.clone(), attempt);
            } else if let Ok(pid) = peer.parse::<PeerId>() {
                let net = self.net.clone();
                let job = job.clone();
                tokio::spawn(async move {
                    let _ = net.request(pid, Request::Release { job, attempt }).await;
                });
            }
        }
    }

    fn claim(&mut self, peer: &str, id: &JobId, attempt: u32) -> Response {
        let Some(e) = self.jobs.get_mut(id) else {
            return err(ErrorCode::NotFound, "no such job");
        };
        if e.status.state != JobState::Pending || e.status.attempt != attempt {
            return err(ErrorCode::NotFound, "placed elsewhere or over");
        }
        // only a node asked to reserve this attempt may take it
        if !e.tried.contains(peer) && !e.reserved.contains(peer) {
            tracing::warn!(job = %id, %peer, attempt, "claim refused: the peer was not asked to reserve this attempt");
            return err(
                ErrorCode::NotFound,
                format!("{peer} holds no reservation for attempt {attempt} of job {id}"),
            );
        }
        let now = now_ms();
        e.status.state = JobState::Placed;
        e.status.node = Some(peer.to_string());
        e.status.reason = None;
        e.status.history.push(Transition {
            state: JobState::Placed,
            at_ms: now,
            attempt,
            node: Some(peer.to_string()),
            reason: None,
        });
        let timeout = e.assignment.timeout_ms;
        let window = timeout.saturating_add(deadline_grace_ms(timeout));
        e.deadline = Some(Instant::now() + Duration::from_millis(window));
        e.deadline_ms = Some(now.saturating_add(window));
        e.executor_missing_since = None;
        e.claimed_at = Some(Instant::now());
        e.unlisted = None;
        e.reserved.remove(peer);
        let others: Vec<String> = e.reserved.drain().collect();
        let mut assignment = e.assignment.clone();
        assignment.attempt = attempt;
        self.release(others, id, attempt);
        self.touch(id);
        tracing::debug!(job = %id, %peer, attempt, "placed");
        Response::Assignment(Box::new(assignment))
    }

    /// An executor's report on an attempt. Returns the answer and whether
    /// it must wait until the job record is on disk (a final report).
    fn update(
        &mut self,
        peer: &str,
        id: &JobId,
        attempt: u32,
        state: JobState,
        reason: Option<String>,
        result: Option<JobResult>,
    ) -> (Response, bool) {
        let Some(e) = self.jobs.get_mut(id) else {
            return (err(ErrorCode::NotFound, "no such job"), false);
        };
        let current = e.status.attempt == attempt && e.claimed_by() == Some(peer);
        // only the node that claimed an attempt reports on it
        if !current && !e.executed(peer, attempt) {
            tracing::warn!(
                job = %id,
                %peer,
                attempt,
                state = %state,
                "report refused: the peer is not the executor of this attempt"
            );
            return (
                err(
                    ErrorCode::BadRequest,
                    format!(
                        "{peer} is not the executor of attempt {attempt} of job {id}: only the node that claimed an attempt reports on it"
                    ),
                ),
                false,
            );
        }
        if e.status.state.is_terminal() {
            // the result is recorded once; a repeated final report from the
            // executor of the last attempt (its ack was lost) is acked again
            return if e.status.attempt == attempt
                && e.status.node.as_deref() == Some(peer)
                && state.is_terminal()
            {
                (Response::Ack, true)
            } else {
                (err(ErrorCode::NotFound, "the job is over"), false)
            };
        }
        if !current {
            // a slow earlier attempt of this executor that succeeded still
            // counts, once
            let success =
                state == JobState::Succeeded && result.as_ref().is_some_and(|r| r.succeeded());
            if !success {
                return (
                    err(ErrorCode::NotFound, "this attempt is no longer current"),
                    false,
                );
            }
            if let Some(running) = e.claimed_by().map(str::to_string) {
                let current_attempt = e.status.attempt;
                self.cancel_task(&running, id, current_attempt);
            }
        }
        let Some(e) = self.jobs.get_mut(id) else {
            return (err(ErrorCode::NotFound, "no such job"), false);
        };
        let now = now_ms();
        if !state.is_terminal() {
            e.status.state = state;
            e.status.reason = reason.clone();
            e.status.history.push(Transition {
                state,
                at_ms: now,
                attempt,
                node: Some(peer.to_string()),
                reason,
            });
            self.touch(id);
            return (Response::Ack, false);
        }
        let mut result = result.unwrap_or_default();
        let succeeded = state == JobState::Succeeded && result.succeeded();
        // only the coordinator cancels a job, and a cancelled job is over
        // (answered above): an executor that stopped the task by itself did
        // so because its node is stopping, a failure of the node
        let node_stopped = state == JobState::Cancelled;
        if !succeeded
            && (node_stopped || retryable(&result))
            && attempt <= e.submission.spec.spec.retries
        {
            let why = if node_stopped {
                format!(
                    "attempt {attempt} on {peer} was lost: the executor stopped the task (its node is stopping)"
                )
            } else {
                let why = reason.unwrap_or_else(|| "the executor could not run it".into());
                format!("attempt {attempt} on {peer} failed: {why}")
            };
            self.retry(id, why);
            return (Response::Ack, true);
        }
        let e = match self.jobs.get_mut(id) {
            Some(e) => e,
            None => return (Response::Ack, false),
        };
        e.status.state = if succeeded {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        e.status.attempt = attempt;
        e.status.node = Some(peer.to_string());
        e.status.reason = if succeeded {
            None
        } else if node_stopped {
            Some(format!(
                "the executor {peer} stopped the task (its node is stopping) and no retries are left"
            ))
        } else {
            Some(reason.unwrap_or_else(|| describe_failure(&result)))
        };
        e.status.history.push(Transition {
            state: e.status.state,
            at_ms: now,
            attempt,
            node: Some(peer.to_string()),
            reason: e.status.reason.clone(),
        });
        result.cached = false;
        let mut record = None;
        if succeeded {
            // the executor's signature makes the result a cache record here
            // and, once gossiped, on every node
            match CacheRecord::signed(
                e.status.cache_key,
                id.clone(),
                attempt,
                self.me.clone(),
                peer.to_string(),
                result.clone(),
                now,
            ) {
                Ok(rec) => record = Some(rec),
                Err(error) => {
                    tracing::warn!(job = %id, %peer, %error, "result not signed by its executor: not cached");
                    result.signature = None;
                }
            }
        } else {
            result.signature = None;
        }
        if let Some(rec) = record
            && e.submission.spec.spec.cache
        {
            self.record_cache(&rec);
        }
        let Some(e) = self.jobs.get_mut(id) else {
            return (Response::Ack, false);
        };
        e.status.result = Some(result);
        self.finished(id);
        (Response::Ack, true)
    }

    /// The attempt's executor is gone: place the job again or give up.
    fn attempt_lost(&mut self, id: &JobId, why: String) {
        let Some(e) = self.jobs.get(id) else { return };
        if e.status.state.is_terminal() {
            return;
        }
        tracing::warn!(job = %id, attempt = e.status.attempt, reason = %why, "attempt lost");
        if let Some(node) = e.claimed_by().map(str::to_string) {
            // in case it still runs there: its result would no longer count
            let attempt = e.status.attempt;
            self.cancel_task(&node, id, attempt);
        }
        let Some(e) = self.jobs.get(id) else { return };
        if e.status.attempt <= e.submission.spec.spec.retries {
            self.retry(id, why);
        } else {
            self.fail(id, format!("{why}; no retries left"));
        }
    }

    fn retry(&mut self, id: &JobId, why: String) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        let now = now_ms();
        let old = e.status.attempt;
        e.status.history.push(Transition {
            state: JobState::Failed,
            at_ms: now,
            attempt: old,
            node: e.status.node.clone(),
            reason: Some(why.clone()),
        });
        e.status.attempt = old + 1;
        e.status.state = JobState::Pending;
        e.status.node = None;
        e.status.reason = Some(format!("retrying ({why})"));
        e.status.history.push(Transition {
            state: JobState::Pending,
            at_ms: now,
            attempt: old + 1,
            node: None,
            reason: None,
        });
        let stale: Vec<String> = e.reserved.drain().collect();
        e.tried.clear();
        e.held = None;
        e.outstanding = 0;
        e.deadline = None;
        e.deadline_ms = None;
        e.executor_missing_since = None;
        e.claimed_at = None;
        e.unlisted = None;
        e.next_try = Instant::now() + backoff(old);
        self.release(stale, id, old);
        self.touch(id);
    }

    fn fail(&mut self, id: &JobId, why: String) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        e.status.state = JobState::Failed;
        e.status.reason = Some(why.clone());
        e.status.history.push(Transition {
            state: JobState::Failed,
            at_ms: now_ms(),
            attempt: e.status.attempt,
            node: e.status.node.clone(),
            reason: Some(why),
        });
        self.finished(id);
    }

    fn cancel_task(&self, peer: &str, job: &JobId, attempt: u32) {
        if peer == self.me {
            self.executor.cancel(job.clone(), attempt);
        } else if let Ok(pid) = peer.parse::<PeerId>() {
            let net = self.net.clone();
            let job = job.clone();
            tokio::spawn(async move {
                if let Err(e) = net.request(pid, Request::CancelTask { job, attempt }).await {
                    tracing::debug!(error = %e, "cancel not delivered");
                }
            });
        }
    }

    fn cancel(&mut self, id: &JobId) -> Result<JobStatus, SchedError> {
        let Some(e) = self.jobs.get_mut(id) else {
            return Err(SchedError::NotFound(id.clone()));
        };
        if e.status.state.is_terminal() {
            return Ok(e.status.clone());
        }
        let attempt = e.status.attempt;
        let executor = e.claimed_by().map(str::to_string);
        let reserved: Vec<String> = e.reserved.drain().collect();
        e.status.state = JobState::Cancelled;
        e.status.reason = Some("cancelled by request".into());
        e.status.history.push(Transition {
            state: JobState::Cancelled,
            at_ms: now_ms(),
            attempt,
            node: executor.clone(),
            reason: e.status.reason.clone(),
        });
        if let Some(peer) = executor {
            self.cancel_task(&peer, id, attempt);
        }
        self.release(reserved, id, attempt);
        self.finished(id);
        tracing::info!(job = %id, "job cancelled");
        self.jobs
            .get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| SchedError::NotFound(id.clone()))
    }

    // ---- bookkeeping ---------------------------------------------------------

    fn tick(&mut self) {
        let now = Instant::now();
        let live: HashMap<String, &NodeAdvert> = self
            .peers
            .iter()
            .map(|p| (p.peer_id.to_string(), &p.advert))
            .collect();
        // an attempt placed this long ago must be in its executor's adverts
        let grace = self.ttl.max(Duration::from_secs(1));
        let mut place = Vec::new();
        let mut lost = Vec::new();
        let mut late = Vec::new();
        for (id, e) in self.jobs.iter_mut() {
            match e.status.state {
                JobState::Pending
                    if e.outstanding == 0
                        && e.reserved.is_empty()
                        && !e.checking_cache
                        && e.next_try <= now =>
                {
                    place.push(id.clone());
                }
                JobState::Pending => {}
                s if !s.is_terminal() => {
                    if let Some(node) = e.claimed_by().map(str::to_string)
                        && node != self.me
                    {
                        if let Some(advert) = live.get(&node) {
                            e.executor_missing_since = None;
                            if e.claimed_at.is_some_and(|t| now.duration_since(t) > grace)
                                && reconcile(e, id, advert)
                            {
                                lost.push((
                                    id.clone(),
                                    format!("{node} (its adverts no longer list the attempt)"),
                                ));
                            }
                        } else {
                            let since = *e.executor_missing_since.get_or_insert(now);
                            if now.duration_since(since) > self.ttl {
                                lost.push((id.clone(), node));
                            }
                        }
                    } else if e.claimed_by() == Some(self.me.as_str())
                        && e.executor_missing_since.is_some()
                    {
                        // resumed after a restart: this node's own executor
                        // lost the task with the process
                        lost.push((id.clone(), self.me.clone()));
                    }
                    if e.deadline.is_some_and(|d| d <= now) {
                        late.push(id.clone());
                    }
                }
                _ => {}
            }
        }
        for (id, node) in lost {
            self.attempt_lost(&id, format!("executor {node} lost"));
        }
        for id in late {
            if let Some(e) = self.jobs.get(&id)
                && let Some(node) = e.claimed_by().map(str::to_string)
            {
                let attempt = e.status.attempt;
                self.cancel_task(&node, &id, attempt);
                self.fail(&id, format!("no result from {node} by the deadline"));
            }
        }
        for id in place {
            self.try_place(&id);
        }
    }

    /// Marks a job changed: new revision, persisted, queued for gossip.
    fn touch(&mut self, id: &JobId) {
        if let Some(e) = self.jobs.get_mut(id) {
            e.status.revision += 1;
            e.status.updated_ms = now_ms();
            let status = e.status.clone();
            self.persist(id);
            self.dirty.push(id.clone());
            self.notify(&status);
        }
    }

    fn finished(&mut self, id: &JobId) {
        self.touch(id);
        self.record_run_end(id);
        if let Some(e) = self.jobs.get(id) {
            tracing::debug!(job = %id, state = %e.status.state, attempt = e.status.attempt, node = e.status.node.as_deref().unwrap_or("-"), "job finished");
        }
        self.done.insert(id.clone(), ());
        self.evict_done();
    }

    /// Writes the end of a finished job's run and, for a success, the
    /// lineage of its outputs (once).
    fn record_run_end(&mut self, id: &JobId) {
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        if e.run_ended || !e.status.state.is_terminal() {
            return;
        }
        e.run_ended = true;
        runs::ended(&self.store, &e.status);
        if e.status.state == JobState::Succeeded {
            let node = e.status.node.clone().or_else(|| e.hit_executor.clone());
            match node {
                Some(node) => {
                    runs::lineage(&self.store, &e.status, &e.submission, &e.assignment, &node)
                }
                None => tracing::debug!(job = %id, "no executor known: no lineage written"),
            }
        }
    }

    fn evict_done(&mut self) {
        while self.done.len() > DONE_CAP {
            if let Some((old, ())) = self.done.pop_first() {
                self.jobs.remove(&old);
            }
        }
    }

    fn persist(&self, id: &JobId) {
        let Some(e) = self.jobs.get(id) else { return };
        let rec = JobRecord {
            v: <JobRecord as Record>::VERSION,
            status: e.status.clone(),
            submission: e.submission.clone(),
            assignment: e.assignment.clone(),
            deadline_ms: e.deadline_ms,
        };
        let persisted = rec.to_bytes().map_err(|e| e.to_string()).and_then(|bytes| {
            self.jobs_tree
                .insert(id.as_str().as_bytes(), bytes)
                .map_err(|e| e.to_string())
        });
        if let Err(error) = persisted {
            tracing::error!(job = %id, %error, "cannot persist job");
        }
    }

    fn notify(&mut self, status: &JobStatus) {
        if status.state.is_terminal()
            && let Some(ws) = self.waiters.remove(&status.id)
        {
            for w in ws {
                let _ = w.send(Some(status.clone()));
            }
        }
    }

    async fn flush_gossip(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut ids = std::mem::take(&mut self.dirty);
        ids.sort();
        ids.dedup();
        let statuses: Vec<JobStatus> = ids
            .iter()
            .filter_map(|id| self.jobs.get(id).map(|e| e.status.clone()))
            // a status peers would refuse is not sent: it would take its
            // whole batch down with it
            .filter(|s| match weft_protocol::bounds::Bounded::check_bounds(s) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(job = %s.id, %error, "job status over the gossip bounds not gossiped");
                    false
                }
            })
            .collect();
        for chunk in statuses.chunks(GOSSIP_BATCH) {
            let msg = JobGossip {
                statuses: chunk.to_vec(),
            };
            match msg.encode() {
                Ok(bytes) => {
                    if let Err(e) = self.net.publish(Topic::Jobs, bytes).await {
                        tracing::debug!(error = %e, "job gossip not sent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode job gossip"),
            }
        }
    }

    fn merge_gossip(&mut self, source: PeerId, data: &[u8]) {
        let msg = match JobGossip::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%source, error = %e, "malformed job gossip dropped");
                return;
            }
        };
        let source = source.to_string();
        for status in msg.statuses {
            if status.coordinator == self.me || status.coordinator != source {
                // only a job's coordinator speaks for it
                tracing::debug!(%source, job = %status.id, coordinator = %status.coordinator, "job status from a node that does not coordinate it dropped");
                continue;
            }
            if self.jobs.contains_key(&status.id) {
                tracing::warn!(%source, job = %status.id, "a peer claims a job this node coordinates; dropped");
                continue;
            }
            let newer = match self.table.get(&status.id) {
                // a job id belongs to the coordinator first heard of for it
                Some(old) if old.coordinator != status.coordinator => {
                    tracing::warn!(%source, job = %status.id, coordinator = %old.coordinator, "a peer claims another coordinator's job; dropped");
                    continue;
                }
                Some(old) => old.revision < status.revision,
                None => true,
            };
            if !newer {
                continue;
            }
            self.learn_cache_record(&status);
            self.notify(&status);
            self.table.insert(status);
        }
    }

    /// Keeps the result of a succeeded job heard from its coordinator as a
    /// cache record when its executor's signature verifies; a newer record
    /// replaces an older one.
    fn learn_cache_record(&self, status: &JobStatus) {
        let Some(result) = &status.result else {
            return;
        };
        if status.state != JobState::Succeeded || result.cached || !result.succeeded() {
            return;
        }
        let Some(executor) = status.node.clone() else {
            return;
        };
        if let Some(old) = self.cached(&status.cache_key)
            && (old.job == status.id || old.at_ms >= status.updated_ms)
        {
            return;
        }
        match CacheRecord::signed(
            status.cache_key,
            status.id.clone(),
            status.attempt,
            status.coordinator.clone(),
            executor,
            result.clone(),
            status.updated_ms,
        ) {
            Ok(mut rec) => {
                // ordered against other records by the coordinator's clock,
                // never ahead of this node's
                rec.at_ms = rec.at_ms.min(now_ms());
                self.record_cache(&rec);
            }
            // from an older node: not a forgery, just not reusable
            Err(error @ CacheRecordError::Unsigned) => {
                tracing::debug!(job = %status.id, coordinator = %status.coordinator, %error, "cache record refused");
            }
            Err(error) => {
                tracing::warn!(
                    job = %status.id,
                    coordinator = %status.coordinator,
                    %error,
                    "cache record refused"
                );
            }
        }
    }
}

/// Checks a placed attempt against its executor's advert; true when
/// [`UNLISTED_ADVERTS`] adverts in a row (or the first of a restarted
/// executor) do not list it. An executor that does not list its attempts
/// (an older version) is never judged by them.
fn reconcile(e: &mut Entry, id: &JobId, advert: &NodeAdvert) -> bool {
    let Some(running) = &advert.running else {
        return false;
    };
    let attempt = e.status.attempt;
    if running.iter().any(|(j, a)| j == id && *a == attempt) {
        e.unlisted = None;
        return false;
    }
    let at = (advert.started_ms, advert.seq);
    match e.unlisted {
        None => {
            e.unlisted = Some(at);
            false
        }
        Some((started, seq)) => at.0 != started || at.1.saturating_sub(seq) + 1 >= UNLISTED_ADVERTS,
    }
}

/// Makes `status` a cache hit of `hit`.
fn answer_from_cache(status: &mut JobStatus, hit: &CacheRecord, now: u64) {
    let mut result = hit.result.clone();
    result.cached = true;
    result.signature = None;
    status.state = JobState::Succeeded;
    status.attempt = 0;
    status.reason = Some(format!("cached: same task and inputs as job {}", hit.job));
    status.result = Some(result);
    status.history.push(Transition {
        state: JobState::Succeeded,
        at_ms: now,
        attempt: 0,
        node: None,
        reason: status.reason.clone(),
    });
}

/// Whether a failed attempt may be tried again elsewhere: failures of the
/// node (fetching, I/O, missing runtime), not of the task itself.
fn retryable(result: &JobResult) -> bool {
    match &result.error {
        Some((class, _)) => matches!(class.as_str(), "io" | "runtime-missing" | "executor"),
        None => false,
    }
}

fn describe_failure(result: &JobResult) -> String {
    match (&result.error, result.exit_code) {
        (Some((class, message)), _) => format!("{class}: {message}"),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "failed".to_string(),
    }
}

async fn report_reserved(
    tx: mpsc::Sender<Command>,
    job: JobId,
    attempt: u32,
    peer: String,
    response: Response,
) {
    let (ok, why) = match response {
        Response::Reserved { .. } => (true, None),
        Response::Error { message, .. } => (false, Some(message)),
        other => (false, Some(format!("unexpected answer {other:?}"))),
    };
    let _ = tx
        .send(Command::Reserved {
            job,
            attempt,
            peer,
            ok,
            why,
        })
        .await;
}

impl CoordinatorHandle {
    pub(crate) async fn wait(
        &self,
        job: JobId,
        timeout: Duration,
    ) -> Result<JobStatus, SchedError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Wait {
                job: job.clone(),
                reply: tx,
            })
            .await
            .map_err(|_| SchedError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Some(s))) => Ok(s),
            Ok(Ok(None)) => Err(SchedError::NotFound(job)),
            Ok(Err(_)) => Err(SchedError::Stopped),
            Err(_) => match self.known(job.clone()).await? {
                Some((s, _)) => Ok(s),
                None => Err(SchedError::NotFound(job)),
            },
        }
    }
}

/// One status heard from another coordinator.
struct Heard {
    status: JobStatus,
    /// What it counts for against the table's bounds.
    bytes: usize,
    /// Order of receipt (the local clock of receipt, as a counter).
    seq: u64,
}

/// The statuses of other coordinators' jobs: bounded in bytes, overall and
/// per coordinator, evicting the oldest received first (never by id, which
/// the sender chooses).
#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Heard>,
    /// Receipt order → job, oldest first.
    ages: BTreeMap<u64, JobId>,
    /// Per coordinator: its bytes and its jobs by receipt order.
    by_coordinator: HashMap<String, (usize, BTreeMap<u64, JobId>)>,
    bytes: usize,
    next_seq: u64,
    max_bytes: usize,
    max_per_coordinator: usize,
}

impl Table {
    fn new(max_bytes: usize, max_per_coordinator: usize) -> Table {
        Table {
            max_bytes,
            max_per_coordinator,
            ..Table::default()
        }
    }

    fn get(&self, id: &JobId) -> Option<&JobStatus> {
        self.jobs.get(id).map(|h| &h.status)
    }

    fn values(&self) -> impl Iterator<Item = &JobStatus> {
        self.jobs.values().map(|h| &h.status)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.jobs.len()
    }

    /// What a status counts for.
    fn size_of(status: &JobStatus) -> usize {
        weft_protocol::encode(status, usize::MAX).map_or(usize::MAX / 4, |b| b.len())
            + TABLE_ENTRY_OVERHEAD
    }

    fn remove(&mut self, id: &JobId) -> Option<JobStatus> {
        let h = self.jobs.remove(id)?;
        self.ages.remove(&h.seq);
        self.bytes -= h.bytes;
        if let Some((bytes, ages)) = self.by_coordinator.get_mut(&h.status.coordinator) {
            *bytes -= h.bytes;
            ages.remove(&h.seq);
            if ages.is_empty() {
                self.by_coordinator.remove(&h.status.coordinator);
            }
        }
        Some(h.status)
    }

    /// Keeps `status` (replacing an older copy), then evicts the oldest
    /// entries of its coordinator and then of all until both bounds hold.
    fn insert(&mut self, status: JobStatus) {
        self.remove(&status.id);
        let bytes = Self::size_of(&status);
        let seq = self.next_seq;
        self.next_seq += 1;
        let coordinator = status.coordinator.clone();
        let id = status.id.clone();
        self.ages.insert(seq, id.clone());
        let (cbytes, cages) = self.by_coordinator.entry(coordinator.clone()).or_default();
        *cbytes += bytes;
        cages.insert(seq, id.clone());
        self.bytes += bytes;
        self.jobs.insert(id, Heard { status, bytes, seq });
        let mut evicted = 0usize;
        while let Some((cbytes, cages)) = self.by_coordinator.get(&coordinator)
            && *cbytes > self.max_per_coordinator
            && let Some((_, oldest)) = cages.first_key_value()
        {
            let oldest = oldest.clone();
            self.remove(&oldest);
            evicted += 1;
        }
        while self.bytes > self.max_bytes
            && let Some((_, oldest)) = self.ages.first_key_value()
        {
            let oldest = oldest.clone();
            self.remove(&oldest);
            evicted += 1;
        }
        if evicted > 0 {
            tracing::debug!(
                evicted,
                kept = self.jobs.len(),
                bytes = self.bytes,
                "job table full: oldest statuses evicted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: JobId, coordinator: &str, pad: usize) -> JobStatus {
        JobStatus {
            id,
            name: "x".repeat(pad),
            coordinator: coordinator.into(),
            state: JobState::Running,
            attempt: 1,
            node: None,
            reason: None,
            result: None,
            cache_key: Hash::EMPTY,
            history: Vec::new(),
            created_ms: 0,
            updated_ms: 0,
            revision: 1,
        }
    }

    fn entry(id: &JobId) -> Entry {
        let spec = JobSpec::from_yaml(
            "apiVersion: weft/v1\nkind: Job\nmetadata: {name: t}\nspec:\n  task:\n    wasm: {module: t:v1}\n",
        )
        .expect("spec");
        let mut s = status(id.clone(), "me", 1);
        s.node = Some("exec".into());
        s.state = JobState::Placed;
        Entry::new(
            s,
            Submission {
                spec,
                local: false,
                run: None,
            },
            Assignment {
                job: id.clone(),
                attempt: 1,
                name: "t".into(),
                program: Program::Wasm {
                    module: Hash::EMPTY,
                    args: Vec::new(),
                    env: Vec::new(),
                },
                inputs: Vec::new(),
                outputs: Vec::new(),
                needs: Needs {
                    executor: ExecutorKind::Wasm,
                    cpu_millis: 1,
                    memory_bytes: 1,
                    gpu: None,
                },
                timeout_ms: 10_000,
                cache_key: Hash::EMPTY,
                metrics: None,
            },
        )
    }

    #[test]
    fn the_table_is_bounded_in_bytes_per_coordinator_and_evicts_the_oldest_received() {
        let one = Table::size_of(&status(JobId::new(1, 0), "a", 1000));
        let mut t = Table::new(10 * one, 4 * one);
        // a flood from "a" with ids from the far future: only its 4 newest stay
        for n in 0..20 {
            t.insert(status(JobId::new(0xffff_ffff_ff00 + n, 0), "a", 1000));
        }
        assert_eq!(t.len(), 4);
        assert!(t.bytes <= 4 * one);
        for n in 16..20 {
            assert!(t.get(&JobId::new(0xffff_ffff_ff00 + n, 0)).is_some());
        }
        // others keep their share; past the total the oldest received goes,
        // whatever its id
        for n in 0..4 {
            t.insert(status(JobId::new(10 + n, 0), "b", 1000));
        }
        for n in 0..4 {
            t.insert(status(JobId::new(n, 0), "c", 1000));
        }
        assert!(t.bytes <= 10 * one, "{} > {}", t.bytes, 10 * one);
        assert_eq!(t.len(), 10);
        assert!(t.get(&JobId::new(0xffff_ffff_ff00 + 16, 0)).is_none());
        assert!(t.get(&JobId::new(0xffff_ffff_ff00 + 17, 0)).is_none());
        assert!(t.get(&JobId::new(0, 0)).is_some());
        // a newer copy replaces the old one and counts as just received
        let mut again = status(JobId::new(10, 0), "b", 10);
        again.revision = 2;
        t.insert(again);
        assert_eq!(t.get(&JobId::new(10, 0)).map(|s| s.revision), Some(2));
        assert_eq!(
            t.bytes,
            t.jobs.values().map(|h| h.bytes).sum::<usize>(),
            "the byte count follows the entries"
        );
        assert_eq!(
            t.by_coordinator.values().map(|(b, _)| *b).sum::<usize>(),
            t.bytes
        );
        // one status above a coordinator's share is not kept at all
        t.insert(status(JobId::new(99, 0), "d", 6 * 1000));
        assert!(t.get(&JobId::new(99, 0)).is_none());
        assert!(!t.by_coordinator.contains_key("d"));
    }

    fn advert(started_ms: u64, seq: u64, running: Option<Vec<(JobId, u32)>>) -> NodeAdvert {
        NodeAdvert {
            started_ms,
            seq,
            running,
            ..NodeAdvert::default()
        }
    }

    #[test]
    fn an_attempt_missing_from_two_adverts_in_a_row_is_lost() {
        let id = JobId::new(1, 1);
        let mut e = entry(&id);
        let listed = Some(vec![(id.clone(), 1)]);
        let other = Some(vec![(id.clone(), 2)]);
        // listed: fine; an older version that lists nothing: never judged
        assert!(!reconcile(&mut e, &id, &advert(1, 1, listed.clone())));
        assert!(!reconcile(&mut e, &id, &advert(1, 2, None)));
        assert!(!reconcile(&mut e, &id, &advert(1, 2, None)));
        // one advert without it (the same one seen twice): not yet
        assert!(!reconcile(&mut e, &id, &advert(1, 3, other.clone())));
        assert!(!reconcile(&mut e, &id, &advert(1, 3, other.clone())));
        // listed again: the count starts over
        assert!(!reconcile(&mut e, &id, &advert(1, 4, listed)));
        assert!(!reconcile(&mut e, &id, &advert(1, 5, Some(Vec::new()))));
        assert!(reconcile(&mut e, &id, &advert(1, 6, Some(Vec::new()))));
        // a restarted executor that does not list it: lost at its second advert
        let mut e = entry(&id);
        assert!(!reconcile(&mut e, &id, &advert(1, 9, Some(Vec::new()))));
        assert!(reconcile(&mut e, &id, &advert(2, 1, Some(Vec::new()))));
    }

    #[test]
    fn a_job_record_keeps_its_deadline_and_a_version_1_record_derives_it() {
        let id = JobId::new(1, 1);
        let e = entry(&id);
        let mut rec = JobRecord {
            v: 2,
            status: e.status.clone(),
            submission: e.submission.clone(),
            assignment: e.assignment.clone(),
            deadline_ms: Some(77),
        };
        let bytes = rec.to_bytes().expect("encode");
        // the new field, last: "deadline_ms": 77
        assert!(hex::encode(&bytes).ends_with("6b646561646c696e655f6d73184d"));
        let back = JobRecord::from_bytes(&bytes).expect("decode");
        assert_eq!(back, rec);
        assert_eq!(back.deadline_ms(deadline_grace_ms), Some(77));
        // version 1: no field; the deadline runs from the attempt's placement
        rec.v = 1;
        rec.deadline_ms = None;
        rec.status.history.push(Transition {
            state: JobState::Placed,
            at_ms: 1_000,
            attempt: 1,
            node: Some("exec".into()),
            reason: None,
        });
        #[derive(serde::Serialize)]
        struct V1<'a> {
            v: u8,
            status: &'a JobStatus,
            submission: &'a Submission,
            assignment: &'a Assignment,
        }
        let v1 = weft_protocol::encode(
            &V1 {
                v: 1,
                status: &rec.status,
                submission: &rec.submission,
                assignment: &rec.assignment,
            },
            usize::MAX,
        )
        .expect("encode");
        let back = JobRecord::from_bytes(&v1).expect("a version 1 record reads");
        assert_eq!(back.deadline_ms, None);
        assert_eq!(
            back.deadline_ms(deadline_grace_ms),
            Some(1_000 + 10_000 + 2_500)
        );
    }

    #[test]
    fn the_cache_key_holds_the_metrics_file_only_when_it_is_not_the_default() {
        let program = Program::Wasm {
            module: Hash::of(b"m"),
            args: vec!["a".into()],
            env: vec![],
        };
        let inputs = vec![(Hash::of(b"i"), "/inputs/d".to_string())];
        let outputs = vec![("/outputs/m".to_string(), None)];
        // the key as it was before metrics: keys of existing cache records hold
        let before = Hash::of(
            &weft_protocol::encode(&(1u8, &program, &inputs, vec!["/outputs/m"]), usize::MAX)
                .expect("encode"),
        );
        assert_eq!(
            cache_key(&program, &inputs, &outputs, DEFAULT_METRICS_FILE),
            before
        );
        let named = cache_key(&program, &inputs, &outputs, "/outputs/m/metrics.json");
        assert_ne!(named, before);
        assert_ne!(
            named,
            cache_key(&program, &inputs, &outputs, "/outputs/other.json")
        );
    }
}
