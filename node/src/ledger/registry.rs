//! The model registry: what `weft model register|alias|rollback|ls|show`
//! and `/api/v1/models/...` do, on top of the ledger.
//!
//! A registration names its artifact as the user typed it: an id, a tag,
//! another model's version (`models/OTHER@alias`, `models/OTHER:3`), or a
//! run's output (`JOB_ID:/outputs/model`, looked up in the job's result).
//! It is numbered through [`LedgerHandle::register_model`]'s barrier and
//! pinned on the registering node, so garbage collection keeps it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_protocol::Hash;
use weft_protocol::ledger::{AliasName, ModelName};
use weft_protocol::sched::{JobId, JobState};

use super::{LedgerError, LedgerHandle};
use crate::sched::SchedHandle;
use crate::store::ledger::{AliasMoveView, ModelVersionView};
use crate::store::{Store, StoreError};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The user's input names nothing usable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// What was named does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the registry task failed: {0}")]
    Task(String),
}

/// A version just registered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    #[schema(value_type = String)]
    pub name: ModelName,
    pub version: u64,
    /// `models/NAME:N`.
    pub reference: String,
    #[schema(value_type = String)]
    pub artifact: Hash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub run: Option<JobId>,
    /// Live peers that did not confirm the entry, with why (the number is
    /// final when empty): `[peer, why]` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Vec<String>>)]
    pub unconfirmed: Vec<(String, String)>,
}

/// An alias moved.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AliasMoved {
    #[schema(value_type = String)]
    pub name: ModelName,
    #[schema(value_type = String)]
    pub alias: AliasName,
    pub version: Option<u64>,
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who moved it, and when.
    pub origin: String,
    pub at_ms: u64,
}

/// One model in `weft model ls`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelSummary {
    #[schema(value_type = String)]
    pub name: ModelName,
    pub versions: u64,
    /// Each alias and the version it points at (none: removed), as
    /// `[alias, version]` pairs.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub aliases: Vec<(AliasName, Option<u64>)>,
    /// When the newest version was registered.
    pub latest_ms: u64,
}

/// One version in `weft model show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionDetail {
    #[serde(flatten)]
    pub version: ModelVersionView,
    /// The run's last value of each metric, when the ledger has the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Aliases pointing at it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<AliasName>,
}

/// One alias in `weft model show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasDetail {
    pub alias: AliasName,
    pub version: Option<u64>,
    /// Every move, oldest first.
    pub history: Vec<AliasMoveView>,
}

/// `weft model show NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelDetail {
    pub name: ModelName,
    pub versions: Vec<VersionDetail>,
    pub aliases: Vec<AliasDetail>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))?
}

/// Reads `JOB_ID:/path` (a run's output); `None` for anything else.
pub fn parse_run_output(reference: &str) -> Option<(JobId, String)> {
    let (job, path) = reference.split_once(':')?;
    if !path.starts_with('/') {
        return None;
    }
    Some((job.parse().ok()?, path.to_string()))
}

/// The artifact `reference` names, and the run that made it when known.
pub async fn resolve_source(
    store: &Store,
    sched: Option<&SchedHandle>,
    reference: &str,
) -> Result<(Hash, Option<JobId>), RegistryError> {
    if let Some((job, path)) = parse_run_output(reference) {
        let sched = sched.ok_or_else(|| {
            RegistryError::Invalid(format!(
                "{reference}: this node runs no scheduler to ask for job {job}"
            ))
        })?;
        let status = sched
            .status(job.clone())
            .await
            .map_err(|e| RegistryError::NotFound(format!("{reference}: {e}")))?;
        if status.state != JobState::Succeeded {
            return Err(RegistryError::Invalid(format!(
                "{reference}: job {job} is {}, not succeeded; register a run's output once it has succeeded",
                status.state
            )));
        }
        let outputs = status.result.map(|r| r.outputs).unwrap_or_default();
        let want = path.trim_end_matches('/');
        return outputs
            .iter()
            .find(|(p, _)| p.trim_end_matches('/') == want)
            .map(|(_, h)| (*h, Some(job.clone())))
            .ok_or_else(|| {
                let have: Vec<&str> = outputs.iter().map(|(p, _)| p.as_str()).collect();
                RegistryError::NotFound(format!(
                    "{reference}: job {job} has no output {path} (its outputs: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ))
            });
    }
    let store = store.clone();
    let reference = reference.to_string();
    blocking(move || {
        let h = store.resolve_str(&reference)?;
        // the run that made it, when its lineage is known here
        let run = store.lineage_of(&h)?.into_iter().next().map(|l| l.job);
        Ok((h, run))
    })
    .await
}

/// `weft model register NAME REF`: the next version of `name`, pinned here.
pub async fn register(
    ledger: &LedgerHandle,
    sched: Option<&SchedHandle>,
    name: ModelName,
    reference: &str,
) -> Result<Registration, RegistryError> {
    let (artifact, run) = resolve_source(ledger.store(), sched, reference).await?;
    let registered = ledger
        .register_model(
            name.clone(),
            artifact,
            run.clone(),
            Some(reference.to_string()),
        )
        .await?;
    let store = ledger.store().clone();
    blocking(move || {
        // keep an existing pin's replica count
        if !store.list_pins()?.iter().any(|p| p.id == artifact) {
            store.pin(&artifact, 1)?;
        }
        Ok(())
    })
    .await?;
    tracing::info!(model = %name, version = registered.version, %artifact, "model version registered");
    Ok(Registration {
        reference: format!("models/{name}:{}", registered.version),
        name,
        version: registered.version,
        artifact,
        run,
        unconfirmed: registered.unconfirmed,
    })
}

fn moved(name: ModelName, alias: AliasName, entry: &weft_protocol::ledger::Entry) -> AliasMoved {
    let (version, from, reason) = match &entry.body {
        weft_protocol::ledger::EntryBody::Alias(a) => (a.version, a.from, a.reason.clone()),
        _ => (None, None, None),
    };
    AliasMoved {
        name,
        alias,
        version,
        from,
        reason,
        origin: entry.origin.clone(),
        at_ms: entry.hlc.wall_ms,
    }
}

/// `weft model alias NAME@ALIAS VERSION`.
pub async fn set_alias(
    ledger: &LedgerHandle,
    name: ModelName,
    alias: AliasName,
    version: u64,
) -> Result<AliasMoved, RegistryError> {
    let entry = ledger
        .move_alias(name.clone(), alias.clone(), Some(version), None)
        .await
        .map_err(|e| match e {
            LedgerError::Invalid(m) => RegistryError::NotFound(m),
            e => e.into(),
        })?;
    Ok(moved(name, alias, &entry))
}

/// Where a rollback of an alias with `history` goes: the `from` of its last
/// move, else the version of the move before it.
pub fn rollback_target(history: &[AliasMoveView]) -> Option<u64> {
    let last = history.last()?;
    last.from
        .or_else(|| {
            history
                .len()
                .checked_sub(2)
                .and_then(|i| history[i].version)
        })
        .filter(|v| Some(*v) != last.version)
}

/// `weft model rollback NAME@ALIAS`: back to where it pointed before its
/// last move.
pub async fn rollback(
    ledger: &LedgerHandle,
    name: ModelName,
    alias: AliasName,
) -> Result<AliasMoved, RegistryError> {
    let store = ledger.store().clone();
    let (n, a) = (name.clone(), alias.clone());
    let history = blocking(move || Ok(store.alias_history(&n, &a)?)).await?;
    if history.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "models/{name}@{alias} was never set; set it with `weft model alias {name}@{alias} VERSION`"
        )));
    }
    let target = rollback_target(&history).ok_or_else(|| {
        RegistryError::Invalid(format!(
            "models/{name}@{alias} has no earlier position to roll back to; move it with `weft model alias {name}@{alias} VERSION`"
        ))
    })?;
    let entry = ledger
        .move_alias(
            name.clone(),
            alias.clone(),
            Some(target),
            Some("rollback".into()),
        )
        .await
        .map_err(|e| match e {
            LedgerError::Invalid(m) => RegistryError::NotFound(m),
            e => e.into(),
        })?;
    Ok(moved(name, alias, &entry))
}

/// `weft model ls`.
pub fn list(store: &Store) -> Result<Vec<ModelSummary>, StoreError> {
    let mut out = Vec::new();
    for name in store.model_names()? {
        let versions = store.model_versions(&name)?;
        out.push(ModelSummary {
            versions: versions.len() as u64,
            latest_ms: versions.iter().map(|v| v.at_ms).max().unwrap_or(0),
            aliases: store.model_aliases(&name)?,
            name,
        });
    }
    Ok(out)
}

/// `weft model show NAME`.
pub fn show(store: &Store, name: &ModelName) -> Result<ModelDetail, StoreError> {
    let versions = store.model_versions(name)?;
    if versions.is_empty() {
        return Err(StoreError::NotFound(format!(
            "models/{name}: no such model (`weft model ls` lists them)"
        )));
    }
    let mut aliases = Vec::new();
    for (alias, version) in store.model_aliases(name)? {
        let history = store.alias_history(name, &alias)?;
        aliases.push(AliasDetail {
            alias,
            version,
            history,
        });
    }
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let metrics = match &v.run {
            Some(run) => store
                .run_view(run)?
                .map(|r| r.latest_metrics())
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let here: Vec<AliasName> = aliases
            .iter()
            .filter(|a| a.version == Some(v.version))
            .map(|a| a.alias.clone())
            .collect();
        out.push(VersionDetail {
            version: v,
            metrics,
            aliases: here,
        });
    }
    Ok(ModelDetail {
        name: name.clone(),
        versions: out,
        aliases,
    })
}

/// Reads `NAME@ALIAS`.
pub fn parse_alias_ref(s: &str) -> Result<(ModelName, AliasName), String> {
    let s = s
        .strip_prefix(weft_protocol::ledger::MODELS_PREFIX)
        .unwrap_or(s);
    let (name, alias) = s
        .rsplit_once('@')
        .ok_or_else(|| format!("{s:?} names no alias: write NAME@ALIAS (e.g. iris@champion)"))?;
    Ok((ModelName::new(name)?, AliasName::new(alias)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hlc;

    fn mv(version: Option<u64>, from: Option<u64>) -> AliasMoveView {
        AliasMoveView {
            version,
            from,
            reason: None,
            origin: "n".into(),
            at_ms: 1,
            hlc: Hlc::default(),
        }
    }

    #[test]
    fn rollback_goes_to_where_the_alias_was() {
        assert_eq!(rollback_target(&[]), None);
        // set once: nowhere to go back to
        assert_eq!(rollback_target(&[mv(Some(1), None)]), None);
        assert_eq!(
            rollback_target(&[mv(Some(1), None), mv(Some(3), Some(1))]),
            Some(1)
        );
        // a move whose writer had not seen the earlier one: the previous move
        assert_eq!(
            rollback_target(&[mv(Some(2), None), mv(Some(3), None)]),
            Some(2)
        );
        // a rollback of a rollback goes forward again
        assert_eq!(
            rollback_target(&[
                mv(Some(1), None),
                mv(Some(3), Some(1)),
                mv(Some(1), Some(3))
            ]),
            Some(3)
        );
    }

    #[test]
    fn references() {
        let job = "0000000000000000000a";
        assert_eq!(
            parse_run_output(&format!("{job}:/outputs/model")),
            Some((job.parse().expect("id"), "/outputs/model".into()))
        );
        assert_eq!(parse_run_output("datasets/iris:v1"), None);
        assert_eq!(parse_run_output(&format!("{job}:v1")), None);
        let (n, a) = parse_alias_ref("models/iris@champion").expect("alias ref");
        assert_eq!((n.as_str(), a.as_str()), ("iris", "champion"));
        assert!(parse_alias_ref("iris").is_err());
        assert!(parse_alias_ref("iris@3").is_err());
    }
}
