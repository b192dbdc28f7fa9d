//! The OpenAPI 3 document of the API, served at `/api/openapi.json`.
//!
//! Built from [`ENDPOINTS`], the one list of what the router serves; a test
//! walks that list against the router so the document cannot drift.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::ApiState;

/// One documented endpoint.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Media types the request body may have (the guard refuses others
    /// with 415); empty: the endpoint takes no body.
    pub body: &'static [&'static str],
    /// Whether a body must be sent.
    pub body_required: bool,
    /// Success response media type.
    pub returns: &'static str,
}

const JSON: &str = "application/json";
const BYTES: &str = "application/octet-stream";

/// What a request may carry: its media types and whether it must.
type BodySpec = (&'static [&'static str], bool);
const NO_BODY: BodySpec = (&[], false);
const JSON_BODY: BodySpec = (&[JSON], true);
const OPTIONAL_JSON: BodySpec = (&[JSON], false);
const BYTES_BODY: BodySpec = (&[BYTES], true);
const SPEC_BODY: BodySpec = (&[JSON, "application/yaml", "application/x-yaml"], true);

macro_rules! ep {
    ($m:literal, $p:literal, $s:literal, $b:expr, $r:expr) => {
        Endpoint {
            method: $m,
            path: $p,
            summary: $s,
            body: $b.0,
            body_required: $b.1,
            returns: $r,
        }
    };
}

/// Every endpoint the API serves.
pub const ENDPOINTS: &[Endpoint] = &[
    ep!(
        "get",
        "/api/v1/node",
        "This node: id, version, resources, addresses",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/peers",
        "Live peers from their adverts",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/artifacts",
        "Artifacts (query all=true for every blob)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts",
        "Upload a file's bytes (query tag, pin)",
        BYTES_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts/import",
        "Import a path on the daemon's host",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/artifacts/{reference}",
        "A file's bytes (Range supported) or a tree's entries",
        NO_BODY,
        BYTES
    ),
    ep!(
        "head",
        "/api/v1/artifacts/{reference}",
        "Size, kind and id of an artifact",
        NO_BODY,
        BYTES
    ),
    ep!(
        "post",
        "/api/v1/artifacts/{reference}/export",
        "Write an artifact to a path on the daemon's host",
        JSON_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts/{reference}/fetch",
        "Fetch an artifact from the mesh; NDJSON progress, then the report",
        NO_BODY,
        "application/x-ndjson"
    ),
    ep!(
        "get",
        "/api/v1/transfers",
        "Fetches in progress, transfer counters, replication of pins",
        NO_BODY,
        JSON
    ),
    ep!("get", "/api/v1/tags", "Live tags", NO_BODY, JSON),
    ep!(
        "get",
        "/api/v1/tags/{name}",
        "What a tag points at",
        NO_BODY,
        JSON
    ),
    ep!(
        "put",
        "/api/v1/tags/{name}",
        "Point a tag at an artifact: {\"ref\": ID|PREFIX|TAG}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "delete",
        "/api/v1/tags/{name}",
        "Remove a tag",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/tag-history/{name}",
        "Every version a tag has had",
        NO_BODY,
        JSON
    ),
    ep!("get", "/api/v1/pins", "Pins", NO_BODY, JSON),
    ep!(
        "put",
        "/api/v1/pins/{reference}",
        "Pin an artifact: {\"replicas\": N} (or no body: one replica)",
        OPTIONAL_JSON,
        JSON
    ),
    ep!(
        "delete",
        "/api/v1/pins/{reference}",
        "Unpin an artifact",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/gc",
        "Remove what no pin or tag keeps",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/store/verify",
        "Re-hash every blob",
        NO_BODY,
        JSON
    ),
    ep!("get", "/api/openapi.json", "This document", NO_BODY, JSON),
    ep!(
        "post",
        "/api/v1/images/import",
        "Import an image archive on the daemon's host: {\"path\", \"tag\", \"allow_devices\"}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/jobs",
        "Jobs this node coordinates or has heard of (query limit)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/jobs",
        "Submit a job: a YAML spec (application/yaml) or {\"spec\": YAML, \"local\": BOOL}",
        SPEC_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/jobs/{id}",
        "A job's status (query wait_ms to wait for the end)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/jobs/{id}/cancel",
        "Cancel a job",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/jobs/{id}/logs",
        "A finished job's stdout and stderr",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/models",
        "Registered models: version count and aliases",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/models",
        "Register the next version of a model: {\"name\", \"ref\": ID|TAG|models/NAME@ALIAS|JOB_ID:/PATH}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/models/{name}",
        "A model's versions (artifact, run, metrics) and aliases with their history",
        NO_BODY,
        JSON
    ),
    ep!(
        "put",
        "/api/v1/model-aliases/{target}",
        "Point an alias (NAME@ALIAS) at a version: {\"version\": N}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/model-rollbacks/{target}",
        "Move an alias (NAME@ALIAS) back to where it pointed before its last move",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/runs",
        "Runs, newest first, with their latest metrics (query experiment, limit, history=true for every point)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/runs",
        "Create a run: {\"name\", \"experiment\", \"params\": [{\"key\", \"value\"}], \"tags\": [...]}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/runs/{id}",
        "A run: params, latest metrics and their history, tags, start, end, node, status",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/runs/{id}/log-batch",
        "Log metrics (append-only), params (write-once) and tags: at most 1000 metrics, 100 params, 100 tags, 1000 in all, 1 MB; keys up to 250 bytes, values up to 6000 (MLflow's limits)",
        JSON_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/runs/{id}/end",
        "End a run: {\"status\": \"succeeded\"|\"failed\"|\"cancelled\"}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/runs/{id}/openlineage",
        "A run's OpenLineage 2-0-2 RunEvents (START, then COMPLETE, FAIL or ABORT)",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/lineage/{reference}",
        "The lineage graph of an artifact (query direction=up|down, depth)",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/pipelines/runs",
        "Pipeline runs this node knows, newest first",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/pipelines/runs",
        "Start a pipeline run here: {\"spec\": YAML, \"params\": {K: V}, \"force\": BOOL, \"force_steps\": [STEP]}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/pipelines/runs/{id}",
        "A pipeline run with its steps (query wait_ms to wait for the end, since=UPDATED_MS for the next change)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/pipelines/runs/{id}/cancel",
        "Cancel a pipeline run",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/services",
        "Services: current revision, kind, desired and ready replicas (removed ones with no revision)",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/services",
        "Apply a service spec: YAML (application/yaml) or {\"spec\": YAML}; 201 with the new revision, 200 if unchanged",
        SPEC_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/services/{service}",
        "A service: revision, replicas, rollout, endpoints, history and current spec",
        NO_BODY,
        JSON
    ),
    ep!(
        "delete",
        "/api/v1/services/{service}",
        "Remove a service (its history stays; applying it again brings it back)",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/services/{service}/endpoints",
        "A service's replicas: node, revision, state, requests in flight",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/services/{service}/history",
        "Every change of a service: applies, scales, rollbacks, removals",
        NO_BODY,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/services/{service}/logs",
        "The recent output of each of a service's replicas",
        NO_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/services/{service}/scale",
        "Set the desired replicas of the current revision: {\"replicas\": N}",
        JSON_BODY,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/services/{service}/rollback",
        "Make an earlier revision current: {\"to_revision\": N} (or no body: the one before the current)",
        OPTIONAL_JSON,
        JSON
    ),
    ep!(
        "get",
        "/metrics",
        "Prometheus metrics",
        NO_BODY,
        "text/plain"
    ),
];

fn params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
                "description": match name {
                    "reference" => "an id, a unique id prefix or a tag (NAME:VERSION)",
                    "id" => "a job, run or pipeline run id (20 hex digits)",
                    "target" => "a model's alias: NAME@ALIAS (e.g. iris@champion)",
                    "service" => "a service name (e.g. iris)",
                    "name" if path.starts_with("/api/v1/models/") => "a model name (e.g. iris)",
                    _ => "a tag name (NAME:VERSION)",
                }
            })
        })
        .collect()
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let item = paths
            .entry(e.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{}{}", e.method, e.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params(e.path),
            "responses": {
                "200": {"description": "success", "content": {e.returns: {}}},
                "default": {
                    "description": "an error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
        if !e.body.is_empty() {
            let content: Map<String, Value> =
                e.body.iter().map(|t| (t.to_string(), json!({}))).collect();
            op["requestBody"] = json!({"required": e.body_required, "content": content});
        }
        let error = json!({"$ref": "#/components/responses/Error"});
        op["responses"]["403"] = error.clone();
        if !(e.method == "get" || e.method == "head")
            || !matches!(e.path, "/api/openapi.json" | "/metrics")
        {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = error.clone();
        }
        if !matches!(e.method, "get" | "head") {
            op["responses"]["415"] = error;
        }
        if let Value::Object(m) = item {
            m.insert(e.method.to_string(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "weft node API",
            "version": weft_protocol::VERSION,
            "description": "The REST API of one weft node. Listens on 127.0.0.1 by default. Every request needs `Authorization: Bearer <token>` (the token is in the file api-token in the node's home, or api.token in its config.toml), except reads of this document and /metrics when the API listens on loopback. The Host header must name the daemon (127.0.0.1, localhost, [::1], its listen address, or a name in api.allowed_hosts); a request with an Origin other than the daemon's own is refused with 403; a mutating request may carry only the media types listed for its body (others are refused with 415; an endpoint without a body accepts none but application/json). Import and export by daemon-side path work only under api.path_roots."
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string", "description": "a short machine-readable code"},
                        "detail": {"type": "string", "description": "what went wrong and what to do"}
                    }
                }
            },
            "responses": {
                "Error": {
                    "description": "refused (401: no or wrong token; 403: a foreign Host or Origin, or a path outside api.path_roots; 415: a body type the endpoint does not take) or failed",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { axum::Json(document()).into_response() }),
    )
}
