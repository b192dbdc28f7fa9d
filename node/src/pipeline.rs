//! The pipeline engine: runs `kind: Pipeline` specs as DAGs of jobs.
//!
//! A run is coordinated by the node it was submitted to, as a job is. One
//! actor ([`engine`]) owns the runs coordinated here: it submits each step
//! whose needs are done to the scheduler as a job (independent steps at
//! once), follows it with [`SchedHandle::wait`] (no polling), passes each
//! step's output ids to the steps that take them, decides gates from the
//! metrics of upstream steps, registers models for `register:` steps, and
//! skips the dependents of a failed step while the others go on.
//!
//! Memoization is the scheduler's: a step is a job whose cache key is its
//! program, args, env and input ids, so an unchanged step is a cache hit on
//! every node (used only when its outputs can still be fetched), and a
//! changed input changes exactly the keys downstream of it.
//!
//! Every change to a run writes a new [`EntryBody::PipelineRun`] entry to
//! the ledger, so every node that holds the ledger answers `weft pipeline
//! ls|status` from its own copy ([`PipelineHandle::runs`]).
//!
//! Cancel: on the coordinator, the engine cancels the running steps' jobs
//! and marks the waiting steps cancelled. On any other node, cancel writes
//! a `PipelineRun` entry in state `cancelled` for the run; the coordinator
//! watches the ledger and cancels a run of its own when such an entry from
//! another node reaches it (so no request of its own is needed).
//!
//! A coordinator that restarts does not resume its runs: at start it marks
//! the runs it left running as failed (their finished steps are cached, so
//! running the pipeline again costs only what was not done).

mod engine;
mod steps;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weft_protocol::Hash;
use weft_protocol::TagName;
use weft_protocol::ledger::{Entry, EntryBody, EntryKind, PipelineRunRecord, PipelineState};
use weft_protocol::pipeline::PipelineSpec;
use weft_protocol::sched::JobId;

pub use steps::{Registered, register_and_promote};

use crate::sched::SchedHandle;
use crate::store::{Store, StoreError};

/// Why a pipeline call failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The spec, a param or a step name given is not acceptable.
    #[error("{0}")]
    BadSpec(String),
    #[error("no pipeline run {0} is known here; `weft pipeline ls` lists the runs this node knows")]
    NotFound(JobId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the pipeline engine has stopped")]
    Stopped,
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub spec: PipelineSpec,
    /// Param overrides (`--param k=v`).
    pub params: Vec<(String, String)>,
    /// Run every step, reusing no cached result.
    pub force: bool,
    /// Run these steps, reusing no cached result for them.
    pub force_steps: Vec<String>,
    /// The change that started the run (`tag datasets/iris:v1 -> ID`).
    pub trigger: Option<String>,
    /// Inputs naming one of these tags take the id given instead (the
    /// change a trigger saw, whatever the tag points at later).
    pub pinned: Vec<(TagName, Hash)>,
}

impl StartRequest {
    /// A run of `spec` with its defaults.
    pub fn new(spec: PipelineSpec) -> StartRequest {
        StartRequest {
            spec,
            params: Vec::new(),
            force: false,
            force_steps: Vec::new(),
            trigger: None,
            pinned: Vec::new(),
        }
    }
}

/// Handle to the engine.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<engine::Command>,
    store: Store,
}

/// Starts the engine; returns its handle and the loop to spawn.
pub fn start(
    sched: SchedHandle,
    store: Store,
    me: String,
    shutdown: CancellationToken,
) -> (PipelineHandle, BoxFuture<'static, ()>) {
    let (tx, rx) = mpsc::channel(256);
    let engine = engine::Engine::new(sched, store.clone(), me, rx, shutdown);
    (PipelineHandle { tx, store }, Box::pin(engine.run()))
}

impl PipelineHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PipelineError>>) -> engine::Command,
    ) -> Result<T, PipelineError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| PipelineError::Stopped)?;
        rx.await.map_err(|_| PipelineError::Stopped)?
    }

    /// Starts a run coordinated by this node; answers its first record at once.
    pub async fn start(&self, req: StartRequest) -> Result<PipelineRunRecord, PipelineError> {
        // checked before anything is written
        let params = req
            .spec
            .params_with(&req.params)
            .map_err(|e| PipelineError::BadSpec(e.to_string()))?;
        let known: BTreeSet<&str> = req.spec.steps.iter().map(|s| s.name.as_str()).collect();
        for s in &req.force_steps {
            if !known.contains(s.as_str()) {
                return Err(PipelineError::BadSpec(format!(
                    "--force-step {s}: unknown step; the steps are {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.ask(|reply| engine::Command::Start {
            req: Box::new(req),
            params,
            reply,
        })
        .await
    }

    /// Cancels a run: its running steps are cancelled, its waiting ones
    /// never start. From a node other than its coordinator, the request
    /// travels as a ledger entry the coordinator acts on.
    pub async fn cancel(&self, run: JobId) -> Result<PipelineRunRecord, PipelineError> {
        self.ask(|reply| engine::Command::Cancel { run, reply })
            .await
    }

    /// A run as this node's ledger last heard of it (see [`counts`]).
    pub async fn run(&self, id: &JobId) -> Result<PipelineRunRecord, PipelineError> {
        match self.newest(id).await?.body {
            EntryBody::PipelineRun(p) => Ok(p),
            _ => Err(PipelineError::NotFound(id.clone())),
        }
    }

    /// Every run this node knows, newest first.
    pub async fn runs(&self) -> Result<Vec<PipelineRunRecord>, PipelineError> {
        let store = self.store.clone();
        let entries =
            tokio::task::spawn_blocking(move || store.ledger_kind(EntryKind::PipelineRun))
                .await
                .map_err(|_| PipelineError::Stopped)??;
        // entries come subject by subject, each in (hlc, origin) order
        let mut all: Vec<PipelineRunRecord> = Vec::new();
        for e in entries {
            if !counts(&e) {
                continue;
            }
            if let EntryBody::PipelineRun(p) = e.body {
                match all.last_mut() {
                    Some(last) if last.id == p.id => *last = p,
                    _ => all.push(p),
                }
            }
        }
        all.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(all)
    }

    /// Waits until the run is over (or, with `since`, until it changes
    /// after that `updated_ms`), at most `timeout`; answers the run then.
    pub async fn wait(
        &self,
        id: &JobId,
        since: Option<u64>,
        timeout: Duration,
    ) -> Result<PipelineRunRecord, PipelineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // subscribed before reading, so no change falls in between; then
        // each entry about the run is the news (the newest by clock wins,
        // as in the ledger's own view)
        let mut rx = self.store.subscribe_ledger();
        let mut newest = self.newest(id).await?;
        let done = |e: &Entry| match &e.body {
            EntryBody::PipelineRun(p) => {
                p.state != PipelineState::Running || since.is_some_and(|s| p.updated_ms > s)
            }
            _ => false,
        };
        loop {
            if done(&newest) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(Ok(e)) => {
                    if matches!(&e.body, EntryBody::PipelineRun(p) if p.id == *id)
                        && counts(&e)
                        && e.order(&newest).is_gt()
                    {
                        newest = e;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    newest = self.newest(id).await?;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(PipelineError::Stopped);
                }
            }
        }
        match newest.body {
            EntryBody::PipelineRun(p) => Ok(p),
            _ => Err(PipelineError::NotFound(id.clone())),
        }
    }

    /// The newest entry of a run that counts.
    async fn newest(&self, id: &JobId) -> Result<Entry, PipelineError> {
        let store = self.store.clone();
        let wanted = id.clone();
        tokio::task::spawn_blocking(move || view(&store, &wanted))
            .await
            .map_err(|_| PipelineError::Stopped)??
            .ok_or_else(|| PipelineError::NotFound(id.clone()))
    }
}

/// A run's newest entry that [`counts`], as this node's ledger holds it.
fn view(store: &Store, id: &JobId) -> Result<Option<Entry>, StoreError> {
    Ok(store
        .ledger_subject(EntryKind::PipelineRun, id.as_str())?
        .into_iter()
        .rfind(counts))
}

/// A run's record as this node's ledger shows it.
fn record(store: &Store, id: &JobId) -> Result<Option<PipelineRunRecord>, StoreError> {
    Ok(view(store, id)?.and_then(|e| match e.body {
        EntryBody::PipelineRun(p) => Some(p),
        _ => None,
    }))
}

/// Whether a run's entry counts for its view: one its coordinator wrote,
/// or a cancel request from another node. A record another node writes in
/// any other state (a run's progress claimed by a node that does not
/// coordinate it) is ignored.
fn counts(e: &Entry) -> bool {
    match &e.body {
        EntryBody::PipelineRun(p) => {
            p.coordinator == e.origin || p.state == PipelineState::Cancelled
        }
        _ => false,
    }
}
