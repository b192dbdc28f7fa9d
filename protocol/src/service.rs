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
            serde_path_to_error::deserialize(de).map_err(|e| match crate::job::path_error(e) {
                // a top-level field left out: name it like any other
                JobSpecError::Invalid(m) => match m
                    .strip_prefix("missing field `")
                    .and_then(|f| f.strip_suffix('`'))
                {
                    Some(f) => field(
                        &camel_to_yaml(f),
                        "missing: a service spec has apiVersion, kind, metadata and spec",
                    ),
                    None => JobSpecError::Invalid(m),
                },
                other => other,
            })?;
        let spec = check(wire)?;
        check_bounds(&spec)?;
        Ok(spec)
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

/// The YAML name of a top-level field as serde names it (`api_version`).
fn camel_to_yaml(f: &str) -> String {
    match f {
        "api_version" => "apiVersion".to_string(),
        other => other.to_string(),
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
    let Some(task) = w.spec.task else {
        return Err(field(
            "spec.task",
            "missing: give `wasm` (a wasi:http component) or `container` (with a port)",
        ));
    };
    let task = match task {
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
    for (i, a) in w.spec.inputs.iter().enumerate() {
        let a = a.path.as_str();
        for (j, b) in w.spec.inputs[..i].iter().enumerate() {
            let b = b.path.as_str();
            let nested = |outer: &str, inner: &str| {
                inner == outer
                    || (inner.starts_with(outer)
                        && inner.as_bytes().get(outer.len()) == Some(&b'/'))
            };
            if nested(a, b) || nested(b, a) {
                return Err(field(
                    &format!("spec.inputs[{i}].path"),
                    format!("{a:?} overlaps spec.inputs[{j}].path {b:?}; give each its own folder"),
                ));
            }
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
    for (name, v) in [
        ("maxSurge", update.max_surge),
        ("maxUnavailable", update.max_unavailable),
    ] {
        if v > MAX_SERVICE_REPLICAS {
            return Err(field(
                &format!("spec.update.{name}"),
                format!(
                    "{v} is more than the most replicas a service may have ({MAX_SERVICE_REPLICAS})"
                ),
            ));
        }
    }
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

/// Every list and string of a checked spec within the bounds a job's are
/// held to (`crate::bounds`), named by its YAML path.
fn check_bounds(s: &ServiceSpec) -> Result<(), JobSpecError> {
    use crate::bounds::{
        BoundsError, MAX_ARG_BYTES, MAX_ARGS, MAX_ENV, MAX_ENV_NAME_BYTES, MAX_ENV_VALUE_BYTES,
        MAX_INPUTS, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS, MAX_TEXT_BYTES, count,
        text,
    };
    fn args(list: &[Arg], at: &str) -> Result<(), BoundsError> {
        count(list.len(), MAX_ARGS, || at.to_string())?;
        for (i, a) in list.iter().enumerate() {
            text(a.as_str(), MAX_ARG_BYTES, || format!("{at}[{i}]"))?;
        }
        Ok(())
    }
    fn env(map: &BTreeMap<EnvName, EnvValue>, at: &str) -> Result<(), BoundsError> {
        count(map.len(), MAX_ENV, || at.to_string())?;
        for (k, v) in map {
            text(k.as_str(), MAX_ENV_NAME_BYTES, || {
                format!("{at}.{}", k.as_str())
            })?;
            text(v.as_str(), MAX_ENV_VALUE_BYTES, || {
                format!("{at}.{}", k.as_str())
            })?;
        }
        Ok(())
    }
    let checked = (|| {
        match &s.task {
            ServiceTask::Wasm { env: e, .. } => env(e, "spec.task.wasm.env")?,
            ServiceTask::Container {
                command,
                args: a,
                env: e,
                ..
            } => {
                args(command, "spec.task.container.command")?;
                args(a, "spec.task.container.args")?;
                env(e, "spec.task.container.env")?;
            }
        }
        count(s.inputs.len(), MAX_INPUTS, || "spec.inputs".to_string())?;
        if let Some(g) = &s.resources.gpu
            && let Some(m) = &g.model
        {
            text(m, MAX_TEXT_BYTES, || "spec.resources.gpu.model".to_string())?;
        }
        count(s.constraints.len(), MAX_LABELS, || {
            "spec.constraints".to_string()
        })?;
        for (k, v) in &s.constraints {
            text(k.as_str(), MAX_LABEL_KEY_BYTES, || {
                format!("spec.constraints.{}", k.as_str())
            })?;
            text(v, MAX_LABEL_VALUE_BYTES, || {
                format!("spec.constraints.{}", k.as_str())
            })?;
        }
        Ok(())
    })();
    checked.map_err(|e: BoundsError| field(&e.field, e.problem))
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
    #[serde(default)]
    task: Option<TaskWire>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ByteSize;
    use crate::ledger::{Entry, EntryBody};
    use crate::tag::Hlc;
    use crate::{Bounded, NodeAdvert, Request, Response, codec};

    const FULL: &str = r#"
apiVersion: weft/v1
kind: Service
metadata: {name: iris}
spec:
  replicas: 3
  task:
    wasm: {module: examples/iris-serve:v1, env: {A: b}}
  inputs: [{from: models/iris@champion, path: /inputs/model}]
  resources: {cpu: 1, memory: 256Mi}
  constraints: {zone: lab-a}
  timeout: 10s
  health: {http: /healthz, interval: 3s, timeout: 500ms, failures: 2}
  update: {maxSurge: 2, maxUnavailable: 1, minHealthy: 2s, progressDeadline: 90s, autoRevert: false}
"#;

    fn field_err(yaml: &str) -> (String, String) {
        match ServiceSpec::from_yaml(yaml) {
            Err(JobSpecError::Field { path, message, .. }) => (path, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    /// `FULL` with the first line that starts like `key_prefix` replaced.
    fn with(key_prefix: &str, line: &str) -> String {
        let mut found = false;
        let out: Vec<String> = FULL
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

    /// A minimal valid spec with `extra` lines added under `spec:`.
    fn minimal(extra: &str) -> String {
        format!(
            "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  task:\n    container: {{image: images/busybox:v1, command: [httpd, -f], port: 8080}}\n{extra}"
        )
    }

    #[test]
    fn a_full_spec_parses() {
        let s = ServiceSpec::from_yaml(FULL).expect("valid");
        assert_eq!(s.name.as_str(), "iris");
        assert_eq!(s.replicas, Replicas::Fixed(3));
        assert_eq!(s.base_replicas(), 3);
        assert!(s.autoscale.is_none());
        let ServiceTask::Wasm { module, env } = &s.task else {
            panic!("wasm expected")
        };
        assert!(s.task.is_wasm());
        assert_eq!(module.to_string(), "examples/iris-serve:v1");
        assert_eq!(env.len(), 1);
        assert_eq!(s.inputs[0].from.to_string(), "models/iris@champion");
        assert_eq!(s.inputs[0].path.as_str(), "/inputs/model");
        assert_eq!(s.resources.memory, Some(ByteSize(256 << 20)));
        assert_eq!(s.constraints.len(), 1);
        assert_eq!(s.timeout.duration(), Duration::from_secs(10));
        assert_eq!(
            s.health,
            Some(Health {
                http: "/healthz".into(),
                interval: Duration::from_secs(3),
                timeout: Duration::from_millis(500),
                failures: 2,
            })
        );
        assert_eq!(
            s.update,
            Update {
                max_surge: 2,
                max_unavailable: 1,
                min_healthy: Duration::from_secs(2),
                progress_deadline: Duration::from_secs(90),
                auto_revert: false,
            }
        );
    }

    #[test]
    fn defaults() {
        let s = ServiceSpec::from_yaml(&minimal("")).expect("valid");
        assert_eq!(s.replicas, Replicas::Fixed(1), "one replica by default");
        assert_eq!(s.base_replicas(), 1);
        assert_eq!(s.timeout.duration(), Duration::from_secs(30));
        assert_eq!(s.health, None);
        assert_eq!(s.update, Update::default());
        assert_eq!(
            Update::default(),
            Update {
                max_surge: 1,
                max_unavailable: 0,
                min_healthy: Duration::from_secs(1),
                progress_deadline: Duration::from_secs(60),
                auto_revert: true,
            }
        );
        assert!(s.inputs.is_empty() && s.constraints.is_empty() && s.resources.is_empty());
        let ServiceTask::Container {
            command,
            args,
            env,
            workdir,
            port,
            ..
        } = &s.task
        else {
            panic!("container expected")
        };
        assert_eq!((command.len(), args.len(), env.len()), (2, 0, 0));
        assert_eq!((workdir, *port), (&None, 8080));

        let s =
            ServiceSpec::from_yaml(&minimal("  health: {http: /ok}\n  update: {maxSurge: 3}\n"))
                .expect("valid");
        assert_eq!(
            s.health,
            Some(Health {
                http: "/ok".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                failures: 3,
            })
        );
        assert_eq!(s.update.max_surge, 3);
        assert_eq!(s.update.max_unavailable, 0);
        assert!(s.update.auto_revert);

        let s = ServiceSpec::from_yaml(&minimal(
            "  replicas: auto\n  autoscale: {max: 4, targetConcurrency: 8}\n",
        ))
        .expect("valid");
        assert_eq!(s.replicas, Replicas::Auto);
        assert_eq!(
            s.autoscale,
            Some(Autoscale {
                min: 0,
                max: 4,
                target_concurrency: 8,
                idle: Duration::from_secs(30),
            })
        );
        assert_eq!(s.base_replicas(), 0, "auto starts at autoscale.min");
        let s = ServiceSpec::from_yaml(&minimal(
            "  replicas: auto\n  autoscale: {min: 2, max: 4, targetConcurrency: 1, idle: 5s}\n",
        ))
        .expect("valid");
        assert_eq!(s.base_replicas(), 2);
        assert_eq!(s.autoscale.map(|a| a.idle), Some(Duration::from_secs(5)));
        let s = ServiceSpec::from_yaml(&minimal("  replicas: 0\n")).expect("zero is fine");
        assert_eq!(s.base_replicas(), 0);
    }

    #[test]
    fn names_must_be_host_names() {
        for bad in [
            "Iris",
            "a_b",
            "-a",
            "a-",
            "1abc",
            "\"\"",
            &"a".repeat(64),
            "a.b",
        ] {
            let (p, msg) = field_err(&with("metadata:", &format!("metadata: {{name: {bad}}}")));
            assert_eq!(p, "metadata.name", "{bad}");
            assert!(msg.contains("host name"), "{bad}: {msg}");
        }
        for good in ["a", "iris-2", &"a".repeat(63)] {
            ServiceSpec::from_yaml(&with("metadata:", &format!("metadata: {{name: {good}}}")))
                .expect(good);
        }
        assert!("Web".parse::<ServiceName>().is_err());
        assert_eq!(
            "web".parse::<ServiceName>().map(String::from),
            Ok("web".into())
        );
    }

    #[test]
    fn replicas_and_autoscale_are_checked() {
        for (line, path, needle) in [
            ("  replicas: 257", "spec.replicas", "at most 256"),
            ("  replicas: -1", "spec.replicas", "negative"),
            ("  replicas: many", "spec.replicas", "`auto`"),
            ("  replicas: Auto", "spec.replicas", "`auto`"),
            ("  replicas: 1.5", "spec.replicas", "replicas or `auto`"),
            ("  replicas: 99999999999", "spec.replicas", "too many"),
            ("  replicas: auto", "spec.autoscale", "needs `autoscale"),
        ] {
            let (p, msg) = field_err(&with("replicas:", line));
            assert_eq!(p, path, "{line}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        let (p, msg) = field_err(&minimal("  autoscale: {max: 2, targetConcurrency: 1}\n"));
        assert_eq!(p, "spec.autoscale");
        assert!(msg.contains("only with `replicas: auto`"), "{msg}");
        for (auto, path, needle) in [
            (
                "{max: 0, targetConcurrency: 1}",
                "spec.autoscale.max",
                "1 to 256",
            ),
            (
                "{max: 300, targetConcurrency: 1}",
                "spec.autoscale.max",
                "1 to 256",
            ),
            (
                "{min: 3, max: 2, targetConcurrency: 1}",
                "spec.autoscale.min",
                "more than max",
            ),
            (
                "{max: 2, targetConcurrency: 0}",
                "spec.autoscale.targetConcurrency",
                "at least 1",
            ),
            ("{max: 2}", "spec.autoscale", "targetConcurrency"),
            (
                "{max: 2, targetConcurrency: 1, idle: 5}",
                "spec.autoscale.idle",
                "invalid duration",
            ),
            (
                "{max: 2, targetConcurrency: 1, cooldown: 5s}",
                "spec.autoscale.cooldown",
                "unknown field `cooldown`",
            ),
        ] {
            let (p, msg) = field_err(&minimal(&format!(
                "  replicas: auto\n  autoscale: {auto}\n"
            )));
            assert_eq!(p, path, "{auto}");
            assert!(msg.contains(needle), "{auto}: {msg}");
        }
    }

    #[test]
    fn the_task_is_exactly_one_of_wasm_or_container() {
        let no_task = FULL.replace(
            "  task:\n    wasm: {module: examples/iris-serve:v1, env: {A: b}}\n",
            "",
        );
        assert_ne!(no_task, FULL);
        let (p, msg) = field_err(&no_task);
        assert_eq!(p, "spec.task");
        assert!(msg.starts_with("missing: give `wasm`"), "{msg}");
        let (p, msg) = field_err(&FULL.replace(
            "  task:\n    wasm: {module: examples/iris-serve:v1, env: {A: b}}\n",
            "  task: {}\n",
        ));
        assert_eq!(p, "spec.task");
        assert!(msg.contains("give exactly one of `wasm`"), "{msg}");
        let both = FULL.replace(
            "    wasm: {",
            "    container: {image: images/x:1, port: 80}\n    wasm: {",
        );
        let (p, msg) = field_err(&both);
        assert_eq!(p, "spec.task");
        assert!(msg.contains("give exactly one of `wasm`"), "{msg}");
        assert_eq!(
            ServiceSpec::from_yaml(&both)
                .expect_err("both")
                .to_string()
                .split(':')
                .next(),
            Some("spec.task")
        );
        for (line, path, needle) in [
            (
                "    wasm: {module: zz}",
                "spec.task.wasm.module",
                "not an artifact id",
            ),
            (
                "    wasm: {module: a/b:v1, args: [x]}",
                "spec.task.wasm",
                "unknown field `args`",
            ),
            (
                "    wasm: {module: a/b:v1, env: {\"A=B\": x}}",
                "spec.task.wasm.env",
                "",
            ),
            (
                "    container: {image: a/b:v1, port: 0}",
                "spec.task.container.port",
                "1 to 65535",
            ),
            (
                "    container: {image: a/b:v1, port: 70000}",
                "spec.task.container.port",
                "u16",
            ),
            (
                "    container: {image: a/b:v1}",
                "spec.task.container",
                "missing field `port`",
            ),
            (
                "    container: {image: a/b:v1, port: 80, workdir: rel}",
                "spec.task.container.workdir",
                "",
            ),
            (
                "    container: {image: a/b:v1, port: 80, ports: [1]}",
                "spec.task.container",
                "unknown field `ports`",
            ),
        ] {
            let (p, msg) = field_err(&with("wasm:", line));
            assert!(p.starts_with(path), "{line}: {p}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        let (p, msg) = field_err(&with("resources:", "  resources: {gpu: {count: 1}}"));
        assert_eq!(p, "spec.resources.gpu");
        assert!(msg.contains("container service"), "{msg}");
        // a container may have a GPU
        let s = ServiceSpec::from_yaml(&minimal("  resources: {gpu: {count: 1}}\n")).expect("gpu");
        assert_eq!(s.resources.gpu.map(|g| g.count), Some(1));
    }

    #[test]
    fn health_update_inputs_and_timeout_are_checked() {
        for (line, path, needle) in [
            (
                "  health: {http: healthz}",
                "spec.health.http",
                "starting with '/'",
            ),
            (
                "  health: {http: \"/a\\nb\"}",
                "spec.health.http",
                "control",
            ),
            (
                "  health: {http: /h, interval: 2x}",
                "spec.health.interval",
                "invalid duration",
            ),
            (
                "  health: {http: /h, interval: 0s}",
                "spec.health.interval",
                "more than zero",
            ),
            (
                "  health: {http: /h, timeout: soon}",
                "spec.health.timeout",
                "invalid duration",
            ),
            (
                "  health: {http: /h, failures: 0}",
                "spec.health.failures",
                "at least 1",
            ),
            (
                "  health: {http: /h, tcp: 80}",
                "spec.health.tcp",
                "unknown field `tcp`",
            ),
            (
                "  health: {interval: 2s}",
                "spec.health",
                "missing field `http`",
            ),
        ] {
            let (p, msg) = field_err(&with("health:", line));
            assert_eq!(p, path, "{line}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        let long = format!("  health: {{http: /{}}}", "a".repeat(1024));
        assert_eq!(field_err(&with("health:", &long)).0, "spec.health.http");
        for (line, path, needle) in [
            (
                "  update: {maxSurge: 0, maxUnavailable: 0}",
                "spec.update",
                "both be 0",
            ),
            ("  update: {maxSurge: 0}", "spec.update", "both be 0"),
            (
                "  update: {maxSurge: 1000}",
                "spec.update.maxSurge",
                "most replicas",
            ),
            (
                "  update: {maxUnavailable: 1000}",
                "spec.update.maxUnavailable",
                "most replicas",
            ),
            (
                "  update: {progressDeadline: 1y}",
                "spec.update.progressDeadline",
                "invalid duration",
            ),
            (
                "  update: {minHealthy: x}",
                "spec.update.minHealthy",
                "invalid duration",
            ),
            (
                "  update: {autoRevert: maybe}",
                "spec.update.autoRevert",
                "",
            ),
            (
                "  update: {max_surge: 1}",
                "spec.update.max_surge",
                "unknown field `max_surge`",
            ),
        ] {
            let (p, msg) = field_err(&with("update:", line));
            assert_eq!(p, path, "{line}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        for (line, path, needle) in [
            (
                "  inputs: [{from: models/iris@champion, path: /etc/m}]",
                "spec.inputs[0].path",
                "under /inputs/",
            ),
            (
                "  inputs: [{from: mnist, path: /inputs/m}]",
                "spec.inputs[0].from",
                "not an artifact id",
            ),
            (
                "  inputs: [{from: a/b:v1, path: /inputs/a}, {from: a/c:v1, path: /inputs/a}]",
                "spec.inputs[1].path",
                "overlaps spec.inputs[0].path",
            ),
            (
                "  inputs: [{from: a/b:v1, path: /inputs/a}, {from: a/c:v1, path: /inputs/a/b}]",
                "spec.inputs[1].path",
                "overlaps",
            ),
        ] {
            let (p, msg) = field_err(&with("inputs:", line));
            assert_eq!(p, path, "{line}");
            assert!(msg.contains(needle), "{line}: {msg}");
        }
        ServiceSpec::from_yaml(&with(
            "inputs:",
            "  inputs: [{from: a/b:v1, path: /inputs/a}, {from: a/c:v1, path: /inputs/ab}]",
        ))
        .expect("siblings are fine");
        let (p, msg) = field_err(&with("timeout:", "  timeout: 10"));
        assert_eq!(p, "spec.timeout");
        assert!(
            msg.contains("invalid duration") || msg.contains("unit"),
            "{msg}"
        );
        let (p, _) = field_err(&with("resources:", "  resources: {memory: 5Q}"));
        assert_eq!(p, "spec.resources.memory");
        let (p, _) = field_err(&with("constraints:", "  constraints: {\"a b\": x}"));
        assert!(p.starts_with("spec.constraints"), "{p}");
    }

    #[test]
    fn unknown_fields_versions_and_documents_are_refused() {
        let (p, msg) = field_err(&format!("{FULL}  ingress: {{}}\n"));
        assert_eq!(p, "spec.ingress");
        assert!(msg.contains("unknown field `ingress`"), "{msg}");
        let err = ServiceSpec::from_yaml(&format!("{FULL}status: up\n")).expect_err("top");
        assert!(err.to_string().contains("unknown field `status`"), "{err}");
        let (p, msg) = field_err(&with("metadata:", "metadata: {name: iris, labels: {}}"));
        assert_eq!(p, "metadata.labels");
        assert!(msg.contains("unknown field `labels`"), "{msg}");
        let (p, msg) = field_err(&with("apiVersion:", "apiVersion: weft/v2"));
        assert_eq!(p, "apiVersion");
        assert!(msg.contains("weft/v1"), "{msg}");
        let (p, msg) = field_err(&with("kind:", "kind: Job"));
        assert_eq!(p, "kind");
        assert!(msg.contains("Service"), "{msg}");
        for (drop, path) in [
            ("metadata:", "metadata"),
            ("kind:", "kind"),
            ("apiVersion:", "apiVersion"),
        ] {
            let text: String = FULL
                .lines()
                .filter(|l| !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect();
            let (p, msg) = field_err(&text);
            assert_eq!(p, path, "without {drop}");
            assert!(msg.starts_with("missing"), "{msg}");
        }
        for text in ["", "  \n", "- a\n- b\n", "{{{", "apiVersion: weft/v1\n"] {
            assert!(ServiceSpec::from_yaml(text).is_err(), "{text:?}");
        }
        let huge = "#".repeat(MAX_SERVICE_SPEC_BYTES + 1);
        assert!(matches!(
            ServiceSpec::from_yaml(&huge),
            Err(JobSpecError::TooLarge { .. })
        ));
    }

    #[test]
    fn lists_are_bounded_like_a_jobs() {
        let args = vec!["x"; crate::bounds::MAX_ARGS + 1].join(", ");
        let (p, msg) = field_err(&minimal("").replace(
            "command: [httpd, -f]",
            &format!("command: [httpd], args: [{args}]"),
        ));
        assert_eq!(p, "spec.task.container.args");
        assert!(msg.contains("exceeds the limit of 256"), "{msg}");
        let long = "a".repeat(crate::bounds::MAX_LABEL_VALUE_BYTES + 1);
        let (p, _) = field_err(&with(
            "constraints:",
            &format!("  constraints: {{zone: {long}}}"),
        ));
        assert_eq!(p, "spec.constraints.zone");
    }

    fn entry(change: ServiceChange) -> Entry {
        Entry {
            hlc: Hlc {
                wall_ms: 1,
                counter: 2,
            },
            origin: "n".into(),
            body: EntryBody::Service(ServiceEvent {
                name: "iris".parse().expect("name"),
                change,
            }),
        }
    }

    /// The ledger entries of a service. A change here needs a new ledger
    /// protocol and record version. Bytes checked against an independent
    /// CBOR encoder (Python's cbor2).
    #[test]
    fn golden_service_entries() {
        // {"hlc": {"wall_ms": 1, "counter": 2}, "origin": "n", "body": {"service": {"name": "iris", "change": ...}}}
        let head = concat!(
            "a3",
            "63686c63",
            "a2",
            "6777616c6c5f6d7301",
            "67636f756e74657202",
            "666f726967696e",
            "616e",
            "64626f6479",
            "a1",
            "6773657276696365",
            "a2",
            "646e616d65",
            "6469726973",
            "666368616e6765",
        );
        for (change, tail) in [
            // {"Apply": {"spec": "s"}}
            (
                ServiceChange::Apply { spec: "s".into() },
                "a1654170706c79a164737065636173",
            ),
            // {"Scale": {"replicas": 3}}
            (
                ServiceChange::Scale { replicas: 3 },
                "a1655363616c65a1687265706c6963617303",
            ),
            // {"Rollback": {"to": 1, "reason": "deadline"}}
            (
                ServiceChange::Rollback {
                    to: 1,
                    reason: Some("deadline".into()),
                },
                "a168526f6c6c6261636ba262746f0166726561736f6e68646561646c696e65",
            ),
            // {"Rollback": {"to": 1}}: no reason, no key
            (
                ServiceChange::Rollback {
                    to: 1,
                    reason: None,
                },
                "a168526f6c6c6261636ba162746f01",
            ),
            // "Remove"
            (ServiceChange::Remove, "6652656d6f7665"),
        ] {
            let e = entry(change);
            let bytes = e.encode().expect("encode");
            assert_eq!(hex::encode(&bytes), format!("{head}{tail}"), "{e:?}");
            assert_eq!(Entry::decode(&bytes).expect("decode"), e);
        }
    }

    /// Entries from peers are bounded: a spec over the limit, a reason over
    /// the limit, a scale over the most replicas, a name that is no host name.
    #[test]
    fn service_entries_from_peers_are_bounded() {
        let big = entry(ServiceChange::Apply {
            spec: "a".repeat(MAX_SERVICE_SPEC_BYTES + 1),
        });
        let err = big.check_bounds().expect_err("too long");
        assert!(err.field.ends_with("change.spec"), "{err}");
        let e = entry(ServiceChange::Scale {
            replicas: MAX_SERVICE_REPLICAS + 1,
        });
        assert!(e.check_bounds().is_err());
        let e = entry(ServiceChange::Rollback {
            to: 1,
            reason: Some("r".repeat(crate::bounds::MAX_REASON_BYTES + 1)),
        });
        assert!(e.check_bounds().is_err());
        // a name that is not a service name never decodes
        let bytes = hex::decode(concat!(
            "a3",
            "63686c63a26777616c6c5f6d730167636f756e74657202",
            "666f726967696e616e",
            "64626f6479a16773657276696365a2646e616d65",
            "6449524953", // "IRIS"
            "666368616e67656652656d6f7665"
        ))
        .expect("hex");
        assert!(Entry::decode(&bytes).is_err());
    }

    fn replica() -> ReplicaInfo {
        ReplicaInfo {
            id: ReplicaId(0x0102_0304_0506_0708),
            service: "iris".parse().expect("name"),
            revision: 2,
            state: ReplicaState::Ready,
            inflight: 1,
            ready_since_ms: Some(5),
            note: None,
        }
    }

    #[test]
    fn golden_replicas_in_an_advert() {
        // {"id": 0x0102030405060708, "service": "iris", "revision": 2,
        //  "state": "Ready", "inflight": 1, "ready_since_ms": 5}
        let one = concat!(
            "a6",
            "6269641b0102030405060708",
            "67736572766963656469726973",
            "687265766973696f6e02",
            "657374617465655265616479",
            "68696e666c6967687401",
            "6e72656164795f73696e63655f6d7305"
        );
        assert_eq!(
            hex::encode(codec::encode(&replica(), 1024).expect("encode")),
            one
        );
        // {"id": 7, "service": "iris", "revision": 1, "state": "Failed",
        //  "inflight": 0, "note": "exit 1"}
        let failed = ReplicaInfo {
            id: ReplicaId(7),
            revision: 1,
            state: ReplicaState::Failed,
            inflight: 0,
            ready_since_ms: None,
            note: Some("exit 1".into()),
            ..replica()
        };
        let two = concat!(
            "a6",
            "62696407",
            "67736572766963656469726973",
            "687265766973696f6e01",
            "657374617465664661696c6564",
            "68696e666c6967687400",
            "646e6f746566657869742031"
        );
        assert_eq!(
            hex::encode(codec::encode(&failed, 1024).expect("encode")),
            two
        );
        // the advert's last field: "replicas": [one, two]
        let advert = NodeAdvert {
            peer_id: "p".into(),
            replicas: Some(vec![replica(), failed]),
            ..NodeAdvert::default()
        };
        let bytes = advert.encode().expect("encode");
        assert!(
            // "replicas", an array of two
            hex::encode(&bytes).ends_with(&format!("687265706c6963617382{one}{two}")),
            "{}",
            hex::encode(&bytes)
        );
        assert_eq!(NodeAdvert::decode(&bytes).expect("decode"), advert);
        // a node that runs none says nothing
        let none = NodeAdvert::default().encode().expect("encode");
        assert!(!hex::encode(&none).contains("687265706c69636173"));
        // bounded: the count and each note
        let mut many = advert.clone();
        many.replicas = Some(vec![replica(); MAX_ADVERT_REPLICAS + 1]);
        let err = NodeAdvert::decode(&many.encode().expect("encode")).expect_err("many");
        assert!(err.to_string().contains("replicas"), "{err}");
        let mut noted = advert;
        noted.replicas = Some(vec![ReplicaInfo {
            note: Some("n".repeat(crate::bounds::MAX_TEXT_BYTES + 1)),
            ..replica()
        }]);
        let err = NodeAdvert::decode(&noted.encode().expect("encode")).expect_err("note");
        assert!(err.to_string().contains("replicas[0].note"), "{err}");
    }

    #[test]
    fn golden_data_plane_heads() {
        let req = ServiceRequestHead {
            service: "iris".parse().expect("name"),
            replica: ReplicaId(7),
            method: "GET".into(),
            uri: "/predict?x=1".into(),
            headers: vec![("host".into(), "iris.weft".into())],
        };
        let bytes = codec::encode(&req, MAX_SERVICE_HEAD_BYTES).expect("encode");
        // {"service": "iris", "replica": 7, "method": "GET", "uri": "/predict?x=1",
        //  "headers": [["host", "iris.weft"]]}
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a5",
                "67736572766963656469726973",
                "677265706c69636107",
                "666d6574686f6463474554",
                "637572696c2f707265646963743f783d31",
                "6768656164657273",
                "81",
                "8264686f737469697269732e77656674"
            )
        );
        assert_eq!(
            codec::decode_peer::<ServiceRequestHead>(&bytes, MAX_SERVICE_HEAD_BYTES)
                .expect("decode"),
            req
        );
        for (head, golden) in [
            // {"Response": {"status": 200, "headers": [["content-type", "text/plain"]]}}
            (
                ServiceResponseHead::Response {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                },
                "a168526573706f6e7365a26673746174757318c8676865616465727381826c636f6e74656e742d747970656a746578742f706c61696e",
            ),
            // {"Refused": {"reason": "Draining", "message": "draining"}}
            (
                ServiceResponseHead::Refused {
                    reason: Refusal::Draining,
                    message: "draining".into(),
                },
                "a16752656675736564a266726561736f6e68447261696e696e67676d65737361676568647261696e696e67",
            ),
        ] {
            let bytes = codec::encode(&head, MAX_SERVICE_HEAD_BYTES).expect("encode");
            assert_eq!(hex::encode(&bytes), golden);
            assert_eq!(
                codec::decode_peer::<ServiceResponseHead>(&bytes, MAX_SERVICE_HEAD_BYTES)
                    .expect("decode"),
                head
            );
        }
        // bounded: too many headers, a long uri
        let mut big = req.clone();
        big.headers = vec![("a".into(), "b".into()); MAX_SERVICE_HEADERS + 1];
        let bytes = codec::encode(&big, MAX_SERVICE_HEAD_BYTES).expect("encode");
        let err = codec::decode_peer::<ServiceRequestHead>(&bytes, MAX_SERVICE_HEAD_BYTES)
            .expect_err("headers");
        assert!(err.to_string().contains("headers"), "{err}");
        let mut long = req;
        long.uri = "/".repeat(crate::bounds::MAX_URI_BYTES + 1);
        let bytes = codec::encode(&long, MAX_SERVICE_HEAD_BYTES).expect("encode");
        let err = codec::decode_peer::<ServiceRequestHead>(&bytes, MAX_SERVICE_HEAD_BYTES)
            .expect_err("uri");
        assert!(err.to_string().contains("uri"), "{err}");
        // the magic can never be a blob request's length prefix (< 64 KiB)
        assert!(u32::from_be_bytes(SERVICE_STREAM_MAGIC) >= 1 << 16);
    }

    #[test]
    fn golden_service_rpcs() {
        let iris: ServiceName = "iris".parse().expect("name");
        for (req, golden) in [
            // {"StartReplica": {"service": "iris", "revision": 2, "replica": 7}}
            (
                Request::StartReplica {
                    service: iris.clone(),
                    revision: 2,
                    replica: ReplicaId(7),
                },
                "a16c53746172745265706c696361a367736572766963656469726973687265766973696f6e02677265706c69636107",
            ),
            // {"StopReplica": {"service": "iris", "replica": 7, "drain_ms": 5000}}
            (
                Request::StopReplica {
                    service: iris.clone(),
                    replica: ReplicaId(7),
                    drain_ms: 5000,
                },
                "a16b53746f705265706c696361a367736572766963656469726973677265706c6963610768647261696e5f6d73191388",
            ),
            // {"ServiceLogs": {"service": "iris"}}
            (
                Request::ServiceLogs {
                    service: iris.clone(),
                },
                "a16b536572766963654c6f6773a167736572766963656469726973",
            ),
        ] {
            let bytes = req.encode().expect("encode");
            assert_eq!(hex::encode(&bytes), golden);
            assert_eq!(Request::decode(&bytes).expect("decode"), req);
        }
        // {"ServiceLogs": {"replicas": [[7, "hello\n"]]}}
        let logs = Response::ServiceLogs {
            replicas: vec![(ReplicaId(7), "hello\n".into())],
        };
        let bytes = logs.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            "a16b536572766963654c6f6773a1687265706c696361738182076668656c6c6f0a"
        );
        assert_eq!(Response::decode(&bytes).expect("decode"), logs);
        // a log over its bound is refused, naming the replica
        let big = Response::ServiceLogs {
            replicas: vec![(
                ReplicaId(7),
                "x".repeat(crate::bounds::MAX_REPLICA_LOG_BYTES + 1),
            )],
        };
        let err = Response::decode(&big.encode().expect("encode")).expect_err("big");
        assert!(err.to_string().contains("ServiceLogs.replicas[0]"), "{err}");
        // a request naming no valid service never decodes
        let bad =
            hex::decode("a16b536572766963654c6f6773a167736572766963656449524953").expect("hex");
        assert!(Request::decode(&bad).is_err());
    }

    #[test]
    fn replica_ids_print_as_hex_and_parse_back() {
        let id = ReplicaId(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<ReplicaId>(), Ok(id));
        assert!("xyz".parse::<ReplicaId>().is_err());
        assert_eq!(ReplicaState::Unhealthy.as_str(), "unhealthy");
    }
}
