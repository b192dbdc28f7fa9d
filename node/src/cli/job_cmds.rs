//! Job commands: `weft run` and `weft job ls|status|logs|cancel`.
//!
//! Jobs live in the daemon's scheduler. `weft run --local` on a home with no
//! daemon starts a node in this process for the one job (no peers), runs it
//! and stops.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use weft_protocol::JobSpec;
use weft_protocol::sched::{JobState, JobStatus};

use super::backend::daemon_client;
use super::output::{self, Table, age, human_duration};
use crate::api::client::ApiClient;
use crate::config::Config;
use crate::home::Home;

async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

/// Waits for a job to finish, printing state changes on stderr when asked.
async fn wait(client: &ApiClient, id: &str, narrate: bool) -> anyhow::Result<JobStatus> {
    let mut last: Option<(JobState, u32)> = None;
    loop {
        // short waits while narrating, so state changes show as they happen
        let wait_ms = if narrate { 500 } else { 30_000 };
        let s: JobStatus = client
            .get(&format!("/api/v1/jobs/{id}?wait_ms={wait_ms}"))
            .await?;
        if narrate && last != Some((s.state, s.attempt)) {
            eprintln!(
                "{}  {} (attempt {}){}{}",
                s.id,
                s.state,
                s.attempt,
                s.node
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default(),
                s.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            last = Some((s.state, s.attempt));
        }
        if s.state.is_terminal() {
            return Ok(s);
        }
    }
}

fn print_status(s: &JobStatus) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "job       {}", s.id)?;
    writeln!(out, "name      {}", s.name)?;
    writeln!(out, "state     {}", s.state)?;
    if let Some(r) = &s.reason {
        writeln!(out, "reason    {r}")?;
    }
    writeln!(out, "attempt   {}", s.attempt)?;
    writeln!(out, "node      {}", s.node.as_deref().unwrap_or("-"))?;
    writeln!(out, "coord.    {}", s.coordinator)?;
    if let Some(res) = &s.result {
        if res.cached {
            writeln!(out, "cached    yes")?;
        }
        if let Some(code) = res.exit_code {
            writeln!(out, "exit      {code}")?;
        }
        if let Some((class, msg)) = &res.error {
            writeln!(out, "error     {class}: {msg}")?;
        }
        writeln!(
            out,
            "wall      {}",
            human_duration(Duration::from_millis(res.wall_ms))
        )?;
        for (path, id) in &res.outputs {
            writeln!(out, "output    {path} -> {id}")?;
        }
        if let Some(l) = &res.logs {
            writeln!(out, "logs      {l}")?;
        }
        for n in &res.notes {
            writeln!(out, "note      {n}")?;
        }
    }
    writeln!(out, "history")?;
    for t in &s.history {
        writeln!(
            out,
            "  {:>9}  attempt {}  {:<20}  {}{}",
            t.state.as_str(),
            t.attempt,
            age(t.at_ms),
            t.node.as_deref().unwrap_or("-"),
            t.reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn exit_for(s: &JobStatus) -> ExitCode {
    if s.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `weft run -f FILE`.
pub(crate) async fn run(
    home: &Home,
    file: &Path,
    wait_for: bool,
    local: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let yaml = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    // check it here first, so errors name the file
    JobSpec::from_yaml(&yaml).with_context(|| format!("{}", file.display()))?;
    let body = serde_json::json!({ "spec": yaml, "local": local });
    if let Some(client) = daemon_client(home).await? {
        return submit(&client, &body, wait_for, json).await;
    }
    if !local {
        anyhow::bail!(
            "no weft daemon is running on {}; start one with `weft daemon`, or pass --local to run the job here without one",
            home.root().display()
        );
    }
    // no daemon: a node in this process, on loopback, for this one job
    let mut config = Config::load(home)?;
    config.api.listen = "127.0.0.1:0".into();
    config.data.listen = "127.0.0.1:0".into();
    config.ingress.listen = String::new();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.network.bootstrap.clear();
    config.network.mdns = false;
    if config.network.cluster_secret.is_none() {
        config.network.cluster_secret = Some(crate::config::new_secret());
    }
    let node = crate::daemon::Node::start(home.clone(), config).await?;
    let result = match ApiClient::from_home(node.home()) {
        Ok(client) => submit(&client, &body, true, json).await,
        Err(e) => Err(e.into()),
    };
    node.stop().await;
    result
}

async fn submit(
    client: &ApiClient,
    body: &serde_json::Value,
    wait_for: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let s: JobStatus = client.call(Method::POST, "/api/v1/jobs", body).await?;
    if !wait_for {
        if json {
            output::json(&s)?;
        } else {
            println!("{}", s.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = wait(client, s.id.as_str(), !json).await?;
    if json {
        output::json(&done)?;
    } else {
        print_status(&done)?;
    }
    Ok(exit_for(&done))
}

/// `weft job ls`.
pub(crate) async fn ls(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let jobs: Vec<JobStatus> = client.get("/api/v1/jobs").await?;
    if json {
        output::json(&jobs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "JOB", "NAME", "STATE", "ATTEMPT", "NODE", "CREATED", "REASON",
    ]);
    for j in jobs {
        t.row(vec![
            j.id.to_string(),
            j.name,
            j.state.to_string()
                + if j.result.as_ref().is_some_and(|r| r.cached) {
                    " (cached)"
                } else {
                    ""
                },
            j.attempt.to_string(),
            j.node
                .map(|n| {
                    n.chars()
                        .rev()
                        .take(8)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect()
                })
                .unwrap_or_else(|| "-".into()),
            age(j.created_ms),
            j.reason.unwrap_or_default(),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft job status ID`.
pub(crate) async fn status(home: &Home, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let s: JobStatus = client.get(&format!("/api/v1/jobs/{id}")).await?;
    if json {
        output::json(&s)?;
    } else {
        print_status(&s)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft job logs ID [--follow]`.
pub(crate) async fn logs(
    home: &Home,
    id: &str,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    if follow {
        wait(&client, id, true).await?;
    }
    let v: serde_json::Value = client.get(&format!("/api/v1/jobs/{id}/logs")).await?;
    if json {
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(note) = v["note"].as_str() {
        eprintln!("({note})");
    }
    print!("{}", v["stdout"].as_str().unwrap_or(""));
    eprint!("{}", v["stderr"].as_str().unwrap_or(""));
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft job cancel ID`.
pub(crate) async fn cancel(home: &Home, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let s: JobStatus = client
        .call_no_body(Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .await?;
    if json {
        output::json(&s)?;
    } else {
        println!("{}  {}", s.id, s.state);
    }
    Ok(ExitCode::SUCCESS)
}
