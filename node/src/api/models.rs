//! Model registry endpoints: register a version, list and show models, move
//! and roll back aliases (see `ledger::registry`). Names carry `/`, so each
//! takes the rest of the path: `/api/v1/models/team/iris`,
//! `/api/v1/model-aliases/team/iris@champion`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::ledger::{AliasName, ModelName};

use super::client::{ApiClient, ClientError, segment};
use super::{ApiError, ApiResult, ApiState, blocking};
use crate::ledger::LedgerHandle;
use crate::ledger::registry::{
    self, AliasMoved, ModelDetail, ModelSummary, Registration, RegistryError,
};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(show))
        .routes(routes!(set_alias))
        .routes(routes!(rollback))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::Invalid(m) => ApiError::bad_request(m),
            RegistryError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            RegistryError::Store(e) => e.into(),
            RegistryError::Ledger(crate::ledger::LedgerError::Store(e)) => e.into(),
            RegistryError::Ledger(crate::ledger::LedgerError::Invalid(m)) => {
                ApiError::bad_request(m)
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

fn ledger(state: &ApiState) -> ApiResult<&LedgerHandle> {
    state.ledger.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node keeps no ledger",
        )
    })
}

fn model_name(s: &str) -> ApiResult<ModelName> {
    ModelName::new(s).map_err(ApiError::bad_request)
}

fn alias_ref(s: &str) -> ApiResult<(ModelName, AliasName)> {
    registry::parse_alias_ref(s).map_err(ApiError::bad_request)
}

/// `POST /api/v1/models`'s body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    /// An id, a tag, `models/OTHER@alias`, or a run's output `JOB_ID:/path`.
    #[serde(rename = "ref")]
    reference: String,
}

/// `PUT /api/v1/model-aliases/{name@alias}`'s body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    version: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/models",
    tag = "models",
    summary = "Register the next version of a model: {\"name\", \"ref\": ID|TAG|models/NAME@ALIAS|JOB_ID:/PATH}",
    request_body(content = RegisterBody, content_type = "application/json"),
    responses(
        (status = 201, description = "the registration", body = Registration),
        (status = 404, description = "the reference names nothing"),
        (status = 503, description = "the node keeps no ledger"),
    ),
)]
async fn register(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let b: RegisterBody = super::parse_json(&body)?;
    let name = model_name(&b.name)?;
    let r = registry::register(ledger(&state)?, state.sched.as_ref(), name, &b.reference).await?;
    // the version is pinned here: bring its files here too, so the pin keeps
    // a copy (best effort: the registration stands without it)
    if let Some(t) = &state.transfer {
        let (store, id) = (state.store.clone(), r.artifact);
        if !blocking(move || crate::transfer::complete_locally(&store, &id)).await?
            && let Err(e) = t.fetch(r.artifact).await
        {
            tracing::warn!(model = %r.name, artifact = %r.artifact, error = %e, "registered version not fetched here");
        }
    }
    Ok((StatusCode::CREATED, axum::Json(r)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "models",
    summary = "Registered models: version count and aliases",
    responses((status = 200, description = "the models", body = Vec<ModelSummary>)),
)]
async fn list(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    let models = blocking(move || registry::list(&store)).await?;
    Ok(axum::Json(models).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/models/{*name}",
    tag = "models",
    summary = "A model's versions (artifact, run, metrics) and aliases with their history",
    params(("name" = String, Path, description = "a model name (e.g. iris)")),
    responses(
        (status = 200, description = "the model", body = Object),
        (status = 404, description = "no such model"),
    ),
)]
async fn show(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = model_name(&name)?;
    let store = state.store.clone();
    let detail = blocking(move || registry::show(&store, &name)).await?;
    Ok(axum::Json(detail).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/model-aliases/{*target}",
    tag = "models",
    summary = "Point an alias (NAME@ALIAS) at a version: {\"version\": N}",
    params(("target" = String, Path, description = "a model's alias: NAME@ALIAS (e.g. iris@champion)")),
    request_body(content = AliasBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the move", body = AliasMoved),
        (status = 404, description = "no such model or version"),
        (status = 503, description = "the node keeps no ledger"),
    ),
)]
async fn set_alias(
    State(state): State<ApiState>,
    Path(target): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (name, alias) = alias_ref(&target)?;
    let b: AliasBody = super::parse_json(&body)?;
    let moved = registry::set_alias(ledger(&state)?, name, alias, b.version).await?;
    Ok(axum::Json(moved).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/model-rollbacks/{*target}",
    tag = "models",
    summary = "Move an alias (NAME@ALIAS) back to where it pointed before its last move",
    params(("target" = String, Path, description = "a model's alias: NAME@ALIAS (e.g. iris@champion)")),
    responses(
        (status = 200, description = "the move", body = AliasMoved),
        (status = 404, description = "no such model or alias, or nothing to go back to"),
        (status = 503, description = "the node keeps no ledger"),
    ),
)]
async fn rollback(
    State(state): State<ApiState>,
    Path(target): Path<String>,
) -> ApiResult<Response> {
    let (name, alias) = alias_ref(&target)?;
    let moved = registry::rollback(ledger(&state)?, name, alias).await?;
    Ok(axum::Json(moved).into_response())
}

/// The registry's calls, for the CLI and tests.
impl ApiClient {
    /// `POST /api/v1/models`: the next version of `name`.
    pub async fn register_model(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Registration, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/api/v1/models",
            &RegisterBody {
                name: name.to_string(),
                reference: reference.to_string(),
            },
        )
        .await
    }

    /// `GET /api/v1/models`.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, ClientError> {
        self.get("/api/v1/models").await
    }

    /// `GET /api/v1/models/{name}`.
    pub async fn model(&self, name: &str) -> Result<ModelDetail, ClientError> {
        self.get(&format!("/api/v1/models/{}", segment(name))).await
    }

    /// `PUT /api/v1/model-aliases/{name@alias}`.
    pub async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
    ) -> Result<AliasMoved, ClientError> {
        self.call(
            reqwest::Method::PUT,
            &format!(
                "/api/v1/model-aliases/{}",
                segment(&format!("{name}@{alias}"))
            ),
            &AliasBody { version },
        )
        .await
    }

    /// `POST /api/v1/model-rollbacks/{name@alias}`.
    pub async fn rollback_alias(&self, name: &str, alias: &str) -> Result<AliasMoved, ClientError> {
        self.call_no_body(
            reqwest::Method::POST,
            &format!(
                "/api/v1/model-rollbacks/{}",
                segment(&format!("{name}@{alias}"))
            ),
        )
        .await
    }
}
