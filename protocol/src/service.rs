//! Services: long-running replicas and functions behind the mesh's ingress.
//!
//! Goals: one strict parser for `kind: Service` (every refusal names the
//! field path, as for jobs), the ledger events that carry a service's desired
//! state, what a node says about the replicas it runs (in its advert), and
//! the data-plane frames that carry one HTTP request to a replica on another
//! node.
//!
//! Shape (`apiVersion: weft/v1`, `kind: Service`):
//!
//! ```yaml
//! apiVersion: weft/v1
//! kind: Service
//! metadata: {name: iris}
//! spec:
//!   replicas: 3                 # or `auto`, with `autoscale`
//!   autoscale: {min: 0, max: 4, targetConcurrency: 8, idle: 30s}
//!   task:
//!     wasm: {module: examples/iris-serve:v1, env: {A: b}}   # a wasi:http component
//!     # or container: {image: busybox:v1, command: [httpd, -f, -p, "8080"], port: 8080}
//!   inputs: [{from: models/iris@champion, path: /inputs/model}]
//!   resources: {cpu: 1, memory: 256Mi}
//!   constraints: {zone: lab-a}
//!   timeout: 30s                # per request
//!   health: {http: /healthz, interval: 2s, timeout: 1s, failures: 3}
//!   update: {maxSurge: 1, maxUnavailable: 0, minHealthy: 1s, progressDeadline: 60s, autoRevert: true}
//! ```
//!
//! Non-goals: trust. A spec is checked where it is parsed (the API and every
//! node reading the ledger); the nodes that run replicas take the spec from
//! their own copy of the ledger, never from the peer that asks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, de};

use crate::job::{
    AbsPath, Arg, EnvName, EnvValue, Input, JobSpecError, LabelKey, Resources, Timeout,
};
use crate::tag::ArtifactRef;

/// Largest service spec (YAML) accepted.
pub const MAX_SERVICE_SPEC_BYTES: usize = 64 * 1024;

/// Most replicas a service may ask for (fixed or as `autoscale.max`).
pub const MAX_SERVICE_REPLICAS: u32 = 256;

/// Most replicas one node lists in its advert.
pub const MAX_ADVERT_REPLICAS: usize = 256;

/// The first four bytes of a data-plane stream that carries one HTTP request
/// to a replica. A blob request's first four bytes are its frame length
/// (below 64 KiB, so they start with two zero bytes): the two never collide.
pub const SERVICE_STREAM_MAGIC: [u8; 4] = [0xff, b's', b'v', b'1'];

/// Largest request or response head frame on a service stream.
pub const MAX_SERVICE_HEAD_BYTES: usize = 64 * 1024;

/// Most headers in one request or response head.
pub const MAX_SERVICE_HEADERS: usize = 128;

/// The name of a service: a DNS label (1 to 63 lowercase letters, digits or
/// `-`, starting with a letter, not ending with `-`), so that it can be used
/// as `NAME.<ingress domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `s` is not a service name.
pub fn check_service_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {:?}: use 1 to 63 lowercase letters, digits or '-', starting with a letter and not ending with '-' (it becomes a host name)",
            s.chars().take(80).collect::<String>()
        ))
    }
}

impl TryFrom<String> for ServiceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_service_name(&s)?;
        Ok(ServiceName(s))
    }
}

impl FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ServiceName::try_from(s.to_string())
    }
}

impl From<ServiceName> for String {
    fn from(v: ServiceName) -> String {
        v.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole `kind: Service` document, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub replicas: Replicas,
    /// Present exactly when `replicas` is [`Replicas::Auto`].
    pub autoscale: Option<Autoscale>,
    pub task: ServiceTask,
    pub inputs: Vec<Input>,
    pub resources: Resources,
    pub constraints: BTreeMap<LabelKey, String>,
    /// Longest one request may take (functions); default 30 s.
    pub timeout: Timeout,
    /// `None`: a replica is ready once it started (a function once compiled,
    /// a container once its port accepts a connection).
    pub health: Option<Health>,
    pub update: Update,
}

/// `spec.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    Fixed(u32),
    /// As many as the in-flight requests need, within `spec.autoscale`.
    Auto,
}

/// `spec.autoscale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// In-flight requests one replica should carry.
    pub target_concurrency: u32,
    /// A replica above `min` with no request for this long is stopped.
    pub idle: Duration,
}

/// `spec.task`: a `wasi:http` component, or a container listening on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTask {
    Wasm {
        module: ArtifactRef,
        env: BTreeMap<EnvName, EnvValue>,
    },
    Container {
        image: ArtifactRef,
        command: Vec<Arg>,
        args: Vec<Arg>,
        env: BTreeMap<EnvName, EnvValue>,
        workdir: Option<AbsPath>,
        /// The port the container listens on inside its own network namespace.
        port: u16,
    },
}

impl ServiceTask {
    pub fn is_wasm(&self) -> bool {
        matches!(self, ServiceTask::Wasm { .. })
    }
}

/// `spec.health`: an HTTP GET that must answer 2xx or 3xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Path and query, starting with `/`.
    pub http: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make a replica unhealthy.
    pub failures: u32,
}

/// `spec.update`: how a new revision replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Replicas above the desired count while rolling out.
    pub max_surge: u32,
    /// Desired replicas that may be not ready while rolling out.
    pub max_unavailable: u32,
    /// How long a new replica must stay ready before it counts.
    pub min_healthy: Duration,
    /// A rollout not finished by then has failed.
    pub progress_deadline: Duration,
    /// Roll a failed rollout back to the last revision that was healthy.
    pub auto_revert: bool,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            max_surge: 1,
            max_unavailable: 0,
            min_healthy: Duration::from_secs(1),
            progress_deadline: Duration::from_secs(60),
            auto_revert: true,
        }
    }
}

impl ServiceSpec {
    /// Parses and checks a YAML service spec.
    pub fn from_yaml(text: &str) -> Result<ServiceSpec, JobSpecError> {
        if text.len() > MAX_SERVICE_SPEC_BYTES {
            return Err(JobSpecError::TooLarge {
                len: text.len(),
                limit: MAX_SERVICE_SPEC_BYTES,
            });
        }
        if text.trim().is_empty() {
            return Err(JobSpecError::Invalid(
                "the document is empty; a service spec starts with `apiVersion: weft/v1`"
                    .to_string(),
            ));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let wire: ServiceWire =
            serde_path_to_error::deserialize(de).map_err(crate::job::path_error)?;
        check(wire)
    }

    /// The replicas to run when nothing scaled the service: the fixed count,
    /// or `autoscale.min`.
    pub fn base_replicas(&self) -> u32 {
        match (self.replicas, &self.autoscale) {
            (Replicas::Fixed(n), _) => n,
            (Replicas::Auto, Some(a)) => a.min,
            (Replicas::Auto, None) => 0,
        }
    }
}

fn field(path: &str, message: impl Into<String>) -> JobSpecError {
    JobSpecError::Field {
        path: path.to_string(),
        message: message.into(),
        line: None,
    }
}

fn check(w: ServiceWire) -> Result<ServiceSpec, JobSpecError> {
    let replicas = match w.spec.replicas {
        ReplicasWire::Count(n) if n > MAX_SERVICE_REPLICAS => {
            return Err(field(
                "spec.replicas",
                format!("{n} replicas; at most {MAX_SERVICE_REPLICAS}"),
            ));
        }
        ReplicasWire::Count(n) => Replicas::Fixed(n),
        ReplicasWire::Word(w) if w == "auto" => Replicas::Auto,
        ReplicasWire::Word(w) => {
            return Err(field(
                "spec.replicas",
                format!("expected a number or `auto`, found {w:?}"),
            ));
        }
    };
    let autoscale = match (replicas, w.spec.autoscale) {
        (Replicas::Auto, None) => {
            return Err(field(
                "spec.autoscale",
                "`replicas: auto` needs `autoscale: {min, max, targetConcurrency}`",
            ));
        }
        (Replicas::Fixed(_), Some(_)) => {
            return Err(field(
                "spec.autoscale",
                "autoscale applies only with `replicas: auto`",
            ));
        }
        (Replicas::Fixed(_), None) => None,
        (Replicas::Auto, Some(a)) => {
            if a.max == 0 || a.max > MAX_SERVICE_REPLICAS {
                return Err(field(
                    "spec.autoscale.max",
                    format!("must be 1 to {MAX_SERVICE_REPLICAS}"),
                ));
            }
            if a.min > a.max {
                return Err(field(
                    "spec.autoscale.min",
                    format!("{} is more than max ({})", a.min, a.max),
                ));
            }
            if a.target_concurrency == 0 {
                return Err(field(
                    "spec.autoscale.targetConcurrency",
                    "must be at least 1",
                ));
            }
            Some(Autoscale {
                min: a.min,
                max: a.max,
                target_concurrency: a.target_concurrency,
                idle: a
                    .idle
                    .map(Timeout::duration)
                    .unwrap_or(Duration::from_secs(30)),
            })
        }
    };
    let task = match w.spec.task {
        TaskWire {
            wasm: Some(m),
            container: None,
        } => ServiceTask::Wasm {
            module: m.module,
            env: m.env,
        },
        TaskWire {
            wasm: None,
            container: Some(c),
        } => {
            if c.port == 0 {
                return Err(field("spec.task.container.port", "must be 1 to 65535"));
            }
            ServiceTask::Container {
                image: c.image,
                command: c.command,
                args: c.args,
                env: c.env,
                workdir: c.workdir,
                port: c.port,
            }
        }
        _ => {
            return Err(field(
                "spec.task",
                "give exactly one of `wasm` (a wasi:http component) or `container` (with a port)",
            ));
        }
    };
    if matches!(task, ServiceTask::Wasm { .. }) && w.spec.resources.gpu.is_some() {
        return Err(field(
            "spec.resources.gpu",
            "a wasm function cannot use GPUs; run a container service for GPU work",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, input) in w.spec.inputs.iter().enumerate() {
        if !seen.insert(input.path.as_str().to_string()) {
            return Err(field(
                &format!("spec.inputs[{i}].path"),
                format!("{} is given twice", input.path.as_str()),
            ));
        }
    }
    let health = match w.spec.health {
        None => None,
        Some(h) => {
            if !h.http.starts_with('/')
                || h.http.len() > 1024
                || h.http.chars().any(char::is_control)
            {
                return Err(field(
                    "spec.health.http",
                    "must be a path starting with '/' (at most 1024 bytes, no control characters)",
                ));
            }
            let failures = h.failures.unwrap_or(3);
            if failures == 0 {
                return Err(field("spec.health.failures", "must be at least 1"));
            }
            Some(Health {
                http: h.http,
                interval: h
                    .interval
                    .map(Timeout::duration)
                    .unwrap_or(Duration::from_secs(2)),
                timeout: h
                    .timeout
                    .map(Timeout::duration)
                    .unwrap_or(Duration::from_secs(1)),
                failures,
            })
        }
    };
    let d = Update::default();
    let update = match w.spec.update {
        None => d,
        Some(u) => Update {
            max_surge: u.max_surge.unwrap_or(d.max_surge),
            max_unavailable: u.max_unavailable.unwrap_or(d.max_unavailable),
            min_healthy: u.min_healthy.map(|t| t.duration()).unwrap_or(d.min_healthy),
            progress_deadline: u
                .progress_deadline
                .map(Timeout::duration)
                .unwrap_or(d.progress_deadline),
            auto_revert: u.auto_revert.unwrap_or(d.auto_revert),
        },
    };
    if update.max_surge == 0 && update.max_unavailable == 0 {
        return Err(field(
            "spec.update",
            "maxSurge and maxUnavailable cannot both be 0: a rollout could never start",
        ));
    }
    Ok(ServiceSpec {
        name: w.metadata.name,
        replicas,
        autoscale,
        task,
        inputs: w.spec.inputs,
        resources: w.spec.resources,
        constraints: w.spec.constraints,
        timeout: w
            .spec
            .timeout
            .unwrap_or(Timeout::new(Duration::from_secs(30)).map_err(JobSpecError::Invalid)?),
        health,
        update,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceWire {
    #[allow(dead_code)]
    api_version: ApiVersion,
    #[allow(dead_code)]
    kind: Kind,
    metadata: MetadataWire,
    spec: SpecWire,
}

#[derive(Deserialize)]
enum ApiVersion {
    #[serde(rename = "weft/v1")]
    V1,
}

#[derive(Deserialize)]
enum Kind {
    Service,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataWire {
    name: ServiceName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecWire {
    #[serde(default = "one_replica")]
    replicas: ReplicasWire,
    #[serde(default)]
    autoscale: Option<AutoscaleWire>,
    task: TaskWire,
    #[serde(default)]
    inputs: Vec<Input>,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    constraints: BTreeMap<LabelKey, String>,
    #[serde(default)]
    timeout: Option<Timeout>,
    #[serde(default)]
    health: Option<HealthWire>,
    #[serde(default)]
    update: Option<UpdateWire>,
}

fn one_replica() -> ReplicasWire {
    ReplicasWire::Count(1)
}

enum ReplicasWire {
    Count(u32),
    Word(String),
}

impl<'de> Deserialize<'de> for ReplicasWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ReplicasWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of replicas or `auto`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ReplicasWire, E> {
                u32::try_from(v)
                    .map(ReplicasWire::Count)
                    .map_err(|_| E::custom(format!("{v} replicas is too many")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ReplicasWire, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("replicas cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReplicasWire, E> {
                Ok(ReplicasWire::Word(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AutoscaleWire {
    #[serde(default)]
    min: u32,
    max: u32,
    target_concurrency: u32,
    #[serde(default)]
    idle: Option<Timeout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskWire {
    #[serde(default)]
    wasm: Option<WasmWire>,
    #[serde(default)]
    container: Option<ContainerWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmWire {
    #[serde(with = "crate::job::artifact_ref")]
    module: ArtifactRef,
    #[serde(default)]
    env: BTreeMap<EnvName, EnvValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerWire {
    #[serde(with = "crate::job::artifact_ref")]
    image: ArtifactRef,
    #[serde(default)]
    command: Vec<Arg>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    env: BTreeMap<EnvName, EnvValue>,
    #[serde(default)]
    workdir: Option<AbsPath>,
    port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthWire {
    http: String,
    #[serde(default)]
    interval: Option<Timeout>,
    #[serde(default)]
    timeout: Option<Timeout>,
    #[serde(default)]
    failures: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateWire {
    #[serde(default)]
    max_surge: Option<u32>,
    #[serde(default)]
    max_unavailable: Option<u32>,
    #[serde(default)]
    min_healthy: Option<Timeout>,
    #[serde(default)]
    progress_deadline: Option<Timeout>,
    #[serde(default)]
    auto_revert: Option<bool>,
}

// ---------------------------------------------------------------------------
// The ledger: desired state.

/// A change to a service's desired state, kept in the ledger
/// (`EntryBody::Service`); every node folds a service's events in
/// `(hlc, origin)` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub name: ServiceName,
    pub change: ServiceChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceChange {
    /// A new revision: the spec as YAML. Revisions are numbered by their
    /// place among the service's `Apply` events, from 1.
    Apply { spec: String },
    /// The desired replica count of the current revision, until the next
    /// `Apply`.
    Scale { replicas: u32 },
    /// The current revision becomes `to` (by hand, or a failed rollout
    /// reverted by the service's owner, with the reason).
    Rollback {
        to: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The service is removed; a later `Apply` brings it back.
    Remove,
}

// ---------------------------------------------------------------------------
// Adverts: what runs where.

/// A replica's id, chosen at random by the owner that places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ReplicaId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        u64::from_str_radix(s, 16)
            .map(ReplicaId)
            .map_err(|_| format!("invalid replica id {s:?}: expected 16 hex digits"))
    }
}

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Fetching, compiling or starting, or not yet passed a health check.
    Starting,
    /// Passing its health checks: gets traffic.
    Ready,
    /// Failed `health.failures` checks in a row: gets no traffic.
    Unhealthy,
    /// Being stopped: gets no new traffic, finishes what it has.
    Draining,
    /// Could not start, or its process ended.
    Failed,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Ready => "ready",
            ReplicaState::Unhealthy => "unhealthy",
            ReplicaState::Draining => "draining",
            ReplicaState::Failed => "failed",
        }
    }
}

/// One replica as its node lists it in [`crate::NodeAdvert::replicas`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: ReplicaId,
    pub service: ServiceName,
    pub revision: u32,
    pub state: ReplicaState,
    /// Requests being answered now.
    pub inflight: u32,
    /// Unix ms when it last became ready (its node's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since_ms: Option<u64>,
    /// Why it failed or is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

// ---------------------------------------------------------------------------
// The data plane: one HTTP request to a replica on another node.

/// Sent after [`SERVICE_STREAM_MAGIC`] as one frame (length prefix, CBOR);
/// the request body follows as plain bytes until the stream ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRequestHead {
    pub service: ServiceName,
    pub replica: ReplicaId,
    pub method: String,
    /// Path and query as the replica sees them (`/predict?x=1`).
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// The answer's head, one frame; after `Response` the body follows as plain
/// bytes until the stream ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceResponseHead {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// The replica never saw the request: the sender may try another.
    Refused { reason: Refusal, message: String },
}

/// Why a node did not hand a request to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No such replica here (stopped, or never started).
    NotHere,
    /// The replica is draining.
    Draining,
    /// Too many requests in flight.
    Overloaded,
    /// The head was malformed.
    BadRequest,
}
