//! Services: replicas and functions behind every node's ingress.
//!
//! A service's desired state is a set of ledger entries
//! (`EntryBody::Service`: apply, scale, rollback, remove) that every node
//! folds the same way ([`ServiceState`]), so no node's loss loses it
//! (`control`). Its **owner** (rendezvous hashing of the name over the live
//! membership) reconciles: it reads the replicas every node lists in its
//! advert and asks nodes to start and stop replicas, rolling a new revision
//! out within `maxSurge`/`maxUnavailable` and reverting one that does not
//! become healthy in time (`reconcile`). A node runs the replicas it is
//! asked to, with the spec from its own ledger, checks their health and
//! lists them in its advert (`replicas`). Every node's ingress sends a
//! request to a ready replica wherever it runs (`ingress`), over the data
//! plane when it is on another node (`proxy`).

pub mod backends;
pub mod control;
pub mod fold;
pub mod ingress;
pub mod mesh;
pub mod placement;
pub mod proxy;
pub mod reconcile;
pub mod replicas;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use weft_protocol::ledger::EntryKind;
use weft_protocol::service::{ReplicaId, ReplicaState, ServiceName, ServiceSpec};

use crate::ledger::{LedgerError, LedgerHandle};
use crate::net::NetHandle;
use crate::store::{Store, StoreError};

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Spec(#[from] weft_protocol::JobSpecError),
    #[error("no service named {0:?}; `weft service ls` lists them")]
    NotFound(String),
    #[error(
        "service {name:?} has no revision {revision}; `weft service history {name}` lists them"
    )]
    NoRevision { name: String, revision: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node is stopping")]
    Stopped,
}

/// One revision of a service, as every node folds it.
#[derive(Debug, Clone)]
pub struct RevisionView {
    /// From 1, in `(hlc, origin)` order of the `Apply` entries.
    pub number: u32,
    /// The spec as applied.
    pub yaml: String,
    /// The spec parsed here; `None` if this node's version cannot read it.
    pub spec: Option<ServiceSpec>,
    /// Unix ms of the apply (the writer's clock).
    pub applied_ms: u64,
    /// The node that applied it.
    pub origin: String,
}

/// A service's desired state: the fold of its ledger entries.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub name: ServiceName,
    pub revisions: Vec<RevisionView>,
    /// The revision to run; `None` once removed.
    pub current: Option<u32>,
    /// Desired replicas of the current revision (a scale, else the spec's
    /// fixed count or `autoscale.min`).
    pub replicas: u32,
    /// Unix ms of the last change of `current` (the start of a rollout).
    pub current_since_ms: u64,
    pub history: Vec<HistoryItem>,
}

impl ServiceState {
    pub fn revision(&self, n: u32) -> Option<&RevisionView> {
        self.revisions.iter().find(|r| r.number == n)
    }

    /// The current revision's view and parsed spec.
    pub fn current_spec(&self) -> Option<(&RevisionView, &ServiceSpec)> {
        let r = self.revision(self.current?)?;
        Some((r, r.spec.as_ref()?))
    }
}

/// One change in a service's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    pub at_ms: u64,
    pub origin: String,
    /// `apply`, `scale`, `rollback` or `remove`.
    pub change: String,
    /// The revision current after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub name: String,
    pub revision: u32,
    /// `false` when the spec equals the current revision's (nothing written).
    pub changed: bool,
    /// Peers that did not confirm they hold the new revision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
}

/// One replica as the mesh sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub replica: String,
    pub node: String,
    pub revision: u32,
    pub state: String,
    pub inflight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Endpoint {
    pub fn new(node: &str, r: &weft_protocol::service::ReplicaInfo) -> Endpoint {
        Endpoint {
            replica: r.id.to_string(),
            node: node.to_string(),
            revision: r.revision,
            state: r.state.as_str().to_string(),
            inflight: r.inflight,
            note: r.note.clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == ReplicaState::Ready.as_str()
    }
}

/// A line of `weft service ls`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub revision: Option<u32>,
    /// `wasm` or `container`.
    pub kind: String,
    pub desired: u32,
    /// `auto` services: the autoscale bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<(u32, u32)>,
    pub ready: u32,
    pub total: u32,
    pub owner: Option<String>,
}

/// `weft service status NAME`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub summary: ServiceSummary,
    /// `rolling out`, `stable`, `removed`, `scaled to zero`...
    pub rollout: String,
    pub endpoints: Vec<Endpoint>,
    pub history: Vec<HistoryItem>,
    /// The current revision's spec, as applied.
    pub spec: Option<String>,
}

/// The recent output of one replica.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaLogs {
    pub replica: String,
    pub node: String,
    pub logs: String,
}

/// The node's handle on services: the API and CLI go through it.
#[derive(Clone)]
pub struct ServiceHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ledger: LedgerHandle,
    /// Every service folded, as of a count of service entries seen.
    cache: Mutex<Option<(u64, Folded)>>,
    /// Bumped by each service entry stored here.
    generation: AtomicU64,
    /// Set at start, cleared at stop (a runtime holds this handle, through
    /// its replicas).
    runtime: Mutex<Option<Runtime>>,
}

/// Every service's state, folded.
type Folded = Arc<Vec<Arc<ServiceState>>>;

/// The running parts the views read.
#[derive(Clone)]
pub struct Runtime {
    pub mesh: mesh::Mesh,
    pub replicas: replicas::Replicas,
    pub net: NetHandle,
}

impl ServiceHandle {
    pub fn new(store: Store, ledger: LedgerHandle) -> ServiceHandle {
        ServiceHandle {
            inner: Arc::new(Inner {
                store,
                ledger,
                cache: Mutex::new(None),
                generation: AtomicU64::new(0),
                runtime: Mutex::new(None),
            }),
        }
    }

    /// Sets the running parts (once, at start).
    pub fn set_runtime(&self, runtime: Runtime) {
        *self.inner.runtime.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime);
    }

    /// Forgets the running parts (the node is stopping), so that nothing
    /// keeps the store open after it.
    pub fn clear_runtime(&self) {
        self.inner
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Forgets the folded states when service entries arrive, until
    /// `shutdown`.
    pub async fn watch_ledger(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut rx = self.inner.store.subscribe_ledger();
        loop {
            let e = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            match e {
                Ok(entry) if entry.body.kind() != EntryKind::Service => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.inner.generation.fetch_add(1, Ordering::SeqCst);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Every service's state, folded once per change.
    pub fn cached_all(&self) -> Result<Arc<Vec<Arc<ServiceState>>>, ServiceError> {
        let generation = self.inner.generation.load(Ordering::SeqCst);
        if let Some((g, all)) = &*self.inner.cache.lock().unwrap_or_else(|p| p.into_inner())
            && *g == generation
        {
            return Ok(all.clone());
        }
        let all: Arc<Vec<Arc<ServiceState>>> =
            Arc::new(self.states()?.into_iter().map(Arc::new).collect());
        // kept only if nothing arrived while folding
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            *self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((generation, all.clone()));
        }
        Ok(all)
    }

    /// One service's state, from the cache.
    pub fn cached(&self, name: &str) -> Option<Arc<ServiceState>> {
        self.cached_all()
            .ok()?
            .iter()
            .find(|s| s.name.as_str() == name)
            .cloned()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn ledger(&self) -> &LedgerHandle {
        &self.inner.ledger
    }

    /// A replica id nobody has used: random.
    pub fn new_replica_id() -> ReplicaId {
        ReplicaId(rand::random())
    }
}

// ---------------------------------------------------------------------------
// Views: desired state with what the mesh runs.

impl ServiceHandle {
    fn runtime(&self) -> Option<Runtime> {
        self.inner
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every replica of `name` the mesh lists.
    pub fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>, ServiceError> {
        Ok(self.endpoints_of(&self.state(name)?.name))
    }

    /// The replicas of `name` in the mesh view, by revision and node.
    fn endpoints_of(&self, name: &ServiceName) -> Vec<Endpoint> {
        let Some(rt) = self.runtime() else {
            return Vec::new();
        };
        let view = rt.mesh.view();
        let mut out: Vec<Endpoint> = view
            .routes(name)
            .iter()
            .map(|r| Endpoint::new(&r.node, &r.info))
            .collect();
        out.sort_by(|a, b| {
            (a.revision, &a.node, &a.replica).cmp(&(b.revision, &b.node, &b.replica))
        });
        out
    }

    fn summary(&self, state: &ServiceState, endpoints: &[Endpoint]) -> ServiceSummary {
        let spec = state.current_spec().map(|(_, s)| s);
        let owner = self.runtime().and_then(|rt| {
            let view = rt.mesh.view();
            reconcile::owner(state.name.as_str(), view.owner_candidates()).map(str::to_string)
        });
        ServiceSummary {
            name: state.name.to_string(),
            revision: state.current,
            kind: match spec.map(|s| s.task.is_wasm()) {
                Some(true) => "wasm".into(),
                Some(false) => "container".into(),
                None => "-".into(),
            },
            desired: if state.current.is_some() {
                state.replicas
            } else {
                0
            },
            autoscale: spec.and_then(|s| s.autoscale).map(|a| (a.min, a.max)),
            ready: endpoints
                .iter()
                .filter(|e| e.is_ready() && Some(e.revision) == state.current)
                .count() as u32,
            total: endpoints.len() as u32,
            owner,
        }
    }

    /// The replicas running on this node.
    pub fn local_replicas(&self) -> Vec<ReplicaId> {
        self.runtime()
            .map(|rt| rt.replicas.all().iter().map(|r| r.id).collect())
            .unwrap_or_default()
    }

    /// Fault injection for tests: `id`'s health checks fail from now on.
    pub fn fail_health(&self, id: ReplicaId) {
        if let Some(rt) = self.runtime() {
            rt.replicas.fail_health(id);
        }
    }

    /// `weft service ls`: services that are not removed.
    pub fn list(&self) -> Result<Vec<ServiceSummary>, ServiceError> {
        Ok(self
            .states()?
            .iter()
            .filter(|s| s.current.is_some())
            .map(|s| self.summary(s, &self.endpoints_of(&s.name)))
            .collect())
    }

    /// `weft service status NAME`.
    pub fn status(&self, name: &str) -> Result<ServiceStatus, ServiceError> {
        let state = self.state(name)?;
        let endpoints = self.endpoints_of(&state.name);
        let summary = self.summary(&state, &endpoints);
        let rollout = match state.current {
            None => "removed".to_string(),
            Some(rev) => {
                let old = endpoints.iter().filter(|e| e.revision != rev).count();
                if old > 0 || summary.ready < summary.desired {
                    format!(
                        "rolling out revision {rev}: {} of {} ready, {old} of other revisions",
                        summary.ready, summary.desired
                    )
                } else if summary.desired == 0 {
                    "scaled to zero".to_string()
                } else {
                    "stable".to_string()
                }
            }
        };
        Ok(ServiceStatus {
            spec: state.current_spec().map(|(r, _)| r.yaml.clone()),
            history: state.history.clone(),
            summary,
            rollout,
            endpoints,
        })
    }

    /// The recent output of every replica of `name`, gathered from their nodes.
    pub async fn logs(&self, name: &str) -> Result<Vec<ReplicaLogs>, ServiceError> {
        let state = self.state(name)?;
        let Some(rt) = self.runtime() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<ReplicaLogs> = rt
            .replicas
            .logs(&state.name)
            .into_iter()
            .map(|(id, logs)| ReplicaLogs {
                replica: id.to_string(),
                node: rt.mesh.me().to_string(),
                logs,
            })
            .collect();
        let view = rt.mesh.view();
        let nodes: std::collections::BTreeSet<libp2p::PeerId> = view
            .routes(&state.name)
            .iter()
            .filter_map(|r| r.peer)
            .collect();
        for peer in nodes {
            let asked = rt
                .net
                .request(
                    peer,
                    weft_protocol::Request::ServiceLogs {
                        service: state.name.clone(),
                    },
                )
                .await;
            if let Ok(weft_protocol::Response::ServiceLogs { replicas }) = asked {
                out.extend(replicas.into_iter().map(|(id, logs)| ReplicaLogs {
                    replica: id.to_string(),
                    node: peer.to_string(),
                    logs,
                }));
            }
        }
        Ok(out)
    }
}
