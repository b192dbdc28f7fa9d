//! The executor actor: reservations queued until the node has room, tasks
//! claimed from their coordinators and run in the sandbox.
//!
//! Capacity is the node's CPU (in thousandths of a core), memory and GPUs;
//! a reservation is claimed only when its needs fit what running tasks leave
//! free, and GPUs are handed out whole, one task per device. So a node never
//! runs more than it has, and two GPU tasks on a one-GPU node run one after
//! the other.
//!
//! The queue is bounded, in total and per coordinator; a Reserve over either
//! cap is answered `busy`. When capacity frees, the coordinator served least
//! recently goes first, so one member flooding the queue cannot starve the
//! others. Every assignment is checked as if from a stranger before anything
//! of it is written (`checks`), and outputs are read beneath the outputs
//! folder's handle, following no link.

mod checks;
mod metrics;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_protocol::bounds::{MAX_NOTES, MAX_REASON_BYTES, MAX_TEXT_BYTES, clip};
use weft_protocol::sched::{Assignment, JobId, JobResult, JobState, Needs, Program};
use weft_protocol::{ErrorCode, Hash, NodeAdvert, Request, Response};

use super::coordinator::DEFAULT_METRICS_FILE;
use weft_sandbox::{
    ContainerTask, GpuDevice, Limits, Sandbox, Task, TaskFolders, TaskKind, WasmTask,
};

use super::coordinator::CoordinatorHandle;
use super::records::{ReportRecord, sign_result};
use super::{Fetcher, SchedConfig, SchedError, now_ms, reply};
use crate::net::NetHandle;
use crate::store::records::Record;
use crate::store::{AddOptions, Keep, Store, StoreError};

/// An unclaimed reservation older than this is dropped.
const RESERVATION_TTL: Duration = Duration::from_secs(120);
/// How long a final report is sent again (with backoff) before it is given
/// up in this run of the process; it stays on disk for the next run.
const REPORT_RETRY_FOR: Duration = Duration::from_secs(600);
/// The longest pause between two tries of a final report.
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A final report never acknowledged is dropped from disk after this long.
const REPORT_KEEP_MS: u64 = 24 * 3600 * 1000;

/// Most reservations queued (claiming ones included).
pub(crate) const MAX_RESERVATIONS: usize = 2048;

/// Most reservations queued for one coordinator.
pub(crate) const MAX_RESERVATIONS_PER_COORDINATOR: usize = 512;

type Key = (JobId, u32);

pub(crate) enum Command {
    Reserve {
        coordinator: String,
        job: JobId,
        attempt: u32,
        needs: Box<Needs>,
        reply: oneshot::Sender<Response>,
    },
    /// From the attempt's coordinator (`None`: this node's own).
    Release {
        from: Option<String>,
        job: JobId,
        attempt: u32,
    },
    /// From the attempt's coordinator (`None`: this node's own).
    Cancel {
        from: Option<String>,
        job: JobId,
        attempt: u32,
    },
    /// A claim came back from the coordinator.
    Claimed {
        key: Key,
        assignment: Option<Box<Assignment>>,
    },
    /// A task ended.
    Done {
        key: Key,
        /// The task's folder, clean and reusable, if it was left empty.
        dir: Option<PathBuf>,
    },
}

/// Handle to the executor.
#[derive(Clone)]
pub struct ExecutorHandle {
    pub(crate) tx: mpsc::Sender<Command>,
}

impl ExecutorHandle {
    pub(crate) async fn reserve(
        &self,
        coordinator: String,
        job: JobId,
        attempt: u32,
        needs: Needs,
    ) -> Response {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Reserve {
                coordinator,
                job,
                attempt,
                needs: Box::new(needs),
                reply: tx,
            })
            .await
            .is_err()
        {
            return Response::error(ErrorCode::Unsupported, "the executor has stopped");
        }
        rx.await
            .unwrap_or_else(|_| Response::error(ErrorCode::Internal, "the executor has stopped"))
    }

    /// Drops a reservation this node's own coordinator made.
    pub(crate) fn release(&self, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Release {
            from: None,
            job,
            attempt,
        });
    }

    /// Drops a reservation at the request of `peer`, which must be the
    /// coordinator that made it.
    pub(crate) fn release_from(&self, peer: String, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Release {
            from: Some(peer),
            job,
            attempt,
        });
    }

    /// Cancels an attempt this node's own coordinator placed here.
    pub(crate) fn cancel(&self, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Cancel {
            from: None,
            job,
            attempt,
        });
    }

    /// Cancels an attempt at the request of `peer`, which must be the
    /// coordinator that placed it.
    pub(crate) fn cancel_from(&self, peer: String, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Cancel {
            from: Some(peer),
            job,
            attempt,
        });
    }
}

struct Reservation {
    coordinator: String,
    key: Key,
    needs: Needs,
    at: Instant,
    claiming: bool,
    /// GPUs held for it while its claim is out.
    gpus: Vec<u32>,
}

struct Running {
    coordinator: String,
    cancel: CancellationToken,
    gpus: Vec<u32>,
    needs: Needs,
}

/// Free capacity.
struct Capacity {
    cpu_millis: u64,
    memory: u64,
    gpus: Vec<(u32, u64, String)>,
}

/// Attempts whose final report is not acknowledged yet (they stay in the
/// advert's running list until it is).
type Pending = Arc<Mutex<BTreeSet<Key>>>;

pub(crate) struct Executor {
    me: String,
    keypair: Keypair,
    /// Final reports not yet acknowledged, kept across restarts.
    reports: sled::Tree,
    pending: Pending,
    store: Store,
    net: NetHandle,
    sandbox: Sandbox,
    fetcher: Arc<dyn Fetcher>,
    work_dir: PathBuf,
    /// Task folders (with empty inputs/, outputs/, tmp/) ready for reuse:
    /// making and removing folders costs more than the smallest tasks.
    spare_dirs: Vec<PathBuf>,
    next_dir: u64,
    coordinator: CoordinatorHandle,
    advert: watch::Sender<NodeAdvert>,
    free: Capacity,
    queue: VecDeque<Reservation>,
    /// When each coordinator last had a claim sent (a counter), for fairness.
    served: HashMap<String, u64>,
    serve_tick: u64,
    running: HashMap<Key, Running>,
    rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
}

/// Where the coordinator of a task is.
#[derive(Clone)]
enum Coord {
    Local(CoordinatorHandle),
    Remote(NetHandle, PeerId),
}

impl Coord {
    async fn ask(&self, me: &str, request: Request) -> Result<Response, String> {
        match self {
            Coord::Local(c) => Ok(match request {
                Request::Claim { job, attempt } => c.claim(me.to_string(), job, attempt).await,
                Request::TaskUpdate {
                    job,
                    attempt,
                    state,
                    reason,
                    result,
                } => {
                    c.update(
                        me.to_string(),
                        job,
                        attempt,
                        state,
                        reason,
                        result.map(|r| *r),
                    )
                    .await
                }
                _ => Response::error(ErrorCode::Unsupported, "not a coordinator request"),
            }),
            Coord::Remote(net, peer) => {
                net.request(*peer, request).await.map_err(|e| e.to_string())
            }
        }
    }
}

impl Executor {
    pub(crate) fn new(
        config: &SchedConfig,
        coordinator: CoordinatorHandle,
        rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Result<Executor, SchedError> {
        let advert = config.advert.borrow().clone();
        Ok(Executor {
            me: config.me.to_string(),
            keypair: config.keypair.clone(),
            reports: config.store.db_tree("sched_reports")?,
            pending: Arc::new(Mutex::new(BTreeSet::new())),
            store: config.store.clone(),
            net: config.net.clone(),
            sandbox: config.sandbox.clone(),
            fetcher: config.fetcher.clone(),
            work_dir: config.work_dir.clone(),
            spare_dirs: Vec::new(),
            next_dir: 0,
            coordinator,
            advert: config.advert.clone(),
            free: Capacity {
                cpu_millis: u64::from(advert.cpu_cores.max(1)) * 1000,
                memory: advert.memory_total_bytes,
                gpus: advert
                    .gpus
                    .iter()
                    .map(|g| (g.index, g.memory_bytes, g.model.clone()))
                    .collect(),
            },
            queue: VecDeque::new(),
            served: HashMap::new(),
            serve_tick: 0,
            running: HashMap::new(),
            rx,
            shutdown,
        })
    }

    /// A reporter for tasks of `coordinator`.
    fn reporter(&self, coordinator: &str, coord: Coord) -> Reporter {
        Reporter {
            coord,
            me: self.me.clone(),
            coordinator: coordinator.to_string(),
            reports: self.reports.clone(),
            pending: self.pending.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Sends again the final reports a previous run of the process left
    /// unacknowledged.
    fn resend_reports(&self) {
        let mut resent = 0;
        for kv in self.reports.iter() {
            let Ok((k, v)) = kv else { continue };
            let rec = match ReportRecord::from_bytes(&v) {
                Ok(r) if now_ms().saturating_sub(r.at_ms) < REPORT_KEEP_MS => r,
                Ok(_) | Err(_) => {
                    tracing::debug!("old or unreadable final report dropped");
                    let _ = self.reports.remove(k);
                    continue;
                }
            };
            let Some(coord) = self.coord(&rec.coordinator) else {
                let _ = self.reports.remove(k);
                continue;
            };
            let reporter = self.reporter(&rec.coordinator, coord);
            if let Ok(mut p) = self.pending.lock() {
                p.insert((rec.job.clone(), rec.attempt));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(Request::TaskUpdate {
                job: rec.job,
                attempt: rec.attempt,
                state: rec.state,
                reason: rec.reason,
                result: rec.result.map(Box::new),
            });
            tokio::spawn(reporter.run(rx, self.shutdown.child_token(), CancellationToken::new()));
            resent += 1;
        }
        if resent > 0 {
            tracing::info!(reports = resent, "sending final reports again");
        }
    }

    pub(crate) async fn run(mut self) {
        // task folders left by a process that stopped mid-task, with any
        // quota volume still mounted in them
        let tasks = self.work_dir.join("tasks");
        let _ = tokio::task::spawn_blocking({
            let tasks = tasks.clone();
            move || weft_sandbox::unmount_under(&tasks)
        })
        .await;
        if let Err(e) = tokio::fs::remove_dir_all(&tasks).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %tasks.display(), error = %e, "cannot clear old task folders");
        }
        self.resend_reports();
        self.publish_counts();
        let (loopback_tx, mut loopback) = mpsc::channel::<Command>(4096);
        let mut counts = tokio::time::interval(Duration::from_millis(500));
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.handle(cmd, &loopback_tx),
                Some(cmd) = loopback.recv() => self.handle(cmd, &loopback_tx),
                _ = counts.tick() => {
                    self.expire();
                    self.publish_counts();
                }
            }
        }
        for r in self.running.values() {
            r.cancel.cancel();
        }
    }

    fn coord(&self, coordinator: &str) -> Option<Coord> {
        if coordinator == self.me {
            Some(Coord::Local(self.coordinator.clone()))
        } else {
            coordinator
                .parse()
                .ok()
                .map(|p| Coord::Remote(self.net.clone(), p))
        }
    }

    fn handle(&mut self, cmd: Command, loopback: &mpsc::Sender<Command>) {
        match cmd {
            Command::Reserve {
                coordinator,
                job,
                attempt,
                needs,
                reply: r,
            } => {
                let response = match self.admit(&coordinator, &(job.clone(), attempt), &needs) {
                    Err(refusal) => refusal,
                    Ok(true) => Response::Reserved {
                        queued: self.queue.len().saturating_sub(1) as u32,
                    },
                    Ok(false) => {
                        self.queue.push_back(Reservation {
                            coordinator,
                            key: (job, attempt),
                            needs: *needs,
                            at: Instant::now(),
                            claiming: false,
                            gpus: Vec::new(),
                        });
                        Response::Reserved {
                            queued: self.queue.len().saturating_sub(1) as u32,
                        }
                    }
                };
                reply(r, response);
                self.pump(loopback);
            }
            Command::Release { from, job, attempt } => {
                let from = from.unwrap_or_else(|| self.me.clone());
                let key = (job, attempt);
                self.queue
                    .retain(|r| r.key != key || r.claiming || r.coordinator != from);
            }
            Command::Cancel { from, job, attempt } => {
                let from = from.unwrap_or_else(|| self.me.clone());
                let key = (job, attempt);
                self.queue
                    .retain(|r| r.key != key || r.claiming || r.coordinator != from);
                if let Some(r) = self.running.get(&key) {
                    if r.coordinator == from {
                        tracing::info!(job = %key.0, attempt, "cancelling task");
                        r.cancel.cancel();
                    } else {
                        tracing::warn!(peer = %from, job = %key.0, attempt, "cancel from a peer that is not the task's coordinator; ignored");
                    }
                }
            }
            Command::Claimed { key, assignment } => {
                let Some(pos) = self.queue.iter().position(|r| r.key == key) else {
                    return;
                };
                let Some(res) = self.queue.remove(pos) else {
                    return;
                };
                match assignment {
                    Some(a) => match self.check(&res, &a) {
                        Ok(checked) => self.start(res, *a, checked, loopback),
                        Err(why) => {
                            self.refuse(&res, why);
                            self.give_back(&res.needs, &res.gpus);
                            self.pump(loopback);
                        }
                    },
                    None => {
                        self.give_back(&res.needs, &res.gpus);
                        self.pump(loopback);
                    }
                }
            }
            Command::Done { key, dir } => {
                if let Some(d) = dir
                    && self.spare_dirs.len() < 64
                {
                    self.spare_dirs.push(d);
                }
                if let Some(r) = self.running.remove(&key) {
                    self.give_back(&r.needs, &r.gpus);
                }
                self.pump(loopback);
            }
        }
    }

    /// Whether a Reserve may join the queue: `Ok(true)` if the same
    /// coordinator already holds it (answered again, not queued twice),
    /// `Ok(false)` to queue it, or the refusal: a node that can never run
    /// it, a queue over its caps (`busy`), or the attempt held for another
    /// coordinator.
    fn admit(&self, coordinator: &str, key: &Key, needs: &Needs) -> Result<bool, Response> {
        if let Some(why) = self.can_ever_run(needs) {
            return Err(Response::error(ErrorCode::Unsupported, why));
        }
        if let Some(held) = self.queue.iter().find(|r| &r.key == key) {
            if held.coordinator == coordinator {
                return Ok(true);
            }
            tracing::warn!(peer = %coordinator, job = %key.0, attempt = key.1, "reserve for an attempt another coordinator holds; refused");
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!(
                    "job {} attempt {} is already reserved here by another coordinator",
                    key.0, key.1
                ),
            ));
        }
        if self.running.contains_key(key) {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("job {} attempt {} is already running here", key.0, key.1),
            ));
        }
        if self.queue.len() >= MAX_RESERVATIONS {
            tracing::debug!(peer = %coordinator, queued = self.queue.len(), "reservation queue full");
            return Err(Response::error(
                ErrorCode::Busy,
                format!(
                    "busy: {} reservations queued here, the most this node takes; try another node or later",
                    self.queue.len()
                ),
            ));
        }
        let mine = self
            .queue
            .iter()
            .filter(|r| r.coordinator == coordinator)
            .count();
        if mine >= MAX_RESERVATIONS_PER_COORDINATOR {
            tracing::debug!(peer = %coordinator, queued = mine, "reservation queue full for this coordinator");
            return Err(Response::error(
                ErrorCode::Busy,
                format!(
                    "busy: {mine} reservations of yours queued here, the most one coordinator may hold; try another node or later"
                ),
            ));
        }
        Ok(false)
    }

    /// Checks an assignment against the reservation its claim was for.
    fn check(&self, res: &Reservation, a: &Assignment) -> Result<checks::Checked, String> {
        let held: Vec<(u32, u64, String)> = {
            let advert = self.advert.borrow();
            res.gpus
                .iter()
                .filter_map(|i| {
                    advert
                        .gpus
                        .iter()
                        .find(|g| g.index == *i)
                        .map(|g| (g.index, g.memory_bytes, g.model.clone()))
                })
                .collect()
        };
        checks::check(
            a,
            &checks::Reserved {
                job: &res.key.0,
                attempt: res.key.1,
                needs: &res.needs,
                gpus: &held,
            },
        )
    }

    /// Refuses an assignment: logs it with the peer and reports the
    /// reservation's attempt failed to its coordinator (not retried: the
    /// assignment itself is wrong). Nothing of it was written.
    fn refuse(&self, res: &Reservation, why: String) {
        tracing::warn!(peer = %res.coordinator, job = %res.key.0, attempt = res.key.1, reason = %why, "assignment refused");
        let Some(coord) = self.coord(&res.coordinator) else {
            return;
        };
        let why = format!("assignment refused by the executor: {why}");
        let request = Request::TaskUpdate {
            job: res.key.0.clone(),
            attempt: res.key.1,
            state: JobState::Failed,
            reason: Some(why.clone()),
            result: Some(Box::new(JobResult {
                error: Some(("refused".into(), why)),
                ..JobResult::default()
            })),
        };
        let me = self.me.clone();
        tokio::spawn(async move {
            if let Err(e) = coord.ask(&me, request).await {
                tracing::debug!(error = %e, "refusal not delivered");
            }
        });
    }

    /// Why this node can never run a task with these needs, if it cannot.
    fn can_ever_run(&self, needs: &Needs) -> Option<String> {
        let advert = self.advert.borrow();
        if super::placement::capable(&advert, needs, &std::collections::BTreeMap::new()) {
            None
        } else {
            Some(super::placement::explain(
                [&*advert],
                needs,
                &std::collections::BTreeMap::new(),
            ))
        }
    }

    /// GPUs to give a task that needs `needs`, if enough are free.
    fn pick_gpus(&self, needs: &Needs) -> Option<Vec<u32>> {
        let Some(g) = &needs.gpu else {
            return Some(Vec::new());
        };
        let picked: Vec<u32> = self
            .free
            .gpus
            .iter()
            .filter(|(_, mem, model)| super::placement::gpu_fits(g, *mem, model))
            .take(g.count as usize)
            .map(|(i, _, _)| *i)
            .collect();
        (picked.len() == g.count as usize).then_some(picked)
    }

    fn give_back(&mut self, needs: &Needs, gpus: &[u32]) {
        self.free.cpu_millis += u64::from(needs.cpu_millis);
        self.free.memory += needs.memory_bytes;
        let advert = self.advert.borrow();
        for i in gpus {
            if let Some(g) = advert.gpus.iter().find(|g| g.index == *i) {
                self.free
                    .gpus
                    .push((g.index, g.memory_bytes, g.model.clone()));
            }
        }
    }

    /// Claims every queued reservation that fits: the coordinator served
    /// least recently first, each coordinator's in queue order.
    fn pump(&mut self, loopback: &mpsc::Sender<Command>) {
        let mut order: Vec<usize> = (0..self.queue.len())
            .filter(|&i| !self.queue[i].claiming)
            .collect();
        if order.is_empty() {
            return;
        }
        order.sort_by_key(|&i| {
            self.served
                .get(&self.queue[i].coordinator)
                .copied()
                .unwrap_or(0)
        });
        for i in order {
            let r = &self.queue[i];
            if r.claiming
                || u64::from(r.needs.cpu_millis) > self.free.cpu_millis
                || r.needs.memory_bytes > self.free.memory
            {
                continue;
            }
            let Some(gpus) = self.pick_gpus(&r.needs) else {
                continue;
            };
            let Some(coord) = self.coord(&r.coordinator) else {
                continue;
            };
            // hold the capacity while the claim is out
            self.free.cpu_millis -= u64::from(r.needs.cpu_millis);
            self.free.memory -= r.needs.memory_bytes;
            self.free.gpus.retain(|(idx, _, _)| !gpus.contains(idx));
            self.serve_tick += 1;
            self.served.insert(r.coordinator.clone(), self.serve_tick);
            let r = &mut self.queue[i];
            r.claiming = true;
            r.gpus = gpus;
            let key = r.key.clone();
            let me = self.me.clone();
            let tx = loopback.clone();
            tokio::spawn(async move {
                let answer = coord
                    .ask(
                        &me,
                        Request::Claim {
                            job: key.0.clone(),
                            attempt: key.1,
                        },
                    )
                    .await;
                let assignment = match answer {
                    Ok(Response::Assignment(a)) => Some(a),
                    _ => None,
                };
                let _ = tx.send(Command::Claimed { key, assignment }).await;
            });
        }
    }

    fn start(
        &mut self,
        res: Reservation,
        assignment: Assignment,
        checked: checks::Checked,
        loopback: &mpsc::Sender<Command>,
    ) {
        let cancel = self.shutdown.child_token();
        self.running.insert(
            res.key.clone(),
            Running {
                coordinator: res.coordinator.clone(),
                cancel: cancel.clone(),
                gpus: res.gpus.clone(),
                needs: res.needs.clone(),
            },
        );
        let tx = loopback.clone();
        let key = res.key;
        let Some(coord) = self.coord(&res.coordinator) else {
            let _ = tx.try_send(Command::Done { key, dir: None });
            return;
        };
        let ctx = TaskContext {
            me: self.me.clone(),
            store: self.store.clone(),
            sandbox: self.sandbox.clone(),
            fetcher: self.fetcher.clone(),
            work_dir: self.work_dir.clone(),
            keypair: self.keypair.clone(),
            reporter: self.reporter(&res.coordinator, coord),
        };
        let dir = self.spare_dirs.pop().unwrap_or_else(|| {
            self.next_dir += 1;
            self.work_dir.join("tasks").join(self.next_dir.to_string())
        });
        tokio::spawn(async move {
            let dir = ctx.run(assignment, checked, cancel, dir).await;
            let _ = tx.send(Command::Done { key, dir }).await;
        });
    }

    fn expire(&mut self) {
        let before = self.queue.len();
        self.queue
            .retain(|r| r.claiming || r.at.elapsed() < RESERVATION_TTL);
        if self.served.len() > MAX_RESERVATIONS {
            let queue = &self.queue;
            self.served
                .retain(|c, _| queue.iter().any(|r| &r.coordinator == c));
        }
        if self.queue.len() != before {
            tracing::debug!(
                dropped = before - self.queue.len(),
                "stale reservations dropped"
            );
        }
    }

    fn publish_counts(&self) {
        let running = self.running.len() as u32;
        let queued = self.queue.len() as u32;
        // the attempts held here: claimed or being claimed, running, or
        // with a final report not yet acknowledged
        let mut held: BTreeSet<&Key> = self.running.keys().collect();
        held.extend(self.queue.iter().filter(|r| r.claiming).map(|r| &r.key));
        let pending = self.pending.lock().map(|p| p.clone()).unwrap_or_default();
        held.extend(pending.iter());
        // more than an advert lists: say nothing rather than something wrong
        let attempts = (held.len() <= weft_protocol::advert::MAX_ADVERT_RUNNING)
            .then(|| held.into_iter().cloned().collect::<Vec<Key>>());
        self.advert.send_if_modified(|a| {
            let changed =
                a.running_tasks != running || a.queued_tasks != queued || a.running != attempts;
            a.running_tasks = running;
            a.queued_tasks = queued;
            a.running = attempts;
            changed
        });
    }
}

/// What a running task needs.
struct TaskContext {
    me: String,
    store: Store,
    sandbox: Sandbox,
    fetcher: Arc<dyn Fetcher>,
    work_dir: PathBuf,
    keypair: Keypair,
    reporter: Reporter,
}

/// A task's updates to its coordinator, sent in order by a [`Reporter`].
struct Reports {
    tx: mpsc::UnboundedSender<Request>,
    job: JobId,
    attempt: u32,
    /// Set by the reporter when the coordinator no longer wants the attempt.
    stale: CancellationToken,
    /// Keeps the final report (on disk and in the advert) from the moment
    /// it is queued.
    reporter: Reporter,
}

impl Reports {
    /// Queues an update; `Err(Stale)` once the coordinator said it no
    /// longer wants this attempt.
    fn send(
        &self,
        state: JobState,
        reason: Option<String>,
        result: Option<JobResult>,
    ) -> Result<(), Stop> {
        if self.stale.is_cancelled() {
            return Err(Stop::Stale);
        }
        // texts from the task and the sandbox can be long: clipped to what a
        // coordinator accepts, so an honest report is never refused for size
        let mut reason = reason;
        let mut result = result;
        if let Some(r) = &mut reason {
            clip(r, MAX_REASON_BYTES);
        }
        if let Some(r) = &mut result {
            if let Some((class, message)) = &mut r.error {
                clip(class, MAX_TEXT_BYTES);
                clip(message, MAX_REASON_BYTES);
            }
            r.notes.truncate(MAX_NOTES);
            for n in &mut r.notes {
                clip(n, MAX_REASON_BYTES);
            }
        }
        let request = Request::TaskUpdate {
            job: self.job.clone(),
            attempt: self.attempt,
            state,
            reason,
            result: result.map(Box::new),
        };
        if state.is_terminal() {
            self.reporter.hold(&request);
        }
        let _ = self.tx.send(request);
        Ok(())
    }
}

/// Delivers one task's updates to its coordinator, in order.
#[derive(Clone)]
struct Reporter {
    coord: Coord,
    me: String,
    /// The coordinator's peer id.
    coordinator: String,
    reports: sled::Tree,
    pending: Pending,
    /// The node stops: what is unsent stays on disk for the next start.
    shutdown: CancellationToken,
}

impl Reporter {
    /// Keeps a final report on disk (and in the advert) until acknowledged.
    fn hold(&self, request: &Request) {
        let Request::TaskUpdate {
            job,
            attempt,
            state,
            reason,
            result,
        } = request
        else {
            return;
        };
        let key = ReportRecord::key(job, *attempt);
        let rec = ReportRecord {
            v: <ReportRecord as Record>::VERSION,
            coordinator: self.coordinator.clone(),
            job: job.clone(),
            attempt: *attempt,
            state: *state,
            reason: reason.clone(),
            result: result.as_deref().cloned(),
            at_ms: now_ms(),
        };
        match rec.to_bytes() {
            Ok(bytes) => {
                if let Err(error) = self.reports.insert(key.as_slice(), bytes) {
                    tracing::warn!(%error, "cannot keep a final report on disk");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot keep a final report on disk"),
        }
        if let Ok(mut p) = self.pending.lock() {
            p.insert((job.clone(), *attempt));
        }
    }

    /// The coordinator has the final report (or will never take it).
    fn release(&self, request: &Request, key: &[u8]) {
        let _ = self.reports.remove(key);
        if let Request::TaskUpdate { job, attempt, .. } = request
            && let Ok(mut p) = self.pending.lock()
        {
            p.remove(&(job.clone(), *attempt));
        }
    }

    /// Sends the updates as they come. A final report is kept until the
    /// coordinator acknowledges it: retried with backoff for
    /// [`REPORT_RETRY_FOR`] (the coordinator may be restarting), and kept
    /// on disk for the next run past that. A `not_found` answer marks the
    /// attempt stale and stops the task.
    async fn run(
        self,
        rx: mpsc::UnboundedReceiver<Request>,
        cancel: CancellationToken,
        stale: CancellationToken,
    ) {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.deliver(rx, cancel, stale) => {}
        }
    }

    async fn deliver(
        &self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        cancel: CancellationToken,
        stale: CancellationToken,
    ) {
        while let Some(request) = rx.recv().await {
            let last = matches!(&request, Request::TaskUpdate { state, .. } if state.is_terminal());
            // a final report was kept when it was queued
            let held = match &request {
                Request::TaskUpdate { job, attempt, .. } if last => {
                    Some(ReportRecord::key(job, *attempt))
                }
                _ => None,
            };
            let started = Instant::now();
            let mut pause = Duration::from_millis(250);
            loop {
                let delivered = match self.coord.ask(&self.me, request.clone()).await {
                    Ok(Response::Ack) => true,
                    Ok(Response::Error {
                        code: ErrorCode::NotFound,
                        message,
                    }) => {
                        tracing::debug!(%message, "the coordinator no longer wants this attempt");
                        if let Some(k) = &held {
                            self.release(&request, k);
                        }
                        stale.cancel();
                        cancel.cancel();
                        return;
                    }
                    Ok(Response::Error {
                        code: ErrorCode::Busy | ErrorCode::Internal,
                        message,
                    }) => {
                        tracing::debug!(%message, "update not taken yet");
                        false
                    }
                    Ok(other) => {
                        tracing::warn!(answer = ?other, "update refused by the coordinator");
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "update not delivered");
                        false
                    }
                };
                if delivered || !last {
                    break;
                }
                if started.elapsed() > REPORT_RETRY_FOR {
                    tracing::warn!(
                        "final report not acknowledged; it is sent again at the next start"
                    );
                    if let Ok(mut p) = self.pending.lock()
                        && let Request::TaskUpdate { job, attempt, .. } = &request
                    {
                        p.remove(&(job.clone(), *attempt));
                    }
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPORT_BACKOFF_MAX);
            }
            if let Some(k) = &held {
                self.release(&request, k);
            }
        }
    }
}

/// Outcome of one step of running a task, before the result.
enum Stop {
    /// The node could not run it (retryable elsewhere).
    Executor(String),
    /// The coordinator no longer wants it.
    Stale,
}

impl TaskContext {
    #[tracing::instrument(skip_all, fields(job = %a.job, attempt = a.attempt))]
    /// Runs the task in `dir`; returns `dir` if it is clean for reuse.
    async fn run(
        self,
        a: Assignment,
        checked: checks::Checked,
        cancel: CancellationToken,
        dir: PathBuf,
    ) -> Option<PathBuf> {
        // updates go out in order on their own task, so the task never waits
        // on the coordinator and its slot frees as soon as it is done
        let (tx, rx) = mpsc::unbounded_channel();
        let stale = CancellationToken::new();
        tokio::spawn(self.reporter.clone().run(rx, cancel.clone(), stale.clone()));
        let reports = Reports {
            tx,
            job: a.job.clone(),
            attempt: a.attempt,
            stale,
            reporter: self.reporter.clone(),
        };
        // the task's folders: outputs and tmp on a quota volume, owned by
        // whoever writes them (a container's mapped root, or this node)
        let container = matches!(a.program, Program::Container { .. });
        let folders = tokio::task::spawn_blocking({
            let sandbox = self.sandbox.clone();
            let dir = dir.clone();
            move || sandbox.prepare_folders(&dir, container)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let executed = match &folders {
            Ok(f) => self.execute(&a, &checked, f, &cancel, &reports).await,
            Err(e) => Err(Stop::Executor(format!(
                "cannot prepare the task folder {}: {e}",
                dir.display()
            ))),
        };
        let (state, reason, result) = match executed {
            Ok(result) => {
                let state = if result.succeeded() {
                    JobState::Succeeded
                } else if cancel.is_cancelled() {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                (state, None, Some(result))
            }
            Err(Stop::Stale) => {
                tracing::info!("the coordinator no longer wants this attempt; stopped");
                (JobState::Cancelled, Some("stale attempt".into()), None)
            }
            Err(Stop::Executor(why)) => {
                tracing::warn!(reason = %why, "task could not run here");
                let result = JobResult {
                    error: Some(("executor".into(), why.clone())),
                    ..JobResult::default()
                };
                (JobState::Failed, Some(why), Some(result))
            }
        };
        // a success is signed: what lets other nodes take it as a cache record
        let result = result.map(|mut r| {
            r.signature = None;
            if state == JobState::Succeeded {
                r.signature = sign_result(
                    &self.keypair,
                    &a.cache_key,
                    &a.job,
                    a.attempt,
                    &self.reporter.coordinator,
                    &self.me,
                    &r,
                );
            }
            r
        });
        let _ = reports.send(state, reason, result);
        // outputs are imported: the quota volume goes, then the folder is
        // reusable when nothing of this task is left in it
        let clean = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                if let Ok(mut f) = folders {
                    f.release();
                }
                only_empty_folders(&dir, 2)
            }
        })
        .await
        .unwrap_or(false);
        if clean {
            return Some(dir);
        }
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove task folder");
        }
        None
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Stop> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| Stop::Executor(e.to_string()))?
            .map_err(|e| Stop::Executor(e.to_string()))
    }

    async fn execute(
        &self,
        a: &Assignment,
        checked: &checks::Checked,
        folders: &TaskFolders,
        cancel: &CancellationToken,
        reports: &Reports,
    ) -> Result<JobResult, Stop> {
        let gpus = checked.gpus.clone();
        let dir = folders.dir();
        let inputs = folders.inputs().to_path_buf();
        let outputs = folders.outputs().to_path_buf();
        let scratch = folders.tmp().to_path_buf();
        let mut notes: Vec<String> = folders.notes().to_vec();
        // inputs and the program, fetched when not here
        let program_id = match &a.program {
            Program::Wasm { module, .. } => *module,
            Program::Container { image, .. } => *image,
        };
        if !a.inputs.is_empty() {
            reports.send(JobState::Fetching, None, None)?;
        }
        for id in a
            .inputs
            .iter()
            .map(|(h, _)| *h)
            .chain(std::iter::once(program_id))
        {
            self.fetcher
                .fetch(id)
                .await
                .map_err(|e| Stop::Executor(format!("fetching {id}: {e}")))?;
        }
        // checked paths, none inside another
        {
            let list = checked.inputs.clone();
            let inputs = inputs.clone();
            self.blocking(move |store| store.export_inputs(&inputs, &list))
                .await?;
        }
        let kind = match &a.program {
            Program::Wasm { module, args, env } => {
                // read within the sandbox's module size limit, never whole
                // when larger
                let id = *module;
                let sandbox = self.sandbox.clone();
                let read = self
                    .blocking(move |store| Ok(sandbox.read_module(&store.blob_path(&id))))
                    .await?;
                let module = match read {
                    Ok(m) => m,
                    Err(e) if e.class() == weft_sandbox::ErrorClass::InvalidTask => {
                        return Ok(JobResult {
                            error: Some((e.class().as_str().to_string(), e.to_string())),
                            ..JobResult::default()
                        });
                    }
                    Err(e) => return Err(Stop::Executor(e.to_string())),
                };
                TaskKind::Wasm(WasmTask {
                    module,
                    args: args.clone(),
                    env: env.clone(),
                })
            }
            Program::Container {
                image,
                command,
                args,
                env,
                workdir,
            } => {
                let (rootfs, config) = self.image(*image).await?;
                // device nodes go by the driver's minor number, not the index
                let mut devices = Vec::new();
                for index in &gpus {
                    match crate::resources::gpu_minor(*index) {
                        Some(minor) => devices.push(GpuDevice { minor }),
                        None => notes.push(format!(
                            "GPU {index} has no device known to the driver (declared in config?); no device node given"
                        )),
                    }
                }
                TaskKind::Container(ContainerTask {
                    rootfs,
                    args: config.command_line(command, args),
                    env: config.environment(env),
                    workdir: workdir.clone().or(config.workdir.clone()),
                    gpus: devices,
                })
            }
        };
        reports.send(JobState::Running, None, None)?;
        let task = Task {
            name: format!("{}-{}", a.job, a.attempt),
            kind,
            inputs: inputs.clone(),
            outputs: outputs.clone(),
            scratch: Some(scratch),
            limits: Limits {
                timeout: Duration::from_millis(a.timeout_ms),
                memory: Some(a.needs.memory_bytes),
                cpu_millis: Some(a.needs.cpu_millis),
                disk_quota: folders.quota(),
                ..Limits::default()
            },
        };
        let outcome = self.sandbox.run(task, cancel.clone()).await;
        let mut result = JobResult {
            exit_code: outcome.exit_code,
            error: outcome
                .failure
                .as_ref()
                .map(|f| (f.class.as_str().to_string(), f.message.clone())),
            wall_ms: outcome.wall_time.as_millis() as u64,
            peak_memory: outcome.peak_memory,
            notes: notes
                .into_iter()
                .chain(outcome.notes.iter().cloned())
                .collect(),
            ..JobResult::default()
        };
        if outcome.stdout.truncated {
            result.notes.push("stdout was cut at its cap".into());
        }
        if outcome.stderr.truncated {
            result.notes.push("stderr was cut at its cap".into());
        }
        if cancel.is_cancelled() {
            return Ok(result);
        }
        // the metrics the task reported, read before its outputs are stored;
        // a bad file is a note, never a failure
        if let Some((path, named)) = &checked.metrics {
            let (root, rel, shown) = (
                outputs.clone(),
                PathBuf::from(path.relative()),
                path.to_string(),
            );
            let named = *named;
            let now = super::now_ms();
            let (found, notes) =
                tokio::task::spawn_blocking(move || metrics::read(&root, &rel, &shown, named, now))
                    .await
                    .map_err(|e| Stop::Executor(e.to_string()))?;
            result.metrics = found;
            for n in notes {
                if result.notes.len() < MAX_NOTES {
                    result.notes.push(n);
                }
            }
        }
        let printed = !outcome.stdout.bytes.is_empty() || !outcome.stderr.bytes.is_empty();
        if !a.outputs.is_empty() || printed {
            reports.send(JobState::Uploading, None, None)?;
        }
        if printed {
            let logs = dir.join("logs");
            tokio::fs::create_dir_all(&logs)
                .await
                .map_err(|e| Stop::Executor(format!("{}: {e}", logs.display())))?;
            for (name, c) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
                if !c.bytes.is_empty() {
                    tokio::fs::write(logs.join(name), &c.bytes)
                        .await
                        .map_err(|e| Stop::Executor(format!("writing logs: {e}")))?;
                }
            }
            let keep = Keep {
                pin: Some(1),
                tag: None,
            };
            let id = self
                .blocking(move |store| {
                    let out = store.add_path_kept(&logs, &AddOptions::default(), &keep, &())?;
                    Ok(out.id)
                })
                .await?;
            result.logs = Some(id);
        }
        if result.succeeded() {
            // tags move only once every output is stored
            let mut tags = Vec::new();
            for (path, tag) in &checked.outputs {
                match self.collect(&outputs, path).await? {
                    Ok(id) => {
                        result.outputs.push((path.to_string(), id));
                        if let Some(t) = tag {
                            tags.push((t.clone(), id));
                        }
                    }
                    Err((class, message)) => {
                        // a task failure: the task left it so, and would
                        // again on any other node
                        tracing::info!(output = %path, reason = %message, "output refused");
                        result.exit_code = result.exit_code.or(Some(0));
                        result.error = Some((class.into(), message));
                        result.outputs.clear();
                        tags.clear();
                        break;
                    }
                }
            }
            if !tags.is_empty() {
                self.blocking(move |store| {
                    for (t, id) in &tags {
                        store.set_tag(t, Some(*id))?;
                    }
                    store.flush()
                })
                .await?;
            }
        }
        Ok(result)
    }

    /// Stores one declared output, opened beneath the outputs folder's
    /// handle with no link followed, pinned before GC can run.
    /// The inner error is the task's fault (missing, a link, a special file,
    /// a bad name); the outer one the node's (its disk is full, I/O).
    async fn collect(
        &self,
        outputs: &Path,
        path: &weft_protocol::job::OutputPath,
    ) -> Result<Result<Hash, (&'static str, String)>, Stop> {
        let root = outputs.to_path_buf();
        let rel = PathBuf::from(path.relative());
        let keep = Keep {
            pin: Some(1),
            tag: None,
        };
        let store = self.store.clone();
        let added = tokio::task::spawn_blocking(move || store.add_beneath(&root, &rel, &keep, &()))
            .await
            .map_err(|e| Stop::Executor(e.to_string()))?;
        // names inside the task, not on the host
        let shown = |p: &Path| -> String {
            match p.strip_prefix(outputs) {
                Ok(rel) if rel.as_os_str().is_empty() => {
                    weft_protocol::job::OUTPUTS_ROOT.to_string()
                }
                Ok(rel) => format!("{}/{}", weft_protocol::job::OUTPUTS_ROOT, rel.display()),
                Err(_) => path.to_string(),
            }
        };
        let bad = |what: String| {
            Ok(Err((
                "bad output",
                format!("outputs hold files and folders only; {what}"),
            )))
        };
        match added {
            Ok(out) => Ok(Ok(out.id)),
            Err(StoreError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(Err((
                    "missing output",
                    format!("the task did not write {path}"),
                )))
            }
            Err(StoreError::Symlink { path: p }) => bad(format!("{} is a symlink", shown(&p))),
            Err(StoreError::Special { path: p, kind }) => bad(format!("{} is a {kind}", shown(&p))),
            Err(StoreError::Escapes { path: p }) => bad(format!(
                "{} leads out of {}",
                shown(&p),
                weft_protocol::job::OUTPUTS_ROOT
            )),
            Err(StoreError::LinkLoop { path: p }) => bad(format!("{} is a symlink", shown(&p))),
            Err(StoreError::NonUtf8 { path: p }) => Ok(Err((
                "bad output",
                format!("{}: the name is not valid UTF-8", shown(&p)),
            ))),
            Err(StoreError::BadName { path: p, source }) => {
                Ok(Err(("bad output", format!("{}: {source}", shown(&p)))))
            }
            Err(StoreError::Changed { path: p }) => Ok(Err((
                "bad output",
                format!("{} changed while it was being stored", shown(&p)),
            ))),
            Err(StoreError::NoSpace { path: p }) => {
                let disk = self.store.dir().display().to_string();
                tracing::error!(store = %disk, output = %path, "no space left on the store's disk");
                Err(Stop::Executor(format!(
                    "no space left on the disk of this node's store ({disk}) while storing {path} ({}); free space on the node",
                    p.display()
                )))
            }
            Err(e) => Err(Stop::Executor(format!("storing {path}: {e}"))),
        }
    }

    /// The image's root filesystem, exported once per image, and its config.
    async fn image(
        &self,
        image: Hash,
    ) -> Result<(PathBuf, weft_sandbox::image::ImageConfig), Stop> {
        let work_dir = self.work_dir.clone();
        self.blocking(move |store| crate::image::rootfs(&store, &work_dir, &image))
            .await
    }
}

/// Whether `dir` holds nothing but folders, empty at `depth` levels down
/// (what a task folder is after its quota volume is gone).
fn only_empty_folders(dir: &Path, depth: u32) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.into_iter().all(|e| {
            e.is_ok_and(|e| {
                e.file_type().is_ok_and(|t| t.is_dir())
                    && (depth > 0 && only_empty_folders(&e.path(), depth - 1))
            })
        })
    })
}
