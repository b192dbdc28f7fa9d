//! The scheduler across a cluster: spreading, GPUs, failover, memoization,
//! waiting for capable peers, cancellation, and status from any node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_node::store::records::BlobKind;
use weft_protocol::TagName;
use weft_protocol::sched::{JobState, JobStatus};
use weft_tests::{
    Cluster, ClusterOptions, everywhere, example_wasm, peer, sleepy_cluster, sleepy_job, submit,
    wait_done, wait_state,
};

/// A WASI module that exits at once.
const TRIVIAL_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn trivial_job(n: usize) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: trivial-{n}}}\nspec:\n  task:\n    wasm: {{module: test/trivial:v1, args: [\"{n}\"]}}\n  timeout: 30s\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_jobs_from_every_node_all_succeed_spread_over_all_nodes() {
    let cluster = Cluster::start(4, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(TRIVIAL_WAT).expect("wat");
    everywhere(&cluster, &wasm, "test/trivial:v1");
    let t = Instant::now();
    let mut ids = Vec::new();
    for n in 0..200 {
        let i = n % 4;
        ids.push((i, submit(&cluster, i, &trivial_job(n)).await.id));
    }
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in &ids {
        let s = wait_done(&cluster, *i, id, Duration::from_secs(60)).await;
        assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
        *by_node
            .entry(s.node.clone().expect("executor"))
            .or_default() += 1;
    }
    eprintln!(
        "200 jobs in {:?}, per node: {:?}",
        t.elapsed(),
        by_node.values().collect::<Vec<_>>()
    );
    assert_eq!(by_node.len(), 4, "every node ran some: {by_node:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_jobs_run_only_on_the_gpu_node_one_at_a_time() {
    let opts = ClusterOptions {
        gpu_nodes: vec![2],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(4, opts).await.expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("sleepy").expect("sleepy"),
        "test/sleepy:v1",
    );
    let gpu = "  resources: {gpu: {count: 1, memory: 8Gi}}\n";
    let a = submit(&cluster, 0, &sleepy_job("gpu-a", 1, gpu)).await.id;
    let b = submit(&cluster, 1, &sleepy_job("gpu-b", 1, gpu)).await.id;
    let sa = wait_done(&cluster, 0, &a, Duration::from_secs(30)).await;
    let sb = wait_done(&cluster, 1, &b, Duration::from_secs(30)).await;
    for s in [&sa, &sb] {
        assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
        assert_eq!(
            s.node.as_deref(),
            Some(peer(&cluster, 2).as_str()),
            "ran off the GPU node"
        );
    }
    // one after the other: one finished before the other started running
    let span = |s: &JobStatus| {
        let start = s
            .history
            .iter()
            .find(|t| t.state == JobState::Running)
            .expect("ran")
            .at_ms;
        let end = s.history.last().expect("ended").at_ms;
        (start, end)
    };
    let ((a0, a1), (b0, b1)) = (span(&sa), span(&sb));
    assert!(
        a1 <= b0 || b1 <= a0,
        "GPU jobs overlapped: a {a0}..{a1}, b {b0}..{b1}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_executor_s_job_completes_elsewhere_with_history() {
    let mut cluster = sleepy_cluster(4).await;
    // keep it off the coordinator (node 0) so stopping the executor leaves
    // the coordinator up
    let workers = "  constraints: {worker: \"yes\"}\n";
    let id = submit(&cluster, 0, &sleepy_job("failover", 2, workers))
        .await
        .id;
    let running = wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    let victim = running.node.clone().expect("executor");
    let idx = cluster
        .running()
        .find(|(_, n)| n.peer_id() == victim)
        .map(|(i, _)| i)
        .expect("executor is a member");
    assert_ne!(idx, 0, "a worker ran it");
    let killed_ms = weft_node_now_ms();
    cluster.stop_node(idx).await;
    let s = wait_done(&cluster, 0, &id, Duration::from_secs(60)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert!(s.attempt >= 2, "{s:#?}");
    assert_ne!(s.node.as_deref(), Some(victim.as_str()));
    let lost = s
        .history
        .iter()
        .find(|t| t.state == JobState::Failed && t.attempt == 1)
        .expect("attempt 1 recorded as failed");
    assert!(
        lost.reason.as_deref().unwrap_or("").contains("lost"),
        "{lost:?}"
    );
    let rerun = s
        .history
        .iter()
        .find(|t| t.state == JobState::Running && t.attempt == 2)
        .expect("attempt 2 ran");
    eprintln!(
        "executor stopped; job running elsewhere after {} ms",
        rerun.at_ms.saturating_sub(killed_ms)
    );
    cluster.stop().await;
}

fn weft_node_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_job_is_a_cache_hit_that_runs_nothing() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(TRIVIAL_WAT).expect("wat");
    everywhere(&cluster, &wasm, "test/trivial:v1");
    let first = submit(&cluster, 0, &trivial_job(1)).await.id;
    let done = wait_done(&cluster, 0, &first, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert!(!done.result.as_ref().expect("result").cached);
    // from another node: the result was gossiped
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = submit(&cluster, 2, &trivial_job(1)).await;
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert!(again.result.as_ref().expect("result").cached);
    assert!(
        !again
            .history
            .iter()
            .any(|t| t.state == JobState::Running || t.state == JobState::Placed),
        "a cache hit ran: {again:#?}"
    );
    // cache: false runs it again
    let fresh = submit(&cluster, 2, &(trivial_job(1) + "  cache: false\n"))
        .await
        .id;
    let fresh = wait_done(&cluster, 2, &fresh, Duration::from_secs(30)).await;
    assert!(!fresh.result.as_ref().expect("result").cached);
    assert!(fresh.history.iter().any(|t| t.state == JobState::Running));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_job_waits_with_its_reason_then_runs_when_a_capable_node_joins() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(TRIVIAL_WAT).expect("wat");
    everywhere(&cluster, &wasm, "test/trivial:v1");
    let yaml = trivial_job(7) + "  resources: {gpu: {count: 1, memory: 40Gi}}\n";
    let id = submit(&cluster, 0, &yaml).await.id;
    let want = "no peer has 1 GPU with 40 GiB: 3 peers seen, 0 with GPUs";
    let start = Instant::now();
    loop {
        let s = cluster
            .node(0)
            .sched()
            .status(id.clone())
            .await
            .expect("status");
        assert_eq!(s.state, JobState::Pending, "{s:#?}");
        if s.reason.as_deref() == Some(want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "reason: {:?}",
            s.reason
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // still pending a while later: nothing can run it
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = cluster
        .node(0)
        .sched()
        .status(id.clone())
        .await
        .expect("status");
    assert_eq!(s.state, JobState::Pending);
    let joined = cluster
        .add_node(|c| {
            c.gpus.push(weft_node::config::GpuDecl {
                model: "big-gpu".into(),
                memory: "80Gi".into(),
                count: 1,
            })
        })
        .await
        .expect("gpu node joins");
    cluster
        .node(joined)
        .store()
        .add_bytes(&wasm, BlobKind::Raw)
        .expect("module on the new node");
    let s = wait_done(&cluster, 0, &id, Duration::from_secs(30)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert_eq!(s.node.as_deref(), Some(peer(&cluster, joined).as_str()));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_wasm_task_and_status_agrees_everywhere() {
    let cluster = sleepy_cluster(3).await;
    let id = submit(&cluster, 0, &sleepy_job("long", 3600, "")).await.id;
    let running = wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    // the same state seen from a node that is not the coordinator
    let elsewhere = cluster
        .node(1)
        .sched()
        .status(id.clone())
        .await
        .expect("status from node 1");
    assert_eq!(elsewhere.state, JobState::Running);
    assert_eq!(elsewhere.node, running.node);
    assert_eq!(elsewhere.coordinator, peer(&cluster, 0));
    // cancel from a third node
    let t = Instant::now();
    let after = cluster
        .node(2)
        .sched()
        .cancel(id.clone())
        .await
        .expect("cancel");
    assert_eq!(after.state, JobState::Cancelled);
    // the executor's task stops: its running count drops back to 0
    let executor = running.node.expect("executor");
    cluster
        .wait_until(Duration::from_secs(5), "the executor runs nothing", |c| {
            let executor = executor.clone();
            async move {
                c.running()
                    .filter(|(_, n)| n.peer_id() == executor)
                    .all(|(_, n)| n.advert().running_tasks == 0)
            }
        })
        .await
        .expect("task stopped");
    eprintln!("cancelled and stopped in {:?}", t.elapsed());
    for (i, _) in cluster.running() {
        let s = wait_state(
            &cluster,
            i,
            &id,
            JobState::Cancelled,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(s.state, JobState::Cancelled);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_tracking_its_job() {
    let mut cluster = sleepy_cluster(3).await;
    // run it on node 1, coordinated by node 0
    let id = submit(
        &cluster,
        0,
        &sleepy_job("resume", 2, "  constraints: {node: \"1\"}\n"),
    )
    .await
    .id;
    wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    cluster.stop_node(0).await;
    cluster.restart_node(0).await.expect("restart");
    let s = wait_done(&cluster, 0, &id, Duration::from_secs(60)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert_eq!(
        s.attempt, 1,
        "the running attempt was kept, not redone: {s:#?}"
    );
    assert_eq!(s.node.as_deref(), Some(peer(&cluster, 1).as_str()));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_container_and_leaves_nothing_behind() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: containers need root (runc)");
        return;
    }
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    weft_tests::import_test_image_everywhere(&cluster, "images/busybox:test").expect("import");
    // a sleep length of its own, to tell its process from any other
    let secs = 3600 + rand::random::<u16>() as u32;
    let yaml = format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: sleeper}}\nspec:\n  task:\n    container: {{image: images/busybox:test, command: [sleep, \"{secs}\"]}}\n  timeout: 10m\n"
    );
    let id = submit(&cluster, 0, &yaml).await.id;
    let running = wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(30)).await;
    let executor = running.node.clone().expect("executor");
    let (idx, node) = cluster
        .running()
        .find(|(_, n)| n.peer_id() == executor)
        .expect("executor is a member");
    let sandbox = node.home().root().join("sandbox");
    // the container is there while it runs (its id starts weft-<task name>-)
    let container = format!("weft-{id}-1-");
    let listed = |root: &std::path::Path| {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(root.join("runc"))
            .arg("list")
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cluster
        .wait_until(Duration::from_secs(10), "the container runs", |_| {
            let sandbox = sandbox.clone();
            let container = container.clone();
            async move { listed(&sandbox).contains(&container) }
        })
        .await
        .expect("container listed by runc");
    let after = cluster
        .node(1 - idx.min(1))
        .sched()
        .cancel(id.clone())
        .await
        .expect("cancel");
    assert_eq!(after.state, JobState::Cancelled);
    let node = cluster.node(idx);
    cluster
        .wait_until(Duration::from_secs(10), "the container is gone", |_| {
            let sandbox = sandbox.clone();
            let container = container.clone();
            async move {
                let bundles_empty = std::fs::read_dir(sandbox.join("bundles"))
                    .map(|d| d.count() == 0)
                    .unwrap_or(true);
                !listed(&sandbox).contains(&container)
                    && bundles_empty
                    && node.advert().running_tasks == 0
            }
        })
        .await
        .expect("container killed and cleaned up");
    // and no process of it is left
    let procs = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {secs}")])
        .output()
        .expect("pgrep");
    assert!(procs.stdout.is_empty(), "a container process survived");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_where_its_input_lives_when_that_node_is_free() {
    let cluster = Cluster::start(4, ClusterOptions::default())
        .await
        .expect("cluster");
    // the program is only on node 0; the input only on node 3
    let wasm = example_wasm("wordcount").expect("wordcount");
    let module = cluster
        .node(0)
        .store()
        .add_bytes(&wasm, BlobKind::Raw)
        .expect("module")
        .0;
    cluster
        .node(0)
        .store()
        .set_tag(
            &TagName::new("test/wordcount:v1").expect("tag"),
            Some(module),
        )
        .expect("tag");
    let docs = tempfile::tempdir().expect("tempdir");
    for i in 0..20 {
        std::fs::write(
            docs.path().join(format!("doc{i}.txt")),
            format!("only on node three {i}\n").repeat(2000),
        )
        .expect("write");
    }
    let input = cluster
        .node(3)
        .store()
        .add_path(docs.path(), &Default::default(), &())
        .expect("add")
        .id;
    cluster
        .node(3)
        .store()
        .set_tag(
            &TagName::new("datasets/local:v1").expect("tag"),
            Some(input),
        )
        .expect("tag");
    cluster
        .wait_until(
            Duration::from_secs(5),
            "the tags replicated",
            |c| async move {
                c.node(0)
                    .store()
                    .tag(&TagName::new("datasets/local:v1").expect("tag"))
                    .ok()
                    .flatten()
                    == Some(input)
            },
        )
        .await
        .expect("tags");
    for round in 0..3 {
        let yaml = format!(
            "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: near-data-{round}}}\nspec:\n  task:\n    wasm: {{module: test/wordcount:v1, args: [\"--input\", \"/inputs/docs\", \"--out\", \"/outputs/counts.json\"]}}\n  inputs: [{{from: datasets/local:v1, path: /inputs/docs}}]\n  outputs: [{{path: /outputs}}]\n  cache: false\n"
        );
        let id = submit(&cluster, round % 3, &yaml).await.id;
        let s = wait_done(&cluster, round % 3, &id, Duration::from_secs(30)).await;
        assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
        assert_eq!(
            s.node.as_deref(),
            Some(peer(&cluster, 3).as_str()),
            "round {round}: ran away from its data"
        );
    }
    cluster.stop().await;
}
