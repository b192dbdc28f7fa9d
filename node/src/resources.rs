//! What this machine offers the mesh: CPU cores, memory (`/proc/meminfo`),
//! free disk where the store lives (`statvfs`), and GPUs, detected with
//! `nvidia-smi` and merged with those declared in config; and the local
//! [`NodeAdvert`] built from them.
//!
//! Detection never fails the daemon for want of a GPU tool: a missing,
//! failing or hanging `nvidia-smi` means no detected GPUs (logged), and
//! declared GPUs are how tests and driverless machines say what they have.
//!
//! A GPU's device node is `/dev/nvidia{minor}`, where the minor number is
//! the driver's (`nvidia-smi --query-gpu=minor_number`, or "Device Minor"
//! in `/proc/driver/nvidia/gpus/*/information`), which need not equal the
//! index: [`gpu_minor`] maps one to the other for the executor.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tracing::{debug, warn};
use weft_protocol::{Executors, GpuInfo, NodeAdvert, VERSION};

/// How long `nvidia-smi` may take before it is killed.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(10);

/// The query weft runs; [`parse_nvidia_smi`] reads its output.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total,memory.used",
    "--format=csv,noheader,nounits",
];

/// The query for each GPU's device minor number; [`parse_gpu_minors`]
/// reads its output.
pub const NVIDIA_SMI_MINOR_ARGS: [&str; 2] = [
    "--query-gpu=index,minor_number,pci.bus_id",
    "--format=csv,noheader,nounits",
];

/// Where the driver describes each GPU it manages.
const NVIDIA_PROC_GPUS: &str = "/proc/driver/nvidia/gpus";

/// Index to device minor of this machine's NVIDIA GPUs, from the last
/// detection (the same for every node in this process: it is the machine's).
static GPU_MINORS: std::sync::RwLock<BTreeMap<u32, u32>> = std::sync::RwLock::new(BTreeMap::new());

/// The device minor number of the GPU with host index `index`, when the
/// driver reported one; `None` for a GPU only declared in config.
pub fn gpu_minor(index: u32) -> Option<u32> {
    GPU_MINORS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&index)
        .copied()
}

/// Why resources could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no MemTotal line; is /proc mounted?")]
    Meminfo { path: PathBuf },
    #[error("cannot find free space for {path}: {source}")]
    Statvfs { path: PathBuf, source: io::Error },
}

/// A GPU declared in config (`[[gpu]] model = "...", memory = "80Gi"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredGpu {
    /// The device index; a detected GPU with the same index takes this
    /// declaration's model and memory, otherwise the GPU is added. `None`
    /// numbers it after the others.
    pub index: Option<u32>,
    /// Defaults to `nvidia`.
    pub vendor: Option<String>,
    pub model: String,
    pub memory_bytes: u64,
}

/// What this machine offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_cores: u32,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    pub disk_free_bytes: u64,
    pub gpus: Vec<GpuInfo>,
}

/// The parts of an advert that come from the daemon rather than the machine.
#[derive(Debug, Clone, Default)]
pub struct AdvertInputs {
    pub executors: Executors,
    pub labels: BTreeMap<String, String>,
    pub running_tasks: u32,
    pub queued_tasks: u32,
    pub data_plane_addr: Option<String>,
}

/// Reads this machine's resources; `store_dir` is where free disk is
/// measured (it need not exist yet).
pub async fn detect(
    store_dir: &Path,
    declared: &[DeclaredGpu],
) -> Result<Resources, ResourceError> {
    let meminfo = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(meminfo).map_err(|source| ResourceError::Read {
        path: meminfo.to_path_buf(),
        source,
    })?;
    let (memory_total_bytes, memory_free_bytes) =
        parse_meminfo(&text).ok_or_else(|| ResourceError::Meminfo {
            path: meminfo.to_path_buf(),
        })?;
    let disk_free_bytes = disk_free(store_dir).map_err(|source| ResourceError::Statvfs {
        path: store_dir.to_path_buf(),
        source,
    })?;
    detect_gpu_minors().await;
    Ok(Resources {
        cpu_cores: cpu_cores(),
        memory_total_bytes,
        memory_free_bytes,
        disk_free_bytes,
        gpus: merge_gpus(detect_nvidia().await, declared),
    })
}

/// Reads the device minor of each NVIDIA GPU (nvidia-smi, with the
/// driver's `/proc` files for GPUs it gives no minor for) and keeps them
/// for [`gpu_minor`]. Without a driver, none.
pub async fn detect_gpu_minors() -> BTreeMap<u32, u32> {
    let mut command = tokio::process::Command::new("nvidia-smi");
    command
        .args(NVIDIA_SMI_MINOR_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let listed = match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, command.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            parse_gpu_minors(&String::from_utf8_lossy(&out.stdout))
        }
        _ => Vec::new(),
    };
    let from_proc = proc_gpu_minors(Path::new(NVIDIA_PROC_GPUS));
    let minors = resolve_gpu_minors(&listed, &from_proc);
    *GPU_MINORS.write().unwrap_or_else(|p| p.into_inner()) = minors.clone();
    minors
}

/// One line of `nvidia-smi --query-gpu=index,minor_number,pci.bus_id
/// --format=csv,noheader,nounits`: index, minor (when reported) and bus id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMinorLine {
    pub index: u32,
    pub minor: Option<u32>,
    pub bus_id: Option<String>,
}

/// Parses the minor-number query; lines that do not parse are skipped and
/// `[N/A]` minors are `None`.
pub fn parse_gpu_minors(text: &str) -> Vec<GpuMinorLine> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(Ok(index)) = fields.first().map(|f| f.parse::<u32>()) else {
            continue;
        };
        let minor = fields.get(1).and_then(|f| f.parse::<u32>().ok());
        let bus_id = fields
            .get(2)
            .filter(|b| !b.is_empty() && !b.starts_with('['))
            .map(|b| normalize_bus_id(b));
        out.push(GpuMinorLine {
            index,
            minor,
            bus_id,
        });
    }
    out
}

/// Reads `Device Minor` and `Bus Location` from one
/// `/proc/driver/nvidia/gpus/*/information` file.
pub fn parse_proc_gpu_information(text: &str) -> Option<(String, u32)> {
    let mut minor = None;
    let mut bus = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "Device Minor" => minor = value.trim().parse::<u32>().ok(),
            "Bus Location" => bus = Some(normalize_bus_id(value.trim())),
            _ => {}
        }
    }
    Some((bus?, minor?))
}

/// Bus ids as `dddd:bb:dd.f` in lowercase: nvidia-smi prints an 8-digit
/// domain in capitals (`00000000:3B:00.0`), the driver a 4-digit one.
fn normalize_bus_id(b: &str) -> String {
    let b = b.to_ascii_lowercase();
    match b.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => b,
    }
}

fn proc_gpu_minors(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|t| parse_proc_gpu_information(&t))
        .collect()
}

/// Index to minor: nvidia-smi's minor where it gives one, else the driver's
/// for the same bus id. A GPU with neither has no entry (never its index).
pub fn resolve_gpu_minors(
    listed: &[GpuMinorLine],
    from_proc: &[(String, u32)],
) -> BTreeMap<u32, u32> {
    listed
        .iter()
        .filter_map(|g| {
            let minor = g.minor.or_else(|| {
                let bus = g.bus_id.as_ref()?;
                from_proc.iter().find(|(b, _)| b == bus).map(|(_, m)| *m)
            })?;
            Some((g.index, minor))
        })
        .collect()
}

/// Logical CPUs this process may use (honours affinity and cgroup quotas).
pub fn cpu_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// `(total, available)` bytes from `/proc/meminfo` text. Available is
/// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels without it.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            None => value,
            Some(_) => continue,
        };
        fields.insert(key.trim(), bytes);
    }
    let total = *fields.get("MemTotal")?;
    let available = match fields.get("MemAvailable") {
        Some(a) => *a,
        None => ["MemFree", "Buffers", "Cached"]
            .iter()
            .filter_map(|k| fields.get(k))
            .fold(0u64, |acc, v| acc.saturating_add(*v)),
    };
    Some((total, available.min(total)))
}

/// Bytes available to unprivileged users on the filesystem holding `path`,
/// or its nearest existing ancestor.
pub fn disk_free(path: &Path) -> io::Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .unwrap_or(Path::new("."));
    let c_path = CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and
    // `stat` points to writable memory for one `statvfs`, filled on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `statvfs` returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    // `fsblkcnt_t` and `c_ulong` are narrower than u64 on some targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    Ok(free)
}

/// GPUs reported by `nvidia-smi`, or none if it is missing, fails or hangs.
pub async fn detect_nvidia() -> Vec<GpuInfo> {
    let mut command = tokio::process::Command::new("nvidia-smi");
    command
        .args(NVIDIA_SMI_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            debug!("nvidia-smi not found; no NVIDIA GPUs detected");
            return Vec::new();
        }
        Ok(Err(error)) => {
            warn!(%error, "cannot run nvidia-smi; no NVIDIA GPUs detected");
            return Vec::new();
        }
        Err(_) => {
            warn!(timeout = ?NVIDIA_SMI_TIMEOUT, "nvidia-smi hung and was killed; no NVIDIA GPUs detected");
            return Vec::new();
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        warn!(status = %output.status, stderr = %stderr.trim(), "nvidia-smi failed; no NVIDIA GPUs detected");
        return Vec::new();
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
}

/// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used
/// --format=csv,noheader,nounits` (memory in MiB). Lines that do not parse
/// are skipped; `[N/A]` fields become `None`. A model name containing commas
/// is kept whole.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuInfo> {
    const MIB: u64 = 1024 * 1024;
    let known = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && !s.starts_with('[') && s != "N/A").then(|| s.to_string())
    };
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 5 {
            debug!(line, "skipping an nvidia-smi line with too few fields");
            continue;
        }
        let n = fields.len();
        let (Ok(index), Some(Ok(total))) = (
            fields[0].parse::<u32>(),
            known(fields[n - 2]).map(|t| t.parse::<u64>()),
        ) else {
            debug!(line, "skipping an nvidia-smi line without index or memory");
            continue;
        };
        let used = known(fields[n - 1]).and_then(|u| u.parse::<u64>().ok());
        gpus.push(GpuInfo {
            index,
            vendor: "nvidia".into(),
            model: fields[2..n - 2].join(", "),
            memory_bytes: total.saturating_mul(MIB),
            memory_free_bytes: used.map(|u| total.saturating_sub(u).saturating_mul(MIB)),
            uuid: known(fields[1]),
        });
    }
    gpus
}

/// Detected GPUs with the declared ones applied (see [`DeclaredGpu::index`]),
/// sorted by index.
pub fn merge_gpus(mut gpus: Vec<GpuInfo>, declared: &[DeclaredGpu]) -> Vec<GpuInfo> {
    for d in declared {
        if let Some(index) = d.index
            && let Some(gpu) = gpus.iter_mut().find(|g| g.index == index)
        {
            gpu.model = d.model.clone();
            gpu.memory_bytes = d.memory_bytes;
            gpu.memory_free_bytes = gpu.memory_free_bytes.map(|f| f.min(d.memory_bytes));
            if let Some(vendor) = &d.vendor {
                gpu.vendor = vendor.clone();
            }
            continue;
        }
        let index = d
            .index
            .unwrap_or_else(|| gpus.iter().map(|g| g.index + 1).max().unwrap_or(0));
        gpus.push(GpuInfo {
            index,
            vendor: d.vendor.clone().unwrap_or_else(|| "nvidia".into()),
            model: d.model.clone(),
            memory_bytes: d.memory_bytes,
            memory_free_bytes: None,
            uuid: None,
        });
    }
    gpus.sort_by_key(|g| g.index);
    gpus
}

/// The local advert: this machine's resources and the daemon's inputs. The
/// net layer fills in peer id, listen addresses and sequence numbers.
pub fn local_advert(resources: &Resources, inputs: AdvertInputs) -> NodeAdvert {
    NodeAdvert {
        version: VERSION.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        data_plane_addr: inputs.data_plane_addr,
        cpu_cores: resources.cpu_cores,
        memory_total_bytes: resources.memory_total_bytes,
        memory_free_bytes: resources.memory_free_bytes,
        disk_free_bytes: resources.disk_free_bytes,
        gpus: resources.gpus.clone(),
        executors: inputs.executors,
        labels: inputs.labels,
        running_tasks: inputs.running_tasks,
        queued_tasks: inputs.queued_tasks,
        ..NodeAdvert::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   32768000 kB\nBuffers:  10 kB\nHugePages_Total:       0\n";
        assert_eq!(
            parse_meminfo(text),
            Some((65_536_000 * 1024, 32_768_000 * 1024))
        );
        // old kernels: no MemAvailable
        let text = "MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n";
        assert_eq!(parse_meminfo(text), Some((102_400, 35 * 1024)));
        assert_eq!(parse_meminfo("garbage\n:\nMemFree: x kB"), None);
    }

    #[test]
    fn nvidia_smi_output_is_parsed_robustly() {
        let text = "\
0, GPU-5a3e0f7c-1b2d-4e5f-8a9b-0c1d2e3f4a5b, NVIDIA H100 80GB HBM3, 81559, 1024
1, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960, [N/A]
2, [N/A], Tesla T4, 15360, 0

not, a, gpu, line, at all
3, GPU-x, too few
4, GPU-y, Weird, Name, With, Commas, 2048, 2048
";
        let gpus = parse_nvidia_smi(text);
        assert_eq!(gpus.len(), 4, "{gpus:#?}");
        assert_eq!(
            gpus[0],
            GpuInfo {
                index: 0,
                vendor: "nvidia".into(),
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 81_559 * MIB,
                memory_free_bytes: Some((81_559 - 1024) * MIB),
                uuid: Some("GPU-5a3e0f7c-1b2d-4e5f-8a9b-0c1d2e3f4a5b".into()),
            }
        );
        assert_eq!(gpus[1].memory_free_bytes, None);
        assert_eq!(gpus[2].uuid, None);
        assert_eq!(gpus[2].memory_free_bytes, Some(15_360 * MIB));
        assert_eq!(gpus[3].index, 4);
        assert_eq!(gpus[3].model, "Weird, Name, With, Commas");
        assert_eq!(gpus[3].memory_free_bytes, Some(0));
        assert!(parse_nvidia_smi("").is_empty());
        assert!(
            parse_nvidia_smi(
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
            )
            .is_empty()
        );
    }

    #[test]
    fn gpu_minors_come_from_the_driver_not_the_index() {
        // nvidia-smi --query-gpu=index,minor_number,pci.bus_id
        // --format=csv,noheader,nounits on an 8-GPU host whose minors are
        // not in index order (MIG or reordered PCI), one without a minor
        let text = "\
0, 2, 00000000:18:00.0
1, 0, 00000000:3B:00.0
2, [N/A], 00000000:86:00.0
3, 7, 00000000:AF:00.0
garbage line
";
        let listed = parse_gpu_minors(text);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(
            listed[1],
            GpuMinorLine {
                index: 1,
                minor: Some(0),
                bus_id: Some("0000:3b:00.0".into())
            }
        );
        assert_eq!(listed[2].minor, None);
        // /proc/driver/nvidia/gpus/0000:86:00.0/information, as the driver writes it
        let info = "\
Model: \t\t NVIDIA H100 80GB HBM3
IRQ:   \t\t 330
GPU UUID: \t GPU-5a3e0f7c-1b2d-4e5f-8a9b-0c1d2e3f4a5b
Video BIOS: \t 96.00.74.00.01
Bus Type: \t PCIe
DMA Size: \t 52 bits
DMA Mask: \t 0xfffffffffffff
Bus Location: \t 0000:86:00.0
Device Minor: \t 5
GPU Excluded:\t No
";
        assert_eq!(
            parse_proc_gpu_information(info),
            Some(("0000:86:00.0".to_string(), 5))
        );
        assert_eq!(parse_proc_gpu_information("Model: x\n"), None);
        let minors = resolve_gpu_minors(&listed, &[("0000:86:00.0".into(), 5)]);
        assert_eq!(
            minors.into_iter().collect::<Vec<_>>(),
            [(0, 2), (1, 0), (2, 5), (3, 7)]
        );
        // no minor anywhere: no entry, never the index
        let minors = resolve_gpu_minors(&listed[2..3], &[]);
        assert!(minors.is_empty());
        assert_eq!(gpu_minor(4242), None);
    }

    #[test]
    fn declared_gpus_override_by_index_or_are_added() {
        let detected = parse_nvidia_smi("0, GPU-a, NVIDIA A10, 24576, 4096\n");
        let declared = [
            DeclaredGpu {
                index: Some(0),
                vendor: None,
                model: "A10 (capped)".into(),
                memory_bytes: 16 * GIB,
            },
            DeclaredGpu {
                index: None,
                vendor: None,
                model: "H100".into(),
                memory_bytes: 80 * GIB,
            },
            DeclaredGpu {
                index: None,
                vendor: Some("amd".into()),
                model: "MI300X".into(),
                memory_bytes: 192 * GIB,
            },
        ];
        let gpus = merge_gpus(detected, &declared);
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[0].model, "A10 (capped)");
        assert_eq!(gpus[0].memory_bytes, 16 * GIB);
        assert_eq!(
            gpus[0].memory_free_bytes,
            Some(16 * GIB),
            "free capped at memory"
        );
        assert_eq!(gpus[0].uuid.as_deref(), Some("GPU-a"));
        assert_eq!((gpus[1].index, gpus[1].model.as_str()), (1, "H100"));
        assert_eq!((gpus[2].index, gpus[2].vendor.as_str()), (2, "amd"));
        // no driver: declarations alone
        let gpus = merge_gpus(Vec::new(), &declared[1..]);
        assert_eq!(gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn disk_free_of_a_path_not_yet_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = disk_free(&dir.path().join("not/yet/there")).expect("statvfs");
        assert!(free > 0);
        // same filesystem as its existing ancestor (others may write meanwhile)
        let parent = disk_free(dir.path()).expect("statvfs");
        assert!(free.abs_diff(parent) < GIB, "{free} vs {parent}");
    }

    #[tokio::test]
    async fn detect_builds_an_advert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let declared = [DeclaredGpu {
            index: Some(7),
            vendor: None,
            model: "declared".into(),
            memory_bytes: 8 * GIB,
        }];
        let resources = detect(dir.path(), &declared).await.expect("detect");
        assert!(resources.cpu_cores >= 1);
        assert!(resources.memory_total_bytes > 0);
        assert!(resources.memory_free_bytes <= resources.memory_total_bytes);
        assert!(
            resources
                .gpus
                .iter()
                .any(|g| g.index == 7 && g.model == "declared")
        );
        let advert = local_advert(
            &resources,
            AdvertInputs {
                executors: Executors {
                    wasm: true,
                    container_runtime: Some("runc".into()),
                },
                labels: [("zone".to_string(), "a".to_string())].into(),
                running_tasks: 2,
                queued_tasks: 1,
                data_plane_addr: Some("127.0.0.1:9".into()),
            },
        );
        assert_eq!(advert.version, VERSION);
        assert_eq!(advert.arch, std::env::consts::ARCH);
        assert_eq!(advert.cpu_cores, resources.cpu_cores);
        assert_eq!(advert.gpus, resources.gpus);
        assert_eq!(advert.running_tasks, 2);
        assert_eq!(advert.data_plane_addr.as_deref(), Some("127.0.0.1:9"));
        assert!(advert.encode().is_ok());
    }
}
