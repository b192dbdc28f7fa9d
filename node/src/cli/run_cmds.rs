//! Run and lineage commands: `weft runs ls|show|compare` and `weft lineage`.
//!
//! Runs and lineage are ledger entries every node holds, so these work
//! against any node's daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::backend::daemon_client;
use super::output::{self, Table, human_duration};
use crate::api::client::{ApiClient, segment};
use crate::api::lineage::{Direction, Graph, GraphNode};
use crate::api::runs::RunJson;
use crate::home::Home;

/// Metrics shown per run in `weft runs ls`.
const LS_METRICS: usize = 3;

async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

fn short(node: &str) -> String {
    let n = node.chars().count();
    node.chars().skip(n.saturating_sub(8)).collect()
}

/// A metric value, short: 4 significant digits.
fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-3 && v.abs() < 1e6 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// `weft runs ls [--experiment E]`.
pub(crate) async fn ls(
    home: &Home,
    experiment: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let path = match experiment {
        Some(e) => format!("/api/v1/runs?experiment={}", segment(e)),
        None => "/api/v1/runs".to_string(),
    };
    let runs: Vec<RunJson> = client.get(&path).await?;
    if json {
        output::json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "RUN",
        "NAME",
        "EXPERIMENT",
        "STATUS",
        "NODE",
        "DURATION",
        "METRICS",
    ]);
    for r in runs {
        let metrics: Vec<String> = r
            .metrics
            .iter()
            .take(LS_METRICS)
            .map(|(k, v)| format!("{k}={}", num(*v)))
            .collect();
        let more = r.metrics.len().saturating_sub(LS_METRICS);
        t.row(vec![
            r.id.to_string(),
            r.name.unwrap_or_else(|| "-".into()),
            r.experiment.unwrap_or_else(|| "-".into()),
            r.status + if r.cached { " (cached)" } else { "" },
            r.node.as_deref().map_or_else(|| "-".into(), short),
            r.duration_ms
                .map_or_else(|| "-".into(), |d| human_duration(Duration::from_millis(d))),
            metrics.join(" ")
                + &if more > 0 {
                    format!(" (+{more})")
                } else {
                    String::new()
                },
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft runs show RUN`.
pub(crate) async fn show(home: &Home, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let r: RunJson = client.get(&format!("/api/v1/runs/{}", segment(id))).await?;
    if json {
        output::json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{k:<11} {v}");
    };
    line(&mut out, "run", r.id.as_str());
    line(&mut out, "name", r.name.as_deref().unwrap_or("-"));
    line(
        &mut out,
        "experiment",
        r.experiment.as_deref().unwrap_or("-"),
    );
    line(
        &mut out,
        "status",
        &(r.status.clone() + if r.cached { " (cached)" } else { "" }),
    );
    if let Some(j) = &r.job {
        line(&mut out, "job", j.as_str());
    }
    if let (Some(p), Some(s)) = (&r.pipeline_run, &r.step) {
        line(&mut out, "pipeline", &format!("run {p}, step {s}"));
    }
    line(&mut out, "node", r.node.as_deref().unwrap_or("-"));
    if let Some(d) = r.duration_ms {
        line(
            &mut out,
            "duration",
            &human_duration(Duration::from_millis(d)),
        );
    }
    for (k, v) in &r.params {
        line(&mut out, "param", &format!("{k} = {v}"));
    }
    for (k, v) in &r.metrics {
        let points = r.metric_history.iter().filter(|m| &m.key == k).count();
        let series = if points > 1 {
            format!(" ({points} points)")
        } else {
            String::new()
        };
        line(&mut out, "metric", &format!("{k} = {}{series}", num(*v)));
    }
    for (k, v) in &r.tags {
        line(&mut out, "tag", &format!("{k} = {v}"));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Whether lower is better for a metric: names with `loss` or `error`.
pub fn lower_is_better(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("loss") || k.contains("error")
}

/// One metric across the compared runs.
#[derive(Debug, Serialize, PartialEq)]
pub struct MetricRow {
    pub key: String,
    /// `highest` or `lowest`: which value is best.
    pub best_is: &'static str,
    /// The latest value in each run (in the order given), if it has one.
    pub values: Vec<Option<f64>>,
    /// Which runs hold the best value (all of them on a tie).
    pub best: Vec<usize>,
}

/// The comparison of runs: every param and metric side by side.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunJson>,
    pub params: BTreeMap<String, Vec<Option<String>>>,
    pub metrics: Vec<MetricRow>,
}

pub fn compare_runs(runs: Vec<RunJson>) -> Comparison {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let params = keys
        .into_iter()
        .map(|k| {
            (
                k.clone(),
                runs.iter().map(|r| r.params.get(k).cloned()).collect(),
            )
        })
        .collect();
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.metrics.keys()).collect();
    let metrics = keys
        .into_iter()
        .map(|k| {
            let values: Vec<Option<f64>> = runs.iter().map(|r| r.metrics.get(k).copied()).collect();
            let lower = lower_is_better(k);
            let best_value = values.iter().flatten().copied().reduce(|a, b| {
                if (lower && b < a) || (!lower && b > a) {
                    b
                } else {
                    a
                }
            });
            let best = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_some() && *v == &best_value)
                .map(|(i, _)| i)
                .collect();
            MetricRow {
                key: k.clone(),
                best_is: if lower { "lowest" } else { "highest" },
                values,
                best,
            }
        })
        .collect();
    Comparison {
        runs,
        params,
        metrics,
    }
}

/// The comparison as table rows: a header of run ids, then names,
/// statuses, params, and metrics with the best marked `*`.
pub fn comparison_rows(c: &Comparison) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut header = vec![String::new()];
    header.extend(c.runs.iter().map(|r| r.id.to_string()));
    rows.push(header);
    let mut name = vec!["name".to_string()];
    name.extend(
        c.runs
            .iter()
            .map(|r| r.name.clone().unwrap_or_else(|| "-".into())),
    );
    rows.push(name);
    let mut status = vec!["status".to_string()];
    status.extend(c.runs.iter().map(|r| r.status.clone()));
    rows.push(status);
    for (k, vs) in &c.params {
        let mut row = vec![format!("param {k}")];
        row.extend(vs.iter().map(|v| v.clone().unwrap_or_else(|| "-".into())));
        rows.push(row);
    }
    for m in &c.metrics {
        let mut row = vec![format!("metric {} ({} best)", m.key, m.best_is)];
        row.extend(m.values.iter().enumerate().map(|(i, v)| match v {
            Some(v) if m.best.contains(&i) => format!("{} *", num(*v)),
            Some(v) => num(*v),
            None => "-".into(),
        }));
        rows.push(row);
    }
    rows
}

/// `weft runs compare RUN RUN…`.
pub(crate) async fn compare(home: &Home, ids: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let mut runs = Vec::new();
    for id in ids {
        let r: RunJson = client.get(&format!("/api/v1/runs/{}", segment(id))).await?;
        runs.push(r);
    }
    let c = compare_runs(runs);
    if json {
        output::json(&c)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = comparison_rows(&c).into_iter();
    let header = rows.next().unwrap_or_default();
    let mut t = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        t.row(r);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft lineage REF [--depth N] [--down]`.
pub(crate) async fn lineage(
    home: &Home,
    reference: &str,
    depth: Option<u32>,
    down: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let mut path = format!(
        "/api/v1/lineage/{}?direction={}",
        segment(reference),
        if down { "down" } else { "up" }
    );
    if let Some(d) = depth {
        path.push_str(&format!("&depth={d}"));
    }
    let g: Graph = client.get(&path).await?;
    if json {
        output::json(&g)?;
    } else {
        print!("{}", render(&g, reference));
    }
    Ok(ExitCode::SUCCESS)
}

/// The graph as an indented tree from its root.
pub fn render(g: &Graph, label: &str) -> String {
    let nodes: BTreeMap<&str, &GraphNode> = g.nodes.iter().map(|n| (n.id(), n)).collect();
    // upstream: artifact → the jobs that made it → their inputs;
    // downstream: artifact → the jobs that read it → their outputs
    let mut next: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for e in &g.edges {
        match g.direction {
            Direction::Up => next
                .entry(e.to.as_str())
                .or_default()
                .push((e.from.as_str(), e.path.as_str())),
            Direction::Down => next
                .entry(e.from.as_str())
                .or_default()
                .push((e.to.as_str(), e.path.as_str())),
        }
    }
    let mut out = String::new();
    let root_note = match nodes.get(g.root.as_str()) {
        Some(GraphNode::Artifact { added: true, .. }) if g.direction == Direction::Up => {
            " (added: no job made it)"
        }
        _ => "",
    };
    if label == g.root {
        let _ = writeln!(out, "{}{root_note}", g.root);
    } else {
        let _ = writeln!(out, "{} {label}{root_note}", g.root);
    }
    let mut shown = BTreeSet::new();
    walk_tree(&mut out, g, &nodes, &next, g.root.as_str(), "", &mut shown);
    if g.truncated {
        let _ = writeln!(out, "(cut: more than {} nodes)", g.nodes.len());
    }
    out
}

fn describe_job(n: &GraphNode) -> String {
    let GraphNode::Job {
        job,
        name,
        pipeline_run,
        step,
        program,
        executor,
        node,
        ..
    } = n
    else {
        return String::new();
    };
    let mut s = format!("job {job}");
    if let Some(name) = name {
        s.push_str(&format!(" ({name})"));
    }
    if let Some(step) = step {
        s.push_str(&format!(", step {step}"));
    }
    if let Some(p) = pipeline_run {
        s.push_str(&format!(" of pipeline run {p}"));
    }
    let what = match executor {
        weft_protocol::sched::ExecutorKind::Wasm => "module",
        weft_protocol::sched::ExecutorKind::Container => "image",
    };
    s.push_str(&format!(", {what} {program}, on {}", short(node)));
    s
}

fn walk_tree<'a>(
    out: &mut String,
    g: &'a Graph,
    nodes: &BTreeMap<&'a str, &'a GraphNode>,
    next: &BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    at: &'a str,
    indent: &str,
    shown: &mut BTreeSet<&'a str>,
) {
    let Some(children) = next.get(at) else { return };
    let up = g.direction == Direction::Up;
    for (i, (child, path)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (branch, more) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let line = match nodes.get(child) {
            Some(n @ GraphNode::Job { .. }) => {
                let verb = if up { "made by" } else { "read by" };
                let how = if up { "stored from" } else { "as" };
                format!("{verb} {} ({how} {path})", describe_job(n))
            }
            Some(GraphNode::Artifact { id, added, more: m }) => {
                let mut s = if up {
                    format!("{path} <- {id}")
                } else {
                    format!("{path} -> {id}")
                };
                if up && *added {
                    s.push_str(" (added)");
                }
                if *m {
                    s.push_str(" (…)");
                }
                s
            }
            None => child.to_string(),
        };
        let seen = !shown.insert(child);
        let _ = writeln!(
            out,
            "{indent}{branch}{line}{}",
            if seen && next.contains_key(child) {
                " (shown above)"
            } else {
                ""
            }
        );
        if !seen {
            walk_tree(
                out,
                g,
                nodes,
                next,
                child,
                &format!("{indent}{more}"),
                shown,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::sched::JobId;

    fn run(id: u32, params: &[(&str, &str)], metrics: &[(&str, f64)]) -> RunJson {
        RunJson {
            id: JobId::new(1, id),
            name: Some(format!("r{id}")),
            experiment: None,
            job: None,
            pipeline_run: None,
            step: None,
            status: "succeeded".into(),
            start_ms: None,
            end_ms: None,
            duration_ms: None,
            node: None,
            cached: false,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: BTreeMap::new(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            metric_history: vec![],
        }
    }

    #[test]
    fn compare_marks_the_best_highest_or_lowest_for_loss_and_error() {
        let c = compare_runs(vec![
            run(
                1,
                &[("lr", "0.1")],
                &[("accuracy", 0.9), ("loss", 0.3), ("val_error", 0.2)],
            ),
            run(
                2,
                &[("lr", "0.5"), ("l2", "0")],
                &[("accuracy", 0.95), ("loss", 0.4)],
            ),
            run(3, &[], &[("accuracy", 0.95), ("val_error", 0.1)]),
        ]);
        let by: BTreeMap<&str, &MetricRow> =
            c.metrics.iter().map(|m| (m.key.as_str(), m)).collect();
        assert_eq!(by["accuracy"].best, vec![1, 2], "a tie marks both");
        assert_eq!(by["accuracy"].best_is, "highest");
        assert_eq!(by["loss"].best, vec![0]);
        assert_eq!(by["loss"].best_is, "lowest");
        assert_eq!(by["val_error"].best, vec![2]);
        assert_eq!(by["val_error"].values, vec![Some(0.2), None, Some(0.1)]);
        assert_eq!(
            c.params["lr"],
            vec![Some("0.1".into()), Some("0.5".into()), None]
        );
        let rows = comparison_rows(&c);
        let acc = rows
            .iter()
            .find(|r| r[0].starts_with("metric accuracy"))
            .expect("row");
        assert_eq!(
            acc[1..],
            ["0.9".to_string(), "0.95 *".into(), "0.95 *".into()]
        );
        let loss = rows
            .iter()
            .find(|r| r[0].starts_with("metric loss"))
            .expect("row");
        assert_eq!(loss[0], "metric loss (lowest best)");
        assert_eq!(loss[1..], ["0.3 *".to_string(), "0.4".into(), "-".into()]);
    }

    #[test]
    fn lineage_renders_as_a_tree_down_to_the_data_added_by_hand() {
        use crate::api::lineage::{Edge, Graph, GraphNode};
        let job = |n: u32, program: &str| GraphNode::Job {
            id: format!("job:{}", JobId::new(1, n)),
            job: JobId::new(1, n),
            name: Some(format!("j{n}")),
            pipeline_run: None,
            step: Some(format!("s{n}")),
            program: program.into(),
            executor: weft_protocol::sched::ExecutorKind::Wasm,
            node: "12D3KooWnodeABCDEFGH".into(),
            params: vec![],
            at_ms: 0,
        };
        let art = |id: &str, added: bool| GraphNode::Artifact {
            id: id.into(),
            added,
            more: false,
        };
        let edge = |from: &str, to: &str, path: &str| Edge {
            from: from.into(),
            to: to.into(),
            path: path.into(),
        };
        let (j1, j2) = (
            format!("job:{}", JobId::new(1, 1)),
            format!("job:{}", JobId::new(1, 2)),
        );
        let g = Graph {
            root: "report".into(),
            direction: Direction::Up,
            depth: 64,
            nodes: vec![
                art("report", false),
                job(2, "evalmod"),
                art("model", false),
                art("raw", true),
                job(1, "trainmod"),
            ],
            edges: vec![
                edge(&j2, "report", "/outputs"),
                edge("model", &j2, "/inputs/model"),
                edge("raw", &j2, "/inputs/data"),
                edge(&j1, "model", "/outputs/model"),
                edge("raw", &j1, "/inputs/data"),
            ],
            truncated: false,
        };
        let text = render(&g, "results/x:v1");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "report results/x:v1");
        assert!(
            lines[1].starts_with(
                "└─ made by job 00000000000100000002 (j2), step s2, module evalmod, on ABCDEFGH"
            ),
            "{text}"
        );
        assert!(text.contains("/inputs/model <- model\n"), "{text}");
        assert!(text.contains("/inputs/data <- raw (added)"), "{text}");
        assert!(text.contains("module trainmod"), "{text}");
        // raw appears under both jobs, its subtree once
        assert_eq!(text.matches("<- raw (added)").count(), 2, "{text}");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(150.0), "150");
        assert_eq!(num(0.93333333), "0.9333");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.5e-7), "1.500e-7");
    }
}
