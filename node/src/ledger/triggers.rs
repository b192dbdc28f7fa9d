//! Continuous training: a pipeline runs once across the mesh for each move
//! of a tag it is triggered by.
//!
//! A pipeline with `spec.triggers: [{tag: datasets/iris:v1}]` (a full tag
//! name) or `[{tag: datasets/iris}]` (a repository: any version of it) is
//! kept in the ledger as an `EntryBody::Pipeline` definition when it is
//! submitted ([`keep`]); the newest definition of a name wins, and
//! `active: false` turns its triggers off ([`set_active`]).
//!
//! Every node watches the tag versions it stores (written here, gossiped,
//! or synced from a peer that was away). For each new version that points
//! at something, later than the definition of an active pipeline whose
//! trigger matches it, the node works out the one owner of the event
//! `(pipeline, tag, target)` by rendezvous hashing over the live membership
//! and itself. Only the owner acts: it writes an `EntryBody::Trigger` claim
//! and pushes it to every live peer with the same barrier that makes model
//! versions' numbers final (each peer answers with every claim it holds on
//! the event). If a live rival claim with a lower `(hlc, origin)` exists
//! then, or any claim names a run, it backs off; otherwise it starts the
//! pipeline with the new id and writes a second claim naming the run.
//!
//! Failure: a claim without a run older than [`STALE`] whose writer has left
//! the membership (or is this node in an earlier life) no longer counts;
//! every few seconds each node looks for such events and the owner among the
//! live nodes takes over. An event whose claim names a run is never run
//! again. A node acts only on versions it stores while it runs, so on start
//! it does not fire for tag versions it already held; versions it missed
//! while away arrive in the tag sync on join and are caught up, the claims
//! (pulled by the push) keeping them from running twice.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use weft_protocol::ledger::{Entry, EntryBody, EntryKind, PipelineDef, TriggerClaim};
use weft_protocol::sched::JobId;
use weft_protocol::{Hash, TagName, TagUpdate};

use super::{LedgerError, LedgerHandle, now_ms};

/// How long a claim without a run stands for a writer that has left.
pub const STALE: Duration = Duration::from_secs(30);
/// How often, at most, a node looks for claims whose writer left.
const SWEEP: Duration = Duration::from_secs(5);

/// Starts a pipeline for a tag change: the definition, the tag, its new
/// target and the change as text (`tag datasets/iris:v1 -> ID`, for the run
/// to record); returns the pipeline run's id.
pub type Starter = Arc<
    dyn Fn(PipelineDef, TagName, Hash, String) -> BoxFuture<'static, Result<JobId, String>>
        + Send
        + Sync,
>;

/// What a trigger matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerMatch {
    /// One tag: `datasets/iris:v1`.
    Tag(TagName),
    /// Any version of a repository: `datasets/iris`.
    Repository(String),
}

impl TriggerMatch {
    pub fn parse(s: &str) -> Result<TriggerMatch, String> {
        if s.contains(':') {
            return TagName::new(s)
                .map(TriggerMatch::Tag)
                .map_err(|e| format!("spec.triggers: {e}"));
        }
        // a repository is valid when it makes a valid tag
        TagName::new(&format!("{s}:v"))
            .map(|_| TriggerMatch::Repository(s.to_string()))
            .map_err(|_| {
                format!(
                    "spec.triggers: {:?} is neither a tag (datasets/iris:v1) nor a tag repository (datasets/iris)",
                    s.chars().take(80).collect::<String>()
                )
            })
    }

    pub fn matches(&self, tag: &TagName) -> bool {
        match self {
            TriggerMatch::Tag(t) => t == tag,
            TriggerMatch::Repository(r) => tag.repository() == r,
        }
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    spec: Option<SpecPart>,
}

#[derive(Deserialize, Default)]
struct SpecPart {
    #[serde(default)]
    triggers: Vec<TriggerDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerDecl {
    tag: String,
}

/// The triggers a pipeline spec (YAML) declares in `spec.triggers`.
pub fn triggers_of(yaml: &str) -> Result<Vec<TriggerMatch>, String> {
    let doc: Doc = serde_yaml_ng::from_str(yaml).map_err(|e| format!("spec.triggers: {e}"))?;
    doc.spec
        .unwrap_or_default()
        .triggers
        .iter()
        .map(|t| TriggerMatch::parse(&t.tag))
        .collect()
}

/// The change a run was started for, as the run records it.
pub fn trigger_text(tag: &TagName, target: &Hash) -> String {
    format!("tag {tag} -> {}", target.to_hex())
}

/// Keeps a submitted pipeline's definition mesh-wide so its triggers fire
/// on every node: an active definition when `yaml` declares triggers (not
/// rewritten when the newest definition is the same); when it declares none,
/// an inactive one if an active definition of `name` was kept before.
/// Returns the entry written, if any.
pub async fn keep(
    ledger: &LedgerHandle,
    name: &str,
    yaml: &str,
    params: Vec<(String, String)>,
) -> Result<Option<Entry>, LedgerError> {
    let triggers = triggers_of(yaml).map_err(LedgerError::Invalid)?;
    let current = definition(ledger, name).await?;
    let def = PipelineDef {
        name: name.to_string(),
        spec: yaml.to_string(),
        params,
        active: !triggers.is_empty(),
    };
    let write = match &current {
        Some((_, cur)) => *cur != def && (cur.active || def.active),
        None => def.active,
    };
    if !write {
        return Ok(None);
    }
    ledger.append(EntryBody::Pipeline(def)).await.map(Some)
}

/// Turns a kept pipeline's triggers on or off.
pub async fn set_active(
    ledger: &LedgerHandle,
    name: &str,
    active: bool,
) -> Result<Entry, LedgerError> {
    let (_, mut def) = definition(ledger, name).await?.ok_or_else(|| {
        LedgerError::Invalid(format!(
            "no pipeline {name:?} is kept for triggers; submit it with spec.triggers first"
        ))
    })?;
    def.active = active;
    ledger.append(EntryBody::Pipeline(def)).await
}

/// The newest definition of `name`, with its entry.
pub async fn definition(
    ledger: &LedgerHandle,
    name: &str,
) -> Result<Option<(Entry, PipelineDef)>, LedgerError> {
    let store = ledger.store().clone();
    let name = name.to_string();
    let entries =
        tokio::task::spawn_blocking(move || store.ledger_subject(EntryKind::Pipeline, &name))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))??;
    Ok(entries.into_iter().rev().find_map(|e| match &e.body {
        EntryBody::Pipeline(p) => Some((e.clone(), p.clone())),
        _ => None,
    }))
}

/// Every kept pipeline's newest definition, with its entry.
fn definitions(store: &crate::store::Store) -> Result<Vec<(Entry, PipelineDef)>, LedgerError> {
    let mut newest: BTreeMap<String, (Entry, PipelineDef)> = BTreeMap::new();
    for e in store.ledger_kind(EntryKind::Pipeline)? {
        if let EntryBody::Pipeline(p) = &e.body {
            // key order: a subject's entries oldest first, so the last wins
            newest.insert(p.name.clone(), (e.clone(), p.clone()));
        }
    }
    Ok(newest.into_values().collect())
}

/// The node that acts on one event: the highest score of
/// `blake3(pipeline, tag, target, node)` among `nodes`.
pub fn owner<'a>(
    pipeline: &str,
    tag: &TagName,
    target: &Hash,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|node| {
        Hash::of(format!("{pipeline}\n{tag}\n{}\n{node}", target.to_hex()).as_bytes()).to_hex()
    })
}

/// Handle to the watcher: where the daemon plugs in the pipeline engine.
#[derive(Clone)]
pub struct TriggersHandle {
    starter: Arc<Mutex<Option<Starter>>>,
    /// [`STALE`], in ms (tests shorten it).
    stale_ms: Arc<AtomicU64>,
}

impl Default for TriggersHandle {
    fn default() -> Self {
        TriggersHandle {
            starter: Arc::default(),
            stale_ms: Arc::new(AtomicU64::new(STALE.as_millis() as u64)),
        }
    }
}

impl TriggersHandle {
    /// Sets what starts a pipeline run; until it is set this node acts on
    /// no event (the others, once owners, do).
    pub fn set_starter(&self, starter: Starter) {
        *self.starter.lock().unwrap_or_else(|p| p.into_inner()) = Some(starter);
    }

    /// Shortens how long a claim without a run stands once its writer has
    /// left (tests of a takeover).
    #[doc(hidden)]
    pub fn set_stale_after(&self, after: Duration) {
        self.stale_ms
            .store(after.as_millis() as u64, Ordering::Relaxed);
    }

    fn stale_ms(&self) -> u64 {
        self.stale_ms.load(Ordering::Relaxed)
    }

    /// How often to look for claims whose writer left.
    fn sweep_every(&self) -> Duration {
        Duration::from_millis(self.stale_ms() / 2).clamp(Duration::from_millis(100), SWEEP)
    }

    fn starter(&self) -> Option<Starter> {
        self.starter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The watcher: its handle, and the loop for the caller to spawn.
pub fn watcher(
    ledger: LedgerHandle,
    shutdown: CancellationToken,
) -> (
    TriggersHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let handle = TriggersHandle::default();
    let changes = ledger.store().subscribe_tag_changes();
    let w = Watcher {
        ledger,
        handle: handle.clone(),
        handled: Arc::new(Mutex::new(HashSet::new())),
    };
    (handle, w.run(changes, shutdown))
}

#[derive(Clone)]
struct Watcher {
    ledger: LedgerHandle,
    handle: TriggersHandle,
    /// Events this node has claimed in this life (its claims on them stand
    /// while it lives).
    handled: Arc<Mutex<HashSet<String>>>,
}

/// One tag change that fires one pipeline.
#[derive(Debug, Clone)]
struct Event {
    def: PipelineDef,
    tag: TagName,
    target: Hash,
}

impl Event {
    fn subject(&self) -> String {
        weft_protocol::ledger::trigger_subject(&self.def.name, &self.tag, &self.target)
    }
}

impl Watcher {
    async fn run(self, mut changes: broadcast::Receiver<TagUpdate>, shutdown: CancellationToken) {
        let mut acting = tokio::task::JoinSet::new();
        let mut sweep = Box::pin(tokio::time::sleep(self.handle.sweep_every()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                change = changes.recv() => match change {
                    Ok(update) => {
                        let w = self.clone();
                        acting.spawn(async move { w.on_change(update).await });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "tag changes outran the trigger watcher; those changes fire no pipeline");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = &mut sweep => {
                    sweep.set(tokio::time::sleep(self.handle.sweep_every()));
                    let w = self.clone();
                    acting.spawn(async move { w.sweep().await });
                }
                Some(_) = acting.join_next(), if !acting.is_empty() => {}
            }
        }
        acting.shutdown().await;
    }

    /// The events a stored tag version fires.
    async fn on_change(&self, update: TagUpdate) {
        let Some(target) = update.version.target else {
            return;
        };
        let store = self.ledger.store().clone();
        let defs = match tokio::task::spawn_blocking(move || definitions(&store)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read pipeline definitions");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pipeline definitions task failed");
                return;
            }
        };
        for (entry, def) in defs {
            // only changes made after the pipeline was kept
            if !def.active || update.version.hlc <= entry.hlc {
                continue;
            }
            let fires = match triggers_of(&def.spec) {
                Ok(t) => t.iter().any(|m| m.matches(&update.name)),
                Err(e) => {
                    tracing::warn!(pipeline = %def.name, error = %e, "kept pipeline has unreadable triggers");
                    false
                }
            };
            if fires {
                let event = Event {
                    def,
                    tag: update.name.clone(),
                    target,
                };
                if let Err(e) = self.decide(event).await {
                    tracing::warn!(tag = %update.name, error = %e, "trigger not handled");
                }
            }
        }
    }

    /// Looks for claimed events without a run whose claimers all left.
    async fn sweep(&self) {
        let store = self.ledger.store().clone();
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, LedgerError>((store.ledger_kind(EntryKind::Trigger)?, definitions(&store)?))
        })
        .await;
        let (claims, defs) = match read {
            Ok(Ok(x)) => x,
            _ => return,
        };
        let mut by_subject: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in claims {
            by_subject.entry(e.body.subject()).or_default().push(e);
        }
        let live = self.live().await;
        for (_, claims) in by_subject {
            if claims
                .iter()
                .any(|c| claim_of(c).is_some_and(|t| t.run.is_some()))
            {
                continue;
            }
            if claims.iter().any(|c| !self.stale(c, &live)) {
                continue;
            }
            let Some(t) = claims.first().and_then(claim_of) else {
                continue;
            };
            let Some((_, def)) = defs.iter().find(|(_, d)| d.name == t.pipeline) else {
                continue;
            };
            if !def.active {
                continue;
            }
            tracing::info!(pipeline = %t.pipeline, tag = %t.tag, "taking over a trigger whose claimer left");
            let event = Event {
                def: def.clone(),
                tag: t.tag.clone(),
                target: t.target,
            };
            if let Err(e) = self.decide(event).await {
                tracing::warn!(error = %e, "trigger takeover failed");
            }
        }
    }

    /// This node and its live peers.
    async fn live(&self) -> Vec<String> {
        let mut nodes = vec![self.ledger.store().origin().to_string()];
        if let Some(net) = &self.ledger.net {
            nodes.extend(
                net.peers()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.peer_id.to_string()),
            );
        }
        nodes
    }

    /// A claim without a run that no longer stands: old, and its writer
    /// gone (or this node, in an earlier life).
    fn stale(&self, claim: &Entry, live: &[String]) -> bool {
        let Some(t) = claim_of(claim) else {
            return true;
        };
        if t.run.is_some() {
            return false;
        }
        let old = now_ms().saturating_sub(claim.hlc.wall_ms) > self.handle.stale_ms();
        let me = self.ledger.store().origin();
        let gone = if claim.origin == me {
            !self
                .handled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&claim.body.subject())
        } else {
            !live.contains(&claim.origin)
        };
        old && gone
    }

    /// Acts on one event if this node is its owner.
    async fn decide(&self, event: Event) -> Result<(), LedgerError> {
        let subject = event.subject();
        if self
            .handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&subject)
        {
            return Ok(());
        }
        let live = self.live().await;
        let me = self.ledger.store().origin().to_string();
        let owner = owner(
            &event.def.name,
            &event.tag,
            &event.target,
            live.iter().map(String::as_str),
        );
        if owner != Some(me.as_str()) {
            tracing::debug!(pipeline = %event.def.name, tag = %event.tag, owner = ?owner, "another node owns this trigger");
            return Ok(());
        }
        let claims = self.claims(&subject).await?;
        if claims.iter().any(|c| !self.stale(c, &live)) {
            // claimed and standing (run or not): the claimer goes on
            return Ok(());
        }
        let Some(starter) = self.handle.starter() else {
            tracing::warn!(pipeline = %event.def.name, tag = %event.tag, "trigger owned here but no pipeline engine is plugged in");
            return Ok(());
        };
        if !self
            .handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subject.clone())
        {
            return Ok(());
        }
        let claim = |run| {
            EntryBody::Trigger(TriggerClaim {
                pipeline: event.def.name.clone(),
                tag: event.tag.clone(),
                target: event.target,
                run,
            })
        };
        let mine = self.ledger.append(claim(None)).await?;
        let unconfirmed = self.ledger.push_to_all(&mine).await;
        if !unconfirmed.is_empty() {
            tracing::warn!(peers = ?unconfirmed, "trigger claim not confirmed by every live peer");
        }
        // every rival a live peer wrote before seeing ours is here now
        let claims = self.claims(&subject).await?;
        if claims
            .iter()
            .any(|c| claim_of(c).is_some_and(|t| t.run.is_some()))
        {
            return Ok(());
        }
        let winner = claims
            .iter()
            .filter(|c| (c.hlc, &c.origin) == (mine.hlc, &mine.origin) || !self.stale(c, &live))
            .min_by(|a, b| a.order(b));
        if winner.is_some_and(|w| (w.hlc, &w.origin) != (mine.hlc, &mine.origin)) {
            tracing::info!(pipeline = %event.def.name, tag = %event.tag, "an earlier claim stands; backing off");
            return Ok(());
        }
        let text = trigger_text(&event.tag, &event.target);
        tracing::info!(pipeline = %event.def.name, trigger = %text, "starting the pipeline for a tag change");
        match starter(
            event.def.clone(),
            event.tag.clone(),
            event.target,
            text.clone(),
        )
        .await
        {
            Ok(run) => {
                let done = self.ledger.append(claim(Some(run.clone()))).await?;
                self.ledger.push_to_all(&done).await;
                tracing::info!(pipeline = %event.def.name, %run, trigger = %text, "pipeline started by trigger");
            }
            Err(e) => {
                tracing::warn!(pipeline = %event.def.name, trigger = %text, error = %e, "the triggered pipeline did not start");
            }
        }
        Ok(())
    }

    async fn claims(&self, subject: &str) -> Result<Vec<Entry>, LedgerError> {
        let store = self.ledger.store().clone();
        let subject = subject.to_string();
        tokio::task::spawn_blocking(move || store.ledger_subject(EntryKind::Trigger, &subject))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))?
            .map_err(LedgerError::from)
    }
}

fn claim_of(e: &Entry) -> Option<&TriggerClaim> {
    match &e.body {
        EntryBody::Trigger(t) => Some(t),
        _ => None,
    }
}

/// The runs started for tag changes, as claims record them: (pipeline, tag,
/// target, run).
pub fn triggered_runs(
    store: &crate::store::Store,
) -> Result<Vec<(String, TagName, Hash, JobId)>, LedgerError> {
    Ok(store
        .ledger_kind(EntryKind::Trigger)?
        .into_iter()
        .filter_map(|e| match e.body {
            EntryBody::Trigger(TriggerClaim {
                pipeline,
                tag,
                target,
                run: Some(run),
            }) => Some((pipeline, tag, target, run)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_parse_and_match() {
        let yaml = "apiVersion: weft/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  triggers: [{tag: datasets/iris:v1}, {tag: datasets/wine}]\n  steps: {}\n";
        let t = triggers_of(yaml).expect("triggers");
        assert_eq!(t.len(), 2);
        let tag = |s: &str| TagName::new(s).expect("tag");
        assert!(t[0].matches(&tag("datasets/iris:v1")));
        assert!(!t[0].matches(&tag("datasets/iris:v2")));
        assert!(t[1].matches(&tag("datasets/wine:anything")));
        assert!(!t[1].matches(&tag("datasets/wine2:v1")));
        assert!(triggers_of("spec: {steps: {}}").expect("none").is_empty());
        let err = triggers_of("spec:\n  triggers: [{tag: 'bad name!'}]\n").expect_err("bad");
        assert!(err.contains("spec.triggers"), "{err}");
        let err = triggers_of("spec:\n  triggers: [{tga: a/b}]\n").expect_err("unknown field");
        assert!(err.contains("spec.triggers"), "{err}");
    }

    #[tokio::test]
    async fn keep_writes_a_definition_only_when_it_changes_what_fires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path(), "12D3KooWA").expect("open");
        let (ledger, _loop) = super::super::replicator(store, None, CancellationToken::new());
        let with = "spec:\n  triggers: [{tag: datasets/iris}]\n";
        let without = "spec: {steps: {}}\n";
        // no triggers, nothing kept before: nothing to keep
        assert!(
            keep(&ledger, "p", without, vec![])
                .await
                .expect("keep")
                .is_none()
        );
        let first = keep(&ledger, "p", with, vec![]).await.expect("keep");
        assert!(first.is_some());
        // the same again: not rewritten
        assert!(
            keep(&ledger, "p", with, vec![])
                .await
                .expect("keep")
                .is_none()
        );
        // new params: a new definition
        let params = vec![("lr".to_string(), "0.1".to_string())];
        assert!(
            keep(&ledger, "p", with, params)
                .await
                .expect("keep")
                .is_some()
        );
        // resubmitted without triggers: turned off
        keep(&ledger, "p", without, vec![])
            .await
            .expect("keep")
            .expect("an inactive definition");
        let (_, def) = definition(&ledger, "p").await.expect("read").expect("kept");
        assert!(!def.active);
        set_active(&ledger, "p", true).await.expect("on");
        assert!(
            definition(&ledger, "p")
                .await
                .expect("read")
                .expect("kept")
                .1
                .active
        );
        let err = set_active(&ledger, "q", false)
            .await
            .expect_err("never kept");
        assert!(err.to_string().contains("spec.triggers"), "{err}");
        assert!(
            keep(&ledger, "p", "spec:\n  triggers: [{tag: 'a b'}]\n", vec![])
                .await
                .is_err()
        );
    }

    #[test]
    fn one_owner_per_event_whatever_the_order_of_nodes() {
        let tag = TagName::new("datasets/iris:v1").expect("tag");
        let nodes = ["a", "b", "c", "d"];
        let mut owners = HashSet::new();
        for i in 0..40u8 {
            let target = Hash::of(&[i]);
            let o = owner("p", &tag, &target, nodes).expect("owner");
            let mut rev = nodes;
            rev.reverse();
            assert_eq!(owner("p", &tag, &target, rev), Some(o));
            owners.insert(o);
        }
        // spread over the nodes, not always the same one
        assert!(owners.len() > 1, "{owners:?}");
        assert_eq!(owner("p", &tag, &Hash::EMPTY, []), None);
    }
}
