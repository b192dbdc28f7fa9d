//! The OCI runtime configuration (`config.json`) of a task's bundle.
//!
//! Goals: one pure function from what a task needs to the bundle's
//! configuration, pinned by a golden file, so every isolation choice is
//! visible in one place:
//! - new user, pid, mount, ipc, uts, cgroup and network namespaces; the
//!   user namespace maps container root to an unprivileged host id range
//!   (see [`IdMap`]); the network namespace holds only its loopback
//!   (which the runtime brings up), so the task reaches no network;
//! - the image's root read-only; `/inputs` bound read-only, `/outputs`
//!   bound writable (each when given: a service has no `/outputs`), `/tmp`
//!   a tmpfs (or a bound scratch folder);
//! - no capabilities in any set, `noNewPrivileges`, a seccomp allow-list in
//!   the shape of the container engines' default profile (anything not
//!   listed fails with EPERM: io_uring, kernel keyrings, bpf, userfaultfd,
//!   perf events, module loading, mounts, namespace creation, ptrace ...),
//!   rlimits, and the masked and read-only `/proc` and `/sys` paths of the
//!   engines' defaults;
//! - cgroup limits for memory (swap included), pids and CPU where given;
//! - device access denied except the assigned GPU nodes.
//!
//! Non-goals: running the runtime (see `container.rs`).

use std::path::Path;

use serde_json::{Value, json};

use crate::IdMap;

/// Oldest OCI runtime spec version this configuration needs.
pub(crate) const OCI_VERSION: &str = "1.0.2";

/// How `/tmp` is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TmpMount<'a> {
    /// A tmpfs of this many bytes (counted in the memory cgroup).
    Tmpfs(u64),
    /// A host folder bound writable.
    Bind(&'a Path),
}

/// A device node made inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// The path inside the container, e.g. `/dev/nvidia0`.
    pub(crate) path: String,
    /// The node on the host, bound in place of a `mknod` in a user namespace.
    pub(crate) host: String,
    pub(crate) major: u64,
    pub(crate) minor: u64,
}

/// Cgroup limits to ask for; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub(crate) memory: Option<u64>,
    /// Also cap memory plus swap at the memory limit (needs swap accounting).
    pub(crate) limit_swap: bool,
    pub(crate) pids: Option<u32>,
    /// Thousandths of a core, as a CFS quota over a 100 ms period.
    pub(crate) cpu_millis: Option<u32>,
}

/// Everything the configuration depends on.
#[derive(Debug, Clone)]
pub(crate) struct BundleSpec<'a> {
    pub(crate) rootfs: &'a Path,
    pub(crate) args: &'a [String],
    /// `KEY=VALUE` strings.
    pub(crate) env: &'a [String],
    pub(crate) cwd: &'a str,
    pub(crate) hostname: &'a str,
    /// Bound read-only at `/inputs`; without one, nothing is mounted there.
    pub(crate) inputs: Option<&'a Path>,
    /// Bound writable at `/outputs`; without one, nothing is mounted there.
    pub(crate) outputs: Option<&'a Path>,
    pub(crate) tmp: TmpMount<'a>,
    pub(crate) cgroups_path: &'a str,
    pub(crate) resources: Resources,
    pub(crate) devices: &'a [Device],
    /// `std::env::consts::ARCH` of the host.
    pub(crate) arch: &'a str,
    /// The user namespace's id map; `None` runs without one.
    pub(crate) userns: Option<IdMap>,
    /// Let processes bind ports below 1024 without a capability
    /// (`net.ipv4.ip_unprivileged_port_start=0` in the container's own
    /// network namespace), as services listening on port 80 need.
    pub(crate) low_ports: bool,
}

const CFS_PERIOD_US: u64 = 100_000;

/// Open files a task may hold.
const NOFILE: u64 = 4096;

/// Builds `config.json`.
pub(crate) fn config(spec: &BundleSpec<'_>) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    if let Some(inputs) = spec.inputs {
        mounts.push(
            json!({"destination": "/inputs", "type": "bind", "source": inputs,
                           "options": ["rbind", "ro", "nosuid", "nodev"]}),
        );
    }
    if let Some(outputs) = spec.outputs {
        mounts.push(
            json!({"destination": "/outputs", "type": "bind", "source": outputs,
                           "options": ["rbind", "rw", "nosuid", "nodev"]}),
        );
    }
    mounts.push(match &spec.tmp {
        TmpMount::Tmpfs(bytes) => json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", format!("size={}k", bytes.div_ceil(1024))]
        }),
        TmpMount::Bind(dir) => json!({
            "destination": "/tmp", "type": "bind", "source": dir,
            "options": ["rbind", "rw", "nosuid", "nodev"]
        }),
    });
    if spec.userns.is_some() {
        // No mknod in a user namespace: the host's nodes are bound instead
        // (the cgroup rules below still decide what may be opened).
        for d in spec.devices {
            mounts.push(json!({
                "destination": d.path, "type": "bind", "source": d.host,
                "options": ["bind", "rw", "nosuid", "noexec"]
            }));
        }
    }

    let mut resources = serde_json::Map::new();
    let mut device_rules = vec![json!({"allow": false, "access": "rwm"})];
    for d in spec.devices {
        device_rules.push(json!({"allow": true, "type": "c", "major": d.major,
                                 "minor": d.minor, "access": "rwm"}));
    }
    resources.insert("devices".into(), Value::Array(device_rules));
    if let Some(limit) = spec.resources.memory {
        let mut m = json!({"limit": limit});
        if spec.resources.limit_swap {
            m["swap"] = json!(limit);
        }
        resources.insert("memory".into(), m);
    }
    if let Some(pids) = spec.resources.pids {
        resources.insert("pids".into(), json!({"limit": pids}));
    }
    if let Some(millis) = spec.resources.cpu_millis {
        let quota = u64::from(millis) * CFS_PERIOD_US / 1000;
        resources.insert(
            "cpu".into(),
            json!({"quota": quota.max(1000), "period": CFS_PERIOD_US}),
        );
    }

    let devices: Vec<Value> = if spec.userns.is_some() {
        Vec::new()
    } else {
        spec.devices
            .iter()
            .map(|d| {
                json!({"path": d.path, "type": "c", "major": d.major, "minor": d.minor,
                       "fileMode": 0o666, "uid": 0, "gid": 0})
            })
            .collect()
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];

    let mut linux = json!({
        "cgroupsPath": spec.cgroups_path,
        "resources": Value::Object(resources),
        "devices": devices,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
        "seccomp": seccomp(spec.arch)
    });
    if spec.low_ports {
        linux["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "0"});
    }
    if let Some(map) = spec.userns {
        namespaces.insert(0, json!({"type": "user"}));
        let ids = json!([{"containerID": 0, "hostID": map.host_base, "size": map.size}]);
        linux["uidMappings"] = ids.clone();
        linux["gidMappings"] = ids;
    }
    linux["namespaces"] = Value::Array(namespaces);
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}
            ],
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        },
        "root": {"path": spec.rootfs, "readonly": true},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux
    })
}

/// Paths hidden from the task (as Docker, containerd and Podman do): a file
/// is covered by `/dev/null`, a folder by an empty read-only tmpfs.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the task may read but not write.
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls a task may make, whatever their arguments: the container
/// engines' default allow-list (Docker, containerd, Podman) without the
/// entries that need a capability the task does not have, and without
/// `io_uring_*`, `socketcall` (its socket family is out of a filter's reach)
/// and `name_to_handle_at`. Names a kernel or architecture lacks are
/// skipped by the runtime. Everything else fails with EPERM; in particular
/// the keyring (`keyctl`, `add_key`, `request_key`), `bpf`, `userfaultfd`,
/// `perf_event_open`, the mount family, `kexec_*`, `*_module`, `ptrace`,
/// `process_vm_*`, `setns` and `unshare`.
pub(crate) const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_llseek",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed only on these architectures.
const X86_SYSCALLS: &[&str] = &["arch_prctl", "modify_ldt"];
const ARM_SYSCALLS: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
];

/// `clone` flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET): `clone` is allowed only without them.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality` values allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// AF_VSOCK: a socket family that reaches the host past the network
/// namespace.
const AF_VSOCK: u64 = 40;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn seccomp(arch: &str) -> Value {
    let (architectures, extra): (&[&str], &[&str]) = match arch {
        "x86_64" => (
            &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            X86_SYSCALLS,
        ),
        "aarch64" => (&["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], ARM_SYSCALLS),
        _ => (&[], &[]),
    };
    let mut syscalls = vec![json!({"names": ALLOWED_SYSCALLS, "action": "SCMP_ACT_ALLOW"})];
    if !extra.is_empty() {
        syscalls.push(json!({"names": extra, "action": "SCMP_ACT_ALLOW"}));
    }
    for p in PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]
        }));
    }
    // The flags are clone's first argument on x86_64 and aarch64.
    syscalls.push(json!({
        "names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    }));
    // clone3 passes its flags in memory, out of a filter's reach: refuse it
    // as unknown so libc falls back to clone, which is checked.
    syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    syscalls.push(json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures,
        "syscalls": syscalls
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<String>, Vec<String>, Vec<Device>) {
        (
            vec!["sh".into(), "-c".into(), "echo hi".into()],
            vec!["PATH=/bin".into(), "CUDA_VISIBLE_DEVICES=1".into()],
            vec![
                Device {
                    path: "/dev/nvidia1".into(),
                    host: "/dev/nvidia1".into(),
                    major: 195,
                    minor: 1,
                },
                Device {
                    path: "/dev/nvidiactl".into(),
                    host: "/dev/nvidiactl".into(),
                    major: 195,
                    minor: 255,
                },
            ],
        )
    }

    /// Golden file: a change to the isolation settings is a visible decision.
    #[test]
    fn golden_config() {
        let (args, env, devices) = sample();
        let spec = BundleSpec {
            rootfs: Path::new("/var/lib/weft/rootfs"),
            args: &args,
            env: &env,
            cwd: "/work",
            hostname: "weft",
            inputs: Some(Path::new("/var/lib/weft/in")),
            outputs: Some(Path::new("/var/lib/weft/out")),
            tmp: TmpMount::Tmpfs(64 << 20),
            cgroups_path: "/weft/weft-t-0123abcd",
            resources: Resources {
                memory: Some(256 << 20),
                limit_swap: true,
                pids: Some(128),
                cpu_millis: Some(1500),
            },
            devices: &devices,
            arch: "x86_64",
            userns: Some(IdMap::DEFAULT),
            low_ports: false,
        };
        let text = serde_json::to_string_pretty(&config(&spec)).expect("json") + "\n";
        let golden = include_str!("../tests/golden/oci-config.json");
        if text != golden {
            let out = std::env::temp_dir().join("weft-oci-config.json");
            let _ = std::fs::write(&out, &text);
            panic!(
                "config.json differs from tests/golden/oci-config.json; the new one is in {}",
                out.display()
            );
        }
    }

    #[test]
    fn limits_left_out_are_absent_and_tmp_can_be_bound() {
        let (args, env, _) = sample();
        let spec = BundleSpec {
            rootfs: Path::new("/r"),
            args: &args,
            env: &env,
            cwd: "/",
            hostname: "weft",
            inputs: Some(Path::new("/i")),
            outputs: None,
            tmp: TmpMount::Bind(Path::new("/scratch")),
            cgroups_path: "/weft/x",
            resources: Resources::default(),
            devices: &[],
            arch: "riscv64",
            userns: None,
            low_ports: true,
        };
        let c = config(&spec);
        let res = &c["linux"]["resources"];
        assert!(res.get("memory").is_none() && res.get("pids").is_none());
        assert!(res.get("cpu").is_none());
        assert_eq!(res["devices"].as_array().map(Vec::len), Some(1));
        let tmp = c["mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["destination"] == "/tmp"))
            .expect("a /tmp mount");
        assert_eq!(tmp["type"], "bind");
        assert_eq!(tmp["source"], "/scratch");
        let dests: Vec<&Value> = c["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| &m["destination"])
            .collect();
        assert!(dests.contains(&&json!("/inputs")), "{dests:?}");
        assert!(
            !dests.contains(&&json!("/outputs")),
            "no outputs given: {dests:?}"
        );
        assert_eq!(c["linux"]["seccomp"]["architectures"], json!([]));
        assert!(c["linux"].get("uidMappings").is_none(), "no user namespace");
        assert_eq!(
            c["linux"]["sysctl"],
            json!({"net.ipv4.ip_unprivileged_port_start": "0"}),
            "low ports asked for"
        );
        assert!(
            !c["linux"]["namespaces"]
                .as_array()
                .expect("namespaces")
                .contains(&json!({"type": "user"}))
        );
    }

    #[test]
    fn the_seccomp_allow_list_leaves_out_what_tasks_must_not_reach() {
        let refused = [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "fsconfig",
            "fspick",
            "mount_setattr",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "setns",
            "unshare",
            "clone",
            "clone3",
            "socket",
            "personality",
            "chroot",
            "socketcall",
            "open_by_handle_at",
            "name_to_handle_at",
            "reboot",
            "swapon",
            "syslog",
            "acct",
        ];
        for arch in ["x86_64", "aarch64"] {
            let sc = seccomp(arch);
            assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
            assert_eq!(sc["defaultErrnoRet"], EPERM);
            let rules = sc["syscalls"].as_array().expect("rules");
            let unconditional: Vec<&str> = rules
                .iter()
                .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
                .flat_map(|r| r["names"].as_array().expect("names"))
                .filter_map(Value::as_str)
                .collect();
            for name in refused {
                assert!(!unconditional.contains(&name), "{arch}: {name} is allowed");
            }
            for name in ["read", "write", "execve", "openat", "futex", "exit_group"] {
                assert!(unconditional.contains(&name), "{arch}: {name} is refused");
            }
            let clone3 = rules
                .iter()
                .find(|r| r["names"] == json!(["clone3"]))
                .expect("clone3");
            assert_eq!(
                (&clone3["action"], &clone3["errnoRet"]),
                (&json!("SCMP_ACT_ERRNO"), &json!(ENOSYS))
            );
            let clone = rules
                .iter()
                .find(|r| r["names"] == json!(["clone"]))
                .expect("clone");
            assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
            assert_eq!(clone["args"][0]["value"], 0x7E02_0000u64);
            assert_eq!(clone["args"][0]["valueTwo"], 0);
        }
        assert!(
            seccomp("x86_64")["syscalls"][1]["names"]
                .as_array()
                .is_some_and(|n| n.contains(&json!("arch_prctl")))
        );
        assert!(
            seccomp("aarch64")["syscalls"][1]["names"]
                .as_array()
                .is_some_and(|n| n.contains(&json!("sync_file_range2")))
        );
    }

    #[test]
    fn masked_paths_cover_what_container_engines_mask() {
        for p in [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/proc/interrupts",
        ] {
            assert!(MASKED_PATHS.contains(&p), "{p}");
        }
        for p in [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ] {
            assert!(READONLY_PATHS.contains(&p), "{p}");
        }
    }
}
