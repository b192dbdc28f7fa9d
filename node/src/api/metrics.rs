//! Prometheus metrics in the text exposition format, at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, ApiState, blocking};

/// Counters the node keeps; gauges are read when scraped.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    bytes_added: AtomicU64,
    bytes_served: AtomicU64,
    peer_bytes: Mutex<BTreeMap<String, (u64, u64)>>,
    /// The S3 gateway's counters.
    pub s3: crate::s3::metrics::S3Metrics,
}

impl Metrics {
    /// One API request answered.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Bytes imported into the store through the API.
    pub fn added(&self, bytes: u64) {
        self.bytes_added.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes sent to API clients.
    pub fn served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes received from (`inbound`) or sent to a peer by the data plane.
    pub fn peer_bytes(&self, peer: &str, inbound: u64, outbound: u64) {
        let mut m = self.peer_bytes.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(peer.to_string()).or_default();
        e.0 += inbound;
        e.1 += outbound;
    }

    /// Bytes received from and sent to each peer.
    pub fn peer_totals(&self) -> BTreeMap<String, (u64, u64)> {
        self.peer_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The exposition text, with gauges passed in by the caller.
    pub fn render(&self, store_bytes: u64, store_blobs: u64, extra: &str) -> String {
        let mut out = String::new();
        series(
            &mut out,
            "weft_store_bytes",
            "gauge",
            "Bytes of complete blobs in the local store.",
            store_bytes,
        );
        series(
            &mut out,
            "weft_store_blobs",
            "gauge",
            "Blobs in the local store.",
            store_blobs,
        );
        series(
            &mut out,
            "weft_api_added_bytes_total",
            "counter",
            "Bytes imported through the API.",
            self.bytes_added.load(Ordering::Relaxed),
        );
        series(
            &mut out,
            "weft_api_served_bytes_total",
            "counter",
            "Bytes downloaded through the API.",
            self.bytes_served.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP weft_api_requests_total API requests answered.");
        let _ = writeln!(out, "# TYPE weft_api_requests_total counter");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weft_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        let peers = self.peer_totals();
        let _ = writeln!(
            out,
            "# HELP weft_peer_received_bytes_total Data-plane bytes received from a peer."
        );
        let _ = writeln!(out, "# TYPE weft_peer_received_bytes_total counter");
        for (peer, (inb, _)) in &peers {
            let _ = writeln!(
                out,
                "weft_peer_received_bytes_total{{peer=\"{}\"}} {inb}",
                escape(peer)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_peer_sent_bytes_total Data-plane bytes sent to a peer."
        );
        let _ = writeln!(out, "# TYPE weft_peer_sent_bytes_total counter");
        for (peer, (_, outb)) in &peers {
            let _ = writeln!(
                out,
                "weft_peer_sent_bytes_total{{peer=\"{}\"}} {outb}",
                escape(peer)
            );
        }
        self.s3.render(&mut out);
        out.push_str(extra);
        out
    }
}

/// One series without labels: its HELP and TYPE lines and its value.
pub(crate) fn series(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value.
pub(super) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)),
)]
async fn metrics(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    let (bytes, blobs) = blocking(move || store.stats()).await?;
    let extra = match &state.node {
        Some(n) => n.metrics().await,
        None => String::new(),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(bytes, blobs, &extra),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_lines() {
        let m = Metrics::default();
        m.request("GET", "/api/v1/node", 200);
        m.request("GET", "/api/v1/node", 200);
        m.peer_bytes("12D3\"x", 10, 20);
        let text = m.render(5, 1, "");
        assert!(text.contains(
            "weft_api_requests_total{method=\"GET\",route=\"/api/v1/node\",status=\"200\"} 2"
        ));
        assert!(text.contains("weft_peer_received_bytes_total{peer=\"12D3\\\"x\"} 10"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
