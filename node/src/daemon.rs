//! The composition root: starts a node's subsystems in order (store, mesh,
//! API) and stops them in reverse, on one cancellation token.
//!
//! [`Node`] is what `weft daemon` runs and what the cluster harness starts
//! several of in one process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, Metrics};
use crate::config::{Config, ConfigError};
use crate::home::{Home, HomeError, write_atomic};
use crate::store::{Store, StoreError};

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
    #[error(
        "the API would listen on {0}, which is not a loopback address: set api.token in config.toml (requests then need `Authorization: Bearer <token>`)"
    )]
    TokenRequired(SocketAddr),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
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
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    _lock: LockFile,
}

impl Node {
    /// Starts a node on `home` with `config`.
    pub async fn start(home: Home, config: Config) -> Result<Node, DaemonError> {
        home.ensure()?;
        let lock = LockFile::acquire(&home)?;
        let keypair = home.identity()?;
        let peer_id = keypair.public().to_peer_id().to_string();
        let started = Instant::now();

        let api_addr = config.api_addr()?;
        let token: Option<Arc<str>> = config.api.token.as_deref().map(Arc::from);
        if !api_addr.ip().is_loopback() && token.is_none() {
            return Err(DaemonError::TokenRequired(api_addr));
        }

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
        let state = ApiState {
            store: store.clone(),
            metrics,
            token,
            started,
            node: None,
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
            shutdown,
            tasks,
            _lock: lock,
        })
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
        let _ = fs::remove_file(self.home.api_file());
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "final store flush failed");
        }
        tracing::info!(peer = %self.peer_id, "node stopped");
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
