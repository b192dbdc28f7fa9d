//! Artifact commands: add, get, cat, ls, tag, pin, gc, store verify.

use std::process::ExitCode;

use weft_protocol::TagName;

use super::backend::Backend;
use super::output::{self, Table, human_bytes};
use super::{Command, ImageCmd, PinCmd, StoreCmd, TagCmd};

fn tag_name(s: &str) -> anyhow::Result<TagName> {
    Ok(TagName::new(s)?)
}

pub(crate) async fn run(
    backend: &Backend,
    json: bool,
    command: Command,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add {
            path,
            tag,
            follow_symlinks,
            no_pin,
        } => {
            let tag = tag.as_deref().map(tag_name).transpose()?;
            let out = backend
                .add(&path, follow_symlinks, tag.as_ref(), !no_pin)
                .await?;
            if json {
                output::json(&out)?;
            } else {
                println!("{}", out.id);
            }
        }
        Command::Get {
            reference,
            output: dest,
            force,
        } => {
            let id = backend.export(&reference, &dest, force).await?;
            if json {
                output::json(&serde_json::json!({ "id": id, "path": dest }))?;
            }
        }
        Command::Cat { reference } => {
            let mut out = std::io::stdout().lock();
            backend.cat(&reference, &mut out).await?;
        }
        Command::Ls { all } => {
            let items = backend.list(all).await?;
            if json {
                output::json(&items)?;
            } else {
                let mut t = Table::new(&["ID", "KIND", "SIZE", "PINNED", "TAGS"]);
                for a in items {
                    t.row(vec![
                        a.id.short(16),
                        a.kind.to_string(),
                        human_bytes(a.size),
                        if a.pinned { "yes" } else { "" }.to_string(),
                        a.tags.join(", "),
                    ]);
                }
                t.print()?;
            }
        }
        Command::Tag(cmd) => tag_cmd(backend, json, cmd).await?,
        Command::Image(ImageCmd::Import {
            archive,
            tag,
            allow_devices,
        }) => {
            let tag = tag.as_deref().map(tag_name).transpose()?;
            let out = backend
                .import_image(&archive, tag.as_ref(), allow_devices)
                .await?;
            if json {
                output::json(&out)?;
            } else {
                println!("{}", out.id);
            }
        }
        Command::Pin(cmd) => pin_cmd(backend, json, cmd).await?,
        Command::Gc => {
            let report = backend.gc().await?;
            if json {
                output::json(&report)?;
            } else {
                println!(
                    "removed {} blobs ({}), kept {}, {} orphan files",
                    report.removed,
                    human_bytes(report.freed_bytes),
                    report.kept,
                    report.orphan_files
                );
            }
        }
        Command::Daemon(_)
        | Command::Init { .. }
        | Command::Peers
        | Command::Run { .. }
        | Command::Job(_)
        | Command::Pipeline(_)
        | Command::Service(_)
        | Command::Runs(_)
        | Command::Lineage { .. }
        | Command::Model(_)
        | Command::Node
        | Command::Devnet(_)
        | Command::S3(_) => {
            anyhow::bail!("not an artifact command")
        }
        Command::Store(StoreCmd::Verify) => {
            let problems = backend.verify().await?;
            if json {
                output::json(&problems)?;
            } else {
                for p in &problems {
                    println!("{}  {}", p.id, p.problem);
                }
            }
            if !problems.is_empty() {
                eprintln!("error: {} blobs failed verification", problems.len());
                return Ok(ExitCode::FAILURE);
            }
            if !json {
                println!("ok");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tag_cmd(backend: &Backend, json: bool, cmd: TagCmd) -> anyhow::Result<()> {
    match cmd {
        TagCmd::Set { name, reference } => {
            let v = backend.set_tag(&tag_name(&name)?, &reference).await?;
            if json {
                output::json(&v)?;
            }
        }
        TagCmd::Ls => {
            let tags = backend.list_tags().await?;
            if json {
                output::json(&tags)?;
            } else {
                let mut t = Table::new(&["NAME", "ID", "SET"]);
                for tag in tags {
                    t.row(vec![tag.name, tag.id.short(16), output::age(tag.set_ms)]);
                }
                t.print()?;
            }
        }
        TagCmd::History { name } => {
            let history = backend.tag_history(&tag_name(&name)?).await?;
            if json {
                output::json(&history)?;
            } else {
                let mut t = Table::new(&["SET", "ID", "BY"]);
                for v in history.iter().rev() {
                    t.row(vec![
                        output::age(v.hlc.wall_ms),
                        v.target
                            .map(|h| h.to_string())
                            .unwrap_or_else(|| "(removed)".into()),
                        v.origin.clone(),
                    ]);
                }
                t.print()?;
            }
        }
        TagCmd::Rm { name } => backend.remove_tag(&tag_name(&name)?).await?,
    }
    Ok(())
}

async fn pin_cmd(backend: &Backend, json: bool, cmd: PinCmd) -> anyhow::Result<()> {
    match cmd {
        PinCmd::Add {
            reference,
            replicas,
        } => {
            let id = backend.pin(&reference, replicas).await?;
            if json {
                output::json(&serde_json::json!({ "id": id, "replicas": replicas }))?;
            }
        }
        PinCmd::Rm { reference } => backend.unpin(&reference).await?,
        PinCmd::Ls => {
            let pins = backend.list_pins().await?;
            if json {
                output::json(&pins)?;
            } else {
                let mut t = Table::new(&["ID", "REPLICAS", "PINNED"]);
                for p in pins {
                    t.row(vec![
                        p.id.to_string(),
                        p.replicas.to_string(),
                        output::age(p.created_ms),
                    ]);
                }
                t.print()?;
            }
        }
    }
    Ok(())
}
