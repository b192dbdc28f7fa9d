//! The OCI runtime configuration (`config.json`) of a task's bundle.
//!
//! Goals: one pure function from what a task needs to the bundle's
//! configuration, pinned by a golden file, so every isolation choice is
//! visible in one place:
//! - new pid, mount, ipc, uts, cgroup and network namespaces; the network
//!   namespace is empty (a loopback that is down), so the task has no
//!   network at all;
//! - the image's root read-only; `/inputs` bound read-only, `/outputs`
//!   bound writable, `/tmp` a tmpfs (or a bound scratch folder);
//! - no capabilities in any set, `noNewPrivileges`, a seccomp filter that
//!   refuses syscalls a task has no use for (kernel keyrings, bpf, module
//!   loading, mounts, namespace creation, ptrace ...), rlimits, and the
//!   masked and read-only `/proc` and `/sys` paths of `runc spec`;
//! - cgroup limits for memory (swap included), pids and CPU where given;
//! - device access denied except the assigned GPU nodes.
//!
//! Non-goals: running the runtime (see `container.rs`), user namespaces (the
//! process is uid 0 without capabilities; see THREATS.md).

use std::path::Path;

use serde_json::{Value, json};

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
    pub(crate) inputs: &'a Path,
    pub(crate) outputs: &'a Path,
    pub(crate) tmp: TmpMount<'a>,
    pub(crate) cgroups_path: &'a str,
    pub(crate) resources: Resources,
    pub(crate) devices: &'a [Device],
    /// `std::env::consts::ARCH` of the host.
    pub(crate) arch: &'a str,
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
        json!({"destination": "/inputs", "type": "bind", "source": spec.inputs,
               "options": ["rbind", "ro", "nosuid", "nodev"]}),
        json!({"destination": "/outputs", "type": "bind", "source": spec.outputs,
               "options": ["rbind", "rw", "nosuid", "nodev"]}),
    ];
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

    let devices: Vec<Value> = spec
        .devices
        .iter()
        .map(|d| {
            json!({"path": d.path, "type": "c", "major": d.major, "minor": d.minor,
                   "fileMode": 0o666, "uid": 0, "gid": 0})
        })
        .collect();

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
        "linux": {
            "cgroupsPath": spec.cgroups_path,
            "resources": Value::Object(resources),
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "devices": devices,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ],
            "seccomp": seccomp(spec.arch)
        }
    })
}

/// Syscalls refused with EPERM: none is needed by a batch task, and each
/// widens what a task could reach in the kernel.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "iopl",
    "ioperm",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "userfaultfd",
    "vhangup",
];

/// `clone` flags that create namespaces; `clone` with any of them is refused.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn seccomp(arch: &str) -> Value {
    let architectures: &[&str] = match arch {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    let mut syscalls = vec![
        json!({"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}),
        // clone3 passes its flags in memory, out of a filter's reach: refuse
        // it as unknown so libc falls back to clone, which is checked.
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    // The flags are clone's first argument on x86_64 and aarch64.
    for flag in NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
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
                    major: 195,
                    minor: 1,
                },
                Device {
                    path: "/dev/nvidiactl".into(),
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
            inputs: Path::new("/var/lib/weft/in"),
            outputs: Path::new("/var/lib/weft/out"),
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
            inputs: Path::new("/i"),
            outputs: Path::new("/o"),
            tmp: TmpMount::Bind(Path::new("/scratch")),
            cgroups_path: "/weft/x",
            resources: Resources::default(),
            devices: &[],
            arch: "riscv64",
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
        assert_eq!(c["linux"]["seccomp"]["architectures"], json!([]));
    }
}
