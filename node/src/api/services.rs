//! Service endpoints: apply a spec, list, status, endpoints, history, logs,
//! scale, roll back, remove.
//!
//! A service's desired state is read from this node's ledger, so any node
//! answers for any service; every write is a ledger entry by the node that
//! receives the request.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ApiState};
use crate::service::{ServiceError, ServiceHandle};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, apply))
        .routes(routes!(status, remove))
        .routes(routes!(endpoints))
        .routes(routes!(history))
        .routes(routes!(logs))
        .routes(routes!(scale))
        .routes(routes!(rollback))
}

/// `{"name", "replicas"}`: a scale.
#[derive(Serialize, ToSchema)]
struct Scaled {
    name: String,
    replicas: u32,
}

/// `{"name", "revision"}`: a rollback.
#[derive(Serialize, ToSchema)]
struct RolledBack {
    name: String,
    /// The revision now current.
    revision: u32,
}

/// `{"name", "removed": true}`.
#[derive(Serialize, ToSchema)]
struct Removed {
    name: String,
    removed: bool,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let (status, code) = match &e {
            ServiceError::NotFound(_) | ServiceError::NoRevision { .. } => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ServiceError::Spec(_) => (StatusCode::BAD_REQUEST, "bad_spec"),
            ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServiceError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ServiceError::Ledger(_) | ServiceError::Store(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn services(state: &ApiState) -> ApiResult<ServiceHandle> {
    state.services.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node runs no services",
        )
    })
}

/// A service name from the path: a malformed one is the caller's mistake
/// (400), not a service that does not exist.
fn service_name(name: &str) -> ApiResult<String> {
    name.parse::<weft_protocol::service::ServiceName>()
        .map(String::from)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "service name {:?}: {e}",
                name.chars().take(80).collect::<String>()
            ))
        })
}

/// Runs a blocking read of the ledger on the blocking pool.
async fn read<T, F>(state: &ApiState, f: F) -> ApiResult<Response>
where
    F: FnOnce(&ServiceHandle) -> Result<T, ServiceError> + Send + 'static,
    T: serde::Serialize + Send + 'static,
{
    let s = services(state)?;
    let v = tokio::task::spawn_blocking(move || f(&s)).await??;
    Ok(axum::Json(v).into_response())
}

/// `POST /api/v1/services` as JSON.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyJson {
    /// The service spec as YAML text.
    spec: String,
}

/// `POST /api/v1/services`: a YAML service spec as the body
/// (`application/yaml`), or JSON `{spec}`; the guard has checked the type.
/// 201 with the new revision, or 200 when the spec equals the current one.
#[utoipa::path(
    post,
    path = "/api/v1/services",
    tag = "services",
    summary = "Apply a service spec: YAML (application/yaml) or {\"spec\": YAML}; 201 with the new revision, 200 if unchanged",
    request_body(content(
        (ApplyJson = "application/json"),
        (String = "application/yaml"),
        (String = "application/x-yaml"),
    )),
    responses(
        (status = 200, description = "unchanged: the current revision", body = Object),
        (status = 201, description = "the new revision", body = Object),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn apply(
    State(state): State<ApiState>,
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
    let yaml = if json {
        super::parse_json::<ApplyJson>(&body)?.spec
    } else {
        std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the service spec is not UTF-8 text"))?
            .to_string()
    };
    let applied = services(&state)?.apply(&yaml).await?;
    let code = if applied.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(applied)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "services",
    summary = "Services: current revision, kind, desired and ready replicas (removed ones with no revision)",
    responses(
        (status = 200, description = "the services", body = Vec<Object>),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn list(State(state): State<ApiState>) -> ApiResult<Response> {
    read(&state, |s| s.list()).await
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{service}",
    tag = "services",
    summary = "A service: revision, replicas, rollout, endpoints, history and current spec",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    responses(
        (status = 200, description = "the service", body = Object),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn status(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = service_name(&name)?;
    read(&state, move |s| s.status(&name)).await
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/endpoints",
    tag = "services",
    summary = "A service's replicas: node, revision, state, requests in flight",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    responses(
        (status = 200, description = "the replicas", body = Vec<Object>),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn endpoints(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = service_name(&name)?;
    read(&state, move |s| s.endpoints(&name)).await
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/history",
    tag = "services",
    summary = "Every change of a service: applies, scales, rollbacks, removals",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    responses(
        (status = 200, description = "the changes, oldest first", body = Vec<Object>),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn history(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = service_name(&name)?;
    read(&state, move |s| s.history(&name)).await
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/logs",
    tag = "services",
    summary = "The recent output of each of a service's replicas",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    responses(
        (status = 200, description = "the output of each replica", body = Vec<Object>),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn logs(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = service_name(&name)?;
    Ok(axum::Json(services(&state)?.logs(&name).await?).into_response())
}

/// `POST /api/v1/services/{service}/scale`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScaleJson {
    replicas: u32,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{service}/scale",
    tag = "services",
    summary = "Set the desired replicas of the current revision: {\"replicas\": N}",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    request_body(content = ScaleJson, content_type = "application/json"),
    responses(
        (status = 200, description = "scaled", body = Scaled),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn scale(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = service_name(&name)?;
    let j: ScaleJson = super::parse_json(&body)?;
    services(&state)?.scale(&name, j.replicas).await?;
    Ok(axum::Json(Scaled {
        name,
        replicas: j.replicas,
    })
    .into_response())
}

/// `POST /api/v1/services/{service}/rollback`; no body or no `to_revision`:
/// the revision current before the current one.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackJson {
    #[serde(default)]
    to_revision: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{service}/rollback",
    tag = "services",
    summary = "Make an earlier revision current: {\"to_revision\": N} (or no body: the one before the current)",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    request_body(content = Option<RollbackJson>, content_type = "application/json"),
    responses(
        (status = 200, description = "rolled back", body = RolledBack),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn rollback(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = service_name(&name)?;
    let j: RollbackJson = if body.is_empty() {
        RollbackJson::default()
    } else {
        super::parse_json(&body)?
    };
    let revision = services(&state)?.rollback(&name, j.to_revision).await?;
    Ok(axum::Json(RolledBack { name, revision }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/services/{service}",
    tag = "services",
    summary = "Remove a service (its history stays; applying it again brings it back)",
    params(("service" = String, Path, description = "a service name (e.g. iris)")),
    responses(
        (status = 200, description = "removed", body = Removed),
        (status = 404, description = "no such service"),
        (status = 503, description = "the node runs no services, or is stopping"),
    ),
)]
async fn remove(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = service_name(&name)?;
    services(&state)?.remove(&name).await?;
    Ok(axum::Json(Removed {
        name,
        removed: true,
    })
    .into_response())
}
