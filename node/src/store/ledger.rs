//! The ledger's storage and its views (see `weft_protocol::ledger`).
//!
//! Entries live in the sled tree `ledger`, keyed by [`Entry::key`] (kind,
//! subject, clock, writer), each value a versioned record holding the
//! entry. Entries are immutable: storing one whose key is present changes
//! nothing. Every view is a fold over one subject's entries in key order,
//! so nodes holding the same entries show the same thing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_protocol::ledger::{
    AliasMove, AliasName, Entry, EntryBody, EntryKind, Lineage, Metric, ModelName, ModelSelector,
    ModelVersion, PipelineRunRecord, RunEnd, RunEvent, RunStart, subject_prefix,
};
use weft_protocol::sched::JobId;
use weft_protocol::{Hash, Hlc};

use super::records::{Record, RecordError};
use super::{Result, Store, StoreError};

/// An entry as stored: `{v: 1, entry}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub v: u8,
    pub entry: Entry,
}

/// The version of ledger records this code writes.
pub const LEDGER_V: u8 = 1;

impl Record for LedgerRecord {
    const WHAT: &'static str = "ledger entry";
    const VERSION: u8 = LEDGER_V;
}

/// One numbered version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersionView {
    pub name: ModelName,
    pub version: u64,
    pub artifact: Hash,
    pub run: Option<JobId>,
    pub source: Option<String>,
    /// Who registered it, and when.
    pub origin: String,
    pub at_ms: u64,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMoveView {
    pub version: Option<u64>,
    pub from: Option<u64>,
    pub reason: Option<String>,
    /// Who moved it, and when.
    pub origin: String,
    pub at_ms: u64,
    pub hlc: Hlc,
}

/// A run: its events folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: JobId,
    pub start: Option<RunStart>,
    /// First value of each param wins (params are write-once).
    pub params: BTreeMap<String, String>,
    /// Every point, in the order written.
    pub metrics: Vec<Metric>,
    /// Last value of each tag wins.
    pub tags: BTreeMap<String, String>,
    pub end: Option<RunEnd>,
}

impl RunView {
    /// The last value of each metric (the highest step, then the latest written).
    pub fn latest_metrics(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for m in &self.metrics {
            match out.get(&m.key) {
                Some((step, _)) if *step > m.step => {}
                _ => {
                    out.insert(m.key.clone(), (m.step, m.value));
                }
            }
        }
        out.into_iter().map(|(k, (_, v))| (k, v)).collect()
    }

    fn fold(&mut self, e: &RunEvent) {
        if self.start.is_none() {
            self.start = e.start.clone();
        }
        for (k, v) in &e.params {
            self.params.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self.metrics.extend(e.metrics.iter().cloned());
        for (k, v) in &e.tags {
            self.tags.insert(k.clone(), v.clone());
        }
        if self.end.is_none() {
            self.end = e.end.clone();
        }
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<Entry, RecordError> {
    LedgerRecord::from_bytes(bytes).map(|r| r.entry)
}

impl Store {
    /// This node's id, the writer of the entries it appends.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    fn ledger(&self) -> &sled::Tree {
        &self.inner.ledger
    }

    /// Writes a new entry by this node, at a clock reading later than every
    /// entry of its subject this node holds.
    pub fn ledger_append(&self, body: EntryBody) -> Result<Entry> {
        let prefix = subject_prefix(body.kind(), &body.subject());
        if let Some(Ok((_, last))) = self.ledger().scan_prefix(&prefix).next_back()
            && let Ok(last) = decode(&last)
        {
            let mut hlc = self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner());
            *hlc = Hlc::observe(*hlc, last.hlc);
        }
        let entry = Entry {
            hlc: self.next_hlc(),
            origin: self.inner.origin.clone(),
            body,
        };
        self.ledger_insert(&entry)?;
        let _ = self.inner.ledger_local.send(entry.clone());
        Ok(entry)
    }

    /// Stores an entry from a peer (already checked by the caller); `false`
    /// when it was here already.
    pub fn ledger_merge(&self, entry: &Entry) -> Result<bool> {
        {
            let mut hlc = self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner());
            *hlc = Hlc::observe(*hlc, entry.hlc);
        }
        self.ledger_insert(entry)
    }

    fn ledger_insert(&self, entry: &Entry) -> Result<bool> {
        let record = LedgerRecord {
            v: LEDGER_V,
            entry: entry.clone(),
        };
        let bytes = record.to_bytes().map_err(|source| StoreError::Record {
            key: "ledger entry".to_string(),
            source,
        })?;
        let fresh = self
            .ledger()
            .compare_and_swap(entry.key(), None::<&[u8]>, Some(bytes))?
            .is_ok();
        if fresh {
            let _ = self.inner.ledger_stored.send(entry.clone());
        }
        Ok(fresh)
    }

    /// Entries this node writes from now on (for gossip).
    pub fn subscribe_ledger_local(&self) -> tokio::sync::broadcast::Receiver<Entry> {
        self.inner.ledger_local.subscribe()
    }

    /// Every entry stored here from now on, written here or by a peer.
    pub fn subscribe_ledger(&self) -> tokio::sync::broadcast::Receiver<Entry> {
        self.inner.ledger_stored.subscribe()
    }

    /// The entries of one subject, in `(hlc, origin)` order.
    pub fn ledger_subject(&self, kind: EntryKind, subject: &str) -> Result<Vec<Entry>> {
        self.ledger_scan(&subject_prefix(kind, subject))
    }

    /// Every entry of one kind, in key order (subjects together).
    pub fn ledger_kind(&self, kind: EntryKind) -> Result<Vec<Entry>> {
        self.ledger_scan(&[kind as u8])
    }

    fn ledger_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for kv in self.ledger().scan_prefix(prefix) {
            let (k, v) = kv?;
            match decode(&v) {
                Ok(e) => out.push(e),
                Err(error) => {
                    tracing::warn!(key = %hex::encode(&k), %error, "unreadable ledger entry skipped")
                }
            }
        }
        Ok(out)
    }

    /// Entries whose keys follow `after`, at most `limit`; and whether more follow.
    pub fn ledger_page(&self, after: Option<&[u8]>, limit: usize) -> Result<(Vec<Entry>, bool)> {
        let range = match after {
            Some(a) => self
                .ledger()
                .range::<&[u8], _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.ledger().iter(),
        };
        let mut out = Vec::new();
        for kv in range {
            let (k, v) = kv?;
            if out.len() == limit {
                return Ok((out, true));
            }
            match decode(&v) {
                Ok(e) => out.push(e),
                Err(error) => {
                    tracing::warn!(key = %hex::encode(&k), %error, "unreadable ledger entry skipped")
                }
            }
        }
        Ok((out, false))
    }

    // ---- models --------------------------------------------------------------

    /// A model's versions, numbered from 1 in `(hlc, origin)` order.
    pub fn model_versions(&self, name: &ModelName) -> Result<Vec<ModelVersionView>> {
        let entries = self.ledger_subject(EntryKind::ModelVersion, name.as_str())?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e.body {
                EntryBody::ModelVersion(v) => Some((e.hlc, e.origin, v)),
                _ => None,
            })
            .enumerate()
            .map(|(i, (hlc, origin, v))| version_view(i as u64 + 1, hlc, origin, v))
            .collect())
    }

    /// The number of the version `entry` wrote, among its model's versions here.
    pub fn model_version_number(&self, entry: &Entry) -> Result<Option<u64>> {
        let EntryBody::ModelVersion(v) = &entry.body else {
            return Ok(None);
        };
        let all = self.ledger_subject(EntryKind::ModelVersion, v.name.as_str())?;
        Ok(all
            .iter()
            .position(|e| e.hlc == entry.hlc && e.origin == entry.origin)
            .map(|i| i as u64 + 1))
    }

    /// Every registered model's name.
    pub fn model_names(&self) -> Result<Vec<ModelName>> {
        let mut names: Vec<ModelName> = Vec::new();
        for e in self.ledger_kind(EntryKind::ModelVersion)? {
            if let EntryBody::ModelVersion(v) = e.body
                && names.last() != Some(&v.name)
            {
                names.push(v.name);
            }
        }
        Ok(names)
    }

    /// An alias's moves, oldest first; the last is where it points now.
    pub fn alias_history(&self, name: &ModelName, alias: &AliasName) -> Result<Vec<AliasMoveView>> {
        let subject = weft_protocol::ledger::alias_subject(name, alias);
        Ok(self
            .ledger_subject(EntryKind::Alias, &subject)?
            .into_iter()
            .filter_map(|e| match e.body {
                EntryBody::Alias(AliasMove {
                    version,
                    from,
                    reason,
                    ..
                }) => Some(AliasMoveView {
                    version,
                    from,
                    reason,
                    origin: e.origin,
                    at_ms: e.hlc.wall_ms,
                    hlc: e.hlc,
                }),
                _ => None,
            })
            .collect())
    }

    /// Every alias of a model and the version it points at now.
    pub fn model_aliases(&self, name: &ModelName) -> Result<Vec<(AliasName, Option<u64>)>> {
        let prefix_subject = format!("{name}@");
        let mut prefix = vec![EntryKind::Alias as u8];
        prefix.extend_from_slice(prefix_subject.as_bytes());
        let mut out: Vec<(AliasName, Option<u64>)> = Vec::new();
        for e in self.ledger_scan(&prefix)? {
            if let EntryBody::Alias(a) = e.body
                && a.name == *name
            {
                match out.last_mut() {
                    Some((alias, v)) if *alias == a.alias => *v = a.version,
                    _ => out.push((a.alias, a.version)),
                }
            }
        }
        Ok(out)
    }

    /// The artifact a model reference names.
    pub fn resolve_model(&self, name: &ModelName, selector: &ModelSelector) -> Result<Hash> {
        let versions = self.model_versions(name)?;
        if versions.is_empty() {
            return Err(StoreError::NotFound(format!(
                "models/{name}: no such model (`weft model ls` lists them)"
            )));
        }
        let number = match selector {
            ModelSelector::Version(n) => *n,
            ModelSelector::Alias(alias) => self
                .alias_history(name, alias)?
                .last()
                .and_then(|m| m.version)
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "models/{name}@{alias}: the model has no alias {alias} \
                         (set one with `weft model alias {name}@{alias} VERSION`)"
                    ))
                })?,
        };
        versions
            .iter()
            .find(|v| v.version == number)
            .map(|v| v.artifact)
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "models/{name}:{number}: the model has versions 1 to {}",
                    versions.len()
                ))
            })
    }

    // ---- runs ----------------------------------------------------------------

    /// One run, folded; `None` when no entry names it.
    pub fn run_view(&self, id: &JobId) -> Result<Option<RunView>> {
        let entries = self.ledger_subject(EntryKind::Run, id.as_str())?;
        Ok(fold_runs(entries).into_iter().next())
    }

    /// Every run this node knows, oldest id first.
    pub fn run_views(&self) -> Result<Vec<RunView>> {
        Ok(fold_runs(self.ledger_kind(EntryKind::Run)?))
    }

    // ---- lineage ---------------------------------------------------------------

    /// What made `artifact`, as every coordinator that stored it said.
    pub fn lineage_of(&self, artifact: &Hash) -> Result<Vec<Lineage>> {
        Ok(self
            .ledger_subject(EntryKind::Lineage, &artifact.to_hex())?
            .into_iter()
            .filter_map(|e| match e.body {
                EntryBody::Lineage(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Lineage records of the artifacts made from `input`.
    pub fn derived_from(&self, input: &Hash) -> Result<Vec<Lineage>> {
        Ok(self
            .ledger_kind(EntryKind::Lineage)?
            .into_iter()
            .filter_map(|e| match e.body {
                EntryBody::Lineage(l) if l.inputs.iter().any(|(h, _)| h == input) => Some(l),
                _ => None,
            })
            .collect())
    }

    // ---- pipeline runs -----------------------------------------------------------

    /// A pipeline run's newest entry that [`coordinators_own`] (the run as
    /// its coordinator last wrote it).
    pub fn pipeline_run_entry(&self, id: &JobId) -> Result<Option<Entry>> {
        Ok(self
            .ledger_subject(EntryKind::PipelineRun, id.as_str())?
            .into_iter()
            .rfind(coordinators_own))
    }

    /// A pipeline run as its coordinator last wrote it.
    pub fn pipeline_run(&self, id: &JobId) -> Result<Option<PipelineRunRecord>> {
        Ok(self.pipeline_run_entry(id)?.and_then(|e| match e.body {
            EntryBody::PipelineRun(p) => Some(p),
            _ => None,
        }))
    }

    /// Every pipeline run this node knows, each as its coordinator last
    /// wrote it, oldest first.
    pub fn pipeline_runs(&self) -> Result<Vec<PipelineRunRecord>> {
        let mut out: Vec<PipelineRunRecord> = Vec::new();
        for e in self.ledger_kind(EntryKind::PipelineRun)? {
            if !coordinators_own(&e) {
                continue;
            }
            if let EntryBody::PipelineRun(p) = e.body {
                match out.last_mut() {
                    Some(last) if last.id == p.id => *last = p,
                    _ => out.push(p),
                }
            }
        }
        Ok(out)
    }
}

/// Whether a pipeline run's entry counts for its view: only its
/// coordinator's do (peers refuse the others; one written here by another
/// hand is ignored).
pub fn coordinators_own(e: &Entry) -> bool {
    match &e.body {
        EntryBody::PipelineRun(p) => p.coordinator == e.origin,
        _ => false,
    }
}

fn version_view(version: u64, hlc: Hlc, origin: String, v: ModelVersion) -> ModelVersionView {
    ModelVersionView {
        name: v.name,
        version,
        artifact: v.artifact,
        run: v.run,
        source: v.source,
        origin,
        at_ms: hlc.wall_ms,
    }
}

/// Folds run events (in key order, so each run's together) into views.
fn fold_runs(entries: Vec<Entry>) -> Vec<RunView> {
    let mut out: Vec<RunView> = Vec::new();
    for e in entries {
        let EntryBody::Run(r) = e.body else { continue };
        match out.last_mut() {
            Some(view) if view.id == r.run => view.fold(&r),
            _ => {
                let mut view = RunView {
                    id: r.run.clone(),
                    start: None,
                    params: BTreeMap::new(),
                    metrics: Vec::new(),
                    tags: BTreeMap::new(),
                    end: None,
                };
                view.fold(&r);
                out.push(view);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::ledger::{AliasName, ModelName, ModelSelector};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), "12D3KooWA").expect("open");
        (dir, s)
    }

    fn version(name: &str, artifact: Hash) -> EntryBody {
        EntryBody::ModelVersion(ModelVersion {
            name: ModelName::new(name).expect("name"),
            artifact,
            run: None,
            source: None,
        })
    }

    #[test]
    fn versions_are_numbered_by_clock_and_merges_are_idempotent() {
        let (_d, s) = store();
        let a = s
            .ledger_append(version("iris", Hash::of(b"a")))
            .expect("append");
        // a rival written elsewhere earlier (lower clock) takes number 1
        let rival = Entry {
            hlc: Hlc {
                wall_ms: a.hlc.wall_ms - 1,
                counter: 0,
            },
            origin: "12D3KooWB".into(),
            body: version("iris", Hash::of(b"b")),
        };
        assert!(s.ledger_merge(&rival).expect("merge"));
        assert!(!s.ledger_merge(&rival).expect("merge again"));
        let name = ModelName::new("iris").expect("name");
        let vs = s.model_versions(&name).expect("versions");
        assert_eq!(vs.len(), 2);
        assert_eq!((vs[0].version, vs[0].artifact), (1, Hash::of(b"b")));
        assert_eq!((vs[1].version, vs[1].artifact), (2, Hash::of(b"a")));
        assert_eq!(s.model_version_number(&a).expect("number"), Some(2));
        // another model's versions are apart
        s.ledger_append(version("iris2", Hash::of(b"c")))
            .expect("append");
        assert_eq!(s.model_versions(&name).expect("versions").len(), 2);
        assert_eq!(s.model_names().expect("names").len(), 2);
        // a later local write follows what it has seen
        let b = s
            .ledger_append(version("iris", Hash::of(b"d")))
            .expect("append");
        assert!(b.hlc > a.hlc);
        assert_eq!(s.model_version_number(&b).expect("number"), Some(3));
    }

    #[test]
    fn aliases_resolve_and_keep_their_history() {
        let (_d, s) = store();
        let name = ModelName::new("iris").expect("name");
        let champion = AliasName::new("champion").expect("alias");
        s.ledger_append(version("iris", Hash::of(b"a")))
            .expect("append");
        s.ledger_append(version("iris", Hash::of(b"b")))
            .expect("append");
        let mv = |v: u64, from: Option<u64>| {
            EntryBody::Alias(AliasMove {
                name: name.clone(),
                alias: champion.clone(),
                version: Some(v),
                from,
                reason: None,
            })
        };
        assert!(
            s.resolve_model(&name, &ModelSelector::Alias(champion.clone()))
                .is_err()
        );
        s.ledger_append(mv(1, None)).expect("alias");
        s.ledger_append(mv(2, Some(1))).expect("alias");
        assert_eq!(
            s.resolve_model(&name, &ModelSelector::Alias(champion.clone()))
                .expect("resolve"),
            Hash::of(b"b")
        );
        assert_eq!(
            s.resolve_model(&name, &ModelSelector::Version(1))
                .expect("resolve"),
            Hash::of(b"a")
        );
        let err = s
            .resolve_model(&name, &ModelSelector::Version(3))
            .expect_err("no v3");
        assert!(err.to_string().contains("versions 1 to 2"), "{err}");
        let h = s.alias_history(&name, &champion).expect("history");
        assert_eq!(
            h.iter().map(|m| m.version).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        assert_eq!(
            s.model_aliases(&name).expect("aliases"),
            vec![(champion.clone(), Some(2))]
        );
        // through the artifact-reference grammar
        assert_eq!(
            s.resolve_str("models/iris@champion").expect("ref"),
            Hash::of(b"b")
        );
        assert_eq!(s.resolve_str("models/iris:1").expect("ref"), Hash::of(b"a"));
    }

    #[test]
    fn a_pipeline_run_is_what_its_coordinator_wrote() {
        let (_d, s) = store();
        let id = JobId::new(7, 8);
        let record = |coordinator: &str, state| {
            EntryBody::PipelineRun(weft_protocol::ledger::PipelineRunRecord {
                id: id.clone(),
                pipeline: "p".into(),
                experiment: None,
                coordinator: coordinator.into(),
                state,
                params: vec![],
                trigger: None,
                steps: vec![],
                reason: None,
                created_ms: 1,
                updated_ms: 1,
            })
        };
        // this store writes as 12D3KooWA, the coordinator
        s.ledger_append(record(
            "12D3KooWA",
            weft_protocol::ledger::PipelineState::Running,
        ))
        .expect("append");
        // a later entry by another hand claims the run succeeded
        let forged = Entry {
            hlc: Hlc {
                wall_ms: u64::from(u32::MAX),
                counter: 0,
            },
            origin: "12D3KooWB".into(),
            body: record("12D3KooWA", weft_protocol::ledger::PipelineState::Succeeded),
        };
        assert!(s.ledger_merge(&forged).expect("merge"));
        let seen = s.pipeline_run(&id).expect("run").expect("known");
        assert_eq!(seen.state, weft_protocol::ledger::PipelineState::Running);
        let all = s.pipeline_runs().expect("runs");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, weft_protocol::ledger::PipelineState::Running);
    }

    #[test]
    fn runs_fold_params_once_and_metrics_in_order() {
        let (_d, s) = store();
        let id = JobId::new(5, 6);
        let ev = |params: Vec<(&str, &str)>, metrics: Vec<(&str, f64, u64)>| {
            EntryBody::Run(RunEvent {
                run: id.clone(),
                start: None,
                params: params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                metrics: metrics
                    .into_iter()
                    .map(|(k, v, step)| Metric {
                        key: k.to_string(),
                        value: v,
                        step,
                        timestamp_ms: 0,
                    })
                    .collect(),
                tags: vec![],
                end: None,
            })
        };
        s.ledger_append(ev(vec![("lr", "0.1")], vec![("loss", 2.0, 0)]))
            .expect("a");
        s.ledger_append(ev(
            vec![("lr", "0.5")],
            vec![("loss", 1.0, 1), ("acc", 0.9, 0)],
        ))
        .expect("b");
        let run = s.run_view(&id).expect("view").expect("known");
        assert_eq!(run.params["lr"], "0.1");
        assert_eq!(run.metrics.len(), 3);
        let latest = run.latest_metrics();
        assert_eq!(latest["loss"], 1.0);
        assert_eq!(latest["acc"], 0.9);
        assert_eq!(s.run_views().expect("views").len(), 1);
    }
}
