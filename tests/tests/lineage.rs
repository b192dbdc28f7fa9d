//! Lineage across a cluster: train → evaluate, asked about from a third
//! node: upstream reaches the raw dataset and both programs, downstream
//! from the dataset reaches both outputs, a model alias resolves to its
//! lineage, a cache hit adds none, and a run exports as OpenLineage events.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use weft_node::api::client::{ApiClient, segment};
use weft_node::api::lineage::{Graph, GraphNode};
use weft_protocol::Hash;
use weft_protocol::ledger::{AliasName, ModelName};
use weft_protocol::sched::{JobId, JobState};
use weft_tests::{
    Cluster, ClusterOptions, everywhere, example_wasm, submit, wait_cache_record, wait_done,
};

fn client(cluster: &Cluster, i: usize) -> ApiClient {
    ApiClient::from_home(cluster.node(i).home()).expect("client")
}

fn train_job(data: &Hash) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: train-iris, experiment: iris}}\nspec:\n  task:\n    wasm:\n      module: examples/train:v1\n      args: [\"--data\", \"/inputs/data/train/iris.csv\", \"--out\", \"/outputs/model\", \"--epochs\", \"40\"]\n  inputs:\n    - {{from: \"{data}\", path: /inputs/data}}\n  outputs:\n    - {{path: /outputs/model}}\n  timeout: 60s\n"
    )
}

fn evaluate_job(model: &Hash, data: &Hash) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: evaluate-iris, experiment: iris}}\nspec:\n  task:\n    wasm:\n      module: examples/evaluate:v1\n      args: [\"--model\", \"/inputs/model/model.json\", \"--data\", \"/inputs/data/test/iris.csv\", \"--out\", \"/outputs/metrics.json\"]\n  inputs:\n    - {{from: \"{model}\", path: /inputs/model}}\n    - {{from: \"{data}\", path: /inputs/data}}\n  outputs:\n    - {{path: /outputs}}\n  timeout: 60s\n"
    )
}

fn output(s: &weft_protocol::sched::JobStatus, path: &str) -> Hash {
    s.result
        .as_ref()
        .and_then(|r| r.outputs.iter().find(|(p, _)| p == path))
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("no output {path}: {s:#?}"))
}

async fn graph(api: &ApiClient, reference: &str, direction: &str) -> Graph {
    api.get(&format!(
        "/api/v1/lineage/{}?direction={direction}",
        segment(reference)
    ))
    .await
    .expect("lineage")
}

/// Artifact ids of the graph, with whether each was added by hand.
fn artifacts(g: &Graph) -> Vec<(String, bool)> {
    g.nodes
        .iter()
        .filter_map(|n| match n {
            GraphNode::Artifact { id, added, .. } => Some((id.clone(), *added)),
            _ => None,
        })
        .collect()
}

fn jobs(g: &Graph) -> BTreeSet<(JobId, String)> {
    g.nodes
        .iter()
        .filter_map(|n| match n {
            GraphNode::Job { job, program, .. } => Some((job.clone(), program.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_of_a_two_job_chain_reaches_the_raw_data_and_both_programs_from_another_node() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let train = everywhere(
        &cluster,
        &example_wasm("train").expect("train"),
        "examples/train:v1",
    );
    let evaluate = everywhere(
        &cluster,
        &example_wasm("evaluate").expect("evaluate"),
        "examples/evaluate:v1",
    );
    // the raw dataset, added by hand on node 0 only
    let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/iris");
    let data = cluster
        .node(0)
        .store()
        .add_path(&iris, &Default::default(), &())
        .expect("add iris")
        .id;
    let t = submit(&cluster, 0, &train_job(&data)).await;
    let t = wait_done(&cluster, 0, &t.id, Duration::from_secs(60)).await;
    assert_eq!(t.state, JobState::Succeeded, "{t:#?}");
    let model = output(&t, "/outputs/model");
    let e = submit(&cluster, 1, &evaluate_job(&model, &data)).await;
    let e = wait_done(&cluster, 1, &e.id, Duration::from_secs(60)).await;
    assert_eq!(e.state, JobState::Succeeded, "{e:#?}");
    let report = output(&e, "/outputs");
    // node 2 coordinated neither job: it knows their lineage by gossip
    let api = client(&cluster, 2);
    let store2 = cluster.node(2).store().clone();
    cluster
        .wait_until(
            Duration::from_secs(10),
            "node 2 holds both lineages",
            |_| {
                let s = store2.clone();
                async move {
                    s.lineage_of(&report).is_ok_and(|l| l.len() == 1)
                        && s.lineage_of(&model).is_ok_and(|l| l.len() == 1)
                }
            },
        )
        .await
        .expect("lineage replicated");
    let up = graph(&api, &report.to_hex(), "up").await;
    assert_eq!(up.root, report.to_hex());
    let a = artifacts(&up);
    assert!(
        a.contains(&(data.to_hex(), true)),
        "the raw dataset, added by hand: {a:?}"
    );
    assert!(a.contains(&(model.to_hex(), false)), "{a:?}");
    assert_eq!(
        jobs(&up),
        [
            (t.id.clone(), train.to_hex()),
            (e.id.clone(), evaluate.to_hex())
        ]
        .into(),
        "both jobs and their programs"
    );
    // what each job read, where
    assert!(up.edges.iter().any(|x| x.from == model.to_hex()
        && x.to == format!("job:{}", e.id)
        && x.path == "/inputs/model"));
    assert!(up.edges.iter().any(|x| x.from == data.to_hex()
        && x.to == format!("job:{}", t.id)
        && x.path == "/inputs/data"));
    // --depth 1 stops at the job that made it
    let shallow: Graph = api
        .get(&format!("/api/v1/lineage/{}?depth=1", report.to_hex()))
        .await
        .expect("depth 1");
    assert_eq!(jobs(&shallow).len(), 1);
    // downstream from the dataset: both outputs
    let down = graph(&api, &data.to_hex(), "down").await;
    let d: Vec<String> = artifacts(&down).into_iter().map(|(id, _)| id).collect();
    assert!(
        d.contains(&model.to_hex()) && d.contains(&report.to_hex()),
        "{d:?}"
    );
    assert_eq!(jobs(&down).len(), 2);
    // a model alias names the model's lineage too
    let ledger = cluster.node(0).ledger().clone();
    let name = ModelName::new("iris").expect("name");
    ledger
        .register_model(name.clone(), model, Some(t.id.clone()), None)
        .await
        .expect("register");
    ledger
        .move_alias(
            name,
            AliasName::new("champion").expect("alias"),
            Some(1),
            None,
        )
        .await
        .expect("alias");
    cluster
        .wait_until(Duration::from_secs(10), "node 2 resolves the alias", |_| {
            let s = store2.clone();
            async move { s.resolve_str("models/iris@champion").ok() == Some(model) }
        })
        .await
        .expect("alias replicated");
    let champion = graph(&api, "models/iris@champion", "up").await;
    assert_eq!(champion.root, model.to_hex());
    assert_eq!(jobs(&champion), [(t.id.clone(), train.to_hex())].into());
    // the same training again, from node 2 (once it has heard of the
    // result): a cache hit, and no second lineage
    let key = t.cache_key;
    wait_cache_record(&cluster, 2, key).await;
    let again = submit(&cluster, 2, &train_job(&data)).await;
    let again = wait_done(&cluster, 2, &again.id, Duration::from_secs(60)).await;
    assert!(
        again.result.as_ref().is_some_and(|r| r.cached),
        "{again:#?}"
    );
    assert_eq!(output(&again, "/outputs/model"), model);
    assert_eq!(store2.lineage_of(&model).expect("lineage").len(), 1);

    // the evaluation run as OpenLineage events, from node 2
    let events: Vec<serde_json::Value> = api
        .get(&format!("/api/v1/runs/{}/openlineage", e.id))
        .await
        .expect("openlineage");
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["eventType"], "START");
    assert_eq!(events[1]["eventType"], "COMPLETE");
    for ev in &events {
        // the fields OpenLineage 2-0-2 requires of a RunEvent
        for field in ["eventTime", "producer", "schemaURL"] {
            assert!(ev[field].is_string(), "{field}: {ev:#}");
        }
        assert!(
            ev["schemaURL"].as_str().is_some_and(
                |s| s.starts_with("https://openlineage.io/spec/2-0-2/OpenLineage.json")
            ),
            "{ev:#}"
        );
        let time = ev["eventTime"].as_str().expect("time");
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
        let run_id = ev["run"]["runId"].as_str().expect("runId");
        let groups: Vec<usize> = run_id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{run_id}");
        assert!(run_id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(ev["run"]["runId"], events[0]["run"]["runId"], "one run");
        assert_eq!(ev["job"]["namespace"], "weft");
        assert_eq!(ev["job"]["name"], "evaluate-iris");
        let names = |k: &str| -> BTreeSet<String> {
            ev[k]
                .as_array()
                .expect("datasets")
                .iter()
                .map(|d| {
                    assert_eq!(d["namespace"], "weft");
                    d["name"].as_str().expect("name").to_string()
                })
                .collect()
        };
        assert_eq!(names("inputs"), [model.to_hex(), data.to_hex()].into());
        if ev["eventType"] == "COMPLETE" {
            assert_eq!(names("outputs"), [report.to_hex()].into());
        }
    }
    // the same run id, the same UUID on another node
    let from0: Vec<serde_json::Value> = client(&cluster, 0)
        .get(&format!("/api/v1/runs/{}/openlineage", e.id))
        .await
        .expect("openlineage on node 0");
    assert_eq!(from0[0]["run"]["runId"], events[0]["run"]["runId"]);
    cluster.stop().await;
}
