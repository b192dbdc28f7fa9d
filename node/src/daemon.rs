//! The composition root: starts a node's subsystems in order (store, mesh,
//! data plane, API) and stops them in reverse, on one cancellation token. It also owns
//! the loop that hands the mesh's inbound requests and gossip to the
//! subsystem that answers them.
//!
//! [`Node`] is what `weft daemon` runs and what the cluster harness starts
//! several of in one process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_protocol::job::ByteSize;
use weft_protocol::{ErrorCode, NodeAdvert, Request, Response, Topic};

use crate::api::{self, ApiState, Metrics, NodeView};
use crate::config::{Config, ConfigError};
use crate::home::{Home, HomeError, write_atomic};
use crate::ledger::{self, LedgerEvent, LedgerHandle};
use crate::net::{self, NetConfig, NetError, NetEvent, NetHandle};
use crate::pipeline::{self, PipelineHandle};
use crate::resources::{self, AdvertInputs, DeclaredGpu, ResourceError};
use crate::sched::{self, SchedConfig, SchedError, SchedHandle};
use crate::store::{Store, StoreError};
use crate::tags::{self, TagEvent, TagsHandle};
use crate::transfer::{self, Faults, TransferConfig, TransferError, TransferHandle};
use weft_sandbox::{Sandbox, SandboxConfig, SandboxError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another weft daemon is running on {home} (pid {pid}); stop it first or use another --home"
    )]
    AlreadyRunning { home: String, pid: String },
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("API on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Resources(#[from] ResourceError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("config: {0}")]
    BadConfig(String),
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Sched(#[from] SchedError),
}

/// Holds `daemon.lock` (flock) for the node's lifetime.
struct LockFile {
    _file: File,
}

impl LockFile {
    fn acquire(home: &Home) -> Result<LockFile, DaemonError> {
        let path = home.lock_file();
        let io = |source| DaemonError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: the fd belongs to `file`, open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            return Err(DaemonError::AlreadyRunning {
                home: home.root().display().to_string(),
                pid: pid.trim().to_string(),
            });
        }
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(LockFile { _file: file })
    }
}

/// A running node.
pub struct Node {
    home: Home,
    peer_id: String,
    api_addr: SocketAddr,
    store: Store,
    net: NetHandle,
    sched: SchedHandle,
    pipelines: PipelineHandle,
    services: crate::service::ServiceHandle,
    ingress_addr: Option<SocketAddr>,
    s3_addr: Option<SocketAddr>,
    transfer: TransferHandle,
    ledger: LedgerHandle,
    triggers: ledger::triggers::TriggersHandle,
    advert: watch::Sender<NodeAdvert>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    _lock: LockFile,
}

fn multiaddrs(what: &str, list: &[String]) -> Result<Vec<Multiaddr>, DaemonError> {
    list.iter()
        .map(|a| {
            a.parse().map_err(|e| {
                DaemonError::BadConfig(format!("{what} entry {a:?} is not a multiaddr: {e}"))
            })
        })
        .collect()
}

fn declared_gpus(config: &Config) -> Result<Vec<DeclaredGpu>, DaemonError> {
    let mut out = Vec::new();
    for g in &config.gpus {
        let memory: ByteSize = g.memory.parse().map_err(|e| {
            DaemonError::BadConfig(format!("[[gpu]] model {:?}: memory: {e}", g.model))
        })?;
        for _ in 0..g.count.max(1) {
            out.push(DeclaredGpu {
                index: None,
                vendor: None,
                model: g.model.clone(),
                memory_bytes: memory.bytes(),
            });
        }
    }
    Ok(out)
}

impl Node {
    /// Starts a node on `home` with `config`.
    pub async fn start(home: Home, config: Config) -> Result<Node, DaemonError> {
        home.ensure()?;
        let lock = LockFile::acquire(&home)?;
        {
            // task folders and image roots: no other local user may enter
            use std::os::unix::fs::PermissionsExt as _;
            let work = home.work_dir();
            std::fs::create_dir_all(&work)
                .and_then(|()| {
                    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|source| HomeError::Io {
                    path: work.clone(),
                    source,
                })?;
        }
        let keypair = home.identity()?;
        let peer_id = keypair.public().to_peer_id().to_string();
        let started = Instant::now();

        config.check_labels()?;
        let api_addr = config.api_addr()?;
        // the API's token: from config, else the home's 0600 file (made once)
        let token: Arc<str> = match config.api.token.as_deref() {
            Some(t) => Arc::from(t),
            None => Arc::from(home.ensure_api_token()?),
        };
        let roots = Arc::new(
            api::paths::PathRoots::new(&config.api.path_roots).map_err(DaemonError::BadConfig)?,
        );
        // checked now, made again once the port is known
        api::guard::Access::new(api_addr, token.clone(), &config.api.allowed_hosts)
            .map_err(DaemonError::BadConfig)?;

        // 1. store
        let store = {
            let dir = home.store_dir();
            let peer = peer_id.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir, &peer))
                .await
                .map_err(|e| DaemonError::Io {
                    path: "store".into(),
                    source: io::Error::other(e.to_string()),
                })??
        };

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let metrics = Arc::new(Metrics::default());

        // 2. the mesh, with this node's advert
        let secret = config.cluster_secret()?.ok_or_else(|| {
            DaemonError::BadConfig(
                "no cluster secret: run `weft init` (or `weft init --cluster-secret HEX` to join a cluster)"
                    .into(),
            )
        })?;
        // the sandbox first: what it can run goes into the advert
        let mut sandbox_config = SandboxConfig::new(home.root().join("sandbox"));
        sandbox_config.oci_runtime = config
            .sandbox
            .runtime
            .as_ref()
            .map(std::path::PathBuf::from);
        sandbox_config.task_disk_quota = Some(config.sandbox.task_disk_quota).filter(|q| *q > 0);
        if !config.sandbox.userns {
            sandbox_config.userns = None;
        }
        let sandbox = {
            let c = sandbox_config;
            tokio::task::spawn_blocking(move || Sandbox::new(c))
                .await
                .map_err(|e| DaemonError::BadConfig(format!("sandbox: {e}")))??
        };
        let executors = sandbox.executors();
        let declared = declared_gpus(&config)?;
        let machine = resources::detect(&home.store_dir(), &declared).await?;
        let inputs = AdvertInputs {
            executors: weft_protocol::Executors {
                wasm: true,
                container_runtime: executors.container.as_ref().map(|r| r.name.clone()),
            },
            labels: config.node.labels.clone(),
            ..AdvertInputs::default()
        };
        let (advert, advert_rx) = watch::channel(resources::local_advert(&machine, inputs));
        let mut net_config = NetConfig::new(keypair.clone(), secret);
        net_config.listen = multiaddrs("network.listen", &config.network.listen)?;
        net_config.bootstrap = multiaddrs("network.bootstrap", &config.network.bootstrap)?;
        net_config.mdns = config.network.mdns;
        net_config.advert_interval = Duration::from_millis(config.network.advert_interval_ms);
        net_config.advert_ttl = Duration::from_millis(config.network.advert_ttl_ms);
        let (net, events) = net::spawn(net_config, advert_rx).await?;

        // 3. the data plane, its address in the advert
        let data_addr = config.data_addr()?;
        let mut transfer_config = TransferConfig::new(keypair.clone(), secret, data_addr);
        transfer_config.streams_per_peer = config.data.streams_per_peer;
        transfer_config.replication_interval =
            Duration::from_millis(config.data.replication_interval_ms.max(100));
        transfer_config.faults = Faults {
            flip_bytes: config.data.faults.flip_bytes,
            max_send_rate: Some(config.data.faults.max_send_rate).filter(|r| *r > 0),
        };
        let (transfer, transfer_actor) = transfer::spawn(
            transfer_config,
            store.clone(),
            net.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await?;
        tasks.spawn(transfer_actor);
        let data_plane_addr = transfer.local_addr().to_string();
        advert.send_modify(|a| a.data_plane_addr = Some(data_plane_addr));

        // 4. tag replication
        let (tags, replicator) = tags::replicator(store.clone(), net.clone(), shutdown.clone());
        tasks.spawn(replicator);
        let (ledger, ledger_loop) =
            ledger::replicator(store.clone(), Some(net.clone()), shutdown.clone());
        tasks.spawn(ledger_loop);
        let (triggers, triggers_loop) = ledger::triggers::watcher(ledger.clone(), shutdown.clone());
        tasks.spawn(triggers_loop);

        // 5. the scheduler
        let (sched, loops) = sched::start(
            SchedConfig {
                me: net.local_peer_id(),
                keypair: keypair.clone(),
                store: store.clone(),
                net: net.clone(),
                sandbox: sandbox.clone(),
                fetcher: Arc::new(sched::MeshFetcher::new(
                    transfer.clone(),
                    net.clone(),
                    store.clone(),
                )),
                work_dir: home.work_dir(),
                advert: advert.clone(),
                advert_ttl: Duration::from_millis(config.network.advert_ttl_ms),
            },
            shutdown.clone(),
        )?;
        for l in loops {
            tasks.spawn(l);
        }

        // 6. the pipeline engine, over the scheduler and the ledger
        let (pipelines, engine) = pipeline::start(pipeline::EngineConfig {
            sched: sched.clone(),
            ledger: ledger.clone(),
            net: Some(net.clone()),
            me: peer_id.clone(),
            shutdown: shutdown.clone(),
        });
        tasks.spawn(engine);
        triggers.set_starter(pipeline::trigger_starter(pipelines.clone()));

        // 7. services: desired state in the ledger, replicas, the ingress
        let services = crate::service::ServiceHandle::new(store.clone(), ledger.clone());
        tasks.spawn(services.clone().watch_ledger(shutdown.clone()));
        let replicas = crate::service::replicas::Replicas::new(
            services.clone(),
            crate::service::backends::BackendCtx {
                store: store.clone(),
                fetcher: Arc::new(sched::MeshFetcher::new(
                    transfer.clone(),
                    net.clone(),
                    store.clone(),
                )),
                sandbox: sandbox.clone(),
                work_dir: home.work_dir(),
            },
            advert.clone(),
            shutdown.child_token(),
        );
        {
            let replicas = replicas.clone();
            let services = services.clone();
            let transfer_for_stop = transfer.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                stop.cancelled().await;
                replicas.stop_all().await;
                services.clear_runtime();
                transfer_for_stop.set_service_streams(None);
            });
        }
        let mesh = crate::service::mesh::Mesh::new(
            peer_id.clone(),
            Duration::from_millis(config.network.advert_interval_ms),
        );
        tasks.spawn(mesh.clone().run(
            net.clone(),
            advert.clone(),
            replicas.clone(),
            shutdown.clone(),
        ));
        crate::service::proxy::install(&transfer, replicas.clone());
        services.set_runtime(crate::service::Runtime {
            mesh: mesh.clone(),
            replicas: replicas.clone(),
            net: net.clone(),
        });
        tasks.spawn(
            crate::service::reconcile::Reconciler::new(
                services.clone(),
                replicas.clone(),
                mesh.clone(),
                net.clone(),
            )
            .run(shutdown.clone()),
        );
        let ingress_addr = match config.ingress_addr().map_err(DaemonError::Config)? {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| DaemonError::Bind { addr, source })?;
                let ingress = Arc::new(crate::service::ingress::Ingress::new(
                    services.clone(),
                    replicas.clone(),
                    mesh.clone(),
                    transfer.clone(),
                    net.clone(),
                    config.ingress.domain.clone(),
                ));
                let stop = shutdown.clone();
                tasks.spawn(async move {
                    if let Err(e) = crate::service::ingress::serve(listener, ingress, stop).await {
                        tracing::error!(error = %e, "ingress stopped");
                    }
                });
                write_url_file(&home.ingress_file(), bound)?;
                Some(bound)
            }
        };

        let s3_addr =
            match crate::s3::listen_addr(&config.s3.listen).map_err(DaemonError::BadConfig)? {
                None => None,
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|source| DaemonError::Bind { addr, source })?;
                    let bound = listener
                        .local_addr()
                        .map_err(|source| DaemonError::Bind { addr, source })?;
                    let setup = crate::s3::S3Setup {
                        store: store.clone(),
                        transfer: Some(transfer.clone()),
                        metrics: metrics.clone(),
                        keys_file: home.s3_keys_path(),
                        uploads_dir: home.s3_uploads_dir(),
                        domain: config.s3.domain.clone(),
                    };
                    let stop = shutdown.clone();
                    tasks.spawn(async move {
                        if let Err(e) = crate::s3::serve(listener, setup, stop).await {
                            tracing::error!(error = %e, "S3 gateway stopped");
                        }
                    });
                    write_url_file(&home.s3_file(), bound)?;
                    tracing::info!(addr = %bound, "S3 gateway listening");
                    Some(bound)
                }
            };

        tasks.spawn(dispatch(
            events,
            Subsystems {
                store: store.clone(),
                tags,
                ledger: ledger.clone(),
                sched: sched.clone(),
                pipelines: pipelines.clone(),
                transfer: transfer.clone(),
                replicas: replicas.clone(),
            },
            shutdown.clone(),
        ));
        tasks.spawn(refresh_resources(
            advert.clone(),
            home.store_dir(),
            declared,
            Duration::from_millis(config.network.advert_interval_ms.max(1000) * 5),
            shutdown.clone(),
        ));

        // last: the API, so that everything it reaches is up
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: api_addr,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: api_addr,
            source,
        })?;
        let view = Arc::new(View {
            net: net.clone(),
            transfer: transfer.clone(),
            advert: advert.subscribe(),
            api_addr,
            started,
        });
        let access = api::guard::Access::new(api_addr, token, &config.api.allowed_hosts)
            .map_err(DaemonError::BadConfig)?;
        let state = ApiState {
            store: store.clone(),
            metrics,
            access: Arc::new(access),
            roots,
            started,
            node: Some(view),
            sched: Some(sched.clone()),
            transfer: Some(transfer.clone()),
            ledger: Some(ledger.clone()),
            pipelines: Some(pipelines.clone()),
            services: Some(services.clone()),
        };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = api::serve(listener, state, stop).await {
                tracing::error!(error = %e, "API server stopped");
            }
        });
        let api_file = home.api_file();
        write_atomic(&api_file, format!("http://{api_addr}\n").as_bytes(), 0o644).map_err(
            |source| DaemonError::Io {
                path: api_file.display().to_string(),
                source,
            },
        )?;
        tracing::info!(peer = %peer_id, api = %api_addr, home = %home.root().display(), "node started");
        Ok(Node {
            home,
            peer_id,
            api_addr,
            store,
            net,
            sched,
            pipelines,
            services,
            ingress_addr,
            s3_addr,
            transfer,
            ledger,
            triggers,
            advert,
            shutdown,
            tasks,
            _lock: lock,
        })
    }

    /// The mesh handle.
    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// The scheduler handle.
    /// The ledger: model versions, aliases, runs, lineage, pipeline runs.
    pub fn ledger(&self) -> &LedgerHandle {
        &self.ledger
    }

    /// Where the ingress listens, when it does.
    pub fn ingress_addr(&self) -> Option<SocketAddr> {
        self.ingress_addr
    }

    /// Where the S3 gateway listens, when it does.
    pub fn s3_addr(&self) -> Option<SocketAddr> {
        self.s3_addr
    }

    /// Services: desired state, replicas, the ingress.
    pub fn services(&self) -> &crate::service::ServiceHandle {
        &self.services
    }

    /// The pipeline engine's handle.
    pub fn pipelines(&self) -> &PipelineHandle {
        &self.pipelines
    }

    /// Where tag changes start pipelines (see `ledger::triggers`).
    pub fn triggers(&self) -> &ledger::triggers::TriggersHandle {
        &self.triggers
    }

    pub fn sched(&self) -> &SchedHandle {
        &self.sched
    }

    /// This node's current advert (as gossiped, less what the mesh fills in).
    pub fn advert(&self) -> NodeAdvert {
        self.advert.borrow().clone()
    }

    /// The data plane: fetches from the mesh, replication.
    pub fn transfer(&self) -> &TransferHandle {
        &self.transfer
    }

    /// Changes this node's advert (labels, task counts); it is gossiped at once.
    pub fn update_advert(&self, f: impl FnOnce(&mut NodeAdvert)) {
        self.advert.send_modify(f);
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// `http://ADDR`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Stops the subsystems in reverse order of start and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.net.shutdown().await {
            tracing::debug!(error = %e, "net already stopped");
        }
        let _ = fs::remove_file(self.home.api_file());
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "final store flush failed");
        }
        tracing::info!(peer = %self.peer_id, "node stopped");
    }
}

/// What the dispatch loop hands requests and gossip to.
#[derive(Clone)]
struct Subsystems {
    store: Store,
    tags: TagsHandle,
    ledger: LedgerHandle,
    sched: SchedHandle,
    pipelines: PipelineHandle,
    transfer: TransferHandle,
    replicas: crate::service::replicas::Replicas,
}

/// Answers one request from a peer.
async fn answer(subsystems: Subsystems, peer: libp2p::PeerId, request: Request) -> Response {
    let request = match request {
        r @ (Request::Reserve { .. }
        | Request::Release { .. }
        | Request::Claim { .. }
        | Request::TaskUpdate { .. }
        | Request::CancelJob { .. }
        | Request::CancelTask { .. }
        | Request::GetJob { .. }) => {
            return subsystems.sched.answer(peer, r).await.unwrap_or_else(|| {
                Response::error(ErrorCode::Internal, "scheduler did not answer")
            });
        }
        other => other,
    };
    match request {
        Request::Ping { nonce } => Response::Pong { nonce },
        Request::TagSync { after } => tags::answer_sync(&subsystems.store, after).await,
        Request::LedgerSync { after } => ledger::answer_sync(&subsystems.store, after).await,
        Request::CancelPipeline { run } => subsystems.pipelines.answer_cancel(peer, run).await,
        Request::LedgerPush { entries } => {
            ledger::answer_push(&subsystems.store, peer, entries).await
        }
        request @ (Request::Has { .. } | Request::Replicate { .. }) => {
            subsystems.transfer.answer(peer, request).await
        }
        Request::StartReplica {
            service,
            revision,
            replica,
        } => match subsystems.replicas.start(&service, revision, replica) {
            Ok(()) => Response::Ack,
            Err((code, message)) => Response::error(code, message),
        },
        Request::StopReplica {
            service,
            replica,
            drain_ms,
        } => {
            if subsystems
                .replicas
                .get(replica)
                .is_some_and(|r| r.service == service)
            {
                let drain = Duration::from_millis(u64::from(drain_ms))
                    .min(crate::service::reconcile::DRAIN * 3);
                subsystems.replicas.stop(replica, drain);
            }
            Response::Ack
        }
        Request::ServiceLogs { service } => Response::ServiceLogs {
            replicas: subsystems.replicas.logs(&service),
        },
        other => {
            tracing::debug!(%peer, request = ?other, "request not served");
            Response::error(
                ErrorCode::Unsupported,
                "this node does not serve that request",
            )
        }
    }
}

/// Hands what the mesh receives to the subsystem that answers it.
async fn dispatch(
    mut events: mpsc::Receiver<NetEvent>,
    subsystems: Subsystems,
    shutdown: CancellationToken,
) {
    let mut answering = JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(_) = answering.join_next(), if !answering.is_empty() => continue,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            NetEvent::InboundRequest {
                peer,
                request,
                reply,
            } => {
                let subsystems = subsystems.clone();
                answering.spawn(async move {
                    let _ = reply.send(answer(subsystems, peer, request).await);
                });
                // reap finished answers so the set stays small
                while answering.try_join_next().is_some() {}
            }
            NetEvent::Gossip {
                topic: Topic::Tags,
                source,
                data,
            } => subsystems.tags.send(TagEvent::Gossip { source, data }),
            NetEvent::Gossip {
                topic: Topic::Jobs,
                source,
                data,
            } => subsystems.sched.gossip(source, data),
            NetEvent::Gossip {
                topic: Topic::Ledger,
                source,
                data,
            } => subsystems.ledger.send(LedgerEvent::Gossip { source, data }),
            NetEvent::Gossip { topic, source, .. } => {
                tracing::debug!(%topic, %source, "gossip not handled");
            }
            NetEvent::PeerUp(peer) => {
                tracing::info!(%peer, "peer up");
                subsystems.tags.send(TagEvent::PeerUp(peer));
                subsystems.ledger.send(LedgerEvent::PeerUp(peer));
                subsystems.sched.peer_up();
            }
            NetEvent::PeerGone(peer) => {
                tracing::info!(%peer, "peer gone");
                subsystems.sched.peer_gone(peer);
                subsystems.transfer.nudge_replication().await;
            }
        }
    }
}

/// Re-reads memory and disk now and then, so adverts stay current.
async fn refresh_resources(
    advert: watch::Sender<NodeAdvert>,
    store_dir: std::path::PathBuf,
    declared: Vec<DeclaredGpu>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match resources::detect(&store_dir, &declared).await {
            Ok(r) => {
                advert.send_if_modified(|a| {
                    let changed = a.memory_free_bytes.abs_diff(r.memory_free_bytes) > (64 << 20)
                        || a.disk_free_bytes.abs_diff(r.disk_free_bytes) > (256 << 20)
                        || a.gpus != r.gpus;
                    a.memory_free_bytes = r.memory_free_bytes;
                    a.disk_free_bytes = r.disk_free_bytes;
                    a.gpus = r.gpus;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read resources"),
        }
    }
}

/// What the API reports about the node beyond its store.
struct View {
    net: NetHandle,
    transfer: TransferHandle,
    advert: watch::Receiver<NodeAdvert>,
    api_addr: SocketAddr,
    started: Instant,
}

impl NodeView for View {
    fn node(&self) -> BoxFuture<'_, serde_json::Value> {
        async move {
            let addrs = self
                .net
                .dialable_addrs()
                .await
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>();
            let mut advert = self.advert.borrow().clone();
            advert.peer_id = self.net.local_peer_id().to_string();
            serde_json::json!({
                "peer_id": self.net.local_peer_id().to_string(),
                "version": weft_protocol::VERSION,
                "api": format!("http://{}", self.api_addr),
                "addrs": addrs,
                "uptime_s": self.started.elapsed().as_secs(),
                "advert": advert,
            })
        }
        .boxed()
    }

    fn peers(&self) -> BoxFuture<'_, serde_json::Value> {
        async move {
            let peers = self.net.peers().await.unwrap_or_default();
            serde_json::Value::Array(
                peers
                    .into_iter()
                    .map(|p| {
                        serde_json::json!({
                            "peer_id": p.peer_id.to_string(),
                            "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                            "connected": p.connected,
                            "last_seen_ms": p.last_seen_age.as_millis() as u64,
                            "advert": p.advert,
                        })
                    })
                    .collect(),
            )
        }
        .boxed()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        async move {
            let peers = self.net.peers().await.unwrap_or_default();
            let connected = peers.iter().filter(|p| p.connected).count();
            format!(
                "# HELP weft_peers Live peers in the membership table.\n# TYPE weft_peers gauge\nweft_peers {}\n# HELP weft_peers_connected Peers with an authenticated connection.\n# TYPE weft_peers_connected gauge\nweft_peers_connected {connected}\n{}",
                peers.len(),
                self.transfer.render_metrics().await
            )
        }
        .boxed()
    }
}

/// `weft daemon`: runs a node until SIGINT or SIGTERM.
pub async fn run_until_signal(home: Home, config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let node = Node::start(home, config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    node.stop().await;
    Ok(())
}

/// Writes `http://ADDR` to a home file (`ingress`, `s3`) that tools read.
fn write_url_file(file: &std::path::Path, bound: SocketAddr) -> Result<(), DaemonError> {
    write_atomic(file, format!("http://{bound}\n").as_bytes(), 0o644).map_err(|source| {
        DaemonError::Io {
            path: file.display().to_string(),
            source,
        }
    })
}
