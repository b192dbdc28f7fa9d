//! Job endpoints: submit, list, status (with waiting), cancel, logs.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::JobSpec;
use weft_protocol::sched::{JobId, Submission};

use super::{ApiError, ApiResult, ApiState, blocking};
use crate::sched::{SchedError, SchedHandle};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, submit))
        .routes(routes!(status))
        .routes(routes!(cancel))
        .routes(routes!(logs))
}

/// A job's output: `{job, state, logs?, stdout, stderr, note?}`.
#[derive(Serialize, ToSchema)]
struct JobLogs {
    /// The job's id.
    #[schema(value_type = String)]
    job: JobId,
    /// Its state (`queued`, `running`, `succeeded`, ...).
    #[schema(value_type = String)]
    state: weft_protocol::sched::JobState,
    /// The id of the tree that holds `stdout` and `stderr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    logs: Option<weft_protocol::Hash>,
    stdout: String,
    stderr: String,
    /// Why there is no output yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> ApiError {
        match e {
            SchedError::BadSpec(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_spec", m),
            e @ SchedError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            SchedError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            SchedError::Store(e) => e.into(),
            e @ SchedError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

fn sched(state: &ApiState) -> ApiResult<&SchedHandle> {
    state.sched.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node runs no scheduler",
        )
    })
}

fn job_id(s: &str) -> ApiResult<JobId> {
    s.parse().map_err(ApiError::bad_request)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitJson {
    /// The job spec as YAML text.
    spec: String,
    #[serde(default)]
    local: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SubmitQuery {
    #[serde(default)]
    local: bool,
}

/// `POST /api/v1/jobs`: a YAML job spec as the body (`application/yaml`), or
/// JSON `{spec, local}` (`application/json`); the guard has checked the type.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    summary = "Submit a job: a YAML spec (application/yaml) or {\"spec\": YAML, \"local\": BOOL}",
    params(SubmitQuery),
    request_body(content(
        (SubmitJson = "application/json"),
        (String = "application/yaml"),
        (String = "application/x-yaml"),
    )),
    responses(
        (status = 201, description = "the job's status", body = Object),
        (status = 503, description = "no node can take it now, or the node runs no scheduler"),
    ),
)]
async fn submit(
    State(state): State<ApiState>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let (yaml, local) = if json {
        let j: SubmitJson = super::parse_json(&body)?;
        (j.spec, j.local || q.local)
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the job spec is not UTF-8 text"))?;
        (text.to_string(), q.local)
    };
    let spec = JobSpec::from_yaml(&yaml)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_spec", e.to_string()))?;
    let status = sched(&state)?
        .submit(Submission {
            spec,
            local,
            run: None,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(status)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    summary = "Jobs this node coordinates or has heard of (query limit)",
    params(ListQuery),
    responses(
        (status = 200, description = "the jobs, newest first", body = Vec<Object>),
        (status = 503, description = "the node runs no scheduler"),
    ),
)]
async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let mut jobs = sched(&state)?.list().await?;
    jobs.truncate(q.limit.unwrap_or(1000));
    Ok(axum::Json(jobs).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// Wait up to this long for the job to finish.
    #[param(maximum = 300000)]
    wait_ms: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job's status (query wait_ms to wait for the end)",
    params(("id" = String, Path, description = "a job id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    params(StatusQuery),
    responses(
        (status = 200, description = "the job's status", body = Object),
        (status = 404, description = "no such job"),
        (status = 503, description = "the node runs no scheduler"),
    ),
)]
async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let id = job_id(&id)?;
    let s = sched(&state)?;
    let status = match q.wait_ms {
        Some(ms) if ms > 0 => {
            s.wait(id.clone(), Duration::from_millis(ms.min(300_000)))
                .await?;
            s.status(id).await?
        }
        _ => s.status(id).await?,
    };
    Ok(axum::Json(status).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job",
    params(("id" = String, Path, description = "a job id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    responses(
        (status = 200, description = "the job's status", body = Object),
        (status = 404, description = "no such job"),
        (status = 503, description = "its coordinator cannot be reached, or the node runs no scheduler"),
    ),
)]
async fn cancel(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = job_id(&id)?;
    Ok(axum::Json(sched(&state)?.cancel(id).await?).into_response())
}

/// `GET /api/v1/jobs/{id}/logs`: the task's stdout and stderr as text.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    tag = "jobs",
    summary = "A finished job's stdout and stderr",
    params(("id" = String, Path, description = "a job id (20 hex digits)", pattern = "^[0-9a-f]{20}$")),
    responses(
        (status = 200, description = "the job's output", body = JobLogs),
        (status = 404, description = "no such job"),
        (status = 503, description = "the logs cannot be fetched now, or the node runs no scheduler"),
    ),
)]
async fn logs(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = job_id(&id)?;
    let s = sched(&state)?;
    let status = s.status(id.clone()).await?;
    let Some(logs) = status.result.as_ref().and_then(|r| r.logs) else {
        let why = if status.state.is_terminal() {
            "the task printed nothing"
        } else {
            "the job has not finished"
        };
        return Ok(axum::Json(JobLogs {
            job: id,
            state: status.state,
            logs: None,
            stdout: String::new(),
            stderr: String::new(),
            note: Some(why.to_string()),
        })
        .into_response());
    };
    s.fetch(logs)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    let store = state.store.clone();
    let (stdout, stderr) = blocking(move || {
        let tree = store.read_tree(&logs)?;
        let read = |name: &str| -> Result<String, crate::store::StoreError> {
            match tree.get(name) {
                Some(e) => {
                    let p = store.blob_path(&e.hash);
                    let bytes = std::fs::read(&p).map_err(crate::store::StoreError::io(&p))?;
                    Ok(String::from_utf8_lossy(&bytes).into_owned())
                }
                None => Ok(String::new()),
            }
        };
        Ok((read("stdout")?, read("stderr")?))
    })
    .await?;
    Ok(axum::Json(JobLogs {
        job: id,
        state: status.state,
        logs: Some(logs),
        stdout,
        stderr,
        note: None,
    })
    .into_response())
}
