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
//! and marks the waiting steps cancelled. Any other node sends
//! `Request::CancelPipeline` to the run's coordinator, which does the same.
//! A run's view is what its coordinator wrote (peers refuse a run's record
//! from anyone else, and this node ignores one it holds).
//!
//! Triggers: a submitted pipeline that declares `spec.triggers` is kept in
//! the ledger (`ledger::triggers::keep`); when a tag it watches moves, the
//! one node that owns the change starts it here through
//! [`trigger_starter`], its inputs naming that tag pinned to the new id.
//!
//! A coordinator that restarts does not resume its runs: at start it marks
//! the runs it left running as failed (their finished steps are cached, so
//! running the pipeline again costs only what was not done).

mod engine;
mod steps;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weft_protocol::ledger::{Entry, EntryBody, PipelineDef, PipelineRunRecord, PipelineState};
use weft_protocol::pipeline::PipelineSpec;
use weft_protocol::sched::JobId;
use weft_protocol::{ErrorCode, Hash, Request, Response, TagName};

pub use steps::{Registered, register_and_promote};

use crate::ledger::LedgerHandle;
use crate::net::NetHandle;
use crate::sched::SchedHandle;
use crate::store::ledger::coordinators_own;
use crate::store::{Store, StoreError};

/// How long a cancel request waits for the coordinator's answer.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cancel sent to another node waits for the cancelled record
/// to arrive here, before answering with the record as it stands.
const CANCEL_SETTLE: Duration = Duration::from_secs(2);

/// Why a pipeline call failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The spec, a param or a step name given is not acceptable.
    #[error("{0}")]
    BadSpec(String),
    #[error("no pipeline run {0} is known here; `weft pipeline ls` lists the runs this node knows")]
    NotFound(JobId),
    /// The run's coordinator could not be asked.
    #[error("{0}")]
    Unavailable(String),
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
    /// The spec as the user sent it (YAML): kept in the ledger when it
    /// declares triggers, so they fire on every node.
    pub source: Option<String>,
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
            source: None,
        }
    }
}

/// Handle to the engine.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<engine::Command>,
    store: Store,
    ledger: LedgerHandle,
    net: Option<NetHandle>,
    me: String,
}

/// What the engine needs from the rest of the node.
pub struct EngineConfig {
    pub sched: SchedHandle,
    pub ledger: LedgerHandle,
    /// The mesh, to ask other coordinators to cancel their runs.
    pub net: Option<NetHandle>,
    /// This node's id.
    pub me: String,
    pub shutdown: CancellationToken,
}

/// Starts the engine; returns its handle and the loop to spawn.
pub fn start(config: EngineConfig) -> (PipelineHandle, BoxFuture<'static, ()>) {
    let (tx, rx) = mpsc::channel(256);
    let store = config.ledger.store().clone();
    let handle = PipelineHandle {
        tx,
        store,
        ledger: config.ledger.clone(),
        net: config.net,
        me: config.me.clone(),
    };
    let engine = engine::Engine::new(config.sched, config.ledger, config.me, rx, config.shutdown);
    (handle, Box::pin(engine.run()))
}

/// What the trigger watcher calls to start a pipeline for a tag change:
/// the kept definition with its params, inputs naming the tag pinned to
/// the id it moved to, and the change recorded as the run's trigger.
pub fn trigger_starter(pipelines: PipelineHandle) -> crate::ledger::triggers::Starter {
    Arc::new(
        move |def: PipelineDef, tag: TagName, target: Hash, trigger: String| {
            let pipelines = pipelines.clone();
            Box::pin(async move {
                let spec = PipelineSpec::from_yaml(&def.spec)
                    .map_err(|e| format!("the kept pipeline {} no longer parses: {e}", def.name))?;
                let mut req = StartRequest::new(spec);
                req.params = def.params;
                req.trigger = Some(trigger);
                req.pinned = vec![(tag, target)];
                pipelines
                    .start(req)
                    .await
                    .map(|r| r.id)
                    .map_err(|e| e.to_string())
            }) as BoxFuture<'static, Result<JobId, String>>
        },
    )
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
        if let Some(yaml) = &req.source {
            if !req.spec.triggers.is_empty()
                && yaml.len() > weft_protocol::bounds::MAX_PIPELINE_SPEC_BYTES
            {
                return Err(PipelineError::BadSpec(format!(
                    "spec.triggers: a pipeline with triggers is kept on every node, so its spec \
                     may hold at most {} bytes (this one holds {})",
                    weft_protocol::bounds::MAX_PIPELINE_SPEC_BYTES,
                    yaml.len()
                )));
            }
            crate::ledger::triggers::keep(
                &self.ledger,
                req.spec.name.as_str(),
                yaml,
                req.params.clone(),
            )
            .await
            .map_err(|e| match e {
                crate::ledger::LedgerError::Store(s) => PipelineError::Store(s),
                other => PipelineError::BadSpec(other.to_string()),
            })?;
        }
        self.ask(|reply| engine::Command::Start {
            req: Box::new(req),
            params,
            reply,
        })
        .await
    }

    /// Cancels a run: its running steps are cancelled, its waiting ones
    /// never start. A run coordinated elsewhere is cancelled by its
    /// coordinator, asked with `Request::CancelPipeline`.
    pub async fn cancel(&self, run: JobId) -> Result<PipelineRunRecord, PipelineError> {
        let rec = self.run(&run).await?;
        if rec.coordinator == self.me || rec.state != PipelineState::Running {
            return self
                .ask(|reply| engine::Command::Cancel {
                    run,
                    why: "cancelled".into(),
                    reply,
                })
                .await;
        }
        let coordinator = rec.coordinator.parse::<PeerId>().map_err(|_| {
            PipelineError::Unavailable(format!("run {run} has no valid coordinator"))
        })?;
        let Some(net) = &self.net else {
            return Err(PipelineError::Unavailable(format!(
                "run {run} is coordinated by {coordinator}, and this node runs no mesh to ask it"
            )));
        };
        let asked = tokio::time::timeout(
            CANCEL_TIMEOUT,
            net.request(coordinator, Request::CancelPipeline { run: run.clone() }),
        )
        .await;
        match asked {
            Ok(Ok(Response::Ack)) => {}
            Ok(Ok(Response::Error { message, .. })) => {
                return Err(PipelineError::Unavailable(format!(
                    "run {run}'s coordinator {coordinator} refused to cancel it: {message}"
                )));
            }
            Ok(Ok(other)) => {
                return Err(PipelineError::Unavailable(format!(
                    "unexpected answer from run {run}'s coordinator: {other:?}"
                )));
            }
            Ok(Err(e)) => {
                return Err(PipelineError::Unavailable(format!(
                    "cannot reach run {run}'s coordinator {coordinator}: {e}; \
                     try again once it is back"
                )));
            }
            Err(_) => {
                return Err(PipelineError::Unavailable(format!(
                    "run {run}'s coordinator {coordinator} did not answer within {}s",
                    CANCEL_TIMEOUT.as_secs()
                )));
            }
        }
        // the coordinator's record travels by gossip: answer with it once here
        self.wait(&run, None, CANCEL_SETTLE).await
    }

    /// Answers `Request::CancelPipeline` from `peer`: cancels the run when
    /// this node coordinates it.
    pub async fn answer_cancel(&self, peer: PeerId, run: JobId) -> Response {
        match self.run(&run).await {
            Ok(rec) if rec.coordinator == self.me => {}
            Ok(_) | Err(PipelineError::NotFound(_)) => {
                return Response::error(
                    ErrorCode::NotFound,
                    format!("this node does not coordinate pipeline run {run}"),
                );
            }
            Err(e) => return Response::error(ErrorCode::Internal, e.to_string()),
        }
        let asked = self
            .ask(|reply| engine::Command::Cancel {
                run,
                why: format!("cancel asked by node {peer}"),
                reply,
            })
            .await;
        match asked {
            Ok(_) => Response::Ack,
            Err(e @ PipelineError::NotFound(_)) => {
                Response::error(ErrorCode::NotFound, e.to_string())
            }
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        }
    }

    /// A run as this node's ledger last heard of it (see [`coordinators_own`]).
    pub async fn run(&self, id: &JobId) -> Result<PipelineRunRecord, PipelineError> {
        match self.newest(id).await?.body {
            EntryBody::PipelineRun(p) => Ok(p),
            _ => Err(PipelineError::NotFound(id.clone())),
        }
    }

    /// Every run this node knows, newest first.
    pub async fn runs(&self) -> Result<Vec<PipelineRunRecord>, PipelineError> {
        let store = self.store.clone();
        let mut all = tokio::task::spawn_blocking(move || store.pipeline_runs())
            .await
            .map_err(|_| PipelineError::Stopped)??;
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
                        && coordinators_own(&e)
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
        tokio::task::spawn_blocking(move || store.pipeline_run_entry(&wanted))
            .await
            .map_err(|_| PipelineError::Stopped)??
            .ok_or_else(|| PipelineError::NotFound(id.clone()))
    }
}
