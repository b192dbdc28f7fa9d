//! Model registry commands: `weft model register|alias|rollback|ls|show`,
//! from any node of the mesh (through the daemon's API).

use std::io::Write;
use std::process::ExitCode;

use super::backend::daemon_client;
use super::output::{self, Table, age};
use crate::api::client::ApiClient;
use crate::home::Home;
use crate::ledger::registry::{AliasMoved, parse_alias_ref};

async fn require_daemon(home: &Home) -> anyhow::Result<ApiClient> {
    daemon_client(home).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no weft daemon is running on {}; start one with `weft daemon` (or `weft devnet up`)",
            home.root().display()
        )
    })
}

/// The last 8 characters of a node id, as `weft job ls` shows them.
fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

fn version(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `weft model register NAME REF`.
pub(crate) async fn register(
    home: &Home,
    name: &str,
    reference: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let r = client.register_model(name, reference).await?;
    if !r.unconfirmed.is_empty() {
        eprintln!(
            "warning: {} live peer(s) did not confirm the registration; its number stands unless one of them registered {} at the same time:",
            r.unconfirmed.len(),
            r.name
        );
        for (peer, why) in &r.unconfirmed {
            eprintln!("  {peer}: {why}");
        }
    }
    if json {
        output::json(&r)?;
    } else {
        println!("{}", r.reference);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_moved(m: &AliasMoved, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(m);
    }
    println!(
        "models/{}@{} -> {} (was {})",
        m.name,
        m.alias,
        version(m.version),
        version(m.from)
    );
    Ok(())
}

/// `weft model alias NAME@ALIAS VERSION`.
pub(crate) async fn alias(
    home: &Home,
    target: &str,
    version: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (name, alias) = parse_alias_ref(target).map_err(|e| anyhow::anyhow!(e))?;
    let number: u64 = version
        .trim_start_matches('v')
        .parse()
        .map_err(|_| anyhow::anyhow!("{version:?} is not a version number (e.g. 3)"))?;
    let client = require_daemon(home).await?;
    let m = client
        .move_alias(name.as_str(), alias.as_str(), number)
        .await?;
    print_moved(&m, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `weft model rollback NAME@ALIAS`.
pub(crate) async fn rollback(home: &Home, target: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (name, alias) = parse_alias_ref(target).map_err(|e| anyhow::anyhow!(e))?;
    let client = require_daemon(home).await?;
    let m = client.rollback_alias(name.as_str(), alias.as_str()).await?;
    print_moved(&m, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `weft model ls`.
pub(crate) async fn ls(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let client = require_daemon(home).await?;
    let models = client.models().await?;
    if json {
        output::json(&models)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["MODEL", "VERSIONS", "LATEST", "ALIASES"]);
    for m in models {
        t.row(vec![
            m.name.to_string(),
            m.versions.to_string(),
            age(m.latest_ms),
            m.aliases
                .iter()
                .filter_map(|(a, v)| v.map(|v| format!("{a}={v}")))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft model show NAME`.
pub(crate) async fn show(home: &Home, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let name = name
        .strip_prefix(weft_protocol::ledger::MODELS_PREFIX)
        .unwrap_or(name);
    let client = require_daemon(home).await?;
    let m = client.model(name).await?;
    if json {
        output::json(&m)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("model {}", m.name);
    let mut t = Table::new(&[
        "VERSION",
        "ARTIFACT",
        "RUN",
        "BY",
        "REGISTERED",
        "ALIASES",
        "METRICS",
    ]);
    for v in &m.versions {
        t.row(vec![
            v.version.version.to_string(),
            v.version.artifact.to_hex()[..16].to_string(),
            v.version
                .run
                .as_ref()
                .map_or_else(|| "-".to_string(), |r| r.to_string()),
            short(&v.version.origin),
            age(v.version.at_ms),
            v.aliases
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            v.metrics
                .iter()
                .map(|(k, x)| format!("{k}={x}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    t.print()?;
    let mut out = std::io::stdout().lock();
    for a in &m.aliases {
        writeln!(
            out,
            "\nalias {}@{} -> {}",
            m.name,
            a.alias,
            version(a.version)
        )?;
        for h in &a.history {
            writeln!(
                out,
                "  {:>4} -> {:<4}  {:<10}  by {}{}",
                version(h.from),
                version(h.version),
                age(h.at_ms),
                short(&h.origin),
                h.reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::{Cli, Command, ModelCmd};

    #[test]
    fn the_command_line_is_consistent_and_parses_model_commands() {
        // clap's own checks (unique argument names, no clash with --version)
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["weft", "model", "alias", "iris@champion", "3", "--json"])
            .expect("parse");
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Model(ModelCmd::Alias { ref target, ref number })
                if target == "iris@champion" && number == "3"
        ));
    }

    #[test]
    fn node_ids_are_shortened_to_their_tail() {
        assert_eq!(super::short("12D3KooWabcdefgh"), "abcdefgh");
        assert_eq!(super::short("abc"), "abc");
    }
}
