//! Run endpoints: create a run, log params, metrics and tags to it in
//! batches, end it, read one or list them, and export one as OpenLineage
//! RunEvents.
//!
//! Every job is a run already (its coordinator records it); these let a
//! client record runs of its own, with the semantics and the batch limits
//! MLflow documents for `runs/log-batch`, so a client written for those
//! behaves: params are write-once (the same value again is fine, another
//! is refused), metrics only ever grow, the last value of a tag wins.
//! Everything is a ledger entry, so every node answers for every run.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::bounds::{MAX_JOB_NAME_BYTES, MAX_PARAM_KEY_BYTES, MAX_PARAM_VALUE_BYTES};
use weft_protocol::ledger::{EntryBody, EntryKind, Lineage, Metric, RunEnd, RunEvent, RunStart};
use weft_protocol::sched::JobId;

use super::{ApiError, ApiResult, ApiState, blocking};
use crate::sched::runs::append_run;
use crate::store::ledger::RunView;

/// Most metrics in one `log-batch` request (MLflow's `MAX_METRICS_PER_BATCH`).
pub const MAX_BATCH_METRICS: usize = 1000;
/// Most params in one request (MLflow's `MAX_PARAMS_TAGS_PER_BATCH`).
pub const MAX_BATCH_PARAMS: usize = 100;
/// Most tags in one request (MLflow's `MAX_PARAMS_TAGS_PER_BATCH`).
pub const MAX_BATCH_TAGS: usize = 100;
/// Most metrics, params and tags together in one request (MLflow's
/// `MAX_ENTITIES_PER_BATCH`).
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Largest request body (MLflow's `MAX_BATCH_LOG_REQUEST_SIZE`, 1 MB).
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// The OpenLineage schema the events follow.
pub const OPENLINEAGE_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// The namespace of weft's jobs and datasets in OpenLineage events.
pub const OPENLINEAGE_NAMESPACE: &str = "weft";

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(log_batch))
        .routes(routes!(end))
        .routes(routes!(openlineage))
}

/// `{}`: a batch was logged.
#[derive(Serialize, ToSchema)]
struct Logged {}

/// One write at a time on this node, so a param's write-once check and
/// its write are not split by another request.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A run as the API shows it: its events folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunJson {
    #[schema(value_type = String)]
    pub id: JobId,
    pub name: Option<String>,
    pub experiment: Option<String>,
    /// The job it is, when it is one.
    #[schema(value_type = Option<String>)]
    pub job: Option<JobId>,
    #[schema(value_type = Option<String>)]
    pub pipeline_run: Option<JobId>,
    pub step: Option<String>,
    /// `running` until it ends, then `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    /// The node that ran it.
    pub node: Option<String>,
    pub cached: bool,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// The latest value of each metric (highest step).
    pub metrics: BTreeMap<String, f64>,
    /// Every point logged, in the order written: `{key, value, step,
    /// timestamp_ms}`.
    #[schema(value_type = Vec<Object>)]
    pub metric_history: Vec<Metric>,
}

impl From<RunView> for RunJson {
    fn from(v: RunView) -> RunJson {
        let metrics = v.latest_metrics();
        let start = v.start.clone();
        let end = v.end.clone();
        RunJson {
            id: v.id,
            name: start.as_ref().map(|s| s.name.clone()),
            experiment: start.as_ref().and_then(|s| s.experiment.clone()),
            job: start.as_ref().and_then(|s| s.job.clone()),
            pipeline_run: start.as_ref().and_then(|s| s.pipeline_run.clone()),
            step: start.as_ref().and_then(|s| s.step.clone()),
            status: end
                .as_ref()
                .map_or_else(|| "running".to_string(), |e| e.status.clone()),
            start_ms: start.as_ref().map(|s| s.start_ms),
            end_ms: end.as_ref().map(|e| e.end_ms),
            duration_ms: match (&start, &end) {
                (Some(s), Some(e)) => Some(e.end_ms.saturating_sub(s.start_ms)),
                _ => None,
            },
            node: end.as_ref().and_then(|e| e.node.clone()),
            cached: end.as_ref().is_some_and(|e| e.cached),
            params: v.params,
            tags: v.tags,
            metrics,
            metric_history: v.metrics,
        }
    }
}

fn run_id(s: &str) -> ApiResult<JobId> {
    s.parse()
        .map_err(|e: String| ApiError::bad_request(format!("run id: {e}")))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter_value", detail)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn view(state: &ApiState, id: &JobId) -> ApiResult<RunView> {
    let store = state.store.clone();
    let id2 = id.clone();
    blocking(move || store.run_view(&id2))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no run {id} is known here (`weft runs ls` lists them)"),
            )
        })
}

/// A key and a value, as MLflow sends params and tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyValue {
    key: String,
    value: String,
}

/// A metric point, as MLflow sends it: `step` defaults to 0, `timestamp`
/// (Unix ms) to now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MetricJson {
    key: String,
    value: f64,
    #[serde(default)]
    step: Option<u64>,
    #[serde(default)]
    timestamp: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    name: String,
    #[serde(default)]
    experiment: Option<String>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    /// MLflow clients name the run in the body too; it must be the path's.
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    metrics: Vec<MetricJson>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EndJson {
    /// `succeeded`, `failed` or `cancelled` (MLflow's `FINISHED`, `FAILED`
    /// and `KILLED` are taken too).
    status: String,
    #[serde(default)]
    end_ms: Option<u64>,
}

fn check_text(what: &str, s: &str, limit: usize) -> ApiResult<()> {
    if s.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if s.len() > limit {
        return Err(invalid(format!(
            "{what} {:?}… is {} bytes, more than the limit of {limit}",
            s.chars().take(40).collect::<String>(),
            s.len()
        )));
    }
    Ok(())
}

/// Checks a batch against MLflow's documented limits and the key and value
/// lengths; the error names the limit.
fn check_batch(metrics: &[MetricJson], params: &[KeyValue], tags: &[KeyValue]) -> ApiResult<()> {
    for (what, n, limit) in [
        ("metrics", metrics.len(), MAX_BATCH_METRICS),
        ("params", params.len(), MAX_BATCH_PARAMS),
        ("tags", tags.len(), MAX_BATCH_TAGS),
    ] {
        if n > limit {
            return Err(invalid(format!(
                "a batch can hold at most {limit} {what}, this one has {n}; split it over several requests"
            )));
        }
    }
    let total = metrics.len() + params.len() + tags.len();
    if total > MAX_BATCH_ITEMS {
        return Err(invalid(format!(
            "a batch can hold at most {MAX_BATCH_ITEMS} metrics, params and tags in total, this one has {total}; split it over several requests"
        )));
    }
    for m in metrics {
        check_text("metric key", &m.key, MAX_PARAM_KEY_BYTES)?;
        if !m.value.is_finite() {
            return Err(invalid(format!(
                "metric {}: the value is not finite",
                m.key
            )));
        }
    }
    for (what, list) in [("param", params), ("tag", tags)] {
        for kv in list {
            check_text(&format!("{what} key"), &kv.key, MAX_PARAM_KEY_BYTES)?;
            if kv.value.len() > MAX_PARAM_VALUE_BYTES {
                return Err(invalid(format!(
                    "{what} {}: the value is {} bytes, more than the limit of {MAX_PARAM_VALUE_BYTES}",
                    kv.key,
                    kv.value.len()
                )));
            }
        }
    }
    Ok(())
}

/// Params of a batch that are new, refusing any that would change a
/// param's value (in the run, or earlier in the same batch).
fn new_params(
    existing: &BTreeMap<String, String>,
    params: Vec<KeyValue>,
) -> ApiResult<Vec<(String, String)>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for KeyValue { key, value } in params {
        let before = existing.get(&key).or_else(|| seen.get(&key));
        match before {
            Some(v) if *v == value => {}
            Some(v) => {
                return Err(invalid(format!(
                    "param {key} is {v:?} already and params are write-once: it cannot become {value:?} \
                     (log the new value in a new run)"
                )));
            }
            None => {
                seen.insert(key.clone(), value.clone());
                out.push((key, value));
            }
        }
    }
    Ok(out)
}

/// `POST /api/v1/runs`: `{name, experiment, params: [{key, value}], tags}` → the run.
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    tag = "runs",
    summary = "Create a run: {\"name\", \"experiment\", \"params\": [{\"key\", \"value\"}], \"tags\": [...]}",
    request_body(content = CreateJson, content_type = "application/json"),
    responses((status = 201, description = "the run", body = RunJson)),
)]
async fn create(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "the request is {} bytes, more than the limit of {MAX_BATCH_BYTES}",
            body.len()
        )));
    }
    let c: CreateJson = super::parse_json(&body)?;
    check_text("name", &c.name, MAX_JOB_NAME_BYTES)?;
    if let Some(e) = &c.experiment {
        check_text("experiment", e, MAX_JOB_NAME_BYTES)?;
    }
    check_batch(&[], &c.params, &c.tags)?;
    let params = new_params(&BTreeMap::new(), c.params)?;
    let now = now_ms();
    let id = JobId::new(now, rand::random());
    let ev = RunEvent {
        run: id.clone(),
        start: Some(RunStart {
            name: c.name,
            experiment: c.experiment,
            job: None,
            pipeline_run: None,
            step: None,
            start_ms: now,
        }),
        params,
        metrics: Vec::new(),
        tags: c.tags.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        end: None,
    };
    let store = state.store.clone();
    blocking(move || append_run(&store, ev)).await?;
    let v = view(&state, &id).await?;
    Ok((StatusCode::CREATED, axum::Json(RunJson::from(v))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    experiment: Option<String>,
    limit: Option<usize>,
    /// Include every metric point, not only the latest of each metric.
    #[serde(default)]
    history: bool,
}

/// `GET /api/v1/runs?experiment=E&limit=N&history=BOOL`: newest first,
/// each with the latest value of its metrics (and every point with
/// `history=true`).
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    summary = "Runs, newest first, with their latest metrics (query experiment, limit, history=true for every point)",
    params(ListQuery),
    responses((status = 200, description = "the runs", body = Vec<RunJson>)),
)]
async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let store = state.store.clone();
    let mut runs: Vec<RunJson> = blocking(move || store.run_views())
        .await?
        .into_iter()
        .map(|v| {
            let mut r = RunJson::from(v);
            if !q.history {
                r.metric_history.clear();
            }
            r
        })
        .filter(|r| {
            q.experiment
                .as_ref()
                .is_none_or(|e| r.experiment.as_ref() == Some(e))
        })
        .collect();
    runs.reverse();
    runs.truncate(q.limit.unwrap_or(1000));
    Ok(axum::Json(runs).into_response())
}

/// `GET /api/v1/runs/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    summary = "A run: params, latest metrics and their history, tags, start, end, node, status",
    params(("id" = String, Path, description = "a run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    responses(
        (status = 200, description = "the run", body = RunJson),
        (status = 404, description = "no such run"),
    ),
)]
async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_id(&id)?;
    Ok(axum::Json(RunJson::from(view(&state, &id).await?)).into_response())
}

/// `POST /api/v1/runs/{id}/log-batch`: `{metrics: [{key, value, step,
/// timestamp}], params: [{key, value}], tags: [{key, value}]}` → `{}`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/log-batch",
    tag = "runs",
    summary = "Log metrics (append-only), params (write-once) and tags: at most 1000 metrics, 100 params, 100 tags, 1000 in all, 1 MB; keys up to 250 bytes, values up to 6000 (MLflow's limits)",
    params(("id" = String, Path, description = "a run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    request_body(content = BatchJson, content_type = "application/json"),
    responses(
        (status = 200, description = "logged", body = Logged),
        (status = 404, description = "no such run"),
    ),
)]
async fn log_batch(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id = run_id(&id)?;
    if body.len() > MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "the request is {} bytes, more than the limit of {MAX_BATCH_BYTES}; split it over several requests",
            body.len()
        )));
    }
    let b: BatchJson = super::parse_json(&body)?;
    if let Some(r) = &b.run_id
        && r != id.as_str()
    {
        return Err(invalid(format!(
            "run_id {r:?} in the body is not the run {id} of the path"
        )));
    }
    check_batch(&b.metrics, &b.params, &b.tags)?;
    let _one = WRITES.lock().await;
    let existing = view(&state, &id).await?;
    let params = new_params(&existing.params, b.params)?;
    let now = now_ms();
    let ev = RunEvent {
        run: id,
        start: None,
        params,
        metrics: b
            .metrics
            .into_iter()
            .map(|m| Metric {
                key: m.key,
                value: m.value,
                step: m.step.unwrap_or(0),
                timestamp_ms: m.timestamp.unwrap_or(now),
            })
            .collect(),
        tags: b.tags.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        end: None,
    };
    if ev.params.is_empty() && ev.metrics.is_empty() && ev.tags.is_empty() {
        return Ok(axum::Json(Logged {}).into_response());
    }
    let store = state.store.clone();
    blocking(move || append_run(&store, ev)).await?;
    Ok(axum::Json(Logged {}).into_response())
}

/// `POST /api/v1/runs/{id}/end`: `{status}` → the run.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/end",
    tag = "runs",
    summary = "End a run: {\"status\": \"succeeded\"|\"failed\"|\"cancelled\"}",
    params(("id" = String, Path, description = "a run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    request_body(content = EndJson, content_type = "application/json"),
    responses(
        (status = 200, description = "the run", body = RunJson),
        (status = 404, description = "no such run"),
        (status = 409, description = "the run ended already"),
    ),
)]
async fn end(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id = run_id(&id)?;
    let e: EndJson = super::parse_json(&body)?;
    let status = match e.status.to_ascii_lowercase().as_str() {
        "succeeded" | "finished" => "succeeded",
        "failed" => "failed",
        "cancelled" | "killed" => "cancelled",
        other => {
            return Err(invalid(format!(
                "status {:?}: use succeeded, failed or cancelled",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let _one = WRITES.lock().await;
    let existing = view(&state, &id).await?;
    if let Some(end) = &existing.end {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("run {id} ended already ({})", end.status),
        ));
    }
    let ev = RunEvent {
        run: id.clone(),
        start: None,
        params: Vec::new(),
        metrics: Vec::new(),
        tags: Vec::new(),
        end: Some(RunEnd {
            status: status.to_string(),
            end_ms: e.end_ms.unwrap_or_else(now_ms),
            node: None,
            cached: false,
        }),
    };
    let store = state.store.clone();
    blocking(move || append_run(&store, ev)).await?;
    Ok(axum::Json(RunJson::from(view(&state, &id).await?)).into_response())
}

// ---------------------------------------------------------------------------
// OpenLineage.

/// `GET /api/v1/runs/{id}/openlineage`: the run's START event and, once it
/// ended, its COMPLETE, FAIL or ABORT event (OpenLineage 2-0-2). Inputs
/// and outputs are the artifacts of the run's lineage (known for a job
/// that succeeded); each dataset is named by its artifact id.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/openlineage",
    tag = "runs",
    summary = "A run's OpenLineage 2-0-2 RunEvents (START, then COMPLETE, FAIL or ABORT)",
    params(("id" = String, Path, description = "a run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    responses(
        (status = 200, description = "the events", body = Vec<Object>),
        (status = 404, description = "no such run"),
    ),
)]
async fn openlineage(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_id(&id)?;
    let run = view(&state, &id).await?;
    let store = state.store.clone();
    let job = run
        .start
        .as_ref()
        .and_then(|s| s.job.clone())
        .unwrap_or(id.clone());
    let lineage = blocking(move || {
        Ok(store
            .ledger_kind(EntryKind::Lineage)?
            .into_iter()
            .filter_map(|e| match e.body {
                EntryBody::Lineage(l) if l.job == job => Some(l),
                _ => None,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(openlineage_events(&run, &lineage)).into_response())
}

/// The OpenLineage RunEvents of a run, given the lineage of its outputs.
pub fn openlineage_events(run: &RunView, lineage: &[Lineage]) -> Vec<serde_json::Value> {
    let producer = format!("urn:weft:node:{}", weft_protocol::VERSION);
    let name = run
        .start
        .as_ref()
        .map_or_else(|| run.id.to_string(), |s| s.name.clone());
    let dataset = |h: &weft_protocol::Hash| serde_json::json!({"namespace": OPENLINEAGE_NAMESPACE, "name": h.to_hex()});
    let mut seen = BTreeSet::new();
    let inputs: Vec<serde_json::Value> = lineage
        .iter()
        .flat_map(|l| l.inputs.iter().map(|(h, _)| *h))
        .filter(|h| seen.insert(*h))
        .map(|h| dataset(&h))
        .collect();
    let mut seen = BTreeSet::new();
    let outputs: Vec<serde_json::Value> = lineage
        .iter()
        .map(|l| l.artifact)
        .filter(|h| seen.insert(*h))
        .map(|h| dataset(&h))
        .collect();
    let event = |kind: &str, at_ms: u64, outputs: &[serde_json::Value]| {
        serde_json::json!({
            "eventType": kind,
            "eventTime": rfc3339(at_ms),
            "run": {"runId": run_uuid(&run.id)},
            "job": {"namespace": OPENLINEAGE_NAMESPACE, "name": name},
            "inputs": inputs,
            "outputs": outputs,
            "producer": producer,
            "schemaURL": OPENLINEAGE_SCHEMA,
        })
    };
    let mut events = Vec::new();
    let start_ms = run
        .start
        .as_ref()
        .map(|s| s.start_ms)
        .or_else(|| run.metrics.first().map(|m| m.timestamp_ms))
        .unwrap_or(0);
    events.push(event("START", start_ms, &[]));
    if let Some(end) = &run.end {
        let kind = match end.status.as_str() {
            "succeeded" => "COMPLETE",
            "cancelled" => "ABORT",
            _ => "FAIL",
        };
        events.push(event(kind, end.end_ms, &outputs));
    }
    events
}

/// A UUID for a run, the same on every node: the first 16 bytes of a
/// BLAKE3 hash of the id, as a version 8 (custom) UUID.
pub fn run_uuid(id: &JobId) -> String {
    let h = blake3::hash(format!("weft run {id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Unix ms as an RFC 3339 UTC time with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_764_633_600_000), "2025-12-02T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn run_uuids_are_stable_version_8_uuids() {
        let id = JobId::new(1, 2);
        let u = run_uuid(&id);
        assert_eq!(u, run_uuid(&id));
        assert_ne!(u, run_uuid(&JobId::new(1, 3)));
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('8'), "{u}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{u}");
    }

    fn view(status: Option<&str>) -> RunView {
        RunView {
            id: JobId::new(0x0123_4567_89ab, 7),
            start: Some(RunStart {
                name: "train".into(),
                experiment: None,
                job: None,
                pipeline_run: None,
                step: None,
                start_ms: 1_000,
            }),
            params: BTreeMap::new(),
            metrics: vec![],
            tags: BTreeMap::new(),
            end: status.map(|s| RunEnd {
                status: s.into(),
                end_ms: 2_500,
                node: None,
                cached: false,
            }),
        }
    }

    #[test]
    fn openlineage_events_have_the_shape_of_the_spec() {
        let l = Lineage {
            artifact: weft_protocol::Hash::of(b"out"),
            path: "/outputs/m".into(),
            job: JobId::new(1, 2),
            pipeline_run: None,
            step: None,
            program: weft_protocol::Hash::of(b"prog"),
            executor: weft_protocol::sched::ExecutorKind::Wasm,
            inputs: vec![(weft_protocol::Hash::of(b"in"), "/inputs/d".into())],
            params: vec![],
            node: "12D3KooWA".into(),
            at_ms: 2,
        };
        let events = openlineage_events(&view(Some("succeeded")), std::slice::from_ref(&l));
        let id = run_uuid(&JobId::new(0x0123_4567_89ab, 7));
        assert_eq!(
            events[0],
            serde_json::json!({
                "eventType": "START",
                "eventTime": "1970-01-01T00:00:01.000Z",
                "run": {"runId": id},
                "job": {"namespace": "weft", "name": "train"},
                "inputs": [{"namespace": "weft", "name": weft_protocol::Hash::of(b"in").to_hex()}],
                "outputs": [],
                "producer": format!("urn:weft:node:{}", weft_protocol::VERSION),
                "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            })
        );
        assert_eq!(events[1]["eventType"], "COMPLETE");
        assert_eq!(events[1]["eventTime"], "1970-01-01T00:00:02.500Z");
        assert_eq!(
            events[1]["outputs"],
            serde_json::json!([{"namespace": "weft", "name": weft_protocol::Hash::of(b"out").to_hex()}])
        );
        // a running run has only its start; a failed or cancelled one ends so
        assert_eq!(openlineage_events(&view(None), &[]).len(), 1);
        assert_eq!(
            openlineage_events(&view(Some("failed")), &[])[1]["eventType"],
            "FAIL"
        );
        assert_eq!(
            openlineage_events(&view(Some("cancelled")), &[])[1]["eventType"],
            "ABORT"
        );
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn params_are_write_once_within_a_run_and_a_batch() {
        let mut existing = BTreeMap::new();
        existing.insert("lr".to_string(), "0.1".to_string());
        // the same value again is fine and writes nothing
        assert_eq!(
            new_params(&existing, vec![kv("lr", "0.1"), kv("epochs", "5")]).expect("ok"),
            vec![("epochs".to_string(), "5".to_string())]
        );
        let e = new_params(&existing, vec![kv("lr", "0.2")]).expect_err("changed");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_parameter_value")
        );
        assert!(e.detail.contains("write-once"), "{}", e.detail);
        assert!(new_params(&BTreeMap::new(), vec![kv("a", "1"), kv("a", "2")]).is_err());
    }

    #[test]
    fn batches_over_mlflow_limits_are_refused_naming_the_limit() {
        let m = |n: usize| -> Vec<MetricJson> {
            (0..n)
                .map(|i| MetricJson {
                    key: format!("m{i}"),
                    value: 1.0,
                    step: None,
                    timestamp: None,
                })
                .collect()
        };
        let p = |n: usize| -> Vec<KeyValue> { (0..n).map(|i| kv(&format!("p{i}"), "v")).collect() };
        assert!(check_batch(&m(1000), &[], &[]).is_ok());
        assert!(check_batch(&m(900), &p(50), &p(50)).is_ok());
        for (metrics, params, tags, says) in [
            (1001, 0, 0, "at most 1000 metrics"),
            (0, 101, 0, "at most 100 params"),
            (0, 0, 101, "at most 100 tags"),
            (900, 51, 50, "1000 metrics, params and tags in total"),
        ] {
            let e = check_batch(&m(metrics), &p(params), &p(tags)).expect_err("over");
            assert!(e.detail.contains(says), "{}", e.detail);
        }
        let long = "k".repeat(251);
        assert!(check_batch(&[], &[kv(&long, "v")], &[]).is_err());
        assert!(check_batch(&[], &[kv("k", &"v".repeat(6001))], &[]).is_err());
        assert!(check_batch(&[], &[kv("k", &"v".repeat(6000))], &[]).is_ok());
        assert!(check_batch(&[], &[], &[kv("", "v")]).is_err());
    }
}
