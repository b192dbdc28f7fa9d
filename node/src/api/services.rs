//! Service endpoints: apply a spec, list, status, endpoints, history, logs,
//! scale, roll back, remove.
//!
//! A service's desired state is read from this node's ledger, so any node
//! answers for any service; every write is a ledger entry by the node that
//! receives the request.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState};
use crate::service::{ServiceError, ServiceHandle};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/services", get(list).post(apply))
        .route("/api/v1/services/{service}", get(status).delete(remove))
        .route("/api/v1/services/{service}/endpoints", get(endpoints))
        .route("/api/v1/services/{service}/history", get(history))
        .route("/api/v1/services/{service}/logs", get(logs))
        .route("/api/v1/services/{service}/scale", post(scale))
        .route("/api/v1/services/{service}/rollback", post(rollback))
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyJson {
    /// The service spec as YAML text.
    spec: String,
}

/// `POST /api/v1/services`: a YAML service spec as the body
/// (`application/yaml`), or JSON `{spec}`; the guard has checked the type.
/// 201 with the new revision, or 200 when the spec equals the current one.
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

async fn list(State(state): State<ApiState>) -> ApiResult<Response> {
    read(&state, |s| s.list()).await
}

async fn status(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    read(&state, move |s| s.status(&name)).await
}

async fn endpoints(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    read(&state, move |s| s.endpoints(&name)).await
}

async fn history(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    read(&state, move |s| s.history(&name)).await
}

async fn logs(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(axum::Json(services(&state)?.logs(&name).await?).into_response())
}

/// `POST /api/v1/services/{service}/scale`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleJson {
    replicas: u32,
}

async fn scale(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let j: ScaleJson = super::parse_json(&body)?;
    services(&state)?.scale(&name, j.replicas).await?;
    Ok(axum::Json(serde_json::json!({"name": name, "replicas": j.replicas})).into_response())
}

/// `POST /api/v1/services/{service}/rollback`; no body or no `to_revision`:
/// the revision current before the current one.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackJson {
    #[serde(default)]
    to_revision: Option<u32>,
}

async fn rollback(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let j: RollbackJson = if body.is_empty() {
        RollbackJson::default()
    } else {
        super::parse_json(&body)?
    };
    let revision = services(&state)?.rollback(&name, j.to_revision).await?;
    Ok(axum::Json(serde_json::json!({"name": name, "revision": revision})).into_response())
}

async fn remove(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    services(&state)?.remove(&name).await?;
    Ok(axum::Json(serde_json::json!({"name": name, "removed": true})).into_response())
}
