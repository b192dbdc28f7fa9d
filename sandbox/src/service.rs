//! Long-running containers: the container replicas of services.
//!
//! A [`ContainerService`] is an OCI container that runs until it is
//! stopped. It gets the isolation of a one-shot container task (the same
//! bundle from `oci.rs`: a user namespace, the image root read-only and
//! `nosuid,nodev`, no capabilities, the seccomp allow-list, cgroup limits)
//! and differs in three ways: it has no deadline; it gets `/inputs`
//! (read-only) only when given one and no `/outputs`; and its stdout and
//! stderr go on being read, as long as it runs, into a ring buffer of the
//! last [`LOG_BYTES`] bytes.
//!
//! Its network namespace is new and holds only a loopback, which the
//! runtime brings up; ports below 1024 may be bound in it without a
//! capability (`net.ipv4.ip_unprivileged_port_start=0`, as container
//! engines do), so an image that listens on port 80 works. The node reaches a port in it with
//! [`ContainerService::connect`]: a short-lived thread enters the namespace
//! (`setns`), connects to `127.0.0.1:PORT` and ends; the socket stays in the
//! container's namespace, so no port is ever published on a host interface.
//!
//! The container starts with `RUNTIME run --detach --pid-file`. Its init
//! process is then held by a pidfd, so [`ContainerService::is_running`],
//! `connect` and [`ContainerService::stop`] never mistake a reused pid for
//! it. `stop` sends SIGTERM, then SIGKILL after the grace, and deletes the
//! container, its bundle and its root mount; a service dropped without
//! `stop` is killed and deleted the same way, synchronously. Containers
//! left by a crashed node are deleted when the next sandbox starts, as
//! one-shot tasks' are.
//!
//! Non-goals: health checks, restarts and traffic (the node's services
//! layer does those with [`ContainerService::connect`] and
//! [`ContainerService::is_running`]).

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::container::{Binds, Setup, classify_start_error, runtime_errors, unbind_root};
use crate::{ContainerTask, GpuDevice, Limits, Sandbox, SandboxError};

/// Bytes of stdout and stderr (together) a service keeps: the last ones.
pub const LOG_BYTES: usize = 64 * 1024;

/// Default size of a service's `/tmp` tmpfs (counted in its memory cgroup).
pub const DEFAULT_TMPFS_BYTES: u64 = 64 << 20;

/// Default most processes and threads of a service (pids cgroup).
pub const DEFAULT_PIDS: u32 = 1024;

/// How long [`ContainerService::connect`] waits for the port to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the runtime may take to create and start the container.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a container may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long output pipes may stay open after the container is gone.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// How often `stop` looks whether the container has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// What a service container runs. Image defaults (entrypoint, cmd, env,
/// working directory) are applied by the caller.
#[derive(Debug, Clone)]
pub struct ServiceContainer {
    /// Names the service in logs and in its container id
    /// (`weft-NAME-XXXXXXXX`): 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// The unpacked image, mounted read-only; missing mount points are
    /// created in it, as for tasks.
    pub rootfs: PathBuf,
    /// The whole command line; `args[0]` is looked up on the `PATH`.
    pub args: Vec<String>,
    /// The whole environment; `PATH` gets a standard value when absent.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the container; `/` when absent.
    pub workdir: Option<String>,
    /// Host folder shown read-only at `/inputs`; without one, `/inputs` is
    /// an empty folder of the read-only root.
    pub inputs: Option<PathBuf>,
    /// Bytes of memory (memory cgroup, swap included where the host counts
    /// it); `None` for no limit.
    pub memory: Option<u64>,
    /// CPU in thousandths of a core (CFS quota); `None` for no limit.
    pub cpu_millis: Option<u32>,
    /// Most processes and threads (pids cgroup); `None` for no limit.
    pub pids: Option<u32>,
    /// Size of the `/tmp` tmpfs, counted against the memory limit.
    pub tmpfs_bytes: u64,
    /// GPUs given to the service, seen as devices 0 to N-1.
    pub gpus: Vec<GpuDevice>,
}

impl ServiceContainer {
    /// A service running `args` in `rootfs` with the default limits, no
    /// environment but `PATH`, and no inputs.
    pub fn new(name: impl Into<String>, rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        ServiceContainer {
            name: name.into(),
            rootfs: rootfs.into(),
            args,
            env: Vec::new(),
            workdir: None,
            inputs: None,
            memory: None,
            cpu_millis: None,
            pids: Some(DEFAULT_PIDS),
            tmpfs_bytes: DEFAULT_TMPFS_BYTES,
            gpus: Vec::new(),
        }
    }
}

/// A running (or exited, not yet stopped) service container.
pub struct ContainerService {
    id: String,
    pid: u32,
    /// The container's init process; `None` when it was gone before it
    /// could be held.
    pidfd: Option<OwnedFd>,
    logs: LogRing,
    notes: Vec<String>,
    guard: Guard,
}

impl std::fmt::Debug for ContainerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerService")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("running", &self.is_running())
            .finish()
    }
}

impl ContainerService {
    /// Starts `spec` as a long-running container in a new network
    /// namespace (loopback up, nothing else), with the sandbox's runtime,
    /// folders and user namespace.
    ///
    /// The start runs on a task of its own: if the returned future is
    /// dropped, the start still completes and the service it made is
    /// dropped, which kills and deletes it.
    pub async fn start(
        sandbox: &Sandbox,
        spec: ServiceContainer,
    ) -> Result<ContainerService, SandboxError> {
        let setup = sandbox.inner.container.setup();
        match tokio::spawn(start_service(setup, spec)).await {
            Ok(started) => started,
            Err(e) => Err(SandboxError::io(
                "the service's start ended abnormally",
                io::Error::other(e.to_string()),
            )),
        }
    }

    /// A TCP connection to `port` on the container's loopback. A
    /// short-lived thread enters the container's network namespace,
    /// connects, and ends; the socket stays in that namespace. Refused when
    /// the container is not running.
    pub async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, SandboxError> {
        let fail = |source| {
            SandboxError::io(
                format!("cannot connect to port {port} in container {}", self.id),
                source,
            )
        };
        let not_running = || {
            fail(io::Error::new(
                io::ErrorKind::NotConnected,
                "the container is not running",
            ))
        };
        let Some(pidfd) = &self.pidfd else {
            return Err(not_running());
        };
        if has_exited(pidfd) {
            return Err(not_running());
        }
        let ns = match File::open(format!("/proc/{}/ns/net", self.pid)) {
            Ok(ns) => ns,
            Err(_) if has_exited(pidfd) => return Err(not_running()),
            Err(e) => return Err(fail(e)),
        };
        // A pid is not reused while its process lives: alive after the
        // open, the process whose namespace was opened is the container's.
        if has_exited(pidfd) {
            return Err(not_running());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("weft-netns-connect".into())
            .spawn(move || {
                let _ = tx.send(connect_in(ns, port));
            })
            .map_err(fail)?;
        let stream = rx
            .await
            .map_err(|_| fail(io::Error::other("the connecting thread ended early")))?
            .map_err(fail)?;
        stream.set_nonblocking(true).map_err(fail)?;
        tokio::net::TcpStream::from_std(stream).map_err(fail)
    }

    /// Whether the container's init process still runs.
    pub fn is_running(&self) -> bool {
        self.pidfd.as_ref().is_some_and(|fd| !has_exited(fd))
    }

    /// Stops the container: SIGTERM, then SIGKILL after `grace`; then
    /// deletes it (runtime state and cgroup), removes its bundle and
    /// unmounts its root. The cleanup is done whatever fails on the way;
    /// the error says what could not be removed.
    pub async fn stop(mut self, grace: Duration) -> Result<(), SandboxError> {
        info!(id = %self.id, "stopping service container");
        if self.is_running() {
            let _ = self.guard.runtime_cmd(&["kill", &self.id, "TERM"]).await;
            if !self.wait_exit(grace).await {
                debug!(id = %self.id, ?grace, "still running after the grace; killing it");
                let _ = self.guard.runtime_cmd(&["kill", &self.id, "KILL"]).await;
                if !self.wait_exit(KILL_WAIT).await {
                    warn!(id = %self.id, "container still running after SIGKILL; deleting it");
                }
            }
        }
        self.guard.cleanup().await
    }

    /// The last [`LOG_BYTES`] bytes the container wrote to stdout and
    /// stderr, interleaved as they came (invalid UTF-8 replaced).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// The runtime's container id (`weft-NAME-XXXXXXXX`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Limits that could not be applied, and other things worth knowing.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Waits up to `within` for the init process to exit; whether it did.
    async fn wait_exit(&self, within: Duration) -> bool {
        let Some(fd) = &self.pidfd else { return true };
        let deadline = tokio::time::Instant::now() + within;
        while !has_exited(fd) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
        true
    }
}

/// Checks what the runtime does not: the name, the environment and the
/// arguments, by the rules tasks follow, and the inputs folder.
fn check(spec: &ServiceContainer) -> Result<(), SandboxError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(SandboxError::InvalidTask(format!(
            "service name {:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
            spec.name.chars().take(80).collect::<String>()
        )));
    }
    let mut seen = BTreeSet::new();
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SandboxError::InvalidTask(format!(
                "environment variable {k:?}: names must be non-empty without '=' or NUL, values without NUL"
            )));
        }
        if !seen.insert(k.as_str()) {
            return Err(SandboxError::InvalidTask(format!(
                "environment variable {k:?} is given twice"
            )));
        }
    }
    if spec.args.iter().any(|a| a.contains('\0')) {
        return Err(SandboxError::InvalidTask(
            "arguments cannot contain NUL bytes".to_string(),
        ));
    }
    if let Some(dir) = &spec.inputs
        && !dir.is_dir()
    {
        return Err(SandboxError::InvalidTask(format!(
            "the inputs folder {} does not exist or is not a folder; fetch the inputs before starting the service",
            dir.display()
        )));
    }
    Ok(())
}

async fn start_service(
    setup: Arc<Setup>,
    spec: ServiceContainer,
) -> Result<ContainerService, SandboxError> {
    let runtime = match &setup.runtime {
        Ok(rt) => rt.path.clone(),
        Err(why) => return Err(SandboxError::RuntimeMissing(why.clone())),
    };
    check(&spec)?;
    let prepare = setup.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let ct = ContainerTask {
            rootfs: spec.rootfs.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            gpus: spec.gpus.clone(),
        };
        let limits = Limits {
            memory: spec.memory,
            cpu_millis: spec.cpu_millis,
            pids: spec.pids,
            tmpfs_bytes: spec.tmpfs_bytes,
            ..Limits::default()
        };
        let binds = Binds {
            inputs: spec.inputs.as_deref(),
            outputs: None,
            scratch: None,
            low_ports: true,
        };
        prepare
            .prepare_bundle(&spec.name, &ct, &limits, binds)
            .map(|p| (p, spec))
    })
    .await;
    let (prepared, spec) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err((e, _notes))) => return Err(e),
        Err(e) => {
            return Err(SandboxError::io(
                "preparing the bundle failed",
                io::Error::other(e),
            ));
        }
    };
    let mut guard = Guard {
        runtime,
        root: setup.root.clone(),
        id: prepared.id,
        bundle: Some(prepared.bundle),
        root_mount: prepared.root_mount,
        pumps: Vec::new(),
        _setup: setup,
    };
    let logs = LogRing::default();
    match launch(&mut guard, &spec, &logs).await {
        Ok((pid, pidfd)) => {
            info!(id = %guard.id, pid, "service container started");
            Ok(ContainerService {
                id: guard.id.clone(),
                pid,
                pidfd,
                logs,
                notes: prepared.notes,
                guard,
            })
        }
        Err(e) => {
            warn!(id = %guard.id, error = %e, "service container did not start");
            if let Err(c) = guard.cleanup().await {
                warn!(id = %guard.id, error = %c, "cleanup after a failed start");
            }
            Err(e)
        }
    }
}

/// Runs `RUNTIME run --detach` on the prepared bundle, with the output
/// pipes read into `logs`, and takes hold of the container's init process.
async fn launch(
    guard: &mut Guard,
    spec: &ServiceContainer,
    logs: &LogRing,
) -> Result<(u32, Option<OwnedFd>), SandboxError> {
    let bundle = guard
        .bundle
        .as_ref()
        .map(|b| b.path().to_path_buf())
        .ok_or_else(|| SandboxError::Runtime("bundle missing".into()))?;
    let pid_file = bundle.join("init.pid");
    let log = bundle.join("runtime.log");
    let mut cmd = tokio::process::Command::new(&guard.runtime);
    cmd.arg("--root")
        .arg(&guard.root)
        .arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--detach")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--bundle")
        .arg(&bundle)
        .arg(&guard.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| SandboxError::io(format!("cannot start {}", guard.runtime.display()), e))?;
    // The runtime hands these pipes to the container's process, which
    // keeps writing to them after the runtime has exited.
    if let Some(p) = child.stdout.take() {
        guard.pumps.push(tokio::spawn(pump(p, logs.clone())));
    }
    if let Some(p) = child.stderr.take() {
        guard.pumps.push(tokio::spawn(pump(p, logs.clone())));
    }
    let status = match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return Err(SandboxError::io(
                "waiting for the container runtime failed",
                e,
            ));
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(SandboxError::Runtime(format!(
                "the runtime did not start the container within {START_TIMEOUT:?}"
            )));
        }
    };
    if !status.success() {
        let errors = runtime_errors(&log);
        let msg = if errors.is_empty() {
            format!("the runtime exited with {status}")
        } else {
            errors.join("; ")
        };
        let program = spec.args.first().map(String::as_str).unwrap_or_default();
        return Err(classify_start_error(program, &msg));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|p| *p > 1)
        .ok_or_else(|| {
            SandboxError::Runtime(format!(
                "the runtime wrote no usable pid to {}",
                pid_file.display()
            ))
        })?;
    let pidfd = match pidfd_open(pid) {
        Ok(fd) if in_container(pid, &guard.id) => Some(fd),
        // Gone already (the pid may even be another process's by now).
        Ok(_) => None,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
        Err(e) => return Err(SandboxError::io("cannot hold the container's process", e)),
    };
    Ok((pid, pidfd))
}

/// Whether process `pid` is in the container's cgroup (`.../ID`): proof
/// that a pidfd just opened on that pid holds the container's process.
fn in_container(pid: u32, id: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines()
            .any(|l| l.rsplit('/').next().is_some_and(|last| last == id))
    })
}

/// Enters the network namespace `ns` on this thread and connects to the
/// loopback's `port`. Called on a thread of its own that ends right after.
fn connect_in(ns: File, port: u16) -> io::Result<std::net::TcpStream> {
    // SAFETY: `ns` is an open network namespace file that outlives the
    // call; setns changes the namespace of this thread only, and the
    // thread ends after this function returns.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(ns);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process a pidfd refers to has exited (a pidfd becomes
/// readable then).
fn has_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd for the call's duration; a zero
        // timeout makes the call return at once.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        if rc >= 0 {
            return rc > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Cannot tell: say exited, so nothing is sent to a process that
            // may not be the container's.
            return true;
        }
    }
}

/// Reads a pipe to its end into the ring buffer.
async fn pump(mut pipe: impl AsyncRead + Unpin, logs: LogRing) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => logs.push(&buf[..n]),
        }
    }
}

/// The last [`LOG_BYTES`] bytes written to a service's stdout and stderr.
#[derive(Debug, Clone, Default)]
struct LogRing {
    bytes: Arc<Mutex<VecDeque<u8>>>,
}

impl LogRing {
    fn push(&self, data: &[u8]) {
        let mut b = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let data = &data[data.len().saturating_sub(LOG_BYTES)..];
        let over = (b.len() + data.len()).saturating_sub(LOG_BYTES);
        b.drain(..over);
        b.extend(data);
    }

    fn text(&self) -> String {
        let b = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = b.iter().copied().collect();
        drop(b);
        // A character cut in two by the ring's start is dropped, not shown
        // as a replacement.
        let start = bytes
            .iter()
            .take(3)
            .take_while(|c| (**c & 0xC0) == 0x80)
            .count();
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// A service container's runtime state, bundle, root mount and output
/// readers, removed by `cleanup` or, failing that, on drop.
struct Guard {
    runtime: PathBuf,
    root: PathBuf,
    id: String,
    bundle: Option<tempfile::TempDir>,
    root_mount: Option<PathBuf>,
    pumps: Vec<JoinHandle<()>>,
    /// Keeps the sandbox's container setup (and its mount folder) alive.
    _setup: Arc<Setup>,
}

impl Guard {
    async fn runtime_cmd(&self, args: &[&str]) -> Result<(), String> {
        crate::container::runtime_command(&self.runtime, &self.root, &self.id, args).await
    }

    /// Deletes the container, lets the output readers drain, removes the
    /// bundle and unmounts the root; says what could not be removed.
    async fn cleanup(&mut self) -> Result<(), SandboxError> {
        let mut left = Vec::new();
        if let Err(why) = self
            .runtime_cmd(&["delete", "--force", self.id.as_str()])
            .await
            && !why.contains("does not exist")
        {
            left.push(format!("the container ({why})"));
        }
        for p in self.pumps.drain(..) {
            let abort = p.abort_handle();
            if tokio::time::timeout(PIPE_GRACE, p).await.is_err() {
                abort.abort();
            }
        }
        if let Some(bundle) = self.bundle.take() {
            let path = bundle.path().to_path_buf();
            if !matches!(
                tokio::task::spawn_blocking(move || bundle.close()).await,
                Ok(Ok(()))
            ) {
                left.push(format!("the bundle {}", path.display()));
            }
        }
        if let Some(m) = self.root_mount.take() {
            let gone = m.clone();
            let _ = tokio::task::spawn_blocking(move || unbind_root(&m)).await;
            if gone.exists() {
                left.push(format!("the root mount {}", gone.display()));
            }
        }
        if left.is_empty() {
            debug!(id = %self.id, "service container removed");
            Ok(())
        } else {
            Err(SandboxError::Runtime(format!(
                "cannot remove {} of container {}; the next sandbox start sweeps them",
                left.join(", "),
                self.id
            )))
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
        // Reached with a bundle only when the service was dropped without
        // `stop` (or its start was abandoned): clean up synchronously.
        if let Some(bundle) = self.bundle.take() {
            warn!(id = %self.id, "service dropped without stop; deleting its container");
            for args in [
                ["kill", self.id.as_str(), "KILL"],
                ["delete", "--force", self.id.as_str()],
            ] {
                let _ = std::process::Command::new(&self.runtime)
                    .arg("--root")
                    .arg(&self.root)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = bundle.close();
        }
        if let Some(m) = self.root_mount.take() {
            unbind_root(&m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_ring_keeps_the_last_bytes() {
        let r = LogRing::default();
        r.push(b"hello\n");
        assert_eq!(r.text(), "hello\n");
        let big = vec![b'x'; LOG_BYTES];
        r.push(&big);
        r.push(b"tail\n");
        let t = r.text();
        assert_eq!(t.len(), LOG_BYTES);
        assert!(
            t.ends_with("xtail\n") && !t.contains("hello"),
            "{}",
            &t[..10]
        );
        // one push larger than the ring keeps its own end
        let mut huge = vec![b'y'; 2 * LOG_BYTES];
        huge.extend_from_slice(b"end");
        r.push(&huge);
        let t = r.text();
        assert_eq!(t.len(), LOG_BYTES);
        assert!(t.ends_with("yend"));
    }

    #[test]
    fn a_character_cut_by_the_ring_is_dropped() {
        let r = LogRing::default();
        let mut data = vec![b'a'; LOG_BYTES - 1];
        data.extend_from_slice("é".as_bytes());
        data.push(b'z');
        r.push(&data);
        // the ring now starts with the last 'a's, and one push more cuts 'é'
        r.push(&vec![b'b'; LOG_BYTES - 2]);
        let t = r.text();
        assert!(t.starts_with('z'), "{:?}", &t[..4]);
        assert!(!t.contains('\u{FFFD}'));
    }

    #[test]
    fn bad_specs_are_refused_by_field() {
        let ok = ServiceContainer::new("web", "/", vec!["httpd".into()]);
        assert!(check(&ok).is_ok());
        for (spec, needle) in [
            (
                ServiceContainer {
                    name: "a b".into(),
                    ..ok.clone()
                },
                "service name",
            ),
            (
                ServiceContainer {
                    env: vec![("A=B".into(), "x".into())],
                    ..ok.clone()
                },
                "environment variable",
            ),
            (
                ServiceContainer {
                    env: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
                    ..ok.clone()
                },
                "given twice",
            ),
            (
                ServiceContainer {
                    args: vec!["a\0b".into()],
                    ..ok.clone()
                },
                "NUL",
            ),
            (
                ServiceContainer {
                    inputs: Some(PathBuf::from("/nonexistent/inputs")),
                    ..ok.clone()
                },
                "inputs folder",
            ),
        ] {
            let e = check(&spec).expect_err(needle);
            assert_eq!(e.class(), crate::ErrorClass::InvalidTask);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn a_service_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<ContainerService>();
    }

    #[test]
    fn a_pidfd_tells_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let fd = pidfd_open(child.id()).expect("pidfd");
        assert!(!has_exited(&fd));
        assert!(
            !in_container(child.id(), "weft-x-00000000"),
            "not in that container's cgroup"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(has_exited(&fd));
    }
}
