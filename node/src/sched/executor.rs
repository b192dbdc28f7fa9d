//! The executor actor: reservations queued until the node has room, tasks
//! claimed from their coordinators and run in the sandbox.
//!
//! Capacity is the node's CPU (in thousandths of a core), memory and GPUs;
//! a reservation is claimed only when its needs fit what running tasks leave
//! free, and GPUs are handed out whole, one task per device. So a node never
//! runs more than it has, and two GPU tasks on a one-GPU node run one after
//! the other.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_protocol::sched::{Assignment, JobId, JobResult, JobState, Needs, Program};
use weft_protocol::{ErrorCode, Hash, NodeAdvert, Request, Response};
use weft_sandbox::{
    ContainerTask, GpuDevice, Limits, Sandbox, Task, TaskFolders, TaskKind, WasmTask,
};

use super::coordinator::CoordinatorHandle;
use super::{Fetcher, SchedConfig, reply};
use crate::net::NetHandle;
use crate::store::{AddOptions, ExportOptions, Store};

/// An unclaimed reservation older than this is dropped.
const RESERVATION_TTL: Duration = Duration::from_secs(120);

type Key = (JobId, u32);

pub(crate) enum Command {
    Reserve {
        coordinator: String,
        job: JobId,
        attempt: u32,
        needs: Box<Needs>,
        reply: oneshot::Sender<Response>,
    },
    Release {
        job: JobId,
        attempt: u32,
    },
    Cancel {
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

    pub(crate) fn release(&self, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Release { job, attempt });
    }

    pub(crate) fn cancel(&self, job: JobId, attempt: u32) {
        let _ = self.tx.try_send(Command::Cancel { job, attempt });
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

pub(crate) struct Executor {
    me: String,
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
    ) -> Executor {
        let advert = config.advert.borrow().clone();
        Executor {
            me: config.me.to_string(),
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
            running: HashMap::new(),
            rx,
            shutdown,
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
                let response = self.can_ever_run(&needs).map_or_else(
                    || {
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
                    },
                    |why| Response::error(ErrorCode::Unsupported, why),
                );
                reply(r, response);
                self.pump(loopback);
            }
            Command::Release { job, attempt } => {
                let key = (job, attempt);
                self.queue.retain(|r| r.key != key || r.claiming);
            }
            Command::Cancel { job, attempt } => {
                let key = (job, attempt);
                self.queue.retain(|r| r.key != key || r.claiming);
                if let Some(r) = self.running.get(&key) {
                    tracing::info!(job = %key.0, attempt, "cancelling task");
                    r.cancel.cancel();
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
                    Some(a) => self.start(res, *a, loopback),
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

    /// Claims every queued reservation that fits, in queue order.
    fn pump(&mut self, loopback: &mpsc::Sender<Command>) {
        for i in 0..self.queue.len() {
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
        loopback: &mpsc::Sender<Command>,
    ) {
        let cancel = self.shutdown.child_token();
        let gpus = res.gpus.clone();
        self.running.insert(
            res.key.clone(),
            Running {
                cancel: cancel.clone(),
                gpus: gpus.clone(),
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
            coord,
        };
        let dir = self.spare_dirs.pop().unwrap_or_else(|| {
            self.next_dir += 1;
            self.work_dir.join("tasks").join(self.next_dir.to_string())
        });
        tokio::spawn(async move {
            let dir = ctx.run(assignment, gpus, cancel, dir).await;
            let _ = tx.send(Command::Done { key, dir }).await;
        });
    }

    fn expire(&mut self) {
        let before = self.queue.len();
        self.queue
            .retain(|r| r.claiming || r.at.elapsed() < RESERVATION_TTL);
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
        self.advert.send_if_modified(|a| {
            let changed = a.running_tasks != running || a.queued_tasks != queued;
            a.running_tasks = running;
            a.queued_tasks = queued;
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
    coord: Coord,
}

/// A task's updates to its coordinator, sent in order by [`report`].
struct Reports {
    tx: mpsc::UnboundedSender<Request>,
    job: JobId,
    attempt: u32,
    /// Set by the reporter when the coordinator no longer wants the attempt.
    stale: CancellationToken,
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
        let _ = self.tx.send(Request::TaskUpdate {
            job: self.job.clone(),
            attempt: self.attempt,
            state,
            reason,
            result: result.map(Box::new),
        });
        Ok(())
    }
}

/// Delivers a task's updates in order. A final report is retried for a
/// while (the coordinator may be restarting); a `not_found` answer marks the
/// attempt stale and stops the task.
async fn report(
    coord: Coord,
    me: String,
    mut rx: mpsc::UnboundedReceiver<Request>,
    cancel: CancellationToken,
    stale: CancellationToken,
) {
    while let Some(request) = rx.recv().await {
        let last = matches!(&request, Request::TaskUpdate { state, .. } if state.is_terminal());
        let tries = if last { 40 } else { 1 };
        for n in 0..tries {
            match coord.ask(&me, request.clone()).await {
                Ok(Response::Ack) => break,
                Ok(Response::Error {
                    code: ErrorCode::NotFound,
                    ..
                }) => {
                    stale.cancel();
                    cancel.cancel();
                    return;
                }
                Ok(other) => {
                    tracing::debug!(answer = ?other, "unexpected answer to an update");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "update not delivered");
                    if n + 1 < tries {
                        tokio::time::sleep(Duration::from_millis(250 * (n as u64 + 1).min(8)))
                            .await;
                    }
                }
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
        gpus: Vec<u32>,
        cancel: CancellationToken,
        dir: PathBuf,
    ) -> Option<PathBuf> {
        // updates go out in order on their own task, so the task never waits
        // on the coordinator and its slot frees as soon as it is done
        let (tx, rx) = mpsc::unbounded_channel();
        let stale = CancellationToken::new();
        tokio::spawn(report(
            self.coord.clone(),
            self.me.clone(),
            rx,
            cancel.clone(),
            stale.clone(),
        ));
        let reports = Reports {
            tx,
            job: a.job.clone(),
            attempt: a.attempt,
            stale,
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
            Ok(f) => self.execute(&a, f, gpus, &cancel, &reports).await,
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
        folders: &TaskFolders,
        gpus: Vec<u32>,
        cancel: &CancellationToken,
        reports: &Reports,
    ) -> Result<JobResult, Stop> {
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
        for (id, path) in &a.inputs {
            let rel = path
                .trim_start_matches(weft_protocol::job::INPUTS_ROOT)
                .trim_start_matches('/');
            let dest = if rel.is_empty() {
                inputs.clone()
            } else {
                inputs.join(rel)
            };
            let id = *id;
            self.blocking(move |store| {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(crate::store::StoreError::io(parent))?;
                }
                store.export(
                    &id,
                    &dest,
                    ExportOptions {
                        force: true,
                        link: true,
                    },
                    &(),
                )
            })
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
            let id = self
                .blocking(move |store| {
                    let out = store.add_path(&logs, &AddOptions::default(), &())?;
                    store.pin(&out.id, 1)?;
                    Ok(out.id)
                })
                .await?;
            result.logs = Some(id);
        }
        if result.succeeded() {
            for (path, tag) in &a.outputs {
                let rel = path
                    .trim_start_matches(weft_protocol::job::OUTPUTS_ROOT)
                    .trim_start_matches('/');
                let src = if rel.is_empty() {
                    outputs.clone()
                } else {
                    outputs.join(rel)
                };
                if tokio::fs::symlink_metadata(&src).await.is_err() {
                    result.exit_code = result.exit_code.or(Some(0));
                    result.error = Some((
                        "missing output".into(),
                        format!("the task did not write {path}"),
                    ));
                    break;
                }
                let tag = tag.clone();
                let id: Hash = self
                    .blocking(move |store| {
                        let out = store.add_path(&src, &AddOptions::default(), &())?;
                        store.pin(&out.id, 1)?;
                        if let Some(t) = &tag {
                            store.set_tag(t, Some(out.id))?;
                        }
                        store.flush()?;
                        Ok(out.id)
                    })
                    .await?;
                result.outputs.push((path.clone(), id));
            }
        }
        Ok(result)
    }

    /// The image's root filesystem, exported once per image, and its config.
    async fn image(
        &self,
        image: Hash,
    ) -> Result<(PathBuf, weft_sandbox::image::ImageConfig), Stop> {
        let base = self.work_dir.join("images").join(image.to_hex());
        let rootfs = base.join("rootfs");
        let ready = base.join("ready");
        self.blocking(move |store| {
            let (rootfs_id, config) = crate::image::config(&store, &image)?;
            if !ready.exists() {
                let _ = std::fs::remove_dir_all(&base);
                std::fs::create_dir_all(&base).map_err(crate::store::StoreError::io(&base))?;
                store.export(
                    &rootfs_id,
                    &rootfs,
                    ExportOptions {
                        force: false,
                        link: true,
                    },
                    &(),
                )?;
                std::fs::write(&ready, b"").map_err(crate::store::StoreError::io(&ready))?;
            }
            Ok((rootfs, config))
        })
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
