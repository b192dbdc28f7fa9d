//! Lineage: what made an artifact, and what was made from it.
//!
//! `GET /api/v1/lineage/{reference}?direction=up|down&depth=N` answers a
//! graph of artifacts and jobs. Upstream, it walks from the artifact to the
//! job that made it (its lineage entry), to that job's inputs, to the jobs
//! that made them, and so on down to artifacts no job made (added by hand:
//! `added`). Downstream, it walks to every job that read the artifact and
//! the outputs of those jobs, recursively. Edges follow the data: input →
//! job → output. `depth` counts jobs from the artifact.
//!
//! A folder no job made (assembled by hand) may hold files or folders a job
//! did make: upstream, when such a folder is held here, the entries of its
//! top level that have a lineage (at most [`MAX_TREE_ENTRIES`] looked at)
//! are followed too, with an edge `entry → folder` whose path is the
//! entry's name.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::Hash;
use weft_protocol::ledger::{EntryBody, EntryKind, Lineage};
use weft_protocol::sched::{ExecutorKind, JobId};

use super::{ApiError, ApiResult, ApiState, blocking};
use crate::store::{Store, StoreError};

/// Deepest walk asked for.
pub const MAX_DEPTH: u32 = 64;
/// Most nodes in one answer; a walk that would pass it stops (`truncated`).
pub const MAX_NODES: usize = 5000;
/// Most entries of a hand-made folder looked up for a lineage.
pub const MAX_TREE_ENTRIES: usize = 256;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(lineage))
}

/// Which way to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To what made it.
    #[default]
    Up,
    /// To what was made from it.
    Down,
}

/// A node of the graph: an artifact or a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GraphNode {
    Artifact {
        /// The artifact id (hex).
        id: String,
        /// No job made it (as far as this node knows): data added by hand.
        added: bool,
        /// Its lineage was not followed: the walk stopped at the depth asked.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    Job {
        /// `job:ID`.
        id: String,
        job: JobId,
        /// The run's name, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline_run: Option<JobId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// The module or image id (hex).
        program: String,
        executor: ExecutorKind,
        /// The node that ran it.
        node: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<(String, String)>,
        at_ms: u64,
    },
}

impl GraphNode {
    pub fn id(&self) -> &str {
        match self {
            GraphNode::Artifact { id, .. } | GraphNode::Job { id, .. } => id,
        }
    }
}

/// An edge, in the direction data flows: input artifact → job (`path`
/// where it was mounted), job → output artifact (`path` it was stored from).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub path: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Graph {
    /// The artifact asked about (hex).
    pub root: String,
    pub direction: Direction,
    pub depth: u32,
    /// Artifacts (`kind: artifact`) and jobs (`kind: job`).
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<Edge>,
    /// The walk stopped at [`MAX_NODES`].
    pub truncated: bool,
}

fn job_node_id(job: &JobId) -> String {
    format!("job:{job}")
}

/// Walks the lineage from `root`.
pub fn walk(
    store: &Store,
    root: Hash,
    direction: Direction,
    depth: u32,
) -> Result<Graph, StoreError> {
    let depth = depth.min(MAX_DEPTH);
    let mut g = Walk {
        nodes: Vec::new(),
        index: HashMap::new(),
        edges: BTreeSet::new(),
        names: BTreeMap::new(),
        truncated: false,
    };
    // downstream: every lineage record by the inputs it read, read once
    let by_input: HashMap<Hash, Vec<Lineage>> = if direction == Direction::Down {
        let mut m: HashMap<Hash, Vec<Lineage>> = HashMap::new();
        for e in store.ledger_kind(EntryKind::Lineage)? {
            if let EntryBody::Lineage(l) = e.body {
                let mut inputs: Vec<Hash> = l.inputs.iter().map(|(h, _)| *h).collect();
                inputs.sort();
                inputs.dedup();
                for h in inputs {
                    m.entry(h).or_default().push(l.clone());
                }
            }
        }
        m
    } else {
        HashMap::new()
    };
    let mut queue: VecDeque<(Hash, u32)> = VecDeque::new();
    let mut expanded: BTreeSet<Hash> = BTreeSet::new();
    queue.push_back((root, 0));
    while let Some((artifact, level)) = queue.pop_front() {
        if !expanded.insert(artifact) {
            continue;
        }
        let made = store.lineage_of(&artifact)?;
        let aid = artifact.to_hex();
        let next: Vec<Lineage> = match direction {
            Direction::Up => made.clone(),
            Direction::Down => by_input.get(&artifact).cloned().unwrap_or_default(),
        };
        // a hand-made folder: its entries that a job made
        let parts = if direction == Direction::Up && made.is_empty() {
            made_entries(store, &artifact)?
        } else {
            Vec::new()
        };
        let more = level >= depth && !(next.is_empty() && parts.is_empty());
        g.artifact(&aid, made.is_empty(), more);
        if more {
            continue;
        }
        for (h, name) in parts {
            g.edges.insert(Edge {
                from: h.to_hex(),
                to: aid.clone(),
                path: format!("/{name}"),
            });
            // the same level: a folder is no job
            queue.push_front((h, level));
        }
        for l in next {
            if g.nodes.len() >= MAX_NODES {
                g.truncated = true;
                break;
            }
            let jid = job_node_id(&l.job);
            g.job(store, &l)?;
            match direction {
                Direction::Up => {
                    g.edges.insert(Edge {
                        from: jid.clone(),
                        to: aid.clone(),
                        path: l.path.clone(),
                    });
                    for (h, path) in &l.inputs {
                        g.edges.insert(Edge {
                            from: h.to_hex(),
                            to: jid.clone(),
                            path: path.clone(),
                        });
                        queue.push_back((*h, level + 1));
                    }
                }
                Direction::Down => {
                    for (h, path) in l.inputs.iter().filter(|(h, _)| *h == artifact) {
                        g.edges.insert(Edge {
                            from: h.to_hex(),
                            to: jid.clone(),
                            path: path.clone(),
                        });
                    }
                    g.edges.insert(Edge {
                        from: jid.clone(),
                        to: l.artifact.to_hex(),
                        path: l.path.clone(),
                    });
                    queue.push_back((l.artifact, level + 1));
                }
            }
        }
    }
    // artifacts named by an edge but never reached (the node cap) still
    // appear, so every edge has both ends
    let named: Vec<String> = g
        .edges
        .iter()
        .flat_map(|e| [e.from.clone(), e.to.clone()])
        .filter(|id| !id.starts_with("job:"))
        .collect();
    for id in named {
        if !g.index.contains_key(&id) {
            let added = id
                .parse::<Hash>()
                .ok()
                .map(|h| store.lineage_of(&h).map(|l| l.is_empty()))
                .transpose()?
                .unwrap_or(true);
            g.artifact(&id, added, !added);
        }
    }
    Ok(Graph {
        root: root.to_hex(),
        direction,
        depth,
        nodes: g.nodes,
        edges: g.edges.into_iter().collect(),
        truncated: g.truncated,
    })
}

/// The top-level entries of a folder held here that a job made, with
/// their names (none when it is not a folder held here).
fn made_entries(store: &Store, h: &Hash) -> Result<Vec<(Hash, String)>, StoreError> {
    if !store.is_tree(h)? {
        return Ok(Vec::new());
    }
    let Ok(tree) = store.read_tree(h) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in tree.entries().iter().take(MAX_TREE_ENTRIES) {
        if !store.lineage_of(&e.hash)?.is_empty() {
            out.push((e.hash, e.name.clone()));
        }
    }
    Ok(out)
}

struct Walk {
    nodes: Vec<GraphNode>,
    index: HashMap<String, usize>,
    edges: BTreeSet<Edge>,
    names: BTreeMap<JobId, Option<String>>,
    truncated: bool,
}

impl Walk {
    fn artifact(&mut self, id: &str, added: bool, more: bool) {
        match self.index.get(id) {
            Some(&i) => {
                if let GraphNode::Artifact { more: m, .. } = &mut self.nodes[i] {
                    *m = *m && more;
                }
            }
            None => {
                self.index.insert(id.to_string(), self.nodes.len());
                self.nodes.push(GraphNode::Artifact {
                    id: id.to_string(),
                    added,
                    more,
                });
            }
        }
    }

    fn job(&mut self, store: &Store, l: &Lineage) -> Result<(), StoreError> {
        let id = job_node_id(&l.job);
        if self.index.contains_key(&id) {
            return Ok(());
        }
        let name = match self.names.get(&l.job) {
            Some(n) => n.clone(),
            None => {
                let n = store
                    .run_view(&l.job)?
                    .and_then(|v| v.start.map(|s| s.name));
                self.names.insert(l.job.clone(), n.clone());
                n
            }
        };
        self.index.insert(id.clone(), self.nodes.len());
        self.nodes.push(GraphNode::Job {
            id,
            job: l.job.clone(),
            name,
            pipeline_run: l.pipeline_run.clone(),
            step: l.step.clone(),
            program: l.program.to_hex(),
            executor: l.executor,
            node: l.node.clone(),
            params: l.params.clone(),
            at_ms: l.at_ms,
        });
        Ok(())
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LineageQuery {
    /// `up` (what made it, the default) or `down` (what was made from it).
    #[serde(default)]
    #[param(inline)]
    direction: Direction,
    /// How many jobs away to walk (1 to 64, default 64).
    #[param(minimum = 1, maximum = 64)]
    depth: Option<u32>,
}

/// `GET /api/v1/lineage/{reference}?direction=up|down&depth=N`.
#[utoipa::path(
    get,
    path = "/api/v1/lineage/{reference}",
    tag = "lineage",
    summary = "The lineage graph of an artifact (query direction=up|down, depth)",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)"), LineageQuery),
    responses(
        (status = 200, description = "the graph", body = Graph),
        (status = 404, description = "no such artifact"),
    ),
)]
async fn lineage(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
    Query(q): Query<LineageQuery>,
) -> ApiResult<Response> {
    let store = state.store.clone();
    let depth = q.depth.unwrap_or(MAX_DEPTH);
    if depth == 0 {
        return Err(ApiError::bad_request("depth must be at least 1"));
    }
    let graph = blocking(move || {
        let root = store.resolve_str(&reference)?;
        walk(&store, root, q.direction, depth)
    })
    .await?;
    Ok(axum::Json(graph).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), "12D3KooWA").expect("open");
        (dir, s)
    }

    fn made(s: &Store, out: Hash, job: u32, inputs: &[Hash], program: &[u8]) {
        s.ledger_append(EntryBody::Lineage(Lineage {
            artifact: out,
            path: "/outputs/o".into(),
            job: JobId::new(1, job),
            pipeline_run: None,
            step: Some(format!("s{job}")),
            program: Hash::of(program),
            executor: ExecutorKind::Wasm,
            inputs: inputs
                .iter()
                .map(|h| (*h, "/inputs/i".to_string()))
                .collect(),
            params: vec![],
            node: "12D3KooWA".into(),
            at_ms: 5,
        }))
        .expect("append");
    }

    /// raw → (job 1, train) → model; model + raw → (job 2, eval) → report
    fn chain(s: &Store) -> (Hash, Hash, Hash) {
        let (raw, model, report) = (Hash::of(b"raw"), Hash::of(b"model"), Hash::of(b"report"));
        made(s, model, 1, &[raw], b"train");
        made(s, report, 2, &[model, raw], b"eval");
        (raw, model, report)
    }

    fn artifacts(g: &Graph) -> BTreeMap<String, (bool, bool)> {
        g.nodes
            .iter()
            .filter_map(|n| match n {
                GraphNode::Artifact { id, added, more } => Some((id.clone(), (*added, *more))),
                _ => None,
            })
            .collect()
    }

    fn programs(g: &Graph) -> BTreeSet<String> {
        g.nodes
            .iter()
            .filter_map(|n| match n {
                GraphNode::Job { program, .. } => Some(program.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn upstream_reaches_the_data_added_by_hand_and_every_program() {
        let (_d, s) = store();
        let (raw, model, report) = chain(&s);
        let g = walk(&s, report, Direction::Up, MAX_DEPTH).expect("walk");
        let a = artifacts(&g);
        assert_eq!(a[&raw.to_hex()], (true, false), "raw is added by hand");
        assert_eq!(a[&model.to_hex()], (false, false));
        assert_eq!(a[&report.to_hex()], (false, false));
        assert_eq!(
            programs(&g),
            [Hash::of(b"train").to_hex(), Hash::of(b"eval").to_hex()].into()
        );
        assert!(g.edges.contains(&Edge {
            from: raw.to_hex(),
            to: "job:00000000000100000001".into(),
            path: "/inputs/i".into()
        }));
        // every edge has both ends among the nodes
        let ids: BTreeSet<&str> = g.nodes.iter().map(GraphNode::id).collect();
        assert!(
            g.edges
                .iter()
                .all(|e| ids.contains(e.from.as_str()) && ids.contains(e.to.as_str()))
        );
        // depth 1: only the job that made it; the model's own lineage is not followed
        let g = walk(&s, report, Direction::Up, 1).expect("walk");
        assert_eq!(artifacts(&g)[&model.to_hex()], (false, true));
        assert_eq!(programs(&g), [Hash::of(b"eval").to_hex()].into());
    }

    #[test]
    fn upstream_follows_the_entries_of_a_hand_made_folder_that_a_job_made() {
        let (_d, s) = store();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("model.json"), b"weights").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"by hand").expect("write");
        let model = Hash::of(b"weights");
        let raw = Hash::of(b"raw");
        made(&s, model, 1, &[raw], b"train");
        let folder = s
            .add_path(dir.path(), &Default::default(), &())
            .expect("add")
            .id;
        let g = walk(&s, folder, Direction::Up, MAX_DEPTH).expect("walk");
        let a = artifacts(&g);
        assert_eq!(a[&folder.to_hex()], (true, false), "no job made the folder");
        assert_eq!(a[&model.to_hex()], (false, false));
        assert_eq!(a[&raw.to_hex()], (true, false));
        assert!(g.edges.contains(&Edge {
            from: model.to_hex(),
            to: folder.to_hex(),
            path: "/model.json".into()
        }));
        assert!(
            !a.contains_key(&Hash::of(b"by hand").to_hex()),
            "only what a job made"
        );
        assert_eq!(programs(&g), [Hash::of(b"train").to_hex()].into());
    }

    #[test]
    fn downstream_reaches_everything_derived() {
        let (_d, s) = store();
        let (raw, model, report) = chain(&s);
        let g = walk(&s, raw, Direction::Down, MAX_DEPTH).expect("walk");
        let a = artifacts(&g);
        assert!(a.contains_key(&model.to_hex()) && a.contains_key(&report.to_hex()));
        assert_eq!(
            g.nodes
                .iter()
                .filter(|n| matches!(n, GraphNode::Job { .. }))
                .count(),
            2
        );
        // a leaf has nothing downstream
        let g = walk(&s, report, Direction::Down, MAX_DEPTH).expect("walk");
        assert_eq!(g.nodes.len(), 1);
        assert!(g.edges.is_empty());
    }
}
