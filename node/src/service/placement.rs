//! Where a new replica goes: a member that can run it (executor, labels,
//! memory, GPUs), with the fewest replicas of the service, then the fewest
//! replicas and tasks overall. Pure policy over a [`View`].

use weft_protocol::NodeAdvert;
use weft_protocol::service::{ReplicaState, ServiceSpec, ServiceTask};

use super::mesh::{Member, View};

/// Why `advert` cannot run `spec`, if it cannot.
pub fn unfit(advert: &NodeAdvert, spec: &ServiceSpec) -> Option<String> {
    match &spec.task {
        ServiceTask::Wasm { .. } if !advert.executors.wasm => return Some("no WASM".into()),
        ServiceTask::Container { .. } if advert.executors.container_runtime.is_none() => {
            return Some("no container runtime".into());
        }
        _ => {}
    }
    for (k, v) in &spec.constraints {
        if advert.labels.get(k.as_str()) != Some(v) {
            return Some(format!("label {}={v} missing", k.as_str()));
        }
    }
    if let Some(m) = spec.resources.memory
        && advert.memory_total_bytes < m.bytes()
    {
        return Some("not enough memory".into());
    }
    if let Some(g) = &spec.resources.gpu {
        let fit = advert
            .gpus
            .iter()
            .filter(|d| g.memory.is_none_or(|m| d.memory_bytes >= m.bytes()))
            .filter(|d| {
                g.model
                    .as_ref()
                    .is_none_or(|m| d.model.contains(m.as_str()))
            })
            .count();
        if (fit as u32) < g.count {
            return Some("not enough GPUs".into());
        }
    }
    None
}

/// The member to run one more replica of `spec`, avoiding the nodes in
/// `avoid` while others can take it; `planned` names the nodes of replicas
/// of `spec` already asked for and not yet seen (once per replica).
pub fn choose<'a>(
    view: &'a View,
    spec: &ServiceSpec,
    avoid: &[String],
    planned: &[String],
) -> Option<&'a Member> {
    let live = |node: &str, only_this: bool| {
        planned.iter().filter(|p| *p == node).count()
            + view
                .routes
                .iter()
                .filter(|(name, _)| !only_this || **name == spec.name)
                .flat_map(|(_, routes)| routes)
                .filter(|r| r.node == node)
                .filter(|r| !matches!(r.info.state, ReplicaState::Draining | ReplicaState::Failed))
                .count()
    };
    let fit: Vec<&Member> = view
        .members
        .iter()
        .filter(|m| unfit(&m.advert, spec).is_none())
        .collect();
    let preferred: Vec<&Member> = fit
        .iter()
        .copied()
        .filter(|m| !avoid.contains(&m.id))
        .collect();
    let pool = if preferred.is_empty() { fit } else { preferred };
    pool.into_iter().min_by_key(|m| {
        (
            live(&m.id, true),
            live(&m.id, false) + m.advert.running_tasks as usize,
            // the same order on every node, different per service
            blake3::hash(format!("{}\n{}", spec.name, m.id).as_bytes()).to_hex(),
        )
    })
}
