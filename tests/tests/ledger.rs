//! The ledger is held by every node: gossip, the numbering barrier, and a
//! node that was away.

use std::time::Duration;

use weft_protocol::Hash;
use weft_protocol::ledger::{ModelName, ModelSelector};
use weft_tests::{Cluster, ClusterOptions};

fn iris() -> ModelName {
    ModelName::new("iris").expect("name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_get_distinct_numbers_every_node_agrees_on() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let (a, b) = tokio::join!(
        cluster
            .node(0)
            .ledger()
            .register_model(iris(), Hash::of(b"a"), None, None),
        cluster
            .node(1)
            .ledger()
            .register_model(iris(), Hash::of(b"b"), None, None),
    );
    let (a, b) = (a.expect("register on 0"), b.expect("register on 1"));
    assert!(a.unconfirmed.is_empty() && b.unconfirmed.is_empty());
    assert_ne!(a.version, b.version, "two registrations, two numbers");
    let mut numbers = [a.version, b.version];
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    // the numbers the registrants returned are what every node shows, at once
    for (i, node) in cluster.running() {
        let versions = node.store().model_versions(&iris()).expect("versions");
        let by_artifact = |h: Hash| versions.iter().find(|v| v.artifact == h).map(|v| v.version);
        assert_eq!(by_artifact(Hash::of(b"a")), Some(a.version), "node {i}");
        assert_eq!(by_artifact(Hash::of(b"b")), Some(b.version), "node {i}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_moves_reach_every_node_and_a_node_that_was_away_catches_up() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let ledger = cluster.node(0).ledger().clone();
    ledger
        .register_model(iris(), Hash::of(b"v1"), None, None)
        .await
        .expect("v1");
    let champion = weft_protocol::ledger::AliasName::new("champion").expect("alias");
    ledger
        .move_alias(iris(), champion.clone(), Some(1), None)
        .await
        .expect("alias");
    let sel = ModelSelector::Alias(champion.clone());
    cluster
        .wait_until(
            Duration::from_secs(5),
            "every node resolves the alias",
            |c| {
                let sel = sel.clone();
                async move {
                    c.running().all(|(_, n)| {
                        n.store().resolve_model(&iris(), &sel).ok() == Some(Hash::of(b"v1"))
                    })
                }
            },
        )
        .await
        .expect("alias replicated");
    // node 2 is away while a version is added and the alias moves
    let cluster_peer_id = cluster.node(2).peer_id().to_string();
    cluster.stop_node(2).await;
    let v2 = ledger
        .register_model(iris(), Hash::of(b"v2"), None, None)
        .await
        .expect("v2 with node 2 away");
    assert_eq!(v2.version, 2);
    // node 2 may still be listed (its advert has not expired): it is named
    let away = cluster_peer_id.clone();
    assert!(
        v2.unconfirmed.is_empty() || v2.unconfirmed.iter().any(|(p, _)| *p == away),
        "{:?}",
        v2.unconfirmed
    );
    ledger
        .move_alias(iris(), champion.clone(), Some(2), None)
        .await
        .expect("alias");
    cluster.restart_node(2).await.expect("restart");
    cluster
        .wait_until(Duration::from_secs(10), "node 2 catches up", |c| {
            let sel = sel.clone();
            async move { c.node(2).store().resolve_model(&iris(), &sel).ok() == Some(Hash::of(b"v2")) }
        })
        .await
        .expect("synced after restart");
    let history = cluster
        .node(2)
        .store()
        .alias_history(&iris(), &champion)
        .expect("history");
    assert_eq!(
        history
            .iter()
            .map(|m| (m.from, m.version))
            .collect::<Vec<_>>(),
        [(None, Some(1)), (Some(1), Some(2))]
    );
    cluster.stop().await;
}
