//! Attacks on the executor, driven from outside against real nodes: tasks
//! that plant symlinks in their outputs to read host files, a rogue member
//! that forges assignments, and one that floods the reservation queue.

use std::time::Duration;

use libp2p::PeerId;
use weft_node::store::records::BlobKind;
use weft_protocol::sched::{
    Assignment, ExecutorKind, JobId, JobState, JobStatus, Needs, Program, Submission,
};
use weft_protocol::{ErrorCode, Hash, NodeAdvert, Request, Response, TagName};
use weft_tests::rogue::Rogue;
use weft_tests::{Cluster, ClusterOptions, everywhere, job};

/// A WASI module that exits at once.
const TRIVIAL_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// A WASI module that plants `x -> ../../..(many)` in `/outputs` (the
/// second preopen, fd 4) and exits with the errno of `path_symlink`.
fn planting_wat() -> String {
    let target = "../".repeat(40) + "..";
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{target}")
  (data (i32.const 16) "x")
  (func (export "_start")
    (call $exit
      (call $symlink (i32.const 1024) (i32.const {len}) (i32.const 4) (i32.const 16) (i32.const 1)))))"#,
        len = target.len()
    )
}

async fn run_job(cluster: &Cluster, yaml: &str, within: Duration) -> JobStatus {
    let node = cluster.node(0).sched();
    let s = node
        .submit(Submission {
            spec: job(yaml),
            local: false,
            run: None,
        })
        .await
        .expect("submit");
    let s = node.wait(s.id.clone(), within).await.expect("status");
    assert!(s.state.is_terminal(), "not done within {within:?}: {s:#?}");
    s
}

/// No blob in any node's store holds `bytes`.
fn stored_nowhere(cluster: &Cluster, bytes: &[u8], what: &str) {
    let h = Hash::of(bytes);
    for (i, n) in cluster.running() {
        assert!(
            !n.store().has(&h).expect("has"),
            "node {i} stored the host's {what}"
        );
    }
}

fn assert_symlink_refused(s: &JobStatus) {
    assert_eq!(s.state, JobState::Failed, "{s:#?}");
    let result = s.result.as_ref().expect("a result");
    let (class, message) = result.error.as_ref().expect("an error");
    assert_eq!(class, "bad output", "{s:#?}");
    assert!(
        message.contains("outputs hold files and folders only; /outputs/x is a symlink"),
        "{message}"
    );
    assert!(result.outputs.is_empty(), "{s:#?}");
    assert_eq!(s.attempt, 1, "a task failure is not retried: {s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_task_cannot_read_host_files_through_a_symlink_in_its_outputs() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(planting_wat()).expect("wat");
    everywhere(&cluster, &wasm, "test/plant:v1");
    let yaml = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: plant}\nspec:\n  task:\n    wasm: {module: test/plant:v1}\n  outputs: [{path: /outputs/x/etc/passwd, tag: stolen/passwd:v1}]\n  timeout: 30s\n  cache: false\n";
    let s = run_job(&cluster, yaml, Duration::from_secs(30)).await;
    assert_symlink_refused(&s);
    stored_nowhere(
        &cluster,
        &std::fs::read("/etc/passwd").expect("host passwd"),
        "/etc/passwd",
    );
    let tag = TagName::new("stolen/passwd:v1").expect("tag");
    for (i, n) in cluster.running() {
        assert_eq!(
            n.store().tag(&tag).expect("tag"),
            None,
            "node {i} tagged it"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_cannot_read_host_files_through_a_symlink_in_its_outputs() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: containers need root (runc)");
        return;
    }
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    weft_tests::import_test_image_everywhere(&cluster, "images/busybox:test").expect("import");
    let yaml = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: plant}\nspec:\n  task:\n    container: {image: images/busybox:test, command: [busybox, ln, -s, /, /outputs/x]}\n  outputs: [{path: /outputs/x/etc/shadow}]\n  timeout: 1m\n  cache: false\n";
    let s = run_job(&cluster, yaml, Duration::from_secs(60)).await;
    assert_symlink_refused(&s);
    stored_nowhere(
        &cluster,
        &std::fs::read("/etc/shadow").expect("host shadow"),
        "/etc/shadow",
    );
    cluster.stop().await;
}

fn rogue_needs() -> Needs {
    Needs {
        executor: ExecutorKind::Wasm,
        cpu_millis: 250,
        memory_bytes: 64 << 20,
        gpu: None,
    }
}

fn new_job() -> JobId {
    JobId::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64,
        rand::random(),
    )
}

/// The rogue reserves a place on `target` as if it coordinated `job`,
/// answers the claim with `forged`, and returns the attempt's final update.
async fn forge(
    rogue: &mut Rogue,
    target: PeerId,
    job: &JobId,
    forged: Assignment,
) -> (JobState, String) {
    let answer = rogue
        .request(
            target,
            Request::Reserve {
                job: job.clone(),
                attempt: 1,
                needs: Box::new(rogue_needs()),
            },
        )
        .await
        .expect("reserve");
    assert!(matches!(answer, Response::Reserved { .. }), "{answer:?}");
    let mut forged = Some(forged);
    loop {
        let (peer, request, reply) = rogue
            .next_request(Duration::from_secs(20))
            .await
            .expect("a request from the executor");
        match request {
            Request::Claim { job: j, attempt } if peer == target => {
                assert_eq!((&j, attempt), (job, 1));
                let a = forged.take().expect("one claim per reservation");
                let _ = reply.send(Response::Assignment(Box::new(a)));
            }
            Request::TaskUpdate {
                job: j,
                state,
                reason,
                ..
            } if peer == target && &j == job => {
                let _ = reply.send(Response::Ack);
                if state.is_terminal() {
                    return (state, reason.unwrap_or_default());
                }
            }
            _ => {
                let _ = reply.send(Response::error(ErrorCode::Unsupported, "rogue"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_assignments_from_a_rogue_member_are_refused_and_write_nothing() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(TRIVIAL_WAT).expect("wat");
    let module = everywhere(&cluster, &wasm, "test/trivial:v1");
    let target: PeerId = cluster.node(1).peer_id().parse().expect("peer id");
    // a blob the executor holds, which a forged input would write
    let (payload, _) = cluster
        .node(1)
        .store()
        .add_bytes(b"ssh-ed25519 AAAA attacker", BlobKind::Raw)
        .expect("add");
    let watched_dir = tempfile::tempdir().expect("tempdir");
    let watched = watched_dir.path().join("authorized_keys");
    std::fs::write(&watched, b"original").expect("write");
    let mut rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue");
    cluster
        .wait_until(Duration::from_secs(20), "node 1 sees the rogue", |c| {
            let me = rogue.peer_id().to_string();
            async move { c.peers_of(1).await.contains(&me) }
        })
        .await
        .expect("rogue joined");
    let honest = |job: &JobId| Assignment {
        job: job.clone(),
        attempt: 1,
        name: "forged".into(),
        program: Program::Wasm {
            module,
            args: Vec::new(),
            env: Vec::new(),
        },
        inputs: Vec::new(),
        outputs: Vec::new(),
        needs: rogue_needs(),
        timeout_ms: 10_000,
        cache_key: Hash::of(b"forged"),
        metrics: None,
    };
    let up = "../".repeat(40);
    let watched_rel = watched.to_str().expect("utf-8").trim_start_matches('/');
    type Forgery = Box<dyn Fn(&mut Assignment)>;
    let cases: Vec<(&str, Forgery, &str)> = vec![
        (
            "input into root's ssh keys",
            Box::new(move |a| {
                a.inputs = vec![(payload, "/inputs/../../root/.ssh/authorized_keys".into())]
            }),
            "'..' is not allowed",
        ),
        (
            "input onto a watched host file",
            Box::new({
                let p = format!("/inputs/{up}{watched_rel}");
                move |a| a.inputs = vec![(payload, p.clone())]
            }),
            "'..' is not allowed",
        ),
        (
            "input at an absolute host path",
            Box::new({
                let p = watched.to_str().expect("utf-8").to_string();
                move |a| a.inputs = vec![(payload, p.clone())]
            }),
            "must be /inputs",
        ),
        (
            "output with ..",
            Box::new(|a| a.outputs = vec![("/outputs/../../../etc/shadow".into(), None)]),
            "'..' is not allowed",
        ),
        (
            "needs above the reservation",
            Box::new(|a| a.needs.memory_bytes = 64 << 30),
            "bytes of memory",
        ),
        (
            "another job",
            Box::new(|a| a.job = new_job()),
            "the claim was for job",
        ),
        (
            "another attempt",
            Box::new(|a| a.attempt = 7),
            "the claim was for job",
        ),
    ];
    for (what, make, expect) in cases {
        let job = new_job();
        let mut a = honest(&job);
        make(&mut a);
        let (state, reason) = forge(&mut rogue, target, &job, a).await;
        assert_eq!(state, JobState::Failed, "{what}: {reason}");
        assert!(
            reason.contains("assignment refused") && reason.contains(expect),
            "{what}: {reason}"
        );
    }
    assert_eq!(
        std::fs::read(&watched).expect("watched"),
        b"original",
        "a forged input wrote outside the task folder"
    );
    // the executor is still healthy: an honest job runs on it
    let s = run_job(
        &cluster,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: after}\nspec:\n  task:\n    wasm: {module: test/trivial:v1}\n  constraints: {node: \"1\"}\n  timeout: 30s\n  cache: false\n",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert_eq!(s.node.as_deref(), Some(cluster.node(1).peer_id()));
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_flood_from_a_rogue_member_is_bounded_and_honest_jobs_still_run() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(TRIVIAL_WAT).expect("wat");
    everywhere(&cluster, &wasm, "test/trivial:v1");
    let target: PeerId = cluster.node(1).peer_id().parse().expect("peer id");
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue");
    cluster
        .wait_until(Duration::from_secs(20), "node 1 sees the rogue", |c| {
            let me = rogue.peer_id().to_string();
            async move { c.peers_of(1).await.contains(&me) }
        })
        .await
        .expect("rogue joined");
    let Rogue {
        net, mut events, ..
    } = rogue;
    // the rogue sits on every claim while it floods, so its reservations
    // stay queued
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut release = Some(release_rx);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    if let weft_node::net::NetEvent::InboundRequest { reply, .. } = ev {
                        if release.is_some() {
                            held.push(reply);
                        } else {
                            let _ = reply.send(Response::error(ErrorCode::NotFound, "gone"));
                        }
                    }
                }
                _ = async { release.as_mut().expect("not yet released").await }, if release.is_some() => {
                    release = None;
                    for r in held.drain(..) {
                        let _ = r.send(Response::error(ErrorCode::NotFound, "gone"));
                    }
                }
            }
        }
    });
    // reservations that each take the node's whole CPU
    let cores = cluster.node(1).advert().cpu_cores.max(1);
    let needs = Needs {
        cpu_millis: cores * 1000,
        ..rogue_needs()
    };
    let (mut reserved, mut busy) = (0, 0);
    for _ in 0..600 {
        let answer = net
            .request(
                target,
                Request::Reserve {
                    job: new_job(),
                    attempt: 1,
                    needs: Box::new(needs.clone()),
                },
            )
            .await
            .expect("reserve");
        match answer {
            Response::Reserved { .. } => reserved += 1,
            Response::Error {
                code: ErrorCode::Busy,
                message,
            } => {
                assert!(message.starts_with("busy"), "{message}");
                busy += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        (reserved, busy),
        (512, 88),
        "one coordinator holds at most 512 places"
    );
    let _ = release_tx.send(());
    // an honest job still gets its turn on the flooded node
    let s = run_job(
        &cluster,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: honest}\nspec:\n  task:\n    wasm: {module: test/trivial:v1}\n  constraints: {node: \"1\"}\n  timeout: 30s\n  cache: false\n",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert!(
        cluster.node(1).advert().queued_tasks <= 2048,
        "queue over its cap"
    );
    holder.abort();
    let _ = net.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_is_not_the_coordinator_cannot_cancel_a_running_task() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &weft_tests::example_wasm("sleepy").expect("sleepy"),
        "test/sleepy:v1",
    );
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue");
    let target: PeerId = cluster.node(1).peer_id().parse().expect("peer id");
    let node = cluster.node(0).sched();
    let s = node
        .submit(Submission {
            spec: job(
                "apiVersion: weft/v1\nkind: Job\nmetadata: {name: victim}\nspec:\n  task:\n    wasm: {module: test/sleepy:v1, args: [\"2\"]}\n  constraints: {node: \"1\"}\n  timeout: 1m\n  cache: false\n",
            ),
            local: false,
            run: None,
        })
        .await
        .expect("submit");
    let id = s.id.clone();
    cluster
        .wait_until(Duration::from_secs(20), "the job runs", |c| {
            let id = id.clone();
            async move {
                c.node(0)
                    .sched()
                    .status(id)
                    .await
                    .is_ok_and(|s| s.state == JobState::Running)
            }
        })
        .await
        .expect("running");
    for request in [
        Request::CancelTask {
            job: id.clone(),
            attempt: 1,
        },
        Request::Release {
            job: id.clone(),
            attempt: 1,
        },
    ] {
        let answer = rogue.request(target, request).await.expect("request");
        assert!(matches!(answer, Response::Ack), "{answer:?}");
    }
    let s = node
        .wait(id, Duration::from_secs(30))
        .await
        .expect("status");
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert_eq!(s.attempt, 1, "{s:#?}");
    rogue.stop().await;
    cluster.stop().await;
}

/// A WASI module that writes `model bytes` to `/outputs/model` (fd 4) and
/// exits with the first failing errno, or 0.
const WRITER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "model")
  (data (i32.const 64) "model bytes")
  (func (export "_start") (local $err i32)
    (local.set $err
      (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1)
        (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 128)))
    (if (local.get $err) (then (call $exit (local.get $err))))
    ;; one iovec at 256: {ptr 64, len 11}
    (i32.store (i32.const 256) (i32.const 64))
    (i32.store (i32.const 260) (i32.const 11))
    (call $exit
      (call $write (i32.load (i32.const 128)) (i32.const 256) (i32.const 1) (i32.const 300)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_stored_and_tagged_only_when_every_output_is_good() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = wat::parse_str(WRITER_WAT).expect("wat");
    everywhere(&cluster, &wasm, "test/writer:v1");
    let tag = TagName::new("out/model:v1").expect("tag");
    // a second, missing output fails the job, and the first one's tag stays put
    let s = run_job(
        &cluster,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: half}\nspec:\n  task:\n    wasm: {module: test/writer:v1}\n  outputs: [{path: /outputs/model, tag: out/model:v1}, {path: /outputs/missing}]\n  timeout: 30s\n  cache: false\n",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(s.state, JobState::Failed, "{s:#?}");
    let error = s.result.as_ref().and_then(|r| r.error.clone());
    assert_eq!(
        error.as_ref().map(|e| e.0.as_str()),
        Some("missing output"),
        "{s:#?}"
    );
    for (i, n) in cluster.running() {
        assert_eq!(
            n.store().tag(&tag).expect("tag"),
            None,
            "node {i} moved the tag"
        );
    }
    let s = run_job(
        &cluster,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: whole}\nspec:\n  task:\n    wasm: {module: test/writer:v1}\n  outputs: [{path: /outputs/model, tag: out/model:v1}]\n  timeout: 30s\n  cache: false\n",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    let result = s.result.as_ref().expect("result");
    let want = Hash::of(b"model bytes");
    assert_eq!(result.outputs, vec![("/outputs/model".to_string(), want)]);
    let executor = s.node.clone().expect("executor");
    let (_, node) = cluster
        .running()
        .find(|(_, n)| n.peer_id() == executor)
        .expect("executor is a member");
    assert_eq!(node.store().tag(&tag).expect("tag"), Some(want));
    assert!(
        node.store()
            .list_pins()
            .expect("pins")
            .iter()
            .any(|p| p.id == want),
        "output not pinned"
    );
    cluster.stop().await;
}
