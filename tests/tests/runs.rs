//! Runs across a cluster: a job's metrics land in its run on every node, a
//! cached re-run carries the same metrics, and runs created through the
//! REST API keep MLflow's batch limits and write-once params.

use std::time::Duration;

use weft_node::api::client::{ApiClient, ClientError};
use weft_node::api::runs::RunJson;
use weft_node::cli::run_cmds::{compare_runs, comparison_rows};
use weft_protocol::sched::{JobId, JobState};
use weft_tests::{
    Cluster, ClusterOptions, everywhere, example_wasm, peer, submit, wait_cache_record, wait_done,
};

/// A job running the `report` test program, which writes `metrics` to the
/// metrics file (`--to`, when given) and `/outputs/out.txt`.
fn report_job(name: &str, metrics: &str, extra_args: &str, extra: &str) -> String {
    let metrics = metrics.replace('\'', "''");
    format!(
        "apiVersion: weft/v1\nkind: Job\nmetadata: {{name: {name}, experiment: exp-a}}\nspec:\n  task:\n    wasm: {{module: test/report:v1, args: ['{metrics}'{extra_args}]}}\n  outputs:\n    - {{path: /outputs/out.txt}}\n  timeout: 30s\n{extra}"
    )
}

fn client(cluster: &Cluster, i: usize) -> ApiClient {
    ApiClient::from_home(cluster.node(i).home()).expect("client")
}

/// Waits until node `i` knows run `id` as ended.
async fn ended_run(cluster: &Cluster, i: usize, id: &JobId) -> RunJson {
    let api = client(cluster, i);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = api.get::<RunJson>(&format!("/api/v1/runs/{id}")).await
            && r.status != "running"
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {i} never saw run {id} end"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn points(r: &RunJson, key: &str) -> Vec<(u64, f64)> {
    r.metric_history
        .iter()
        .filter(|m| m.key == key)
        .map(|m| (m.step, m.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_metrics_land_in_its_run_on_other_nodes_and_a_cached_rerun_has_them() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("report").expect("report"),
        "test/report:v1",
    );
    let metrics =
        r#"{"accuracy": 0.9, "loss": [1.0, 0.5, 0.25], "val": {"f1": 0.8}, "classes": ["a"]}"#;
    let first = submit(&cluster, 0, &report_job("m1", metrics, "", "")).await;
    let done = wait_done(&cluster, 0, &first.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let result = done.result.clone().expect("result");
    assert_eq!(result.metrics.len(), 5, "{:?}", result.metrics);
    assert!(
        result.notes.iter().any(|n| n.contains("classes")),
        "the list of strings is noted: {:?}",
        result.notes
    );
    // the run, read on a node that neither coordinated nor (maybe) ran it
    let run = ended_run(&cluster, 2, &first.id).await;
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.name.as_deref(), Some("m1"));
    assert_eq!(run.experiment.as_deref(), Some("exp-a"));
    assert_eq!(run.job.as_ref(), Some(&first.id));
    assert_eq!(run.node, done.node, "the node that ran it");
    assert!(!run.cached);
    assert_eq!(run.metrics["accuracy"], 0.9);
    assert_eq!(run.metrics["val.f1"], 0.8);
    assert_eq!(run.metrics["loss"], 0.25, "the latest point of the series");
    assert_eq!(points(&run, "loss"), vec![(0, 1.0), (1, 0.5), (2, 0.25)]);
    assert!(run.duration_ms.is_some());
    // the same job again, from another node: a cache hit with the same
    // metrics (once that node has heard of the result)
    let key = done.cache_key;
    wait_cache_record(&cluster, 1, key).await;
    let again = submit(&cluster, 1, &report_job("m1", metrics, "", "")).await;
    let hit = wait_done(&cluster, 1, &again.id, Duration::from_secs(30)).await;
    assert_eq!(hit.state, JobState::Succeeded, "{hit:#?}");
    assert!(hit.result.as_ref().is_some_and(|r| r.cached), "{hit:#?}");
    let cached = ended_run(&cluster, 0, &again.id).await;
    assert!(cached.cached);
    assert_eq!(cached.metrics, run.metrics);
    assert_eq!(points(&cached, "loss"), points(&run, "loss"));
    // compared with another run of the experiment: the best of each marked
    let other = submit(
        &cluster,
        2,
        &report_job("m2", r#"{"accuracy": 0.95, "loss": [0.9, 0.3]}"#, "", ""),
    )
    .await;
    let s = wait_done(&cluster, 2, &other.id, Duration::from_secs(30)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    let other = ended_run(&cluster, 0, &other.id).await;
    let c = compare_runs(vec![run.clone(), other.clone()]);
    let rows = comparison_rows(&c);
    let row = |m: &str| {
        rows.iter()
            .find(|r| r[0].starts_with(&format!("metric {m} (")))
            .unwrap_or_else(|| panic!("no row for {m}: {rows:?}"))
            .clone()
    };
    assert_eq!(row("accuracy")[1..], ["0.9".to_string(), "0.95 *".into()]);
    assert_eq!(row("loss")[0], "metric loss (lowest best)");
    assert_eq!(row("loss")[1..], ["0.25 *".to_string(), "0.3".into()]);
    assert_eq!(row("val.f1")[1..], ["0.8 *".to_string(), "-".into()]);
    // all three are runs of the experiment, listed on any node
    let listed: Vec<RunJson> = client(&cluster, 2)
        .get("/api/v1/runs?experiment=exp-a")
        .await
        .expect("list");
    let ids: Vec<&JobId> = listed.iter().map(|r| &r.id).collect();
    assert!(
        ids.contains(&&first.id) && ids.contains(&&again.id),
        "{ids:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_keeps_its_metrics_and_a_named_metrics_file_is_read() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    everywhere(
        &cluster,
        &example_wasm("report").expect("report"),
        "test/report:v1",
    );
    // fails after writing its metrics: the run ends failed, with them
    let failed = submit(
        &cluster,
        0,
        &report_job("fails", r#"{"loss": 2.5}"#, ", '--exit', '3'", ""),
    )
    .await;
    let s = wait_done(&cluster, 0, &failed.id, Duration::from_secs(30)).await;
    assert_eq!(s.state, JobState::Failed, "{s:#?}");
    let run = ended_run(&cluster, 1, &failed.id).await;
    assert_eq!(run.status, "failed");
    assert_eq!(run.metrics["loss"], 2.5);
    // a metrics file the spec names, in a folder of the outputs
    let named = submit(
        &cluster,
        1,
        &report_job(
            "named",
            r#"{"acc": 1}"#,
            ", '--to', '/outputs/eval/scores.json'",
            "  metrics: /outputs/eval/scores.json\n",
        ),
    )
    .await;
    let s = wait_done(&cluster, 1, &named.id, Duration::from_secs(30)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    assert_eq!(ended_run(&cluster, 0, &named.id).await.metrics["acc"], 1.0);
    // the default file is not read when the spec names another one, and a
    // named file the task did not write is a note, not a failure
    let missing = submit(
        &cluster,
        0,
        &report_job(
            "missing",
            r#"{"acc": 1}"#,
            "",
            "  metrics: /outputs/eval/scores.json\n",
        ),
    )
    .await;
    let s = wait_done(&cluster, 0, &missing.id, Duration::from_secs(30)).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    let result = s.result.expect("result");
    assert!(result.metrics.is_empty(), "{:?}", result.metrics);
    assert!(
        result.notes.iter().any(|n| n.contains("did not write it")),
        "{:?}",
        result.notes
    );
    // it ran: a named metrics file makes another cache key than the default
    assert!(!result.cached);
    let _ = peer(&cluster, 0);
    cluster.stop().await;
}

async fn post(
    api: &ApiClient,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    api.call(reqwest::Method::POST, path, &body).await
}

fn refused(r: Result<serde_json::Value, ClientError>, says: &str) {
    match r {
        Err(ClientError::Api {
            status,
            code,
            detail,
        }) => {
            assert_eq!(status, 400, "{detail}");
            assert_eq!(code, "invalid_parameter_value", "{detail}");
            assert!(detail.contains(says), "{detail:?} does not say {says:?}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

fn items(prefix: &str, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| serde_json::json!({"key": format!("{prefix}{i}"), "value": "v"}))
        .collect()
}

fn metric_items(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| serde_json::json!({"key": "m", "value": i as f64, "step": i}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_rest_keep_mlflow_batch_limits_write_once_params_and_replicate() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let api = client(&cluster, 0);
    let created: RunJson = api
        .call(
            reqwest::Method::POST,
            "/api/v1/runs",
            &serde_json::json!({
                "name": "sweep-1",
                "experiment": "manual",
                "params": [{"key": "lr", "value": "0.1"}],
                "tags": [{"key": "team", "value": "a"}],
            }),
        )
        .await
        .expect("create");
    assert_eq!(created.status, "running");
    assert_eq!(created.params["lr"], "0.1");
    let batch = format!("/api/v1/runs/{}/log-batch", created.id);
    // MLflow's documented limits: 1000 metrics, 100 params, 100 tags, 1000 in all
    post(
        &api,
        &batch,
        serde_json::json!({"metrics": metric_items(1000)}),
    )
    .await
    .expect("1000 metrics");
    refused(
        post(
            &api,
            &batch,
            serde_json::json!({"metrics": metric_items(1001)}),
        )
        .await,
        "at most 1000 metrics",
    );
    refused(
        post(&api, &batch, serde_json::json!({"params": items("p", 101)})).await,
        "at most 100 params",
    );
    refused(
        post(&api, &batch, serde_json::json!({"tags": items("t", 101)})).await,
        "at most 100 tags",
    );
    refused(
        post(
            &api,
            &batch,
            serde_json::json!({"metrics": metric_items(900), "params": items("p", 50), "tags": items("t", 51)}),
        )
        .await,
        "1000 metrics, params and tags in total",
    );
    refused(
        post(
            &api,
            &batch,
            serde_json::json!({"params": [{"key": "k".repeat(251), "value": "v"}]}),
        )
        .await,
        "more than the limit of 250",
    );
    refused(
        post(
            &api,
            &batch,
            serde_json::json!({"params": [{"key": "long", "value": "v".repeat(6001)}]}),
        )
        .await,
        "more than the limit of 6000",
    );
    // params are write-once: the same value is fine, another is refused
    post(
        &api,
        &batch,
        serde_json::json!({"params": [{"key": "lr", "value": "0.1"}, {"key": "epochs", "value": "5"}]}),
    )
    .await
    .expect("same value");
    refused(
        post(
            &api,
            &batch,
            serde_json::json!({"params": [{"key": "lr", "value": "0.2"}]}),
        )
        .await,
        "write-once",
    );
    // metrics only grow; tags take their last value
    post(
        &api,
        &batch,
        serde_json::json!({"metrics": [{"key": "acc", "value": 0.5, "step": 0}, {"key": "acc", "value": 0.7, "step": 1}],
                           "tags": [{"key": "team", "value": "b"}]}),
    )
    .await
    .expect("log");
    let ended: RunJson = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{}/end", created.id),
            &serde_json::json!({"status": "FINISHED"}),
        )
        .await
        .expect("end");
    assert_eq!(ended.status, "succeeded");
    match api
        .call::<_, serde_json::Value>(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{}/end", created.id),
            &serde_json::json!({"status": "failed"}),
        )
        .await
    {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("a second end is refused: {other:?}"),
    }
    // node 1 holds the same run
    let there = ended_run(&cluster, 1, &created.id).await;
    assert_eq!(there.status, "succeeded");
    assert_eq!(there.params["lr"], "0.1");
    assert_eq!(there.params["epochs"], "5");
    assert_eq!(there.tags["team"], "b");
    assert_eq!(there.metrics["acc"], 0.7);
    assert_eq!(points(&there, "acc"), vec![(0, 0.5), (1, 0.7)]);
    assert_eq!(
        points(&there, "m").len(),
        1000,
        "the refused batches wrote nothing"
    );
    // a run nobody knows
    match client(&cluster, 1)
        .get::<RunJson>(&format!("/api/v1/runs/{}", JobId::new(1, 1)))
        .await
    {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("unknown run: {other:?}"),
    }
    cluster.stop().await;
}
