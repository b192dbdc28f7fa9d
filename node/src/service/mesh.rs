//! What runs where: the members and every replica they list, refreshed
//! from the membership table a few times a second and at once when a local
//! replica changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_protocol::NodeAdvert;
use weft_protocol::service::{ReplicaId, ReplicaInfo, ReplicaState, ServiceName};

use super::replicas::Replicas;
use crate::net::NetHandle;

/// How often the view is rebuilt without a local change.
const REFRESH: Duration = Duration::from_millis(250);

/// How long a replica that failed to answer is passed over.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// A member of the mesh, this node included.
#[derive(Debug, Clone)]
pub struct Member {
    /// `None` for this node.
    pub peer: Option<PeerId>,
    pub id: String,
    pub advert: NodeAdvert,
    /// Its advert missed two refreshes: it may be gone (placement passes
    /// over it while others can take the replica).
    pub stale: bool,
}

/// One replica and how to reach it.
#[derive(Debug, Clone)]
pub struct Route {
    pub node: String,
    /// `None`: on this node.
    pub peer: Option<PeerId>,
    pub addr: Option<SocketAddr>,
    pub info: ReplicaInfo,
}

impl Route {
    pub fn is_local(&self) -> bool {
        self.peer.is_none()
    }
}

/// A snapshot of the mesh.
#[derive(Debug, Default)]
pub struct View {
    pub members: Vec<Member>,
    pub routes: HashMap<ServiceName, Vec<Route>>,
}

impl View {
    pub fn routes(&self, service: &ServiceName) -> &[Route] {
        self.routes.get(service).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The members that may own services: those that can run replicas
    /// (every weft node can run WASM; a member advertising no executor is
    /// not one that reconciles).
    pub fn owner_candidates(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(|m| m.advert.executors.wasm || m.advert.executors.container_runtime.is_some())
            .map(|m| m.id.as_str())
    }
}

/// The shared view, and this node's counts of requests it has outstanding
/// at each replica (the ingress balances on them).
#[derive(Clone)]
pub struct Mesh {
    view: Arc<RwLock<Arc<View>>>,
    outstanding: Arc<Mutex<HashMap<ReplicaId, Arc<AtomicU32>>>>,
    suspects: Arc<Mutex<HashMap<ReplicaId, Instant>>>,
    /// Nodes whose data plane could not be reached.
    unreachable: Arc<Mutex<HashMap<String, Instant>>>,
    me: String,
    /// How often adverts are refreshed.
    advert_interval: Duration,
}

impl Mesh {
    pub fn new(me: String, advert_interval: Duration) -> Mesh {
        Mesh {
            view: Arc::default(),
            outstanding: Arc::default(),
            suspects: Arc::default(),
            unreachable: Arc::default(),
            me,
            advert_interval,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counter of requests this node has outstanding at `id`.
    pub fn outstanding(&self, id: ReplicaId) -> Arc<AtomicU32> {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    pub fn load(&self, id: ReplicaId) -> u32 {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Passes over `id` for a while (it did not answer).
    pub fn suspect(&self, id: ReplicaId) {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now() + SUSPECT_FOR);
    }

    /// Passes over every replica of `node` for a while (its data plane
    /// could not be reached).
    pub fn unreachable(&self, node: &str) {
        self.unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), Instant::now() + SUSPECT_FOR);
    }

    fn is_unreachable(&self, node: &str) -> bool {
        self.unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|until| *until > Instant::now())
    }

    pub fn is_suspect(&self, id: ReplicaId) -> bool {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Ready replicas of `service` that are not suspect.
    pub fn ready(&self, service: &ServiceName) -> Vec<Route> {
        self.view()
            .routes(service)
            .iter()
            .filter(|r| {
                r.info.state == ReplicaState::Ready
                    && !self.is_suspect(r.info.id)
                    && !self.is_unreachable(&r.node)
            })
            .cloned()
            .collect()
    }

    /// Rebuilds the view now.
    pub async fn refresh(
        &self,
        net: &NetHandle,
        advert: &watch::Sender<NodeAdvert>,
        replicas: &Replicas,
    ) {
        let peers = net.peers().await.unwrap_or_default();
        let mut view = View::default();
        let mine = advert.borrow().clone();
        for r in replicas.all() {
            let info = r.info();
            view.routes
                .entry(info.service.clone())
                .or_default()
                .push(Route {
                    node: self.me.clone(),
                    peer: None,
                    addr: None,
                    info,
                });
        }
        view.members.push(Member {
            peer: None,
            id: self.me.clone(),
            advert: mine,
            stale: false,
        });
        let stale_after = self.advert_interval * 2 + Duration::from_millis(250);
        for p in peers {
            let id = p.peer_id.to_string();
            let addr = p.data_addr();
            for info in p.advert.replicas.iter().flatten() {
                view.routes
                    .entry(info.service.clone())
                    .or_default()
                    .push(Route {
                        node: id.clone(),
                        peer: Some(p.peer_id),
                        addr,
                        info: info.clone(),
                    });
            }
            view.members.push(Member {
                peer: Some(p.peer_id),
                id,
                advert: p.advert,
                stale: p.last_seen_age > stale_after,
            });
        }
        // forget counters and suspicions of replicas that are gone
        {
            let live: std::collections::HashSet<ReplicaId> =
                view.routes.values().flatten().map(|r| r.info.id).collect();
            self.outstanding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|id, c| live.contains(id) || c.load(Ordering::Relaxed) > 0);
            let now = Instant::now();
            self.suspects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, until| *until > now);
            self.unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, until| *until > now);
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// Keeps the view fresh until `shutdown`.
    pub async fn run(
        self,
        net: NetHandle,
        advert: watch::Sender<NodeAdvert>,
        replicas: Replicas,
        shutdown: CancellationToken,
    ) {
        loop {
            self.refresh(&net, &advert, &replicas).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
                _ = replicas.changed() => {}
            }
        }
    }
}
