//! Service commands: `weft service apply|ls|status|endpoints|history|scale|rollback|logs|rm`.
//!
//! A service's desired state is in the ledger, so every command answers on
//! any node of the mesh. `apply` checks the spec here first, so errors name
//! the file and the field.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;
use weft_protocol::service::ServiceSpec;

use super::backend::daemon_client;
use super::output::{self, Table, age};
use crate::api::client::{ApiClient, segment};
use crate::home::Home;

async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

fn path(name: &str, rest: &str) -> String {
    format!("/api/v1/services/{}{rest}", segment(name))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The last 8 characters of a node id, as `weft job ls` shows them.
fn short(node: &str) -> String {
    let n = node.chars().count();
    node.chars().skip(n.saturating_sub(8)).collect()
}

/// `weft service apply -f FILE`.
pub(crate) async fn apply(home: &Home, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let yaml = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    ServiceSpec::from_yaml(&yaml).with_context(|| format!("{}", file.display()))?;
    let client = require_daemon(home).await?;
    let v: Value = client
        .call(
            Method::POST,
            "/api/v1/services",
            &serde_json::json!({ "spec": yaml }),
        )
        .await?;
    if json {
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let unchanged = if v["changed"] == Value::Bool(false) {
        " (unchanged)"
    } else {
        ""
    };
    println!(
        "service {}: revision {}{unchanged}",
        text(&v["name"]),
        text(&v["revision"])
    );
    if let Some(peers) = v["unconfirmed"].as_array() {
        for p in peers {
            eprintln!("warning: not confirmed by {}", text(p));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn replicas_cell(s: &Value) -> String {
    let ready = text(&s["ready"]);
    match s["autoscale"].as_array().map(Vec::as_slice) {
        Some([min, max]) => format!("{ready}/{} (auto {min}-{max})", text(&s["desired"])),
        _ => format!("{ready}/{}", text(&s["desired"])),
    }
}

/// `weft service ls`.
pub(crate) async fn ls(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let list: Vec<Value> = client.get("/api/v1/services").await?;
    if json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["SERVICE", "REVISION", "KIND", "READY", "OWNER"]);
    for s in list {
        let revision = match &s["revision"] {
            Value::Null => "removed".to_string(),
            r => r.to_string(),
        };
        t.row(vec![
            text(&s["name"]),
            revision,
            text(&s["kind"]),
            replicas_cell(&s),
            s["owner"].as_str().map(short).unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

fn print_endpoints(list: &[Value]) -> anyhow::Result<()> {
    let mut t = Table::new(&["REPLICA", "NODE", "REVISION", "STATE", "INFLIGHT", "NOTE"]);
    for e in list {
        t.row(vec![
            text(&e["replica"]),
            e["node"].as_str().map(short).unwrap_or_else(|| "-".into()),
            text(&e["revision"]),
            text(&e["state"]),
            text(&e["inflight"]),
            e["note"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t.print()
}

fn print_history(list: &[Value]) -> anyhow::Result<()> {
    let mut t = Table::new(&["WHEN", "CHANGE", "REVISION", "REPLICAS", "BY", "REASON"]);
    for h in list {
        t.row(vec![
            h["at_ms"].as_u64().map(age).unwrap_or_else(|| "-".into()),
            text(&h["change"]),
            text(&h["revision"]),
            text(&h["replicas"]),
            h["origin"]
                .as_str()
                .map(short)
                .unwrap_or_else(|| "-".into()),
            h["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t.print()
}

/// `weft service status NAME`.
pub(crate) async fn status(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let s: Value = client.get(&path(name, "")).await?;
    if json {
        output::json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "service   {}", text(&s["name"]))?;
        writeln!(out, "revision  {}", text(&s["revision"]))?;
        writeln!(out, "kind      {}", text(&s["kind"]))?;
        writeln!(out, "replicas  {} ready", replicas_cell(&s))?;
        writeln!(out, "rollout   {}", text(&s["rollout"]))?;
        writeln!(out, "owner     {}", text(&s["owner"]))?;
        writeln!(out, "endpoints")?;
    }
    print_endpoints(s["endpoints"].as_array().map_or(&[], Vec::as_slice))?;
    println!("history");
    print_history(s["history"].as_array().map_or(&[], Vec::as_slice))?;
    Ok(ExitCode::SUCCESS)
}

/// `weft service endpoints NAME`.
pub(crate) async fn endpoints(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let list: Vec<Value> = client.get(&path(name, "/endpoints")).await?;
    if json {
        output::json(&list)?;
    } else {
        print_endpoints(&list)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft service history NAME`.
pub(crate) async fn history(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let list: Vec<Value> = client.get(&path(name, "/history")).await?;
    if json {
        output::json(&list)?;
    } else {
        print_history(&list)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft service scale NAME N`.
pub(crate) async fn scale(
    home: &Home,
    name: &str,
    replicas: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "replicas": replicas });
    post_change(home, name, "/scale", body, json, |v| {
        format!(
            "service {}: {} replicas",
            text(&v["name"]),
            text(&v["replicas"])
        )
    })
    .await
}

/// `weft service rollback NAME [--to-revision N]`.
pub(crate) async fn rollback(
    home: &Home,
    name: &str,
    to: Option<u32>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "to_revision": to });
    post_change(home, name, "/rollback", body, json, |v| {
        format!(
            "service {}: revision {}",
            text(&v["name"]),
            text(&v["revision"])
        )
    })
    .await
}

/// Posts a change of service `name` and prints the answer.
async fn post_change(
    home: &Home,
    name: &str,
    suffix: &str,
    body: Value,
    json: bool,
    line: impl FnOnce(&Value) -> String,
) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let v: Value = client
        .call(Method::POST, &path(name, suffix), &body)
        .await?;
    if json {
        output::json(&v)?;
    } else {
        println!("{}", line(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft service logs NAME`.
pub(crate) async fn logs(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let list: Vec<Value> = client.get(&path(name, "/logs")).await?;
    if json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("(no replica of {name} has output)");
    }
    let mut out = std::io::stdout().lock();
    for r in &list {
        writeln!(
            out,
            "==> replica {} on {} <==",
            text(&r["replica"]),
            r["node"].as_str().map(short).unwrap_or_else(|| "-".into())
        )?;
        let logs = r["logs"].as_str().unwrap_or("");
        write!(out, "{logs}")?;
        if !logs.is_empty() && !logs.ends_with('\n') {
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft service rm NAME`.
pub(crate) async fn rm(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let v: Value = client.call_no_body(Method::DELETE, &path(name, "")).await?;
    if json {
        output::json(&v)?;
    } else {
        println!("service {} removed", text(&v["name"]));
    }
    Ok(ExitCode::SUCCESS)
}
