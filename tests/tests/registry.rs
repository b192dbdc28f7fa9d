//! The model registry from any node (REST, client calls), and ledger
//! entries a member forges.

use std::time::{Duration, Instant};

use weft_node::api::client::{ApiClient, ClientError, segment};
use weft_node::store::records::BlobKind;
use weft_protocol::ledger::{
    Entry, EntryBody, LedgerGossip, Metric, ModelName, ModelVersion, PipelineRunRecord,
    PipelineState, RunEvent,
};
use weft_protocol::sched::{JobId, JobState};
use weft_protocol::tag::MAX_CLOCK_SKEW_MS;
use weft_protocol::{ErrorCode, Hash, Hlc, NodeAdvert, Request, Response, TagName, Topic};
use weft_tests::rogue::Rogue;
use weft_tests::{Cluster, ClusterOptions, everywhere, example_wasm, now_ms, submit, wait_done};

fn client(cluster: &Cluster, i: usize) -> ApiClient {
    ApiClient::from_home(cluster.node(i).home()).expect("client")
}

fn model(name: &str) -> ModelName {
    ModelName::new(name).expect("model name")
}

/// What `weft get REF` does on node `i`: fetch from the mesh, then download.
async fn get_bytes(cluster: &Cluster, i: usize, reference: &str) -> Vec<u8> {
    let c = client(cluster, i);
    let path = format!("/api/v1/artifacts/{}", segment(reference));
    c.post_stream(&format!("{path}/fetch"))
        .await
        .expect("fetch")
        .bytes()
        .await
        .expect("fetch report");
    c.get_stream(&path)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes")
        .to_vec()
}

fn api_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, detail, .. } => (status, detail),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_aliases_work_from_any_node_and_resolve_everywhere() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let (c0, c1, c2) = (
        client(&cluster, 0),
        client(&cluster, 1),
        client(&cluster, 2),
    );
    // version 1 from a tag on node 0, version 2 by id from node 1's store
    let store0 = cluster.node(0).store();
    let (h1, _) = store0.add_bytes(b"model one", BlobKind::Raw).expect("add");
    store0
        .set_tag(&TagName::new("artifacts/iris:v1").expect("tag"), Some(h1))
        .expect("tag");
    let (h2, _) = cluster
        .node(1)
        .store()
        .add_bytes(b"model two", BlobKind::Raw)
        .expect("add");
    let r1 = c0
        .register_model("iris", "artifacts/iris:v1")
        .await
        .expect("register v1");
    assert_eq!((r1.version, r1.reference.as_str()), (1, "models/iris:1"));
    assert_eq!(r1.artifact, h1);
    assert!(r1.unconfirmed.is_empty(), "{:?}", r1.unconfirmed);
    let r2 = c1
        .register_model("iris", &h2.to_hex())
        .await
        .expect("register v2");
    assert_eq!((r2.version, r2.artifact), (2, h2));
    // each registering node pins its version, so GC keeps it
    for (i, h) in [(0, h1), (1, h2)] {
        let pins = cluster.node(i).store().list_pins().expect("pins");
        assert!(pins.iter().any(|p| p.id == h), "node {i} pinned {h}");
    }

    // alias moves from different nodes, each after the last has arrived
    let m = c2.move_alias("iris", "champion", 1).await.expect("alias");
    assert_eq!((m.version, m.from), (Some(1), None));
    assert_eq!(m.origin, cluster.node(2).peer_id());
    let moves_on = |i: usize, n: usize| {
        let store = cluster.node(i).store().clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store
                .alias_history(&model("iris"), &"champion".parse().expect("alias"))
                .expect("history")
                .len()
                < n
            {
                assert!(Instant::now() < deadline, "node {i} never saw {n} moves");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    moves_on(0, 1).await;
    let m = c0.move_alias("iris", "champion", 2).await.expect("alias");
    assert_eq!((m.version, m.from), (Some(2), Some(1)));
    moves_on(1, 2).await;
    let m = c1
        .rollback_alias("iris", "champion")
        .await
        .expect("rollback");
    assert_eq!((m.version, m.from), (Some(1), Some(2)));
    assert_eq!(m.reason.as_deref(), Some("rollback"));

    // every node resolves the alias to version 1 and the number to version 2
    cluster
        .wait_until(
            Duration::from_secs(10),
            "every node sees the rollback",
            |c| async move {
                c.running().all(|(_, n)| {
                    n.store().resolve_str("models/iris@champion").ok() == Some(h1)
                        && n.store().resolve_str("models/iris:2").ok() == Some(h2)
                })
            },
        )
        .await
        .expect("rollback replicated");
    // node 2 holds neither; `weft get` there fetches them from the mesh
    assert_eq!(
        get_bytes(&cluster, 2, "models/iris@champion").await,
        b"model one"
    );
    assert_eq!(get_bytes(&cluster, 2, "models/iris:2").await, b"model two");

    // ls and show, on a node that wrote none of it
    let models = c2.models().await.expect("ls");
    let iris = models
        .iter()
        .find(|m| m.name.as_str() == "iris")
        .expect("iris listed");
    assert_eq!(iris.versions, 2);
    assert_eq!(
        iris.aliases
            .iter()
            .map(|(a, v)| (a.as_str(), *v))
            .collect::<Vec<_>>(),
        [("champion", Some(1))]
    );
    let shown = c2.model("iris").await.expect("show");
    assert_eq!(shown.versions.len(), 2);
    assert_eq!(shown.versions[0].version.artifact, h1);
    assert_eq!(shown.versions[0].version.origin, cluster.node(0).peer_id());
    assert_eq!(
        shown.versions[0].version.source.as_deref(),
        Some("artifacts/iris:v1")
    );
    assert_eq!(
        shown.versions[0]
            .aliases
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        ["champion"]
    );
    let champion = &shown.aliases[0];
    assert_eq!(
        champion
            .history
            .iter()
            .map(|h| (h.from, h.version))
            .collect::<Vec<_>>(),
        [(None, Some(1)), (Some(1), Some(2)), (Some(2), Some(1))]
    );

    // another model's alias as the source of a registration
    let copy = c2
        .register_model("team/iris-copy", "models/iris@champion")
        .await
        .expect("register from an alias");
    assert_eq!((copy.version, copy.artifact), (1, h1));
    assert_eq!(
        c0.model("team/iris-copy")
            .await
            .expect("show by a name with '/'")
            .name,
        model("team/iris-copy")
    );

    // refusals name what is wrong
    c2.move_alias("iris", "staging", 2).await.expect("staging");
    let (status, detail) = api_error(
        c2.rollback_alias("iris", "staging")
            .await
            .expect_err("set once"),
    );
    assert_eq!(status, 400);
    assert!(detail.contains("no earlier position"), "{detail}");
    let (status, detail) = api_error(
        c0.rollback_alias("iris", "never")
            .await
            .expect_err("never set"),
    );
    assert_eq!(status, 404, "{detail}");
    let (status, detail) = api_error(
        c0.move_alias("iris", "champion", 9)
            .await
            .expect_err("no version 9"),
    );
    assert_eq!(status, 404);
    assert!(detail.contains("1 to 2"), "{detail}");
    let (status, detail) = api_error(
        c0.register_model("iris", "artifacts/none:v1")
            .await
            .expect_err("no such tag"),
    );
    assert_eq!(status, 404, "{detail}");
    let (status, detail) = api_error(
        c0.register_model("iris", "0000000000000000000a:/outputs/model")
            .await
            .expect_err("no such job"),
    );
    assert_eq!(status, 404, "{detail}");
    assert!(detail.contains("0000000000000000000a"), "{detail}");
    assert_eq!(c0.model("iris").await.expect("show").versions.len(), 2);
    cluster.stop().await;
}

fn entry(origin: String, wall_ms: u64, body: EntryBody) -> Entry {
    Entry {
        hlc: Hlc {
            wall_ms,
            counter: 0,
        },
        origin,
        body,
    }
}

fn version(name: &str) -> EntryBody {
    EntryBody::ModelVersion(ModelVersion {
        name: model(name),
        artifact: Hash::of(name.as_bytes()),
        run: None,
        source: None,
    })
}

/// Publishes as the rogue, retrying while its gossip mesh forms.
async fn publish(rogue: &Rogue, entries: Vec<Entry>) {
    let data = LedgerGossip { entries }.encode().expect("encode");
    let start = Instant::now();
    loop {
        match rogue.net.publish(Topic::Ledger, data.clone()).await {
            Ok(()) => return,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("rogue cannot publish: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_entries_a_member_forges_are_refused() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let me = rogue.peer_id().to_string();
    let node0 = cluster.node(0).peer_id().to_string();
    let node1 = cluster.node(1).peer_id().to_string();
    let now = now_ms();
    let run = JobId::new(now, 7);
    let forged_run = EntryBody::PipelineRun(PipelineRunRecord {
        id: run.clone(),
        pipeline: "iris".into(),
        experiment: None,
        coordinator: node0.clone(),
        state: PipelineState::Succeeded,
        params: vec![],
        trigger: None,
        steps: vec![],
        reason: None,
        created_ms: now,
        updated_ms: now,
    });
    // an entry under node 0's id; a pipeline run record of node 0's written
    // by the rogue; an entry an hour ahead
    publish(
        &rogue,
        vec![entry(node0.clone(), now, version("forged-origin"))],
    )
    .await;
    publish(&rogue, vec![entry(me.clone(), now, forged_run.clone())]).await;
    publish(
        &rogue,
        vec![entry(
            me.clone(),
            now + MAX_CLOCK_SKEW_MS + 3_600_000,
            version("from-the-future"),
        )],
    )
    .await;
    // the rogue's own honest entry, after them: once every node holds it,
    // the forged ones (sent before, on the same stream) were judged
    publish(&rogue, vec![entry(me.clone(), now_ms(), version("honest"))]).await;
    cluster
        .wait_until(
            Duration::from_secs(10),
            "every node stores the honest entry",
            |c| async move {
                c.running().all(|(_, n)| {
                    n.store()
                        .model_versions(&model("honest"))
                        .is_ok_and(|v| v.len() == 1)
                })
            },
        )
        .await
        .expect("honest entry stored");
    for (i, n) in cluster.running() {
        let s = n.store();
        assert!(
            s.model_versions(&model("forged-origin"))
                .expect("read")
                .is_empty(),
            "node {i}"
        );
        assert!(
            s.model_versions(&model("from-the-future"))
                .expect("read")
                .is_empty(),
            "node {i}"
        );
        assert_eq!(s.pipeline_run(&run).expect("read"), None, "node {i}");
    }

    // a push carrying another node's entry (beside one of its own) is a
    // bad request, and nothing of it is stored
    let pushed = rogue
        .request(
            cluster.node(0).peer_id().parse().expect("peer id"),
            Request::LedgerPush {
                entries: vec![
                    entry(me.clone(), now_ms(), version("pushed-own")),
                    entry(node1.clone(), now_ms(), version("pushed-foreign")),
                ],
            },
        )
        .await
        .expect("answer");
    match pushed {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("not the node that sent it"), "{message}");
        }
        other => panic!("a forged push was answered {other:?}"),
    }
    let s = cluster.node(0).store();
    assert!(
        s.model_versions(&model("pushed-own"))
            .expect("read")
            .is_empty()
    );
    assert!(
        s.model_versions(&model("pushed-foreign"))
            .expect("read")
            .is_empty()
    );
    // a pipeline run record for another coordinator is refused in a push too
    let pushed = rogue
        .request(
            cluster.node(1).peer_id().parse().expect("peer id"),
            Request::LedgerPush {
                entries: vec![entry(me.clone(), now_ms(), forged_run)],
            },
        )
        .await
        .expect("answer");
    assert!(
        matches!(
            pushed,
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{pushed:?}"
    );
    assert_eq!(
        cluster.node(1).store().pipeline_run(&run).expect("read"),
        None
    );
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_output_registers_with_its_run_and_metrics() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("wordcount").expect("wordcount"),
        "test/wordcount:v1",
    );
    let words = tempfile::tempdir().expect("tempdir");
    std::fs::write(words.path().join("a.txt"), "one two two\n").expect("write");
    let s0 = cluster.node(0).store();
    let input = s0
        .add_path(words.path(), &Default::default(), &())
        .expect("add")
        .id;
    s0.set_tag(
        &TagName::new("datasets/words:v1").expect("tag"),
        Some(input),
    )
    .expect("tag");
    let job = submit(
        &cluster,
        0,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: count}\nspec:\n  task:\n    wasm: {module: test/wordcount:v1, args: [\"--input\", \"/inputs/words\", \"--out\", \"/outputs/model/counts.json\"]}\n  inputs: [{from: datasets/words:v1, path: /inputs/words}]\n  outputs: [{path: /outputs/model}]\n",
    )
    .await
    .id;
    let done = wait_done(&cluster, 0, &job, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let output = done.result.as_ref().expect("result").outputs[0].1;
    // the run's metrics, as the coordinator records them
    cluster
        .node(0)
        .ledger()
        .append(EntryBody::Run(RunEvent {
            run: job.clone(),
            start: None,
            params: vec![],
            metrics: [(0.5, 0), (0.75, 1)]
                .into_iter()
                .map(|(value, step)| Metric {
                    key: "accuracy".into(),
                    value,
                    step,
                    timestamp_ms: now_ms(),
                })
                .collect(),
            tags: vec![],
            end: None,
        }))
        .await
        .expect("run entry");

    // registered from node 2, which did not coordinate the job
    let c2 = client(&cluster, 2);
    let r = c2
        .register_model("counts", &format!("{job}:/outputs/model"))
        .await
        .expect("register a run's output");
    assert_eq!(
        (r.version, r.artifact, r.run.as_ref()),
        (1, output, Some(&job))
    );
    // pinned there, with its files
    let s2 = cluster.node(2).store();
    assert!(s2.list_pins().expect("pins").iter().any(|p| p.id == output));
    assert!(
        s2.has(&output).expect("has"),
        "the registered version was fetched"
    );
    cluster
        .wait_until(Duration::from_secs(10), "node 2 holds the run", |c| {
            let job = job.clone();
            async move { c.node(2).store().run_view(&job).ok().flatten().is_some() }
        })
        .await
        .expect("run replicated");
    let shown = c2.model("counts").await.expect("show");
    let v = &shown.versions[0];
    assert_eq!(v.version.run.as_ref(), Some(&job));
    assert_eq!(v.metrics.get("accuracy"), Some(&0.75), "{:?}", v.metrics);
    // a path the job has no output at is named
    let (status, detail) = api_error(
        c2.register_model("counts", &format!("{job}:/outputs/other"))
            .await
            .expect_err("no such output"),
    );
    assert_eq!(status, 404);
    assert!(detail.contains("/outputs/model"), "{detail}");
    cluster.stop().await;
}
