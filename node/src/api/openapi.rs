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
    /// Request body media type, if any.
    pub body: Option<&'static str>,
    /// Success response media type.
    pub returns: &'static str,
}

const JSON: &str = "application/json";
const BYTES: &str = "application/octet-stream";

macro_rules! ep {
    ($m:literal, $p:literal, $s:literal, $b:expr, $r:expr) => {
        Endpoint {
            method: $m,
            path: $p,
            summary: $s,
            body: $b,
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
        None,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/peers",
        "Live peers from their adverts",
        None,
        JSON
    ),
    ep!(
        "get",
        "/api/v1/artifacts",
        "Artifacts (query all=true for every blob)",
        None,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts",
        "Upload a file's bytes (query tag, pin)",
        Some(BYTES),
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts/import",
        "Import a path on the daemon's host",
        Some(JSON),
        JSON
    ),
    ep!(
        "get",
        "/api/v1/artifacts/{reference}",
        "A file's bytes (Range supported) or a tree's entries",
        None,
        BYTES
    ),
    ep!(
        "head",
        "/api/v1/artifacts/{reference}",
        "Size, kind and id of an artifact",
        None,
        BYTES
    ),
    ep!(
        "post",
        "/api/v1/artifacts/{reference}/export",
        "Write an artifact to a path on the daemon's host",
        Some(JSON),
        JSON
    ),
    ep!(
        "post",
        "/api/v1/artifacts/{reference}/fetch",
        "Fetch an artifact from the mesh; NDJSON progress, then the report",
        None,
        "application/x-ndjson"
    ),
    ep!(
        "get",
        "/api/v1/transfers",
        "Fetches in progress, transfer counters, replication of pins",
        None,
        JSON
    ),
    ep!("get", "/api/v1/tags", "Live tags", None, JSON),
    ep!(
        "get",
        "/api/v1/tags/{name}",
        "What a tag points at",
        None,
        JSON
    ),
    ep!(
        "put",
        "/api/v1/tags/{name}",
        "Point a tag at an artifact: {\"ref\": ID|PREFIX|TAG}",
        Some(JSON),
        JSON
    ),
    ep!("delete", "/api/v1/tags/{name}", "Remove a tag", None, JSON),
    ep!(
        "get",
        "/api/v1/tag-history/{name}",
        "Every version a tag has had",
        None,
        JSON
    ),
    ep!("get", "/api/v1/pins", "Pins", None, JSON),
    ep!(
        "put",
        "/api/v1/pins/{reference}",
        "Pin an artifact: {\"replicas\": N}",
        Some(JSON),
        JSON
    ),
    ep!(
        "delete",
        "/api/v1/pins/{reference}",
        "Unpin an artifact",
        None,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/gc",
        "Remove what no pin or tag keeps",
        None,
        JSON
    ),
    ep!(
        "post",
        "/api/v1/store/verify",
        "Re-hash every blob",
        None,
        JSON
    ),
    ep!("get", "/api/openapi.json", "This document", None, JSON),
    ep!("get", "/metrics", "Prometheus metrics", None, "text/plain"),
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
                    "id" => "a job id (20 hex digits)",
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
        if let Some(body) = e.body {
            op["requestBody"] = json!({"required": true, "content": {body: {}}});
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
            "description": "The REST API of one weft node. Listens on 127.0.0.1 by default; on other addresses every request needs `Authorization: Bearer <token>`."
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
