//! Services on a cluster: replicas behind every node's ingress, a lost
//! node's replica replaced without a failed GET, unhealthy replicas taken
//! out and replaced, rolling updates under load with no failed request, an
//! automatic revert of a revision that never becomes healthy, rollback to a
//! revision, scaling, and a function scaled from zero and back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_node::service::Endpoint;
use weft_tests::{Cluster, ClusterOptions, everywhere, example_wasm};

/// How long a service may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

async fn cluster(n: usize) -> Cluster {
    let cluster = Cluster::start(n, ClusterOptions::default())
        .await
        .expect("cluster");
    let wasm = example_wasm("httptest.component").expect("example component");
    everywhere(&cluster, &wasm, "test/httptest:v1");
    cluster
}

fn spec(name: &str, replicas: u32, env: &str, extra: &str) -> String {
    format!(
        "apiVersion: weft/v1
kind: Service
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  task: {{wasm: {{module: test/httptest:v1, env: {{{env}}}}}}}
  health: {{http: /healthz, interval: 200ms, timeout: 2s, failures: 3}}
{extra}"
    )
}

fn ingress(cluster: &Cluster, i: usize) -> SocketAddr {
    cluster.node(i).ingress_addr().expect("the ingress listens")
}

async fn apply(cluster: &Cluster, i: usize, yaml: &str) -> u32 {
    match cluster.node(i).services().apply(yaml).await {
        Ok(a) => a.revision,
        Err(e) => panic!("apply failed: {e}\n{yaml}"),
    }
}

fn endpoints(cluster: &Cluster, i: usize, name: &str) -> Vec<Endpoint> {
    cluster
        .node(i)
        .services()
        .endpoints(name)
        .unwrap_or_default()
}

/// Waits until node `i` sees exactly `n` replicas of `name`, all ready and
/// at `revision`.
async fn wait_ready(cluster: &Cluster, i: usize, name: &str, n: usize, revision: u32) -> Duration {
    let start = Instant::now();
    loop {
        let eps = endpoints(cluster, i, name);
        if eps.len() == n && eps.iter().all(|e| e.is_ready() && e.revision == revision) {
            return start.elapsed();
        }
        if start.elapsed() > READY_WITHIN {
            panic!("{name}: not {n} ready replicas at revision {revision}: {eps:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn get(c: &reqwest::Client, addr: SocketAddr, name: &str, path: &str) -> (u16, String) {
    match c.get(format!("http://{addr}/s/{name}{path}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// GETs `path` through every node's ingress in a loop until stopped;
/// counts answers and failures (anything but 200) and keeps the bodies seen.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    bodies: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>, name: &str, path: &str, workers: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            bodies: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for w in 0..workers {
            let addr = addrs[w % addrs.len()];
            let (stop, ok, failed, bodies) = (
                load.stop.clone(),
                load.ok.clone(),
                load.failed.clone(),
                load.bodies.clone(),
            );
            let (name, path) = (name.to_string(), path.to_string());
            tasks.push(tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get(&c, addr, &name, &path).await;
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        bodies.lock().expect("lock").insert(body);
                    } else {
                        failed
                            .lock()
                            .expect("lock")
                            .push(format!("{status} via {addr}: {body}"));
                    }
                }
            }));
        }
        Load { tasks, ..load }
    }

    async fn finish(self) -> (u64, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().expect("lock").clone();
        let bodies = self.bodies.lock().expect("lock").iter().cloned().collect();
        (self.ok.load(Ordering::Relaxed), failed, bodies)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_answer_through_every_node_s_ingress() {
    let cluster = cluster(3).await;
    let rev = apply(&cluster, 0, &spec("web", 3, "NAME: mesh", "")).await;
    assert_eq!(rev, 1);
    wait_ready(&cluster, 1, "web", 3, 1).await;
    let eps = endpoints(&cluster, 2, "web");
    let nodes: std::collections::BTreeSet<&str> = eps.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "one replica per node while each can take one: {eps:#?}"
    );
    let c = client();
    for i in 0..3 {
        let addr = ingress(&cluster, i);
        for _ in 0..6 {
            assert_eq!(
                get(&c, addr, "web", "/hello").await,
                (200, "hello from mesh".into())
            );
        }
        // by host name too
        let r = c
            .post(format!("http://{addr}/echo"))
            .header("host", format!("web.weft.localhost:{}", addr.port()))
            .body("round trip")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.expect("body"), "round trip");
    }
    // what the replicas print is gathered from their nodes
    for i in 0..12 {
        let (status, _) = get(
            &c,
            ingress(&cluster, i % 3),
            "web",
            &format!("/log?line=mark-{i}"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let logs = cluster.node(0).services().logs("web").await.expect("logs");
    assert_eq!(logs.len(), 3, "one log per replica: {logs:#?}");
    let all: String = logs.iter().map(|l| l.logs.as_str()).collect();
    for i in 0..12 {
        assert!(
            all.contains(&format!("mark-{i}")),
            "mark-{i} missing: {all}"
        );
    }
    let with_marks = logs.iter().filter(|l| l.logs.contains("mark-")).count();
    assert!(with_marks >= 2, "the logs of one node only: {logs:#?}");
    // unknown services are named
    let (status, body) = get(&c, ingress(&cluster, 0), "nope", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nope"), "{body}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_s_replica_is_replaced_and_no_get_fails() {
    let mut cluster = cluster(4).await;
    apply(&cluster, 0, &spec("web", 3, "NAME: mesh", "")).await;
    wait_ready(&cluster, 0, "web", 3, 1).await;
    // a node with a replica that is not node 0 (whose ingress the client uses)
    let eps = endpoints(&cluster, 0, "web");
    let me = cluster.node(0).peer_id().to_string();
    let victim_id = eps
        .iter()
        .map(|e| e.node.clone())
        .find(|n| *n != me)
        .expect("a replica on another node");
    let victim = (1..4)
        .find(|i| cluster.node(*i).peer_id() == victim_id)
        .expect("the victim's index");
    let load = Load::start(vec![ingress(&cluster, 0)], "web", "/hello", 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    cluster.stop_node(victim).await;
    // replaced: three ready again, none on the lost node
    let replaced = loop {
        let eps = endpoints(&cluster, 0, "web");
        if eps.len() == 3 && eps.iter().all(|e| e.is_ready() && e.node != victim_id) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < READY_WITHIN, "not replaced: {eps:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, _) = load.finish().await;
    println!(
        "replica replaced in {} ms; {ok} GETs, {} failed",
        replaced.as_millis(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(ok > 10, "the load ran: {ok}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_replica_gets_no_traffic_and_is_replaced() {
    let cluster = cluster(3).await;
    apply(&cluster, 0, &spec("web", 3, "NAME: mesh", "")).await;
    wait_ready(&cluster, 0, "web", 3, 1).await;
    // one replica's health checks start failing (its node's probe fails)
    let sick = cluster.node(1).services().local_replicas()[0];
    cluster.node(1).services().fail_health(sick);
    let load = Load::start(
        (0..3).map(|i| ingress(&cluster, i)).collect(),
        "web",
        "/hello",
        3,
    );
    let start = Instant::now();
    loop {
        let eps = endpoints(&cluster, 0, "web");
        let gone = eps.iter().all(|e| e.replica != sick.to_string());
        if gone && eps.len() == 3 && eps.iter().all(Endpoint::is_ready) {
            break;
        }
        assert!(start.elapsed() < READY_WITHIN, "not replaced: {eps:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, failed, _) = load.finish().await;
    println!(
        "unhealthy replica replaced in {} ms",
        start.elapsed().as_millis()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(ok > 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_under_load_fails_no_request() {
    let cluster = cluster(3).await;
    let update = "  update: {maxSurge: 1, maxUnavailable: 0, minHealthy: 300ms}\n";
    apply(&cluster, 0, &spec("web", 3, "VERSION: one", update)).await;
    wait_ready(&cluster, 0, "web", 3, 1).await;
    let load = Load::start(
        (0..3).map(|i| ingress(&cluster, i)).collect(),
        "web",
        "/version",
        6,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rev = apply(&cluster, 1, &spec("web", 3, "VERSION: two", update)).await;
    assert_eq!(rev, 2);
    let took = wait_ready(&cluster, 0, "web", 3, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, bodies) = load.finish().await;
    println!(
        "rolled out in {} ms under load: {ok} requests, {} failed",
        took.as_millis(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert_eq!(bodies, vec!["one".to_string(), "two".to_string()]);
    let eps = endpoints(&cluster, 0, "web");
    let nodes: std::collections::BTreeSet<&str> = eps.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "the new revision is spread too: {eps:#?}");
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            get(&c, ingress(&cluster, 2), "web", "/version").await,
            (200, "two".into())
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_that_never_becomes_healthy_is_reverted() {
    let cluster = cluster(3).await;
    let update =
        "  update: {maxSurge: 1, maxUnavailable: 0, progressDeadline: 4s, autoRevert: true}\n";
    apply(&cluster, 0, &spec("web", 2, "VERSION: good", update)).await;
    wait_ready(&cluster, 0, "web", 2, 1).await;
    let load = Load::start(vec![ingress(&cluster, 2)], "web", "/version", 2);
    let rev = apply(
        &cluster,
        0,
        &spec("web", 2, "VERSION: bad, UNHEALTHY: \"1\"", update),
    )
    .await;
    assert_eq!(rev, 2);
    // the owner writes a rollback to 1, with its reason
    let start = Instant::now();
    let history = loop {
        let h = cluster.node(1).services().history("web").expect("history");
        if h.last().is_some_and(|x| x.change == "rollback") {
            break h;
        }
        assert!(start.elapsed() < READY_WITHIN, "not reverted: {h:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last = history.last().expect("an entry");
    assert_eq!(last.revision, Some(1));
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.contains("did not become healthy")),
        "{last:?}"
    );
    wait_ready(&cluster, 0, "web", 2, 1).await;
    let (ok, failed, bodies) = load.finish().await;
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert_eq!(
        bodies,
        vec!["good".to_string()],
        "the bad revision got no traffic"
    );
    assert!(ok > 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_to_a_revision_and_scale_up_and_down() {
    let cluster = cluster(3).await;
    for (n, v) in [(1, "one"), (2, "two"), (3, "three")] {
        let rev = apply(&cluster, 0, &spec("web", 2, &format!("VERSION: {v}"), "")).await;
        assert_eq!(rev, n);
    }
    // applying the same spec again changes nothing
    let again = cluster
        .node(1)
        .services()
        .apply(&spec("web", 2, "VERSION: three", ""))
        .await
        .expect("apply");
    assert!(!again.changed);
    assert_eq!(again.revision, 3);
    wait_ready(&cluster, 2, "web", 2, 3).await;
    let to = cluster
        .node(2)
        .services()
        .rollback("web", Some(1))
        .await
        .expect("rollback");
    assert_eq!(to, 1);
    wait_ready(&cluster, 0, "web", 2, 1).await;
    let c = client();
    assert_eq!(
        get(&c, ingress(&cluster, 1), "web", "/version").await,
        (200, "one".into())
    );
    cluster
        .node(1)
        .services()
        .scale("web", 5)
        .await
        .expect("scale up");
    wait_ready(&cluster, 0, "web", 5, 1).await;
    let eps = endpoints(&cluster, 0, "web");
    let nodes: std::collections::BTreeSet<&str> = eps.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "spread over every node: {eps:#?}");
    cluster
        .node(0)
        .services()
        .scale("web", 1)
        .await
        .expect("scale down");
    wait_ready(&cluster, 2, "web", 1, 1).await;
    cluster.node(2).services().remove("web").await.expect("rm");
    let start = Instant::now();
    while !endpoints(&cluster, 0, "web").is_empty() {
        assert!(start.elapsed() < READY_WITHIN, "replicas left after rm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = get(&c, ingress(&cluster, 0), "web", "/version").await;
    assert_eq!(status, 404);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_function_scaled_to_zero_starts_on_a_request_and_stops_when_idle() {
    let cluster = cluster(2).await;
    let yaml = "apiVersion: weft/v1
kind: Service
metadata: {name: fn}
spec:
  replicas: auto
  autoscale: {min: 0, max: 3, targetConcurrency: 4, idle: 2s}
  task: {wasm: {module: test/httptest:v1}}
";
    apply(&cluster, 0, yaml).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        endpoints(&cluster, 0, "fn").is_empty(),
        "none run while idle"
    );
    let c = client();
    let start = Instant::now();
    assert_eq!(
        get(&c, ingress(&cluster, 1), "fn", "/hello").await,
        (200, "hello from world".into())
    );
    println!(
        "first request (scale from zero) in {} ms",
        start.elapsed().as_millis()
    );
    let eps = endpoints(&cluster, 1, "fn");
    assert_eq!(eps.len(), 1, "{eps:#?}");
    // more requests in flight than one replica's target: more replicas, on
    // more than one node, never above max
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..24 {
        let c = c.clone();
        let addr = ingress(&cluster, i % 2);
        burst.spawn(async move { get(&c, addr, "fn", "/sleep?ms=700").await.0 });
    }
    let mut most = 0;
    let mut nodes = std::collections::BTreeSet::new();
    while !burst.is_empty() {
        tokio::select! {
            done = burst.join_next() => {
                assert_eq!(done.expect("a request").expect("task"), 200);
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let eps = endpoints(&cluster, 0, "fn");
                most = most.max(eps.len());
                nodes.extend(eps.into_iter().map(|e| e.node));
            }
        }
    }
    println!(
        "burst of 24: up to {most} replicas on {} nodes",
        nodes.len()
    );
    assert!(
        (2..=3).contains(&most),
        "{most} replicas for 24 requests, target 4, max 3"
    );
    assert_eq!(nodes.len(), 2, "scaled out over both nodes");
    // idle: stopped
    let start = Instant::now();
    loop {
        if endpoints(&cluster, 0, "fn").is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running when idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // and back on the next request
    assert_eq!(
        get(&c, ingress(&cluster, 0), "fn", "/hello").await,
        (200, "hello from world".into())
    );
    cluster.stop().await;
}

/// Whether any socket of the host's network namespace listens on `port`.
fn host_listens_on(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // local address, state 0A = LISTEN
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_service_is_reachable_only_through_the_ingress() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: containers need root (runc)");
        return;
    }
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    weft_tests::import_test_image_everywhere(&cluster, "images/busybox:test").expect("import");
    let port = 47123;
    assert!(!host_listens_on(port), "port {port} is taken on this host");
    let yaml = format!(
        "apiVersion: weft/v1
kind: Service
metadata: {{name: box}}
spec:
  replicas: 2
  task:
    container:
      image: images/busybox:test
      command: [sh, -c, 'mkdir -p /tmp/www && echo ok > /tmp/www/healthz && echo hello-from-container > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www']
      port: {port}
  health: {{http: /healthz, interval: 300ms, timeout: 1s, failures: 2}}
"
    );
    apply(&cluster, 0, &yaml).await;
    wait_ready(&cluster, 1, "box", 2, 1).await;
    let c = client();
    for i in 0..2 {
        for _ in 0..3 {
            let (status, body) = get(&c, ingress(&cluster, i), "box", "/").await;
            assert_eq!((status, body.trim()), (200, "hello-from-container"));
        }
    }
    // the port lives only inside each container's namespace
    assert!(
        !host_listens_on(port),
        "the container's port is open on the host"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the container's port answers on the host"
    );
    // removed: the containers stop
    cluster.node(1).services().remove("box").await.expect("rm");
    let start = Instant::now();
    while !endpoints(&cluster, 0, "box").is_empty() {
        assert!(start.elapsed() < READY_WITHIN, "replicas left after rm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop().await;
}
