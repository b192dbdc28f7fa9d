//! Pipeline endpoints: start a run, list runs, a run's status (with
//! waiting), cancel.
//!
//! Runs are read from this node's ledger, so any node that holds the
//! ledger answers for any run; a run is started on (and coordinated by)
//! the node that receives the request.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::pipeline::PipelineSpec;
use weft_protocol::sched::JobId;

use super::{ApiError, ApiResult, ApiState};
use crate::pipeline::{PipelineError, PipelineHandle, StartRequest};

/// Longest a status request may wait.
const MAX_WAIT_MS: u64 = 300_000;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(status))
        .routes(routes!(cancel))
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        match e {
            PipelineError::BadSpec(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_spec", m),
            e @ PipelineError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            PipelineError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            PipelineError::Store(e) => e.into(),
            e @ PipelineError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

fn engine(state: &ApiState) -> ApiResult<&PipelineHandle> {
    state.pipelines.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node runs no pipeline engine",
        )
    })
}

fn run_id(s: &str) -> ApiResult<JobId> {
    s.parse().map_err(ApiError::bad_request)
}

/// A param's value: text or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ParamValue {
    Text(String),
    Number(serde_json::Number),
}

/// `POST /api/v1/pipelines/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartJson {
    /// The pipeline spec as YAML text (`uses:` already inlined).
    spec: String,
    /// The pipeline's params: text or numbers.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    params: BTreeMap<String, ParamValue>,
    /// Run every step, reusing no cached result.
    #[serde(default)]
    force: bool,
    /// Run these steps without their cached results.
    #[serde(default)]
    force_steps: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/pipelines/runs",
    tag = "pipelines",
    summary = "Start a pipeline run here: {\"spec\": YAML, \"params\": {K: V}, \"force\": BOOL, \"force_steps\": [STEP]}",
    request_body(content = StartJson, content_type = "application/json"),
    responses(
        (status = 201, description = "the run", body = Object),
        (status = 503, description = "the node runs no pipeline engine, or is stopping"),
    ),
)]
async fn start(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let j: StartJson = super::parse_json(&body)?;
    let spec = PipelineSpec::from_yaml(&j.spec)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_spec", e.to_string()))?;
    let mut req = StartRequest::new(spec);
    req.source = Some(j.spec.clone());
    req.params = j
        .params
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                ParamValue::Text(s) => s,
                ParamValue::Number(n) => n.to_string(),
            };
            (k, v)
        })
        .collect();
    req.force = j.force;
    req.force_steps = j.force_steps;
    let rec = engine(&state)?.start(req).await?;
    Ok((StatusCode::CREATED, axum::Json(rec)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/pipelines/runs",
    tag = "pipelines",
    summary = "Pipeline runs this node knows, newest first",
    responses(
        (status = 200, description = "the runs", body = Vec<Object>),
        (status = 503, description = "the node runs no pipeline engine, or is stopping"),
    ),
)]
async fn list(State(state): State<ApiState>) -> ApiResult<Response> {
    Ok(axum::Json(engine(&state)?.runs().await?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// Wait up to this long (at most 300000) for the run to end.
    #[param(maximum = 300000)]
    wait_ms: Option<u64>,
    /// With `wait_ms`: answer at the first change after this `updated_ms`.
    since: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/pipelines/runs/{id}",
    tag = "pipelines",
    summary = "A pipeline run with its steps (query wait_ms to wait for the end, since=UPDATED_MS for the next change)",
    params(("id" = String, Path, description = "a pipeline run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    params(StatusQuery),
    responses(
        (status = 200, description = "the run", body = Object),
        (status = 404, description = "no such run"),
        (status = 503, description = "the node runs no pipeline engine, or is stopping"),
    ),
)]
async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let id = run_id(&id)?;
    let e = engine(&state)?;
    let rec = match q.wait_ms {
        Some(ms) if ms > 0 => {
            e.wait(&id, q.since, Duration::from_millis(ms.min(MAX_WAIT_MS)))
                .await?
        }
        _ => e.run(&id).await?,
    };
    Ok(axum::Json(rec).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/pipelines/runs/{id}/cancel",
    tag = "pipelines",
    summary = "Cancel a pipeline run",
    params(("id" = String, Path, description = "a pipeline run id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    responses(
        (status = 200, description = "the run", body = Object),
        (status = 404, description = "no such run"),
        (status = 503, description = "the node runs no pipeline engine, or is stopping"),
    ),
)]
async fn cancel(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_id(&id)?;
    Ok(axum::Json(engine(&state)?.cancel(id).await?).into_response())
}
