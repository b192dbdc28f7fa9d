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
use super::records::{CacheRecord, JobRecord};
use super::{Fetcher, SchedConfig, SchedError, now_ms, placement, reply};
use crate::net::{NetHandle, PeerInfo};
use crate::store::Store;
use crate::store::records::Record;

/// Jobs of other coordinators kept in the table.
const TABLE_CAP: usize = 10_000;
/// Finished jobs of this node kept in memory (all stay in sled).
const DONE_CAP: usize = 10_000;
/// Default CPU for a task that asks for none.
const DEFAULT_CPU_MILLIS: u32 = 250;
/// Default memory for a task that asks for none.
const DEFAULT_WASM_MEMORY: u64 = 256 << 20;
const DEFAULT_CONTAINER_MEMORY: u64 = 512 << 20;
/// Default deadline for a task that sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Extra time past a deadline before the coordinator gives up on an executor.
const DEADLINE_GRACE: Duration = Duration::from_secs(30);
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
    /// When the executor was last seen missing from the membership table.
    executor_missing_since: Option<Instant>,
}

impl Entry {
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
    table: BTreeMap<JobId, JobStatus>,
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

fn err(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::error(code, message)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6)).min(10_000))
}

/// The cache key: the program and the inputs (ids and where they go) and
/// the output paths asked for.
fn cache_key(
    program: &Program,
    inputs: &[(Hash, String)],
    outputs: &[(String, Option<weft_protocol::TagName>)],
) -> Hash {
    let paths: Vec<&str> = outputs.iter().map(|(p, _)| p.as_str()).collect();
    let bytes =
        weft_protocol::encode(&(1u8, program, inputs, paths), usize::MAX).unwrap_or_default();
    Hash::of(&bytes)
}

impl Coordinator {
    pub(crate) fn new(
        config: &SchedConfig,
        executor: ExecutorHandle,
        rx: mpsc::Receiver<Command>,
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
            table: BTreeMap::new(),
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
            self.jobs.insert(
                id,
                Entry {
                    status: rec.status,
                    submission: rec.submission,
                    assignment: rec.assignment,
                    tried: HashSet::new(),
                    outstanding: 0,
                    reserved: HashSet::new(),
                    held: None,
                    asking_held: false,
                    next_try: Instant::now(),
                    deadline: None,
                    // an executor that does not show up within a TTL is lost
                    executor_missing_since: Some(Instant::now()),
                },
            );
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
        }
        self.flush_gossip().await;
        let _ = self.jobs_tree.flush();
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
                let result = self.submit(submission);
                reply(r, result);
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
                reply(r, response);
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
                let response = self.update(&peer, &job, attempt, state, reason, result);
                reply(r, response);
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
        let key = cache_key(&program, &inputs, &outputs);
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
        // memoized: the same task on the same inputs succeeded before
        if s.cache
            && let Some(hit) = self.cached(&key)
        {
            let mut result = hit.result;
            result.cached = true;
            self.apply_output_tags(&assignment, &result);
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
        let entry = Entry {
            status: status.clone(),
            submission,
            assignment,
            tried: HashSet::new(),
            outstanding: 0,
            reserved: HashSet::new(),
            held: None,
            asking_held: false,
            next_try: Instant::now(),
            deadline: None,
            executor_missing_since: None,
        };
        let terminal = entry.status.state.is_terminal();
        self.jobs.insert(id.clone(), entry);
        self.persist(&id);
        if terminal {
            self.finished(&id);
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

    fn cached(&self, key: &Hash) -> Option<CacheRecord> {
        let bytes = self.cache_tree.get(key.as_bytes()).ok()??;
        CacheRecord::from_bytes(&bytes).ok()
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
        if e.status.state != JobState::Pending || e.outstanding > 0 || !e.reserved.is_empty() {
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
        e.deadline =
            Some(Instant::now() + Duration::from_millis(e.assignment.timeout_ms) + DEADLINE_GRACE);
        e.executor_missing_since = None;
        e.reserved.remove(peer);
        let others: Vec<String> = e.reserved.drain().collect();
        let mut assignment = e.assignment.clone();
        assignment.attempt = attempt;
        self.release(others, id, attempt);
        self.touch(id);
        tracing::debug!(job = %id, %peer, attempt, "placed");
        Response::Assignment(Box::new(assignment))
    }

    fn update(
        &mut self,
        peer: &str,
        id: &JobId,
        attempt: u32,
        state: JobState,
        reason: Option<String>,
        result: Option<JobResult>,
    ) -> Response {
        let Some(e) = self.jobs.get_mut(id) else {
            return err(ErrorCode::NotFound, "no such job");
        };
        if e.status.state.is_terminal() {
            // the result is recorded once; later reports change nothing
            return if e.status.attempt == attempt {
                Response::Ack
            } else {
                err(ErrorCode::NotFound, "the job is over")
            };
        }
        let current = e.status.attempt == attempt && e.claimed_by() == Some(peer);
        if !current {
            // a slow earlier attempt that succeeded still counts, once
            let success =
                state == JobState::Succeeded && result.as_ref().is_some_and(|r| r.succeeded());
            if !success {
                return err(ErrorCode::NotFound, "this attempt is no longer current");
            }
            if let Some(running) = e.claimed_by().map(str::to_string) {
                let current_attempt = e.status.attempt;
                self.cancel_task(&running, id, current_attempt);
            }
        }
        let Some(e) = self.jobs.get_mut(id) else {
            return err(ErrorCode::NotFound, "no such job");
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
            return Response::Ack;
        }
        let result = result.unwrap_or_default();
        let succeeded = state == JobState::Succeeded && result.succeeded();
        if !succeeded
            && state != JobState::Cancelled
            && retryable(&result)
            && attempt <= e.submission.spec.spec.retries
        {
            let why = reason.unwrap_or_else(|| "the executor could not run it".into());
            self.retry(id, format!("attempt {attempt} on {peer} failed: {why}"));
            return Response::Ack;
        }
        let e = match self.jobs.get_mut(id) {
            Some(e) => e,
            None => return Response::Ack,
        };
        e.status.state = if succeeded {
            JobState::Succeeded
        } else if state == JobState::Cancelled {
            JobState::Cancelled
        } else {
            JobState::Failed
        };
        e.status.attempt = attempt;
        e.status.node = Some(peer.to_string());
        e.status.reason = if succeeded {
            None
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
        if succeeded && e.submission.spec.spec.cache {
            let rec = CacheRecord {
                v: 1,
                job: id.clone(),
                result: result.clone(),
                at_ms: now,
            };
            if let Err(error) = self
                .cache_tree
                .insert(e.status.cache_key.as_bytes(), rec.to_bytes())
            {
                tracing::warn!(%error, "cannot record a cached result");
            }
        }
        e.status.result = Some(result);
        self.finished(id);
        Response::Ack
    }

    /// The attempt's executor is gone: place the job again or give up.
    fn attempt_lost(&mut self, id: &JobId, why: String) {
        let Some(e) = self.jobs.get(id) else { return };
        if e.status.state.is_terminal() {
            return;
        }
        tracing::warn!(job = %id, attempt = e.status.attempt, reason = %why, "attempt lost");
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
        e.executor_missing_since = None;
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
        let live: HashSet<String> = self.peers.iter().map(|p| p.peer_id.to_string()).collect();
        let mut place = Vec::new();
        let mut lost = Vec::new();
        let mut late = Vec::new();
        for (id, e) in self.jobs.iter_mut() {
            match e.status.state {
                JobState::Pending
                    if e.outstanding == 0 && e.reserved.is_empty() && e.next_try <= now =>
                {
                    place.push(id.clone());
                }
                JobState::Pending => {}
                s if !s.is_terminal() => {
                    if let Some(node) = e.claimed_by().map(str::to_string)
                        && node != self.me
                    {
                        if live.contains(&node) {
                            e.executor_missing_since = None;
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
        if let Some(e) = self.jobs.get(id) {
            tracing::debug!(job = %id, state = %e.status.state, attempt = e.status.attempt, node = e.status.node.as_deref().unwrap_or("-"), "job finished");
        }
        self.done.insert(id.clone(), ());
        self.evict_done();
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
            v: 1,
            status: e.status.clone(),
            submission: e.submission.clone(),
            assignment: e.assignment.clone(),
        };
        if let Err(error) = self
            .jobs_tree
            .insert(id.as_str().as_bytes(), rec.to_bytes())
        {
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
        for status in msg.statuses {
            if status.coordinator == self.me || status.coordinator != source.to_string() {
                // only a job's coordinator speaks for it
                continue;
            }
            if status.state == JobState::Succeeded
                && let Some(result) = &status.result
                && !result.cached
                && self.cached(&status.cache_key).is_none()
            {
                let rec = CacheRecord {
                    v: 1,
                    job: status.id.clone(),
                    result: result.clone(),
                    at_ms: status.updated_ms,
                };
                let _ = self
                    .cache_tree
                    .insert(status.cache_key.as_bytes(), rec.to_bytes());
            }
            let newer = self
                .table
                .get(&status.id)
                .is_none_or(|old| old.revision < status.revision);
            if newer {
                self.notify(&status);
                self.table.insert(status.id.clone(), status);
            }
        }
        while self.table.len() > TABLE_CAP {
            self.table.pop_first();
        }
    }
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
