//! Continuous training: a tag move starts a triggered pipeline once across
//! the mesh, however many nodes watch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_node::ledger::triggers::{self, Starter, trigger_text, triggered_runs};
use weft_node::store::records::BlobKind;
use weft_protocol::ledger::EntryKind;
use weft_protocol::sched::JobId;
use weft_protocol::{Hash, TagName};
use weft_tests::{Cluster, ClusterOptions, now_ms};

type Started = std::pin::Pin<Box<dyn std::future::Future<Output = Result<JobId, String>> + Send>>;

/// A pipeline start as the callback saw it.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    node: usize,
    pipeline: String,
    tag: TagName,
    target: Hash,
    trigger: String,
    run: JobId,
}

/// Plugs a recording starter into every node.
fn record_starts(cluster: &Cluster) -> Arc<Mutex<Vec<Call>>> {
    record_starts_failing(cluster, Arc::new(AtomicBool::new(false)))
}

/// Plugs a recording starter into every node; it fails while `fail` is set.
fn record_starts_failing(cluster: &Cluster, fail: Arc<AtomicBool>) -> Arc<Mutex<Vec<Call>>> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    for (i, n) in cluster.running() {
        let calls = calls.clone();
        let fail = fail.clone();
        let starter: Starter = Arc::new(move |def, tag, target, trigger| {
            let mut calls = calls.lock().expect("calls");
            let run = JobId::new(now_ms(), calls.len() as u32);
            calls.push(Call {
                node: i,
                pipeline: def.name,
                tag,
                target,
                trigger,
                run: run.clone(),
            });
            let failing = fail.load(Ordering::SeqCst);
            let started: Started = Box::pin(async move {
                if failing {
                    Err("the pipeline engine is down".to_string())
                } else {
                    Ok(run)
                }
            });
            started
        });
        n.triggers().set_starter(starter);
    }
    calls
}

fn pipeline(name: &str, trigger: &str) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  triggers: [{{tag: {trigger}}}]\n  steps:\n    train:\n      task: {{wasm: {{module: examples/train:v1}}}}\n"
    )
}

/// Keeps `name` on node 0 and waits until every node holds it.
async fn keep(cluster: &Cluster, name: &str, trigger: &str) {
    triggers::keep(
        cluster.node(0).ledger(),
        name,
        &pipeline(name, trigger),
        vec![],
    )
    .await
    .expect("keep")
    .expect("a definition written");
    wait_defs(cluster, name, 1).await;
}

async fn wait_defs(cluster: &Cluster, name: &str, n: usize) {
    let name = name.to_string();
    cluster
        .wait_until(
            Duration::from_secs(10),
            "every node holds the pipeline",
            |c| {
                let name = name.clone();
                async move {
                    c.running().all(|(_, node)| {
                        node.store()
                            .ledger_subject(EntryKind::Pipeline, &name)
                            .is_ok_and(|e| e.len() == n)
                    })
                }
            },
        )
        .await
        .expect("definition replicated");
}

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

/// Points `name` at fresh bytes on node `i`; returns their id.
fn move_tag(cluster: &Cluster, i: usize, name: &str, bytes: &[u8]) -> Hash {
    let s = cluster.node(i).store();
    let (h, _) = s.add_bytes(bytes, BlobKind::Raw).expect("add");
    s.set_tag(&tag(name), Some(h)).expect("tag");
    h
}

/// Waits until `n` runs were started and every node holds their claims;
/// then gives a late duplicate a moment to show itself.
async fn wait_runs(cluster: &Cluster, calls: &Arc<Mutex<Vec<Call>>>, n: usize) -> Vec<Call> {
    cluster
        .wait_until(
            Duration::from_secs(15),
            "the runs are started and known everywhere",
            |c| {
                let calls = calls.clone();
                async move {
                    let started = calls.lock().expect("calls").len();
                    started >= n
                        && c.running().all(|(_, node)| {
                            triggered_runs(node.store()).is_ok_and(|r| r.len() >= n)
                        })
                }
            },
        )
        .await
        .expect("runs started");
    // every node has the tag change and the claims by now; one that would
    // still start a run would do so at once
    tokio::time::sleep(Duration::from_millis(500)).await;
    calls.lock().expect("calls").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_move_starts_one_run_across_the_mesh() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let calls = record_starts(&cluster);
    // a version set before the pipeline is kept fires nothing
    let before = move_tag(&cluster, 0, "datasets/iris:v1", b"iris before");
    keep(&cluster, "iris", "datasets/iris:v1").await;

    let first = move_tag(&cluster, 1, "datasets/iris:v1", b"iris one");
    let seen = wait_runs(&cluster, &calls, 1).await;
    assert_eq!(
        seen.len(),
        1,
        "one tag move, one run across 3 nodes: {seen:#?}"
    );
    let call = &seen[0];
    assert_eq!(
        (call.pipeline.as_str(), &call.tag, call.target),
        ("iris", &tag("datasets/iris:v1"), first)
    );
    // the run records the change that triggered it, on every node
    assert_eq!(call.trigger, trigger_text(&tag("datasets/iris:v1"), &first));
    assert_eq!(
        call.trigger,
        format!("tag datasets/iris:v1 -> {}", first.to_hex())
    );
    for (i, n) in cluster.running() {
        assert_eq!(
            triggered_runs(n.store()).expect("claims"),
            vec![(
                "iris".to_string(),
                tag("datasets/iris:v1"),
                first,
                call.run.clone()
            )],
            "node {i}"
        );
    }
    assert_ne!(before, first);

    // a second move, from another node: a second run, for its id
    let second = move_tag(&cluster, 2, "datasets/iris:v1", b"iris two");
    let seen = wait_runs(&cluster, &calls, 2).await;
    assert_eq!(seen.len(), 2, "two moves, two runs: {seen:#?}");
    assert_eq!(seen[1].target, second);

    // a trigger on a repository fires for any version of it
    keep(&cluster, "wine", "datasets/wine").await;
    let wine = move_tag(&cluster, 0, "datasets/wine:2026-12", b"wine");
    let seen = wait_runs(&cluster, &calls, 3).await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(
        (seen[2].pipeline.as_str(), &seen[2].tag, seen[2].target),
        ("wine", &tag("datasets/wine:2026-12"), wine)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_pipeline_does_not_fire() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let calls = record_starts(&cluster);
    keep(&cluster, "off", "datasets/off:v1").await;
    triggers::set_active(cluster.node(1).ledger(), "off", false)
        .await
        .expect("turn off");
    wait_defs(&cluster, "off", 2).await;
    keep(&cluster, "probe", "datasets/probe:v1").await;

    move_tag(&cluster, 2, "datasets/off:v1", b"off");
    // moved after it on the same node: once the probe's run is started,
    // every node has judged the first move too
    let probe = move_tag(&cluster, 2, "datasets/probe:v1", b"probe");
    let seen = wait_runs(&cluster, &calls, 1).await;
    assert_eq!(
        seen.iter()
            .map(|c| (c.pipeline.as_str(), c.target))
            .collect::<Vec<_>>(),
        [("probe", probe)],
        "{seen:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_node_left_is_taken_over_once() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    for (_, n) in cluster.running() {
        n.triggers().set_stale_after(Duration::from_millis(1500));
    }
    // the owner claims the change, then fails to start the run and leaves
    let fail = Arc::new(AtomicBool::new(true));
    let calls = record_starts_failing(&cluster, fail.clone());
    keep(&cluster, "iris", "datasets/iris").await;
    let target = move_tag(&cluster, 1, "datasets/iris:v2", b"iris");
    cluster
        .wait_until(Duration::from_secs(10), "the owner tried to start", |_| {
            let calls = calls.clone();
            async move { !calls.lock().expect("calls").is_empty() }
        })
        .await
        .expect("owner acted");
    let owner = calls.lock().expect("calls")[0].node;
    fail.store(false, Ordering::SeqCst);
    cluster.stop_node(owner).await;

    // another node takes over once the claim is stale and its writer gone
    let took_over = cluster
        .wait_until(
            Duration::from_secs(15),
            "another node started the run",
            |c| {
                let calls = calls.clone();
                async move {
                    calls.lock().expect("calls").len() >= 2
                        && c.running().all(|(_, node)| {
                            triggered_runs(node.store()).is_ok_and(|r| !r.is_empty())
                        })
                }
            },
        )
        .await;
    let seen = calls.lock().expect("calls").clone();
    took_over.unwrap_or_else(|e| panic!("{e}: {seen:#?}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = calls.lock().expect("calls").clone();
    assert_eq!(seen.len(), 2, "one failed start, one takeover: {seen:#?}");
    assert_ne!(seen[1].node, owner);
    assert_eq!(
        (seen[1].pipeline.as_str(), seen[1].target),
        ("iris", target)
    );
    for (i, n) in cluster.running() {
        assert_eq!(
            triggered_runs(n.store()).expect("claims"),
            vec![(
                "iris".to_string(),
                tag("datasets/iris:v2"),
                target,
                seen[1].run.clone()
            )],
            "node {i}"
        );
    }
    cluster.stop().await;
}
