//! Runs one weft task in isolation and reports what happened.
//!
//! A node creates one [`Sandbox`] at start-up. It holds the wasmtime engine
//! (with its pooling allocator and the epoch ticker), the cache of compiled
//! modules, and the OCI runtime found on this host. [`Sandbox::run`] takes a
//! [`Task`] (what to run, the host folders that become `/inputs`, `/outputs`
//! and `/tmp`, and the limits) and returns an [`Outcome`]: exit code, capped
//! stdout and stderr, wall time, peak memory where known, notes on limits that
//! could not be applied, and a [`Failure`] with its [`ErrorClass`] when the
//! task did not run to an exit.
//!
//! Executors:
//! - WASM (`wasm`): WASI preview 1 modules and preview 2 components on
//!   wasmtime; see `wasm.rs`.
//! - Containers (`container`): an OCI bundle run by runc or crun; see
//!   `container.rs` and `oci.rs`.
//!
//! Images for containers are unpacked from `docker save` or OCI archives by
//! [`image::unpack`]. `THREATS.md` beside this crate says what a task can and
//! cannot reach.
//!
//! Architecture Invariant: this crate knows nothing of the store, the
//! scheduler or the network. Its inputs are host paths and bytes; its output
//! is an [`Outcome`].

mod capture;
mod container;
mod folders;
pub mod http;
pub mod image;
mod oci;
pub mod service;
mod wasm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, info_span, warn};

pub use capture::Captured;
pub use container::ContainerRuntime;
pub use folders::{TaskFolders, mount_quota_volume_supported, unmount_under};
pub use tokio_util::sync::CancellationToken;

/// The WASM runtime this crate embeds, for node adverts.
pub const WASM_RUNTIME: &str = "wasmtime 36 (LTS)";

/// Why a task did not run to an exit, as one of a few classes a scheduler
/// can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The task itself is wrong (bad module, missing folder, empty command);
    /// running it again will not help.
    InvalidTask,
    /// The WASM program trapped (unreachable, out-of-bounds access, stack
    /// overflow).
    Trap,
    /// The wall-clock deadline (or the fuel budget) ran out.
    Timeout,
    /// The task asked for more memory than its limit.
    MemoryLimit,
    /// The task needs an executor this host lacks (no OCI runtime).
    RuntimeMissing,
    /// The host failed: a file or process operation outside the task's
    /// control, or the container runtime could not start the container.
    Io,
    /// The caller cancelled the task.
    Cancelled,
    /// The task filled its disk quota (`/outputs` and `/tmp` together);
    /// running it elsewhere will fill that node's quota too.
    DiskQuota,
}

impl ErrorClass {
    /// A short lowercase name, for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidTask => "invalid-task",
            ErrorClass::Trap => "trap",
            ErrorClass::Timeout => "timeout",
            ErrorClass::MemoryLimit => "memory-limit",
            ErrorClass::RuntimeMissing => "runtime-missing",
            ErrorClass::Io => "io",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::DiskQuota => "disk-quota",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in this crate outside image unpacking.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid task: {0}")]
    InvalidTask(String),
    #[error("wasm trap: {0}")]
    Trap(String),
    #[error("deadline of {0:?} passed; the task was stopped")]
    Timeout(Duration),
    #[error("fuel budget of {0} units spent; the task was stopped")]
    OutOfFuel(u64),
    #[error(
        "memory limit of {limit} bytes reached; raise spec.resources.memory if the task needs more"
    )]
    MemoryLimit { limit: u64 },
    #[error(
        "no OCI runtime: {0}; install runc (apt-get install runc) or set the runtime path in the node config"
    )]
    RuntimeMissing(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the container runtime failed: {0}")]
    Runtime(String),
    #[error("cancelled")]
    Cancelled,
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    #[error(
        "disk quota of {quota} bytes for /outputs and /tmp is full; write less, or ask the node's operator for a larger sandbox.task_disk_quota"
    )]
    DiskQuota { quota: u64 },
}

impl SandboxError {
    /// The class a scheduler acts on.
    pub fn class(&self) -> ErrorClass {
        match self {
            SandboxError::InvalidTask(_) => ErrorClass::InvalidTask,
            SandboxError::Trap(_) => ErrorClass::Trap,
            SandboxError::Timeout(_) | SandboxError::OutOfFuel(_) => ErrorClass::Timeout,
            SandboxError::MemoryLimit { .. } => ErrorClass::MemoryLimit,
            SandboxError::RuntimeMissing(_) => ErrorClass::RuntimeMissing,
            SandboxError::Io { .. } | SandboxError::Runtime(_) | SandboxError::Engine(_) => {
                ErrorClass::Io
            }
            SandboxError::Cancelled => ErrorClass::Cancelled,
            SandboxError::DiskQuota { .. } => ErrorClass::DiskQuota,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One task to run.
#[derive(Debug, Clone)]
pub struct Task {
    /// Names the task in logs and container ids: 1 to 64 letters, digits,
    /// `.`, `_` or `-`.
    pub name: String,
    pub kind: TaskKind,
    /// Host folder shown read-only at `/inputs`. Must exist.
    pub inputs: PathBuf,
    /// Host folder shown writable at `/outputs`. Must exist.
    pub outputs: PathBuf,
    /// Host folder shown writable at `/tmp`. WASM: without one, the task has
    /// no `/tmp`. Containers: without one, `/tmp` is a tmpfs of
    /// [`Limits::tmpfs_bytes`] counted against the memory limit.
    pub scratch: Option<PathBuf>,
    pub limits: Limits,
}

/// What runs.
#[derive(Debug, Clone)]
pub enum TaskKind {
    Wasm(WasmTask),
    Container(ContainerTask),
}

impl TaskKind {
    fn name(&self) -> &'static str {
        match self {
            TaskKind::Wasm(_) => "wasm",
            TaskKind::Container(_) => "container",
        }
    }
}

/// A WASI command: a preview 1 module (exporting `_start`) or a preview 2
/// component (exporting `wasi:cli/run`); which one is read from the bytes.
#[derive(Debug, Clone)]
pub struct WasmTask {
    pub module: WasmModule,
    /// Arguments after the program name (`argv[0]` is the task name).
    pub args: Vec<String>,
    /// The whole environment the task sees.
    pub env: Vec<(String, String)>,
}

/// The bytes of a module or component, with their BLAKE3 hash (the key of
/// the compiled-code cache, and weft's artifact id for the same bytes).
#[derive(Clone)]
pub struct WasmModule {
    bytes: Arc<[u8]>,
    hash: blake3::Hash,
}

impl WasmModule {
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> WasmModule {
        let bytes = bytes.into();
        let hash = blake3::hash(&bytes);
        WasmModule { bytes, hash }
    }

    /// Reads a module file of at most [`DEFAULT_MAX_MODULE_BYTES`].
    pub fn from_file(path: &Path) -> Result<WasmModule, SandboxError> {
        WasmModule::from_file_capped(path, DEFAULT_MAX_MODULE_BYTES)
    }

    /// Reads a module file, refusing it before reading when it is larger
    /// than `cap` bytes (and reading at most `cap + 1` bytes in any case, so
    /// a file that grows meanwhile is refused too).
    pub fn from_file_capped(path: &Path, cap: u64) -> Result<WasmModule, SandboxError> {
        use std::io::Read;
        let shown = || path.display().to_string();
        let file = std::fs::File::open(path)
            .map_err(|e| SandboxError::io(format!("cannot read {}", shown()), e))?;
        let len = file
            .metadata()
            .map_err(|e| SandboxError::io(format!("cannot read {}", shown()), e))?
            .len();
        if len > cap {
            return Err(module_too_large(len, cap));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| SandboxError::io(format!("cannot read {}", shown()), e))?;
        if bytes.len() as u64 > cap {
            return Err(module_too_large(bytes.len() as u64, cap));
        }
        Ok(WasmModule::from_bytes(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn hash(&self) -> blake3::Hash {
        self.hash
    }
}

fn module_too_large(len: u64, cap: u64) -> SandboxError {
    SandboxError::InvalidTask(format!(
        "the module is {len} bytes, more than this node's limit of {cap} bytes; \
         build a smaller module or run it on a node with a larger sandbox.max_module_bytes"
    ))
}

/// The default largest WASM module a sandbox accepts.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 256 << 20;

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("hash", &self.hash.to_hex().as_str())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A process in an OCI container. Image defaults (entrypoint, cmd, env,
/// working directory) are applied by the caller.
#[derive(Debug, Clone)]
pub struct ContainerTask {
    /// The unpacked image: a folder of regular files and directories. It is
    /// mounted read-only; missing mount points (`/inputs`, `/outputs`,
    /// `/tmp`, `/proc`, `/sys`, `/dev`) are created in it before the run.
    pub rootfs: PathBuf,
    /// The whole command line; `args[0]` is looked up on the task's `PATH`.
    pub args: Vec<String>,
    /// The whole environment; `PATH` gets a standard value when absent.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the container; `/` when absent.
    pub workdir: Option<String>,
    /// The GPUs assigned to this task. The task sees them as devices 0 to
    /// N-1 (`CUDA_VISIBLE_DEVICES`), never by their host indices.
    pub gpus: Vec<GpuDevice>,
}

/// A GPU given to a container: its device node is `/dev/nvidia{minor}`
/// (the driver's minor number, which need not equal the GPU's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuDevice {
    pub minor: u32,
}

/// Limits for one task.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock deadline, from the start of the task's process or instance.
    pub timeout: Duration,
    /// Bytes of memory: WASM linear memory (all memories together), or the
    /// container's memory cgroup. `None`: WASM gets the sandbox's maximum,
    /// containers no limit.
    pub memory: Option<u64>,
    /// CPU in thousandths of a core (containers: CFS quota).
    pub cpu_millis: Option<u32>,
    /// Most processes and threads (containers: pids cgroup).
    pub pids: Option<u32>,
    /// WASM fuel budget; needs [`SandboxConfig::fuel`].
    pub fuel: Option<u64>,
    /// Bytes of stdout kept; the rest is counted and dropped.
    pub stdout_cap: usize,
    /// Bytes of stderr kept; the rest is counted and dropped.
    pub stderr_cap: usize,
    /// Size of a container's tmpfs `/tmp` when no scratch folder is given.
    pub tmpfs_bytes: u64,
    /// The disk quota that holds `/outputs` and `/tmp` (see
    /// [`TaskFolders::quota`]): when set and the task leaves that volume
    /// full, the task fails with [`ErrorClass::DiskQuota`].
    pub disk_quota: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(600),
            memory: None,
            cpu_millis: None,
            pids: Some(1024),
            fuel: None,
            stdout_cap: 1 << 20,
            stderr_cap: 1 << 20,
            tmpfs_bytes: 256 << 20,
            disk_quota: None,
        }
    }
}

/// Why a task did not run to an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

/// What happened to a task.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code, when the task exited (WASI `proc_exit`, return from
    /// `_start`, or a container process's exit; 128+N for a signal N).
    pub exit_code: Option<i32>,
    /// Set when the task did not run to an exit (or was killed for a limit).
    pub failure: Option<Failure>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The host folder that was `/outputs`.
    pub outputs: PathBuf,
    pub wall_time: Duration,
    /// Peak memory in bytes: WASM linear memory, or the container cgroup's
    /// high-water mark. `None` where the host cannot tell.
    pub peak_memory: Option<u64>,
    /// Limits that could not be applied, and other things worth knowing.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Exited with code 0 and no failure.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none() && self.exit_code == Some(0)
    }

    pub fn class(&self) -> Option<ErrorClass> {
        self.failure.as_ref().map(|f| f.class)
    }
}

/// What an executor hands back: everything for an [`Outcome`] but the
/// timing, which [`Sandbox::run`] measures.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<SandboxError>,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
    pub(crate) peak_memory: Option<u64>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn failed(error: SandboxError, notes: Vec<String>) -> Report {
        Report {
            error: Some(error),
            notes,
            ..Report::default()
        }
    }
}

/// How the node sets up its sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Compiled WASM (`.cwasm` files) kept across restarts.
    pub cache_dir: PathBuf,
    /// State folder for the OCI runtime (`runc --root`). The sandbox owns it:
    /// containers found there at start-up are left-overs and are deleted.
    pub runtime_root: PathBuf,
    /// Where bundles are written; left-overs are removed at start-up.
    pub bundle_dir: PathBuf,
    /// The OCI runtime binary; `None` looks for `runc`, then `crun`, on `PATH`.
    pub oci_runtime: Option<PathBuf>,
    /// Cgroup parent of every container (`/PARENT/ID`).
    pub cgroup_parent: String,
    /// Where GPU device nodes are looked up on the host.
    pub dev_dir: PathBuf,
    /// WASM tasks that may run at once (the size of the instance pool).
    pub max_wasm_instances: u32,
    /// Largest linear memory any WASM task may have.
    pub max_wasm_memory: u64,
    /// Meter WASM execution in fuel, so [`Limits::fuel`] can apply (slower).
    pub fuel: bool,
    /// Epoch interval: how often running WASM yields and checks deadlines.
    pub epoch_tick: Duration,
    /// Compiled modules kept in memory.
    pub module_cache_entries: usize,
    /// Largest WASM module or component accepted, in bytes.
    pub max_module_bytes: u64,
    /// Host ids that container ids map to: container root is host uid and
    /// gid `host_base`, in a user namespace. `None` runs containers without
    /// a user namespace (container root is host root, without
    /// capabilities); only for hosts whose kernel refuses user namespaces.
    pub userns: Option<IdMap>,
    /// Where image roots are bind-mounted for containers in a user
    /// namespace: a folder the mapped root can reach whatever the modes of
    /// the node's home and its parents.
    pub mount_dir: PathBuf,
    /// Bytes a task may write to `/outputs` and `/tmp` together (a tmpfs
    /// per task, so memory too: see [`TaskFolders`]); `None` for no quota.
    pub task_disk_quota: Option<u64>,
}

/// The default per-task disk quota: 1 GiB.
pub const DEFAULT_TASK_DISK_QUOTA: u64 = 1 << 30;

/// A range of host ids a container's ids 0 to `size - 1` map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

impl IdMap {
    /// Docker's `userns-remap` shape: 65536 ids from 100000.
    pub const DEFAULT: IdMap = IdMap {
        host_base: 100_000,
        size: 65_536,
    };
}

impl SandboxConfig {
    /// Defaults with every folder under `state_dir` (one per node).
    pub fn new(state_dir: impl Into<PathBuf>) -> SandboxConfig {
        let state: PathBuf = state_dir.into();
        SandboxConfig {
            cache_dir: state.join("wasm-cache"),
            runtime_root: state.join("runc"),
            bundle_dir: state.join("bundles"),
            oci_runtime: None,
            cgroup_parent: "weft".to_string(),
            dev_dir: PathBuf::from("/dev"),
            max_wasm_instances: 64,
            max_wasm_memory: 4 << 30,
            fuel: false,
            epoch_tick: Duration::from_millis(10),
            module_cache_entries: 256,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            userns: Some(IdMap::DEFAULT),
            mount_dir: default_mount_dir(&state),
            task_disk_quota: Some(DEFAULT_TASK_DISK_QUOTA),
        }
    }
}

/// `/run/weft-sandbox/<hash of the state folder>`: one per sandbox, under a
/// folder every user can search, so the mapped root of a container reaches
/// image roots mounted there even when the node's home is private.
fn default_mount_dir(state: &Path) -> PathBuf {
    let abs = std::path::absolute(state).unwrap_or_else(|_| state.to_path_buf());
    let h = blake3::hash(abs.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/weft-sandbox").join(&h.to_hex()[..16])
}

/// The executors this node offers, for its advert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executors {
    /// Always present: the embedded WASM runtime, e.g. [`WASM_RUNTIME`].
    pub wasm: String,
    /// The OCI runtime, when one was found or configured.
    pub container: Option<ContainerRuntime>,
}

/// How the compiled-code cache has served WASM starts since the sandbox began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Starts served from pre-linked code in memory.
    pub memory_hits: u64,
    /// Starts served from a `.cwasm` file on disk.
    pub disk_loads: u64,
    /// Starts that had to compile.
    pub compiles: u64,
}

/// Runs tasks. Cheap to clone; all clones share one engine, cache and runtime.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    wasm: wasm::WasmExecutor,
    container: container::ContainerExecutor,
    task_disk_quota: Option<u64>,
}

impl Sandbox {
    /// Sets up the engine, the cache folder and the container runtime, and
    /// removes containers and bundles left by an earlier run.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let wasm = wasm::WasmExecutor::new(&config)?;
        let container = container::ContainerExecutor::new(&config)?;
        info!(
            wasm = WASM_RUNTIME,
            container = container
                .runtime()
                .map(|r| r.name.as_str())
                .unwrap_or("none"),
            "sandbox ready"
        );
        Ok(Sandbox {
            inner: Arc::new(Inner {
                wasm,
                container,
                task_disk_quota: config.task_disk_quota,
            }),
        })
    }

    /// What this sandbox can run.
    pub fn executors(&self) -> Executors {
        Executors {
            wasm: WASM_RUNTIME.to_string(),
            container: self.inner.container.runtime().cloned(),
        }
    }

    /// How the compiled-code cache has served WASM starts.
    pub fn wasm_cache_stats(&self) -> CacheStats {
        self.inner.wasm.cache_stats()
    }

    /// Reads a WASM module file within this sandbox's size limit
    /// ([`SandboxConfig::max_module_bytes`]), without reading a larger one.
    pub fn read_module(&self, path: &Path) -> Result<WasmModule, SandboxError> {
        WasmModule::from_file_capped(path, self.inner.wasm.max_module_bytes())
    }

    /// Makes (or reuses) a task's folders under `dir` with this sandbox's
    /// disk quota, owned by whoever will write them: the mapped root for a
    /// container (`container: true`) in a user namespace, else the node.
    pub fn prepare_folders(&self, dir: &Path, container: bool) -> std::io::Result<TaskFolders> {
        let owner = if container {
            self.container_ids()
        } else {
            None
        };
        TaskFolders::prepare(dir, self.inner.task_disk_quota, owner)
    }

    /// The host ids container root maps to, when containers run in a user
    /// namespace: task folders a container writes belong to them.
    pub fn container_ids(&self) -> Option<IdMap> {
        self.inner.container.userns()
    }

    /// Runs one task to its end, its deadline, or `cancel`.
    ///
    /// The work happens on a task of its own: if the returned future is
    /// dropped, the task is cancelled and still cleaned up (container killed
    /// and deleted, bundle removed).
    pub async fn run(&self, task: Task, cancel: CancellationToken) -> Outcome {
        let started = Instant::now();
        let span = info_span!("task", name = %task.name, kind = task.kind.name());
        let outputs = task.outputs.clone();
        let quota = task.limits.disk_quota;
        let inner = self.inner.clone();
        let token = cancel.child_token();
        let stop_on_drop = token.clone().drop_guard();
        let work = async move {
            if let Err(e) = check_common(&task) {
                return Report::failed(e, Vec::new());
            }
            match &task.kind {
                TaskKind::Wasm(_) => inner.wasm.run(task, token).await,
                TaskKind::Container(_) => inner.container.run(task, token).await,
            }
        };
        let report = match tokio::spawn(work.instrument(span.clone())).await {
            Ok(report) => report,
            Err(e) => Report::failed(
                SandboxError::Io {
                    context: "the task's worker ended abnormally".to_string(),
                    source: std::io::Error::other(e.to_string()),
                },
                Vec::new(),
            ),
        };
        stop_on_drop.disarm();
        let mut report = report;
        if let Some(quota) = quota
            && report
                .error
                .as_ref()
                .is_none_or(|e| e.class() != ErrorClass::Cancelled)
            && folders::volume_full(&outputs)
        {
            report.error = Some(SandboxError::DiskQuota { quota });
            report.exit_code = None;
        }
        let failure = report.error.map(|e| Failure {
            class: e.class(),
            message: e.to_string(),
        });
        let outcome = Outcome {
            exit_code: report.exit_code,
            failure,
            stdout: report.stdout,
            stderr: report.stderr,
            outputs,
            wall_time: started.elapsed(),
            peak_memory: report.peak_memory,
            notes: report.notes,
        };
        span.in_scope(|| match &outcome.failure {
            None => info!(
                exit_code = outcome.exit_code,
                wall_ms = outcome.wall_time.as_millis() as u64,
                "task finished"
            ),
            Some(f) => warn!(
                class = %f.class,
                message = %f.message,
                wall_ms = outcome.wall_time.as_millis() as u64,
                "task failed"
            ),
        });
        outcome
    }
}

/// Checks what every executor needs: a usable name and existing folders.
fn check_common(task: &Task) -> Result<(), SandboxError> {
    let name_ok = !task.name.is_empty()
        && task.name.len() <= 64
        && task
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(SandboxError::InvalidTask(format!(
            "task name {:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
            task.name.chars().take(80).collect::<String>()
        )));
    }
    let mut dirs = vec![("inputs", &task.inputs), ("outputs", &task.outputs)];
    if let Some(s) = &task.scratch {
        dirs.push(("scratch", s));
    }
    for (what, dir) in dirs {
        if !dir.is_dir() {
            return Err(SandboxError::InvalidTask(format!(
                "the {what} folder {} does not exist or is not a folder; create it before running the task",
                dir.display()
            )));
        }
    }
    let env = match &task.kind {
        TaskKind::Wasm(w) => &w.env,
        TaskKind::Container(c) => &c.env,
    };
    let mut seen = BTreeMap::new();
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SandboxError::InvalidTask(format!(
                "environment variable {k:?}: names must be non-empty without '=' or NUL, values without NUL"
            )));
        }
        if seen.insert(k.as_str(), ()).is_some() {
            return Err(SandboxError::InvalidTask(format!(
                "environment variable {k:?} is given twice"
            )));
        }
    }
    let args = match &task.kind {
        TaskKind::Wasm(w) => &w.args,
        TaskKind::Container(c) => &c.args,
    };
    if args.iter().any(|a| a.contains('\0')) {
        return Err(SandboxError::InvalidTask(
            "arguments cannot contain NUL bytes".to_string(),
        ));
    }
    if task.limits.timeout.is_zero() {
        return Err(SandboxError::InvalidTask(
            "the timeout must be more than zero".to_string(),
        ));
    }
    Ok(())
}
