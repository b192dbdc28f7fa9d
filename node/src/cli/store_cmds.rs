//! Artifact commands: add, get, cat, ls, tag, pin, gc, store verify.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use weft_protocol::TagName;

use super::output::{self, Bar, Table, human_bytes};
use super::{Command, PinCmd, StoreCmd, TagCmd};
use crate::home::Home;
use crate::store::{AddOptions, ExportOptions, Store};

/// Opens the home's store directly (no daemon).
pub(crate) fn open_local(home: &Home) -> anyhow::Result<Store> {
    home.ensure()?;
    let origin = home.identity()?.public().to_peer_id().to_string();
    Ok(Store::open(&home.store_dir(), &origin)?)
}

fn tag_name(s: &str) -> anyhow::Result<TagName> {
    Ok(TagName::new(s)?)
}

pub(crate) fn run(home: &Home, json: bool, command: Command) -> anyhow::Result<ExitCode> {
    let store = open_local(home)?;
    match command {
        Command::Add {
            path,
            tag,
            follow_symlinks,
            no_pin,
        } => {
            let tag = tag.as_deref().map(tag_name).transpose()?;
            let bar = Bar::bytes("adding");
            let out = store.add_path(&path, &AddOptions { follow_symlinks }, &bar);
            bar.finish();
            let out = out?;
            if !no_pin {
                store.pin(&out.id, 1)?;
            }
            if let Some(t) = &tag {
                store.set_tag(t, Some(out.id))?;
            }
            store.flush()?;
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
            let id = store.resolve_str(&reference)?;
            let bar = Bar::bytes("writing");
            let r = store.export(&id, &dest, ExportOptions { force, link: false }, &bar);
            bar.finish();
            r?;
            if json {
                output::json(&serde_json::json!({ "id": id, "path": dest }))?;
            }
        }
        Command::Cat { reference } => {
            let id = store.resolve_str(&reference)?;
            if store.is_tree(&id)? {
                return Err(crate::store::StoreError::IsTree(id).into());
            }
            let mut f = store.open_blob(&id)?;
            let mut out = std::io::stdout().lock();
            match std::io::copy(&mut f, &mut out) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("writing to stdout"),
            }
            let _ = out.flush();
        }
        Command::Ls { all } => {
            let items = store.list(all)?;
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
        Command::Tag(cmd) => tag_cmd(&store, json, cmd)?,
        Command::Pin(cmd) => pin_cmd(&store, json, cmd)?,
        Command::Gc => {
            let report = store.gc(&[])?;
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
        Command::Store(StoreCmd::Verify) => {
            let problems = store.verify()?;
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

fn tag_cmd(store: &Store, json: bool, cmd: TagCmd) -> anyhow::Result<()> {
    match cmd {
        TagCmd::Set { name, reference } => {
            let name = tag_name(&name)?;
            let id = store.resolve_str(&reference)?;
            let v = store.set_tag(&name, Some(id))?;
            store.flush()?;
            if json {
                output::json(&v)?;
            }
        }
        TagCmd::Ls => {
            let tags = store.list_tags()?;
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
            let history = store.tag_history(&tag_name(&name)?)?;
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
        TagCmd::Rm { name } => {
            store.remove_tag(&tag_name(&name)?)?;
            store.flush()?;
        }
    }
    Ok(())
}

fn pin_cmd(store: &Store, json: bool, cmd: PinCmd) -> anyhow::Result<()> {
    match cmd {
        PinCmd::Add {
            reference,
            replicas,
        } => {
            let id = store.resolve_str(&reference)?;
            if !store.has(&id)? {
                return Err(crate::store::StoreError::Missing(id).into());
            }
            store.pin(&id, replicas)?;
        }
        PinCmd::Rm { reference } => {
            let id = store.resolve_str(&reference)?;
            if !store.unpin(&id)? {
                anyhow::bail!("{id} is not pinned");
            }
        }
        PinCmd::Ls => {
            let pins = store.list_pins()?;
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
