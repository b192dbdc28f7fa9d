//! The OpenAPI 3.1 document of the API, served at `/api/openapi.json`.
//!
//! Generated from the code: every handler carries `#[utoipa::path]` (its
//! parameters, body, responses and their types), and a route exists only
//! as `OpenApiRouter::routes(routes!(..))` ([`api_routes`]), which puts it
//! in the router and in the document at once. [`document`] then adds what
//! is common to every operation: the bearer-token security (reads of this
//! document and `/metrics` are open on loopback), the error responses the
//! guard and the extractors give (400, 401, 403, 413, 415, 500, all with
//! the one `Error` body), and the largest body each operation buffers.
//!
//! The guard reads its per-operation rules ([`operations`], [`body_rule`],
//! [`has_path`]) from this document, so what it enforces is what the
//! document says.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::Json;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;

/// The largest request body the API buffers (JSON and YAML bodies); an
/// upload (`application/octet-stream`) streams to disk and has no limit.
pub const MAX_BODY_BYTES: u64 = 2 * 1024 * 1024;

/// The media type of uploads, which stream.
pub const STREAMED: &str = "application/octet-stream";

/// The extension on a request body that says how large it may be.
const MAX_BODY_EXT: &str = "x-weft-max-body-bytes";

/// The API's error body: `{error, detail}`.
#[derive(ToSchema)]
#[allow(dead_code)] // the schema of `super::ErrorBody`
pub struct ErrorSchema {
    /// A short machine-readable code (`not_found`, `bad_request`,
    /// `unauthorized`, `unsupported_media_type`, `too_large`, ...).
    error: String,
    /// What went wrong and what to do.
    detail: String,
}

/// Every route of the API, each with its operation in the document.
pub(super) fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .merge(super::artifacts::routes())
        .merge(super::jobs::routes())
        .merge(super::pipelines::routes())
        .merge(super::services::routes())
        .merge(super::runs::routes())
        .merge(super::lineage::routes())
        .merge(super::models::routes())
        .merge(super::transfers::routes())
        .merge(super::metrics::routes())
        .routes(routes!(openapi_json))
}

/// The document, served as JSON.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    summary = "This document",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object)),
)]
async fn openapi_json() -> Json<Value> {
    Json(document().clone())
}

/// The error responses every operation may give, with why.
const COMMON_ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "bad input: a malformed path or query parameter, or a body that is not what the operation takes",
    ),
    (
        "401",
        "Unauthorized",
        "no token or a wrong one: send `Authorization: Bearer <token>` (the file api-token in the node's home)",
    ),
    (
        "403",
        "Forbidden",
        "a Host that does not name this daemon, an Origin of another site, or a path outside api.path_roots",
    ),
    (
        "413",
        "TooLarge",
        "the body is larger than the operation takes (x-weft-max-body-bytes on its request body)",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "a body Content-Type the operation does not take",
    ),
    ("500", "Internal", "the node failed; its log says why"),
];

/// Whether an operation may be read without the token on loopback.
fn open_read(method: &str, path: &str) -> bool {
    matches!(method, "get" | "head") && matches!(path, "/api/openapi.json" | "/metrics")
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The generated document with what is common to all operations added.
fn build() -> Value {
    let (_, api) = api_routes().split_for_parts();
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    doc["info"] = json!({
        "title": "weft node API",
        "version": weft_protocol::VERSION,
        "description": "The REST API of one weft node. Listens on 127.0.0.1 by default. Every request needs `Authorization: Bearer <token>` (the token is in the file api-token in the node's home, or api.token in its config.toml), except reads of this document and /metrics when the API listens on loopback. The Host header must name the daemon (127.0.0.1, localhost, [::1], its listen address, or a name in api.allowed_hosts); a request with an Origin other than the daemon's own is refused with 403; a mutating request may carry only the media types listed for its body (others are refused with 415; an operation without a body accepts none but application/json), and a buffered body at most x-weft-max-body-bytes (413). Import and export by daemon-side path work only under api.path_roots. Every error is JSON `{error, detail}`.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    });
    // the router spells a catch-all `{*name}`, OpenAPI `{name}`
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut out = Map::new();
    for (path, mut item) in paths {
        let path = path.replace("{*", "{");
        if let Some(ops) = item.as_object_mut() {
            for (method, op) in ops.iter_mut() {
                if METHODS.contains(&method.as_str()) {
                    finish_operation(method, &path, op);
                }
            }
        }
        out.insert(path, item);
    }
    doc["paths"] = Value::Object(out);
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(c) = components {
        let error = <ErrorSchema as utoipa::PartialSchema>::schema();
        if !c["schemas"].is_object() {
            c["schemas"] = json!({});
        }
        c["schemas"]["Error"] = serde_json::to_value(error).unwrap_or_else(|_| json!({}));
        c["securitySchemes"] = json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "the node's API token: the file api-token in its home (mode 0600), or api.token in its config.toml"
            }
        });
        let mut responses = Map::new();
        for (_, name, why) in COMMON_ERRORS {
            responses.insert(
                name.to_string(),
                json!({
                    "description": why,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }),
            );
        }
        c["responses"] = Value::Object(responses);
    }
    doc
}

/// Security, the common errors, error bodies and the body limit of one
/// operation.
fn finish_operation(method: &str, path: &str, op: &mut Value) {
    let bearer = json!({"bearer": []});
    op["security"] = if open_read(method, path) {
        // open on loopback; elsewhere the token is needed
        json!([{}, bearer])
    } else {
        json!([bearer])
    };
    // unique across the API (handlers in different modules share names)
    op["operationId"] = json!(operation_id(method, path));
    let responses = op
        .as_object_mut()
        .map(|o| o.entry("responses").or_insert_with(|| json!({})));
    if let Some(Value::Object(responses)) = responses {
        // an error a handler documents without a body has the Error body
        for (status, r) in responses.iter_mut() {
            if status.starts_with(['4', '5']) && r.get("content").is_none() {
                r["content"] =
                    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
            }
        }
        for (status, name, _) in COMMON_ERRORS {
            responses
                .entry(status.to_string())
                .or_insert_with(|| json!({"$ref": format!("#/components/responses/{name}")}));
        }
    }
    if let Some(body) = op.get_mut("requestBody") {
        // an optional body (`Option<T>`) is one that may be left out, not
        // a JSON `null`
        let mut optional = false;
        if let Some(content) = body["content"].as_object_mut() {
            for media in content.values_mut() {
                let one_of = media["schema"]["oneOf"].as_array().cloned();
                if let Some([inner, null]) = one_of.as_deref()
                    && null == &json!({"type": "null"})
                {
                    media["schema"] = inner.clone();
                    optional = true;
                }
            }
        }
        if optional {
            body["required"] = json!(false);
        }
        let streamed = body["content"]
            .as_object()
            .is_some_and(|c| c.contains_key(STREAMED));
        if !streamed {
            body[MAX_BODY_EXT] = json!(MAX_BODY_BYTES);
        }
    }
}

/// `get_api_v1_tags_name` for `GET /api/v1/tags/{name}`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// One operation as the guard sees it, read from the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Lowercase, as in the document: `get`, `post`, ...
    pub method: String,
    /// As in the document: `/api/v1/tags/{name}`.
    pub path: String,
    /// The media types its request body may have; empty: it takes none.
    pub body: Vec<String>,
    /// Whether a body must be sent.
    pub body_required: bool,
    /// The largest body it takes; `None`: streamed, no limit.
    pub max_body: Option<u64>,
    /// Whether it may be called without the token (on loopback).
    pub open: bool,
}

/// Every operation of the document.
pub fn operations() -> &'static [Operation] {
    static OPS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut out = Vec::new();
        let Some(paths) = document()["paths"].as_object() else {
            return out;
        };
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let body = &op["requestBody"];
                let types: Vec<String> = body["content"]
                    .as_object()
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                let open = op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(Map::is_empty)));
                out.push(Operation {
                    method: method.clone(),
                    path: path.clone(),
                    body_required: body["required"].as_bool().unwrap_or(false),
                    max_body: if types.is_empty() {
                        Some(0)
                    } else {
                        body[MAX_BODY_EXT].as_u64()
                    },
                    body: types,
                    open,
                });
            }
        }
        out
    })
}

/// The router's spelling of a route in the document's.
fn doc_path(route: &str) -> String {
    route.replace("{*", "{")
}

/// The operation a request is, by its method and matched route (the
/// router's spelling, `{*name}`, or the document's).
pub fn body_rule(method: &str, route: &str) -> Option<&'static Operation> {
    let path = doc_path(route);
    let method = method.to_ascii_lowercase();
    operations()
        .iter()
        .find(|o| o.method == method && o.path == path)
}

/// Whether the document has the route, by any method.
pub fn has_path(route: &str) -> bool {
    let path = doc_path(route);
    operations().iter().any(|o| o.path == path)
}

/// The paths of the document.
pub fn paths() -> BTreeSet<String> {
    operations().iter().map(|o| o.path.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_path() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "weft node API");
        // golden: the paths and operations the API serves
        assert_eq!(paths().len(), 42, "{:?}", paths());
        assert_eq!(operations().len(), 53);
        // it is valid JSON that reads back the same
        let text = serde_json::to_string(doc).expect("serialize");
        let back: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(&back, doc);
        for p in paths() {
            assert!(p.starts_with("/api/") || p == "/metrics", "{p}");
            assert!(!p.contains('*'), "{p}");
        }
    }

    #[test]
    fn every_operation_has_security_and_the_error_responses() {
        let mut ids = BTreeSet::new();
        for o in operations() {
            let op = &document()["paths"][&o.path][&o.method];
            let security = op["security"].as_array().expect("security");
            assert!(
                security.iter().any(|r| r["bearer"].is_array()),
                "{} {}",
                o.method,
                o.path
            );
            assert_eq!(
                o.open,
                open_read(&o.method, &o.path),
                "{} {}",
                o.method,
                o.path
            );
            for (status, _, _) in COMMON_ERRORS {
                assert!(
                    op["responses"][status].is_object(),
                    "{} {} lacks {status}",
                    o.method,
                    o.path
                );
            }
            assert!(
                ids.insert(op["operationId"].as_str().expect("operationId")),
                "{} {}: operationId not unique",
                o.method,
                o.path
            );
            let ok = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .any(|s| s.starts_with('2'));
            assert!(ok, "{} {} documents no success", o.method, o.path);
            // every error response has the Error body
            for (status, r) in op["responses"].as_object().expect("responses") {
                if status.starts_with(['4', '5']) && r.get("$ref").is_none() {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{} {} {status}",
                        o.method,
                        o.path
                    );
                }
            }
            // path parameters are declared
            for seg in o.path.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(declared, "{} {} lacks {name}", o.method, o.path);
                }
            }
        }
        let error = &document()["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["error", "detail"]));
    }

    #[test]
    fn body_rules_come_from_the_document() {
        let upload = body_rule("POST", "/api/v1/artifacts").expect("upload");
        assert_eq!(upload.body, vec![STREAMED.to_string()]);
        assert!(upload.body_required);
        assert_eq!(upload.max_body, None);
        let tag = body_rule("PUT", "/api/v1/tags/{*name}").expect("set tag");
        assert_eq!(tag.body, vec!["application/json".to_string()]);
        assert_eq!(tag.max_body, Some(MAX_BODY_BYTES));
        let jobs = body_rule("post", "/api/v1/jobs").expect("submit");
        assert!(jobs.body.contains(&"application/yaml".to_string()));
        let pin = body_rule("put", "/api/v1/pins/{reference}").expect("pin");
        assert!(!pin.body_required);
        assert_eq!(
            document()["paths"]["/api/v1/pins/{reference}"]["put"]["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/PinBody"
        );
        let gc = body_rule("post", "/api/v1/gc").expect("gc");
        assert!(gc.body.is_empty());
        assert!(body_rule("post", "/api/v1/nowhere").is_none());
        assert!(has_path("/api/v1/models/{*name}"));
        assert!(!has_path("/api/v1/nowhere"));
        assert!(body_rule("get", "/metrics").is_some_and(|o| o.open));
    }

    /// A route exists only through `routes!`: no module of the API adds
    /// one to the router by hand, where the document would not see it.
    #[test]
    fn no_route_bypasses_the_document() {
        for (name, src) in [
            ("api.rs", include_str!("../api.rs")),
            ("artifacts.rs", include_str!("artifacts.rs")),
            ("jobs.rs", include_str!("jobs.rs")),
            ("lineage.rs", include_str!("lineage.rs")),
            ("metrics.rs", include_str!("metrics.rs")),
            ("models.rs", include_str!("models.rs")),
            ("pipelines.rs", include_str!("pipelines.rs")),
            ("runs.rs", include_str!("runs.rs")),
            ("services.rs", include_str!("services.rs")),
            ("transfers.rs", include_str!("transfers.rs")),
        ] {
            for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                assert!(!src.contains(bypass), "{name} adds a route with {bypass}");
            }
        }
        // and what routes! registered is what the document lists
        let (_, api) = api_routes().split_for_parts();
        let generated: BTreeSet<String> = api.paths.paths.keys().map(|p| doc_path(p)).collect();
        assert_eq!(generated, paths());
    }
}
