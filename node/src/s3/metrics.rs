//! `weft_s3_*` counters: requests by operation and status, bytes in and out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::metrics::series;

/// The gateway's counters (kept in the node's metrics, rendered on `/metrics`).
#[derive(Default)]
pub struct S3Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl S3Metrics {
    /// One request answered.
    pub fn request(&self, op: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((op.to_string(), status)).or_default() += 1;
    }

    /// Bytes of object data received.
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of object data sent.
    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The exposition lines.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP weft_s3_requests_total S3 requests answered, by operation and status."
        );
        let _ = writeln!(out, "# TYPE weft_s3_requests_total counter");
        for ((op, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weft_s3_requests_total{{op=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        series(
            out,
            "weft_s3_received_bytes_total",
            "counter",
            "Object bytes received by the S3 gateway.",
            self.bytes_in.load(Ordering::Relaxed),
        );
        series(
            out,
            "weft_s3_sent_bytes_total",
            "counter",
            "Object bytes sent by the S3 gateway.",
            self.bytes_out.load(Ordering::Relaxed),
        );
    }
}
