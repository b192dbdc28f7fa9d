//! Pipeline specs: what a user submits with `weft pipeline run -f P.yaml`.
//!
//! Goals: one strict parser for `kind: Pipeline`, a DAG of named steps, each
//! a job body as in `kind: Job` (see [`crate::job`]) that may take another
//! step's output as an input, pass a gate (`when:`) and register a model
//! (`register:`). Every refusal names the field path
//! (`spec.steps.train.inputs[0].from: unknown step "trian" ...`), and the
//! graph is checked whole: unknown steps, cycles (printed), outputs used but
//! not declared, params used but not declared, type mismatches.
//!
//! Shape (`apiVersion: weft/v1`, `kind: Pipeline`):
//!
//! ```yaml
//! apiVersion: weft/v1
//! kind: Pipeline
//! metadata: {name: iris, experiment: iris}
//! spec:
//!   params: {epochs: 500, data: "train"}  # defaults; a number makes the param numeric
//!   triggers: [{tag: datasets/iris:v1}]    # run again when this tag moves
//!   steps:
//!     train:
//!       task: {wasm: {module: examples/train:v1, args: ["--epochs", "${params.epochs}"]}}
//!       inputs: [{from: datasets/iris:v1, path: /inputs/data}]
//!       outputs: [{name: model, path: /outputs/model}]
//!     evaluate:
//!       task: {wasm: {module: examples/evaluate:v1}}
//!       inputs: [{from: steps.train.outputs.model, path: /inputs/model}]
//!       outputs: [{name: metrics, path: /outputs}]
//!     promote:
//!       when: "steps.evaluate.metrics.accuracy >= 0.9"
//!       register: {model: iris, from: steps.train.outputs.model, alias: champion}
//! ```
//!
//! A step is a job body (task, inputs, outputs, resources, constraints,
//! timeout, retries, cache, metrics), optionally with `needs:` (more steps
//! to wait for), `when:` (a gate: `steps.S.metrics.KEY OP NUMBER`, OP one of
//! `>= > <= < == !=`, joined by `and`) and `register: {model, from, alias}`.
//! A step with only `register` runs no task. An input's `from` is
//! `steps.S.outputs.O` (an output step S declares with `name: O`), an
//! artifact id, a tag, or a model reference (`models/NAME@ALIAS`,
//! `models/NAME:N`). `${params.NAME}` is replaced in args, env values and
//! gate numbers. `uses: FILE` (a job file) is read and inlined by the CLI
//! ([`inline_uses`]) before the spec is sent; the daemon refuses it.
//!
//! A step waits for every step it names (inputs, `needs`, the gate's steps,
//! `register.from`), so a gate's steps are always upstream of it.
//!
//! Non-goals: running anything (the node's `pipeline` engine does), and a
//! serialized form: a pipeline travels as its YAML text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::hash::Hash;
use crate::job::{
    Arg, EnvValue, InputPath, JobName, JobSpec, JobSpecError, LabelKey, Metadata, OutputPath,
    Resources, Spec, Task, Timeout,
};
use crate::ledger::{AliasName, ModelName};
use crate::tag::{ArtifactRef, TagName};

/// Largest pipeline spec accepted, in bytes of YAML.
pub const MAX_PIPELINE_BYTES: usize = crate::job::MAX_SPEC_BYTES;

/// Most steps one pipeline may have.
pub const MAX_STEPS: usize = 256;

/// Most params one pipeline may declare.
pub const MAX_PARAMS: usize = 128;

/// Longest step, output or param name.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest param value.
pub const MAX_PARAM_VALUE_BYTES: usize = 4096;

/// Most bytes of param names and values together (a run's record carries
/// them, and must fit in one ledger entry).
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;

/// Most bytes a run's record may spend on its steps, as estimated by
/// [`STEP_RECORD_BYTES`] plus names (with the params, well within one
/// ledger entry of [`crate::ledger::MAX_ENTRY_BYTES`]).
pub const MAX_STEPS_RECORD_BYTES: usize = 176 * 1024;

/// What one step costs in a run's record besides its names: field names,
/// state, job id, times and a reason of at most 300 bytes.
pub const STEP_RECORD_BYTES: usize = 420;

/// Why a pipeline spec (or a param override) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A field, named by its path, holds a value that is not acceptable.
    #[error("{path}: {message}{}", at_line(.line))]
    Field {
        path: String,
        message: String,
        /// Where in the YAML, when known.
        line: Option<usize>,
    },
    /// The document as a whole is not a pipeline spec.
    #[error("invalid pipeline spec: {0}")]
    Invalid(String),
    #[error("pipeline spec of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

fn field(path: impl Into<String>, message: impl Into<String>) -> PipelineError {
    PipelineError::Field {
        path: path.into(),
        message: message.into(),
        line: None,
    }
}

/// A checked pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    pub name: JobName,
    /// Groups the runs of its steps (`weft runs ls --experiment E`).
    pub experiment: Option<JobName>,
    /// Declared params with their defaults, by name.
    pub params: BTreeMap<String, Param>,
    /// Tags whose moves start a run.
    pub triggers: Vec<Trigger>,
    /// The steps in a topological order (a step after every step it
    /// needs; ties by name).
    pub steps: Vec<Step>,
}

/// A declared param and its default.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Any text.
    Text(String),
    /// A number (the default was one): overrides must be numbers too.
    Number(f64),
}

impl Param {
    /// The value as it is substituted.
    pub fn text(&self) -> String {
        match self {
            Param::Text(s) => s.clone(),
            Param::Number(n) => number_text(*n),
        }
    }
}

fn number_text(n: f64) -> String {
    // integers print without a fraction (500, not 500.0)
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// `spec.triggers[i]`: a tag whose moves start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub tag: TriggerTag,
}

/// What a trigger watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerTag {
    /// One tag: `datasets/iris:v1`.
    Tag(TagName),
    /// Every version of a repository: `datasets/iris`.
    Repository(String),
}

impl TriggerTag {
    fn parse(s: &str) -> Result<TriggerTag, String> {
        if s.contains(':') {
            return TagName::new(s)
                .map(TriggerTag::Tag)
                .map_err(|e| e.to_string());
        }
        // a repository is valid when it makes a valid tag
        TagName::new(&format!("{s}:v"))
            .map(|_| TriggerTag::Repository(s.to_string()))
            .map_err(|_| {
                format!(
                    "{:?} is neither a tag (datasets/iris:v1) nor a tag repository (datasets/iris)",
                    shown(s)
                )
            })
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// Every step it waits for, sorted.
    pub needs: Vec<String>,
    /// The job it runs; `None` for a step that only registers.
    pub job: Option<StepJob>,
    pub when: Option<Gate>,
    pub register: Option<Register>,
}

/// A step's job body, as in `kind: Job` with named outputs and inputs that
/// may come from other steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepJob {
    pub task: Task,
    pub inputs: Vec<StepInput>,
    pub outputs: Vec<StepOutput>,
    pub resources: Resources,
    pub constraints: BTreeMap<LabelKey, String>,
    pub timeout: Option<Timeout>,
    pub retries: u32,
    pub cache: bool,
    pub metrics: Option<OutputPath>,
}

/// One input of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInput {
    pub from: Source,
    pub path: InputPath,
}

/// One kept output of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutput {
    /// How other steps name it (`steps.S.outputs.NAME`).
    pub name: Option<String>,
    pub path: OutputPath,
    pub tag: Option<TagName>,
}

/// Where an input (or a registered model) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `steps.STEP.outputs.OUTPUT`.
    Step { step: String, output: String },
    /// An id, a tag or a model reference.
    Artifact(ArtifactRef),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Step { step, output } => write!(f, "steps.{step}.outputs.{output}"),
            Source::Artifact(r) => write!(f, "{r}"),
        }
    }
}

/// `register: {model, from, alias}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub model: ModelName,
    pub from: Source,
    pub alias: Option<AliasName>,
}

/// A gate: conditions that must all hold for the step to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// As written.
    pub text: String,
    pub conditions: Vec<Condition>,
}

/// `steps.STEP.metrics.KEY OP VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub step: String,
    pub metric: String,
    pub op: Op,
    /// A number, or text holding `${params.NAME}` that becomes one.
    pub value: String,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            ">=" => Op::Ge,
            ">" => Op::Gt,
            "<=" => Op::Le,
            "<" => Op::Lt,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// Params after defaults and overrides, by name.
pub type Params = BTreeMap<String, String>;

impl PipelineSpec {
    /// Parses and checks a YAML pipeline spec.
    pub fn from_yaml(text: &str) -> Result<PipelineSpec, PipelineError> {
        if text.len() > MAX_PIPELINE_BYTES {
            return Err(PipelineError::TooLarge {
                len: text.len(),
                limit: MAX_PIPELINE_BYTES,
            });
        }
        if text.trim().is_empty() {
            return Err(PipelineError::Invalid(
                "the document is empty; a pipeline spec starts with `apiVersion: weft/v1`"
                    .to_string(),
            ));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let wire: PipelineWire = serde_path_to_error::deserialize(de).map_err(path_error)?;
        check(wire)
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The params for a run: the defaults, replaced by `overrides`. An
    /// unknown name or a number param given text is refused.
    pub fn params_with(&self, overrides: &[(String, String)]) -> Result<Params, PipelineError> {
        let mut out: Params = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.text()))
            .collect();
        for (k, v) in overrides {
            let path = format!("spec.params.{k}");
            let Some(declared) = self.params.get(k) else {
                return Err(field(
                    path,
                    format!(
                        "unknown param: the pipeline declares {}",
                        listing(self.params.keys())
                    ),
                ));
            };
            if v.len() > MAX_PARAM_VALUE_BYTES || v.contains('\0') {
                return Err(field(
                    path,
                    format!(
                        "a param value is text of at most {MAX_PARAM_VALUE_BYTES} bytes, without NUL"
                    ),
                ));
            }
            if matches!(declared, Param::Number(_)) && parse_number(v).is_none() {
                return Err(field(
                    path,
                    format!(
                        "type mismatch: {k} is a number (its default is {}), not {:?}",
                        declared.text(),
                        shown(v)
                    ),
                ));
            }
            out.insert(k.clone(), v.clone());
        }
        check_params_size(&out)?;
        Ok(out)
    }

    /// The names of a step's transitive dependents (not the step itself).
    pub fn downstream(&self, step: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        // steps are in topological order: one pass finds every dependent
        for s in &self.steps {
            if s.needs.iter().any(|n| n == step || out.contains(n)) {
                out.insert(s.name.clone());
            }
        }
        out
    }
}

fn check_params_size(params: &Params) -> Result<(), PipelineError> {
    let total: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_PARAMS_BYTES {
        return Err(field(
            "spec.params",
            format!(
                "the params hold {total} bytes, more than the most a run records, {MAX_PARAMS_BYTES}"
            ),
        ));
    }
    Ok(())
}

fn listing<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Replaces every `${params.NAME}` in `text`. An unknown name, or a `${params.`
/// without its `}`, is an error (the message, without a path).
pub fn substitute(text: &str, params: &Params) -> Result<String, String> {
    const OPEN: &str = "${params.";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "unterminated ${{params.…}} in {:?}: write ${{params.NAME}}",
                shown(text)
            ));
        };
        let name = &after[..end];
        match params.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "unknown param {name:?}: the pipeline declares {}",
                    listing(params.keys())
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Step {
    /// The job to submit for this step: params substituted, each
    /// `steps.S.outputs.O` replaced by the id `output(S, O)` gives, each
    /// input naming a tag in `pinned` replaced by the id given there, and
    /// `cache: false` when `force`.
    pub fn job_spec(
        &self,
        pipeline: &PipelineSpec,
        params: &Params,
        output: &dyn Fn(&str, &str) -> Option<Hash>,
        pinned: &[(TagName, Hash)],
        force: bool,
    ) -> Result<JobSpec, PipelineError> {
        let Some(job) = &self.job else {
            return Err(field(
                format!("spec.steps.{}", self.name),
                "this step runs no task",
            ));
        };
        let at = format!("spec.steps.{}", self.name);
        let task = substitute_task(&job.task, params, &format!("{at}.task"))?;
        let mut inputs = Vec::with_capacity(job.inputs.len());
        for (i, input) in job.inputs.iter().enumerate() {
            let from = match &input.from {
                Source::Step { step, output: o } => {
                    let h = output(step, o).ok_or_else(|| {
                        field(
                            format!("{at}.inputs[{i}].from"),
                            format!("step {step} has no output {o} (it has not succeeded)"),
                        )
                    })?;
                    id_ref(h)
                }
                Source::Artifact(ArtifactRef::Tag(t)) => {
                    match pinned.iter().find(|(name, _)| name == t) {
                        Some((_, h)) => id_ref(*h),
                        None => ArtifactRef::Tag(t.clone()),
                    }
                }
                Source::Artifact(r) => r.clone(),
            };
            inputs.push(crate::job::Input {
                from,
                path: input.path.clone(),
            });
        }
        let spec = JobSpec {
            metadata: Metadata {
                name: step_job_name(pipeline.name.as_str(), &self.name),
                experiment: pipeline.experiment.clone(),
            },
            spec: Spec {
                task,
                inputs,
                outputs: job
                    .outputs
                    .iter()
                    .map(|o| crate::job::Output {
                        path: o.path.clone(),
                        tag: o.tag.clone(),
                    })
                    .collect(),
                resources: job.resources.clone(),
                constraints: job.constraints.clone(),
                timeout: job.timeout,
                retries: job.retries,
                cache: job.cache && !force,
                metrics: job.metrics.clone(),
            },
        };
        recheck(spec, &at)
    }

    /// Whether the step's gate holds for `params` and the metrics `metric(S,
    /// KEY)` gives; a step without a gate passes. A metric not reported is
    /// an error (a gate that cannot be decided).
    pub fn gate_holds(
        &self,
        params: &Params,
        metric: &dyn Fn(&str, &str) -> Option<f64>,
    ) -> Result<bool, String> {
        let Some(gate) = &self.when else {
            return Ok(true);
        };
        for c in &gate.conditions {
            let want = substitute(&c.value, params)?;
            let want = parse_number(&want)
                .ok_or_else(|| format!("type mismatch: {want:?} is not a number"))?;
            let have = metric(&c.step, &c.metric).ok_or_else(|| {
                format!(
                    "step {} reported no metric {:?}, so the gate {:?} cannot be decided",
                    c.step, c.metric, gate.text
                )
            })?;
            if !c.op.holds(have, want) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A reference to exactly `h`.
pub fn id_ref(h: Hash) -> ArtifactRef {
    ArtifactRef::Id(
        h.to_hex()
            .parse()
            .expect("64 hex digits are a valid id prefix"),
    )
}

/// The job name of a step: `PIPELINE.STEP`, or the step's name when that
/// is too long.
fn step_job_name(pipeline: &str, step: &str) -> JobName {
    format!("{pipeline}.{step}")
        .parse()
        .or_else(|_| step.parse())
        .unwrap_or_else(|_| {
            // step names are checked job names (see `check_name`)
            JobName::try_from("step".to_string()).expect("a constant valid job name")
        })
}

fn substitute_task(task: &Task, params: &Params, at: &str) -> Result<Task, PipelineError> {
    let args = |list: &[Arg], at: &str| -> Result<Vec<Arg>, PipelineError> {
        list.iter()
            .enumerate()
            .map(|(i, a)| {
                let path = format!("{at}[{i}]");
                let s = substitute(a.as_str(), params).map_err(|m| field(&path, m))?;
                s.parse::<Arg>().map_err(|m| field(&path, m))
            })
            .collect()
    };
    let env = |map: &BTreeMap<crate::job::EnvName, EnvValue>,
               at: &str|
     -> Result<BTreeMap<crate::job::EnvName, EnvValue>, PipelineError> {
        map.iter()
            .map(|(k, v)| {
                let path = format!("{at}.{k}");
                let s = substitute(v.as_str(), params).map_err(|m| field(&path, m))?;
                Ok((
                    k.clone(),
                    s.parse::<EnvValue>().map_err(|m| field(&path, m))?,
                ))
            })
            .collect()
    };
    Ok(match task {
        Task::Wasm(w) => {
            let at = format!("{at}.wasm");
            let mut w = w.clone();
            w.args = args(&w.args, &format!("{at}.args"))?;
            w.env = env(&w.env, &format!("{at}.env"))?;
            Task::Wasm(w)
        }
        Task::Container(c) => {
            let at = format!("{at}.container");
            let mut c = c.clone();
            c.command = args(&c.command, &format!("{at}.command"))?;
            c.args = args(&c.args, &format!("{at}.args"))?;
            c.env = env(&c.env, &format!("{at}.env"))?;
            Task::Container(c)
        }
    })
}

/// Runs a built job spec through the job parser's own checks (paths that
/// overlap, tags given twice, bounds), naming the step's fields.
fn recheck(spec: JobSpec, at: &str) -> Result<JobSpec, PipelineError> {
    spec.checked().map_err(|e| match e {
        JobSpecError::Field { path, message, .. } => {
            let rest = path.strip_prefix("spec").unwrap_or(&path);
            field(format!("{at}{rest}"), message)
        }
        other => field(at, other.to_string()),
    })
}

// ---------------------------------------------------------------------------
// `uses:`, inlined by the CLI.

/// Replaces each step's `uses: FILE` by the fields of that job file's
/// `spec` (fields the step gives itself win), reading files with `read`.
/// Returns the YAML to send.
pub fn inline_uses(
    text: &str,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, PipelineError> {
    use serde_yaml_ng::Value;
    let mut doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let Some(steps) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("steps"))
        .and_then(|s| s.as_mapping_mut())
    else {
        return Ok(text.to_string());
    };
    let mut changed = false;
    for (name, step) in steps.iter_mut() {
        let name = name.as_str().unwrap_or("?").to_string();
        let Some(map) = step.as_mapping_mut() else {
            continue;
        };
        let Some(uses) = map.remove("uses") else {
            continue;
        };
        changed = true;
        let path = format!("spec.steps.{name}.uses");
        let file = uses
            .as_str()
            .ok_or_else(|| field(&path, "give the path of a job file (kind: Job)"))?;
        let job_text = read(file).map_err(|e| field(&path, format!("{file}: {e}")))?;
        JobSpec::from_yaml(&job_text).map_err(|e| field(&path, format!("{file}: {e}")))?;
        let job: Value =
            serde_yaml_ng::from_str(&job_text).map_err(|e| field(&path, format!("{file}: {e}")))?;
        if let Some(spec) = job.get("spec").and_then(|s| s.as_mapping()) {
            for (k, v) in spec {
                if !map.contains_key(k) {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !changed {
        return Ok(text.to_string());
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| PipelineError::Invalid(e.to_string()))
}

// ---------------------------------------------------------------------------
// Parsing.

#[derive(Debug, Clone, Copy, Deserialize)]
enum ApiVersion {
    #[serde(rename = "weft/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Kind {
    Pipeline,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PipelineWire {
    #[allow(dead_code)]
    api_version: ApiVersion,
    #[allow(dead_code)]
    kind: Kind,
    metadata: Metadata,
    spec: SpecWire,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecWire {
    #[serde(default)]
    params: BTreeMap<String, Param>,
    #[serde(default)]
    triggers: Vec<TriggerWire>,
    steps: BTreeMap<String, StepWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerWire {
    tag: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepWire {
    #[serde(default)]
    uses: Option<String>,
    #[serde(default)]
    task: Option<Task>,
    #[serde(default)]
    inputs: Vec<InputWire>,
    #[serde(default)]
    outputs: Vec<OutputWire>,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    constraints: BTreeMap<LabelKey, String>,
    #[serde(default)]
    timeout: Option<Timeout>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    cache: Option<bool>,
    #[serde(default)]
    metrics: Option<OutputPath>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    register: Option<RegisterWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputWire {
    from: String,
    path: InputPath,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputWire {
    #[serde(default)]
    name: Option<String>,
    path: OutputPath,
    #[serde(default)]
    tag: Option<TagName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterWire {
    model: ModelName,
    from: String,
    #[serde(default)]
    alias: Option<AliasName>,
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
                Ok(Param::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
                Ok(Param::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
                if v.is_finite() {
                    Ok(Param::Number(v))
                } else {
                    Err(E::custom("a number param must be finite"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                if v.len() > MAX_PARAM_VALUE_BYTES || v.contains('\0') {
                    return Err(E::custom(format!(
                        "a param value is text of at most {MAX_PARAM_VALUE_BYTES} bytes, without NUL"
                    )));
                }
                Ok(Param::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn path_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> PipelineError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner.location().map(|l| l.line());
    let mut message = inner.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    if let Some((p, m)) = message.split_once(": ")
        && path != "."
        && !p.contains(' ')
        && path.starts_with(p)
    {
        message = m.to_string();
    }
    if path == "." || path == "?" || path.is_empty() {
        PipelineError::Invalid(message)
    } else {
        PipelineError::Field {
            path,
            message,
            line,
        }
    }
}

/// A step, output or param name: 1 to 64 letters, digits, `_` or `-`,
/// starting with a letter or digit (no `.`: names are joined with dots).
fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {:?}: use 1 to {MAX_NAME_BYTES} letters, digits, '_' or '-', \
             starting with a letter or digit",
            shown(s)
        ))
    }
}

/// The dependency edges of a step, each with the field that makes it.
struct Edges {
    /// (needed step, field path)
    list: Vec<(String, String)>,
}

impl Edges {
    fn add(&mut self, step: &str, path: String) {
        if !self.list.iter().any(|(s, _)| s == step) {
            self.list.push((step.to_string(), path));
        }
    }
}

fn check(wire: PipelineWire) -> Result<PipelineSpec, PipelineError> {
    let spec = wire.spec;
    if spec.steps.is_empty() {
        return Err(field("spec.steps", "a pipeline needs at least one step"));
    }
    if spec.steps.len() > MAX_STEPS {
        return Err(field(
            "spec.steps",
            format!(
                "{} steps is more than the most allowed, {MAX_STEPS}",
                spec.steps.len()
            ),
        ));
    }
    if spec.params.len() > MAX_PARAMS {
        return Err(field(
            "spec.params",
            format!(
                "{} params is more than the most allowed, {MAX_PARAMS}",
                spec.params.len()
            ),
        ));
    }
    for k in spec.params.keys() {
        check_name("param", k).map_err(|m| field(format!("spec.params.{k}"), m))?;
    }
    let defaults: Params = spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.text()))
        .collect();
    let names: Vec<String> = spec.steps.keys().cloned().collect();
    for name in &names {
        check_name("step", name).map_err(|m| field(format!("spec.steps.{name}"), m))?;
    }
    // declared outputs by step, to check references
    let mut declared: HashMap<String, Vec<String>> = HashMap::new();
    for (name, s) in &spec.steps {
        let mut seen: Vec<String> = Vec::new();
        for (i, o) in s.outputs.iter().enumerate() {
            if let Some(n) = &o.name {
                let path = format!("spec.steps.{name}.outputs[{i}].name");
                check_name("output", n).map_err(|m| field(&path, m))?;
                if seen.contains(n) {
                    return Err(field(
                        path,
                        format!("{n} is already the name of another output of this step"),
                    ));
                }
                seen.push(n.clone());
            }
        }
        declared.insert(name.clone(), seen);
    }
    let source = |path: &str, from: &str, me: &str| -> Result<Source, PipelineError> {
        if let Some(rest) = from.strip_prefix("steps.") {
            let parts: Vec<&str> = rest.split('.').collect();
            let [step, "outputs", output] = parts.as_slice() else {
                return Err(field(
                    path,
                    format!("{:?}: write steps.STEP.outputs.OUTPUT", shown(from)),
                ));
            };
            let Some(outs) = declared.get(*step) else {
                return Err(field(
                    path,
                    format!(
                        "unknown step {step:?}: the steps are {}",
                        listing(names.iter())
                    ),
                ));
            };
            if *step == me {
                return Err(field(
                    path,
                    format!("step {me} cannot take its own output: a step depends on itself"),
                ));
            }
            if !outs.iter().any(|o| o == output) {
                return Err(field(
                    path,
                    format!(
                        "output {output:?} is used but step {step} does not declare it \
                         (give it `name: {output}` in steps.{step}.outputs; it declares {})",
                        if outs.is_empty() {
                            "none".to_string()
                        } else {
                            outs.join(", ")
                        }
                    ),
                ));
            }
            return Ok(Source::Step {
                step: step.to_string(),
                output: output.to_string(),
            });
        }
        from.parse::<ArtifactRef>()
            .map(Source::Artifact)
            .map_err(|e| field(path, e.to_string()))
    };

    let mut steps: BTreeMap<String, (Step, Edges)> = BTreeMap::new();
    let mut tags: HashMap<TagName, String> = HashMap::new();
    for (name, s) in spec.steps {
        let at = format!("spec.steps.{name}");
        let mut edges = Edges { list: Vec::new() };
        if s.uses.is_some() {
            return Err(field(
                format!("{at}.uses"),
                "job files are read by `weft pipeline run`, which inlines them; \
                 send the job's fields in the step itself",
            ));
        }
        let job = match s.task {
            Some(task) => {
                let mut inputs = Vec::with_capacity(s.inputs.len());
                for (i, input) in s.inputs.into_iter().enumerate() {
                    let path = format!("{at}.inputs[{i}].from");
                    let from = source(&path, &input.from, &name)?;
                    if let Source::Step { step, .. } = &from {
                        edges.add(step, path);
                    }
                    inputs.push(StepInput {
                        from,
                        path: input.path,
                    });
                }
                let mut outputs = Vec::with_capacity(s.outputs.len());
                for (i, o) in s.outputs.into_iter().enumerate() {
                    if let Some(t) = &o.tag {
                        if let Some(other) = tags.get(t) {
                            return Err(field(
                                format!("{at}.outputs[{i}].tag"),
                                format!(
                                    "{t} is also given by step {other}; each output needs its own tag"
                                ),
                            ));
                        }
                        tags.insert(t.clone(), name.clone());
                    }
                    outputs.push(StepOutput {
                        name: o.name,
                        path: o.path,
                        tag: o.tag,
                    });
                }
                Some(StepJob {
                    task,
                    inputs,
                    outputs,
                    resources: s.resources,
                    constraints: s.constraints,
                    timeout: s.timeout,
                    retries: s.retries.unwrap_or(2),
                    cache: s.cache.unwrap_or(true),
                    metrics: s.metrics,
                })
            }
            None => {
                let extra = [
                    ("inputs", !s.inputs.is_empty()),
                    ("outputs", !s.outputs.is_empty()),
                    ("resources", !s.resources.is_empty()),
                    ("constraints", !s.constraints.is_empty()),
                    ("timeout", s.timeout.is_some()),
                    ("retries", s.retries.is_some()),
                    ("cache", s.cache.is_some()),
                    ("metrics", s.metrics.is_some()),
                ];
                if let Some((f, _)) = extra.iter().find(|(_, given)| *given) {
                    return Err(field(
                        format!("{at}.{f}"),
                        "this step runs no task (it has no task:), so it takes no job fields",
                    ));
                }
                if s.register.is_none() {
                    return Err(field(
                        at,
                        "missing: give task (or uses) for a job, or register for a registration",
                    ));
                }
                None
            }
        };
        for (i, n) in s.needs.iter().enumerate() {
            let path = format!("{at}.needs[{i}]");
            if !names.contains(n) {
                return Err(field(
                    path,
                    format!(
                        "unknown step {n:?}: the steps are {}",
                        listing(names.iter())
                    ),
                ));
            }
            if *n == name {
                return Err(field(path, format!("step {name} cannot need itself")));
            }
            edges.add(n, path);
        }
        let when = match s.when {
            Some(text) => {
                let path = format!("{at}.when");
                let gate = parse_gate(&text).map_err(|m| field(&path, m))?;
                for c in &gate.conditions {
                    let Some(needed) = spec_steps_has(&names, &c.step) else {
                        return Err(field(
                            &path,
                            format!(
                                "unknown step {:?}: the steps are {}",
                                c.step,
                                listing(names.iter())
                            ),
                        ));
                    };
                    if needed == name {
                        return Err(field(
                            &path,
                            format!(
                                "the gate reads step {name}'s own metrics, but it is checked \
                                 before {name} runs; name a step upstream of it"
                            ),
                        ));
                    }
                    let v = substitute(&c.value, &defaults).map_err(|m| field(&path, m))?;
                    if parse_number(&v).is_none() {
                        return Err(field(
                            &path,
                            format!(
                                "type mismatch: a gate compares a metric with a number, not {:?}",
                                shown(&v)
                            ),
                        ));
                    }
                    edges.add(&c.step, path.clone());
                }
                Some(gate)
            }
            None => None,
        };
        let register = match s.register {
            Some(r) => {
                let path = format!("{at}.register.from");
                let from = match source(&path, &r.from, &name) {
                    Err(PipelineError::Field { message, .. })
                        if message.contains("cannot take its own output") =>
                    {
                        return Err(field(
                            path,
                            format!(
                                "step {name} cannot register its own output: register it in a step after it"
                            ),
                        ));
                    }
                    other => other?,
                };
                if let Source::Step { step, .. } = &from {
                    edges.add(step, path);
                }
                Some(Register {
                    model: r.model,
                    from,
                    alias: r.alias,
                })
            }
            None => None,
        };
        let step = Step {
            name: name.clone(),
            needs: Vec::new(),
            job,
            when,
            register,
        };
        steps.insert(name, (step, edges));
    }

    // gates read metrics: the steps they name must run a task
    for (name, (step, _)) in &steps {
        if let Some(g) = &step.when {
            for c in &g.conditions {
                if steps.get(&c.step).is_some_and(|(s, _)| s.job.is_none()) {
                    return Err(field(
                        format!("spec.steps.{name}.when"),
                        format!("step {} runs no task, so it reports no metrics", c.step),
                    ));
                }
            }
        }
    }

    check_params_size(&defaults)?;
    let record: usize = steps
        .iter()
        .map(|(name, (_, edges))| {
            STEP_RECORD_BYTES
                + name.len()
                + edges.list.iter().map(|(n, _)| n.len() + 2).sum::<usize>()
        })
        .sum();
    if record > MAX_STEPS_RECORD_BYTES {
        return Err(field(
            "spec.steps",
            format!(
                "the steps and what they wait for would take about {record} bytes in each \
                 record of a run, more than {MAX_STEPS_RECORD_BYTES}; use fewer steps, \
                 shorter names or fewer needs"
            ),
        ));
    }
    let order = topological(&steps)?;
    let mut ordered = Vec::with_capacity(order.len());
    for name in order {
        let Some((mut step, edges)) = steps.remove(&name) else {
            continue;
        };
        let mut needs: Vec<String> = edges.list.into_iter().map(|(s, _)| s).collect();
        needs.sort();
        step.needs = needs;
        ordered.push(step);
    }
    let mut triggers = Vec::with_capacity(spec.triggers.len());
    for (i, t) in spec.triggers.iter().enumerate() {
        let tag =
            TriggerTag::parse(&t.tag).map_err(|m| field(format!("spec.triggers[{i}].tag"), m))?;
        triggers.push(Trigger { tag });
    }
    let pipeline = PipelineSpec {
        name: wire.metadata.name,
        experiment: wire.metadata.experiment,
        params: spec.params,
        triggers,
        steps: ordered,
    };
    // every step's job as it would be submitted with the defaults (params
    // known, paths disjoint, within bounds)
    let placeholder = |_: &str, _: &str| Some(Hash::EMPTY);
    for step in &pipeline.steps {
        if step.job.is_some() {
            step.job_spec(&pipeline, &defaults, &placeholder, &[], false)?;
        }
    }
    Ok(pipeline)
}

fn spec_steps_has(names: &[String], step: &str) -> Option<String> {
    names.iter().find(|n| *n == step).cloned()
}

/// The steps in dependency order (ties by name), or the first cycle found,
/// printed and attributed to the field that closes it.
fn topological(steps: &BTreeMap<String, (Step, Edges)>) -> Result<Vec<String>, PipelineError> {
    let mut graph: DiGraph<&str, &str> = DiGraph::new();
    let mut index: BTreeMap<&str, NodeIndex> = BTreeMap::new();
    for name in steps.keys() {
        index.insert(name.as_str(), graph.add_node(name.as_str()));
    }
    for (name, (_, edges)) in steps {
        for (needed, path) in &edges.list {
            if let (Some(&a), Some(&b)) = (index.get(needed.as_str()), index.get(name.as_str())) {
                graph.add_edge(a, b, path.as_str());
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        // the cycle a -> b -> ... -> a, where a waits for b; told from the
        // field most likely to be the mistake: a gate, then a need
        let field_of = |i: usize| -> String {
            graph
                .find_edge(cycle[i + 1], cycle[i])
                .map(|e| graph[e].to_string())
                .unwrap_or_else(|| format!("spec.steps.{}", graph[cycle[i]]))
        };
        let rank = |p: &str| {
            if p.ends_with(".when") {
                0
            } else if p.contains(".needs[") {
                1
            } else {
                2
            }
        };
        let len = cycle.len() - 1;
        let at = (0..len)
            .min_by_key(|&i| (rank(&field_of(i)), i))
            .unwrap_or(0);
        let mut names: Vec<&str> = (0..len).map(|i| graph[cycle[(at + i) % len]]).collect();
        names.push(graph[cycle[at]]);
        let path = field_of(at);
        let message = format!("the steps form a cycle: {}", names.join(" -> "));
        if path.ends_with(".when") {
            return Err(field(
                path,
                format!(
                    "the gate names step {}, which is not upstream of {} (it waits for {}); {message}",
                    names[1], names[0], names[0]
                ),
            ));
        }
        return Err(field(path, message));
    }
    // Kahn's algorithm with a name-ordered ready set, so the order is stable
    let mut indegree: BTreeMap<&str, usize> = steps.keys().map(|k| (k.as_str(), 0)).collect();
    for (name, (_, edges)) in steps {
        indegree.insert(name.as_str(), edges.list.len());
    }
    let mut ready: BTreeSet<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut out = Vec::with_capacity(steps.len());
    while let Some(next) = ready.pop_first() {
        out.push(next.to_string());
        for (name, (_, edges)) in steps {
            if edges.list.iter().any(|(s, _)| s == next)
                && let Some(d) = indegree.get_mut(name.as_str())
            {
                *d -= 1;
                if *d == 0 {
                    ready.insert(name.as_str());
                }
            }
        }
    }
    Ok(out)
}

/// A cycle as the steps that wait on each other: `[a, b, ..., a]` where a
/// waits for b. `None` when the graph is acyclic.
fn find_cycle(graph: &DiGraph<&str, &str>) -> Option<Vec<NodeIndex>> {
    if !petgraph::algo::is_cyclic_directed(graph) {
        return None;
    }
    // the strongly connected components with a cycle, the one holding the
    // smallest name first, so the report does not depend on map order
    let mut sccs: Vec<Vec<NodeIndex>> = petgraph::algo::tarjan_scc(graph)
        .into_iter()
        .filter(|c| c.len() > 1 || graph.find_edge(c[0], c[0]).is_some())
        .collect();
    sccs.sort_by_key(|c| c.iter().map(|&n| graph[n]).min());
    let scc = sccs.into_iter().next()?;
    let start = *scc.iter().min_by_key(|&&n| graph[n])?;
    // breadth-first over "waits for" (reverse edges) inside the component,
    // from start back to start
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut waits: Vec<NodeIndex> = graph
            .neighbors_directed(n, petgraph::Direction::Incoming)
            .filter(|m| scc.contains(m))
            .collect();
        waits.sort_by_key(|&m| graph[m]);
        for m in waits {
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                let mut back = vec![];
                while cur != start {
                    back.push(cur);
                    cur = prev[&cur];
                }
                back.reverse();
                path.extend(back);
                path.push(start);
                return Some(path);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    None
}

/// Parses `steps.S.metrics.KEY OP VALUE [and ...]`.
fn parse_gate(text: &str) -> Result<Gate, String> {
    let help = "write steps.STEP.metrics.KEY OP NUMBER (OP one of >= > <= < == !=), \
                joined by `and`, e.g. \"steps.evaluate.metrics.accuracy >= 0.9\"";
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.is_empty() {
        return Err(format!("empty gate: {help}"));
    }
    let mut conditions = Vec::new();
    for (i, chunk) in tokens.split(|t| *t == "and").enumerate() {
        let [lhs, op, value] = chunk else {
            return Err(format!("condition {} is not three words: {help}", i + 1));
        };
        let op = Op::parse(op).ok_or_else(|| format!("unknown comparison {op:?}: {help}"))?;
        let Some(rest) = lhs.strip_prefix("steps.") else {
            return Err(format!("{lhs:?} does not name a step's metric: {help}"));
        };
        let Some((step, metric)) = rest.split_once(".metrics.") else {
            return Err(format!("{lhs:?} does not name a step's metric: {help}"));
        };
        if step.is_empty() || metric.is_empty() || step.contains('.') {
            return Err(format!("{lhs:?} does not name a step's metric: {help}"));
        }
        conditions.push(Condition {
            step: step.to_string(),
            metric: metric.to_string(),
            op,
            value: value.to_string(),
        });
    }
    Ok(Gate {
        text: text.to_string(),
        conditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: iris, experiment: iris}
spec:
  params: {epochs: "500"}
  triggers: [{tag: datasets/iris:v1}]
  steps:
    split:
      task: {wasm: {module: examples/split:v1}}
      inputs: [{from: datasets/iris:v1, path: /inputs/data}]
      outputs: [{name: parts, path: /outputs}]
    train:
      task: {wasm: {module: examples/train:v1, args: ["--epochs", "${params.epochs}"]}}
      inputs: [{from: steps.split.outputs.parts, path: /inputs/data}]
      outputs: [{name: model, path: /outputs/model, tag: models/iris-latest:v1}]
    evaluate:
      task: {wasm: {module: examples/evaluate:v1}}
      inputs:
        - {from: steps.train.outputs.model, path: /inputs/model}
        - {from: steps.split.outputs.parts, path: /inputs/data}
      outputs: [{name: metrics, path: /outputs}]
    promote:
      when: "steps.evaluate.metrics.accuracy >= 0.9"
      register: {model: iris, from: steps.train.outputs.model, alias: champion}
"#;

    fn err(yaml: &str) -> (String, String) {
        match PipelineSpec::from_yaml(yaml) {
            Err(PipelineError::Field { path, message, .. }) => (path, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn edit(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from}");
        EXAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn the_example_parses_in_dependency_order() {
        let p = PipelineSpec::from_yaml(EXAMPLE).expect("valid");
        assert_eq!(p.name.as_str(), "iris");
        assert_eq!(p.experiment.as_ref().map(|e| e.as_str()), Some("iris"));
        let order: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["split", "train", "evaluate", "promote"]);
        let promote = p.step("promote").expect("promote");
        assert_eq!(promote.needs, ["evaluate", "train"]);
        assert!(promote.job.is_none());
        let r = promote.register.as_ref().expect("register");
        assert_eq!(r.model.as_str(), "iris");
        assert_eq!(r.alias.as_ref().map(|a| a.as_str()), Some("champion"));
        assert_eq!(
            p.triggers[0].tag,
            TriggerTag::Tag(TagName::new("datasets/iris:v1").expect("tag"))
        );
        assert_eq!(p.params["epochs"], Param::Text("500".into()));
        assert_eq!(
            p.downstream("train").into_iter().collect::<Vec<_>>(),
            ["evaluate", "promote"]
        );
        assert_eq!(p.downstream("promote").len(), 0);
    }

    #[test]
    fn a_step_job_gets_params_and_upstream_ids() {
        let p = PipelineSpec::from_yaml(EXAMPLE).expect("valid");
        let params = p
            .params_with(&[("epochs".into(), "7".into())])
            .expect("params");
        let id = Hash::of(b"parts");
        let train = p.step("train").expect("train");
        let out = |s: &str, o: &str| (s == "split" && o == "parts").then_some(id);
        let job = train.job_spec(&p, &params, &out, &[], false).expect("job");
        assert_eq!(job.name(), "iris.train");
        let Task::Wasm(w) = &job.spec.task else {
            panic!("wasm")
        };
        assert_eq!(w.args[1].as_str(), "7");
        assert_eq!(job.spec.inputs[0].from, id_ref(id));
        assert!(job.spec.cache);
        assert!(
            !train
                .job_spec(&p, &params, &out, &[], true)
                .expect("job")
                .spec
                .cache
        );
        // a pinned tag becomes the id given
        let split = p.step("split").expect("split");
        let pinned = [(TagName::new("datasets/iris:v1").expect("tag"), id)];
        let job = split
            .job_spec(&p, &params, &out, &pinned, false)
            .expect("job");
        assert_eq!(job.spec.inputs[0].from, id_ref(id));
        // not yet produced
        let none = |_: &str, _: &str| None;
        let (path, _) = match train.job_spec(&p, &params, &none, &[], false) {
            Err(PipelineError::Field { path, message, .. }) => (path, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(path, "spec.steps.train.inputs[0].from");
    }

    #[test]
    fn unknown_step_is_refused_with_the_field() {
        let (path, message) = err(&edit(
            "steps.split.outputs.parts, path: /inputs/data}]",
            "steps.splt.outputs.parts, path: /inputs/data}]",
        ));
        assert_eq!(path, "spec.steps.train.inputs[0].from");
        assert!(message.contains("unknown step \"splt\""), "{message}");
        let (path, message) = err(&edit(
            "accuracy >= 0.9",
            "accuracy >= 0.9 and steps.nope.metrics.x < 1",
        ));
        assert_eq!(path, "spec.steps.promote.when");
        assert!(message.contains("unknown step \"nope\""), "{message}");
        let (path, _) = err(&edit(
            "    promote:\n",
            "    promote:\n      needs: [ghost]\n",
        ));
        assert_eq!(path, "spec.steps.promote.needs[0]");
    }

    #[test]
    fn a_cycle_is_printed() {
        let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: loop}
spec:
  steps:
    a:
      task: {wasm: {module: m:v1}}
      inputs: [{from: steps.b.outputs.o, path: /inputs/b}]
      outputs: [{name: o, path: /outputs}]
    b:
      task: {wasm: {module: m:v1}}
      inputs: [{from: steps.a.outputs.o, path: /inputs/a}]
      outputs: [{name: o, path: /outputs}]
    c:
      task: {wasm: {module: m:v1}}
"#;
        let (path, message) = err(yaml);
        assert_eq!(path, "spec.steps.a.inputs[0].from");
        assert_eq!(message, "the steps form a cycle: a -> b -> a");
        // a longer one, closed by a need
        let yaml = yaml.replace("      task: {wasm: {module: m:v1}}\n\"", "") + "";
        let yaml = yaml.replace(
            "    c:\n      task: {wasm: {module: m:v1}}\n",
            "    c:\n      task: {wasm: {module: m:v1}}\n      needs: [a]\n",
        );
        let yaml = yaml.replace(
            "inputs: [{from: steps.b.outputs.o, path: /inputs/b}]",
            "needs: [c]",
        );
        let (path, message) = err(&yaml);
        assert_eq!(path, "spec.steps.a.needs[0]");
        assert_eq!(message, "the steps form a cycle: a -> c -> a");
    }

    #[test]
    fn a_step_cannot_depend_on_itself() {
        let (path, message) = err(&edit(
            "steps.split.outputs.parts, path: /inputs/data}]\n      outputs: [{name: model",
            "steps.train.outputs.model, path: /inputs/data}]\n      outputs: [{name: model",
        ));
        assert_eq!(path, "spec.steps.train.inputs[0].from");
        assert!(message.contains("depends on itself"), "{message}");
        let (path, _) = err(&edit(
            "    promote:\n",
            "    promote:\n      needs: [promote]\n",
        ));
        assert_eq!(path, "spec.steps.promote.needs[0]");
    }

    #[test]
    fn an_output_used_but_not_declared_is_refused() {
        let (path, message) = err(&edit(
            "{from: steps.train.outputs.model, path: /inputs/model}",
            "{from: steps.train.outputs.weights, path: /inputs/model}",
        ));
        assert_eq!(path, "spec.steps.evaluate.inputs[0].from");
        assert!(
            message.contains("\"weights\" is used but step train does not declare it"),
            "{message}"
        );
        let (path, _) = err(&edit(
            "from: steps.train.outputs.model, alias",
            "from: steps.train.outputs.mdl, alias",
        ));
        assert_eq!(path, "spec.steps.promote.register.from");
        let (path, message) = err(&edit(
            "steps.split.outputs.parts, path: /inputs/data}]\n      outputs: [{name: model",
            "steps.split.parts, path: /inputs/data}]\n      outputs: [{name: model",
        ));
        assert_eq!(path, "spec.steps.train.inputs[0].from");
        assert!(message.contains("steps.STEP.outputs.OUTPUT"), "{message}");
    }

    #[test]
    fn gates_are_checked() {
        // a gate reading its own step
        let (path, message) = err(&edit(
            "    evaluate:\n",
            "    evaluate:\n      when: \"steps.evaluate.metrics.accuracy > 0\"\n",
        ));
        assert_eq!(path, "spec.steps.evaluate.when");
        assert!(message.contains("own metrics"), "{message}");
        // a gate naming a step downstream of it (not upstream)
        let (path, message) = err(&edit(
            "    train:\n",
            "    train:\n      when: \"steps.evaluate.metrics.accuracy > 0\"\n",
        ));
        assert_eq!(path, "spec.steps.train.when");
        assert_eq!(
            message,
            "the gate names step evaluate, which is not upstream of train (it waits for train); \
             the steps form a cycle: train -> evaluate -> train"
        );
        // a gate comparing with text
        let (path, message) = err(&edit("accuracy >= 0.9", "accuracy >= high"));
        assert_eq!(path, "spec.steps.promote.when");
        assert!(message.contains("type mismatch"), "{message}");
        let (path, message) = err(&edit("accuracy >= 0.9", "accuracy >= ${params.epochs}x"));
        assert_eq!(path, "spec.steps.promote.when");
        assert!(message.contains("type mismatch"), "{message}");
        // bad grammar
        for bad in [
            "accuracy >= 0.9",
            "steps.evaluate.metrics.accuracy => 0.9",
            "steps.evaluate.metrics.accuracy >= 0.9 or steps.evaluate.metrics.x > 1",
            "steps.evaluate.accuracy > 1",
        ] {
            let (path, _) = err(&edit("steps.evaluate.metrics.accuracy >= 0.9", bad));
            assert_eq!(path, "spec.steps.promote.when", "{bad}");
        }
        // a gate on a step that runs no task
        let (path, message) = err(&edit(
            "      register: {model: iris",
            "      register: {model: iris",
        ).replace("    evaluate:\n", "    other:\n      when: \"steps.promote.metrics.x > 1\"\n      task: {wasm: {module: m:v1}}\n    evaluate:\n"));
        assert_eq!(path, "spec.steps.other.when");
        assert!(message.contains("runs no task"), "{message}");
    }

    #[test]
    fn gates_decide_from_metrics_and_params() {
        let p = PipelineSpec::from_yaml(
            &edit(
                "accuracy >= 0.9",
                "accuracy >= ${params.min} and steps.evaluate.metrics.loss < 1",
            )
            .replace(
                "params: {epochs: \"500\"}",
                "params: {epochs: \"500\", min: 0.9}",
            ),
        )
        .expect("valid");
        let promote = p.step("promote").expect("promote");
        let params = p.params_with(&[]).expect("params");
        let m = |acc: f64| {
            move |s: &str, k: &str| match (s, k) {
                ("evaluate", "accuracy") => Some(acc),
                ("evaluate", "loss") => Some(0.5),
                _ => None,
            }
        };
        assert_eq!(promote.gate_holds(&params, &m(0.95)), Ok(true));
        assert_eq!(promote.gate_holds(&params, &m(0.85)), Ok(false));
        let strict = p
            .params_with(&[("min".into(), "0.99".into())])
            .expect("params");
        assert_eq!(promote.gate_holds(&strict, &m(0.95)), Ok(false));
        let none = |_: &str, _: &str| None;
        let e = promote.gate_holds(&params, &none).expect_err("undecidable");
        assert!(e.contains("reported no metric \"accuracy\""), "{e}");
        for (op, a, b, want) in [
            (Op::Ge, 1.0, 1.0, true),
            (Op::Gt, 1.0, 1.0, false),
            (Op::Le, 0.5, 1.0, true),
            (Op::Lt, 1.0, 0.5, false),
            (Op::Eq, 2.0, 2.0, true),
            (Op::Ne, 2.0, 2.0, false),
        ] {
            assert_eq!(op.holds(a, b), want, "{} {a} {b}", op.as_str());
        }
    }

    #[test]
    fn params_are_typed_and_known() {
        let yaml = edit(
            "params: {epochs: \"500\"}",
            "params: {epochs: 500, note: hi}",
        );
        let p = PipelineSpec::from_yaml(&yaml).expect("valid");
        assert_eq!(p.params["epochs"], Param::Number(500.0));
        assert_eq!(p.params["epochs"].text(), "500");
        let ok = p.params_with(&[("epochs".into(), "12".into()), ("note".into(), "x".into())]);
        assert_eq!(ok.expect("ok")["epochs"], "12");
        let e = p
            .params_with(&[("epochs".into(), "many".into())])
            .expect_err("type");
        assert_eq!(
            e.to_string(),
            "spec.params.epochs: type mismatch: epochs is a number (its default is 500), not \"many\""
        );
        let e = p
            .params_with(&[("epoch".into(), "1".into())])
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "spec.params.epoch: unknown param: the pipeline declares epochs, note"
        );
        // a param used but not declared
        let (path, message) = err(&edit("${params.epochs}", "${params.epoch}"));
        assert_eq!(path, "spec.steps.train.task.wasm.args[1]");
        assert!(message.contains("unknown param \"epoch\""), "{message}");
        let (path, message) = err(&edit("${params.epochs}", "${params.epochs"));
        assert_eq!(path, "spec.steps.train.task.wasm.args[1]");
        assert!(message.contains("unterminated"), "{message}");
        // env values too
        let (path, _) = err(&edit(
            "module: examples/split:v1}",
            "module: examples/split:v1, env: {SEED: \"${params.seed}\"}}",
        ));
        assert_eq!(path, "spec.steps.split.task.wasm.env.SEED");
        // a param default that is neither text nor a number
        let (path, _) = err(&edit("params: {epochs: \"500\"}", "params: {epochs: [1]}"));
        assert_eq!(path, "spec.params.epochs");
        let (path, _) = err(&edit("params: {epochs: \"500\"}", "params: {\"a.b\": 1}"));
        assert_eq!(path, "spec.params.a.b");
    }

    #[test]
    fn unknown_fields_and_wrong_kinds_are_refused() {
        let (path, message) = err(&edit("      when:", "      whenn:"));
        assert_eq!(path, "spec.steps.promote.whenn");
        assert!(message.contains("unknown field"), "{message}");
        let (path, _) = err(&edit(
            "outputs: [{name: parts, path: /outputs}]",
            "outputs: [{name: parts, path: /outputs, tags: x}]",
        ));
        assert_eq!(path, "spec.steps.split.outputs[0].tags");
        let (path, _) = err(&edit("kind: Pipeline", "kind: Job"));
        assert_eq!(path, "kind");
        let p = PipelineSpec::from_yaml(&edit(
            "  triggers: [{tag: datasets/iris:v1}]",
            "  triggers: [{tag: datasets/iris}]",
        ))
        .expect("a repository");
        assert_eq!(
            p.triggers[0].tag,
            TriggerTag::Repository("datasets/iris".into())
        );
        let (path, _) = err(&edit(
            "  triggers: [{tag: datasets/iris:v1}]",
            "  triggers: [{tag: \"data sets\"}]",
        ));
        assert_eq!(path, "spec.triggers[0].tag");
        // job checks hold in steps, with the step's path
        let (path, _) = err(&edit("path: /inputs/model}", "path: /inputs/data/x}"));
        assert_eq!(path, "spec.steps.evaluate.inputs[1].path");
        let (path, _) = err(&edit("path: /inputs/model}", "path: /outputs/model}"));
        assert_eq!(path, "spec.steps.evaluate.inputs[0].path");
        assert!(matches!(
            PipelineSpec::from_yaml("  "),
            Err(PipelineError::Invalid(_))
        ));
        let e = PipelineSpec::from_yaml("spec: [").expect_err("not yaml");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn step_shapes_are_checked() {
        let (path, message) = err(&edit(
            "      register: {model: iris",
            "      inputs: [{from: datasets/x:v1, path: /inputs}]\n      register: {model: iris",
        ));
        assert_eq!(path, "spec.steps.promote.inputs");
        assert!(message.contains("runs no task"), "{message}");
        let (path, message) = err(&edit(
            "      when: \"steps.evaluate.metrics.accuracy >= 0.9\"\n      register: {model: iris, from: steps.train.outputs.model, alias: champion}\n",
            "      needs: [train]\n",
        ));
        assert_eq!(path, "spec.steps.promote");
        assert!(message.contains("missing"), "{message}");
        let (path, message) = err(&edit(
            "    split:\n",
            "    split:\n      uses: jobs/split.yaml\n",
        ));
        assert_eq!(path, "spec.steps.split.uses");
        assert!(message.contains("inlines"), "{message}");
        // the job's own checks, named under the step
        let (path, message) = err(&edit(
            "inputs: [{from: datasets/iris:v1, path: /inputs/data}]",
            "inputs: [{from: datasets/iris:v1, path: /inputs/data}, {from: datasets/iris:v1, path: /inputs/data/x}]",
        ));
        assert_eq!(path, "spec.steps.split.inputs[1].path");
        assert!(message.contains("overlaps"), "{message}");
        let (path, _) = err(&edit("    promote:\n", "    pro.mote:\n"));
        assert_eq!(path, "spec.steps.pro.mote");
        let (path, _) = err(&edit(
            "{name: model, path: /outputs/model",
            "{name: parts, path: /outputs/model2}, {name: parts, path: /outputs/model",
        ));
        assert_eq!(path, "spec.steps.train.outputs[1].name");
        let (path, message) = err(&edit(
            "outputs: [{name: metrics, path: /outputs}]",
            "outputs: [{name: metrics, path: /outputs, tag: models/iris-latest:v1}]",
        ));
        assert_eq!(path, "spec.steps.train.outputs[0].tag");
        assert!(message.contains("also given by step evaluate"), "{message}");
        let (path, _) =
            err("apiVersion: weft/v1\nkind: Pipeline\nmetadata: {name: x}\nspec:\n  steps: {}\n");
        assert_eq!(path, "spec.steps");
        let (path, message) = err(&edit(
            "from: steps.train.outputs.model, alias",
            "from: steps.promote.outputs.x, alias",
        ));
        assert_eq!(path, "spec.steps.promote.register.from");
        assert!(
            message.contains("unknown") || message.contains("own"),
            "{message}"
        );
    }

    #[test]
    fn uses_is_inlined_from_a_job_file() {
        let job = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: t}\nspec:\n  task: {wasm: {module: examples/train:v1, args: [a]}}\n  timeout: 1m\n  outputs: [{path: /outputs/model}]\n";
        let yaml = edit(
            "      task: {wasm: {module: examples/train:v1, args: [\"--epochs\", \"${params.epochs}\"]}}\n",
            "      uses: jobs/train.yaml\n",
        );
        let read = |p: &str| {
            if p == "jobs/train.yaml" {
                Ok(job.to_string())
            } else {
                Err("no such file".to_string())
            }
        };
        let inlined = inline_uses(&yaml, &read).expect("inlined");
        let p = PipelineSpec::from_yaml(&inlined).expect("valid");
        let train = p.step("train").expect("train").job.as_ref().expect("job");
        let Task::Wasm(w) = &train.task else {
            panic!("wasm")
        };
        assert_eq!(w.args[0].as_str(), "a");
        assert_eq!(train.timeout.map(|t| t.duration().as_secs()), Some(60));
        // the step's own outputs win over the file's
        assert_eq!(train.outputs[0].name.as_deref(), Some("model"));
        let e = inline_uses(&yaml.replace("jobs/train.yaml", "jobs/x.yaml"), &read)
            .expect_err("missing");
        assert_eq!(
            e.to_string(),
            "spec.steps.train.uses: jobs/x.yaml: no such file"
        );
        let bad = |_: &str| Ok("kind: Job".to_string());
        let e = inline_uses(&yaml, &bad).expect_err("bad job");
        assert!(
            e.to_string()
                .starts_with("spec.steps.train.uses: jobs/train.yaml: "),
            "{e}"
        );
        // nothing to inline: the text as it was
        assert_eq!(inline_uses(EXAMPLE, &read).expect("same"), EXAMPLE);
    }

    #[test]
    fn a_pipeline_too_large_to_record_is_refused() {
        let mut yaml = String::from(
            "apiVersion: weft/v1\nkind: Pipeline\nmetadata: {name: big}\nspec:\n  steps:\n",
        );
        let name = |i: usize| format!("{i:0>60}");
        for i in 0..120 {
            yaml.push_str(&format!(
                "    {}:\n      task: {{wasm: {{module: m:v1}}}}\n",
                name(i)
            ));
            if i > 0 {
                let needs: Vec<String> = (0..i).map(name).collect();
                yaml.push_str(&format!("      needs: [{}]\n", needs.join(", ")));
            }
        }
        let (path, message) = err(&yaml);
        assert_eq!(path, "spec.steps");
        assert!(message.contains("fewer needs"), "{message}");
        let big = "x".repeat(MAX_PARAM_VALUE_BYTES);
        let params: Vec<String> = (0..20).map(|i| format!("p{i}: {big}")).collect();
        let yaml = edit(
            "params: {epochs: \"500\"}",
            &format!("params: {{epochs: \"500\", {}}}", params.join(", ")),
        );
        let (path, message) = err(&yaml);
        assert_eq!(path, "spec.params");
        assert!(
            message.contains("more than the most a run records"),
            "{message}"
        );
    }

    #[test]
    fn substitution() {
        let params: Params = [("a".to_string(), "1".to_string()), ("b".into(), "x".into())].into();
        assert_eq!(
            substitute("${params.a}-${params.b}${HOME}", &params),
            Ok("1-x${HOME}".into())
        );
        assert!(substitute("${params.c}", &params).is_err());
        assert!(substitute("${params.a", &params).is_err());
    }
}
