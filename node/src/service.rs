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

pub mod control;
pub mod fold;
mod views_stub;

use std::sync::Arc;

use serde::Serialize;
use weft_protocol::service::{ReplicaId, ReplicaState, ServiceName, ServiceSpec};

use crate::ledger::{LedgerError, LedgerHandle};
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
}

impl ServiceHandle {
    pub fn new(store: Store, ledger: LedgerHandle) -> ServiceHandle {
        ServiceHandle {
            inner: Arc::new(Inner { store, ledger }),
        }
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
