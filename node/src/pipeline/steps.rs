//! What a step does away from the engine's loop: its job submitted and
//! followed to its end, its metrics read, a model registered.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use weft_protocol::Hash;
use weft_protocol::JobSpec;
use weft_protocol::ledger::{AliasName, ModelName};
use weft_protocol::sched::{JobId, JobResult, JobStatus, RunContext, Submission};

use super::engine::{Event, Outcome};
use crate::ledger::{LedgerError, LedgerHandle};
use crate::sched::SchedHandle;
use crate::store::StoreError;

/// How long one wait on a job lasts before it is asked again (a job ends
/// by its own timeout; this only bounds one call).
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// Longest source and alias-move reason the ledger keeps.
const MAX_LEDGER_TEXT: usize = weft_protocol::bounds::MAX_TEXT_BYTES;

/// A step's job: what to submit and what to read back.
pub(super) struct StepJob {
    pub run: JobId,
    pub step: String,
    pub spec: JobSpec,
    pub context: RunContext,
}

/// Submits the step's job, reports its id, waits for its end, and reports
/// the outcome with the step's metrics.
pub(super) async fn run_job(sched: SchedHandle, job: StepJob, events: mpsc::Sender<Event>) {
    let StepJob {
        run,
        step,
        spec,
        context,
    } = job;
    let submitted = sched
        .submit(Submission {
            spec,
            local: false,
            run: Some(context),
        })
        .await;
    let mut status = match submitted {
        Ok(s) => s,
        Err(e) => {
            let _ = events
                .send(Event::Done {
                    run,
                    step,
                    outcome: Outcome::Error(format!("the scheduler refused the step's job: {e}")),
                })
                .await;
            return;
        }
    };
    if !status.state.is_terminal() {
        let _ = events
            .send(Event::Submitted {
                run: run.clone(),
                step: step.clone(),
                job: status.id.clone(),
            })
            .await;
    }
    while !status.state.is_terminal() {
        match sched.wait(status.id.clone(), WAIT_SLICE).await {
            Ok(s) => status = s,
            // this node stops: the run is marked at its next start
            Err(crate::sched::SchedError::Stopped) => return,
            Err(e) => {
                let _ = events
                    .send(Event::Done {
                        run,
                        step,
                        outcome: Outcome::Error(format!("lost track of job {}: {e}", status.id)),
                    })
                    .await;
                return;
            }
        }
    }
    let metrics = status.result.as_ref().map(latest).unwrap_or_default();
    let _ = events
        .send(Event::Done {
            run,
            step,
            outcome: Outcome::Job {
                status: Box::new(status),
                metrics,
            },
        })
        .await;
}

/// The last value of each metric a result reports (what the executor read
/// from the task's metrics file).
fn latest(result: &JobResult) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for m in &result.metrics {
        match out.get(&m.key) {
            Some((step, _)) if *step > m.step => {}
            _ => {
                out.insert(m.key.clone(), (m.step, m.value));
            }
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// What a `register:` step registers.
pub(super) struct Registration {
    pub run: JobId,
    pub step: String,
    pub model: ModelName,
    /// The artifact, when it came from a step; else the reference to resolve.
    pub artifact: Result<Hash, weft_protocol::ArtifactRef>,
    /// The job that made it, when known.
    pub made_by: Option<JobId>,
    /// As the spec wrote it.
    pub source: String,
    pub alias: Option<AliasName>,
    /// Why the alias moves.
    pub reason: String,
}

/// Registers the model (and moves its alias) and reports the outcome.
pub(super) async fn run_registration(
    ledger: LedgerHandle,
    r: Registration,
    events: mpsc::Sender<Event>,
) {
    let Registration {
        run,
        step,
        model,
        artifact,
        made_by,
        source,
        alias,
        reason,
    } = r;
    let done = async {
        let artifact = match artifact {
            Ok(h) => h,
            Err(r) => {
                let store = ledger.store().clone();
                tokio::task::spawn_blocking(move || store.resolve(&r))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
            }
        };
        // within the ledger's bounds for a version's source and a move's reason
        let mut source = Some(source);
        super::engine::clip(&mut source, MAX_LEDGER_TEXT);
        let mut reason = Some(reason);
        super::engine::clip(&mut reason, MAX_LEDGER_TEXT);
        let r = register_and_promote(
            &ledger,
            &model,
            artifact,
            made_by,
            source,
            alias.as_ref(),
            reason.as_deref().unwrap_or_default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut text = if r.created {
            format!("registered {model} version {}", r.version)
        } else {
            format!("{model} version {} already holds it", r.version)
        };
        if let Some(a) = &alias {
            match (r.alias_moved, r.alias_from) {
                (true, Some(from)) => {
                    text.push_str(&format!("; {a} moved from {from} to {}", r.version))
                }
                (true, None) => text.push_str(&format!("; {a} set to {}", r.version)),
                (false, _) => text.push_str(&format!("; {a} is {} already", r.version)),
            }
        }
        Ok::<_, String>((text, r.created || r.alias_moved))
    };
    let outcome = done.await.map_err(|e| format!("registering failed: {e}"));
    let _ = events
        .send(Event::Done {
            run,
            step,
            outcome: Outcome::Registered(outcome),
        })
        .await;
}

/// What [`register_and_promote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The version that holds the artifact.
    pub version: u64,
    /// Whether that version was created now (else an existing version
    /// already held the artifact).
    pub created: bool,
    /// Where the alias pointed before, when one was given.
    pub alias_from: Option<u64>,
    /// Whether the alias moved now.
    pub alias_moved: bool,
}

/// Registers `artifact` as the next version of `model` unless a version
/// already holds it (so a re-run of an unchanged pipeline registers
/// nothing new), and, when asked, points `alias` at that version unless it
/// points there already. The version's number is final once every live
/// peer holds it ([`LedgerHandle::register_model`]).
pub async fn register_and_promote(
    ledger: &LedgerHandle,
    model: &ModelName,
    artifact: Hash,
    run: Option<JobId>,
    source: Option<String>,
    alias: Option<&AliasName>,
    reason: &str,
) -> Result<Registered, LedgerError> {
    let store = ledger.store().clone();
    let m = model.clone();
    let existing = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>(
            store
                .model_versions(&m)?
                .into_iter()
                .rev()
                .find(|v| v.artifact == artifact)
                .map(|v| v.version),
        )
    })
    .await
    .map_err(|e| LedgerError::Task(e.to_string()))??;
    let (version, created) = match existing {
        Some(v) => (v, false),
        None => {
            let r = ledger
                .register_model(model.clone(), artifact, run, source)
                .await?;
            (r.version, true)
        }
    };
    let Some(alias) = alias else {
        return Ok(Registered {
            version,
            created,
            alias_from: None,
            alias_moved: false,
        });
    };
    let store = ledger.store().clone();
    let (m, a) = (model.clone(), alias.clone());
    let from = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>(store.alias_history(&m, &a)?.last().and_then(|h| h.version))
    })
    .await
    .map_err(|e| LedgerError::Task(e.to_string()))??;
    let alias_moved = from != Some(version);
    if alias_moved {
        ledger
            .move_alias(
                model.clone(),
                alias.clone(),
                Some(version),
                Some(reason.to_string()),
            )
            .await?;
    }
    Ok(Registered {
        version,
        created,
        alias_from: from,
        alias_moved,
    })
}

/// Cancels a step's job, logging a failure (the job's end still reaches
/// the engine through its step task).
pub(super) async fn cancel_job(sched: SchedHandle, job: JobId) {
    if let Err(error) = sched.cancel(job.clone()).await {
        tracing::warn!(%job, %error, "cannot cancel a pipeline step's job");
    }
}

/// A job status's reason for a failed step.
pub(super) fn failure(status: &JobStatus) -> String {
    let error = status
        .result
        .as_ref()
        .and_then(|r| r.error.as_ref())
        .map(|(class, msg)| format!("{class}: {msg}"));
    let exit = status
        .result
        .as_ref()
        .and_then(|r| r.exit_code)
        .filter(|c| *c != 0)
        .map(|c| format!("exit code {c}"));
    error
        .or(exit)
        .or_else(|| status.reason.clone())
        .unwrap_or_else(|| format!("job {} {}", status.id, status.state))
}
