//! The engine's actor: owns the runs this node coordinates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_protocol::TagName;
use weft_protocol::ledger::{EntryBody, PipelineRunRecord, PipelineState, StepRecord, StepState};
use weft_protocol::pipeline::{Params, PipelineSpec, Source, Step};
use weft_protocol::sched::{JobId, JobState, JobStatus, RunContext};
use weft_protocol::{ArtifactRef, Hash};

use super::steps::{self, Registration, StepJob};
use super::{PipelineError, StartRequest};
use crate::ledger::LedgerHandle;
use crate::sched::SchedHandle;
use crate::store::Store;

/// Longest reason kept for a step in a run's record (the job keeps the
/// whole of it), so that a record of the most steps fits in one entry.
const MAX_STEP_REASON: usize = 300;

/// Longest reason kept for a run.
const MAX_RUN_REASON: usize = 1024;

/// Longest trigger kept for a run (the ledger's bound).
const MAX_TRIGGER: usize = 512;

/// Shortens a text, when there is one, to at most `max` bytes
/// ([`weft_protocol::bounds::clip`]).
pub(super) fn clip(text: &mut Option<String>, max: usize) {
    if let Some(t) = text {
        weft_protocol::bounds::clip(t, max);
    }
}

/// Events from step tasks waiting in the engine's inbox.
const EVENT_QUEUE: usize = 1024;

pub(super) enum Command {
    Start {
        req: Box<StartRequest>,
        params: Params,
        reply: oneshot::Sender<Result<PipelineRunRecord, PipelineError>>,
    },
    Cancel {
        run: JobId,
        /// Why, as the run records it.
        why: String,
        reply: oneshot::Sender<Result<PipelineRunRecord, PipelineError>>,
    },
}

/// What step tasks report.
pub(super) enum Event {
    /// A step's job was submitted and has not ended yet.
    Submitted {
        run: JobId,
        step: String,
        job: JobId,
    },
    /// A step's work ended.
    Done {
        run: JobId,
        step: String,
        outcome: Outcome,
    },
}

pub(super) enum Outcome {
    /// The step's job ended (in any terminal state), with its metrics.
    Job {
        status: Box<JobStatus>,
        metrics: BTreeMap<String, f64>,
    },
    /// The step's registration ended: what it did and whether it changed
    /// anything, or why it failed.
    Registered(Result<(String, bool), String>),
    /// The step could not be run.
    Error(String),
}

/// What a finished step left for the steps after it.
struct Finished {
    job: Option<JobId>,
    outputs: Vec<(String, Hash)>,
    metrics: BTreeMap<String, f64>,
    cached: bool,
}

/// A run this node coordinates.
struct Run {
    spec: Arc<PipelineSpec>,
    params: Params,
    force_all: bool,
    force_steps: BTreeSet<String>,
    pinned: Vec<(TagName, Hash)>,
    record: PipelineRunRecord,
    finished: HashMap<String, Finished>,
    cancelled: bool,
}

impl Run {
    fn index(&self, step: &str) -> Option<usize> {
        self.record.steps.iter().position(|s| s.name == step)
    }

    fn state(&self, step: &str) -> Option<StepState> {
        self.index(step).map(|i| self.record.steps[i].state)
    }

    /// The id of a finished step's named output.
    fn output(&self, step: &str, output: &str) -> Option<Hash> {
        let path = self
            .spec
            .step(step)?
            .job
            .as_ref()?
            .outputs
            .iter()
            .find(|o| o.name.as_deref() == Some(output))?
            .path
            .as_str()
            .to_string();
        self.finished
            .get(step)?
            .outputs
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, h)| *h)
    }
}

fn terminal(s: StepState) -> bool {
    !matches!(s, StepState::Waiting | StepState::Running)
}

fn ok(s: StepState) -> bool {
    matches!(s, StepState::Ran | StepState::Cached)
}

pub(super) struct Engine {
    sched: SchedHandle,
    ledger: LedgerHandle,
    store: Store,
    me: String,
    rx: mpsc::Receiver<Command>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    runs: HashMap<JobId, Run>,
    /// Step tasks: jobs followed, registrations, cancels.
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Engine {
    pub(super) fn new(
        sched: SchedHandle,
        ledger: LedgerHandle,
        me: String,
        rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Engine {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Engine {
            sched,
            store: ledger.store().clone(),
            ledger,
            me,
            rx,
            events_tx,
            events_rx,
            runs: HashMap::new(),
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    pub(super) async fn run(mut self) {
        self.fail_abandoned();
        loop {
            tokio::select! {
                // first: a step task that ends because this node stops must
                // not decide how its run ended
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.handle(cmd),
                Some(ev) = self.events_rx.recv() => self.event(ev),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        // the runs end with this node (marked failed at its next start)
        self.tasks.shutdown().await;
    }

    /// Runs this node left running when it stopped cannot be resumed (their
    /// specs were in memory): they end as failed.
    fn fail_abandoned(&mut self) {
        let runs = match self.store.pipeline_runs() {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%error, "cannot read pipeline runs at start");
                return;
            }
        };
        for mut rec in runs {
            if rec.coordinator != self.me || rec.state != PipelineState::Running {
                continue;
            }
            let now = crate::store::now_ms();
            for s in &mut rec.steps {
                if !terminal(s.state) {
                    s.state = StepState::Cancelled;
                    s.ended_ms = Some(now);
                    s.reason = Some("the coordinator stopped".into());
                }
            }
            rec.state = PipelineState::Failed;
            rec.reason = Some(
                "the coordinator stopped while the run went on; run the pipeline again \
                 (steps that finished are cached)"
                    .into(),
            );
            rec.updated_ms = now;
            tracing::info!(run = %rec.id, "pipeline run abandoned by a restart marked failed");
            if let Err(error) = self.store.ledger_append(EntryBody::PipelineRun(rec)) {
                tracing::warn!(%error, "cannot record an abandoned pipeline run");
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start { req, params, reply } => {
                let r = self.start(*req, params);
                let _ = reply.send(r);
            }
            Command::Cancel { run, why, reply } => {
                let r = self.cancel_request(run, why);
                let _ = reply.send(r);
            }
        }
    }

    fn start(
        &mut self,
        req: StartRequest,
        params: Params,
    ) -> Result<PipelineRunRecord, PipelineError> {
        let now = crate::store::now_ms();
        let id = JobId::new(now, rand::random());
        let spec = Arc::new(req.spec);
        let record = PipelineRunRecord {
            id: id.clone(),
            pipeline: spec.name.to_string(),
            experiment: spec.experiment.as_ref().map(|e| e.to_string()),
            coordinator: self.me.clone(),
            state: PipelineState::Running,
            params: params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            trigger: req.trigger,
            steps: spec
                .steps
                .iter()
                .map(|s| StepRecord {
                    name: s.name.clone(),
                    state: StepState::Waiting,
                    needs: s.needs.clone(),
                    job: None,
                    started_ms: None,
                    ended_ms: None,
                    reason: None,
                })
                .collect(),
            reason: None,
            created_ms: now,
            updated_ms: now,
        };
        tracing::info!(run = %id, pipeline = %record.pipeline, steps = record.steps.len(), "pipeline run started");
        self.runs.insert(
            id.clone(),
            Run {
                spec,
                params,
                force_all: req.force,
                force_steps: req.force_steps.into_iter().collect(),
                pinned: req.pinned,
                record,
                finished: HashMap::new(),
                cancelled: false,
            },
        );
        self.advance(&id);
        // as it stands once the first steps started (or, when every step
        // ended at once, as written)
        match self.runs.get(&id) {
            Some(r) => Ok(r.record.clone()),
            None => self
                .store
                .pipeline_run(&id)?
                .ok_or(PipelineError::NotFound(id)),
        }
    }

    /// Starts every step whose needs are met, skips those that cannot run,
    /// ends the run when every step is over, and records the run.
    fn advance(&mut self, id: &JobId) {
        // a step that fails as it starts decides its dependents at once
        while self.pass(id) {}
        self.settle(id);
    }

    /// One pass over the waiting steps in order; answers whether a step it
    /// started ended at once (so another pass is due).
    fn pass(&mut self, id: &JobId) -> bool {
        let Some(run) = self.runs.get_mut(id) else {
            return false;
        };
        let now = crate::store::now_ms();
        let spec = run.spec.clone();
        let mut launch: Vec<&Step> = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            if run.record.steps[i].state != StepState::Waiting || run.cancelled {
                continue;
            }
            let mut blocked: Option<String> = None;
            let mut ready = true;
            for n in &step.needs {
                match run.state(n) {
                    Some(StepState::Failed) => blocked = Some(format!("step {n} failed")),
                    Some(StepState::Cancelled) => blocked = Some(format!("step {n} was cancelled")),
                    Some(StepState::Skipped) => blocked = Some(format!("step {n} was skipped")),
                    Some(s) if ok(s) => {}
                    _ => ready = false,
                }
                if blocked.is_some() {
                    break;
                }
            }
            let rec = &mut run.record.steps[i];
            if let Some(why) = blocked {
                rec.state = StepState::Skipped;
                rec.ended_ms = Some(now);
                rec.reason = Some(why);
                continue;
            }
            if !ready {
                continue;
            }
            let finished = &run.finished;
            let metric = |s: &str, k: &str| finished.get(s).and_then(|f| f.metrics.get(k).copied());
            match step.gate_holds(&run.params, &metric) {
                Ok(true) => launch.push(step),
                Ok(false) => {
                    let seen: Vec<String> = step
                        .when
                        .iter()
                        .flat_map(|g| &g.conditions)
                        .filter_map(|c| {
                            metric(&c.step, &c.metric).map(|v| format!("{} = {v}", c.metric))
                        })
                        .collect();
                    rec.state = StepState::Skipped;
                    rec.ended_ms = Some(now);
                    rec.reason = Some(format!(
                        "gate {:?} did not hold ({})",
                        step.when
                            .as_ref()
                            .map(|g| g.text.as_str())
                            .unwrap_or_default(),
                        seen.join(", ")
                    ));
                }
                Err(why) => {
                    rec.state = StepState::Failed;
                    rec.started_ms = Some(now);
                    rec.ended_ms = Some(now);
                    rec.reason = Some(why);
                }
            }
        }
        let mut ended = false;
        for step in launch {
            ended |= self.launch(id, step);
        }
        ended
    }

    /// Starts one step: its job, or its registration. Answers whether the
    /// step ended at once (it could not be started: failed).
    fn launch(&mut self, id: &JobId, step: &Step) -> bool {
        let Some(run) = self.runs.get_mut(id) else {
            return false;
        };
        let Some(i) = run.index(&step.name) else {
            return false;
        };
        let now = crate::store::now_ms();
        run.record.steps[i].state = StepState::Running;
        run.record.steps[i].started_ms = Some(now);
        let events = self.events_tx.clone();
        if step.job.is_some() {
            let force = run.force_all || run.force_steps.contains(&step.name);
            let r: &Run = run;
            let built = step.job_spec(
                &r.spec,
                &r.params,
                &|s: &str, o: &str| r.output(s, o),
                &r.pinned,
                force,
            );
            let spec = match built {
                Ok(s) => s,
                Err(e) => {
                    let rec = &mut run.record.steps[i];
                    rec.state = StepState::Failed;
                    rec.ended_ms = Some(now);
                    rec.reason = Some(e.to_string());
                    return true;
                }
            };
            let context = RunContext {
                experiment: run.record.experiment.clone(),
                params: run.record.params.clone(),
                pipeline_run: Some(id.clone()),
                step: Some(step.name.clone()),
            };
            let task = StepJob {
                run: id.clone(),
                step: step.name.clone(),
                spec,
                context,
            };
            self.tasks
                .spawn(steps::run_job(self.sched.clone(), task, events));
            false
        } else if let Some(reg) = self.registration(id, step) {
            self.tasks
                .spawn(steps::run_registration(self.ledger.clone(), reg, events));
            false
        } else {
            if let Some(run) = self.runs.get_mut(id) {
                let rec = &mut run.record.steps[i];
                rec.state = StepState::Failed;
                rec.ended_ms = Some(now);
                rec.reason = Some("the output to register was not produced".into());
            }
            true
        }
    }

    /// What a step's `register:` registers, once its job (if any) is done.
    fn registration(&self, id: &JobId, step: &Step) -> Option<Registration> {
        let run = self.runs.get(id)?;
        let r = step.register.as_ref()?;
        let (artifact, made_by) = match &r.from {
            Source::Step { step: s, output } => (
                Ok(run.output(s, output)?),
                run.finished.get(s).and_then(|f| f.job.clone()),
            ),
            Source::Artifact(ArtifactRef::Tag(t)) => {
                match run.pinned.iter().find(|(name, _)| name == t) {
                    Some((_, h)) => (Ok(*h), None),
                    None => (Err(ArtifactRef::Tag(t.clone())), None),
                }
            }
            Source::Artifact(a) => (Err(a.clone()), None),
        };
        Some(Registration {
            run: id.clone(),
            step: step.name.clone(),
            model: r.model.clone(),
            artifact,
            made_by,
            source: r.from.to_string(),
            alias: r.alias.clone(),
            reason: format!(
                "promoted by pipeline {} run {id} step {}",
                run.record.pipeline, step.name
            ),
        })
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Submitted { run, step, job } => {
                let Some(r) = self.runs.get_mut(&run) else {
                    return;
                };
                if let Some(i) = r.index(&step) {
                    r.record.steps[i].job = Some(job.clone());
                }
                if r.cancelled {
                    self.tasks.spawn(steps::cancel_job(self.sched.clone(), job));
                }
                self.write(&run);
            }
            Event::Done { run, step, outcome } => {
                self.step_done(&run, &step, outcome);
                self.advance(&run);
            }
        }
    }

    fn step_done(&mut self, id: &JobId, name: &str, outcome: Outcome) {
        let registration = {
            let Some(run) = self.runs.get_mut(id) else {
                return;
            };
            let Some(i) = run.index(name) else {
                return;
            };
            let now = crate::store::now_ms();
            let cancelled = run.cancelled;
            let rec = &mut run.record.steps[i];
            match outcome {
                Outcome::Error(why) => {
                    rec.state = StepState::Failed;
                    rec.ended_ms = Some(now);
                    rec.reason = Some(why);
                    None
                }
                Outcome::Registered(Ok((what, changed))) => {
                    // nothing new: as good as a cache hit (when its job, if
                    // any, was one too)
                    let cached = !changed && run.finished.get(name).is_none_or(|f| f.cached);
                    rec.state = if cached {
                        StepState::Cached
                    } else {
                        StepState::Ran
                    };
                    rec.ended_ms = Some(now);
                    rec.reason = Some(what);
                    run.finished.entry(name.to_string()).or_insert(Finished {
                        job: None,
                        outputs: Vec::new(),
                        metrics: BTreeMap::new(),
                        cached: false,
                    });
                    None
                }
                Outcome::Registered(Err(why)) => {
                    rec.state = StepState::Failed;
                    rec.ended_ms = Some(now);
                    rec.reason = Some(why);
                    None
                }
                Outcome::Job { status, metrics } => {
                    rec.job = Some(status.id.clone());
                    let result = status.result.clone().unwrap_or_default();
                    match status.state {
                        JobState::Succeeded => {
                            run.finished.insert(
                                name.to_string(),
                                Finished {
                                    job: Some(status.id.clone()),
                                    outputs: result.outputs.clone(),
                                    metrics,
                                    cached: result.cached,
                                },
                            );
                            let has_register =
                                run.spec.step(name).is_some_and(|s| s.register.is_some());
                            if has_register && !cancelled {
                                // still running: its registration follows
                                Some(name.to_string())
                            } else {
                                let rec = &mut run.record.steps[i];
                                rec.state = if result.cached {
                                    StepState::Cached
                                } else {
                                    StepState::Ran
                                };
                                rec.ended_ms = Some(now);
                                None
                            }
                        }
                        JobState::Cancelled => {
                            rec.state = StepState::Cancelled;
                            rec.ended_ms = Some(now);
                            rec.reason = status.reason.clone();
                            None
                        }
                        _ => {
                            rec.state = StepState::Failed;
                            rec.ended_ms = Some(now);
                            rec.reason = Some(steps::failure(&status));
                            None
                        }
                    }
                }
            }
        };
        if let Some(step_name) = registration {
            let spec = self.runs.get(id).map(|r| r.spec.clone());
            let reg = spec
                .as_ref()
                .and_then(|s| s.step(&step_name))
                .and_then(|s| self.registration(id, s));
            match reg {
                Some(reg) => {
                    self.tasks.spawn(steps::run_registration(
                        self.ledger.clone(),
                        reg,
                        self.events_tx.clone(),
                    ));
                }
                None => {
                    if let Some(run) = self.runs.get_mut(id)
                        && let Some(i) = run.index(&step_name)
                    {
                        let rec = &mut run.record.steps[i];
                        rec.state = StepState::Failed;
                        rec.ended_ms = Some(crate::store::now_ms());
                        rec.reason = Some("the output to register was not produced".into());
                    }
                }
            }
        }
    }

    /// Ends the run once every step is over, and records it.
    fn settle(&mut self, id: &JobId) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        let over = run.record.steps.iter().all(|s| terminal(s.state));
        if over {
            let failed: Vec<&StepRecord> = run
                .record
                .steps
                .iter()
                .filter(|s| s.state == StepState::Failed)
                .collect();
            if run.cancelled {
                run.record.state = PipelineState::Cancelled;
            } else if let Some(first) = failed.first() {
                run.record.state = PipelineState::Failed;
                run.record.reason = Some(format!(
                    "step {} failed{}",
                    first.name,
                    first
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
            } else {
                run.record.state = PipelineState::Succeeded;
            }
        }
        self.write(id);
        if over && let Some(run) = self.runs.remove(id) {
            tracing::info!(run = %id, state = ?run.record.state, "pipeline run over");
        }
    }

    /// Writes the run's record to the ledger.
    fn write(&mut self, id: &JobId) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        run.record.updated_ms = crate::store::now_ms().max(run.record.updated_ms);
        // within the ledger's bounds (the full reasons stay in the jobs)
        for s in &mut run.record.steps {
            clip(&mut s.reason, MAX_STEP_REASON);
        }
        clip(&mut run.record.reason, MAX_RUN_REASON);
        clip(&mut run.record.trigger, MAX_TRIGGER);
        if let Err(error) = self
            .store
            .ledger_append(EntryBody::PipelineRun(run.record.clone()))
        {
            tracing::error!(run = %id, %error, "cannot record a pipeline run");
        }
    }

    /// Cancels a run coordinated here; marks its waiting steps cancelled
    /// and cancels the jobs of its running ones.
    fn cancel_here(&mut self, id: &JobId, why: String) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        if run.cancelled {
            return;
        }
        run.cancelled = true;
        run.record.state = PipelineState::Cancelled;
        run.record.reason = Some(why);
        let now = crate::store::now_ms();
        for s in &mut run.record.steps {
            match s.state {
                StepState::Waiting => {
                    s.state = StepState::Cancelled;
                    s.ended_ms = Some(now);
                    s.reason = Some("the run was cancelled".into());
                }
                StepState::Running => {
                    if let Some(job) = &s.job {
                        self.tasks
                            .spawn(steps::cancel_job(self.sched.clone(), job.clone()));
                    }
                }
                _ => {}
            }
        }
        tracing::info!(run = %id, "pipeline run cancelled");
        self.settle(id);
    }

    /// Cancels a run this node coordinates; a run that is over (or not
    /// coordinated here) is answered as it stands.
    fn cancel_request(
        &mut self,
        id: JobId,
        why: String,
    ) -> Result<PipelineRunRecord, PipelineError> {
        if self.runs.contains_key(&id) {
            self.cancel_here(&id, why);
            return match self.runs.get(&id) {
                Some(r) => Ok(r.record.clone()),
                None => self
                    .store
                    .pipeline_run(&id)?
                    .ok_or(PipelineError::NotFound(id)),
            };
        }
        self.store
            .pipeline_run(&id)?
            .ok_or(PipelineError::NotFound(id))
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn texts_are_clipped_at_a_character_boundary() {
        let mut t = Some("aé".repeat(200));
        clip(&mut t, 300);
        let t = t.expect("text");
        assert!(t.len() <= 300, "{}", t.len());
        assert!(t.ends_with('…'));
        let mut short = Some("ok".to_string());
        clip(&mut short, 300);
        assert_eq!(short.as_deref(), Some("ok"));
        let mut none = None;
        clip(&mut none, 3);
        assert_eq!(none, None);
    }
}
