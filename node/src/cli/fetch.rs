//! Fetching from the mesh through the daemon, for `weft get`: reads the
//! daemon's NDJSON progress stream and shows a bar on a terminal (bytes,
//! rate, providers).

use std::io::IsTerminal;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::human_bytes;
use crate::api::client::{ApiClient, segment};

/// Asks the daemon to make `reference` whole in its store, showing
/// progress until it is.
pub(crate) async fn from_mesh(client: &ApiClient, reference: &str) -> anyhow::Result<()> {
    let resp = client
        .post_stream(&format!("/api/v1/artifacts/{}/fetch", segment(reference)))
        .await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {prefix} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("fetching");
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("reading progress from the daemon")?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let v: serde_json::Value = serde_json::from_slice(&line[..end])
                .context("unexpected progress line from the daemon")?;
            match v["event"].as_str() {
                Some("progress") => {
                    let total = v["bytes_total"].as_u64().unwrap_or(0);
                    if total > 0 {
                        bar.set_length(total);
                    }
                    bar.set_position(v["bytes_done"].as_u64().unwrap_or(0).min(total.max(1)));
                    bar.set_prefix(format!(
                        "{}/s from {} peers",
                        human_bytes(v["rate_bps"].as_u64().unwrap_or(0)),
                        v["peers"].as_u64().unwrap_or(0)
                    ));
                }
                Some("done") => {
                    bar.finish_and_clear();
                    return Ok(());
                }
                Some("error") => {
                    bar.finish_and_clear();
                    anyhow::bail!("{}", v["detail"].as_str().unwrap_or("the fetch failed"));
                }
                _ => {}
            }
        }
    }
    bar.finish_and_clear();
    anyhow::bail!("the daemon ended the fetch without a result")
}
