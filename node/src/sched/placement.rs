//! Placement policy: which nodes can run a task, which to probe first, and
//! why none can. Pure functions over adverts, so every rule is unit-tested.
//!
//! Filter: the executor kind, CPU, memory, GPU count/model/memory and label
//! constraints, against each node's advertised capacity (a node's own queue
//! keeps it from running more than it has at once). Rank: bytes of the job's
//! inputs the node already holds, then load, then the smallest GPU that
//! fits. Probe: the best two (power of two choices), or the best alone when
//! it holds strictly more of the inputs than the runner-up.

use std::collections::BTreeMap;

use weft_protocol::NodeAdvert;
use weft_protocol::job::{GpuRequest, LabelKey};
use weft_protocol::sched::{ExecutorKind, Needs};

use crate::cli::human_bytes;

/// A node that could run the task.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) peer: String,
    /// Bytes of the job's inputs it holds.
    pub(crate) local_bytes: u64,
    /// Running plus queued tasks per core.
    pub(crate) load: f64,
    /// Memory of the GPUs it would use (smaller is a tighter fit).
    pub(crate) gpu_fit: u64,
}

/// Whether one device (its memory and model name) satisfies a GPU request.
pub(crate) fn gpu_fits(g: &GpuRequest, memory_bytes: u64, model: &str) -> bool {
    g.memory.is_none_or(|m| memory_bytes >= m.bytes())
        && g.model
            .as_ref()
            .is_none_or(|m| model.to_lowercase().contains(&m.to_lowercase()))
}

fn gpus_matching(advert: &NodeAdvert, needs: &Needs) -> Vec<u64> {
    let Some(g) = &needs.gpu else {
        return Vec::new();
    };
    advert
        .gpus
        .iter()
        .filter(|d| gpu_fits(g, d.memory_bytes, &d.model))
        .map(|d| d.memory_bytes)
        .collect()
}

/// Whether `advert`'s node can ever run a task with these needs and label
/// constraints (capacity, not current load).
pub(crate) fn capable(
    advert: &NodeAdvert,
    needs: &Needs,
    constraints: &BTreeMap<LabelKey, String>,
) -> bool {
    let executor = match needs.executor {
        ExecutorKind::Wasm => advert.executors.wasm,
        ExecutorKind::Container => advert.executors.container_runtime.is_some(),
    };
    executor
        && u64::from(needs.cpu_millis) <= u64::from(advert.cpu_cores) * 1000
        && needs.memory_bytes <= advert.memory_total_bytes
        && needs
            .gpu
            .as_ref()
            .is_none_or(|g| gpus_matching(advert, needs).len() >= g.count as usize)
        && constraints
            .iter()
            .all(|(k, v)| advert.labels.get(k.as_str()) == Some(v))
}

/// The ranked nodes that can run the task; `held` gives the input bytes each
/// node holds.
pub(crate) fn rank<'a>(
    adverts: impl IntoIterator<Item = &'a NodeAdvert>,
    needs: &Needs,
    constraints: &BTreeMap<LabelKey, String>,
    held: &dyn Fn(&str) -> u64,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = adverts
        .into_iter()
        .filter(|a| capable(a, needs, constraints))
        .map(|a| {
            let mut fit = gpus_matching(a, needs);
            fit.sort_unstable();
            let count = needs.gpu.as_ref().map_or(0, |g| g.count as usize);
            Candidate {
                peer: a.peer_id.clone(),
                local_bytes: held(&a.peer_id),
                load: f64::from(a.running_tasks + a.queued_tasks) / f64::from(a.cpu_cores.max(1)),
                gpu_fit: fit.iter().take(count).sum(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.local_bytes
            .cmp(&a.local_bytes)
            .then(a.load.total_cmp(&b.load))
            .then(a.gpu_fit.cmp(&b.gpu_fit))
            .then(a.peer.cmp(&b.peer))
    });
    out
}

/// Which of the ranked candidates (skipping `tried`) to probe now.
pub(crate) fn probe_set(
    ranked: &[Candidate],
    tried: &dyn Fn(&str) -> bool,
    spread: u64,
) -> Vec<String> {
    let fresh: Vec<&Candidate> = ranked.iter().filter(|c| !tried(&c.peer)).collect();
    match fresh.as_slice() {
        [] => Vec::new(),
        [only] => vec![only.peer.clone()],
        [first, second, rest @ ..] => {
            if first.local_bytes > second.local_bytes {
                return vec![first.peer.clone()];
            }
            // two of the equally good: rotate among ties so load spreads even
            // before adverts report it
            let ties: Vec<&&Candidate> = std::iter::once(first)
                .chain(std::iter::once(second))
                .chain(rest.iter())
                .filter(|c| c.local_bytes == first.local_bytes && c.load <= first.load + 0.5)
                .collect();
            if ties.len() > 2 {
                let n = ties.len() as u64;
                let a = (spread % n) as usize;
                let b = ((spread + 1) % n) as usize;
                vec![ties[a].peer.clone(), ties[b].peer.clone()]
            } else {
                vec![first.peer.clone(), second.peer.clone()]
            }
        }
    }
}

/// Why no node can run the task, e.g. `no peer has 1 GPU with 40 GiB: 3
/// peers seen, 0 with GPUs`.
pub(crate) fn explain<'a>(
    adverts: impl IntoIterator<Item = &'a NodeAdvert> + Clone,
    needs: &Needs,
    constraints: &BTreeMap<LabelKey, String>,
) -> String {
    let all: Vec<&NodeAdvert> = adverts.into_iter().collect();
    let seen = all.len();
    let peers = |n: usize| if n == 1 { "peer" } else { "peers" };
    let with_executor: Vec<&&NodeAdvert> = all
        .iter()
        .filter(|a| match needs.executor {
            ExecutorKind::Wasm => a.executors.wasm,
            ExecutorKind::Container => a.executors.container_runtime.is_some(),
        })
        .collect();
    if with_executor.is_empty() {
        return match needs.executor {
            ExecutorKind::Wasm => format!("no peer runs WASM: {seen} {} seen", peers(seen)),
            ExecutorKind::Container => format!(
                "no peer can run containers: {seen} {} seen, 0 with an OCI runtime (runc or crun)",
                peers(seen)
            ),
        };
    }
    if let Some(g) = &needs.gpu {
        let with_gpus = all.iter().filter(|a| !a.gpus.is_empty()).count();
        let fitting = with_executor
            .iter()
            .filter(|a| gpus_matching(a, needs).len() >= g.count as usize)
            .count();
        if fitting == 0 {
            let mut what = format!("{} GPU{}", g.count, if g.count == 1 { "" } else { "s" });
            if let Some(m) = &g.model {
                what.push_str(&format!(" {m}"));
            }
            if let Some(mem) = &g.memory {
                what.push_str(&format!(" with {}", human_bytes(mem.bytes())));
            }
            return format!(
                "no peer has {what}: {seen} {} seen, {with_gpus} with GPUs",
                peers(seen)
            );
        }
    }
    for (k, v) in constraints {
        let n = all
            .iter()
            .filter(|a| a.labels.get(k.as_str()) == Some(v))
            .count();
        if n == 0 {
            return format!(
                "no peer has label {}={v}: {seen} {} seen, 0 with it",
                k.as_str(),
                peers(seen)
            );
        }
    }
    let max_cores = all.iter().map(|a| a.cpu_cores).max().unwrap_or(0);
    if u64::from(needs.cpu_millis) > u64::from(max_cores) * 1000 {
        return format!(
            "no peer has {} CPUs: {seen} {} seen, the largest has {max_cores}",
            f64::from(needs.cpu_millis) / 1000.0,
            peers(seen)
        );
    }
    let max_mem = all.iter().map(|a| a.memory_total_bytes).max().unwrap_or(0);
    if needs.memory_bytes > max_mem {
        return format!(
            "no peer has {} of memory: {seen} {} seen, the largest has {}",
            human_bytes(needs.memory_bytes),
            peers(seen),
            human_bytes(max_mem)
        );
    }
    format!(
        "no peer meets every requirement at once: {seen} {} seen",
        peers(seen)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::job::ByteSize;
    use weft_protocol::{Executors, GpuInfo};

    fn node(id: &str, cores: u32, gpus: &[(&str, u64)]) -> NodeAdvert {
        NodeAdvert {
            peer_id: id.into(),
            cpu_cores: cores,
            memory_total_bytes: 8 << 30,
            executors: Executors {
                wasm: true,
                container_runtime: Some("runc".into()),
            },
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (m, mem))| GpuInfo {
                    index: i as u32,
                    vendor: "nvidia".into(),
                    model: m.to_string(),
                    memory_bytes: *mem,
                    memory_free_bytes: None,
                    uuid: None,
                })
                .collect(),
            ..NodeAdvert::default()
        }
    }

    fn wasm() -> Needs {
        Needs {
            executor: ExecutorKind::Wasm,
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            gpu: None,
        }
    }

    fn gpu(count: u32, mem_gib: u64) -> Needs {
        Needs {
            executor: ExecutorKind::Container,
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            gpu: Some(GpuRequest {
                count,
                memory: Some(ByteSize(mem_gib << 30)),
                model: None,
            }),
        }
    }

    fn none(_: &str) -> u64 {
        0
    }

    #[test]
    fn gpu_jobs_only_go_to_gpu_nodes_with_enough_memory() {
        let nodes = [
            node("a", 2, &[]),
            node("b", 2, &[("A100", 40 << 30)]),
            node("c", 2, &[("T4", 16 << 30)]),
        ];
        let r = rank(&nodes, &gpu(1, 16), &BTreeMap::new(), &none);
        // both fit; the smaller GPU is the tighter fit
        assert_eq!(
            r.iter().map(|c| c.peer.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
        let r = rank(&nodes, &gpu(1, 40), &BTreeMap::new(), &none);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].peer, "b");
        assert!(rank(&nodes, &gpu(2, 16), &BTreeMap::new(), &none).is_empty());
    }

    #[test]
    fn reasons_say_what_is_missing() {
        let nodes = [node("a", 2, &[]), node("b", 2, &[]), node("c", 2, &[])];
        assert_eq!(
            explain(&nodes, &gpu(1, 40), &BTreeMap::new()),
            "no peer has 1 GPU with 40 GiB: 3 peers seen, 0 with GPUs"
        );
        let mut labels = BTreeMap::new();
        labels.insert("zone".parse::<LabelKey>().expect("key"), "a".to_string());
        assert_eq!(
            explain(&nodes, &wasm(), &labels),
            "no peer has label zone=a: 3 peers seen, 0 with it"
        );
        let mut no_runtime = node("x", 2, &[]);
        no_runtime.executors.container_runtime = None;
        assert!(
            explain([&no_runtime], &gpu(1, 1), &BTreeMap::new())
                .starts_with("no peer can run containers")
        );
        let mut big = wasm();
        big.memory_bytes = 64 << 30;
        assert_eq!(
            explain(&nodes, &big, &BTreeMap::new()),
            "no peer has 64 GiB of memory: 3 peers seen, the largest has 8 GiB"
        );
    }

    #[test]
    fn locality_wins_and_is_probed_alone() {
        let nodes = [node("a", 2, &[]), node("b", 2, &[]), node("c", 2, &[])];
        let held = |p: &str| if p == "c" { 1 << 20 } else { 0 };
        let r = rank(&nodes, &wasm(), &BTreeMap::new(), &held);
        assert_eq!(r[0].peer, "c");
        assert_eq!(probe_set(&r, &|_| false, 0), ["c"]);
        // once c was tried, the others
        assert_eq!(probe_set(&r, &|p| p == "c", 0).len(), 2);
    }

    #[test]
    fn load_breaks_ties_and_labels_filter() {
        let mut busy = node("a", 2, &[]);
        busy.running_tasks = 4;
        let mut zoned = node("b", 2, &[]);
        zoned.labels.insert("zone".into(), "x".into());
        let idle = node("c", 2, &[]);
        let r = rank([&busy, &zoned, &idle], &wasm(), &BTreeMap::new(), &none);
        assert_eq!(r.last().map(|c| c.peer.as_str()), Some("a"));
        let mut labels = BTreeMap::new();
        labels.insert("zone".parse::<LabelKey>().expect("key"), "x".to_string());
        let r = rank([&busy, &zoned, &idle], &wasm(), &labels, &none);
        assert_eq!(r.iter().map(|c| c.peer.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn ties_rotate_so_work_spreads() {
        let nodes: Vec<NodeAdvert> = ["a", "b", "c", "d"]
            .iter()
            .map(|p| node(p, 2, &[]))
            .collect();
        let r = rank(&nodes, &wasm(), &BTreeMap::new(), &none);
        let mut seen = std::collections::BTreeSet::new();
        for spread in 0..8 {
            for p in probe_set(&r, &|_| false, spread) {
                seen.insert(p);
            }
        }
        assert_eq!(seen.len(), 4);
    }
}
