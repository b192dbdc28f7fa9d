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

/// The member to run one more replica of `spec` at `revision`, avoiding the
/// nodes in `avoid` while others can take it; `planned` names the nodes of
/// replicas asked for and not yet seen (once per replica). Nodes with the
/// fewest replicas of that revision come first (older revisions are on their
/// way out), then the fewest of the service, then the least busy.
pub fn choose<'a>(
    view: &'a View,
    spec: &ServiceSpec,
    revision: Option<u32>,
    avoid: &[String],
    planned: &[String],
) -> Option<&'a Member> {
    let count = |node: &str, same_revision: bool, only_this: bool| {
        view.routes
            .iter()
            .filter(|(name, _)| !only_this || **name == spec.name)
            .flat_map(|(_, routes)| routes)
            .filter(|r| r.node == node)
            .filter(|r| !same_revision || Some(r.info.revision) == revision)
            .filter(|r| !matches!(r.info.state, ReplicaState::Draining | ReplicaState::Failed))
            .count()
    };
    let planned_on = |node: &str| planned.iter().filter(|p| *p == node).count();
    let fit: Vec<&Member> = view
        .members
        .iter()
        .filter(|m| unfit(&m.advert, spec).is_none())
        .collect();
    let preferred: Vec<&Member> = fit
        .iter()
        .copied()
        .filter(|m| !avoid.contains(&m.id) && !m.stale)
        .collect();
    let pool = if preferred.is_empty() { fit } else { preferred };
    pool.into_iter().min_by_key(|m| {
        (
            count(&m.id, true, true) + planned_on(&m.id),
            count(&m.id, false, true) + planned_on(&m.id),
            count(&m.id, false, false) + m.advert.running_tasks as usize,
            // the same order on every node, different per service
            blake3::hash(format!("{}\n{}", spec.name, m.id).as_bytes()).to_hex(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::mesh::Route;
    use weft_protocol::service::{ReplicaId, ReplicaInfo};

    fn member(id: &str, wasm: bool, labels: &[(&str, &str)]) -> Member {
        Member {
            peer: None,
            id: id.to_string(),
            advert: NodeAdvert {
                executors: weft_protocol::Executors {
                    wasm,
                    container_runtime: None,
                },
                memory_total_bytes: 1 << 30,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..NodeAdvert::default()
            },
            stale: false,
        }
    }

    fn spec(extra: &str) -> ServiceSpec {
        ServiceSpec::from_yaml(&format!(
            "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n  task: {{wasm: {{module: a/b:v1}}}}\n{extra}"
        ))
        .expect("spec")
    }

    fn replica(view: &mut View, node: &str, revision: u32, state: ReplicaState) {
        let info = ReplicaInfo {
            id: ReplicaId(rand::random()),
            service: "web".parse().expect("name"),
            revision,
            state,
            inflight: 0,
            ready_since_ms: None,
            note: None,
        };
        view.routes
            .entry(info.service.clone())
            .or_default()
            .push(Route {
                node: node.to_string(),
                peer: None,
                addr: None,
                info,
            });
    }

    #[test]
    fn replicas_spread_over_nodes_of_the_current_revision_first() {
        let mut view = View {
            members: vec![
                member("a", true, &[]),
                member("b", true, &[]),
                member("c", true, &[]),
            ],
            ..View::default()
        };
        let s = spec("");
        replica(&mut view, "a", 2, ReplicaState::Ready);
        replica(&mut view, "b", 1, ReplicaState::Ready);
        replica(&mut view, "c", 1, ReplicaState::Ready);
        // b and c hold only the old revision: the new one goes there
        let first = choose(&view, &s, Some(2), &[], &[])
            .expect("a node")
            .id
            .clone();
        assert_ne!(first, "a");
        // with one planned there, the third node is next
        let second = choose(&view, &s, Some(2), &[], std::slice::from_ref(&first))
            .expect("a node")
            .id
            .clone();
        assert!(second != "a" && second != first, "{first} {second}");
        // draining and failed replicas do not count
        let mut view2 = View {
            members: vec![member("a", true, &[]), member("b", true, &[])],
            ..View::default()
        };
        replica(&mut view2, "a", 1, ReplicaState::Draining);
        replica(&mut view2, "b", 1, ReplicaState::Ready);
        assert_eq!(
            choose(&view2, &s, Some(1), &[], &[]).expect("a node").id,
            "a"
        );
        // a node whose advert is late is passed over while others fit
        view2.members[0].stale = true;
        assert_eq!(
            choose(&view2, &s, Some(1), &[], &[]).expect("a node").id,
            "b"
        );
        view2.members[0].stale = false;
        // avoided nodes are used only when nothing else fits
        assert_eq!(
            choose(&view2, &s, Some(1), &["a".into()], &[])
                .expect("a node")
                .id,
            "b"
        );
        let lone = View {
            members: vec![member("a", true, &[])],
            ..View::default()
        };
        assert_eq!(
            choose(&lone, &s, Some(1), &["a".into()], &[])
                .expect("a node")
                .id,
            "a"
        );
    }

    #[test]
    fn only_nodes_that_can_run_it_are_chosen() {
        let view = View {
            members: vec![
                member("nowasm", false, &[("zone", "x")]),
                member("otherzone", true, &[("zone", "y")]),
                member("fits", true, &[("zone", "x")]),
            ],
            ..View::default()
        };
        let s = spec("  constraints: {zone: x}\n");
        assert_eq!(
            choose(&view, &s, Some(1), &[], &[]).expect("a node").id,
            "fits"
        );
        let big = spec("  resources: {memory: 2Gi}\n");
        assert!(choose(&view, &big, Some(1), &[], &[]).is_none());
        assert_eq!(
            unfit(&view.members[0].advert, &s).as_deref(),
            Some("no WASM")
        );
    }
}
