//! Serves the iris classifier that the `train` example writes, as a WASI
//! HTTP function (`kind: Service`, wasm task).
//!
//! The model is read from `/inputs/model`: either the model file itself, or
//! the model folder that `train` writes (`model.json` beside
//! `metrics.json`), as a service that mounts `models/iris@champion` at
//! `/inputs/model` sees it.
//!
//! Routes:
//! - `POST /predict` with a JSON row, `{"features": [5.1, 3.5, 1.4, 0.2]}` or
//!   a bare `[5.1, 3.5, 1.4, 0.2]`: 200 with
//!   `{"class": "setosa", "index": 0, "probabilities": {"setosa": 0.97, ...}}`;
//!   400 for a body that is not such a row, 503 when the model cannot be read
//! - `GET /healthz`: 200 when the model loads, 503 otherwise
//! - `GET /model`: the model's classes and feature count

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tabular::Model;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Where the model is mounted.
const MODEL_PATH: &str = "/inputs/model";

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;

struct IrisServe;

wasi::http::proxy::export!(IrisServe);

impl Guest for IrisServe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = request.method();
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let path = path.split('?').next().unwrap_or("/").to_string();
        let (status, body) = match (&method, path.as_str()) {
            (Method::Get, "/healthz") => match load_model(Path::new(MODEL_PATH)) {
                Ok(_) => (200, json!({"status": "ok"})),
                Err(e) => (503, json!({"error": e})),
            },
            (Method::Get, "/model") => match load_model(Path::new(MODEL_PATH)) {
                Ok(m) => (
                    200,
                    json!({"kind": m.kind, "classes": m.classes, "features": m.features}),
                ),
                Err(e) => (503, json!({"error": e})),
            },
            (Method::Post, "/predict") => match read_body(request) {
                Ok(bytes) => predict(&bytes),
                Err(e) => (400, json!({"error": e})),
            },
            (_, "/predict") => (
                405,
                json!({"error": "use POST /predict with a JSON row such as {\"features\": [5.1, 3.5, 1.4, 0.2]}"}),
            ),
            _ => (
                404,
                json!({"error": format!("no route for {path}; try POST /predict or GET /healthz")}),
            ),
        };
        respond(out, status, &body);
    }
}

/// A row as a request sends it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Row {
    Object { features: Vec<f64> },
    Bare(Vec<f64>),
}

/// Answers one prediction request.
fn predict(body: &[u8]) -> (u16, Value) {
    let row: Row = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                400,
                json!({"error": format!(
                    "the body must be a JSON row: {{\"features\": [numbers]}} or [numbers] ({e})"
                )}),
            );
        }
    };
    let features = match row {
        Row::Object { features } | Row::Bare(features) => features,
    };
    let model = match load_model(Path::new(MODEL_PATH)) {
        Ok(m) => m,
        Err(e) => return (503, json!({"error": e})),
    };
    match classify(&model, &features) {
        Ok(v) => (200, v),
        Err(e) => (400, json!({"error": e})),
    }
}

/// The class and the probability of every class for one row.
fn classify(model: &Model, features: &[f64]) -> Result<Value, String> {
    if features.len() != model.features {
        return Err(format!(
            "the model takes {} features, the row has {}",
            model.features,
            features.len()
        ));
    }
    if features.iter().any(|v| !v.is_finite()) {
        return Err("every feature must be a finite number".to_string());
    }
    let p = model.probabilities(features);
    let index = model.predict(features);
    let mut probabilities = Map::new();
    for (name, prob) in model.classes.iter().zip(&p) {
        probabilities.insert(name.clone(), json!(prob));
    }
    Ok(json!({
        "class": model.classes.get(index).cloned().unwrap_or_default(),
        "index": index,
        "probabilities": probabilities,
    }))
}

/// Reads the model from `path`: the model file, or a folder holding
/// `model.json`.
fn load_model(path: &Path) -> Result<Model, String> {
    let file = if path.is_dir() {
        path.join("model.json")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| {
        format!(
            "cannot read the model {}: {e}; mount a model (e.g. models/iris@champion) at {MODEL_PATH}",
            file.display()
        )
    })?;
    let model: Model = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a model the train example wrote: {e}",
            file.display()
        )
    })?;
    if model.weights.len() != model.classes.len()
        || model.bias.len() != model.classes.len()
        || model.mean.len() != model.features
        || model.std.len() != model.features
        || model.weights.iter().any(|w| w.len() != model.features)
    {
        return Err(format!(
            "{}: the model's shapes do not agree",
            file.display()
        ));
    }
    Ok(model)
}

/// Reads the request body, refusing one over [`MAX_BODY`].
fn read_body(request: IncomingRequest) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    let body = request
        .consume()
        .map_err(|()| "the request body cannot be read".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "the request body cannot be read".to_string())?;
    while let Ok(chunk) = stream.blocking_read(16 * 1024) {
        data.extend_from_slice(&chunk);
        if data.len() > MAX_BODY {
            return Err(format!(
                "the request body is over {MAX_BODY} bytes; send one row"
            ));
        }
    }
    Ok(data)
}

/// Sends `body` as JSON with `status`.
fn respond(out: ResponseOutparam, status: u16, body: &Value) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(resp));
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    if let Ok(stream) = outgoing.write() {
        for chunk in text.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let text = "6,1,a,b\n0,0\n0.1,0\n0.2,0\n1,1\n1.1,1\n0.9,1\n";
        let data = tabular::Dataset::parse(text).expect("parse");
        Model::fit(&data, 200, 0.5, 0.0).0
    }

    #[test]
    fn rows_are_classified_with_probabilities() {
        let m = model();
        let v = classify(&m, &[1.2]).expect("classified");
        assert_eq!(v["class"], "b");
        let pa = v["probabilities"]["a"].as_f64().expect("a");
        let pb = v["probabilities"]["b"].as_f64().expect("b");
        assert!((pa + pb - 1.0).abs() < 1e-9 && pb > pa, "{v}");
        assert!(classify(&m, &[1.0, 2.0]).is_err());
        assert!(classify(&m, &[f64::NAN]).is_err());
    }

    #[test]
    fn both_row_shapes_parse_and_bad_json_is_400() {
        for body in [&br#"{"features": [1.0]}"#[..], b"[1.0]"] {
            let row: Row = serde_json::from_slice(body).expect("row");
            let f = match row {
                Row::Object { features } | Row::Bare(features) => features,
            };
            assert_eq!(f, vec![1.0]);
        }
        let (status, v) = predict(b"{not json");
        assert_eq!(status, 400);
        assert!(
            v["error"].as_str().expect("text").contains("JSON row"),
            "{v}"
        );
    }
}
