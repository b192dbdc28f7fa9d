//! Job specs: what a user submits with `weft run -f job.yaml`.
//!
//! Goals: one strict parser for the YAML a user writes, and one serialized
//! form (the same field names, as CBOR) that travels between nodes. Every
//! value is checked where it is read, and a refusal names the field path
//! (`spec.resources.memory: invalid quantity "512Mx" ...`), so a user can fix
//! the spec without guessing. Unknown fields are refused, not ignored: a typo
//! such as `output:` must not silently drop the job's results.
//!
//! Shape (`apiVersion: weft/v1`, `kind: Job`):
//!
//! ```yaml
//! apiVersion: weft/v1
//! kind: Job
//! metadata: {name: train-mnist, experiment: mnist}   # experiment groups runs
//! spec:
//!   task:                      # exactly one of wasm / container
//!     wasm: {module: artifacts/train:v2, args: ["--epochs", "3"], env: {SEED: "1"}}
//!     # container: {image: images/pytorch:2.4, command: [python], args: [train.py], env: {}, workdir: /work}
//!   inputs:  [{from: datasets/mnist:v1, path: /inputs/mnist}]
//!   outputs: [{path: /outputs/model, tag: models/mnist:v1}]
//!   resources: {cpu: 1, memory: 512Mi, gpu: {count: 1, memory: 16Gi, model: H100}}
//!   constraints: {zone: lab-a}
//!   timeout: 10m               # units ms, s, m, h; may be combined: 1h30m
//!   retries: 2                 # default 2
//!   cache: true                # default true
//!   metrics: /outputs/metrics.json  # default; numbers and lists of numbers
//! ```
//!
//! Serialized form: the fields above, in that order, with empty lists and
//! maps and absent options left out. Quantities and durations serialize as
//! their canonical strings (`512Mi`, `1h30m`, `500m` for half a CPU), so the
//! form reads back to an equal value in YAML and CBOR alike.
//!
//! Non-goals: resolving artifact references (the coordinator does that), and
//! deciding defaults for what the spec leaves out (timeout, memory): the node
//! applies its own configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounds::Bounded;
use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};
use crate::tag::{ArtifactRef, TagName};
use crate::tree::validate_name;

/// The only `apiVersion` this code reads and writes.
pub const API_VERSION: &str = "weft/v1";

/// Largest job spec accepted, in bytes of YAML or CBOR.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// Most retries a job may ask for.
pub const MAX_RETRIES: u32 = 10;

/// Longest timeout a job may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where inputs appear inside a task.
pub const INPUTS_ROOT: &str = "/inputs";

/// Where a task leaves its outputs.
pub const OUTPUTS_ROOT: &str = "/outputs";

/// Why a job spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobSpecError {
    /// A field, named by its path, holds a value that is not acceptable.
    #[error("{path}: {message}{}", at_line(.line))]
    Field {
        path: String,
        message: String,
        /// Where in the YAML, when known.
        line: Option<usize>,
    },
    /// The document as a whole is not a job spec (bad YAML, wrong top level).
    #[error("invalid spec: {0}")]
    Invalid(String),
    #[error("spec of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("job spec: {0}")]
    Codec(#[from] CodecError),
    #[error("cannot write the job spec as YAML: {0}")]
    Yaml(String),
}

/// A whole job spec document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JobSpecWire", into = "JobSpecWire")]
pub struct JobSpec {
    pub metadata: Metadata,
    pub spec: Spec,
}

/// `metadata`: what the job is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: JobName,
    /// Groups the job's run with others (`weft runs ls --experiment E`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<JobName>,
}

/// `spec`: what to run, on what, with which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub task: Task,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub resources: Resources,
    /// Node labels the executor must carry, e.g. `zone: lab-a`.
    pub constraints: BTreeMap<LabelKey, String>,
    /// Wall-clock limit for one attempt; `None` leaves it to the node.
    pub timeout: Option<Timeout>,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Whether an earlier result for the same task and inputs may be reused.
    pub cache: bool,
    /// Where the task writes its metrics; `None` reads `/outputs/metrics.json`
    /// when the task leaves one.
    pub metrics: Option<OutputPath>,
}

/// `spec.task`: exactly one executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TaskWire", into = "TaskWire")]
pub enum Task {
    Wasm(WasmTask),
    Container(ContainerTask),
}

/// `spec.task.wasm`: a WASI module or component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmTask {
    #[serde(with = "artifact_ref")]
    pub module: ArtifactRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, EnvValue>,
}

/// `spec.task.container`: an OCI container from an imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerTask {
    #[serde(with = "artifact_ref")]
    pub image: ArtifactRef,
    /// Replaces the image's entrypoint when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<Arg>,
    /// Replaces the image's cmd when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    /// Added to (and overriding) the image's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, EnvValue>,
    /// Replaces the image's working directory when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<AbsPath>,
}

/// One entry of `spec.inputs`: an artifact placed under `/inputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(with = "artifact_ref")]
    pub from: ArtifactRef,
    pub path: InputPath,
}

/// One entry of `spec.outputs`: a path under `/outputs` to keep, optionally tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub path: OutputPath,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagName>,
}

/// `spec.resources`: what the task needs of its executor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
}

impl Resources {
    /// Whether nothing was asked for.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.gpu.is_none()
    }
}

/// `spec.resources.gpu`: whole devices, assigned exclusively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    #[serde(default = "one", deserialize_with = "gpu_count")]
    pub count: u32,
    /// Memory each device must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// A model name the device's name must contain, e.g. `H100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

fn one() -> u32 {
    1
}

fn gpu_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 || n > 64 {
        return Err(de::Error::custom(format!(
            "gpu count {n} is out of range: ask for 1 to 64 devices, or leave gpu out"
        )));
    }
    Ok(n)
}

fn default_retries() -> u32 {
    2
}

fn default_cache() -> bool {
    true
}

impl JobSpec {
    /// Parses and checks a YAML job spec.
    pub fn from_yaml(text: &str) -> Result<JobSpec, JobSpecError> {
        check_len(text.len())?;
        if text.trim().is_empty() {
            return Err(JobSpecError::Invalid(
                "the document is empty; a job spec starts with `apiVersion: weft/v1`".to_string(),
            ));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(path_error)
    }

    /// Writes the spec as YAML (the serialized form described in the module docs).
    pub fn to_yaml(&self) -> Result<String, JobSpecError> {
        serde_yaml_ng::to_string(self).map_err(|e| JobSpecError::Yaml(e.to_string()))
    }

    /// Encodes the spec as CBOR for the wire.
    pub fn to_cbor(&self) -> Result<Vec<u8>, JobSpecError> {
        Ok(codec::encode(self, MAX_SPEC_BYTES)?)
    }

    /// Decodes and checks a spec received from a peer.
    pub fn from_cbor(bytes: &[u8]) -> Result<JobSpec, JobSpecError> {
        check_len(bytes.len())?;
        Ok(codec::decode_peer(
            bytes,
            MAX_SPEC_BYTES.min(MAX_MESSAGE_BYTES),
        )?)
    }

    /// Runs the checks across fields that parsing runs on a spec built in
    /// code (a pipeline step's job); the error names the field.
    pub fn checked(self) -> Result<JobSpec, JobSpecError> {
        match check_across(&self) {
            Ok(()) => Ok(self),
            Err(CrossFieldError(m)) => Err(match m.split_once(": ") {
                Some((path, message)) if path.starts_with("spec") => JobSpecError::Field {
                    path: path.to_string(),
                    message: message.to_string(),
                    line: None,
                },
                _ => JobSpecError::Invalid(m),
            }),
        }
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_str()
    }
}

fn check_len(len: usize) -> Result<(), JobSpecError> {
    if len > MAX_SPEC_BYTES {
        return Err(JobSpecError::TooLarge {
            len,
            limit: MAX_SPEC_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn path_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> JobSpecError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner.location().map(|l| l.line());
    let mut message = inner.to_string();
    // serde_yaml_ng appends " at line L column C" (kept apart in `line`) and
    // prefixes its own, coarser path (replaced by the precise one).
    if let Some(i) = message.rfind(" at line ") {
        let tail = &message[i + " at line ".len()..];
        if tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            message.truncate(i);
        }
    }
    if let Some((p, m)) = message.split_once(": ")
        && path != "."
        && !p.contains(' ')
        && path.starts_with(p)
    {
        message = m.to_string();
    }
    if path == "." || path == "?" || path.is_empty() {
        // Checks across fields name their own paths; syntax errors have none.
        match message.split_once(": ") {
            Some((p, m)) if p == "spec" || p.starts_with("spec.") => JobSpecError::Field {
                path: p.to_string(),
                message: m.to_string(),
                line: None,
            },
            _ => JobSpecError::Invalid(message),
        }
    } else {
        JobSpecError::Field {
            path,
            message,
            line,
        }
    }
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The serialized form and the checks across fields.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ApiVersion {
    #[serde(rename = "weft/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Job,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JobSpecWire {
    api_version: ApiVersion,
    kind: Kind,
    metadata: Metadata,
    spec: SpecWire,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task: Option<Task>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<Input>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<Output>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    resources: Resources,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    constraints: BTreeMap<LabelKey, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<Timeout>,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_cache")]
    cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics: Option<OutputPath>,
}

impl From<JobSpec> for JobSpecWire {
    fn from(j: JobSpec) -> Self {
        let s = j.spec;
        JobSpecWire {
            api_version: ApiVersion::V1,
            kind: Kind::Job,
            metadata: j.metadata,
            spec: SpecWire {
                task: Some(s.task),
                inputs: s.inputs,
                outputs: s.outputs,
                resources: s.resources,
                constraints: s.constraints,
                timeout: s.timeout,
                retries: s.retries,
                cache: s.cache,
                metrics: s.metrics,
            },
        }
    }
}

/// An error found by a check across fields: its message starts with the
/// path it is about, so the parser can report it as a [`JobSpecError::Field`].
#[derive(Debug)]
struct CrossFieldError(String);

impl fmt::Display for CrossFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<JobSpecWire> for JobSpec {
    type Error = CrossFieldError;

    fn try_from(w: JobSpecWire) -> Result<Self, Self::Error> {
        let s = w.spec;
        let task = s.task.ok_or_else(|| {
            CrossFieldError("spec.task: missing: give wasm or container".to_string())
        })?;
        let spec = JobSpec {
            metadata: w.metadata,
            spec: Spec {
                task,
                inputs: s.inputs,
                outputs: s.outputs,
                resources: s.resources,
                constraints: s.constraints,
                timeout: s.timeout,
                retries: s.retries,
                cache: s.cache,
                metrics: s.metrics,
            },
        };
        check_across(&spec)?;
        Ok(spec)
    }
}

/// The checks across fields every spec passes, parsed or built in code:
/// retries, overlapping paths, a tag given twice, and every bound.
fn check_across(spec: &JobSpec) -> Result<(), CrossFieldError> {
    let s = &spec.spec;
    if s.retries > MAX_RETRIES {
        return Err(CrossFieldError(format!(
            "spec.retries: {} is more than the most allowed, {MAX_RETRIES}",
            s.retries
        )));
    }
    let input_paths: Vec<&str> = s.inputs.iter().map(|i| i.path.as_str()).collect();
    check_disjoint("spec.inputs", &input_paths)?;
    let output_paths: Vec<&str> = s.outputs.iter().map(|o| o.path.as_str()).collect();
    check_disjoint("spec.outputs", &output_paths)?;
    for (i, o) in s.outputs.iter().enumerate() {
        if let Some(tag) = &o.tag
            && let Some(j) = s.outputs[..i]
                .iter()
                .position(|p| p.tag.as_ref() == Some(tag))
        {
            return Err(CrossFieldError(format!(
                "spec.outputs[{i}].tag: {tag} is already given to spec.outputs[{j}]; \
                 each output needs its own tag"
            )));
        }
    }
    // every spec, typed or from a peer, fits the same bounds
    spec.check_bounds()
        .map_err(|e| CrossFieldError(e.to_string()))
}

/// Refuses two paths where one equals or contains the other.
fn check_disjoint(list: &str, paths: &[&str]) -> Result<(), CrossFieldError> {
    for (i, a) in paths.iter().enumerate() {
        for (j, b) in paths[..i].iter().enumerate() {
            let nested = |outer: &str, inner: &str| {
                inner == outer
                    || (inner.starts_with(outer)
                        && inner.as_bytes().get(outer.len()) == Some(&b'/'))
            };
            if nested(a, b) || nested(b, a) {
                return Err(CrossFieldError(format!(
                    "{list}[{i}].path: {a:?} overlaps {list}[{j}].path {b:?}; give each its own folder"
                )));
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wasm: Option<WasmTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<ContainerTask>,
}

impl TryFrom<TaskWire> for Task {
    type Error = String;

    fn try_from(w: TaskWire) -> Result<Self, Self::Error> {
        match (w.wasm, w.container) {
            (Some(w), None) => Ok(Task::Wasm(w)),
            (None, Some(c)) => Ok(Task::Container(c)),
            (None, None) => Err("missing: give wasm or container".to_string()),
            (Some(_), Some(_)) => {
                Err("both wasm and container given: a task runs on exactly one".to_string())
            }
        }
    }
}

impl From<Task> for TaskWire {
    fn from(t: Task) -> Self {
        match t {
            Task::Wasm(w) => TaskWire {
                wasm: Some(w),
                container: None,
            },
            Task::Container(c) => TaskWire {
                wasm: None,
                container: Some(c),
            },
        }
    }
}

pub(crate) mod artifact_ref {
    //! Artifact references as their text form.
    use super::*;

    pub(crate) fn serialize<S: Serializer>(r: &ArtifactRef, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ArtifactRef, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Checked strings.

/// Declares a string newtype checked by `$check` when parsed or deserialized.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

checked_string!(
    /// A job name: 1 to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    JobName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid job name {:?}: use 1 to 128 letters, digits, '.', '_' or '-', \
                 starting with a letter or digit",
                shown(s)
            ))
        }
    }
);

checked_string!(
    /// A command-line argument (no NUL bytes).
    Arg,
    |s| {
        if s.contains('\0') {
            Err("arguments cannot contain NUL bytes".to_string())
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// An environment variable name: not empty, no `=`, no NUL.
    EnvName,
    |s| {
        if s.is_empty() || s.contains('=') || s.contains('\0') {
            Err(format!(
                "invalid environment variable name {:?}: it must be non-empty, without '=' or NUL",
                shown(s)
            ))
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// An environment variable value (no NUL bytes).
    EnvValue,
    |s| {
        if s.contains('\0') {
            Err("environment values cannot contain NUL bytes".to_string())
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// A node label key such as `zone` or `weft.io/arch`.
    LabelKey,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid label key {:?}: use 1 to 128 letters, digits, '.', '_', '-' or '/'",
                shown(s)
            ))
        }
    }
);

checked_string!(
    /// An absolute path inside the task, without `.` or `..` components.
    AbsPath,
    |s| check_abs_path(s, None)
);

checked_string!(
    /// Where an input appears: `/inputs` or a path below it.
    InputPath,
    |s| check_abs_path(s, Some(INPUTS_ROOT))
);

checked_string!(
    /// An output to keep: `/outputs` or a path below it.
    OutputPath,
    |s| check_abs_path(s, Some(OUTPUTS_ROOT))
);

impl InputPath {
    /// The path below `/inputs` (empty for `/inputs` itself).
    pub fn relative(&self) -> &str {
        self.0[INPUTS_ROOT.len()..].trim_start_matches('/')
    }
}

impl OutputPath {
    /// The path below `/outputs` (empty for `/outputs` itself).
    pub fn relative(&self) -> &str {
        self.0[OUTPUTS_ROOT.len()..].trim_start_matches('/')
    }
}

fn check_abs_path(s: &str, root: Option<&str>) -> Result<(), String> {
    let fail = |why: &str| Err(format!("invalid path {:?}: {why}", shown(s)));
    if s.len() > 4096 {
        return fail("longer than 4096 bytes");
    }
    let Some(rest) = s.strip_prefix('/') else {
        return fail("it must be absolute (start with '/')");
    };
    if let Some(root) = root {
        let under =
            s == root || (s.starts_with(root) && s.as_bytes().get(root.len()) == Some(&b'/'));
        if !under {
            return fail(&format!("it must be {root} or a path under {root}/"));
        }
    }
    if rest.is_empty() {
        return Ok(());
    }
    for part in rest.split('/') {
        if part == ".." {
            return fail("'..' is not allowed");
        }
        if part.is_empty() {
            return fail("empty component ('//' or a trailing '/')");
        }
        if let Err(e) = validate_name(part) {
            return fail(&e.to_string());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Quantities and durations.

/// A number of bytes, written as a plain number or with a unit:
/// `k`, `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const BYTE_UNITS: [(&str, u64); 8] = [
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
    ("T", 1_000_000_000_000),
    ("G", 1_000_000_000),
    ("M", 1_000_000),
    ("k", 1_000),
];

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid quantity {:?}: {why} (write bytes as a number, or with a unit: \
                 k, M, G, T, Ki, Mi, Gi, Ti, e.g. 512Mi)",
                shown(s)
            )
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let mult = if unit.is_empty() {
            1
        } else {
            BYTE_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| bad(&format!("unknown unit {unit:?}")))?
        };
        let (value, scale) = decimal(num).ok_or_else(|| bad("not a number"))?;
        let bytes = value
            .checked_mul(u128::from(mult))
            .ok_or_else(|| bad("too large"))?;
        if bytes % scale != 0 {
            return Err(bad("not a whole number of bytes"));
        }
        u64::try_from(bytes / scale)
            .map(ByteSize)
            .map_err(|_| bad("too large"))
    }
}

/// Parses a plain decimal such as `125` or `1.25` as (its digits, 10^fraction digits):
/// `1.25` gives (125, 100). Signs and exponents are refused.
fn decimal(num: &str) -> Option<(u128, u128)> {
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    if num.ends_with('.') {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let value: u128 = digits.parse().ok()?;
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    Some((value, scale))
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (unit, mult) in BYTE_UNITS {
                if self.0.is_multiple_of(mult) {
                    return write!(f, "{}{unit}", self.0 / mult);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity of bytes such as 512Mi, 1Gi, 500M or 2")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid quantity {v}: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "invalid quantity {v}: give a whole number of bytes or a unit, e.g. 1.5Gi"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// CPU cores in thousandths: `2`, `0.5` or `500m` (all accepted), written back as `2` or `500m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cpu {
    millis: u32,
}

impl Cpu {
    /// Thousandths of a core; never zero.
    pub fn millis(self) -> u32 {
        self.millis
    }

    pub fn from_millis(millis: u32) -> Option<Cpu> {
        (millis > 0).then_some(Cpu { millis })
    }
}

impl FromStr for Cpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid cpu quantity {:?}: {why} (write cores as 2 or 0.5, or thousandths as 500m)",
                shown(s)
            )
        };
        let millis = if let Some(m) = s.strip_suffix('m') {
            let (v, scale) = decimal(m).ok_or_else(|| bad("not a number"))?;
            if scale != 1 {
                return Err(bad("thousandths must be whole"));
            }
            v
        } else {
            let (v, scale) = decimal(s).ok_or_else(|| bad("not a number"))?;
            let m = v * 1000;
            if m % scale != 0 {
                return Err(bad("finer than a thousandth of a core"));
            }
            m / scale
        };
        let millis = u32::try_from(millis).map_err(|_| bad("too large"))?;
        Cpu::from_millis(millis).ok_or_else(|| bad("must be more than zero"))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cpu quantity such as 2, 0.5 or 500m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpu, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpu, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpu, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpu, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A wall-clock limit: a sequence of amounts with units `ms`, `s`, `m`, `h`
/// (`30s`, `10m`, `1h30m`), more than zero and at most a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeout(Duration);

impl Timeout {
    pub fn duration(self) -> Duration {
        self.0
    }

    pub fn new(d: Duration) -> Result<Timeout, String> {
        if d.is_zero() {
            return Err("timeout must be more than zero".to_string());
        }
        if d > MAX_TIMEOUT {
            return Err("timeout is longer than the most allowed, 168h".to_string());
        }
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return Err("timeout must be whole milliseconds".to_string());
        }
        Ok(Timeout(d))
    }
}

impl FromStr for Timeout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid duration {:?}: {why} (write e.g. 30s, 10m, 1h30m; units ms, s, m, h)",
                shown(s)
            )
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let mut rest = s;
        let mut total_ms: u128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let (num, tail) = rest.split_at(digits);
            let value: u128 = num.parse().map_err(|_| bad("number too large"))?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "" => return Err(bad("missing unit")),
                other => return Err(bad(&format!("unknown unit {other:?}"))),
            };
            total_ms = value
                .checked_mul(ms)
                .and_then(|v| v.checked_add(total_ms))
                .ok_or_else(|| bad("too large"))?;
            rest = tail;
        }
        let ms = u64::try_from(total_ms).map_err(|_| bad("too large"))?;
        Timeout::new(Duration::from_millis(ms)).map_err(|why| bad(&why))
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 10m or 1h30m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timeout, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: give a unit, e.g. {v}s or {v}m"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timeout, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timeout, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
apiVersion: weft/v1
kind: Job
metadata: {name: train-mnist}
spec:
  task:
    wasm: {module: artifacts/train:v2, args: ["--epochs", "3"]}
  inputs:  [{from: datasets/mnist:v1, path: /inputs/mnist}]
  outputs: [{path: /outputs/model, tag: models/mnist:v1}]
  resources: {cpu: 1, memory: 512Mi, gpu: {count: 1, memory: 16Gi}}
  constraints: {zone: lab-a}
  timeout: 10m
  retries: 2
"#;

    fn field_err(yaml: &str) -> (String, String) {
        match JobSpec::from_yaml(yaml) {
            Err(JobSpecError::Field { path, message, .. }) => (path, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    /// A valid spec with `line` replacing the line that starts like it.
    fn with(key_prefix: &str, line: &str) -> String {
        let mut found = false;
        let out: Vec<String> = DESIGN_EXAMPLE
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(key_prefix) && !found {
                    found = true;
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(found, "no line starts with {key_prefix}");
        out.join("\n")
    }

    #[test]
    fn design_example_parses() {
        let j = JobSpec::from_yaml(DESIGN_EXAMPLE).expect("valid");
        assert_eq!(j.name(), "train-mnist");
        let Task::Wasm(w) = &j.spec.task else {
            panic!("wasm task expected")
        };
        assert_eq!(w.module.to_string(), "artifacts/train:v2");
        assert_eq!(
            w.args.iter().map(Arg::as_str).collect::<Vec<_>>(),
            ["--epochs", "3"]
        );
        assert_eq!(j.spec.inputs[0].from.to_string(), "datasets/mnist:v1");
        assert_eq!(j.spec.inputs[0].path.relative(), "mnist");
        assert_eq!(j.spec.outputs[0].path.relative(), "model");
        assert_eq!(
            j.spec.outputs[0].tag.as_ref().map(TagName::as_str),
            Some("models/mnist:v1")
        );
        assert_eq!(j.spec.resources.cpu.map(Cpu::millis), Some(1000));
        assert_eq!(j.spec.resources.memory, Some(ByteSize(512 << 20)));
        let gpu = j.spec.resources.gpu.as_ref().expect("gpu");
        assert_eq!((gpu.count, gpu.memory), (1, Some(ByteSize(16 << 30))));
        assert_eq!(j.spec.constraints.len(), 1);
        assert_eq!(
            j.spec.timeout.map(Timeout::duration),
            Some(Duration::from_secs(600))
        );
        assert_eq!(j.spec.retries, 2);
        assert!(j.spec.cache);
    }

    #[test]
    fn container_task_and_defaults() {
        let yaml = r#"
apiVersion: weft/v1
kind: Job
metadata: {name: c}
spec:
  task:
    container:
      image: images/pytorch:2.4
      command: [python, train.py]
      args: [--fast]
      env: {EPOCHS: "3"}
      workdir: /work
"#;
        let j = JobSpec::from_yaml(yaml).expect("valid");
        let Task::Container(c) = &j.spec.task else {
            panic!("container task expected")
        };
        assert_eq!(c.image.to_string(), "images/pytorch:2.4");
        assert_eq!(c.command.len(), 2);
        assert_eq!(c.workdir.as_ref().map(AbsPath::as_str), Some("/work"));
        assert_eq!(j.spec.retries, 2, "default retries");
        assert!(j.spec.cache, "default cache");
        assert!(j.spec.timeout.is_none());
        assert!(j.spec.resources.is_empty());
    }

    #[test]
    fn quantities() {
        for (s, bytes) in [
            ("512Mi", 512u64 << 20),
            ("1Gi", 1 << 30),
            ("500M", 500_000_000),
            ("2", 2),
            ("1.5Gi", 3 << 29),
            ("0.5k", 500),
            ("1Ti", 1 << 40),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{s}");
        }
        for s in [
            "512Mx",
            "",
            "Mi",
            "1.2.3",
            "-1",
            "1.",
            ".5Gi",
            "0.3",
            "1e3",
            "99999999999Ti",
        ] {
            assert!(s.parse::<ByteSize>().is_err(), "{s} should be refused");
        }
        for (bytes, shown) in [
            (512u64 << 20, "512Mi"),
            (500_000_000, "500M"),
            (3, "3"),
            (0, "0"),
            (3072, "3Ki"),
            (1536, "1536"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), shown);
        }
        for (s, millis) in [("2", 2000), ("0.5", 500), ("500m", 500), ("1.25", 1250)] {
            assert_eq!(s.parse::<Cpu>().map(Cpu::millis), Ok(millis), "{s}");
        }
        for s in ["0", "0m", "1.0005", "2x", "m", "1.5m"] {
            assert!(s.parse::<Cpu>().is_err(), "{s} should be refused");
        }
        assert_eq!(
            Cpu::from_millis(1500).map(|c| c.to_string()).as_deref(),
            Some("1500m")
        );
    }

    #[test]
    fn durations() {
        for (s, ms) in [
            ("30s", 30_000u64),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("1500ms", 1_500),
            ("2h", 7_200_000),
        ] {
            assert_eq!(
                s.parse::<Timeout>().map(Timeout::duration),
                Ok(Duration::from_millis(ms)),
                "{s}"
            );
        }
        for s in ["", "10", "10x", "m", "0s", "200h", "1.5h", "s10"] {
            assert!(s.parse::<Timeout>().is_err(), "{s} should be refused");
        }
        let t: Timeout = "90s".parse().expect("valid");
        assert_eq!(t.to_string(), "1m30s");
        let t: Timeout = "1500ms".parse().expect("valid");
        assert_eq!(t.to_string(), "1s500ms");
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let (path, msg) = field_err(&with("resources:", "  resources: {cpu: 1, memory: 512Mx}"));
        assert_eq!(path, "spec.resources.memory");
        assert!(msg.contains("invalid quantity \"512Mx\""), "{msg}");
        assert!(msg.contains("unknown unit"), "{msg}");
        let (path, _) = field_err(&with("resources:", "  resources: {cpu: 1x}"));
        assert_eq!(path, "spec.resources.cpu");
        let (path, _) = field_err(&with(
            "resources:",
            "  resources: {gpu: {count: 1, memory: 16Q}}",
        ));
        assert_eq!(path, "spec.resources.gpu.memory");
        let (path, msg) = field_err(&with("resources:", "  resources: {gpu: {count: 0}}"));
        assert_eq!(path, "spec.resources.gpu.count");
        assert!(msg.contains("out of range"), "{msg}");
    }

    #[test]
    fn missing_or_double_task() {
        let no_task = DESIGN_EXAMPLE.replace(
            "  task:\n    wasm: {module: artifacts/train:v2, args: [\"--epochs\", \"3\"]}\n",
            "",
        );
        assert_ne!(no_task, DESIGN_EXAMPLE);
        let (path, msg) = field_err(&no_task);
        assert_eq!(path, "spec.task");
        assert_eq!(msg, "missing: give wasm or container");
        let err = JobSpec::from_yaml(&no_task).expect_err("no task");
        assert_eq!(
            err.to_string(),
            "spec.task: missing: give wasm or container"
        );

        let (path, msg) = field_err(&with("task:", "  task: {}"));
        assert_eq!(
            (path.as_str(), msg.as_str()),
            ("spec.task", "missing: give wasm or container")
        );

        let both = DESIGN_EXAMPLE.replace(
            "    wasm: {",
            "    container: {image: images/x:1}\n    wasm: {",
        );
        let (path, msg) = field_err(&both);
        assert_eq!(path, "spec.task");
        assert!(msg.contains("both wasm and container"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let (path, msg) = field_err(&format!("{DESIGN_EXAMPLE}  output: []\n"));
        assert!(path.starts_with("spec"), "{path}");
        assert!(msg.contains("unknown field `output`"), "{msg}");
        let (path, msg) = field_err(&with("wasm:", "    wasm: {module: a/b:v1, argz: [x]}"));
        assert!(path.starts_with("spec.task.wasm"), "{path}");
        assert!(msg.contains("unknown field `argz`"), "{msg}");
        let err = JobSpec::from_yaml(&format!("{DESIGN_EXAMPLE}status: done\n"))
            .expect_err("unknown top-level field");
        assert!(err.to_string().contains("unknown field `status`"), "{err}");
        let (path, _) = field_err(&with("resources:", "  resources: {cpu: 1, disk: 1Gi}"));
        assert!(path.starts_with("spec.resources"), "{path}");
    }

    #[test]
    fn paths_are_checked() {
        for (line, path, needle) in [
            (
                "  inputs:  [{from: datasets/mnist:v1, path: /inputs/../etc}]",
                "spec.inputs[0].path",
                "'..' is not allowed",
            ),
            (
                "  inputs:  [{from: datasets/mnist:v1, path: /etc/passwd}]",
                "spec.inputs[0].path",
                "under /inputs/",
            ),
            (
                "  inputs:  [{from: datasets/mnist:v1, path: /inputsx}]",
                "spec.inputs[0].path",
                "under /inputs/",
            ),
            (
                "  inputs:  [{from: datasets/mnist:v1, path: inputs/a}]",
                "spec.inputs[0].path",
                "absolute",
            ),
            (
                "  inputs:  [{from: datasets/mnist:v1, path: /inputs/a//b}]",
                "spec.inputs[0].path",
                "empty component",
            ),
        ] {
            let (p, msg) = field_err(&with("inputs:", line));
            assert_eq!(p, path, "{line}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        let (p, msg) = field_err(&with("outputs:", "  outputs: [{path: /outputs/../../x}]"));
        assert_eq!(p, "spec.outputs[0].path");
        assert!(msg.contains("'..'"), "{msg}");
        let (p, _) = field_err(&with("outputs:", "  outputs: [{path: /tmp/x}]"));
        assert_eq!(p, "spec.outputs[0].path");

        let (p, msg) = field_err(&with(
            "inputs:",
            "  inputs: [{from: a/b:v1, path: /inputs/a}, {from: a/c:v1, path: /inputs/a/b}]",
        ));
        assert_eq!(p, "spec.inputs[1].path");
        assert!(msg.contains("overlaps"), "{msg}");
        // A shared prefix that is not a parent folder is fine.
        JobSpec::from_yaml(&with(
            "inputs:",
            "  inputs: [{from: a/b:v1, path: /inputs/a}, {from: a/c:v1, path: /inputs/ab}]",
        ))
        .expect("siblings are fine");
        let (p, _) = field_err(&with(
            "wasm:",
            "    container: {image: a/b:v1, workdir: /a/../b}",
        ));
        assert_eq!(p, "spec.task.container.workdir");
    }

    #[test]
    fn refs_tags_names_and_numbers_are_checked() {
        let (p, msg) = field_err(&with(
            "inputs:",
            "  inputs: [{from: mnist, path: /inputs/m}]",
        ));
        assert_eq!(p, "spec.inputs[0].from");
        assert!(msg.contains("not an artifact id"), "{msg}");
        let (p, _) = field_err(&with("wasm:", "    wasm: {module: zz}"));
        assert_eq!(p, "spec.task.wasm.module");
        let (p, _) = field_err(&with(
            "outputs:",
            "  outputs: [{path: /outputs/m, tag: nover}]",
        ));
        assert_eq!(p, "spec.outputs[0].tag");
        let (p, msg) = field_err(&with(
            "outputs:",
            "  outputs: [{path: /outputs/a, tag: m/a:v1}, {path: /outputs/b, tag: m/a:v1}]",
        ));
        assert_eq!(p, "spec.outputs[1].tag");
        assert!(msg.contains("already given"), "{msg}");
        let (p, _) = field_err(&with("metadata:", "metadata: {name: \"bad name\"}"));
        assert_eq!(p, "metadata.name");
        let (p, msg) = field_err(&with("timeout:", "  timeout: 10"));
        assert_eq!(p, "spec.timeout");
        assert!(msg.contains("give a unit"), "{msg}");
        let (p, _) = field_err(&with("timeout:", "  timeout: 10 minutes"));
        assert_eq!(p, "spec.timeout");
        let (p, msg) = field_err(&with("retries:", "  retries: 50"));
        assert_eq!(p, "spec.retries");
        assert!(msg.contains("most allowed"), "{msg}");
        let (p, _) = field_err(&with("retries:", "  retries: -1"));
        assert_eq!(p, "spec.retries");
        let (p, _) = field_err(&with(
            "wasm:",
            "    wasm: {module: a/b:v1, env: {\"A=B\": x}}",
        ));
        assert!(p.starts_with("spec.task.wasm.env"), "{p}");
        let (p, _) = field_err(&with("constraints:", "  constraints: {\"a b\": x}"));
        assert!(p.starts_with("spec.constraints"), "{p}");
        let (p, msg) = field_err(&with("apiVersion:", "apiVersion: weft/v2"));
        assert_eq!(p, "apiVersion");
        assert!(msg.contains("weft/v1"), "{msg}");
        let (p, _) = field_err(&with("kind:", "kind: Pod"));
        assert_eq!(p, "kind");
    }

    #[test]
    fn not_a_spec_at_all() {
        for text in ["", "- a\n- b\n", "{{{", "apiVersion: weft/v1\n"] {
            assert!(JobSpec::from_yaml(text).is_err(), "{text:?}");
        }
        let huge = "#".repeat(MAX_SPEC_BYTES + 1);
        assert!(matches!(
            JobSpec::from_yaml(&huge),
            Err(JobSpecError::TooLarge { .. })
        ));
    }

    #[test]
    fn yaml_and_cbor_round_trip() {
        let j = JobSpec::from_yaml(DESIGN_EXAMPLE).expect("valid");
        let yaml = j.to_yaml().expect("to yaml");
        assert_eq!(JobSpec::from_yaml(&yaml).expect("reparse"), j, "{yaml}");
        let cbor = j.to_cbor().expect("to cbor");
        assert_eq!(JobSpec::from_cbor(&cbor).expect("decode"), j);
    }

    /// Golden bytes: a change to these is a change to the wire format.
    #[test]
    fn golden_cbor() {
        let yaml = r#"
apiVersion: weft/v1
kind: Job
metadata: {name: wc}
spec:
  task: {wasm: {module: tools/wc:v1, args: [-n]}}
  inputs: [{from: docs/a:v1, path: /inputs/a}]
  outputs: [{path: /outputs, tag: out/wc:v1}]
  resources: {memory: 64Mi, cpu: 0.5}
  timeout: 90s
"#;
        let j = JobSpec::from_yaml(yaml).expect("valid");
        // a4 (map of 4) 6a "apiVersion" 67 "weft/v1" 64 "kind" 63 "Job" ...
        let golden = concat!(
            "a46a61706956657273696f6e67776566742f7631646b696e64634a6f62686d65",
            "746164617461a1646e616d656277636473706563a7647461736ba1647761736d",
            "a2666d6f64756c656b746f6f6c732f77633a7631646172677381622d6e66696e",
            "7075747381a26466726f6d69646f63732f613a76316470617468692f696e7075",
            "74732f61676f75747075747381a26470617468682f6f75747075747363746167",
            "696f75742f77633a7631697265736f7572636573a263637075643530306d666d",
            "656d6f72796436344d696774696d656f757465316d3330736772657472696573",
            "02656361636865f5",
        );
        let cbor = j.to_cbor().expect("encode");
        assert_eq!(hex::encode(&cbor), golden);
        assert_eq!(
            JobSpec::from_cbor(&hex::decode(golden).expect("hex")).expect("decode"),
            j
        );
    }

    #[test]
    fn cbor_is_checked_like_yaml() {
        // A spec with its task removed, encoded by hand as a peer might send it.
        let j = JobSpec::from_yaml(DESIGN_EXAMPLE).expect("valid");
        let mut value: ciborium::Value = ciborium::Value::serialized(&j).expect("to value");
        let mut tampered = false;
        if let ciborium::Value::Map(top) = &mut value {
            for (k, v) in top.iter_mut() {
                if k.as_text() == Some("spec")
                    && let ciborium::Value::Map(spec) = v
                {
                    spec.retain(|(k, _)| k.as_text() != Some("task"));
                    tampered = true;
                }
            }
        }
        assert!(tampered);
        let bytes = codec::encode(&value, MAX_SPEC_BYTES).expect("encode");
        let err = JobSpec::from_cbor(&bytes).expect_err("no task");
        assert!(err.to_string().contains("spec.task: missing"), "{err}");
    }
}
