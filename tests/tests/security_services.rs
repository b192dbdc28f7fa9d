//! Attacks on services: a member asking for replicas of services or
//! revisions that do not exist, or for more than a rollout can need; a
//! member advertising replicas it does not run; malformed requests on the
//! data plane's service streams; and what anyone who reaches an ingress can
//! send (host names and paths that name no service, the node's own API,
//! oversized bodies, headers that are not text).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_node::service::proxy::{self, ProxyError};
use weft_protocol::service::{
    Refusal, ReplicaId, ReplicaInfo, ReplicaState, ServiceName, ServiceRequestHead,
};
use weft_protocol::{ErrorCode, NodeAdvert, Request, Response};
use weft_tests::rogue::Rogue;
use weft_tests::{Cluster, ClusterOptions, everywhere, example_wasm};

fn spec(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: weft/v1
kind: Service
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  task: {{wasm: {{module: test/httptest:v1}}}}
  health: {{http: /healthz, interval: 200ms, timeout: 1s, failures: 2}}
"
    )
}

async fn cluster_with(name: &str, replicas: u32) -> Cluster {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = example_wasm("httptest.component").expect("example component");
    everywhere(&cluster, &wasm, "test/httptest:v1");
    cluster
        .node(0)
        .services()
        .apply(&spec(name, replicas))
        .await
        .expect("apply");
    let start = Instant::now();
    loop {
        let eps = cluster
            .node(1)
            .services()
            .endpoints(name)
            .unwrap_or_default();
        if eps.len() == replicas as usize && eps.iter().all(|e| e.is_ready()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not ready: {eps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
}

fn ingress(cluster: &Cluster, i: usize) -> SocketAddr {
    cluster.node(i).ingress_addr().expect("the ingress listens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_start_replicas_that_no_spec_asks_for() {
    let cluster = cluster_with("web", 1).await;
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue");
    let node0 = cluster.node(0).peer_id().parse().expect("peer id");
    let name: ServiceName = "web".parse().expect("name");
    let ask = |service: &str, revision: u32| Request::StartReplica {
        service: service.parse().expect("name"),
        revision,
        replica: ReplicaId(rand::random()),
    };
    // a service that does not exist, a revision that does not exist
    for (service, revision) in [("ghost", 1), ("web", 7)] {
        match rogue.request(node0, ask(service, revision)).await {
            Ok(Response::Error {
                code: ErrorCode::NotFound,
                ..
            }) => {}
            other => panic!("{service} revision {revision}: {other:?}"),
        }
    }
    // more replicas of a real one than a rollout can need
    let mut refused = 0;
    for _ in 0..10 {
        match rogue.request(node0, ask("web", 1)).await {
            Ok(Response::Ack) => {}
            Ok(Response::Error {
                code: ErrorCode::Busy,
                ..
            }) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    let here = cluster.node(0).services().local_replicas().len();
    assert!(refused >= 7, "only {refused} of 10 extra starts refused");
    assert!(
        here <= 2,
        "{here} replicas of a 1-replica service on one node"
    );
    // a stop naming another service's replica changes nothing
    let victim = cluster.node(0).services().local_replicas()[0];
    let _ = rogue
        .request(
            node0,
            Request::StopReplica {
                service: "other".parse().expect("name"),
                replica: victim,
                drain_ms: 0,
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cluster
            .node(0)
            .services()
            .local_replicas()
            .contains(&victim),
        "a stop for the wrong service stopped the replica"
    );
    // the owner brings the count back to what the spec says
    let start = Instant::now();
    loop {
        let eps = cluster
            .node(1)
            .services()
            .endpoints(name.as_str())
            .unwrap_or_default();
        if eps.len() == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "extras not stopped: {eps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_advertising_replicas_it_does_not_run_costs_no_request() {
    let cluster = cluster_with("web", 1).await;
    let fake = |i: u64| ReplicaInfo {
        id: ReplicaId(0xdead_0000 + i),
        service: "web".parse().expect("name"),
        revision: 1,
        state: ReplicaState::Ready,
        inflight: 0,
        ready_since_ms: Some(1),
        note: None,
    };
    let advert = NodeAdvert {
        replicas: Some((0..8).map(fake).collect()),
        // somewhere nothing answers
        data_plane_addr: Some("127.0.0.1:9".into()),
        ..NodeAdvert::default()
    };
    let rogue = Rogue::join_seen(&cluster, advert).await.expect("rogue");
    let rogue_id = rogue.peer_id().to_string();
    // the ingress sees the made-up replicas as ready
    let start = Instant::now();
    loop {
        let eps = cluster
            .node(1)
            .services()
            .endpoints("web")
            .unwrap_or_default();
        if eps
            .iter()
            .filter(|e| e.node == rogue_id && e.is_ready())
            .count()
            == 8
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fakes not listed: {eps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = reqwest::Client::new();
    let addr = ingress(&cluster, 1);
    let started = Instant::now();
    for _ in 0..40 {
        let r = c
            .get(format!("http://{addr}/s/web/hello"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    }
    println!(
        "40 GETs beside 8 made-up replicas in {} ms",
        started.elapsed().as_millis()
    );
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_service_streams_are_refused_and_the_replica_serves_on() {
    let cluster = cluster_with("web", 1).await;
    // find the node with the replica and send to it from the other
    let (holder, other) = if cluster.node(0).services().local_replicas().is_empty() {
        (1, 0)
    } else {
        (0, 1)
    };
    let replica = cluster.node(holder).services().local_replicas()[0];
    let peer = cluster.node(holder).peer_id().parse().expect("peer id");
    let addr = cluster.node(holder).transfer().local_addr();
    let transfer = cluster.node(other).transfer();
    let head =
        |replica: ReplicaId, method: &str, headers: Vec<(String, String)>| ServiceRequestHead {
            service: "web".parse().expect("name"),
            replica,
            method: method.to_string(),
            uri: "/hello".into(),
            headers,
        };
    // a replica that is not there
    match proxy::send(
        transfer,
        peer,
        addr,
        &head(ReplicaId(1), "GET", vec![]),
        Default::default(),
    )
    .await
    {
        Err(ProxyError::Refused {
            reason: Refusal::NotHere,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // a method that is not one
    match proxy::send(
        transfer,
        peer,
        addr,
        &head(replica, "GET /x", vec![]),
        Default::default(),
    )
    .await
    {
        Err(ProxyError::Refused {
            reason: Refusal::BadRequest,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // more headers than the bound
    let many = (0..200)
        .map(|i| (format!("x-{i}"), "v".to_string()))
        .collect();
    match proxy::send(
        transfer,
        peer,
        addr,
        &head(replica, "GET", many),
        Default::default(),
    )
    .await
    {
        Err(ProxyError::Refused {
            reason: Refusal::BadRequest,
            message,
        }) => assert!(message.contains("headers"), "{message}"),
        other => panic!("{other:?}"),
    }
    // and a well-formed one is answered
    let ok = proxy::send(
        transfer,
        peer,
        addr,
        &head(replica, "GET", vec![]),
        Default::default(),
    )
    .await
    .expect("answered");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.body().as_ref(), b"hello from world");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ingress_routes_only_to_services_and_bounds_what_it_takes() {
    let cluster = cluster_with("web", 1).await;
    let addr = ingress(&cluster, 0);
    let c = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    // host names that are not NAME.<domain>, paths that name no service
    for host in [
        "web.weft.localhost.example.com",
        "..weft.localhost",
        "a.b.weft.localhost",
        "WEB_.weft.localhost",
        "localhost",
    ] {
        let r = c
            .get(format!("http://{addr}/hello"))
            .header("host", host)
            .send()
            .await
            .expect("request");
        assert_eq!(status(r), 404, "{host}");
    }
    for path in [
        "/s/../api/v1/node",
        "/s/",
        "/s/Web/hello",
        "/api/v1/node",
        "/metrics",
    ] {
        let r = c
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(status(r), 404, "{path}");
    }
    // the upper-case host form of a real service still finds it
    let r = c
        .get(format!("http://{addr}/hello"))
        .header("host", "WEB.Weft.Localhost")
        .send()
        .await
        .expect("request");
    assert_eq!(status(r), 200);
    // a body over the limit
    let big = vec![b'x'; (16 << 20) + 1];
    let r = c
        .post(format!("http://{addr}/s/web/echo"))
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(status(r), 413);
    // a header value that is not text
    let r = c
        .get(format!("http://{addr}/s/web/hello"))
        .header(
            "x-bin",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").expect("value"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(status(r), 400);
    // and it still serves
    let r = c
        .get(format!("http://{addr}/s/web/hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(status(r), 200);
    cluster.stop().await;
}
