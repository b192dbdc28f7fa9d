//! Data-plane endpoints: fetching an artifact from the mesh with streamed
//! progress (what `weft get` shows), and what the data plane is doing.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ApiState, blocking};
use crate::transfer::{FetchEvent, TransferHandle};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(fetch))
        .routes(routes!(transfers))
}

fn data_plane(state: &ApiState) -> ApiResult<TransferHandle> {
    state.transfer.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unsupported",
            "this node runs no data plane",
        )
    })
}

fn line(v: serde_json::Value) -> Result<Bytes, Infallible> {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\n');
    Ok(Bytes::from(b))
}

/// `POST /api/v1/artifacts/{ref}/fetch`: makes the artifact whole here,
/// fetching what is missing from the mesh. The answer is NDJSON: progress
/// lines `{"event": "progress", ...}`, then `{"event": "done", "report":
/// ...}` or `{"event": "error", "error": CODE, "detail": ...}`.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/{reference}/fetch",
    tag = "artifacts",
    summary = "Fetch an artifact from the mesh; NDJSON progress, then the report",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    responses(
        (status = 200, description = "one JSON object a line: {event: progress, ...}, then {event: done, report} or {event: error, error, detail}", content_type = "application/x-ndjson", body = String),
        (status = 404, description = "no such artifact"),
        (status = 503, description = "the node runs no data plane, or is stopping"),
    ),
)]
async fn fetch(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let transfer = data_plane(&state)?;
    let store = state.store.clone();
    let id = blocking(move || store.resolve_str(&reference)).await?;
    let ticket = transfer.start_fetch(id).await?;
    let stream = futures::stream::unfold(Some(ticket), |ticket| async move {
        let mut ticket = ticket?;
        match ticket.next().await? {
            FetchEvent::Progress(p) => {
                let mut v = serde_json::to_value(&p).unwrap_or_default();
                v["event"] = json!("progress");
                Some((line(v), Some(ticket)))
            }
            FetchEvent::Finished(Ok(report)) => {
                Some((line(json!({"event": "done", "report": report})), None))
            }
            FetchEvent::Finished(Err(e)) => {
                let e = ApiError::from(e);
                Some((
                    line(json!({"event": "error", "error": e.code, "detail": e.detail})),
                    None,
                ))
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/v1/transfers`: fetches in progress, counters and the
/// replication worker's view of every pin.
#[utoipa::path(
    get,
    path = "/api/v1/transfers",
    tag = "artifacts",
    summary = "Fetches in progress, transfer counters, replication of pins",
    responses(
        (status = 200, description = "the data plane's state", body = Object),
        (status = 503, description = "the node runs no data plane, or is stopping"),
    ),
)]
async fn transfers(State(state): State<ApiState>) -> ApiResult<Response> {
    let transfer = data_plane(&state)?;
    Ok(axum::Json(transfer.status().await?).into_response())
}
