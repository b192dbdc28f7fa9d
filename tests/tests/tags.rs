//! Tags resolve the same on every node: gossip, concurrent writers, and a
//! node that was away.

use std::time::{Duration, Instant};
use weft_node::api::client::ApiClient;

use weft_node::store::records::BlobKind;
use weft_protocol::{Hash, TagName};
use weft_tests::{Cluster, ClusterOptions};

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

async fn set_via_api(cluster: &Cluster, i: usize, name: &str, id: &Hash) {
    let resp = ApiClient::from_home(cluster.node(i).home())
        .expect("api client")
        .request(reqwest::Method::PUT, &format!("/api/v1/tags/{name}"))
        .json(&serde_json::json!({ "ref": id.to_string() }))
        .send()
        .await
        .expect("put tag");
    assert!(
        resp.status().is_success(),
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

fn add(cluster: &Cluster, i: usize, bytes: &[u8]) -> Hash {
    cluster
        .node(i)
        .store()
        .add_bytes(bytes, BlobKind::Raw)
        .expect("add")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_set_on_one_node_resolves_on_another_within_seconds() {
    let cluster = Cluster::start(5, ClusterOptions::default())
        .await
        .expect("cluster");
    let id = add(&cluster, 1, b"dataset v1");
    let t = Instant::now();
    set_via_api(&cluster, 1, "datasets/x:v1", &id).await;
    let waited =
        cluster
            .wait_until(
                Duration::from_secs(5),
                "node 4 resolves the tag",
                |c| async move {
                    c.node(4).store().tag(&tag("datasets/x:v1")).ok().flatten() == Some(id)
                },
            )
            .await
            .expect("replicated");
    eprintln!(
        "tag resolved on node 4 after {waited:?} ({:?} since the PUT)",
        t.elapsed()
    );
    // and through node 4's API
    let v: serde_json::Value = ApiClient::from_home(cluster.node(4).home())
        .expect("api client")
        .get("/api/v1/tags/datasets/x:v1")
        .await
        .expect("get");
    assert_eq!(v["id"], id.to_string());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_converge_on_one_winner_with_both_in_history() {
    let cluster = Cluster::start(4, ClusterOptions::default())
        .await
        .expect("cluster");
    let a = add(&cluster, 0, b"from node 0");
    let b = add(&cluster, 1, b"from node 1");
    let name = tag("models/m:prod");
    tokio::join!(
        set_via_api(&cluster, 0, name.as_str(), &a),
        set_via_api(&cluster, 1, name.as_str(), &b),
    );
    cluster
        .wait_until(
            Duration::from_secs(5),
            "every node has both versions",
            |c| {
                let name = name.clone();
                async move {
                    c.running().all(|(_, n)| {
                        n.store()
                            .tag_history(&name)
                            .map(|h| h.len() == 2)
                            .unwrap_or(false)
                    })
                }
            },
        )
        .await
        .expect("histories converge");
    let winners: Vec<Option<Hash>> = cluster
        .running()
        .map(|(_, n)| n.store().tag(&name).expect("tag"))
        .collect();
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
    assert!(winners[0] == Some(a) || winners[0] == Some(b));
    // the winner is the last writer by (clock, node id), the same rule everywhere
    let history = cluster.node(2).store().tag_history(&name).expect("history");
    let last = history
        .iter()
        .max_by(|x, y| x.lww_cmp(y))
        .expect("a version");
    assert_eq!(last.target, winners[0]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_during_a_change_learns_it_after_restart() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let v1 = add(&cluster, 0, b"v1");
    set_via_api(&cluster, 0, "d/x:latest", &v1).await;
    cluster
        .wait_until(Duration::from_secs(5), "node 2 has v1", |c| async move {
            c.node(2).store().tag(&tag("d/x:latest")).ok().flatten() == Some(v1)
        })
        .await
        .expect("v1 replicated");
    cluster.stop_node(2).await;
    let v2 = add(&cluster, 0, b"v2");
    set_via_api(&cluster, 0, "d/x:latest", &v2).await;
    set_via_api(&cluster, 1, "d/y:v1", &v2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart_node(2).await.expect("restart");
    let waited = cluster
        .wait_until(
            Duration::from_secs(10),
            "node 2 caught up",
            |c| async move {
                let s = c.node(2).store();
                s.tag(&tag("d/x:latest")).ok().flatten() == Some(v2)
                    && s.tag(&tag("d/y:v1")).ok().flatten() == Some(v2)
            },
        )
        .await
        .expect("caught up after restart");
    eprintln!("restarted node caught up in {waited:?}");
    assert_eq!(
        cluster
            .node(2)
            .store()
            .tag_history(&tag("d/x:latest"))
            .expect("history")
            .len(),
        2
    );
    cluster.stop().await;
}
