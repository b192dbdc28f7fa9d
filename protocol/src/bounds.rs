//! Bounds on every string and collection a peer can send.
//!
//! Goals: a message from a peer is refused at decode, with an error naming
//! the field, when any string or collection in it is longer than the named
//! limit below. Byte limits on whole frames ([`crate::codec`]) bound memory;
//! these bound what each field may hold, so that no peer can make a node
//! store, index, log or forward a megabyte where ten bytes belong.
//!
//! One mechanism: [`Bounded`], implemented by every type that crosses a
//! wire, and [`crate::codec::decode_peer`], the only decoder for peer bytes,
//! which checks it. A message type that does not implement [`Bounded`]
//! cannot be decoded from a peer.
//!
//! Non-goals: meaning. Whether a tag's origin is the node that signed the
//! gossip, or a clock is sane, is for the receiver to decide; here a value
//! only has to fit.

use crate::advert::{Executors, GpuInfo, NodeAdvert};
use crate::auth::{AuthRequest, AuthResponse};
use crate::job::{ContainerTask, Input, JobSpec, Output, Task, WasmTask};
use crate::ledger::{Entry, EntryBody, LedgerGossip, Metric, RunEvent};
use crate::rpc::{MAX_HAS_HASHES, Request, Response};
use crate::sched::{
    Assignment, JobGossip, JobResult, JobStatus, Program, RunContext, Submission, Transition,
};
use crate::service::{
    MAX_ADVERT_REPLICAS, MAX_SERVICE_HEADERS, MAX_SERVICE_REPLICAS, MAX_SERVICE_SPEC_BYTES,
    ServiceChange, ServiceRequestHead, ServiceResponseHead,
};
use crate::tag::{TagUpdate, TagVersion};
use crate::transfer::{GetRequest, GetResponse, MAX_RANGES};

/// Longest node id (a libp2p peer id in base58 is 52 bytes).
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Longest job name in scheduler messages.
pub const MAX_JOB_NAME_BYTES: usize = 256;
/// Most arguments (and, separately, command words) of a task.
pub const MAX_ARGS: usize = 256;
/// Longest argument.
pub const MAX_ARG_BYTES: usize = 4096;
/// Most environment variables of a task.
pub const MAX_ENV: usize = 256;
/// Longest environment variable name.
pub const MAX_ENV_NAME_BYTES: usize = 256;
/// Longest environment variable value.
pub const MAX_ENV_VALUE_BYTES: usize = 4096;
/// Longest path inside a task.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most inputs of a task.
pub const MAX_INPUTS: usize = 1024;
/// Most outputs of a task (and of its result).
pub const MAX_OUTPUTS: usize = 1024;
/// Most labels of a node (and constraints of a job).
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY_BYTES: usize = 128;
/// Longest label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Most listen addresses in an advert.
pub const MAX_LISTEN_ADDRS: usize = 16;
/// Longest address (multiaddr or `host:port`).
pub const MAX_ADDR_BYTES: usize = 256;
/// Most GPUs in an advert.
pub const MAX_GPUS: usize = 64;
/// Longest free-text field naming a thing: GPU vendor, model and id,
/// version, architecture, runtime, error class.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest reason, error message or note. Senders clip theirs with [`clip`].
pub const MAX_REASON_BYTES: usize = 16 * 1024;
/// Most notes in a result.
pub const MAX_NOTES: usize = 64;
/// Most transitions in a job's history.
pub const MAX_HISTORY: usize = 256;
/// Most job statuses in one [`JobGossip`].
pub const MAX_GOSSIP_STATUSES: usize = 256;
/// Most tags in one `TagSync` page.
pub const MAX_SYNC_TAGS: usize = 1024;
/// Most versions of one tag in a `TagSync` page.
pub const MAX_SYNC_VERSIONS: usize = 256;
/// Most copies a pin may ask the mesh to keep.
pub const MAX_REPLICAS: u32 = 16;

/// A field of a peer message that does not fit its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BoundsError {
    /// The field's path, e.g. `TaskUpdate.result.notes[3]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A type whose strings and collections have bounds, checked on decode.
pub trait Bounded {
    /// Checks every bound; `at` is the path of `self` in the message.
    fn check_at(&self, at: &str) -> Result<(), BoundsError>;

    /// Checks every bound of a whole message.
    fn check_bounds(&self) -> Result<(), BoundsError> {
        self.check_at("")
    }
}

/// `at.field`, or `field` at the top.
fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

fn too_long(field: String, len: usize, limit: usize, unit: &str) -> BoundsError {
    BoundsError {
        field,
        problem: format!("{len} {unit} exceeds the limit of {limit}"),
    }
}

/// A string of at most `limit` bytes.
pub fn text(s: &str, limit: usize, field: impl FnOnce() -> String) -> Result<(), BoundsError> {
    if s.len() > limit {
        return Err(too_long(field(), s.len(), limit, "bytes"));
    }
    Ok(())
}

/// A collection of at most `limit` entries.
pub fn count(n: usize, limit: usize, field: impl FnOnce() -> String) -> Result<(), BoundsError> {
    if n > limit {
        return Err(too_long(field(), n, limit, "entries"));
    }
    Ok(())
}

fn opt_text(
    s: &Option<String>,
    limit: usize,
    field: impl FnOnce() -> String,
) -> Result<(), BoundsError> {
    s.as_deref().map_or(Ok(()), |s| text(s, limit, field))
}

/// A node id: a peer id in base58 (1 to [`MAX_NODE_ID_BYTES`] bytes of the
/// base58 alphabet).
pub fn node_id(s: &str, field: impl FnOnce() -> String) -> Result<(), BoundsError> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if s.len() > MAX_NODE_ID_BYTES {
        return Err(too_long(field(), s.len(), MAX_NODE_ID_BYTES, "bytes"));
    }
    if s.is_empty() || !s.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(BoundsError {
            field: field(),
            problem: "not a node id (a peer id in base58)".to_string(),
        });
    }
    Ok(())
}

fn strings(
    list: &[String],
    max: usize,
    max_bytes: usize,
    at: &str,
    name: &str,
) -> Result<(), BoundsError> {
    count(list.len(), max, || join(at, name))?;
    for (i, s) in list.iter().enumerate() {
        text(s, max_bytes, || format!("{}[{i}]", join(at, name)))?;
    }
    Ok(())
}

fn env_pairs<'a>(
    env: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    at: &str,
) -> Result<(), BoundsError> {
    count(env.len(), MAX_ENV, || join(at, "env"))?;
    for (i, (k, v)) in env.enumerate() {
        text(k, MAX_ENV_NAME_BYTES, || {
            format!("{}[{i}].name", join(at, "env"))
        })?;
        text(v, MAX_ENV_VALUE_BYTES, || {
            format!("{}[{i}].value", join(at, "env"))
        })?;
    }
    Ok(())
}

/// Clips `s` to at most `limit` bytes on a character boundary, marking the
/// cut, so that what a node sends fits the receiver's bound.
pub fn clip(s: &mut String, limit: usize) {
    const MARK: &str = "…";
    if s.len() <= limit {
        return;
    }
    let mut end = limit.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    if s.len() + MARK.len() <= limit {
        s.push_str(MARK);
    }
}

// ---------------------------------------------------------------------------
// Control plane.

impl Bounded for Request {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            Request::Hello
            | Request::Ping { .. }
            | Request::TagSync { .. }
            | Request::Release { .. }
            | Request::Claim { .. }
            | Request::CancelJob { .. }
            | Request::CancelTask { .. }
            | Request::GetJob { .. }
            | Request::CancelPipeline { .. }
            | Request::StartReplica { .. }
            | Request::StopReplica { .. }
            | Request::ServiceLogs { .. } => Ok(()),
            Request::Reserve { needs, .. } => {
                let at = join(at, "Reserve.needs");
                needs.gpu.as_ref().map_or(Ok(()), |g| {
                    opt_text(&g.model, MAX_TEXT_BYTES, || format!("{at}.gpu.model"))
                })
            }
            Request::TaskUpdate { reason, result, .. } => {
                opt_text(reason, MAX_REASON_BYTES, || join(at, "TaskUpdate.reason"))?;
                result
                    .as_ref()
                    .map_or(Ok(()), |r| r.check_at(&join(at, "TaskUpdate.result")))
            }
            Request::Has { hashes, .. } => {
                count(hashes.len(), MAX_HAS_HASHES, || join(at, "Has.hashes"))
            }
            Request::LedgerSync { after } => {
                opt_text(after, MAX_LEDGER_KEY_HEX, || join(at, "LedgerSync.after"))
            }
            Request::LedgerPush { entries } => {
                entry_list(entries, MAX_LEDGER_PUSH, &join(at, "LedgerPush.entries"))
            }
            Request::Replicate { replicas, .. } => {
                if *replicas > MAX_REPLICAS {
                    return Err(BoundsError {
                        field: join(at, "Replicate.replicas"),
                        problem: format!("{replicas} exceeds the limit of {MAX_REPLICAS}"),
                    });
                }
                Ok(())
            }
        }
    }
}

impl Bounded for Response {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            Response::Hello(advert) => advert.check_at(&join(at, "Hello")),
            Response::Pong { .. }
            | Response::Reserved { .. }
            | Response::Ack
            | Response::Replicating { .. } => Ok(()),
            Response::Tags { tags, .. } => {
                let at = join(at, "Tags.tags");
                count(tags.len(), MAX_SYNC_TAGS, || at.clone())?;
                for (i, (_, versions)) in tags.iter().enumerate() {
                    count(versions.len(), MAX_SYNC_VERSIONS, || {
                        format!("{at}[{i}].versions")
                    })?;
                    for (j, v) in versions.iter().enumerate() {
                        v.check_at(&format!("{at}[{i}].versions[{j}]"))?;
                    }
                }
                Ok(())
            }
            Response::Assignment(a) => a.check_at(&join(at, "Assignment")),
            Response::Job(status) => status.check_at(&join(at, "Job")),
            Response::Have { blobs } => {
                count(blobs.len(), MAX_HAS_HASHES, || join(at, "Have.blobs"))
            }
            Response::Ledger { entries, .. } => {
                entry_list(entries, MAX_LEDGER_PAGE, &join(at, "Ledger.entries"))
            }
            Response::ServiceLogs { replicas } => {
                count(replicas.len(), MAX_ADVERT_REPLICAS, || {
                    join(at, "ServiceLogs.replicas")
                })?;
                for (i, (_, log)) in replicas.iter().enumerate() {
                    text(log, MAX_REPLICA_LOG_BYTES, || {
                        format!("{at}.ServiceLogs.replicas[{i}]")
                    })?;
                }
                Ok(())
            }
            Response::Error { message, .. } => {
                text(message, MAX_REASON_BYTES, || join(at, "Error.message"))
            }
        }
    }
}

impl Bounded for AuthRequest {
    fn check_at(&self, _: &str) -> Result<(), BoundsError> {
        Ok(()) // fixed size
    }
}

impl Bounded for AuthResponse {
    fn check_at(&self, _: &str) -> Result<(), BoundsError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Tags.

impl Bounded for TagVersion {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        node_id(&self.origin, || join(at, "origin"))
    }
}

impl Bounded for TagUpdate {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        // the name is checked by its own parser (at most 256 bytes)
        self.version.check_at(&join(at, "version"))
    }
}

// ---------------------------------------------------------------------------
// Adverts.

impl Bounded for NodeAdvert {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        text(&self.peer_id, MAX_NODE_ID_BYTES, || join(at, "peer_id"))?;
        text(&self.version, MAX_TEXT_BYTES, || join(at, "version"))?;
        strings(
            &self.listen_addrs,
            MAX_LISTEN_ADDRS,
            MAX_ADDR_BYTES,
            at,
            "listen_addrs",
        )?;
        opt_text(&self.data_plane_addr, MAX_ADDR_BYTES, || {
            join(at, "data_plane_addr")
        })?;
        text(&self.arch, MAX_TEXT_BYTES, || join(at, "arch"))?;
        count(self.gpus.len(), MAX_GPUS, || join(at, "gpus"))?;
        for (i, g) in self.gpus.iter().enumerate() {
            g.check_at(&format!("{}[{i}]", join(at, "gpus")))?;
        }
        self.executors.check_at(&join(at, "executors"))?;
        if let Some(running) = &self.running {
            count(running.len(), crate::advert::MAX_ADVERT_RUNNING, || {
                join(at, "running")
            })?;
        }
        if let Some(replicas) = &self.replicas {
            count(replicas.len(), MAX_ADVERT_REPLICAS, || join(at, "replicas"))?;
            for (i, r) in replicas.iter().enumerate() {
                opt_text(&r.note, MAX_TEXT_BYTES, || {
                    format!("{at}.replicas[{i}].note")
                })?;
            }
        }
        labels(
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            at,
            "labels",
        )
    }
}

fn labels<'a>(
    map: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    at: &str,
    name: &str,
) -> Result<(), BoundsError> {
    count(map.len(), MAX_LABELS, || join(at, name))?;
    for (k, v) in map {
        text(k, MAX_LABEL_KEY_BYTES, || {
            format!("{} key {:?}", join(at, name), shown(k))
        })?;
        text(v, MAX_LABEL_VALUE_BYTES, || {
            format!("{}[{:?}]", join(at, name), shown(k))
        })?;
    }
    Ok(())
}

fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Bounded for GpuInfo {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        text(&self.vendor, MAX_TEXT_BYTES, || join(at, "vendor"))?;
        text(&self.model, MAX_TEXT_BYTES, || join(at, "model"))?;
        opt_text(&self.uuid, MAX_TEXT_BYTES, || join(at, "uuid"))
    }
}

impl Bounded for Executors {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        opt_text(&self.container_runtime, MAX_TEXT_BYTES, || {
            join(at, "container_runtime")
        })
    }
}

// ---------------------------------------------------------------------------
// Scheduler.

impl Bounded for Program {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            Program::Wasm { args, env, .. } => {
                let at = join(at, "wasm");
                strings(args, MAX_ARGS, MAX_ARG_BYTES, &at, "args")?;
                env_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())), &at)
            }
            Program::Container {
                command,
                args,
                env,
                workdir,
                ..
            } => {
                let at = join(at, "container");
                strings(command, MAX_ARGS, MAX_ARG_BYTES, &at, "command")?;
                strings(args, MAX_ARGS, MAX_ARG_BYTES, &at, "args")?;
                env_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())), &at)?;
                opt_text(workdir, MAX_PATH_BYTES, || join(&at, "workdir"))
            }
        }
    }
}

impl Bounded for Assignment {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        text(&self.name, MAX_JOB_NAME_BYTES, || join(at, "name"))?;
        self.program.check_at(&join(at, "program"))?;
        count(self.inputs.len(), MAX_INPUTS, || join(at, "inputs"))?;
        for (i, (_, path)) in self.inputs.iter().enumerate() {
            text(path, MAX_PATH_BYTES, || {
                format!("{}[{i}].path", join(at, "inputs"))
            })?;
        }
        count(self.outputs.len(), MAX_OUTPUTS, || join(at, "outputs"))?;
        for (i, (path, _)) in self.outputs.iter().enumerate() {
            text(path, MAX_PATH_BYTES, || {
                format!("{}[{i}].path", join(at, "outputs"))
            })?;
        }
        opt_text(&self.metrics, MAX_PATH_BYTES, || join(at, "metrics"))?;
        self.needs.gpu.as_ref().map_or(Ok(()), |g| {
            opt_text(&g.model, MAX_TEXT_BYTES, || join(at, "needs.gpu.model"))
        })
    }
}

impl Bounded for JobResult {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        count(self.outputs.len(), MAX_OUTPUTS, || join(at, "outputs"))?;
        for (i, (path, _)) in self.outputs.iter().enumerate() {
            text(path, MAX_PATH_BYTES, || {
                format!("{}[{i}].path", join(at, "outputs"))
            })?;
        }
        if let Some((class, message)) = &self.error {
            text(class, MAX_TEXT_BYTES, || join(at, "error.class"))?;
            text(message, MAX_REASON_BYTES, || join(at, "error.message"))?;
        }
        strings(&self.notes, MAX_NOTES, MAX_REASON_BYTES, at, "notes")?;
        metrics(&self.metrics, &join(at, "metrics"))
    }
}

impl Bounded for Transition {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        opt_text(&self.node, MAX_NODE_ID_BYTES, || join(at, "node"))?;
        opt_text(&self.reason, MAX_REASON_BYTES, || join(at, "reason"))
    }
}

impl Bounded for JobStatus {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        text(&self.name, MAX_JOB_NAME_BYTES, || join(at, "name"))?;
        text(&self.coordinator, MAX_NODE_ID_BYTES, || {
            join(at, "coordinator")
        })?;
        opt_text(&self.node, MAX_NODE_ID_BYTES, || join(at, "node"))?;
        opt_text(&self.reason, MAX_REASON_BYTES, || join(at, "reason"))?;
        if let Some(r) = &self.result {
            r.check_at(&join(at, "result"))?;
        }
        count(self.history.len(), MAX_HISTORY, || join(at, "history"))?;
        for (i, t) in self.history.iter().enumerate() {
            t.check_at(&format!("{}[{i}]", join(at, "history")))?;
        }
        Ok(())
    }
}

impl Bounded for JobGossip {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        count(self.statuses.len(), MAX_GOSSIP_STATUSES, || {
            join(at, "statuses")
        })?;
        for (i, s) in self.statuses.iter().enumerate() {
            s.check_at(&format!("{}[{i}]", join(at, "statuses")))?;
        }
        Ok(())
    }
}

impl Bounded for Submission {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        self.spec.check_at(at)?;
        self.run
            .as_ref()
            .map_or(Ok(()), |r| r.check_at(&join(at, "run")))
    }
}

impl Bounded for RunContext {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        opt_text(&self.experiment, MAX_JOB_NAME_BYTES, || {
            join(at, "experiment")
        })?;
        params(&self.params, &join(at, "params"))?;
        opt_text(&self.step, MAX_JOB_NAME_BYTES, || join(at, "step"))
    }
}

// ---------------------------------------------------------------------------
// The ledger.

/// Most entries in one ledger gossip message or sync page.
pub const MAX_LEDGER_PAGE: usize = 512;
/// Most entries one `LedgerPush` carries.
pub const MAX_LEDGER_PUSH: usize = 64;
/// Longest ledger key, as hex, in a `LedgerSync`.
pub const MAX_LEDGER_KEY_HEX: usize = 2048;
/// Most params of a run (and of one run event).
pub const MAX_PARAMS: usize = 256;
/// Longest param or tag key.
pub const MAX_PARAM_KEY_BYTES: usize = 250;
/// Longest param or tag value.
pub const MAX_PARAM_VALUE_BYTES: usize = 6000;
/// Most metric points in one run event.
pub const MAX_METRICS: usize = 10_000;
/// Most steps of a pipeline run.
pub const MAX_STEPS: usize = 256;
/// Longest pipeline spec kept for its triggers.
pub const MAX_PIPELINE_SPEC_BYTES: usize = 128 * 1024;

fn params(list: &[(String, String)], at: &str) -> Result<(), BoundsError> {
    count(list.len(), MAX_PARAMS, || at.to_string())?;
    for (i, (k, v)) in list.iter().enumerate() {
        text(k, MAX_PARAM_KEY_BYTES, || format!("{at}[{i}].key"))?;
        text(v, MAX_PARAM_VALUE_BYTES, || format!("{at}[{i}].value"))?;
    }
    Ok(())
}

fn entry_list(entries: &[Entry], limit: usize, at: &str) -> Result<(), BoundsError> {
    count(entries.len(), limit, || at.to_string())?;
    for (i, e) in entries.iter().enumerate() {
        e.check_at(&format!("{at}[{i}]"))?;
    }
    Ok(())
}

impl Bounded for Entry {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        node_id(&self.origin, || join(at, "origin"))?;
        let at = join(at, "body");
        match &self.body {
            EntryBody::ModelVersion(v) => {
                opt_text(&v.source, MAX_TEXT_BYTES, || join(&at, "source"))
            }
            EntryBody::Alias(a) => opt_text(&a.reason, MAX_TEXT_BYTES, || join(&at, "reason")),
            EntryBody::Run(r) => r.check_at(&at),
            EntryBody::Lineage(l) => {
                text(&l.path, MAX_PATH_BYTES, || join(&at, "path"))?;
                opt_text(&l.step, MAX_JOB_NAME_BYTES, || join(&at, "step"))?;
                count(l.inputs.len(), MAX_INPUTS, || join(&at, "inputs"))?;
                for (i, (_, p)) in l.inputs.iter().enumerate() {
                    text(p, MAX_PATH_BYTES, || {
                        format!("{}[{i}].path", join(&at, "inputs"))
                    })?;
                }
                params(&l.params, &join(&at, "params"))?;
                node_id(&l.node, || join(&at, "node"))
            }
            EntryBody::PipelineRun(p) => {
                text(&p.pipeline, MAX_JOB_NAME_BYTES, || join(&at, "pipeline"))?;
                opt_text(&p.experiment, MAX_JOB_NAME_BYTES, || {
                    join(&at, "experiment")
                })?;
                node_id(&p.coordinator, || join(&at, "coordinator"))?;
                params(&p.params, &join(&at, "params"))?;
                opt_text(&p.trigger, MAX_TEXT_BYTES * 2, || join(&at, "trigger"))?;
                opt_text(&p.reason, MAX_REASON_BYTES, || join(&at, "reason"))?;
                count(p.steps.len(), MAX_STEPS, || join(&at, "steps"))?;
                for (i, st) in p.steps.iter().enumerate() {
                    let at = format!("{}[{i}]", join(&at, "steps"));
                    text(&st.name, MAX_JOB_NAME_BYTES, || join(&at, "name"))?;
                    strings(&st.needs, MAX_STEPS, MAX_JOB_NAME_BYTES, &at, "needs")?;
                    opt_text(&st.reason, MAX_REASON_BYTES, || join(&at, "reason"))?;
                }
                Ok(())
            }
            EntryBody::Pipeline(p) => {
                text(&p.name, MAX_JOB_NAME_BYTES, || join(&at, "name"))?;
                text(&p.spec, MAX_PIPELINE_SPEC_BYTES, || join(&at, "spec"))?;
                params(&p.params, &join(&at, "params"))
            }
            EntryBody::Trigger(t) => {
                text(&t.pipeline, MAX_JOB_NAME_BYTES, || join(&at, "pipeline"))
            }
            EntryBody::Service(e) => match &e.change {
                ServiceChange::Apply { spec } => {
                    text(spec, MAX_SERVICE_SPEC_BYTES, || join(&at, "change.spec"))
                }
                ServiceChange::Rollback { reason, .. } => {
                    opt_text(reason, MAX_REASON_BYTES, || join(&at, "change.reason"))
                }
                ServiceChange::Scale { replicas } if *replicas > MAX_SERVICE_REPLICAS => {
                    Err(BoundsError {
                        field: join(&at, "change.replicas"),
                        problem: format!("{replicas} exceeds the limit of {MAX_SERVICE_REPLICAS}"),
                    })
                }
                ServiceChange::Scale { .. } | ServiceChange::Remove => Ok(()),
            },
        }
    }
}

impl Bounded for RunEvent {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        if let Some(s) = &self.start {
            let at = join(at, "start");
            text(&s.name, MAX_JOB_NAME_BYTES, || join(&at, "name"))?;
            opt_text(&s.experiment, MAX_JOB_NAME_BYTES, || {
                join(&at, "experiment")
            })?;
            opt_text(&s.step, MAX_JOB_NAME_BYTES, || join(&at, "step"))?;
        }
        params(&self.params, &join(at, "params"))?;
        params(&self.tags, &join(at, "tags"))?;
        metrics(&self.metrics, &join(at, "metrics"))?;
        if let Some(e) = &self.end {
            let at = join(at, "end");
            text(&e.status, MAX_TEXT_BYTES, || join(&at, "status"))?;
            opt_text(&e.node, MAX_NODE_ID_BYTES, || join(&at, "node"))?;
        }
        Ok(())
    }
}

/// Metric points: bounded in number and key length, values finite.
pub fn metrics(list: &[Metric], at: &str) -> Result<(), BoundsError> {
    count(list.len(), MAX_METRICS, || at.to_string())?;
    for (i, m) in list.iter().enumerate() {
        text(&m.key, MAX_PARAM_KEY_BYTES, || format!("{at}[{i}].key"))?;
        if !m.value.is_finite() {
            return Err(BoundsError {
                field: format!("{at}[{i}].value"),
                problem: "not a finite number".to_string(),
            });
        }
    }
    Ok(())
}

impl Bounded for LedgerGossip {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        entry_list(&self.entries, MAX_LEDGER_PAGE, &join(at, "entries"))
    }
}

// ---------------------------------------------------------------------------
// Job specs. Paths are named as in the YAML (`spec.task.wasm.args[3]`).

impl Bounded for JobSpec {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        let s = &self.spec;
        let at = join(at, "spec");
        s.task.check_at(&join(&at, "task"))?;
        count(s.inputs.len(), MAX_INPUTS, || join(&at, "inputs"))?;
        for (i, input) in s.inputs.iter().enumerate() {
            input.check_at(&format!("{}[{i}]", join(&at, "inputs")))?;
        }
        count(s.outputs.len(), MAX_OUTPUTS, || join(&at, "outputs"))?;
        for (i, output) in s.outputs.iter().enumerate() {
            output.check_at(&format!("{}[{i}]", join(&at, "outputs")))?;
        }
        if let Some(g) = &s.resources.gpu {
            opt_text(&g.model, MAX_TEXT_BYTES, || {
                join(&at, "resources.gpu.model")
            })?;
        }
        labels(
            s.constraints.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &at,
            "constraints",
        )
    }
}

impl Bounded for Task {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            Task::Wasm(w) => w.check_at(&join(at, "wasm")),
            Task::Container(c) => c.check_at(&join(at, "container")),
        }
    }
}

impl Bounded for WasmTask {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        args(&self.args, at, "args")?;
        env_pairs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())), at)
    }
}

impl Bounded for ContainerTask {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        args(&self.command, at, "command")?;
        args(&self.args, at, "args")?;
        env_pairs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())), at)
        // workdir is checked by its own parser (at most 4096 bytes)
    }
}

fn args(list: &[crate::job::Arg], at: &str, name: &str) -> Result<(), BoundsError> {
    count(list.len(), MAX_ARGS, || join(at, name))?;
    for (i, a) in list.iter().enumerate() {
        text(a.as_str(), MAX_ARG_BYTES, || {
            format!("{}[{i}]", join(at, name))
        })?;
    }
    Ok(())
}

impl Bounded for Input {
    fn check_at(&self, _: &str) -> Result<(), BoundsError> {
        Ok(()) // the path is checked by its own parser (at most 4096 bytes)
    }
}

impl Bounded for Output {
    fn check_at(&self, _: &str) -> Result<(), BoundsError> {
        Ok(()) // path and tag are checked by their own parsers
    }
}

// ---------------------------------------------------------------------------
// Data plane.

impl Bounded for GetRequest {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        count(self.ranges.range_count(), MAX_RANGES, || join(at, "ranges"))
    }
}

impl Bounded for GetResponse {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            // the last group, sent for the size proof, may add one range
            GetResponse::Found { ranges, .. } => {
                count(ranges.range_count(), MAX_RANGES + 1, || {
                    join(at, "Found.ranges")
                })
            }
            GetResponse::NotFound => Ok(()),
            GetResponse::Error { message, .. } => {
                text(message, MAX_REASON_BYTES, || join(at, "Error.message"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::codec::{CodecError, MAX_MESSAGE_BYTES, decode_peer, encode};
    use crate::sched::{ExecutorKind, JobId, JobState, Needs};
    use crate::tag::{Hlc, TagName};
    use crate::{Hash, HaveBlob};

    /// `make(limit)` decodes from peer bytes; `make(limit + 1)` is refused
    /// with an error naming `field`.
    #[track_caller]
    fn bound<T>(limit: usize, field: &str, make: impl Fn(usize) -> T)
    where
        T: Serialize + DeserializeOwned + Bounded + std::fmt::Debug,
    {
        let at = encode(&make(limit), MAX_MESSAGE_BYTES).expect("encode at the bound");
        if let Err(e) = decode_peer::<T>(&at, MAX_MESSAGE_BYTES) {
            panic!("{field}: refused at the bound: {e}");
        }
        let over = encode(&make(limit + 1), MAX_MESSAGE_BYTES).expect("encode over the bound");
        match decode_peer::<T>(&over, MAX_MESSAGE_BYTES) {
            Err(CodecError::Bounds(e)) => {
                assert_eq!(e.field, field, "{e}");
                let shown = CodecError::Bounds(e).to_string();
                assert!(shown.contains(field) && shown.contains("limit"), "{shown}");
            }
            other => panic!("{field}: one over the bound gave {other:?}"),
        }
    }

    fn s(n: usize) -> String {
        "x".repeat(n)
    }

    fn node(n: usize) -> String {
        "1".repeat(n)
    }

    fn version(origin: String) -> TagVersion {
        TagVersion {
            target: None,
            hlc: Hlc::default(),
            origin,
        }
    }

    fn assignment() -> Assignment {
        Assignment {
            job: JobId::new(1, 2),
            attempt: 1,
            name: "j".into(),
            program: Program::Wasm {
                module: Hash::EMPTY,
                args: vec![],
                env: vec![],
            },
            inputs: vec![],
            outputs: vec![],
            needs: Needs {
                executor: ExecutorKind::Wasm,
                cpu_millis: 1,
                memory_bytes: 1,
                gpu: None,
            },
            timeout_ms: 1,
            cache_key: Hash::EMPTY,
            metrics: None,
        }
    }

    fn container(
        f: impl FnOnce(
            &mut Vec<String>,
            &mut Vec<String>,
            &mut Vec<(String, String)>,
            &mut Option<String>,
        ),
    ) -> Response {
        let (mut command, mut args, mut env, mut workdir) = (vec![], vec![], vec![], None);
        f(&mut command, &mut args, &mut env, &mut workdir);
        Response::Assignment(Box::new(Assignment {
            program: Program::Container {
                image: Hash::EMPTY,
                command,
                args,
                env,
                workdir,
            },
            ..assignment()
        }))
    }

    fn status() -> JobStatus {
        JobStatus {
            id: JobId::new(1, 2),
            name: "j".into(),
            coordinator: "c".into(),
            state: JobState::Running,
            attempt: 1,
            node: None,
            reason: None,
            result: None,
            cache_key: Hash::EMPTY,
            history: vec![],
            created_ms: 1,
            updated_ms: 1,
            revision: 1,
        }
    }

    fn transition() -> Transition {
        Transition {
            state: JobState::Pending,
            at_ms: 1,
            attempt: 0,
            node: None,
            reason: None,
        }
    }

    fn update(result: JobResult) -> Request {
        Request::TaskUpdate {
            job: JobId::new(1, 2),
            attempt: 1,
            state: JobState::Failed,
            reason: None,
            result: Some(Box::new(result)),
        }
    }

    #[test]
    fn tag_bounds() {
        bound(MAX_NODE_ID_BYTES, "version.origin", |n| TagUpdate {
            name: TagName::new("a:b").expect("tag"),
            version: version(node(n)),
        });
        let page = |tags: usize, versions: usize, origin: usize| Response::Tags {
            tags: (0..tags)
                .map(|i| {
                    (
                        TagName::new(&format!("a:v{i}")).expect("tag"),
                        (0..versions).map(|_| version(node(origin))).collect(),
                    )
                })
                .collect(),
            more: false,
        };
        bound(MAX_SYNC_TAGS, "Tags.tags", |n| page(n, 1, 1));
        bound(MAX_SYNC_VERSIONS, "Tags.tags[0].versions", |n| {
            page(1, n, 1)
        });
        bound(MAX_NODE_ID_BYTES, "Tags.tags[0].versions[0].origin", |n| {
            page(1, 1, n)
        });
    }

    #[test]
    fn origins_are_node_ids() {
        for bad in ["", "0OIl", "12D3 KooW", "a/b", "12D3KooW\u{e9}"] {
            let u = TagUpdate {
                name: TagName::new("a:b").expect("tag"),
                version: version(bad.to_string()),
            };
            let bytes = encode(&u, MAX_MESSAGE_BYTES).expect("encode");
            let err = TagUpdate::decode(&bytes).expect_err(bad);
            assert!(err.to_string().contains("version.origin"), "{err}");
        }
        let ok = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
        assert!(node_id(ok, String::new).is_ok());
    }

    #[test]
    fn request_bounds() {
        bound(MAX_HAS_HASHES, "Has.hashes", |n| Request::Has {
            hashes: vec![Hash::EMPTY; n],
            closure: false,
        });
        bound(MAX_REPLICAS as usize, "Replicate.replicas", |n| {
            Request::Replicate {
                hash: Hash::EMPTY,
                replicas: n as u32,
            }
        });
        bound(MAX_REASON_BYTES, "TaskUpdate.reason", |n| {
            Request::TaskUpdate {
                job: JobId::new(1, 2),
                attempt: 1,
                state: JobState::Failed,
                reason: Some(s(n)),
                result: None,
            }
        });
        bound(MAX_TEXT_BYTES, "Reserve.needs.gpu.model", |n| {
            Request::Reserve {
                job: JobId::new(1, 2),
                attempt: 1,
                needs: Box::new(Needs {
                    executor: ExecutorKind::Container,
                    cpu_millis: 1,
                    memory_bytes: 1,
                    gpu: Some(crate::job::GpuRequest {
                        count: 1,
                        memory: None,
                        model: Some(s(n)),
                    }),
                }),
            }
        });
    }

    #[test]
    fn result_bounds() {
        bound(MAX_OUTPUTS, "TaskUpdate.result.outputs", |n| {
            update(JobResult {
                outputs: (0..n)
                    .map(|i| (format!("/outputs/{i}"), Hash::EMPTY))
                    .collect(),
                ..JobResult::default()
            })
        });
        bound(MAX_PATH_BYTES, "TaskUpdate.result.outputs[0].path", |n| {
            update(JobResult {
                outputs: vec![(s(n), Hash::EMPTY)],
                ..JobResult::default()
            })
        });
        bound(MAX_TEXT_BYTES, "TaskUpdate.result.error.class", |n| {
            update(JobResult {
                error: Some((s(n), String::new())),
                ..JobResult::default()
            })
        });
        bound(MAX_REASON_BYTES, "TaskUpdate.result.error.message", |n| {
            update(JobResult {
                error: Some((String::new(), s(n))),
                ..JobResult::default()
            })
        });
        bound(MAX_NOTES, "TaskUpdate.result.notes", |n| {
            update(JobResult {
                notes: vec![String::new(); n],
                ..JobResult::default()
            })
        });
        bound(MAX_REASON_BYTES, "TaskUpdate.result.notes[0]", |n| {
            update(JobResult {
                notes: vec![s(n)],
                ..JobResult::default()
            })
        });
    }

    #[test]
    fn assignment_bounds() {
        let with = |f: &dyn Fn(&mut Assignment)| {
            let mut a = assignment();
            f(&mut a);
            Response::Assignment(Box::new(a))
        };
        bound(MAX_JOB_NAME_BYTES, "Assignment.name", |n| {
            with(&|a| a.name = s(n))
        });
        bound(MAX_INPUTS, "Assignment.inputs", |n| {
            with(&|a| {
                a.inputs = (0..n)
                    .map(|i| (Hash::EMPTY, format!("/inputs/{i}")))
                    .collect()
            })
        });
        bound(MAX_PATH_BYTES, "Assignment.inputs[0].path", |n| {
            with(&|a| a.inputs = vec![(Hash::EMPTY, s(n))])
        });
        bound(MAX_OUTPUTS, "Assignment.outputs", |n| {
            with(&|a| a.outputs = (0..n).map(|i| (format!("/outputs/{i}"), None)).collect())
        });
        bound(MAX_PATH_BYTES, "Assignment.outputs[0].path", |n| {
            with(&|a| a.outputs = vec![(s(n), None)])
        });
        bound(MAX_ARGS, "Assignment.program.wasm.args", |n| {
            with(&|a| {
                a.program = Program::Wasm {
                    module: Hash::EMPTY,
                    args: vec![String::new(); n],
                    env: vec![],
                }
            })
        });
        bound(MAX_ENV, "Assignment.program.wasm.env", |n| {
            with(&|a| {
                a.program = Program::Wasm {
                    module: Hash::EMPTY,
                    args: vec![],
                    env: (0..n).map(|i| (format!("K{i}"), String::new())).collect(),
                }
            })
        });
        bound(MAX_ARGS, "Assignment.program.container.command", |n| {
            container(|c, _, _, _| *c = vec![String::new(); n])
        });
        bound(MAX_ARG_BYTES, "Assignment.program.container.args[0]", |n| {
            container(|_, a, _, _| *a = vec![s(n)])
        });
        bound(
            MAX_ENV_NAME_BYTES,
            "Assignment.program.container.env[0].name",
            |n| container(|_, _, e, _| *e = vec![(s(n), String::new())]),
        );
        bound(
            MAX_ENV_VALUE_BYTES,
            "Assignment.program.container.env[0].value",
            |n| container(|_, _, e, _| *e = vec![("K".into(), s(n))]),
        );
        bound(
            MAX_PATH_BYTES,
            "Assignment.program.container.workdir",
            |n| container(|_, _, _, w| *w = Some(s(n))),
        );
    }

    #[test]
    fn job_status_bounds() {
        let job = |f: &dyn Fn(&mut JobStatus)| {
            let mut st = status();
            f(&mut st);
            Response::Job(Box::new(st))
        };
        bound(MAX_JOB_NAME_BYTES, "Job.name", |n| job(&|j| j.name = s(n)));
        bound(MAX_NODE_ID_BYTES, "Job.coordinator", |n| {
            job(&|j| j.coordinator = s(n))
        });
        bound(MAX_NODE_ID_BYTES, "Job.node", |n| {
            job(&|j| j.node = Some(s(n)))
        });
        bound(MAX_REASON_BYTES, "Job.reason", |n| {
            job(&|j| j.reason = Some(s(n)))
        });
        bound(MAX_HISTORY, "Job.history", |n| {
            job(&|j| j.history = vec![transition(); n])
        });
        bound(MAX_REASON_BYTES, "Job.history[0].reason", |n| {
            job(&|j| {
                j.history = vec![Transition {
                    reason: Some(s(n)),
                    ..transition()
                }]
            })
        });
        bound(MAX_NOTES, "Job.result.notes", |n| {
            job(&|j| {
                j.result = Some(JobResult {
                    notes: vec![String::new(); n],
                    ..JobResult::default()
                })
            })
        });
        bound(MAX_GOSSIP_STATUSES, "statuses", |n| JobGossip {
            statuses: vec![status(); n],
        });
        bound(MAX_NODE_ID_BYTES, "statuses[0].coordinator", |n| {
            JobGossip {
                statuses: vec![JobStatus {
                    coordinator: s(n),
                    ..status()
                }],
            }
        });
    }

    #[test]
    fn other_response_bounds() {
        bound(MAX_REASON_BYTES, "Error.message", |n| Response::Error {
            code: crate::ErrorCode::Busy,
            message: s(n),
        });
        bound(MAX_HAS_HASHES, "Have.blobs", |n| Response::Have {
            blobs: vec![
                HaveBlob {
                    hash: Hash::EMPTY,
                    size: 0,
                    tree: false,
                };
                n
            ],
        });
        bound(MAX_LISTEN_ADDRS, "Hello.listen_addrs", |n| {
            Response::Hello(Box::new(NodeAdvert {
                listen_addrs: vec![String::new(); n],
                ..NodeAdvert::default()
            }))
        });
    }

    #[test]
    fn advert_bounds() {
        let advert = |f: &dyn Fn(&mut NodeAdvert)| {
            let mut a = NodeAdvert::default();
            f(&mut a);
            a
        };
        bound(MAX_NODE_ID_BYTES, "peer_id", |n| {
            advert(&|a| a.peer_id = s(n))
        });
        bound(MAX_TEXT_BYTES, "version", |n| advert(&|a| a.version = s(n)));
        bound(MAX_TEXT_BYTES, "arch", |n| advert(&|a| a.arch = s(n)));
        bound(MAX_LISTEN_ADDRS, "listen_addrs", |n| {
            advert(&|a| a.listen_addrs = vec![String::new(); n])
        });
        bound(MAX_ADDR_BYTES, "listen_addrs[0]", |n| {
            advert(&|a| a.listen_addrs = vec![s(n)])
        });
        bound(MAX_ADDR_BYTES, "data_plane_addr", |n| {
            advert(&|a| a.data_plane_addr = Some(s(n)))
        });
        bound(MAX_GPUS, "gpus", |n| {
            advert(&|a| a.gpus = vec![GpuInfo::default(); n])
        });
        bound(crate::advert::MAX_ADVERT_RUNNING, "running", |n| {
            advert(&|a| {
                a.running = Some(vec![(crate::sched::JobId::new(1, 2), 1); n]);
            })
        });
        bound(MAX_TEXT_BYTES, "gpus[0].model", |n| {
            advert(&|a| {
                a.gpus = vec![GpuInfo {
                    model: s(n),
                    ..GpuInfo::default()
                }]
            })
        });
        bound(MAX_TEXT_BYTES, "gpus[0].uuid", |n| {
            advert(&|a| {
                a.gpus = vec![GpuInfo {
                    uuid: Some(s(n)),
                    ..GpuInfo::default()
                }]
            })
        });
        bound(MAX_TEXT_BYTES, "executors.container_runtime", |n| {
            advert(&|a| a.executors.container_runtime = Some(s(n)))
        });
        bound(MAX_LABELS, "labels", |n| {
            advert(&|a| a.labels = (0..n).map(|i| (format!("k{i}"), String::new())).collect())
        });
        bound(MAX_LABEL_VALUE_BYTES, "labels[\"k\"]", |n| {
            advert(&|a| a.labels = [("k".to_string(), s(n))].into())
        });
        bound(
            MAX_LABEL_KEY_BYTES,
            "labels key \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
            |n| advert(&|a| a.labels = [(s(n), String::new())].into()),
        );
    }

    fn spec_yaml(args: usize, env: usize, inputs: usize, constraints: usize) -> String {
        let mut y = String::from(
            "apiVersion: weft/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  task:\n    wasm:\n      module: datasets/m:v1\n      args: [",
        );
        y.push_str(&vec!["a"; args].join(", "));
        y.push_str("]\n      env: {");
        y.push_str(
            &(0..env)
                .map(|i| format!("K{i}: v"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        y.push_str("}\n  inputs: [");
        y.push_str(
            &(0..inputs)
                .map(|i| format!("{{from: d/x:v1, path: /inputs/{i}}}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        y.push_str("]\n  constraints: {");
        y.push_str(
            &(0..constraints)
                .map(|i| format!("k{i}: v"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        y.push_str("}\n");
        y
    }

    #[test]
    fn job_spec_bounds_hold_for_yaml_and_peers() {
        for (limit, field, make) in [
            (
                MAX_ARGS,
                "spec.task.wasm.args",
                &(|n| spec_yaml(n, 0, 0, 0)) as &dyn Fn(usize) -> String,
            ),
            (MAX_ENV, "spec.task.wasm.env", &|n| spec_yaml(0, n, 0, 0)),
            (MAX_INPUTS, "spec.inputs", &|n| spec_yaml(0, 0, n, 0)),
            (MAX_LABELS, "spec.constraints", &|n| spec_yaml(0, 0, 0, n)),
        ] {
            let ok = JobSpec::from_yaml(&make(limit)).expect(field);
            let cbor = ok.to_cbor().expect("encode");
            assert_eq!(JobSpec::from_cbor(&cbor).expect("from a peer"), ok);
            let err = JobSpec::from_yaml(&make(limit + 1)).expect_err(field);
            match &err {
                crate::JobSpecError::Field { path, message, .. } => {
                    assert_eq!(path, field, "{err}");
                    assert!(message.contains("exceeds the limit"), "{err}");
                }
                other => panic!("{field}: {other}"),
            }
        }
        // an argument too long, from YAML
        let long = spec_yaml(1, 0, 0, 0).replace("[a]", &format!("[{}]", s(MAX_ARG_BYTES + 1)));
        let err = JobSpec::from_yaml(&long).expect_err("long arg");
        assert!(err.to_string().contains("spec.task.wasm.args[0]"), "{err}");
    }

    #[test]
    fn clip_fits_the_bound_on_a_char_boundary() {
        let mut t = "é".repeat(10);
        clip(&mut t, 7);
        assert!(t.len() <= 7, "{t}");
        assert!(t.ends_with('…'));
        let mut short = "abc".to_string();
        clip(&mut short, 3);
        assert_eq!(short, "abc");
        let mut reason = s(MAX_REASON_BYTES * 2);
        clip(&mut reason, MAX_REASON_BYTES);
        assert!(text(&reason, MAX_REASON_BYTES, String::new).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_peer_decoders(bytes in proptest::collection::vec(0u8..=255, 0..512)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
            let _ = TagUpdate::decode(&bytes);
            let _ = JobGossip::decode(&bytes);
            let _ = NodeAdvert::decode(&bytes);
            let _ = JobSpec::from_cbor(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------
// Services.

/// Longest method in a service request head.
pub const MAX_METHOD_BYTES: usize = 32;
/// Longest path and query in a service request head.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Longest header name.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value.
pub const MAX_HEADER_VALUE_BYTES: usize = 16 * 1024;
/// Most bytes of one replica's logs in [`Response::ServiceLogs`].
pub const MAX_REPLICA_LOG_BYTES: usize = 64 * 1024;

fn headers(h: &[(String, String)], at: &str) -> Result<(), BoundsError> {
    count(h.len(), MAX_SERVICE_HEADERS, || join(at, "headers"))?;
    for (i, (k, v)) in h.iter().enumerate() {
        text(k, MAX_HEADER_NAME_BYTES, || {
            format!("{at}.headers[{i}].name")
        })?;
        text(v, MAX_HEADER_VALUE_BYTES, || {
            format!("{at}.headers[{i}].value")
        })?;
    }
    Ok(())
}

impl Bounded for ServiceRequestHead {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        text(&self.method, MAX_METHOD_BYTES, || join(at, "method"))?;
        text(&self.uri, MAX_URI_BYTES, || join(at, "uri"))?;
        headers(&self.headers, at)
    }
}

impl Bounded for ServiceResponseHead {
    fn check_at(&self, at: &str) -> Result<(), BoundsError> {
        match self {
            ServiceResponseHead::Response { headers: h, .. } => headers(h, &join(at, "Response")),
            ServiceResponseHead::Refused { message, .. } => {
                text(message, MAX_TEXT_BYTES, || join(at, "Refused.message"))
            }
        }
    }
}
