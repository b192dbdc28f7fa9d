//! The replicas this node runs: start, health, drain, stop, and the list in
//! the node's advert.
//!
//! A replica is started by `Request::StartReplica` from the service's owner
//! (or by this node's ingress, for a function scaled from zero). The spec
//! comes from this node's own ledger: a peer can only ask for a revision that
//! exists, and at most [`MAX_LOCAL_REPLICAS`] run here at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use weft_protocol::service::{
    Health, ReplicaId, ReplicaInfo, ReplicaState, ServiceName, ServiceSpec, ServiceTask,
};
use weft_protocol::{ErrorCode, NodeAdvert};

use super::ServiceHandle;
use super::backends::{self, BackendCtx};
use crate::sched::now_ms;

/// Most replicas one node runs at once.
pub const MAX_LOCAL_REPLICAS: usize = 64;

/// How long a replica's start (fetch, compile, container start) may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a stopped replica keeps refusing (rather than vanishing), so
/// that nodes still routing to it retry elsewhere at once.
const LINGER: Duration = Duration::from_secs(5);

/// What runs a replica's requests.
pub trait Backend: Send + Sync {
    /// One request, answered within the service's timeout.
    fn handle(
        &self,
        req: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, String>>;
    /// Its recent output.
    fn logs(&self) -> String;
    /// `false` once its process is gone (containers).
    fn alive(&self) -> bool {
        true
    }
    /// Whether it takes requests, for a service without a health check (a
    /// container's port accepts a connection).
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Stops it; a container gets `grace` to exit.
    fn stop(self: Arc<Self>, grace: Duration) -> BoxFuture<'static, ()>;
}

/// One replica on this node.
pub struct Replica {
    pub id: ReplicaId,
    pub service: ServiceName,
    pub revision: u32,
    status: Mutex<Status>,
    inflight: AtomicU32,
    /// Unix ms of the last request.
    last_used_ms: AtomicU64,
    backend: OnceLock<Arc<dyn Backend>>,
    cancel: CancellationToken,
    timeout: Duration,
    /// Fault injection: its health checks fail.
    sick: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct Status {
    state: ReplicaState,
    note: Option<String>,
    ready_since_ms: Option<u64>,
}

impl Replica {
    pub fn state(&self) -> ReplicaState {
        self.lock().state
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn info(&self) -> ReplicaInfo {
        let s = self.lock().clone();
        ReplicaInfo {
            id: self.id,
            service: self.service.clone(),
            revision: self.revision,
            state: s.state,
            inflight: self.inflight(),
            ready_since_ms: s.ready_since_ms,
            note: s.note,
        }
    }

    /// Answers one request. `Err(None)`: the replica refused it unseen
    /// (draining, stopped, not started); `Err(Some(why))`: it failed.
    pub async fn invoke(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, Option<String>> {
        let state = self.state();
        if !matches!(state, ReplicaState::Ready | ReplicaState::Starting) {
            return Err(None);
        }
        let Some(backend) = self.backend.get() else {
            return Err(None);
        };
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let _done = Decrement(&self.inflight);
        match tokio::time::timeout(self.timeout, backend.handle(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(Some(format!(
                "no answer within the service's timeout of {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    fn set(&self, state: ReplicaState, note: Option<String>) -> bool {
        let mut s = self.lock();
        if s.state == state && s.note == note {
            return false;
        }
        if state == ReplicaState::Ready && s.state != ReplicaState::Ready {
            s.ready_since_ms = Some(now_ms());
        }
        if state != ReplicaState::Ready {
            s.ready_since_ms = None;
        }
        s.state = state;
        s.note = note;
        true
    }
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replicas of this node.
#[derive(Clone)]
pub struct Replicas {
    inner: Arc<Inner>,
}

struct Inner {
    table: Mutex<BTreeMap<ReplicaId, Arc<Replica>>>,
    services: ServiceHandle,
    ctx: BackendCtx,
    advert: watch::Sender<NodeAdvert>,
    /// Pokes the routing table when a local replica changes.
    changed: tokio::sync::Notify,
    shutdown: CancellationToken,
}

impl Replicas {
    pub fn new(
        services: ServiceHandle,
        ctx: BackendCtx,
        advert: watch::Sender<NodeAdvert>,
        shutdown: CancellationToken,
    ) -> Replicas {
        Replicas {
            inner: Arc::new(Inner {
                table: Mutex::new(BTreeMap::new()),
                services,
                ctx,
                advert,
                changed: tokio::sync::Notify::new(),
                shutdown,
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReplicaId, Arc<Replica>>> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: ReplicaId) -> Option<Arc<Replica>> {
        self.table().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.table().values().cloned().collect()
    }

    pub fn of(&self, service: &ServiceName) -> Vec<Arc<Replica>> {
        self.table()
            .values()
            .filter(|r| &r.service == service)
            .cloned()
            .collect()
    }

    /// Makes `id`'s health checks fail from now on: fault injection for
    /// tests of what the mesh does with an unhealthy replica.
    pub fn fail_health(&self, id: ReplicaId) {
        if let Some(r) = self.get(id) {
            r.sick.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves when a local replica changed state.
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }

    /// Whether this node can run `spec`'s task at all.
    pub fn can_run(&self, spec: &ServiceSpec) -> Result<(), String> {
        let ex = self.inner.ctx.sandbox.executors();
        match &spec.task {
            ServiceTask::Wasm { .. } if ex.wasm.is_empty() => Err("this node runs no WASM".into()),
            ServiceTask::Container { .. } if ex.container.is_none() => {
                Err("this node has no container runtime".into())
            }
            _ => Ok(()),
        }
    }

    /// Starts replica `id` of `service` at `revision`, with the spec from
    /// this node's ledger. Returns once it is starting.
    pub fn start(
        &self,
        service: &ServiceName,
        revision: u32,
        id: ReplicaId,
    ) -> Result<(), (ErrorCode, String)> {
        if self.inner.shutdown.is_cancelled() {
            return Err((ErrorCode::Busy, "this node is stopping".into()));
        }
        let state = self
            .inner
            .services
            .state(service.as_str())
            .map_err(|e| (ErrorCode::NotFound, e.to_string()))?;
        let rev = state.revision(revision).ok_or_else(|| {
            (
                ErrorCode::NotFound,
                format!("service {service} has no revision {revision} here (yet)"),
            )
        })?;
        let spec = rev.spec.clone().ok_or_else(|| {
            (
                ErrorCode::Unsupported,
                format!("this node cannot read revision {revision} of service {service}"),
            )
        })?;
        if state.current.is_none() {
            return Err((
                ErrorCode::NotFound,
                format!("service {service} was removed"),
            ));
        }
        self.can_run(&spec)
            .map_err(|why| (ErrorCode::Unsupported, why))?;
        let replica = {
            let mut table = self.table();
            if table.contains_key(&id) {
                return Ok(());
            }
            if table.len() >= MAX_LOCAL_REPLICAS {
                return Err((
                    ErrorCode::Busy,
                    format!("this node already runs {MAX_LOCAL_REPLICAS} replicas"),
                ));
            }
            // a peer may ask for any revision that exists, but not for more
            // replicas of one service than a rollout of it can ever need
            let cap = match spec.autoscale {
                Some(a) => a.max,
                None => state.replicas.max(spec.base_replicas()),
            } + spec.update.max_surge;
            let here = table.values().filter(|r| &r.service == service).count();
            if here as u32 >= cap.max(1) {
                return Err((
                    ErrorCode::Busy,
                    format!("this node already runs {here} replicas of {service}"),
                ));
            }
            let replica = Arc::new(Replica {
                id,
                service: service.clone(),
                revision,
                status: Mutex::new(Status {
                    state: ReplicaState::Starting,
                    note: None,
                    ready_since_ms: None,
                }),
                inflight: AtomicU32::new(0),
                last_used_ms: AtomicU64::new(now_ms()),
                backend: OnceLock::new(),
                cancel: self.inner.shutdown.child_token(),
                timeout: spec.timeout.duration(),
                sick: std::sync::atomic::AtomicBool::new(false),
            });
            table.insert(id, replica.clone());
            replica
        };
        info!(%service, revision, replica = %id, "starting a replica");
        self.publish();
        let this = self.clone();
        let span = tracing::info_span!("replica", %service, replica = %id);
        tokio::spawn(async move { this.run(replica, spec).await }.instrument(span));
        Ok(())
    }

    /// Stops taking requests on `id`, lets those in flight finish (at most
    /// `drain`), then stops it.
    pub fn stop(&self, id: ReplicaId, drain: Duration) {
        let Some(r) = self.get(id) else { return };
        if r.state() == ReplicaState::Draining {
            return;
        }
        r.set(ReplicaState::Draining, None);
        self.publish();
        let this = self.clone();
        tokio::spawn(async move {
            let until = Instant::now() + drain;
            while r.inflight() > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r.cancel.cancel();
            if let Some(b) = r.backend.get() {
                b.clone().stop(Duration::from_secs(5)).await;
            }
            info!(service = %r.service, replica = %r.id, "replica stopped");
            // refuse for a while rather than vanish, then forget it
            tokio::time::sleep(LINGER).await;
            this.table().remove(&r.id);
            this.publish();
        });
    }

    /// Stops every replica (the node is stopping).
    pub async fn stop_all(&self) {
        let all = self.all();
        for r in &all {
            r.set(ReplicaState::Draining, None);
        }
        self.publish();
        let until = Instant::now() + Duration::from_secs(2);
        while all.iter().any(|r| r.inflight() > 0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for r in all {
            r.cancel.cancel();
            if let Some(b) = r.backend.get() {
                b.clone().stop(Duration::from_secs(2)).await;
            }
        }
        self.table().clear();
    }

    /// The replicas of `service` here and their recent output.
    pub fn logs(&self, service: &ServiceName) -> Vec<(ReplicaId, String)> {
        self.of(service)
            .into_iter()
            .map(|r| {
                let mut log = r.backend.get().map(|b| b.logs()).unwrap_or_default();
                let max = weft_protocol::bounds::MAX_REPLICA_LOG_BYTES;
                if log.len() > max {
                    let mut cut = log.len() - max;
                    while !log.is_char_boundary(cut) {
                        cut += 1;
                    }
                    log = log[cut..].to_string();
                }
                (r.id, log)
            })
            .collect()
    }

    /// Lists the replicas in the advert (republished when it changed).
    pub fn publish(&self) {
        let infos: Vec<ReplicaInfo> = self
            .all()
            .iter()
            .take(weft_protocol::service::MAX_ADVERT_REPLICAS)
            .map(|r| r.info())
            .collect();
        let infos = (!infos.is_empty()).then_some(infos);
        self.inner.advert.send_if_modified(|a| {
            // the in-flight count changes all the time; it travels with
            // the next change or the next periodic advert
            let same = match (&a.replicas, &infos) {
                (None, None) => true,
                (Some(x), Some(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .zip(y)
                            .all(|(a, b)| a.id == b.id && a.state == b.state && a.note == b.note)
                }
                _ => false,
            };
            a.replicas = infos.clone();
            !same
        });
        self.inner.changed.notify_waiters();
    }

    /// A replica's life: prepare, health, until stopped.
    async fn run(&self, r: Arc<Replica>, spec: ServiceSpec) {
        let started = Instant::now();
        let prepared = tokio::select! {
            _ = r.cancel.cancelled() => return,
            p = tokio::time::timeout(
                START_TIMEOUT,
                backends::start(&self.inner.ctx, &spec, r.id),
            ) => p,
        };
        let backend = match prepared {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                warn!(error = %e, "the replica could not start");
                self.fail(&r, e);
                return;
            }
            Err(_) => {
                self.fail(
                    &r,
                    format!("not started within {} s", START_TIMEOUT.as_secs()),
                );
                return;
            }
        };
        if r.backend.set(backend.clone()).is_err() || r.cancel.is_cancelled() {
            backend.stop(Duration::from_secs(1)).await;
            return;
        }
        debug!(ms = started.elapsed().as_millis() as u64, "replica started");
        self.watch_health(&r, &spec, backend).await;
    }

    fn fail(&self, r: &Replica, why: String) {
        let mut why = why;
        weft_protocol::bounds::clip(&mut why, 200);
        if r.set(ReplicaState::Failed, Some(why)) {
            self.publish();
        }
    }

    async fn watch_health(&self, r: &Arc<Replica>, spec: &ServiceSpec, backend: Arc<dyn Backend>) {
        let health = spec.health.clone().unwrap_or(Health {
            http: String::new(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            failures: 3,
        });
        let mut failures = 0u32;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = r.cancel.cancelled() => return,
                    _ = tokio::time::sleep(health.interval) => {}
                }
            }
            first = false;
            if r.state() == ReplicaState::Draining || r.cancel.is_cancelled() {
                return;
            }
            if !backend.alive() {
                self.fail(r, "its process ended".into());
                return;
            }
            let ok = if r.sick.load(Ordering::Relaxed) {
                Err("health check failed (injected)".to_string())
            } else if spec.health.is_none() {
                backend.ready().await
            } else {
                probe(&backend, &health).await
            };
            let changed = match ok {
                Ok(()) => {
                    failures = 0;
                    r.set(ReplicaState::Ready, None)
                }
                Err(why) => {
                    failures += 1;
                    if failures >= health.failures {
                        r.set(ReplicaState::Unhealthy, Some(why))
                    } else {
                        false
                    }
                }
            };
            if changed {
                info!(state = r.state().as_str(), "replica health changed");
                self.publish();
            }
        }
    }
}

/// One health check: GET the path, 2xx or 3xx within the timeout.
async fn probe(backend: &Arc<dyn Backend>, health: &Health) -> Result<(), String> {
    let req = http::Request::get(health.http.as_str())
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "weft-health")
        .body(Bytes::new())
        .map_err(|e| format!("bad health path: {e}"))?;
    match tokio::time::timeout(health.timeout, backend.handle(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() || resp.status().is_redirection() => Ok(()),
        Ok(Ok(resp)) => Err(format!("health check answered {}", resp.status())),
        Ok(Err(e)) => Err(format!("health check failed: {e}")),
        Err(_) => Err(format!(
            "health check got no answer within {} ms",
            health.timeout.as_millis()
        )),
    }
}

/// Where replicas keep their inputs.
pub fn replica_dir(work_dir: &std::path::Path, id: ReplicaId) -> PathBuf {
    work_dir.join("services").join(id.to_string())
}
