//! The REST API (axum): artifacts, tags, pins, maintenance, the node and its
//! peers, an OpenAPI document at `/api/openapi.json` and Prometheus text at
//! `/metrics`. The CLI is a client of this API whenever a daemon runs.
//!
//! The document is generated from the handlers ([`openapi`]): a route
//! exists only through `routes!`, so it is always in the document.
//!
//! Every error is JSON `{error, detail}` with a fitting status code, the
//! extractors' own refusals (a malformed query or path parameter, a body
//! over the limit) included. Uploads
//! stream to the store's temp files; downloads stream from blob files with
//! HTTP Range support.
//!
//! The API is no open door: [`guard`] checks the `Host`, the `Origin`, the
//! bearer token and the content type of every request before a handler
//! runs, and [`paths`] keeps import and export by daemon-side path under
//! `api.path_roots`.

mod artifacts;
pub mod client;
pub mod guard;
mod jobs;
pub mod lineage;
pub(crate) mod metrics;
mod models;
pub mod openapi;
pub mod paths;
mod pipelines;
pub mod runs;
mod services;
mod transfers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

use crate::store::{Store, StoreError};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Who may call: host names, the token.
    pub access: Arc<guard::Access>,
    /// Where import and export by daemon-side path may go.
    pub roots: Arc<paths::PathRoots>,
    pub started: Instant,
    /// The rest of the node, for the endpoints that need more than the store.
    pub node: Option<Arc<dyn NodeView>>,
    /// The scheduler, for the job endpoints.
    pub sched: Option<crate::sched::SchedHandle>,
    /// The data plane, to fetch what is not here.
    pub transfer: Option<crate::transfer::TransferHandle>,
    /// The ledger, for models, runs, lineage and pipelines.
    pub ledger: Option<crate::ledger::LedgerHandle>,
    /// The pipeline engine, for the pipeline endpoints.
    pub pipelines: Option<crate::pipeline::PipelineHandle>,
    /// Services, for the service endpoints.
    pub services: Option<crate::service::ServiceHandle>,
}

/// The parts of a running node the API reports on, beyond the store.
pub trait NodeView: Send + Sync {
    /// `GET /api/v1/node`.
    fn node(&self) -> futures::future::BoxFuture<'_, serde_json::Value>;
    /// `GET /api/v1/peers`.
    fn peers(&self) -> futures::future::BoxFuture<'_, serde_json::Value>;
    /// Extra Prometheus lines (peer counts, transfer bytes, jobs).
    fn metrics(&self) -> futures::future::BoxFuture<'_, String>;
}

/// An API error: a status, a short machine-readable code and a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

/// The JSON body of every error (`Error` in the document).
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code,
            detail: &self.detail,
        })
        .unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::NotFound(_) | StoreError::NoTag(_) | StoreError::Missing(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            StoreError::Ambiguous { .. } => (StatusCode::BAD_REQUEST, "ambiguous"),
            StoreError::BadRef(_) => (StatusCode::BAD_REQUEST, "bad_input"),
            StoreError::Exists { .. } => (StatusCode::CONFLICT, "exists"),
            StoreError::IsTree(_) => (StatusCode::BAD_REQUEST, "is_tree"),
            StoreError::Symlink { .. }
            | StoreError::Special { .. }
            | StoreError::NonUtf8 { .. }
            | StoreError::BadName { .. }
            | StoreError::LinkLoop { .. }
            | StoreError::Changed { .. } => (StatusCode::BAD_REQUEST, "bad_input"),
            StoreError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::transfer::TransferError> for ApiError {
    fn from(e: crate::transfer::TransferError) -> ApiError {
        use crate::transfer::TransferError as T;
        let (status, code) = match &e {
            T::NoProvider { .. } => (StatusCode::NOT_FOUND, "not_found"),
            T::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            T::Store(s) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", s.to_string());
            }
            _ => (StatusCode::BAD_GATEWAY, "fetch_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("worker failed: {e}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking store call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Parses a JSON body, answering garbage with a 400 that says what is wrong.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    let (routes, _) = openapi::api_routes().split_for_parts();
    let routes = routes
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /api/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see /api/openapi.json",
            )
        });
    routes
        .layer(DefaultBodyLimit::max(openapi::MAX_BODY_BYTES as usize))
        .layer(middleware::from_fn(json_refusals))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The code of an extractor's refusal, by its status.
fn refusal_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The extractors (query, path, body) refuse in plain text; every error of
/// this API is JSON `{error, detail}`, so their refusals are rewritten
/// (422 becomes 400: the request is malformed).
async fn json_refusals(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => e.to_string(),
    };
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "{text}; a JSON or YAML body may have at most {} bytes (uploads of bytes stream and have no limit)",
            openapi::MAX_BODY_BYTES
        ),
        _ => format!("{text}; see /api/openapi.json for what this endpoint takes"),
    };
    ApiError::new(status, refusal_code(status), detail).into_response()
}

async fn count(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .request(&method, &route, resp.status().as_u16());
    resp
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
