//! The mesh with whole nodes: membership, failure detection, the cluster
//! secret, and robustness against garbage on every listener.

use std::io::Write;
use std::time::{Duration, Instant};
use weft_node::api::client::ApiClient;

use weft_protocol::Request;
use weft_tests::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_list_each_other_and_forget_a_stopped_one() {
    let t = Instant::now();
    let mut cluster = Cluster::start(5, ClusterOptions::default())
        .await
        .expect("cluster");
    let converged = t.elapsed();
    assert!(converged < Duration::from_secs(10), "took {converged:?}");
    // the REST API says the same
    let peers: Vec<serde_json::Value> = ApiClient::from_home(cluster.node(2).home())
        .expect("api client")
        .get("/api/v1/peers")
        .await
        .expect("get");
    assert_eq!(peers.len(), 4);
    for p in &peers {
        assert!(p["advert"]["cpu_cores"].as_u64().unwrap_or(0) >= 1);
        assert_eq!(p["advert"]["executors"]["wasm"], true);
    }

    let gone = cluster.node(4).peer_id().to_string();
    cluster.stop_node(4).await;
    let waited = cluster
        .wait_until(Duration::from_secs(5), "node 4 is gone everywhere", |c| {
            let gone = gone.clone();
            async move {
                for (i, _) in c.running() {
                    if c.peers_of(i).await.contains(&gone) {
                        return false;
                    }
                }
                true
            }
        })
        .await
        .expect("stopped node forgotten");
    // TTL is 1 s; allow for one advert interval and scheduling
    assert!(waited < Duration::from_millis(2500), "took {waited:?}");
    eprintln!("converged in {converged:?}; stopped node forgotten in {waited:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_never_listed_nor_answered() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let outsider = cluster
        .add_node(|c| c.network.cluster_secret = Some(weft_node::config::new_secret()))
        .await
        .expect("outsider starts");
    let outsider_id = cluster.node(outsider).peer_id().to_string();
    // three TTLs: long enough for adverts and retries
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        assert!(
            !cluster.peers_of(i).await.contains(&outsider_id),
            "node {i} lists the outsider"
        );
    }
    assert!(
        cluster.peers_of(outsider).await.is_empty(),
        "the outsider lists members"
    );
    let target = cluster.node(0).net().local_peer_id();
    let answer = cluster
        .node(outsider)
        .net()
        .request(target, Request::Ping { nonce: 7 })
        .await;
    assert!(answer.is_err(), "outsider got an answer: {answer:?}");
    // members still answer each other
    let pong = cluster
        .node(1)
        .net()
        .request(target, Request::Ping { nonce: 8 })
        .await
        .expect("member ping");
    assert_eq!(pong, weft_protocol::Response::Pong { nonce: 8 });
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_listener_leaves_the_node_up() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let node = cluster.node(0);
    let addrs = node.net().listen_addrs().await.expect("addrs");
    let mut noise = vec![0u8; 64 * 1024];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    for a in &addrs {
        let s = a.to_string();
        let port: u16 = s
            .rsplit('/')
            .find_map(|p| p.parse().ok())
            .expect("port in multiaddr");
        if s.contains("/tcp/") {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
            let _ = c.write_all(&noise);
        } else if s.contains("/udp/") {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            for chunk in noise.chunks(1200) {
                let _ = u.send_to(chunk, ("127.0.0.1", port));
            }
        }
    }
    // raw garbage at the HTTP API, then an oversized header
    let mut c = std::net::TcpStream::connect(node.api_addr()).expect("api connect");
    let _ = c.write_all(&noise);
    let mut c = std::net::TcpStream::connect(node.api_addr()).expect("api connect");
    let _ = c.write_all(b"GET /api/v1/node HTTP/1.1\r\nX: ");
    let _ = c.write_all(&vec![b'a'; 2 << 20]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // still serving its API and its peer
    let resp = ApiClient::from_home(node.home())
        .expect("api client")
        .request(reqwest::Method::GET, "/api/v1/node")
        .send()
        .await
        .expect("api still up");
    assert!(resp.status().is_success());
    let pong = cluster
        .node(1)
        .net()
        .request(node.net().local_peer_id(), Request::Ping { nonce: 1 })
        .await
        .expect("still answers its peer");
    assert_eq!(pong, weft_protocol::Response::Pong { nonce: 1 });
    assert!(
        cluster
            .peers_of(1)
            .await
            .contains(&node.peer_id().to_string())
    );
    cluster.stop().await;
}

/// Nodes that dial each other at the same moment keep one of the two
/// connections; the proofs sent on the other must not be lost, or each side
/// holds the other's requests until its auth deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_answers_at_once_after_the_mesh_forms() {
    for round in 0..3 {
        let cluster = Cluster::start(5, ClusterOptions::default())
            .await
            .expect("cluster");
        for (i, a) in cluster.running() {
            for (j, b) in cluster.running() {
                if i == j {
                    continue;
                }
                let answer = tokio::time::timeout(
                    Duration::from_secs(2),
                    a.net()
                        .request(b.net().local_peer_id(), Request::Ping { nonce: 9 }),
                )
                .await;
                assert!(
                    matches!(answer, Ok(Ok(weft_protocol::Response::Pong { nonce: 9 }))),
                    "round {round}: node {i} asking node {j}: {answer:?}"
                );
            }
        }
        cluster.stop().await;
    }
}
