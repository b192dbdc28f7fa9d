//! The scheduler against a member that lies and against ordinary faults:
//! results from a node never assigned, forged cache records, cache hits
//! whose outputs are gone, lost claim replies, a coordinator that stops
//! while a result is on its way, deadlines across a restart, and a flood of
//! job statuses.

use std::time::{Duration, Instant};

use weft_node::net::NetEvent;
use weft_node::sched::{TABLE_BYTES_PER_COORDINATOR, TABLE_ENTRY_OVERHEAD};
use weft_protocol::sched::{
    JobGossip, JobId, JobResult, JobState, JobStatus, ResultSignature, Transition, signed_result,
};
use weft_protocol::{ErrorCode, Executors, Hash, NodeAdvert, Request, Response, Topic};
use weft_tests::rogue::Rogue;
use weft_tests::{
    Cluster, ClusterOptions, everywhere, example_wasm, now_ms, peer, sleepy_cluster, sleepy_job,
    submit, wait_cache_record, wait_done, wait_state,
};

/// A job that writes `/outputs/hello.txt` (holding `word`) and keeps it.
fn hello_job(name: &str, word: &str, extra: &str) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  task:\n    wasm: {{module: test/hello:v1, args: [\"{word}\"]}}\n  outputs: [{{path: /outputs/hello.txt}}]\n  timeout: 1m\n{extra}"
    )
}

/// A status the rogue claims as coordinator, for gossip.
fn rogue_status(rogue: &Rogue, id: JobId, state: JobState) -> JobStatus {
    JobStatus {
        id,
        name: "forged".into(),
        coordinator: rogue.peer_id().to_string(),
        state,
        attempt: 1,
        node: None,
        reason: None,
        result: None,
        cache_key: Hash::EMPTY,
        history: vec![Transition {
            state: JobState::Pending,
            at_ms: 1,
            attempt: 1,
            node: None,
            reason: None,
        }],
        created_ms: 1,
        updated_ms: now_ms(),
        revision: 1,
    }
}

/// Publishes `statuses` as the rogue, then a fresh pending job of its own
/// in a later message, and waits until every node lists that one: the
/// statuses before it have been heard too.
async fn gossip_and_settle(cluster: &Cluster, rogue: &Rogue, statuses: Vec<JobStatus>) {
    let bytes = JobGossip { statuses }.encode().expect("encode");
    rogue
        .net
        .publish(Topic::Jobs, bytes)
        .await
        .expect("publish");
    let sentinel = JobId::new(now_ms(), rand::random());
    let s = rogue_status(rogue, sentinel.clone(), JobState::Pending);
    let bytes = JobGossip { statuses: vec![s] }.encode().expect("encode");
    rogue
        .net
        .publish(Topic::Jobs, bytes)
        .await
        .expect("publish");
    cluster
        .wait_until(Duration::from_secs(20), "every node heard the rogue", |c| {
            let sentinel = sentinel.clone();
            async move {
                for (_, n) in c.running() {
                    let all = n.sched().list().await.unwrap_or_default();
                    if !all.iter().any(|s| s.id == sentinel) {
                        return false;
                    }
                }
                true
            }
        })
        .await
        .expect("gossip heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_report_from_a_node_never_assigned_is_refused() {
    let cluster = sleepy_cluster(2).await;
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let id = submit(
        &cluster,
        0,
        &sleepy_job("assigned", 2, "  constraints: {node: \"1\"}\n"),
    )
    .await
    .id;
    let before = wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    let node0: libp2p::PeerId = peer(&cluster, 0).parse().expect("peer id");
    let forged = JobResult {
        exit_code: Some(0),
        outputs: vec![("/outputs/x".into(), Hash::of(b"forged"))],
        ..JobResult::default()
    };
    // the current attempt, an attempt never made, and a non-final state
    for (attempt, state) in [
        (1, JobState::Succeeded),
        (2, JobState::Succeeded),
        (1, JobState::Failed),
        (1, JobState::Running),
    ] {
        let answer = rogue
            .request(
                node0,
                Request::TaskUpdate {
                    job: id.clone(),
                    attempt,
                    state,
                    reason: None,
                    result: Some(Box::new(forged.clone())),
                },
            )
            .await
            .expect("answered");
        match answer {
            Response::Error {
                code: ErrorCode::BadRequest,
                message,
            } => assert!(message.contains("not the executor"), "{message}"),
            other => panic!("a report from a node never assigned was taken: {other:?}"),
        }
    }
    let now = cluster
        .node(0)
        .sched()
        .status(id.clone())
        .await
        .expect("status");
    assert_eq!(now.state, JobState::Running, "{now:#?}");
    assert_eq!(now.result, None);
    assert_eq!(now.attempt, before.attempt);
    assert_eq!(now.node, before.node);
    // nor can it take a waiting job it was never asked to reserve
    let waiting = submit(
        &cluster,
        0,
        &sleepy_job("waiting", 1, "  constraints: {node: \"nowhere\"}\n"),
    )
    .await
    .id;
    let answer = rogue
        .request(
            node0,
            Request::Claim {
                job: waiting.clone(),
                attempt: 1,
            },
        )
        .await
        .expect("answered");
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "a claim without a reservation was granted: {answer:?}"
    );
    let w = cluster
        .node(0)
        .sched()
        .status(waiting)
        .await
        .expect("status");
    assert_eq!(
        (w.state, w.node.as_deref()),
        (JobState::Pending, None),
        "{w:#?}"
    );
    // it completes from its real executor
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(done.attempt, 1);
    assert_eq!(done.node.as_deref(), Some(peer(&cluster, 1).as_str()));
    let result = done.result.expect("result");
    assert!(result.outputs.is_empty(), "{result:#?}");
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cache_records_are_refused_and_the_job_runs_for_real() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("hello").expect("hello"),
        "test/hello:v1",
    );
    let mut rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let me = rogue.peer_id().to_string();
    let node1 = peer(&cluster, 1);
    // the cache key of the job the test submits at the end, learned from a
    // copy that cannot be placed (constraints are not part of the key)
    let target = hello_job("target", "real", "");
    let probe = submit(
        &cluster,
        0,
        &hello_job("target", "real", "  constraints: {node: \"nowhere\"}\n"),
    )
    .await;
    let key = probe.cache_key;
    cluster
        .node(0)
        .sched()
        .cancel(probe.id.clone())
        .await
        .expect("cancel");
    // a genuine, signed result of another job, as node 0 gossips it
    let genuine = submit(&cluster, 0, &hello_job("genuine", "genuine", ""))
        .await
        .id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let genuine = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, rogue.events.recv())
            .await
            .expect("the genuine result is gossiped")
            .expect("events");
        if let NetEvent::Gossip {
            topic: Topic::Jobs,
            data,
            ..
        } = event
        {
            let g = JobGossip::decode(&data).expect("gossip");
            if let Some(s) = g
                .statuses
                .into_iter()
                .find(|s| s.id == genuine && s.state == JobState::Succeeded)
            {
                break s;
            }
        }
    };
    assert!(
        genuine
            .result
            .as_ref()
            .is_some_and(|r| r.signature.is_some()),
        "a success is gossiped with its executor's signature: {genuine:#?}"
    );
    let forged_result = JobResult {
        exit_code: Some(0),
        outputs: vec![("/outputs/hello.txt".into(), Hash::of(b"forged"))],
        ..JobResult::default()
    };
    let forged = |n: u32, executor: &str, signature: Option<ResultSignature>| {
        let mut s = rogue_status(&rogue, JobId::new(now_ms(), n), JobState::Succeeded);
        s.cache_key = key;
        s.node = Some(executor.to_string());
        s.result = Some(JobResult {
            signature,
            ..forged_result.clone()
        });
        s
    };
    let sign_as_rogue = |s: &JobStatus, executor: &str| {
        let payload = signed_result(
            &key,
            &s.id,
            s.attempt,
            &s.coordinator,
            executor,
            s.result.as_ref().expect("result"),
        );
        let sig = rogue.keypair().sign(&payload).expect("sign");
        Some(ResultSignature(sig.try_into().expect("64 bytes")))
    };
    // 1. unsigned, naming node 1 as its executor
    let unsigned = forged(1, &node1, None);
    // 2. signed by the rogue in node 1's name
    let mut misattributed = forged(2, &node1, None);
    let sig = sign_as_rogue(&misattributed, &node1);
    misattributed.result.as_mut().expect("result").signature = sig;
    // 3. the genuine record moved to the target key, re-gossiped by a node
    //    that is not its coordinator
    let mut moved = genuine.clone();
    moved.cache_key = key;
    moved.revision += 10;
    // 4. the same, claiming to be its coordinator
    let mut usurped = genuine.clone();
    usurped.cache_key = key;
    usurped.coordinator = me.clone();
    usurped.revision += 10;
    gossip_and_settle(
        &cluster,
        &rogue,
        vec![unsigned, misattributed, moved, usurped],
    )
    .await;
    for (i, n) in cluster.running() {
        assert_eq!(
            n.sched().cache_record(key).await.expect("cache"),
            None,
            "node {i} took a forged cache record"
        );
        // nor did the re-gossiped copies take the genuine job's place
        let all = n.sched().list().await.expect("list");
        let g = all
            .iter()
            .find(|s| s.id == genuine.id)
            .expect("the genuine job is known");
        assert_eq!(g.cache_key, genuine.cache_key, "node {i}: {g:#?}");
        assert_eq!(g.coordinator, genuine.coordinator, "node {i}: {g:#?}");
    }
    // 5. even a record the rogue signs as its own executor names outputs
    //    that exist nowhere: it is not used
    let mut own = forged(5, &me, None);
    let sig = sign_as_rogue(&own, &me);
    own.result.as_mut().expect("result").signature = sig;
    gossip_and_settle(&cluster, &rogue, vec![own]).await;
    // the job runs for real
    let real = submit(&cluster, 0, &target).await.id;
    let done = wait_done(&cluster, 0, &real, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let result = done.result.clone().expect("result");
    assert!(!result.cached, "answered from a forged record: {done:#?}");
    assert!(done.history.iter().any(|t| t.state == JobState::Running));
    assert_ne!(result.outputs[0].1, Hash::of(b"forged"));
    // its signed result replaces the rogue's record everywhere, and is what
    // the next identical job gets
    cluster
        .wait_until(Duration::from_secs(10), "the real record everywhere", |c| {
            let real = real.clone();
            async move {
                for (_, n) in c.running() {
                    if n.sched().cache_record(key).await.ok().flatten() != Some(real.clone()) {
                        return false;
                    }
                }
                true
            }
        })
        .await
        .expect("real record");
    let hit = submit(&cluster, 1, &target).await.id;
    let hit = wait_done(&cluster, 1, &hit, Duration::from_secs(10)).await;
    let r = hit.result.as_ref().expect("result");
    assert!(r.cached, "{hit:#?}");
    assert_eq!(r.outputs, result.outputs);
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_whose_outputs_are_gone_everywhere_runs_again() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("hello").expect("hello"),
        "test/hello:v1",
    );
    let yaml = hello_job("stale", "stale-cache", "");
    let first = submit(&cluster, 0, &yaml).await.id;
    let first = wait_done(&cluster, 0, &first, Duration::from_secs(30)).await;
    assert_eq!(first.state, JobState::Succeeded, "{first:#?}");
    let result = first.result.clone().expect("result");
    let output = result.outputs[0].1;
    // heard on node 1, and used there while the output exists
    let key = first.cache_key;
    wait_cache_record(&cluster, 1, key).await;
    let hit = submit(&cluster, 1, &yaml).await.id;
    let hit = wait_done(&cluster, 1, &hit, Duration::from_secs(10)).await;
    assert_eq!(hit.state, JobState::Succeeded, "{hit:#?}");
    assert!(hit.result.as_ref().expect("result").cached, "{hit:#?}");
    // the outputs (and logs) unpinned and collected on every node
    for (_, n) in cluster.running() {
        for h in std::iter::once(output).chain(result.logs) {
            n.store().unpin(&h).expect("unpin");
        }
        n.store().gc(&[]).expect("gc");
        assert!(!n.store().has(&output).expect("has"));
    }
    let t = Instant::now();
    let again = submit(&cluster, 1, &yaml).await.id;
    let again = wait_done(&cluster, 1, &again, Duration::from_secs(30)).await;
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    let r = again.result.as_ref().expect("result");
    assert!(!r.cached, "a stale cache hit was used: {again:#?}");
    assert!(again.history.iter().any(|t| t.state == JobState::Running));
    let output = r.outputs[0].1;
    assert!(
        cluster
            .running()
            .any(|(_, n)| n.store().has(&output).unwrap_or(false))
    );
    eprintln!("stale hit noticed and the job run in {:?}", t.elapsed());
    // the stale record was replaced by the new result
    assert_eq!(
        cluster
            .node(1)
            .sched()
            .cache_record(key)
            .await
            .expect("cache"),
        Some(again.id.clone())
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_reply_is_noticed_within_seconds() {
    let cluster = sleepy_cluster(2).await;
    let faults = cluster.node(0).sched().faults();
    faults
        .drop_claim_replies
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    let id = submit(
        &cluster,
        0,
        &sleepy_job("lost-claim", 0, "  constraints: {node: \"1\"}\n"),
    )
    .await
    .id;
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(20)).await;
    let took = t.elapsed();
    assert_eq!(
        faults
            .drop_claim_replies
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the fault fired"
    );
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        done.attempt, 2,
        "the lost attempt was placed again: {done:#?}"
    );
    assert!(
        done.history.iter().any(|t| t
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no longer list"))),
        "{done:#?}"
    );
    assert!(
        took < Duration::from_secs(12),
        "a lost claim took {took:?} to notice (the job timeout is 2m)"
    );
    eprintln!("lost claim noticed, job done in {took:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_sent_while_its_coordinator_is_down_is_recovered_after_restart() {
    let mut cluster = sleepy_cluster(2).await;
    let id = submit(
        &cluster,
        0,
        &sleepy_job("report-kept", 1, "  constraints: {node: \"1\"}\n"),
    )
    .await
    .id;
    wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    cluster.stop_node(0).await;
    // the task ends and its report finds no coordinator: the executor
    // keeps it (and lists the attempt) until it is taken
    let key = (id.clone(), 1);
    cluster
        .wait_until(
            Duration::from_secs(20),
            "the executor holds an unacknowledged result",
            |c| {
                let key = key.clone();
                async move {
                    let a = c.node(1).advert();
                    a.running_tasks == 0 && a.running.is_some_and(|r| r.contains(&key))
                }
            },
        )
        .await
        .expect("result held");
    cluster.restart_node(0).await.expect("restart");
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(done.attempt, 1, "the first attempt's result: {done:#?}");
    assert_eq!(done.node.as_deref(), Some(peer(&cluster, 1).as_str()));
    assert!(done.result.is_some());
    // once taken, the executor lets it go
    cluster
        .wait_until(Duration::from_secs(10), "the executor lets go", |c| {
            let key = key.clone();
            async move { !c.node(1).advert().running.is_some_and(|r| r.contains(&key)) }
        })
        .await
        .expect("released");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_holds_across_a_coordinator_restart() {
    let mut cluster = sleepy_cluster(2).await;
    // a member that claims the task and then says nothing (it lists no
    // attempts, as an older version would, so only the deadline ends it)
    let mut rogue = rogue_executor(&cluster).await;
    let node0: libp2p::PeerId = peer(&cluster, 0).parse().expect("peer id");
    let id = submit(
        &cluster,
        0,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: silent}\nspec:\n  task:\n    wasm: {module: test/sleepy:v1, args: [\"1\"]}\n  timeout: 6s\n  retries: 0\n  constraints: {node: \"rogue\"}\n",
    )
    .await
    .id;
    reserve_and_claim(&mut rogue, node0, &id, 1).await;
    let t = Instant::now();
    cluster.stop_node(0).await;
    cluster.restart_node(0).await.expect("restart");
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.contains("deadline")),
        "ended by its deadline: {done:#?}"
    );
    // 6 s of timeout and 2 s of grace, from the claim
    assert!(
        t.elapsed() >= Duration::from_secs(7),
        "ended before its deadline: {:?}",
        t.elapsed()
    );
    rogue.stop().await;
    cluster.stop().await;
}

/// A member that looks like a capable WASM executor labelled
/// `node = rogue`, so jobs constrained to it are reserved on it.
async fn rogue_executor(cluster: &Cluster) -> Rogue {
    let node1 = cluster.node(1).advert();
    Rogue::join(
        cluster,
        NodeAdvert {
            arch: node1.arch.clone(),
            cpu_cores: 4,
            memory_total_bytes: 8 << 30,
            memory_free_bytes: 8 << 30,
            disk_free_bytes: 8 << 30,
            executors: Executors {
                wasm: true,
                container_runtime: None,
            },
            labels: [("node".to_string(), "rogue".to_string())].into(),
            ..NodeAdvert::default()
        },
    )
    .await
    .expect("rogue")
}

/// The rogue takes the next reservation it is asked for (refusing other
/// requests) and claims `attempt` of `id` from the coordinator `node0`.
async fn reserve_and_claim(rogue: &mut Rogue, node0: libp2p::PeerId, id: &JobId, attempt: u32) {
    loop {
        let (_, request, reply) = rogue
            .next_request(Duration::from_secs(20))
            .await
            .expect("a reservation");
        if let Request::Reserve { attempt: a, .. } = &request
            && *a == attempt
        {
            let _ = reply.send(Response::Reserved { queued: 0 });
            break;
        }
        let _ = reply.send(Response::error(ErrorCode::Unsupported, "no"));
    }
    let claimed = rogue
        .request(
            node0,
            Request::Claim {
                job: id.clone(),
                attempt,
            },
        )
        .await
        .expect("claim");
    assert!(matches!(claimed, Response::Assignment(_)), "{claimed:?}");
}

/// Only a job's coordinator cancels it. An executor that reports its
/// attempt cancelled (as one whose node is stopping does) has lost the
/// attempt: the job is placed again, not ended as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_cannot_cancel_a_job_by_itself() {
    let cluster = sleepy_cluster(2).await;
    let mut rogue = rogue_executor(&cluster).await;
    let node0: libp2p::PeerId = peer(&cluster, 0).parse().expect("peer id");
    let id = submit(
        &cluster,
        0,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: stopped}\nspec:\n  task:\n    wasm: {module: test/sleepy:v1, args: [\"1\"]}\n  timeout: 1m\n  retries: 1\n  constraints: {node: \"rogue\"}\n",
    )
    .await
    .id;
    reserve_and_claim(&mut rogue, node0, &id, 1).await;
    let answer = rogue
        .request(
            node0,
            Request::TaskUpdate {
                job: id.clone(),
                attempt: 1,
                state: JobState::Cancelled,
                reason: Some("cancelled".into()),
                result: Some(Box::new(JobResult {
                    error: Some(("cancelled".into(), "cancelled".into())),
                    ..JobResult::default()
                })),
            },
        )
        .await
        .expect("answered");
    assert!(matches!(answer, Response::Ack), "{answer:?}");
    // the attempt is lost and the job goes on: attempt 2 is reserved
    reserve_and_claim(&mut rogue, node0, &id, 2).await;
    let s = cluster
        .node(0)
        .sched()
        .status(id.clone())
        .await
        .expect("status");
    assert!(!s.state.is_terminal(), "{s:#?}");
    assert_eq!(s.attempt, 2, "{s:#?}");
    // with no retry left, the same report fails the job; it is not cancelled
    let answer = rogue
        .request(
            node0,
            Request::TaskUpdate {
                job: id.clone(),
                attempt: 2,
                state: JobState::Cancelled,
                reason: None,
                result: None,
            },
        )
        .await
        .expect("answered");
    assert!(matches!(answer, Response::Ack), "{answer:?}");
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(10)).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.contains("stopped the task")),
        "{done:#?}"
    );
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_job_statuses_stays_within_one_coordinator_s_share() {
    let cluster = sleepy_cluster(1).await;
    // this node's own unfinished job (it can run nowhere)
    let own = submit(
        &cluster,
        0,
        &sleepy_job("own", 1, "  constraints: {node: \"nowhere\"}\n"),
    )
    .await
    .id;
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let me = rogue.peer_id().to_string();
    // ~2.5 KiB statuses, half with ids from the far future, well past the
    // rogue's share in total
    let per = 2_500;
    let total = TABLE_BYTES_PER_COORDINATOR * 3 / 2 / per;
    let now = now_ms();
    let ids: Vec<JobId> = (0..total)
        .map(|n| {
            if n % 2 == 0 {
                JobId::new(0xffff_ffff_0000 + n as u64, 0)
            } else {
                JobId::new(now, n as u32)
            }
        })
        .collect();
    for chunk in ids.chunks(64) {
        let statuses = chunk
            .iter()
            .map(|id| {
                let mut s = rogue_status(&rogue, id.clone(), JobState::Running);
                s.reason = Some("x".repeat(per - 400));
                s
            })
            .collect();
        let bytes = JobGossip { statuses }.encode().expect("encode");
        rogue
            .net
            .publish(Topic::Jobs, bytes)
            .await
            .expect("publish");
    }
    gossip_and_settle(&cluster, &rogue, Vec::new()).await;
    let all = cluster.node(0).sched().list().await.expect("list");
    let theirs: Vec<&JobStatus> = all.iter().filter(|s| s.coordinator == me).collect();
    let bytes: usize = theirs
        .iter()
        .map(|s| weft_protocol::encode(s, usize::MAX).expect("encode").len() + TABLE_ENTRY_OVERHEAD)
        .sum();
    eprintln!(
        "sent {total} statuses; kept {} of them in {bytes} bytes",
        theirs.len()
    );
    assert!(
        bytes <= TABLE_BYTES_PER_COORDINATOR,
        "{bytes} bytes kept for one coordinator"
    );
    assert!(
        theirs.len() > total / 3,
        "the newest are kept: {} of {total}",
        theirs.len()
    );
    // the oldest received went first, future ids included
    assert!(!theirs.iter().any(|s| s.id == ids[0] || s.id == ids[1]));
    assert!(theirs.iter().any(|s| s.id == ids[total - 1]));
    // this node's own job is untouched
    let s = cluster
        .node(0)
        .sched()
        .status(own.clone())
        .await
        .expect("own job");
    assert_eq!(s.state, JobState::Pending);
    assert!(all.iter().any(|s| s.id == own));
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_result_survives_an_executor_restart() {
    let mut cluster = sleepy_cluster(2).await;
    let id = submit(
        &cluster,
        0,
        &sleepy_job("report-on-disk", 1, "  constraints: {node: \"1\"}\n"),
    )
    .await
    .id;
    wait_state(&cluster, 0, &id, JobState::Running, Duration::from_secs(20)).await;
    cluster.stop_node(0).await;
    let key = (id.clone(), 1);
    let holds = |c: &Cluster, key: (JobId, u32)| {
        let a = c.node(1).advert();
        a.running_tasks == 0 && a.running.is_some_and(|r| r.contains(&key))
    };
    cluster
        .wait_until(
            Duration::from_secs(20),
            "the executor holds a result",
            |c| {
                let key = key.clone();
                async move { holds(c, key) }
            },
        )
        .await
        .expect("result held");
    // the executor restarts while its coordinator is still down: the result
    // is read back from disk and sent again
    cluster.stop_node(1).await;
    cluster.restart_node(1).await.expect("restart executor");
    cluster
        .wait_until(Duration::from_secs(20), "the result is held again", |c| {
            let key = key.clone();
            async move { holds(c, key) }
        })
        .await
        .expect("result read back");
    cluster.restart_node(0).await.expect("restart coordinator");
    let done = wait_done(&cluster, 0, &id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(done.attempt, 1, "the first attempt's result: {done:#?}");
    assert_eq!(done.node.as_deref(), Some(peer(&cluster, 1).as_str()));
    cluster.stop().await;
}
