//! The ledger: the facts about work that every node keeps.
//!
//! Goals: one replicated mechanism under model versions, aliases, runs,
//! lineage, pipeline runs and trigger claims. The ledger is a grow-only set
//! of immutable [`Entry`]s. Each is written once by one node (its `origin`)
//! at a hybrid-logical-clock reading (`hlc`), so `(kind, subject, hlc,
//! origin)` names it everywhere and two nodes never write the same key.
//! Every view (a model's numbered versions, an alias and its history, a
//! run's params and metrics) is a fold over the entries of one subject in
//! that order, so every node that holds the same entries shows the same
//! thing.
//!
//! Non-goals: storing, replicating or folding entries (the node's `ledger`
//! module does that); deciding who may write what (the receiver checks that
//! a gossiped entry's origin signed the gossip).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};
use crate::hash::Hash;
use crate::sched::{ExecutorKind, JobId};
use crate::tag::{Hlc, TagName};

/// Largest encoded entry, in bytes.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// One fact, written once by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When its writer wrote it.
    pub hlc: Hlc,
    /// The writer's node id.
    pub origin: String,
    pub body: EntryBody,
}

/// What an entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryBody {
    /// A new version of a model (numbered by its place among the model's
    /// versions in `(hlc, origin)` order, from 1).
    ModelVersion(ModelVersion),
    /// An alias moved (or removed).
    Alias(AliasMove),
    /// Something about a run: its start, params, metrics, tags or end.
    Run(RunEvent),
    /// What made an artifact.
    Lineage(Lineage),
    /// A pipeline run's state, as its coordinator last wrote it.
    PipelineRun(PipelineRunRecord),
    /// A pipeline kept for its triggers.
    Pipeline(PipelineDef),
    /// The one node that runs a pipeline for one tag change.
    Trigger(TriggerClaim),
    /// A change to a service's desired state.
    Service(crate::service::ServiceEvent),
}

/// Which kind of entry, the first byte of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    ModelVersion = 1,
    Alias = 2,
    Run = 3,
    Lineage = 4,
    PipelineRun = 5,
    Pipeline = 6,
    Trigger = 7,
    Service = 8,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::ModelVersion,
        EntryKind::Alias,
        EntryKind::Run,
        EntryKind::Lineage,
        EntryKind::PipelineRun,
        EntryKind::Pipeline,
        EntryKind::Trigger,
        EntryKind::Service,
    ];

    pub fn from_byte(b: u8) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| *k as u8 == b)
    }
}

impl EntryBody {
    pub fn kind(&self) -> EntryKind {
        match self {
            EntryBody::ModelVersion(_) => EntryKind::ModelVersion,
            EntryBody::Alias(_) => EntryKind::Alias,
            EntryBody::Run(_) => EntryKind::Run,
            EntryBody::Lineage(_) => EntryKind::Lineage,
            EntryBody::PipelineRun(_) => EntryKind::PipelineRun,
            EntryBody::Pipeline(_) => EntryKind::Pipeline,
            EntryBody::Trigger(_) => EntryKind::Trigger,
            EntryBody::Service(_) => EntryKind::Service,
        }
    }

    /// What the entry is about: the entries of one subject fold into one view.
    pub fn subject(&self) -> String {
        match self {
            EntryBody::ModelVersion(v) => v.name.to_string(),
            EntryBody::Alias(a) => alias_subject(&a.name, &a.alias),
            EntryBody::Run(r) => r.run.to_string(),
            EntryBody::Lineage(l) => l.artifact.to_hex(),
            EntryBody::PipelineRun(p) => p.id.to_string(),
            EntryBody::Pipeline(p) => p.name.clone(),
            EntryBody::Trigger(t) => trigger_subject(&t.pipeline, &t.tag, &t.target),
            EntryBody::Service(s) => s.name.to_string(),
        }
    }
}

/// The subject of an alias's entries.
pub fn alias_subject(name: &ModelName, alias: &AliasName) -> String {
    format!("{name}@{alias}")
}

/// The subject of the claims on one tag change for one pipeline.
pub fn trigger_subject(pipeline: &str, tag: &TagName, target: &Hash) -> String {
    format!("{pipeline} {tag} {}", target.to_hex())
}

/// The prefix of every key of one subject: kind byte, subject, NUL.
pub fn subject_prefix(kind: EntryKind, subject: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(subject.len() + 2);
    k.push(kind as u8);
    k.extend_from_slice(subject.as_bytes());
    k.push(0);
    k
}

impl Entry {
    /// The entry's key: kind, subject, NUL, the clock (big-endian wall ms
    /// and counter) and the origin, so a prefix scan of a subject returns its
    /// entries in `(hlc, origin)` order.
    pub fn key(&self) -> Vec<u8> {
        let mut k = subject_prefix(self.body.kind(), &self.body.subject());
        k.extend_from_slice(&self.hlc.wall_ms.to_be_bytes());
        k.extend_from_slice(&self.hlc.counter.to_be_bytes());
        k.extend_from_slice(self.origin.as_bytes());
        k
    }

    /// The order of entries of one subject: clock, then writer.
    pub fn order(&self, other: &Entry) -> std::cmp::Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.origin.cmp(&other.origin))
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_ENTRY_BYTES)
    }

    /// Decodes an entry from a peer (or from disk), checking every bound.
    pub fn decode(bytes: &[u8]) -> Result<Entry, CodecError> {
        codec::decode_peer(bytes, MAX_ENTRY_BYTES)
    }
}

/// Ledger entries gossiped on `weft/ledger/1`, all written by the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerGossip {
    pub entries: Vec<Entry>,
}

impl LedgerGossip {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_MESSAGE_BYTES)
    }

    /// Decodes gossip from a peer, checking every field's bound.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_MESSAGE_BYTES)
    }
}

// ---------------------------------------------------------------------------
// Models.

/// A new version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: ModelName,
    /// The model's files.
    pub artifact: Hash,
    /// The run that made it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<JobId>,
    /// What the user registered, as typed (`models/iris-latest:v1`, a run's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An alias pointed at a version (or removed). Who moved it is the entry's
/// origin; when, its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMove {
    pub name: ModelName,
    pub alias: AliasName,
    /// The version it points at now; `None` removes it.
    pub version: Option<u64>,
    /// The version it pointed at before, as its writer saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Why (`rollback`, `promoted by pipeline iris run …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest model name.
pub const MAX_MODEL_NAME_BYTES: usize = 128;
/// Longest alias.
pub const MAX_ALIAS_BYTES: usize = 64;

/// A model's name: `/`-separated segments of letters, digits, `.`, `_`, `-`
/// (as a tag's repository), at most 128 bytes. `models/NAME@ALIAS` and
/// `models/NAME:N` name its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

/// An alias of a model: letters, digits, `.`, `_`, `-`, not only digits (so
/// it never reads as a version number), at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AliasName(String);

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ModelName {
    pub fn new(s: &str) -> Result<ModelName, String> {
        if s.len() > MAX_MODEL_NAME_BYTES || !s.split('/').all(segment_ok) {
            return Err(format!(
                "invalid model name {:?}: use segments of letters, digits, '.', '_' and '-' \
                 separated by '/', at most {MAX_MODEL_NAME_BYTES} bytes (e.g. iris)",
                s.chars().take(80).collect::<String>()
            ));
        }
        Ok(ModelName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AliasName {
    pub fn new(s: &str) -> Result<AliasName, String> {
        if s.len() > MAX_ALIAS_BYTES || !segment_ok(s) || s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid alias {:?}: use letters, digits, '.', '_' and '-', not only digits, \
                 at most {MAX_ALIAS_BYTES} bytes (e.g. champion)",
                s.chars().take(80).collect::<String>()
            ));
        }
        Ok(AliasName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_impls {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $t::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $t::new(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    };
}
string_impls!(ModelName);
string_impls!(AliasName);

/// Which version of a model a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSelector {
    /// `models/NAME:N`
    Version(u64),
    /// `models/NAME@ALIAS`
    Alias(AliasName),
}

/// The prefix of model references.
pub const MODELS_PREFIX: &str = "models/";

/// Reads `models/NAME@ALIAS` or `models/NAME:N`; anything else is `None`.
/// (`models/NAME:N` is also a valid tag name: the node resolves it through
/// the registry when NAME is a registered model, else as a tag.)
pub fn parse_model_ref(s: &str) -> Option<(ModelName, ModelSelector)> {
    let rest = s.strip_prefix(MODELS_PREFIX)?;
    if let Some((name, alias)) = rest.rsplit_once('@') {
        return Some((
            ModelName::new(name).ok()?,
            ModelSelector::Alias(AliasName::new(alias).ok()?),
        ));
    }
    let (name, n) = rest.rsplit_once(':')?;
    if n.is_empty() || n.len() > 19 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        ModelName::new(name).ok()?,
        ModelSelector::Version(n.parse().ok()?),
    ))
}

// ---------------------------------------------------------------------------
// Runs.

/// Something about a run. A run's view folds its events in order: the
/// first start, every param's first value (params are write-once), every
/// metric point (append-only), the last value of each tag, the first end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    pub run: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<RunStart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RunEnd>,
}

/// A run began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    /// The run's name (the job's or step's name).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The job it is, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub start_ms: u64,
}

/// A run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnd {
    /// `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub end_ms: u64,
    /// The node that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its result was reused from an identical earlier job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// One metric value: a number at a step (0 for a single value; the index
/// for each point of a series).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: u64,
    pub timestamp_ms: u64,
}

// Metric values are finite (checked on every decode from a peer and when a
// metrics file is read), so comparing their bits is an equivalence.
impl PartialEq for Metric {
    fn eq(&self, other: &Metric) -> bool {
        self.key == other.key
            && self.value.to_bits() == other.value.to_bits()
            && self.step == other.step
            && self.timestamp_ms == other.timestamp_ms
    }
}

impl Eq for Metric {}

// ---------------------------------------------------------------------------
// Lineage.

/// What made an artifact: written by the coordinator of the job whose
/// output it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub artifact: Hash,
    /// The output path it was stored from.
    pub path: String,
    pub job: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The module or image.
    pub program: Hash,
    pub executor: ExecutorKind,
    /// Input ids and where they were mounted.
    pub inputs: Vec<(Hash, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    /// The node that ran it.
    pub node: String,
    pub at_ms: u64,
}

// ---------------------------------------------------------------------------
// Pipelines.

/// A pipeline run as its coordinator sees it; the newest entry of a run wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRunRecord {
    pub id: JobId,
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The node it was submitted to, which runs it.
    pub coordinator: String,
    pub state: PipelineState,
    /// The params after defaults and overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    /// The change that started it (`tag datasets/iris:v1 -> ID`), if a trigger did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Where a pipeline run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One step of a pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub state: StepState,
    /// The steps it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for the steps it needs.
    Waiting,
    Running,
    /// Answered from the cache.
    Cached,
    /// Ran and succeeded.
    Ran,
    Failed,
    /// Not run: a step it needs failed, or its gate did not hold.
    Skipped,
    Cancelled,
}

/// A pipeline kept so that its triggers fire on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDef {
    pub name: String,
    /// The pipeline spec, as YAML.
    pub spec: String,
    /// Param overrides given when it was submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    /// `false` once its triggers are turned off.
    pub active: bool,
}

/// A node claims the run of `pipeline` for the change of `tag` to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerClaim {
    pub pipeline: String,
    pub tag: TagName,
    pub target: Hash,
    /// The pipeline run it started, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<JobId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: EntryBody) -> Entry {
        Entry {
            hlc: Hlc {
                wall_ms: 1,
                counter: 2,
            },
            origin: "n".into(),
            body,
        }
    }

    /// The entry format, on the wire and on disk. A change here needs
    /// `weft/ledger/2` and a new record version.
    #[test]
    fn golden_entries() {
        let e = entry(EntryBody::ModelVersion(ModelVersion {
            name: ModelName::new("iris").expect("name"),
            artifact: Hash::EMPTY,
            run: None,
            source: None,
        }));
        // checked against an independent CBOR encoder (Python's cbor2)
        assert_eq!(
            hex::encode(e.encode().expect("encode")),
            concat!(
                "a3",
                "63686c63",
                "a2",
                "6777616c6c5f6d73",
                "01",
                "67636f756e746572",
                "02",
                "666f726967696e",
                "616e",
                "64626f6479",
                "a1",
                "6d6d6f64656c5f76657273696f6e",
                "a2",
                "646e616d65",
                "6469726973",
                "686172746966616374",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
            )
        );
        let run = entry(EntryBody::Run(RunEvent {
            run: JobId::new(1, 2),
            start: None,
            params: vec![],
            metrics: vec![Metric {
                key: "acc".into(),
                value: 0.5,
                step: 0,
                timestamp_ms: 3,
            }],
            tags: vec![],
            end: None,
        }));
        let bytes = run.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a3",
                "63686c63",
                "a2",
                "6777616c6c5f6d73",
                "01",
                "67636f756e746572",
                "02",
                "666f726967696e",
                "616e",
                "64626f6479",
                "a1",
                "6372756e",
                "a2",
                "6372756e",
                "74",
                "3030303030303030303030313030303030303032",
                "676d657472696373",
                "81",
                "a4",
                "636b6579",
                "63616363",
                "6576616c7565",
                // floats take their shortest exact form (cbor2 with canonical=True agrees)
                "f93800",
                "6473746570",
                "00",
                "6c74696d657374616d705f6d73",
                "03"
            )
        );
        assert_eq!(Entry::decode(&bytes).expect("decode"), run);
    }

    #[test]
    fn keys_order_a_subject_by_clock_then_origin() {
        let mut a = entry(EntryBody::ModelVersion(ModelVersion {
            name: ModelName::new("iris").expect("name"),
            artifact: Hash::EMPTY,
            run: None,
            source: None,
        }));
        let mut b = a.clone();
        b.origin = "m".into();
        b.hlc.wall_ms = 2;
        assert!(a.key() < b.key());
        assert!(
            a.key()
                .starts_with(&subject_prefix(EntryKind::ModelVersion, "iris"))
        );
        a.hlc.wall_ms = 256;
        assert!(a.key() > b.key(), "the clock is big-endian");
        // a subject that is a prefix of another does not share its prefix
        assert!(
            !subject_prefix(EntryKind::ModelVersion, "iris2")
                .starts_with(&subject_prefix(EntryKind::ModelVersion, "iris"))
        );
    }

    #[test]
    fn model_references() {
        assert_eq!(
            parse_model_ref("models/iris@champion"),
            Some((
                ModelName::new("iris").expect("name"),
                ModelSelector::Alias(AliasName::new("champion").expect("alias"))
            ))
        );
        assert_eq!(
            parse_model_ref("models/team/iris:12"),
            Some((
                ModelName::new("team/iris").expect("name"),
                ModelSelector::Version(12)
            ))
        );
        for not in [
            "models/iris:v1",
            "datasets/iris@x",
            "models/iris@12",
            "models/@a",
            "models/../x@a",
            "models/iris:",
            "models/iris:99999999999999999999",
        ] {
            assert_eq!(parse_model_ref(not), None, "{not}");
        }
        assert!(AliasName::new("3").is_err());
        assert!(AliasName::new("v3").is_ok());
    }
}
