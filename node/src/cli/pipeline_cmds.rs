//! Pipeline commands: `weft pipeline run|ls|status|cancel`.
//!
//! Runs live in the daemon's pipeline engine; their records are read from
//! the ledger, so `ls` and `status` answer on any node. `run` reads the
//! spec, inlines each step's `uses:` job file (relative to the spec's
//! folder), checks it here so errors name the file, and sends the text.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use weft_protocol::ledger::{PipelineRunRecord, PipelineState, StepRecord, StepState};
use weft_protocol::pipeline::{PipelineSpec, inline_uses};

use super::backend::daemon_client;
use super::output::{self, Table, age, human_duration};
use crate::api::client::ApiClient;
use crate::home::Home;

/// How long one status request waits for a change while following a run.
const FOLLOW_WAIT_MS: u64 = 30_000;

async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

/// Parses `--param k=v`.
pub(crate) fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE (e.g. --param epochs=100)"))
}

/// Reads a pipeline file, inlining its steps' `uses:` files.
fn read_spec(file: &Path) -> anyhow::Result<(String, PipelineSpec)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let read = |rel: &str| -> Result<String, String> {
        std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string())
    };
    let yaml = inline_uses(&text, &read).with_context(|| format!("{}", file.display()))?;
    let spec = PipelineSpec::from_yaml(&yaml).with_context(|| format!("{}", file.display()))?;
    Ok((yaml, spec))
}

/// `weft pipeline run -f FILE`.
pub(crate) async fn run(
    home: &Home,
    file: &Path,
    wait_for: bool,
    params: &[(String, String)],
    force: bool,
    force_steps: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (yaml, spec) = read_spec(file)?;
    spec.params_with(params)
        .with_context(|| format!("--param (for {})", file.display()))?;
    let client = require_daemon(home).await?;
    let rec = client
        .pipeline_start(&yaml, params, force, force_steps)
        .await?;
    if !wait_for {
        if json {
            output::json(&rec)?;
        } else {
            println!("{}", rec.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&client, rec, !json).await?;
    if json {
        output::json(&done)?;
    } else {
        print_status(&done)?;
    }
    Ok(exit_for(&done))
}

/// Follows a run to its end, printing each step's changes on stderr when asked.
async fn follow(
    client: &ApiClient,
    mut rec: PipelineRunRecord,
    narrate: bool,
) -> anyhow::Result<PipelineRunRecord> {
    let mut seen: HashMap<String, StepState> = HashMap::new();
    loop {
        if narrate {
            if seen.is_empty() {
                eprintln!("{}  pipeline {}  started", rec.id, rec.pipeline);
            }
            for s in &rec.steps {
                if seen.get(&s.name) != Some(&s.state) {
                    if s.state != StepState::Waiting {
                        eprintln!("  {:<24} {}", s.name, step_line(s));
                    }
                    seen.insert(s.name.clone(), s.state);
                }
            }
        }
        if rec.state != PipelineState::Running {
            return Ok(rec);
        }
        // narrating: every change; else only the end
        let since = narrate.then_some(rec.updated_ms);
        rec = client
            .pipeline_run(rec.id.as_str(), Some(FOLLOW_WAIT_MS), since)
            .await?;
    }
}

fn step_line(s: &StepRecord) -> String {
    let mut out = state_text(s).to_string();
    if s.ended_ms.is_some()
        && let Some(d) = step_duration(s)
    {
        out.push_str(&format!(" in {d}"));
    }
    if let Some(j) = &s.job {
        out.push_str(&format!("  job {j}"));
    }
    if let Some(r) = &s.reason {
        out.push_str(&format!("  ({r})"));
    }
    out
}

fn state_text(s: &StepRecord) -> &'static str {
    match s.state {
        StepState::Waiting => "waiting",
        StepState::Running => "running",
        StepState::Cached => "cached",
        StepState::Ran => "ran",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
}

fn mark(s: StepState) -> &'static str {
    match s {
        StepState::Waiting => "·",
        StepState::Running => "▶",
        StepState::Cached => "≡",
        StepState::Ran => "✓",
        StepState::Failed => "✗",
        StepState::Skipped => "-",
        StepState::Cancelled => "⊘",
    }
}

fn step_duration(s: &StepRecord) -> Option<String> {
    let start = s.started_ms?;
    let end = s.ended_ms.unwrap_or_else(crate::store::now_ms);
    Some(human_duration(Duration::from_millis(
        end.saturating_sub(start),
    )))
}

fn run_state(s: PipelineState) -> &'static str {
    match s {
        PipelineState::Running => "running",
        PipelineState::Succeeded => "succeeded",
        PipelineState::Failed => "failed",
        PipelineState::Cancelled => "cancelled",
    }
}

fn exit_for(rec: &PipelineRunRecord) -> ExitCode {
    if rec.state == PipelineState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The DAG as table rows, one step a row in dependency order: the step
/// indented by its depth (`└▶` under what it waits for), its state,
/// duration, job, the steps it waits for, and why it is in its state.
pub(crate) fn dag_rows(rec: &PipelineRunRecord) -> Vec<Vec<String>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut rows = Vec::with_capacity(rec.steps.len());
    for s in &rec.steps {
        let d = s
            .needs
            .iter()
            .filter_map(|n| depth.get(n.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(s.name.as_str(), d);
        let name = if d == 0 {
            s.name.clone()
        } else {
            format!("{}└▶ {}", "   ".repeat(d - 1), s.name)
        };
        rows.push(vec![
            name,
            format!("{} {}", mark(s.state), state_text(s)),
            step_duration(s).unwrap_or_else(|| "-".into()),
            s.job
                .as_ref()
                .map(|j| j.to_string())
                .unwrap_or_else(|| "-".into()),
            if s.needs.is_empty() {
                "-".into()
            } else {
                s.needs.join(", ")
            },
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    rows
}

fn print_status(rec: &PipelineRunRecord) -> anyhow::Result<()> {
    println!("run       {}", rec.id);
    println!("pipeline  {}", rec.pipeline);
    println!("state     {}", run_state(rec.state));
    if let Some(r) = &rec.reason {
        println!("reason    {r}");
    }
    if let Some(e) = &rec.experiment {
        println!("experim.  {e}");
    }
    if !rec.params.is_empty() {
        let p: Vec<String> = rec.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("params    {}", p.join(" "));
    }
    if let Some(t) = &rec.trigger {
        println!("trigger   {t}");
    }
    println!("coord.    {}", rec.coordinator);
    println!(
        "created   {}  ({} long)",
        age(rec.created_ms),
        human_duration(Duration::from_millis(
            rec.updated_ms.saturating_sub(rec.created_ms)
        ))
    );
    println!();
    let mut t = Table::new(&["STEP", "STATE", "TIME", "JOB", "WAITS FOR", "NOTE"]);
    for row in dag_rows(rec) {
        t.row(row);
    }
    t.print()
}

/// `weft pipeline ls`.
pub(crate) async fn ls(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let runs = client.pipeline_runs().await?;
    if json {
        output::json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "RUN", "PIPELINE", "STATE", "STEPS", "CACHED", "CREATED", "REASON",
    ]);
    for r in runs {
        let over = r
            .steps
            .iter()
            .filter(|s| !matches!(s.state, StepState::Waiting | StepState::Running))
            .count();
        let cached = r
            .steps
            .iter()
            .filter(|s| s.state == StepState::Cached)
            .count();
        t.row(vec![
            r.id.to_string(),
            r.pipeline.clone(),
            run_state(r.state).to_string(),
            format!("{over}/{}", r.steps.len()),
            cached.to_string(),
            age(r.created_ms),
            r.reason.clone().or(r.trigger.clone()).unwrap_or_default(),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft pipeline status RUN`.
pub(crate) async fn status(home: &Home, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let rec = client.pipeline_run(id, None, None).await?;
    if json {
        output::json(&rec)?;
    } else {
        print_status(&rec)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft pipeline cancel RUN`.
pub(crate) async fn cancel(home: &Home, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let rec = client.pipeline_cancel(id).await?;
    if json {
        output::json(&rec)?;
    } else {
        println!("{}  {}", rec.id, run_state(rec.state));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::sched::JobId;

    fn step(name: &str, state: StepState, needs: &[&str]) -> StepRecord {
        StepRecord {
            name: name.into(),
            state,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            job: None,
            started_ms: Some(1000),
            ended_ms: Some(1250),
            reason: None,
        }
    }

    #[test]
    fn the_dag_is_drawn_in_order_with_depth_and_needs() {
        let rec = PipelineRunRecord {
            id: JobId::new(1, 2),
            pipeline: "iris".into(),
            experiment: None,
            coordinator: "n".into(),
            state: PipelineState::Succeeded,
            params: vec![],
            trigger: None,
            steps: vec![
                step("split", StepState::Cached, &[]),
                step("train", StepState::Ran, &["split"]),
                step("evaluate", StepState::Failed, &["split", "train"]),
                step("promote", StepState::Skipped, &["evaluate"]),
            ],
            reason: None,
            created_ms: 1,
            updated_ms: 2,
        };
        let rows = dag_rows(&rec);
        let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            names,
            ["split", "└▶ train", "   └▶ evaluate", "      └▶ promote"]
        );
        assert_eq!(rows[0][1], "≡ cached");
        assert_eq!(rows[2][1], "✗ failed");
        assert_eq!(rows[1][2], "250ms");
        assert_eq!(rows[2][4], "split, train");
        assert_eq!(rows[0][4], "-");
    }

    #[test]
    fn params_are_name_equals_value() {
        assert_eq!(
            parse_param("lr=0.1"),
            Ok(("lr".to_string(), "0.1".to_string()))
        );
        assert_eq!(
            parse_param("note=a=b"),
            Ok(("note".to_string(), "a=b".to_string()))
        );
        assert!(parse_param("lr").is_err());
        assert!(parse_param("=1").is_err());
    }
}
