//! Pipelines across a cluster: a chain with real outputs passed on,
//! memoization across nodes, exact re-runs downstream of a change, stale
//! cache hits, refusals that name the field, failures that stop only their
//! dependents, cancel, and gates in front of registrations.

use std::path::Path;
use std::time::Duration;

use weft_node::api::client::{ApiClient, ClientError};
use weft_node::pipeline::{StartRequest, register_and_promote};
use weft_node::store::AddOptions;
use weft_protocol::ledger::{
    AliasName, ModelName, PipelineRunRecord, PipelineState, StepRecord, StepState,
};
use weft_protocol::pipeline::PipelineSpec;
use weft_protocol::sched::{JobId, JobState};
use weft_protocol::{Hash, TagName};
use weft_tests::{Cluster, ClusterOptions, everywhere, example_wasm, wait_cache_record};

/// How long any one run in these tests may take.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// Starts a 3-node cluster with the example programs tagged on every node:
/// `test/train:v1`, `test/evaluate:v1`, `test/wordcount:v1`, `test/hello:v1`,
/// `test/sleepy:v1`.
async fn cluster() -> Cluster {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    for name in ["train", "evaluate", "wordcount", "hello", "sleepy"] {
        let wasm = example_wasm(name).expect("example program");
        everywhere(&cluster, &wasm, &format!("test/{name}:v1"));
    }
    cluster
}

/// Adds the iris dataset folder to every node, tagged `datasets/iris:v1`.
fn iris_everywhere(cluster: &Cluster) -> Hash {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/iris");
    let tag = TagName::new("datasets/iris:v1").expect("tag");
    let mut id = None;
    for (_, n) in cluster.running() {
        let out = n
            .store()
            .add_path(&dir, &AddOptions::default(), &())
            .expect("add iris");
        n.store().set_tag(&tag, Some(out.id)).expect("tag");
        id = Some(out.id);
    }
    id.expect("a running node")
}

fn spec(yaml: &str) -> PipelineSpec {
    match PipelineSpec::from_yaml(yaml) {
        Ok(s) => s,
        Err(e) => panic!("test pipeline does not parse: {e}\n{yaml}"),
    }
}

/// Starts `yaml` on node `i` with `params`.
async fn start(
    cluster: &Cluster,
    i: usize,
    yaml: &str,
    params: &[(&str, &str)],
) -> PipelineRunRecord {
    let mut req = StartRequest::new(spec(yaml));
    req.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cluster.node(i).pipelines().start(req).await.expect("start")
}

/// Waits until node `i` says run `id` is over.
async fn wait_over(cluster: &Cluster, i: usize, id: &JobId) -> PipelineRunRecord {
    let rec = cluster
        .node(i)
        .pipelines()
        .wait(id, None, RUN_WITHIN)
        .await
        .expect("run");
    assert_ne!(
        rec.state,
        PipelineState::Running,
        "run {id} not over within {RUN_WITHIN:?}: {rec:#?}"
    );
    rec
}

fn step<'a>(rec: &'a PipelineRunRecord, name: &str) -> &'a StepRecord {
    rec.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {rec:#?}"))
}

fn states(rec: &PipelineRunRecord) -> Vec<(&str, StepState)> {
    rec.steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

/// The output ids of a step's job, as its coordinator knows them.
async fn outputs(cluster: &Cluster, i: usize, s: &StepRecord) -> Vec<(String, Hash)> {
    let job = s.job.clone().expect("the step ran a job");
    let status = cluster.node(i).sched().status(job).await.expect("status");
    assert_eq!(status.state, JobState::Succeeded, "{status:#?}");
    status.result.expect("result").outputs
}

/// train → evaluate → promote (gated on held-out accuracy), as in the
/// issue's example.
const IRIS: &str = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: iris, experiment: iris}
spec:
  params: {epochs: "500", min: 0.9}
  steps:
    train:
      task: {wasm: {module: test/train:v1, args: ["--epochs", "${params.epochs}"]}}
      inputs: [{from: datasets/iris:v1, path: /inputs/data}]
      outputs: [{name: model, path: /outputs/model}]
      timeout: 1m
    evaluate:
      task: {wasm: {module: test/evaluate:v1}}
      inputs:
        - {from: steps.train.outputs.model, path: /inputs/model}
        - {from: datasets/iris:v1, path: /inputs/data}
      outputs: [{name: report, path: /outputs}]
      timeout: 1m
    promote:
      when: "steps.evaluate.metrics.accuracy >= ${params.min}"
      register: {model: iris, from: steps.train.outputs.model, alias: champion}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_chain_runs_passes_its_model_on_and_promotes_it() {
    let cluster = cluster().await;
    iris_everywhere(&cluster);
    let first = start(&cluster, 0, IRIS, &[]).await;
    assert_eq!(first.state, PipelineState::Running);
    assert_eq!(first.pipeline, "iris");
    assert_eq!(step(&first, "train").state, StepState::Running);
    assert_eq!(step(&first, "evaluate").state, StepState::Waiting);
    assert_eq!(step(&first, "promote").needs, ["evaluate", "train"]);
    let done = wait_over(&cluster, 0, &first.id).await;
    assert_eq!(done.state, PipelineState::Succeeded, "{done:#?}");
    assert_eq!(
        states(&done),
        [
            ("train", StepState::Ran),
            ("evaluate", StepState::Ran),
            ("promote", StepState::Ran)
        ]
    );
    // evaluate read the model train made (it fails without one), and the
    // gate passed on its accuracy: the champion is train's output
    let model = outputs(&cluster, 0, step(&done, "train")).await[0].1;
    assert!(
        step(&done, "promote")
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("registered iris version 1")),
        "{done:#?}"
    );
    assert_eq!(
        cluster
            .node(0)
            .store()
            .resolve_str("models/iris@champion")
            .expect("champion"),
        model
    );
    // the steps' jobs carry the run
    for s in &done.steps[..2] {
        assert!(
            s.started_ms.is_some() && s.ended_ms >= s.started_ms,
            "{s:#?}"
        );
    }
    assert_eq!(
        done.params,
        vec![
            ("epochs".to_string(), "500".to_string()),
            ("min".to_string(), "0.9".to_string())
        ]
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_skips_the_registration_and_keeps_the_old_champion() {
    let cluster = cluster().await;
    iris_everywhere(&cluster);
    // an older champion, version 1
    let old = everywhere(&cluster, b"an older model", "models/old:v1");
    let iris = ModelName::new("iris").expect("name");
    let champion = AliasName::new("champion").expect("alias");
    register_and_promote(
        cluster.node(0).ledger(),
        &iris,
        old,
        None,
        None,
        Some(&champion),
        "by hand",
    )
    .await
    .expect("register");
    // accuracy cannot reach 1.01: the gate fails, the run still succeeds
    let run = start(&cluster, 0, IRIS, &[("min", "1.01")]).await;
    let done = wait_over(&cluster, 0, &run.id).await;
    assert_eq!(done.state, PipelineState::Succeeded, "{done:#?}");
    let promote = step(&done, "promote");
    assert_eq!(promote.state, StepState::Skipped, "{done:#?}");
    let why = promote.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains("did not hold") && why.contains("accuracy = "),
        "{why}"
    );
    let store = cluster.node(0).store();
    assert_eq!(
        store.resolve_str("models/iris@champion").expect("champion"),
        old
    );
    assert_eq!(store.model_versions(&iris).expect("versions").len(), 1);
    // a gate that holds promotes the new model; train and evaluate are cached
    let run = start(&cluster, 0, IRIS, &[("min", "0.5")]).await;
    let done = wait_over(&cluster, 0, &run.id).await;
    assert_eq!(
        states(&done),
        [
            ("train", StepState::Cached),
            ("evaluate", StepState::Cached),
            ("promote", StepState::Ran)
        ],
        "{done:#?}"
    );
    let model = outputs(&cluster, 0, step(&done, "train")).await[0].1;
    assert_eq!(
        store.resolve_str("models/iris@champion").expect("champion"),
        model
    );
    assert_eq!(
        store.resolve_str("models/iris:2").expect("version 2"),
        model
    );
    let moves = store.alias_history(&iris, &champion).expect("history");
    assert_eq!(
        moves.last().map(|m| (m.from, m.version)),
        Some((Some(1), Some(2)))
    );
    cluster.stop().await;
}

/// Word counts: `a` and `b` from two datasets, `both` from their outputs,
/// `only_a` from `a`'s.
const COUNTS: &str = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: counts}
spec:
  steps:
    a:
      task: {wasm: {module: test/wordcount:v1}}
      inputs: [{from: datasets/a:v1, path: /inputs/a.txt}]
      outputs: [{name: counts, path: /outputs}]
    b:
      task: {wasm: {module: test/wordcount:v1}}
      inputs: [{from: datasets/b:v1, path: /inputs/b.txt}]
      outputs: [{name: counts, path: /outputs}]
    both:
      task: {wasm: {module: test/wordcount:v1}}
      inputs:
        - {from: steps.a.outputs.counts, path: /inputs/a}
        - {from: steps.b.outputs.counts, path: /inputs/b}
      outputs: [{name: counts, path: /outputs}]
    only_a:
      task: {wasm: {module: test/wordcount:v1}}
      inputs: [{from: steps.a.outputs.counts, path: /inputs/a}]
      outputs: [{name: counts, path: /outputs}]
"#;

/// Waits until node `i` holds the cache records of every step's job of `rec`.
async fn records_heard(cluster: &Cluster, coordinator: usize, i: usize, rec: &PipelineRunRecord) {
    for s in &rec.steps {
        let job = s.job.clone().expect("job");
        let key = cluster
            .node(coordinator)
            .sched()
            .status(job)
            .await
            .expect("status")
            .cache_key;
        wait_cache_record(cluster, i, key).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_on_another_node_is_fully_cached_and_a_changed_input_reruns_exactly_downstream() {
    let cluster = cluster().await;
    everywhere(&cluster, b"alpha beta beta", "datasets/a:v1");
    let old_b = everywhere(&cluster, b"gamma delta", "datasets/b:v1");
    let first = start(&cluster, 0, COUNTS, &[]).await;
    let first = wait_over(&cluster, 0, &first.id).await;
    assert_eq!(first.state, PipelineState::Succeeded, "{first:#?}");
    assert!(
        first.steps.iter().all(|s| s.state == StepState::Ran),
        "{first:#?}"
    );
    records_heard(&cluster, 0, 1, &first).await;
    // the same pipeline from node 1: nothing runs
    let again = start(&cluster, 1, COUNTS, &[]).await;
    let again = wait_over(&cluster, 1, &again.id).await;
    assert_eq!(again.state, PipelineState::Succeeded, "{again:#?}");
    assert_eq!(again.coordinator, cluster.node(1).peer_id());
    assert!(
        again.steps.iter().all(|s| s.state == StepState::Cached),
        "not every step was a cache hit: {again:#?}"
    );
    // b's data changes: b and both run, a and only_a are hits
    everywhere(&cluster, b"gamma delta epsilon", "datasets/b:v1");
    let changed = start(&cluster, 1, COUNTS, &[]).await;
    let changed = wait_over(&cluster, 1, &changed.id).await;
    assert_eq!(
        states(&changed),
        [
            ("a", StepState::Cached),
            ("b", StepState::Ran),
            ("both", StepState::Ran),
            ("only_a", StepState::Cached)
        ],
        "{changed:#?}"
    );
    // a run pinned to b's old id (as a trigger pins the change it saw)
    // takes that id whatever the tag says now: every step is a hit
    let mut req = StartRequest::new(spec(COUNTS));
    req.pinned = vec![(TagName::new("datasets/b:v1").expect("tag"), old_b)];
    req.trigger = Some(format!("tag datasets/b:v1 -> {old_b}"));
    let pinned = cluster.node(1).pipelines().start(req).await.expect("start");
    let pinned = wait_over(&cluster, 1, &pinned.id).await;
    assert!(
        pinned.steps.iter().all(|s| s.state == StepState::Cached),
        "{pinned:#?}"
    );
    assert_eq!(
        pinned.trigger,
        Some(format!("tag datasets/b:v1 -> {old_b}"))
    );
    // --force-step b: b runs again though unchanged; its output is the
    // same content, so both is a hit
    let mut req = StartRequest::new(spec(COUNTS));
    req.force_steps = vec!["b".into()];
    let forced = cluster.node(1).pipelines().start(req).await.expect("start");
    let forced = wait_over(&cluster, 1, &forced.id).await;
    assert_eq!(
        states(&forced),
        [
            ("a", StepState::Cached),
            ("b", StepState::Ran),
            ("both", StepState::Cached),
            ("only_a", StepState::Cached)
        ],
        "{forced:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_whose_outputs_were_deleted_everywhere_runs_again() {
    let cluster = cluster().await;
    everywhere(&cluster, b"alpha beta beta", "datasets/a:v1");
    everywhere(&cluster, b"gamma delta", "datasets/b:v1");
    let first = start(&cluster, 0, COUNTS, &[]).await;
    let first = wait_over(&cluster, 0, &first.id).await;
    assert_eq!(first.state, PipelineState::Succeeded, "{first:#?}");
    // a's output (and logs) unpinned and collected on every node
    let job = step(&first, "a").job.clone().expect("job");
    let result = cluster
        .node(0)
        .sched()
        .status(job)
        .await
        .expect("status")
        .result
        .expect("result");
    let output = result.outputs[0].1;
    for (_, n) in cluster.running() {
        for h in std::iter::once(output).chain(result.logs) {
            n.store().unpin(&h).expect("unpin");
        }
        n.store().gc(&[]).expect("gc");
        assert!(!n.store().has(&output).expect("has"));
    }
    let again = start(&cluster, 0, COUNTS, &[]).await;
    let again = wait_over(&cluster, 0, &again.id).await;
    // a runs again and makes the same content: its dependents are hits
    assert_eq!(
        states(&again),
        [
            ("a", StepState::Ran),
            ("b", StepState::Cached),
            ("both", StepState::Cached),
            ("only_a", StepState::Cached)
        ],
        "{again:#?}"
    );
    assert_eq!(outputs(&cluster, 0, step(&again, "a")).await[0].1, output);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_and_an_unknown_step_are_refused_naming_the_field_through_the_api() {
    let cluster = Cluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    let client = ApiClient::from_home(cluster.node(0).home()).expect("client");
    let cycle = COUNTS.replace(
        "inputs: [{from: datasets/a:v1, path: /inputs/a.txt}]",
        "inputs: [{from: steps.only_a.outputs.counts, path: /inputs/a.txt}]",
    );
    let refused = |r: Result<PipelineRunRecord, ClientError>| match r {
        Err(ClientError::Api { status, detail, .. }) => (status, detail),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (status, detail) = refused(client.pipeline_start(&cycle, &[], false, &[]).await);
    assert_eq!(status, 400);
    assert_eq!(
        detail,
        "spec.steps.a.inputs[0].from: the steps form a cycle: a -> only_a -> a"
    );
    let unknown = COUNTS.replace("steps.b.outputs.counts", "steps.bb.outputs.counts");
    let (status, detail) = refused(client.pipeline_start(&unknown, &[], false, &[]).await);
    assert_eq!(status, 400);
    assert!(
        detail.starts_with("spec.steps.both.inputs[1].from: unknown step \"bb\""),
        "{detail}"
    );
    // a param that is not declared, and a step to force that does not exist
    let (status, detail) = refused(
        client
            .pipeline_start(COUNTS, &[("x".into(), "1".into())], false, &[])
            .await,
    );
    assert_eq!(status, 400);
    assert!(
        detail.starts_with("spec.params.x: unknown param"),
        "{detail}"
    );
    let (status, detail) = refused(
        client
            .pipeline_start(COUNTS, &[], false, &["z".into()])
            .await,
    );
    assert_eq!(status, 400);
    assert!(
        detail.starts_with("--force-step z: unknown step"),
        "{detail}"
    );
    // nothing was started
    assert!(client.pipeline_runs().await.expect("runs").is_empty());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_fails_only_its_dependents() {
    let cluster = cluster().await;
    let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: partial}
spec:
  steps:
    bad:
      task: {wasm: {module: test/hello:v1, args: ["--exit", "3"]}}
      outputs: [{name: out, path: /outputs/hello.txt}]
      retries: 0
    after_bad:
      task: {wasm: {module: test/hello:v1, args: ["after-bad"]}}
      inputs: [{from: steps.bad.outputs.out, path: /inputs/x}]
    later:
      task: {wasm: {module: test/hello:v1, args: ["later"]}}
      needs: [after_bad]
    good:
      task: {wasm: {module: test/hello:v1, args: ["good"]}}
      outputs: [{name: out, path: /outputs/hello.txt}]
    after_good:
      task: {wasm: {module: test/hello:v1, args: ["after-good"]}}
      inputs: [{from: steps.good.outputs.out, path: /inputs/x}]
"#;
    let run = start(&cluster, 0, yaml, &[]).await;
    let done = wait_over(&cluster, 0, &run.id).await;
    assert_eq!(done.state, PipelineState::Failed, "{done:#?}");
    assert_eq!(
        states(&done),
        [
            ("bad", StepState::Failed),
            ("after_bad", StepState::Skipped),
            ("good", StepState::Ran),
            ("after_good", StepState::Ran),
            ("later", StepState::Skipped),
        ],
        "{done:#?}"
    );
    assert_eq!(step(&done, "bad").reason.as_deref(), Some("exit code 3"));
    assert_eq!(
        step(&done, "after_bad").reason.as_deref(),
        Some("step bad failed")
    );
    assert_eq!(
        step(&done, "later").reason.as_deref(),
        Some("step after_bad was skipped")
    );
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("step bad failed")),
        "{done:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_steps_and_the_rest_never_start() {
    let cluster = cluster().await;
    let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: slow}
spec:
  steps:
    nap1:
      task: {wasm: {module: test/sleepy:v1, args: ["60"]}}
      constraints: {worker: "yes"}
      timeout: 2m
    nap2:
      task: {wasm: {module: test/sleepy:v1, args: ["61"]}}
      constraints: {worker: "yes"}
      timeout: 2m
    after:
      task: {wasm: {module: test/hello:v1, args: ["after"]}}
      needs: [nap1]
"#;
    let run = start(&cluster, 0, yaml, &[]).await;
    // both naps run at once (independent steps in parallel)
    let mut jobs: Vec<JobId> = Vec::new();
    for name in ["nap1", "nap2"] {
        let id = run.id.clone();
        cluster
            .wait_until(Duration::from_secs(20), "the nap runs", |c| {
                let id = id.clone();
                async move {
                    let Ok(rec) = c.node(0).pipelines().run(&id).await else {
                        return false;
                    };
                    let Some(job) = step(&rec, name).job.clone() else {
                        return false;
                    };
                    c.node(0)
                        .sched()
                        .status(job)
                        .await
                        .is_ok_and(|s| s.state == JobState::Running)
                }
            })
            .await
            .expect("running");
        let rec = cluster.node(0).pipelines().run(&run.id).await.expect("run");
        jobs.push(step(&rec, name).job.clone().expect("job"));
    }
    let t = std::time::Instant::now();
    let client = ApiClient::from_home(cluster.node(0).home()).expect("client");
    let cancelled = client
        .pipeline_cancel(run.id.as_str())
        .await
        .expect("cancel");
    assert_eq!(cancelled.state, PipelineState::Cancelled);
    assert_eq!(step(&cancelled, "after").state, StepState::Cancelled);
    let done = wait_over(&cluster, 0, &run.id).await;
    // the record settles once both jobs are over
    let id = run.id.clone();
    cluster
        .wait_until(Duration::from_secs(15), "every step is over", |c| {
            let id = id.clone();
            async move {
                c.node(0).pipelines().run(&id).await.is_ok_and(|r| {
                    r.steps
                        .iter()
                        .all(|s| !matches!(s.state, StepState::Running | StepState::Waiting))
                })
            }
        })
        .await
        .expect("settled");
    let rec = cluster.node(0).pipelines().run(&run.id).await.expect("run");
    assert_eq!(done.state, PipelineState::Cancelled);
    assert_eq!(
        states(&rec),
        [
            ("nap1", StepState::Cancelled),
            ("after", StepState::Cancelled),
            ("nap2", StepState::Cancelled)
        ],
        "{rec:#?}"
    );
    for job in jobs {
        let s = cluster.node(0).sched().status(job).await.expect("status");
        assert_eq!(s.state, JobState::Cancelled, "{s:#?}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        t.elapsed()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_status_and_cancel_work_from_another_node() {
    let cluster = cluster().await;
    let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: far}
spec:
  steps:
    nap:
      task: {wasm: {module: test/sleepy:v1, args: ["60"]}}
      timeout: 2m
    after:
      task: {wasm: {module: test/hello:v1, args: ["after"]}}
      needs: [nap]
"#;
    let run = start(&cluster, 0, yaml, &[]).await;
    // node 1 hears of the run through the ledger, job and all
    let id = run.id.clone();
    cluster
        .wait_until(Duration::from_secs(20), "node 1 sees the nap's job", |c| {
            let id = id.clone();
            async move {
                c.node(1)
                    .pipelines()
                    .run(&id)
                    .await
                    .is_ok_and(|r| step(&r, "nap").job.is_some())
            }
        })
        .await
        .expect("heard");
    let listed = cluster.node(2).pipelines().runs().await.expect("runs");
    assert_eq!(listed.first().map(|r| &r.id), Some(&run.id), "{listed:#?}");
    // a record of the run written by a node that does not coordinate it is
    // not the run's: peers refuse it, and its writer ignores it too
    let mut forged = cluster.node(1).pipelines().run(&run.id).await.expect("run");
    forged.state = PipelineState::Succeeded;
    cluster
        .node(1)
        .store()
        .ledger_append(weft_protocol::EntryBody::PipelineRun(forged))
        .expect("append");
    let seen = cluster.node(1).pipelines().run(&run.id).await.expect("run");
    assert_eq!(seen.state, PipelineState::Running, "{seen:#?}");
    // cancel from node 1: the coordinator cancels the job, and node 1
    // answers with the cancelled run
    let client = ApiClient::from_home(cluster.node(1).home()).expect("client");
    let asked = client
        .pipeline_cancel(run.id.as_str())
        .await
        .expect("cancel");
    assert_eq!(asked.state, PipelineState::Cancelled, "{asked:#?}");
    assert!(
        asked
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(cluster.node(1).peer_id())),
        "{asked:#?}"
    );
    let id = run.id.clone();
    cluster
        .wait_until(
            Duration::from_secs(15),
            "every node sees it cancelled",
            |c| {
                let id = id.clone();
                async move {
                    for (_, n) in c.running() {
                        let done = n.pipelines().run(&id).await.is_ok_and(|r| {
                            step(&r, "nap").state == StepState::Cancelled
                                && step(&r, "after").state == StepState::Cancelled
                        });
                        if !done {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await
        .expect("cancelled everywhere");
    let rec = cluster.node(0).pipelines().run(&run.id).await.expect("run");
    assert_eq!(rec.state, PipelineState::Cancelled);
    let job = step(&rec, "nap").job.clone().expect("job");
    let s = cluster.node(0).sched().status(job).await.expect("status");
    assert_eq!(s.state, JobState::Cancelled, "{s:#?}");
    // a run that is over is answered as it ended
    let again = cluster
        .node(2)
        .pipelines()
        .cancel(run.id.clone())
        .await
        .expect("cancel");
    assert_eq!(again.state, PipelineState::Cancelled);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_by_a_restarted_coordinator_ends_failed_and_says_why() {
    let mut cluster = cluster().await;
    let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: left}
spec:
  steps:
    nap:
      task: {wasm: {module: test/sleepy:v1, args: ["60"]}}
      constraints: {worker: "yes"}
      timeout: 2m
    after:
      task: {wasm: {module: test/hello:v1, args: ["after"]}}
      needs: [nap]
"#;
    // coordinated by node 0, which runs no task of it (its nap needs a
    // worker), so the restart is the coordinator's alone
    let run = start(&cluster, 0, yaml, &[]).await;
    assert_eq!(run.state, PipelineState::Running);
    cluster.stop_node(0).await;
    cluster.restart_node(0).await.expect("restart");
    let id = run.id.clone();
    cluster
        .wait_until(Duration::from_secs(10), "the run is marked failed", |c| {
            let id = id.clone();
            async move {
                c.node(0)
                    .pipelines()
                    .run(&id)
                    .await
                    .is_ok_and(|r| r.state == PipelineState::Failed)
            }
        })
        .await
        .expect("marked");
    let rec = cluster.node(0).pipelines().run(&run.id).await.expect("run");
    assert!(
        rec.reason
            .as_deref()
            .is_some_and(|r| r.contains("the coordinator stopped")),
        "{rec:#?}"
    );
    assert!(
        rec.steps.iter().all(|s| s.state == StepState::Cancelled),
        "{rec:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_start_fails_and_its_dependents_are_skipped() {
    let cluster = Cluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    let yaml = r#"
apiVersion: weft/v1
kind: Pipeline
metadata: {name: long}
spec:
  params: {p: short}
  steps:
    a:
      task: {wasm: {module: test/hello:v1, args: ["x${params.p}"]}}
    b:
      task: {wasm: {module: test/hello:v1, args: ["b"]}}
      needs: [a]
"#;
    // the override makes a's argument longer than any argument may be
    let long = "y".repeat(weft_protocol::pipeline::MAX_PARAM_VALUE_BYTES);
    let run = start(&cluster, 0, yaml, &[("p", &long)]).await;
    assert_eq!(run.state, PipelineState::Failed, "{run:#?}");
    assert_eq!(
        states(&run),
        [("a", StepState::Failed), ("b", StepState::Skipped)]
    );
    assert!(
        step(&run, "a")
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("spec.steps.a.task.wasm.args[0]")),
        "{run:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_move_runs_the_pipeline_once_with_the_new_input() {
    let cluster = cluster().await;
    everywhere(&cluster, b"alpha beta beta", "datasets/a:v1");
    everywhere(&cluster, b"gamma delta", "datasets/b:v1");
    let yaml = COUNTS.replace(
        "  steps:\n",
        "  triggers: [{tag: datasets/b:v1}]\n  steps:\n",
    );
    let mut req = StartRequest::new(spec(&yaml));
    req.source = Some(yaml.clone());
    let first = cluster.node(0).pipelines().start(req).await.expect("start");
    let first = wait_over(&cluster, 0, &first.id).await;
    assert_eq!(first.state, PipelineState::Succeeded, "{first:#?}");
    assert_eq!(first.trigger, None);
    // whichever node owns the change, it knows the first run's results
    for (i, _) in cluster.running() {
        records_heard(&cluster, 0, i, &first).await;
    }
    // b's data moves, on node 1 only: the tag replicates, and the one node
    // that owns the change starts the pipeline
    let (moved, _) = cluster
        .node(1)
        .store()
        .add_bytes(
            b"gamma delta zeta",
            weft_node::store::records::BlobKind::Raw,
        )
        .expect("add");
    cluster
        .node(1)
        .store()
        .set_tag(&TagName::new("datasets/b:v1").expect("tag"), Some(moved))
        .expect("tag");
    let first_id = first.id.clone();
    cluster
        .wait_until(Duration::from_secs(30), "a triggered run is heard", |c| {
            let first_id = first_id.clone();
            async move {
                c.node(2)
                    .pipelines()
                    .runs()
                    .await
                    .is_ok_and(|r| r.iter().any(|r| r.id != first_id && r.trigger.is_some()))
            }
        })
        .await
        .expect("triggered");
    let run = cluster
        .node(2)
        .pipelines()
        .runs()
        .await
        .expect("runs")
        .into_iter()
        .find(|r| r.trigger.is_some())
        .expect("the triggered run");
    let (coordinator, _) = cluster
        .running()
        .find(|(_, n)| n.peer_id() == run.coordinator)
        .expect("its coordinator is a node of the cluster");
    let done = wait_over(&cluster, coordinator, &run.id).await;
    assert_eq!(
        done.trigger,
        Some(format!("tag datasets/b:v1 -> {}", moved.to_hex()))
    );
    assert_eq!(
        states(&done),
        [
            ("a", StepState::Cached),
            ("b", StepState::Ran),
            ("both", StepState::Ran),
            ("only_a", StepState::Cached)
        ],
        "{done:#?}"
    );
    // once across the mesh: no node started another
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, n) in cluster.running() {
        let runs = n.pipelines().runs().await.expect("runs");
        let with_trigger = runs.iter().filter(|r| r.trigger.is_some()).count();
        assert_eq!(with_trigger, 1, "node {i}: {runs:#?}");
    }
    cluster.stop().await;
}
