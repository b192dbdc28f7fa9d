//! The owner's loop: make the replicas the mesh runs match each service's
//! desired state.
//!
//! Every node runs it; for each service only its owner acts (rendezvous
//! hashing of the name over the live members, so all agree once their
//! membership does, and a new owner takes over within one advert TTL of the
//! old one's loss). An owner keeps no state that matters: what runs is read
//! from adverts each tick; the starts it asked for and has not yet seen in an
//! advert are remembered for a while so they are not asked twice.
//!
//! A rollout: the current revision's replicas are started up to `maxSurge`
//! above the desired count; an old revision's replica is drained and stopped
//! only while the ready replicas left stay at least `replicas -
//! maxUnavailable` (a new one counts once it has been ready `minHealthy`). A
//! rollout not done by `progressDeadline` is reverted to the revision before
//! it when `autoRevert` is set. An unhealthy or failed replica is stopped and
//! replaced; one whose node left is replaced as soon as the node's advert
//! expires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_protocol::service::{ReplicaId, ReplicaState, Replicas as ReplicaCount, ServiceName};
use weft_protocol::{Request, Response};

use super::fold::previous_revision;
use super::mesh::{Mesh, Route, View};
use super::replicas::Replicas;
use super::{ServiceHandle, ServiceState, placement};
use crate::net::NetHandle;
use crate::sched::now_ms;

/// How often the owner looks.
pub const TICK: Duration = Duration::from_millis(300);

/// How long a start asked for may take to show in an advert.
const PENDING_FOR: Duration = Duration::from_secs(30);

/// How long a node has to answer a start (it answers once starting).
const START_ANSWER: Duration = Duration::from_secs(3);

/// How long a node that refused a start is avoided.
const AVOID_FOR: Duration = Duration::from_secs(10);

/// How long a replica drains before it is stopped.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The owner of `service` among `members`.
pub fn owner<'a>(service: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|m| blake3::hash(format!("service\n{service}\n{m}").as_bytes()).to_hex())
}

struct Pending {
    service: ServiceName,
    node: String,
    revision: u32,
    since: Instant,
}

/// The loop's memory between ticks.
pub struct Reconciler {
    services: ServiceHandle,
    replicas: Replicas,
    mesh: Mesh,
    net: NetHandle,
    pending: HashMap<ReplicaId, Pending>,
    stopping: HashMap<ReplicaId, Instant>,
    ready_seen: HashMap<ReplicaId, Instant>,
    avoid: HashMap<String, Instant>,
    /// (service, revision) rollouts already reverted.
    reverted: HashSet<(ServiceName, u32)>,
    refusals: Arc<std::sync::Mutex<Vec<(ReplicaId, String)>>>,
}

impl Reconciler {
    pub fn new(services: ServiceHandle, replicas: Replicas, mesh: Mesh, net: NetHandle) -> Self {
        Reconciler {
            services,
            replicas,
            mesh,
            net,
            pending: HashMap::new(),
            stopping: HashMap::new(),
            ready_seen: HashMap::new(),
            avoid: HashMap::new(),
            reverted: HashSet::new(),
            refusals: Arc::default(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        let view = self.mesh.view();
        let now = Instant::now();
        for (id, node) in
            std::mem::take(&mut *self.refusals.lock().unwrap_or_else(|p| p.into_inner()))
        {
            self.pending.remove(&id);
            self.avoid.insert(node, now + AVOID_FOR);
        }
        self.pending
            .retain(|_, p| now.duration_since(p.since) < PENDING_FOR);
        self.stopping
            .retain(|_, since| now.duration_since(*since) < PENDING_FOR);
        self.avoid.retain(|_, until| *until > now);
        let seen: HashSet<ReplicaId> = view.routes.values().flatten().map(|r| r.info.id).collect();
        self.pending.retain(|id, _| !seen.contains(id));
        self.ready_seen.retain(|id, _| seen.contains(id));
        for r in view.routes.values().flatten() {
            if r.info.state == ReplicaState::Ready {
                self.ready_seen.entry(r.info.id).or_insert(now);
            } else {
                self.ready_seen.remove(&r.info.id);
            }
        }
        self.idle_stops(&view);
        let states = match self.services.cached_all() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the services");
                return;
            }
        };
        let mut known = HashSet::new();
        for state in states.iter() {
            known.insert(state.name.clone());
            if owner(state.name.as_str(), view.owner_candidates()) != Some(self.mesh.me()) {
                continue;
            }
            self.reconcile(&view, state).await;
        }
        // replicas of services this node knows nothing of: stopped by
        // their own node (a removed service is still known)
        for r in self.replicas.all() {
            if !known.contains(&r.service) && r.state() != ReplicaState::Draining {
                self.replicas.stop(r.id, Duration::ZERO);
            }
        }
    }

    /// Stops this node's `auto` replicas idle past `autoscale.idle`, while
    /// more than `autoscale.min` run.
    fn idle_stops(&self, view: &View) {
        let now = now_ms();
        for r in self.replicas.all() {
            if r.state() != ReplicaState::Ready || r.inflight() > 0 {
                continue;
            }
            let Some(state) = self.services.cached(r.service.as_str()) else {
                continue;
            };
            let Some((_, spec)) = state.current_spec() else {
                continue;
            };
            let (ReplicaCount::Auto, Some(auto)) = (spec.replicas, spec.autoscale) else {
                continue;
            };
            if now.saturating_sub(r.last_used_ms()) < auto.idle.as_millis() as u64 {
                continue;
            }
            let live = view
                .routes(&r.service)
                .iter()
                .filter(|x| matches!(x.info.state, ReplicaState::Ready | ReplicaState::Starting))
                .count() as u32;
            if live > auto.min {
                info!(service = %r.service, replica = %r.id, "stopping an idle replica");
                self.replicas.stop(r.id, DRAIN);
            }
        }
    }

    async fn reconcile(&mut self, view: &View, state: &ServiceState) {
        let name = &state.name;
        let routes: Vec<&Route> = view
            .routes(name)
            .iter()
            .filter(|r| !self.stopping.contains_key(&r.info.id))
            .collect();
        let Some((current, spec)) = state.current_spec() else {
            // removed, or a revision this node cannot read: a removed
            // service's replicas all stop
            if state.current.is_none() {
                for r in routes {
                    self.stop(r, Duration::from_secs(2)).await;
                }
            }
            return;
        };
        let rev = current.number;
        // failed and unhealthy replicas go (and are replaced below)
        let mut live: Vec<&Route> = Vec::new();
        for r in routes {
            match r.info.state {
                ReplicaState::Failed | ReplicaState::Unhealthy => {
                    self.stop(r, Duration::ZERO).await;
                }
                ReplicaState::Draining => {}
                ReplicaState::Starting | ReplicaState::Ready => live.push(r),
            }
        }
        let pending: Vec<(ReplicaId, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| &p.service == name)
            .map(|(id, p)| (*id, p.revision))
            .collect();
        let desired = match (spec.replicas, spec.autoscale) {
            (ReplicaCount::Auto, Some(a)) => {
                ((live.len() + pending.len()) as u32).clamp(a.min, a.max)
            }
            _ => state.replicas,
        };
        let min_healthy = spec.update.min_healthy;
        let counts_ready = |r: &Route| {
            r.info.state == ReplicaState::Ready
                && self
                    .ready_seen
                    .get(&r.info.id)
                    .is_some_and(|t| t.elapsed() >= min_healthy)
        };
        let new: Vec<&Route> = live
            .iter()
            .copied()
            .filter(|r| r.info.revision == rev)
            .collect();
        let old: Vec<&Route> = live
            .iter()
            .copied()
            .filter(|r| r.info.revision != rev)
            .collect();
        let new_pending = pending.iter().filter(|(_, r)| *r == rev).count();
        let new_count = new.len() + new_pending;
        let total = live.len() + pending.len();
        let new_ready = new.iter().filter(|r| counts_ready(r)).count();
        let old_ready = old
            .iter()
            .filter(|r| r.info.state == ReplicaState::Ready)
            .count();
        let n = desired as usize;

        // start replicas of the current revision
        let surge_room = (n + spec.update.max_surge as usize).saturating_sub(total);
        let mut to_start = n.saturating_sub(new_count).min(surge_room);
        if old.is_empty() {
            to_start = n.saturating_sub(new_count);
        }
        for _ in 0..to_start {
            self.start(view, state, rev).await;
        }

        // stop old replicas while enough stay ready
        let floor = n.saturating_sub(spec.update.max_unavailable as usize);
        let mut available = new_ready + old_ready;
        let mut old_sorted = old.clone();
        old_sorted.sort_by_key(|r| r.info.state == ReplicaState::Ready);
        for r in old_sorted {
            let ready = r.info.state == ReplicaState::Ready;
            if ready {
                if available <= floor || available == 0 {
                    continue;
                }
                available -= 1;
            }
            self.stop(r, DRAIN).await;
        }

        // too many of the current revision (scaled down)
        if old.is_empty() && new.len() > n {
            let mut extra = new.clone();
            extra.sort_by_key(|r| (r.info.state == ReplicaState::Ready, r.info.id));
            for r in extra.into_iter().take(new.len() - n) {
                self.stop(r, DRAIN).await;
            }
        }

        // a rollout past its deadline
        let rolling = !old.is_empty() || new_ready < n;
        let since = now_ms().saturating_sub(state.current_since_ms);
        if rolling
            && spec.update.auto_revert
            && since > spec.update.progress_deadline.as_millis() as u64
            && !self.reverted.contains(&(name.clone(), rev))
        {
            let last_was_revert = state
                .history
                .last()
                .is_some_and(|h| h.change == "rollback" && h.reason.is_some());
            let previous = previous_revision(state);
            self.reverted.insert((name.clone(), rev));
            match previous {
                Some(to) if !last_was_revert => {
                    let reason = format!(
                        "revision {rev} did not become healthy within {} s ({new_ready} of {n} ready)",
                        spec.update.progress_deadline.as_secs()
                    );
                    warn!(service = %name, from = rev, to, %reason, "rolling back");
                    if let Err(e) = self.services.revert(name.as_str(), to, reason).await {
                        warn!(service = %name, error = %e, "cannot roll back");
                        self.reverted.remove(&(name.clone(), rev));
                    }
                }
                _ => {
                    warn!(service = %name, revision = rev, "rollout failed; nothing to roll back to")
                }
            }
        }
    }

    async fn start(&mut self, view: &View, state: &ServiceState, revision: u32) {
        let Some((_, spec)) = state.current_spec() else {
            return;
        };
        let avoid: Vec<String> = self.avoid.keys().cloned().collect();
        let planned: Vec<String> = self
            .pending
            .values()
            .filter(|p| p.service == state.name && p.revision == revision)
            .map(|p| p.node.clone())
            .collect();
        let Some(member) = placement::choose(view, spec, Some(revision), &avoid, &planned) else {
            warn!(service = %state.name, "no node can run a replica");
            return;
        };
        let id = ServiceHandle::new_replica_id();
        info!(service = %state.name, revision, replica = %id, node = %member.id, "placing a replica");
        self.pending.insert(
            id,
            Pending {
                service: state.name.clone(),
                node: member.id.clone(),
                revision,
                since: Instant::now(),
            },
        );
        match member.peer {
            None => {
                if let Err((_, why)) = self.replicas.start(&state.name, revision, id) {
                    warn!(service = %state.name, %why, "cannot start a replica here");
                    self.pending.remove(&id);
                    self.avoid
                        .insert(member.id.clone(), Instant::now() + AVOID_FOR);
                }
            }
            Some(peer) => {
                let net = self.net.clone();
                let service = state.name.clone();
                let refusals = self.refusals.clone();
                let node = member.id.clone();
                tokio::spawn(async move {
                    let ask = net.request(
                        peer,
                        Request::StartReplica {
                            service: service.clone(),
                            revision,
                            replica: id,
                        },
                    );
                    let r = tokio::time::timeout(START_ANSWER, ask)
                        .await
                        .map_err(|_| "no answer in time".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    if !matches!(r, Ok(Response::Ack)) {
                        warn!(%service, %peer, answer = ?r, "a node did not start a replica");
                        refusals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, node));
                    }
                });
            }
        }
    }

    async fn stop(&mut self, r: &Route, drain: Duration) {
        if self.stopping.contains_key(&r.info.id) {
            return;
        }
        self.stopping.insert(r.info.id, Instant::now());
        info!(service = %r.info.service, replica = %r.info.id, node = %r.node, state = r.info.state.as_str(), "stopping a replica");
        match r.peer {
            None => self.replicas.stop(r.info.id, drain),
            Some(peer) => {
                let net = self.net.clone();
                let req = Request::StopReplica {
                    service: r.info.service.clone(),
                    replica: r.info.id,
                    drain_ms: drain.as_millis() as u32,
                };
                tokio::spawn(async move {
                    if let Err(e) = net.request(peer, req).await {
                        warn!(%peer, error = %e, "cannot ask a node to stop a replica");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_runs_nothing_owns_no_service() {
        use super::super::mesh::Member;
        let member = |id: &str, wasm: bool| Member {
            peer: None,
            id: id.to_string(),
            advert: weft_protocol::NodeAdvert {
                executors: weft_protocol::Executors {
                    wasm,
                    container_runtime: None,
                },
                ..Default::default()
            },
            stale: false,
        };
        let view = View {
            members: vec![member("worker", true), member("idle", false)],
            ..View::default()
        };
        for i in 0..50 {
            assert_eq!(
                owner(&format!("svc{i}"), view.owner_candidates()),
                Some("worker")
            );
        }
    }

    #[test]
    fn every_node_names_the_same_owner_and_a_lost_owner_moves_only_its_services() {
        let nodes = ["n1", "n2", "n3", "n4"];
        let names: Vec<String> = (0..40).map(|i| format!("svc{i}")).collect();
        let owners: Vec<&str> = names
            .iter()
            .map(|n| owner(n, nodes.iter().copied()).expect("an owner"))
            .collect();
        // order of the membership does not matter
        for (n, o) in names.iter().zip(&owners) {
            assert_eq!(owner(n, nodes.iter().rev().copied()), Some(*o));
        }
        // spread: every node owns some
        for node in nodes {
            assert!(owners.contains(&node), "{node} owns nothing");
        }
        // n2 leaves: only its services move
        let left = ["n1", "n3", "n4"];
        for (n, o) in names.iter().zip(&owners) {
            let now = owner(n, left.iter().copied()).expect("an owner");
            if *o != "n2" {
                assert_eq!(now, *o, "{n} moved though its owner stayed");
            }
        }
    }
}
