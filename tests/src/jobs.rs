//! Helpers the scheduler's scenario tests share: put an artifact on every
//! node, submit a job, wait for a state.

use std::time::{Duration, Instant};

use weft_node::store::records::BlobKind;
use weft_protocol::sched::{JobId, JobState, JobStatus, Submission};
use weft_protocol::{Hash, TagName};

use crate::{Cluster, ClusterOptions, example_wasm, job};

/// Puts `bytes` in every running node's store and tags it there.
pub fn everywhere(cluster: &Cluster, bytes: &[u8], tag: &str) -> Hash {
    let name = TagName::new(tag).expect("tag");
    let mut id = None;
    for (_, n) in cluster.running() {
        let (h, _) = n.store().add_bytes(bytes, BlobKind::Raw).expect("add");
        n.store().set_tag(&name, Some(h)).expect("tag");
        id = Some(h);
    }
    id.expect("a running node")
}

/// Starts `n` nodes with the `sleepy` example stored and tagged
/// `test/sleepy:v1` on each.
pub async fn sleepy_cluster(n: usize) -> Cluster {
    let cluster = Cluster::start(n, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("sleepy").expect("sleepy"),
        "test/sleepy:v1",
    );
    cluster
}

/// Submits the job `yaml` to node `i`.
pub async fn submit(cluster: &Cluster, i: usize, yaml: &str) -> JobStatus {
    cluster
        .node(i)
        .sched()
        .submit(Submission {
            spec: job(yaml),
            local: false,
            run: None,
        })
        .await
        .expect("submit")
}

/// Waits until node `i` says job `id` is over; panics after `within`.
pub async fn wait_done(cluster: &Cluster, i: usize, id: &JobId, within: Duration) -> JobStatus {
    let s = cluster
        .node(i)
        .sched()
        .wait(id.clone(), within)
        .await
        .expect("status");
    assert!(
        s.state.is_terminal(),
        "job {id} not done within {within:?}: {s:#?}"
    );
    s
}

/// Waits until node `i` says job `id` is in `state`; panics after `within`.
pub async fn wait_state(
    cluster: &Cluster,
    i: usize,
    id: &JobId,
    state: JobState,
    within: Duration,
) -> JobStatus {
    let start = Instant::now();
    loop {
        let s = cluster
            .node(i)
            .sched()
            .status(id.clone())
            .await
            .expect("status");
        if s.state == state {
            return s;
        }
        assert!(
            start.elapsed() < within,
            "job {id} never reached {state}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node `i`'s peer id, as job statuses name it.
pub fn peer(cluster: &Cluster, i: usize) -> String {
    cluster.node(i).peer_id().to_string()
}

/// A job running the `sleepy` example for `secs` seconds, with `extra`
/// lines appended to its spec.
pub fn sleepy_job(name: &str, secs: u32, extra: &str) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  task:\n    wasm: {{module: test/sleepy:v1, args: [\"{secs}\"]}}\n  timeout: 2m\n{extra}"
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until node `i` has heard the cache record of `key` (gossiped by
/// the coordinator that recorded it).
pub async fn wait_cache_record(cluster: &Cluster, i: usize, key: Hash) {
    cluster
        .wait_until(
            Duration::from_secs(10),
            "the cache record is heard",
            |c| async move {
                c.node(i)
                    .sched()
                    .cache_record(key)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("node {i}: {e}"));
}
