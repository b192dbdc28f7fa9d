//! The container executor: one OCI bundle per task, run by runc (or crun).
//!
//! A run writes a fresh bundle folder (just `config.json`, built by
//! `oci.rs`; the root is the caller's unpacked image, mounted read-only),
//! starts `RUNTIME run --keep ID` with the task's stdout and stderr on pipes
//! read into capped buffers, and waits for the exit, the deadline or a
//! cancellation. On a deadline or a cancellation the container is killed.
//! Then, whatever happened, the cgroup's peak memory and OOM kills are read
//! and the container is deleted and its bundle removed. If the future is
//! dropped half-way, a guard does the same synchronously, so no container
//! process, runtime state or bundle outlives a run; containers left by a
//! crashed node are deleted when the next [`ContainerExecutor`] starts.
//!
//! The executor needs root: it creates namespaces and cgroups through the
//! runtime. By default the container runs in a user namespace whose root is
//! an unprivileged host id ([`SandboxConfig::userns`]): its `/outputs` and
//! `/tmp` are given to that id, and the image root is bind-mounted
//! read-only under [`SandboxConfig::mount_dir`] (a folder of mode 0710
//! whose group is the mapped root's) so the mapped root reaches it however
//! private the node's home is. The runtime opens the bound task folders
//! itself, so those can stay in a 0700 folder.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::capture::CaptureSink;
use crate::oci::{self, BundleSpec, Device, Resources, TmpMount};
use crate::{ContainerTask, GpuDevice, IdMap, Report, SandboxConfig, SandboxError, Task, TaskKind};

/// `PATH` given to a task whose environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Folders the bundle mounts over; they must exist in the root.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp", "inputs", "outputs"];

/// How long a killed container may take to go away before `run` is killed too.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long output pipes may stay open after the container is gone.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// An OCI runtime found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntime {
    /// `runc` or `crun`.
    pub name: String,
    pub path: PathBuf,
    /// The first line of `RUNTIME --version`.
    pub version: String,
}

/// Which cgroup controllers the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cgroups {
    v2: bool,
    memory: bool,
    swap: bool,
    pids: bool,
    cpu: bool,
}

pub(crate) struct ContainerExecutor {
    setup: Arc<Setup>,
}

pub(crate) struct Setup {
    pub(crate) runtime: Result<ContainerRuntime, String>,
    /// The runtime's state folder (`--root`).
    pub(crate) root: PathBuf,
    bundles: PathBuf,
    cgroup_parent: String,
    cgroups: Cgroups,
    dev_dir: PathBuf,
    is_root: bool,
    userns: Option<IdMap>,
    /// Where image roots are bound for user-namespaced containers, or why
    /// that folder cannot be used.
    mount_dir: Result<PathBuf, String>,
}

impl ContainerExecutor {
    pub(crate) fn new(config: &SandboxConfig) -> Result<ContainerExecutor, SandboxError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let runtime = usable_runtime(find_runtime(config.oci_runtime.as_deref()), euid);
        for dir in [&config.runtime_root, &config.bundle_dir] {
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| SandboxError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let is_root = euid == 0;
        let mount_dir = match config.userns {
            Some(map) if is_root && runtime.is_ok() => {
                make_mount_dir(&config.mount_dir, map).map(|()| config.mount_dir.clone())
            }
            Some(_) => Err("the node does not run as root".to_string()),
            None => Err("no user namespace".to_string()),
        };
        let setup = Setup {
            runtime,
            root: config.runtime_root.clone(),
            bundles: config.bundle_dir.clone(),
            cgroup_parent: config.cgroup_parent.trim_matches('/').to_string(),
            cgroups: detect_cgroups(Path::new("/sys/fs/cgroup")),
            dev_dir: config.dev_dir.clone(),
            is_root,
            userns: config.userns,
            mount_dir,
        };
        setup.sweep();
        Ok(ContainerExecutor {
            setup: Arc::new(setup),
        })
    }

    /// What every container of this sandbox shares: runtime, folders, limits.
    pub(crate) fn setup(&self) -> Arc<Setup> {
        self.setup.clone()
    }

    pub(crate) fn runtime(&self) -> Option<&ContainerRuntime> {
        self.setup.runtime.as_ref().ok()
    }

    pub(crate) fn userns(&self) -> Option<IdMap> {
        self.setup.userns
    }

    pub(crate) async fn run(&self, task: Task, cancel: CancellationToken) -> Report {
        let rt = match &self.setup.runtime {
            Ok(rt) => rt.clone(),
            Err(why) => {
                return Report::failed(SandboxError::RuntimeMissing(why.clone()), Vec::new());
            }
        };
        let setup = self.setup.clone();
        let prepared =
            tokio::task::spawn_blocking(move || setup.prepare(&task).map(|p| (p, task))).await;
        let (prepared, task) = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err((e, notes))) => return Report::failed(e, notes),
            Err(e) => {
                return Report::failed(
                    SandboxError::io("preparing the bundle failed", std::io::Error::other(e)),
                    Vec::new(),
                );
            }
        };
        let mut guard = Guard {
            runtime: rt.path.clone(),
            root: self.setup.root.clone(),
            id: prepared.id.clone(),
            bundle: Some(prepared.bundle),
            root_mount: prepared.root_mount,
        };
        let report = self
            .supervise(&rt, &task, &prepared.id, &guard, prepared.notes, cancel)
            .await;
        guard.cleanup().await;
        report
    }

    /// Starts the container and waits for it to end, be killed or be cancelled.
    async fn supervise(
        &self,
        rt: &ContainerRuntime,
        task: &Task,
        id: &str,
        guard: &Guard,
        mut notes: Vec<String>,
        cancel: CancellationToken,
    ) -> Report {
        let stdout = CaptureSink::new(task.limits.stdout_cap);
        let stderr = CaptureSink::new(task.limits.stderr_cap);
        let Some(bundle) = guard.bundle.as_ref().map(|b| b.path().to_path_buf()) else {
            return Report::failed(SandboxError::Runtime("bundle missing".into()), notes);
        };
        let log = bundle.join("runtime.log");
        let mut cmd = tokio::process::Command::new(&rt.path);
        cmd.arg("--root")
            .arg(&self.setup.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--keep")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let e = SandboxError::io(format!("cannot start {}", rt.path.display()), e);
                return Report::failed(e, notes);
            }
        };
        debug!(id, "container started");
        let pumps = [
            child
                .stdout
                .take()
                .map(|p| tokio::spawn(pump(p, stdout.clone()))),
            child
                .stderr
                .take()
                .map(|p| tokio::spawn(pump(p, stderr.clone()))),
        ];
        let timeout = task.limits.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let ended = tokio::select! {
            biased;
            s = child.wait() => Ok(s),
            () = cancel.cancelled() => Err(SandboxError::Cancelled),
            () = tokio::time::sleep_until(deadline) => Err(SandboxError::Timeout(timeout)),
        };
        let status = match ended {
            Ok(status) => status,
            Err(why) => {
                info!(id, reason = %why, "killing container");
                guard.kill().await;
                match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                    Ok(_) => {}
                    Err(_) => {
                        warn!(id, "runtime still running after kill; killing it");
                        let _ = child.kill().await;
                    }
                }
                for p in pumps.into_iter().flatten() {
                    let _ = tokio::time::timeout(PIPE_GRACE, p).await;
                }
                let peak = self.setup.cgroup_stats(id).0;
                return Report {
                    exit_code: None,
                    error: Some(why),
                    stdout: stdout.snapshot(),
                    stderr: stderr.snapshot(),
                    peak_memory: peak,
                    notes,
                };
            }
        };
        for p in pumps.into_iter().flatten() {
            if tokio::time::timeout(PIPE_GRACE, p).await.is_err() {
                notes.push("output pipes stayed open after the container ended".to_string());
            }
        }
        let exit_code = match status {
            Ok(s) => s
                .code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n)),
            Err(e) => {
                let e = SandboxError::io("waiting for the container runtime failed", e);
                return Report::failed(e, notes);
            }
        };
        let (peak, oom_kills) = self.setup.cgroup_stats(id);
        let mut error = None;
        if oom_kills > 0 {
            error = Some(SandboxError::MemoryLimit {
                limit: task.limits.memory.unwrap_or(0),
            });
        } else if exit_code != Some(0) {
            let errors = runtime_errors(&log);
            if !errors.is_empty() {
                error = Some(classify_runtime_error(task, &errors.join("; ")));
            }
        }
        Report {
            exit_code: if error.is_some() && oom_kills == 0 {
                None
            } else {
                exit_code
            },
            error,
            stdout: stdout.snapshot(),
            stderr: stderr.snapshot(),
            peak_memory: peak,
            notes,
        }
    }
}

/// Reads a pipe to its end into a capped sink.
async fn pump(mut pipe: impl tokio::io::AsyncRead + Unpin, sink: CaptureSink) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink.push(&buf[..n]),
        }
    }
}

/// Error messages the runtime logged (`--log-format json`).
pub(crate) fn runtime_errors(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect()
}

fn classify_runtime_error(task: &Task, msg: &str) -> SandboxError {
    let program = match &task.kind {
        TaskKind::Container(c) => c.args.first().cloned().unwrap_or_default(),
        TaskKind::Wasm(_) => String::new(),
    };
    classify_start_error(&program, msg)
}

/// What a runtime's error message means for a container running `program`.
pub(crate) fn classify_start_error(program: &str, msg: &str) -> SandboxError {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("executable file not found")
        || lower.contains("no such file or directory")
        || lower.contains("permission denied") && lower.contains("exec")
    {
        SandboxError::InvalidTask(format!(
            "cannot start {program:?} in the image: {msg}; check the command and the image's PATH"
        ))
    } else {
        SandboxError::Runtime(msg.to_string())
    }
}

/// A container's runtime state, bundle and root mount, removed when the
/// run is over.
struct Guard {
    runtime: PathBuf,
    root: PathBuf,
    id: String,
    bundle: Option<tempfile::TempDir>,
    /// The image root bound under the mount folder.
    root_mount: Option<PathBuf>,
}

impl Guard {
    async fn runtime_cmd(&self, args: &[&str]) -> bool {
        runtime_command(&self.runtime, &self.root, &self.id, args)
            .await
            .is_ok()
    }

    async fn kill(&self) {
        self.runtime_cmd(&["kill", &self.id, "KILL"]).await;
    }

    /// Deletes the container and removes the bundle.
    async fn cleanup(&mut self) {
        // Fails harmlessly when the runtime never created the container.
        self.runtime_cmd(&["delete", "--force", &self.id]).await;
        if let Some(bundle) = self.bundle.take() {
            let path = bundle.path().to_path_buf();
            let removed = tokio::task::spawn_blocking(move || bundle.close()).await;
            if !matches!(removed, Ok(Ok(()))) {
                warn!(bundle = %path.display(), "cannot remove the bundle folder");
            }
        }
        if let Some(m) = self.root_mount.take() {
            let _ = tokio::task::spawn_blocking(move || unbind_root(&m)).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Reached with a bundle only when the run was abandoned half-way (its
        // future dropped, or a panic): clean up synchronously.
        if let Some(bundle) = self.bundle.take() {
            warn!(id = %self.id, "run abandoned; deleting its container");
            for args in [
                vec!["kill", &self.id, "KILL"],
                vec!["delete", "--force", &self.id],
            ] {
                let _ = std::process::Command::new(&self.runtime)
                    .arg("--root")
                    .arg(&self.root)
                    .args(&args)
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

impl Drop for Setup {
    fn drop(&mut self) {
        // the per-sandbox mount folder, once no root is bound in it
        if let Ok(dir) = &self.mount_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What `prepare` made.
pub(crate) struct Prepared {
    pub(crate) id: String,
    pub(crate) bundle: tempfile::TempDir,
    pub(crate) notes: Vec<String>,
    /// The image root bound under the mount folder.
    pub(crate) root_mount: Option<PathBuf>,
}

/// The host folders a bundle binds: `/inputs` read-only and `/outputs`
/// writable when given, `/tmp` writable (a tmpfs when absent); and whether
/// ports below 1024 may be bound in the container's own network namespace
/// (services: the namespace holds only a loopback the node connects to).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binds<'a> {
    pub(crate) inputs: Option<&'a Path>,
    pub(crate) outputs: Option<&'a Path>,
    pub(crate) scratch: Option<&'a Path>,
    pub(crate) low_ports: bool,
}

impl Setup {
    /// Deletes containers and bundles left in this sandbox's folders by an
    /// earlier process.
    fn sweep(&self) {
        let Ok(rt) = &self.runtime else { return };
        let listed = std::process::Command::new(&rt.path)
            .arg("--root")
            .arg(&self.root)
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = listed {
            for id in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
                if id.is_empty() {
                    continue;
                }
                warn!(id, "deleting a container left by an earlier run");
                let _ = std::process::Command::new(&rt.path)
                    .arg("--root")
                    .arg(&self.root)
                    .args(["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.bundles) {
            for e in entries.flatten() {
                warn!(bundle = %e.path().display(), "removing a bundle left by an earlier run");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        if let Ok(dir) = &self.mount_dir {
            crate::folders::unmount_under(dir);
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    warn!(root = %e.path().display(), "removing an image root mount left by an earlier run");
                    unbind_root(&e.path());
                }
            }
        }
    }

    /// Checks the task and writes its bundle. Runs on the blocking pool.
    fn prepare(&self, task: &Task) -> Result<Prepared, (SandboxError, Vec<String>)> {
        let TaskKind::Container(ct) = &task.kind else {
            return Err((
                SandboxError::InvalidTask("not a container task".into()),
                Vec::new(),
            ));
        };
        let binds = Binds {
            inputs: Some(&task.inputs),
            outputs: Some(&task.outputs),
            scratch: task.scratch.as_deref(),
            low_ports: false,
        };
        self.prepare_bundle(&task.name, ct, &task.limits, binds)
    }

    /// Checks a container and writes its bundle: the one-shot tasks' and
    /// the long-running services' common path. Runs on the blocking pool.
    pub(crate) fn prepare_bundle(
        &self,
        name: &str,
        ct: &ContainerTask,
        limits: &crate::Limits,
        binds: Binds<'_>,
    ) -> Result<Prepared, (SandboxError, Vec<String>)> {
        let mut notes = Vec::new();
        let fail = |e, notes| Err((e, notes));
        let rootfs = match check_task(ct) {
            Ok(r) => r,
            Err(e) => return fail(e, notes),
        };
        for dir in MOUNT_POINTS {
            let p = rootfs.join(dir);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let e = SandboxError::InvalidTask(format!(
                        "/{dir} in the image is not a folder; weft mounts over it"
                    ));
                    return fail(e, notes);
                }
                Err(_) => {
                    if let Err(e) = std::fs::create_dir(&p) {
                        let e = SandboxError::io(
                            format!("cannot create mount point {}", p.display()),
                            e,
                        );
                        return fail(e, notes);
                    }
                    notes.push(format!(
                        "created the missing mount point /{dir} in the image root"
                    ));
                }
            }
        }
        let mut resources = Resources::default();
        if !self.is_root
            && (limits.memory.is_some() || limits.pids.is_some() || limits.cpu_millis.is_some())
        {
            notes.push("cgroup limits may not apply: the node does not run as root".to_string());
        }
        if let Some(m) = limits.memory {
            if self.cgroups.memory {
                resources.memory = Some(m);
                resources.limit_swap = self.cgroups.swap;
                if !self.cgroups.swap {
                    notes.push("swap not limited: the host has no swap accounting".to_string());
                }
            } else {
                notes.push(
                    "memory limit not applied: the host has no memory cgroup controller"
                        .to_string(),
                );
            }
        }
        if let Some(p) = limits.pids {
            if self.cgroups.pids {
                resources.pids = Some(p);
            } else {
                notes.push(
                    "pids limit not applied: the host has no pids cgroup controller".to_string(),
                );
            }
        }
        if let Some(c) = limits.cpu_millis {
            if self.cgroups.cpu {
                resources.cpu_millis = Some(c);
            } else {
                notes.push(
                    "cpu limit not applied: the host has no cpu cgroup controller".to_string(),
                );
            }
        }

        let mut env: Vec<(String, String)> = ct.env.clone();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let (devices, present) = self.gpu_devices(&ct.gpus, &mut notes);
        if !ct.gpus.is_empty() {
            // the task's own numbering: 0 to N-1 over the devices it got
            let list = (0..present)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",");
            env.retain(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "CUDA_VISIBLE_DEVICES" | "NVIDIA_VISIBLE_DEVICES" | "CUDA_DEVICE_ORDER"
                )
            });
            env.push(("CUDA_VISIBLE_DEVICES".into(), list.clone()));
            env.push(("NVIDIA_VISIBLE_DEVICES".into(), list));
            env.push(("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()));
        }
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();

        if let Some(map) = self.userns {
            for (what, dir) in [("outputs", binds.outputs), ("scratch", binds.scratch)] {
                let Some(dir) = dir else { continue };
                if let Err(e) = give_to(dir, map) {
                    let e = SandboxError::io(
                        format!(
                            "cannot give the {what} folder {} to the container's root",
                            dir.display()
                        ),
                        e,
                    );
                    return fail(e, notes);
                }
            }
        }
        let id = container_id(name);
        let root_mount = match (self.userns, &self.mount_dir) {
            (None, _) => None,
            (Some(_), Err(why)) => {
                let e = SandboxError::Runtime(format!(
                    "containers run in a user namespace and the image root folder cannot be used ({why}); \
                     run the node as root, or turn user namespaces off (sandbox.userns = false) on a host that cannot have them"
                ));
                return fail(e, notes);
            }
            (Some(_), Ok(dir)) => match bind_root(&rootfs, &dir.join(&id)) {
                Ok(p) => Some(p),
                Err(e) => {
                    let e = SandboxError::io(
                        format!(
                            "cannot mount the image root {} for the container",
                            rootfs.display()
                        ),
                        e,
                    );
                    return fail(e, notes);
                }
            },
        };
        let unbind = |notes| {
            if let Some(m) = &root_mount {
                unbind_root(m);
            }
            notes
        };
        let bundle = match tempfile::Builder::new()
            .prefix("weft-bundle-")
            .tempdir_in(&self.bundles)
        {
            Ok(b) => b,
            Err(e) => {
                let e = SandboxError::io(
                    format!("cannot create a bundle in {}", self.bundles.display()),
                    e,
                );
                return fail(e, unbind(notes));
            }
        };
        let cgroups_path = format!("/{}/{}", self.cgroup_parent, id);
        let spec = BundleSpec {
            rootfs: root_mount.as_deref().unwrap_or(&rootfs),
            args: &ct.args,
            env: &env,
            cwd: ct.workdir.as_deref().unwrap_or("/"),
            hostname: "weft",
            inputs: binds.inputs,
            outputs: binds.outputs,
            tmp: match binds.scratch {
                Some(dir) => TmpMount::Bind(dir),
                None => TmpMount::Tmpfs(limits.tmpfs_bytes),
            },
            cgroups_path: &cgroups_path,
            resources,
            devices: &devices,
            arch: std::env::consts::ARCH,
            userns: self.userns,
            low_ports: binds.low_ports,
        };
        let config = oci::config(&spec);
        let written = serde_json::to_vec_pretty(&config)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(bundle.path().join("config.json"), bytes));
        if let Err(e) = written {
            return fail(
                SandboxError::io("cannot write config.json", e),
                unbind(notes),
            );
        }
        Ok(Prepared {
            id,
            bundle,
            notes,
            root_mount,
        })
    }

    /// Device nodes for the assigned GPUs (by minor number) and the
    /// driver's shared nodes, and how many of the GPUs' nodes were found.
    fn gpu_devices(&self, gpus: &[GpuDevice], notes: &mut Vec<String>) -> (Vec<Device>, usize) {
        let mut devices = Vec::new();
        if gpus.is_empty() {
            return (devices, 0);
        }
        let mut names: Vec<(String, bool)> = gpus
            .iter()
            .map(|g| (format!("nvidia{}", g.minor), true))
            .collect();
        for shared in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] {
            names.push((shared.to_string(), false));
        }
        for (name, required) in names {
            let host = self.dev_dir.join(&name);
            match std::fs::metadata(&host) {
                Ok(m) if m.file_type().is_char_device() => {
                    let rdev = m.rdev();
                    devices.push(Device {
                        path: format!("/dev/{name}"),
                        host: host.to_string_lossy().into_owned(),
                        major: libc::major(rdev) as u64,
                        minor: libc::minor(rdev) as u64,
                    });
                }
                _ if required => notes.push(format!(
                    "GPU device {} is not present on this host; not mounted",
                    host.display()
                )),
                _ => {}
            }
        }
        let present = devices
            .iter()
            .filter(|d| {
                d.path
                    .strip_prefix("/dev/nvidia")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        (devices, present)
    }

    /// Peak memory and OOM kills of a container's cgroup, where readable.
    fn cgroup_stats(&self, id: &str) -> (Option<u64>, u64) {
        let rel = format!("{}/{}", self.cgroup_parent, id);
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        let (peak, events) = if self.cgroups.v2 {
            let dir = Path::new("/sys/fs/cgroup").join(&rel);
            (
                read(dir.join("memory.peak")),
                read(dir.join("memory.events")),
            )
        } else {
            let dir = Path::new("/sys/fs/cgroup/memory").join(&rel);
            (
                read(dir.join("memory.max_usage_in_bytes")),
                read(dir.join("memory.oom_control")),
            )
        };
        let peak = peak.and_then(|s| s.trim().parse().ok());
        let ooms = events
            .as_deref()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0);
        (peak, ooms)
    }
}

/// Makes the folder image roots are bound under: `/run/weft-sandbox` (mode
/// 0711, so anyone may pass, no one may list) and `dir` in it, mode 0710
/// with the mapped root's group: the container's root may pass, other
/// local users may not.
fn make_mount_dir(dir: &Path, map: IdMap) -> Result<(), String> {
    let made = (|| -> std::io::Result<()> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::lchown(dir, Some(0), Some(map.host_base))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
    })();
    made.map_err(|e| format!("cannot prepare {}: {e}", dir.display()))
}

/// Gives a folder the container writes to its mapped root (not what is in it).
fn give_to(dir: &Path, map: IdMap) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    if m.uid() != map.host_base || m.gid() != map.host_base {
        std::os::unix::fs::lchown(dir, Some(map.host_base), Some(map.host_base))?;
    }
    Ok(())
}

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
    })
}

/// Binds `rootfs` read-only (`nosuid,nodev`) at `at`, a new folder.
fn bind_root(rootfs: &Path, at: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir(at)?;
    let src = c_path(rootfs)?;
    let dst = c_path(at)?;
    // SAFETY: both are NUL-terminated strings that outlive the calls; the
    // other pointers may be null for a bind mount.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_dir(at);
        return Err(e);
    }
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        unbind_root(at);
        return Err(e);
    }
    Ok(at.to_path_buf())
}

/// Undoes [`bind_root`]: detaches the mount and removes its folder.
pub(crate) fn unbind_root(at: &Path) {
    if let Ok(dst) = c_path(at) {
        // SAFETY: `dst` is NUL-terminated and outlives the call.
        unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    }
    if let Err(e) = std::fs::remove_dir(at)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(root = %at.display(), error = %e, "cannot remove an image root mount point");
    }
}

/// Checks a container task and returns its root as an absolute path.
fn check_task(ct: &ContainerTask) -> Result<PathBuf, SandboxError> {
    if ct.args.is_empty() || ct.args[0].is_empty() {
        return Err(SandboxError::InvalidTask(
            "the container has no command: give command or args, or use an image with an entrypoint or cmd"
                .to_string(),
        ));
    }
    let rootfs = std::fs::canonicalize(&ct.rootfs).map_err(|e| {
        SandboxError::InvalidTask(format!(
            "the image root {} cannot be used: {e}; import the image first",
            ct.rootfs.display()
        ))
    })?;
    if !rootfs.is_dir() {
        return Err(SandboxError::InvalidTask(format!(
            "the image root {} is not a folder",
            rootfs.display()
        )));
    }
    if let Some(w) = &ct.workdir {
        let rel = w.strip_prefix('/').ok_or_else(|| {
            SandboxError::InvalidTask(format!("workdir {w:?} must be an absolute path"))
        })?;
        if rel.split('/').any(|c| c == "..") {
            return Err(SandboxError::InvalidTask(format!(
                "workdir {w:?} must not contain '..'"
            )));
        }
        let first = rel.split('/').next().unwrap_or("");
        let mounted = matches!(first, "inputs" | "outputs" | "tmp");
        if !mounted && !rel.is_empty() && !rootfs.join(rel).is_dir() {
            return Err(SandboxError::InvalidTask(format!(
                "workdir {w:?} does not exist in the image (the root is read-only)"
            )));
        }
    }
    Ok(rootfs)
}

/// A container id unique on this host: `weft-NAME-XXXXXXXX`.
fn container_id(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&now.to_le_bytes());
    format!("weft-{name}-{}", &h.finalize().to_hex()[..8])
}

/// Finds the configured runtime, or `runc` then `crun` on `PATH`.
/// Containers need root: the runtime creates their namespaces, cgroups
/// and mounts. A runtime found by a node that runs as another user is
/// reported as missing, so the node neither advertises containers it
/// cannot run nor accepts their tasks.
fn usable_runtime(
    found: Result<ContainerRuntime, String>,
    euid: u32,
) -> Result<ContainerRuntime, String> {
    match found {
        Ok(rt) if euid != 0 => Err(format!(
            "{} is installed, but containers need root and the node runs as uid {euid}",
            rt.name
        )),
        other => other,
    }
}

fn find_runtime(configured: Option<&Path>) -> Result<ContainerRuntime, String> {
    let path = match configured {
        Some(p) => {
            if !is_executable(p) {
                return Err(format!(
                    "the configured runtime {} is not an executable file",
                    p.display()
                ));
            }
            p.to_path_buf()
        }
        None => {
            let path_var = std::env::var_os("PATH").unwrap_or_default();
            let found = ["runc", "crun"].iter().find_map(|name| {
                std::env::split_paths(&path_var)
                    .map(|d| d.join(name))
                    .find(|p| is_executable(p))
            });
            found.ok_or_else(|| "neither runc nor crun is on PATH".to_string())?
        }
    };
    let out = std::process::Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed", path.display()));
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let name = version
        .split_whitespace()
        .next()
        .filter(|w| matches!(*w, "runc" | "crun"))
        .map(str::to_string)
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(ContainerRuntime {
        name,
        path,
        version,
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads which controllers the cgroup hierarchy under `base` offers.
fn detect_cgroups(base: &Path) -> Cgroups {
    if let Ok(list) = std::fs::read_to_string(base.join("cgroup.controllers")) {
        let has = |c: &str| list.split_whitespace().any(|w| w == c);
        return Cgroups {
            v2: true,
            memory: has("memory"),
            swap: has("memory"),
            pids: has("pids"),
            cpu: has("cpu"),
        };
    }
    Cgroups {
        v2: false,
        memory: base.join("memory").is_dir(),
        swap: base.join("memory/memory.memsw.limit_in_bytes").exists(),
        pids: base.join("pids").is_dir(),
        cpu: base.join("cpu").is_dir(),
    }
}

/// Runs `runtime --root ROOT ARGS` for container `id`; the runtime's stderr
/// when it fails.
pub(crate) async fn runtime_command(
    runtime: &Path,
    root: &Path,
    id: &str,
    args: &[&str],
) -> Result<(), String> {
    let out = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            debug!(%id, ?args, stderr = %why, "runtime command failed");
            Err(why)
        }
        Err(e) => {
            warn!(%id, ?args, error = %e, "cannot run the container runtime");
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_offered_only_as_root() {
        let rt = ContainerRuntime {
            name: "runc".into(),
            path: PathBuf::from("/usr/sbin/runc"),
            version: "runc version 1.1.5".into(),
        };
        assert_eq!(usable_runtime(Ok(rt.clone()), 0), Ok(rt.clone()));
        let why = usable_runtime(Ok(rt), 998).expect_err("not root");
        assert!(
            why.contains("need root") && why.contains("uid 998"),
            "{why}"
        );
        let missing = usable_runtime(Err("neither runc nor crun is on PATH".into()), 998);
        assert_eq!(missing, Err("neither runc nor crun is on PATH".into()));
    }

    #[test]
    fn ids_are_unique_and_valid() {
        let a = container_id("t");
        let b = container_id("t");
        assert_ne!(a, b);
        assert!(
            a.starts_with("weft-t-") && a.len() == "weft-t-".len() + 8,
            "{a}"
        );
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    }

    #[test]
    fn cgroup_layouts_are_read() {
        let v1 = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(v1.path().join("memory")).expect("mkdir");
        std::fs::create_dir_all(v1.path().join("pids")).expect("mkdir");
        std::fs::write(v1.path().join("memory/memory.memsw.limit_in_bytes"), "0").expect("write");
        assert_eq!(
            detect_cgroups(v1.path()),
            Cgroups {
                v2: false,
                memory: true,
                swap: true,
                pids: true,
                cpu: false
            }
        );
        let v2 = tempfile::tempdir().expect("tmp");
        std::fs::write(v2.path().join("cgroup.controllers"), "cpuset cpu io pids\n")
            .expect("write");
        assert_eq!(
            detect_cgroups(v2.path()),
            Cgroups {
                v2: true,
                memory: false,
                swap: false,
                pids: true,
                cpu: true
            }
        );
    }

    #[test]
    fn a_missing_runtime_is_explained() {
        let err = find_runtime(Some(Path::new("/nonexistent/runc"))).expect_err("missing");
        assert!(err.contains("/nonexistent/runc"), "{err}");
    }

    #[test]
    fn runtime_errors_are_read_from_the_json_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"x\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n",
        )
        .expect("write");
        let errors = runtime_errors(&log);
        assert_eq!(errors.len(), 1);
        let task = Task {
            name: "t".into(),
            kind: TaskKind::Container(ContainerTask {
                rootfs: PathBuf::from("/"),
                args: vec!["nope".into()],
                env: vec![],
                workdir: None,
                gpus: vec![],
            }),
            inputs: PathBuf::from("/"),
            outputs: PathBuf::from("/"),
            scratch: None,
            limits: crate::Limits::default(),
        };
        let e = classify_runtime_error(&task, &errors[0]);
        assert_eq!(e.class(), crate::ErrorClass::InvalidTask, "{e}");
        let e = classify_runtime_error(&task, "cgroup: permission denied");
        assert_eq!(e.class(), crate::ErrorClass::Io, "{e}");
    }
}
