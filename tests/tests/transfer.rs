//! The data plane between whole nodes: fetching blobs and trees from the
//! mesh, several providers at once, providers that lie or vanish, fetches
//! that resume after a restart, and pins that keep N copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_node::api::client::ApiClient;

use weft_node::daemon::Node;
use weft_node::store::Store;
use weft_protocol::Hash;
use weft_tests::{Cluster, ClusterOptions};

/// Writes `len` bytes of cheap pseudo-random data.
fn write_data(path: &Path, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, out).expect("write");
}

/// Adds `path` on `node` through its API, as `weft add` does (which also
/// announces it to the mesh).
async fn add(node: &Node, path: &Path) -> Hash {
    let resp = ApiClient::from_home(node.home())
        .expect("api client")
        .request(reqwest::Method::POST, "/api/v1/artifacts/import")
        .json(&serde_json::json!({ "path": path }))
        .send()
        .await
        .expect("import");
    assert!(resp.status().is_success(), "import: {}", resp.status());
    let v: serde_json::Value = resp.json().await.expect("json");
    v["id"].as_str().expect("id").parse().expect("hash")
}

/// Writes `id` out of `node`'s store through its API (fetching first).
async fn export(node: &Node, id: &Hash, dest: &Path) {
    let resp = ApiClient::from_home(node.home())
        .expect("api client")
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/artifacts/{id}/export"),
        )
        .json(&serde_json::json!({ "path": dest }))
        .send()
        .await
        .expect("export");
    let status = resp.status();
    assert!(
        status.is_success(),
        "export: {status}: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Asserts two files or directory trees hold the same bytes.
fn assert_same(a: &Path, b: &Path) {
    if a.is_dir() {
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {}", a.display());
        for n in na {
            assert_same(&a.join(&n), &b.join(&n));
        }
    } else {
        let (x, y) = (
            std::fs::read(a).expect("read"),
            std::fs::read(b).expect("read"),
        );
        assert!(x == y, "{} and {} differ", a.display(), b.display());
    }
}

/// No problems in `node`'s store, and no partial blob left.
fn assert_store_clean(node: &Node) {
    let problems = node.store().verify().expect("verify");
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        node.store().list_partials().expect("partials").is_empty(),
        "partial blobs left behind"
    );
}

async fn wait_all_see(cluster: &Cluster) {
    let n = cluster.running().count();
    cluster
        .wait_until(
            Duration::from_secs(20),
            "every node sees every other",
            |c| async move {
                for (i, _) in c.running() {
                    if c.peers_of(i).await.len() < n - 1 {
                        return false;
                    }
                }
                true
            },
        )
        .await
        .expect("membership");
}

fn tempdir() -> tempfile::TempDir {
    // logs on stderr when RUST_LOG asks for them
    weft_node::cli::init_tracing(weft_node::cli::LogFormat::Text, "off");
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_and_a_1000_file_tree_arrive_bit_identical() {
    let cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let dir = tempdir();
    let big = dir.path().join("big.bin");
    write_data(&big, 64 << 20, 1);
    let tree = dir.path().join("tree");
    let mut content = 0u64;
    for i in 0..1000usize {
        // sizes around the chunk-group edges, a few empty, two big enough
        // to go through a partial blob
        let len = match i {
            7 => 3 << 20,
            500 => (2 << 20) + 1,
            i if i % 97 == 0 => 0,
            i => (i * 131) % 40_000,
        };
        content += len as u64;
        write_data(
            &tree.join(format!("d{}/f{i:04}.dat", i % 10)),
            len,
            i as u64 + 10,
        );
    }
    let source = cluster.node(0);
    let t = Instant::now();
    let big_id = add(source, &big).await;
    let tree_id = add(source, &tree).await;
    eprintln!("added in {:?}", t.elapsed());

    let fetcher = cluster.node(2);
    let t = Instant::now();
    let report = fetcher.transfer().fetch(big_id).await.expect("fetch blob");
    let blob_time = t.elapsed();
    assert_eq!(report.bytes_total, 64 << 20);
    assert_eq!(report.bytes_fetched, 64 << 20);
    assert_eq!(report.blobs_fetched, 1);
    assert_eq!(
        report.by_peer.keys().collect::<Vec<_>>(),
        vec![source.peer_id()]
    );
    let t = Instant::now();
    let tree_report = fetcher.transfer().fetch(tree_id).await.expect("fetch tree");
    let tree_time = t.elapsed();
    // 989 distinct non-empty files, the empty one, 11 manifests
    assert_eq!(tree_report.blobs_fetched, 1001, "{tree_report:?}");
    // the empty file, met again after it arrived
    assert!(tree_report.blobs_present <= 10, "{tree_report:?}");
    assert_eq!(tree_report.bytes_total, content);
    assert!(tree_report.bytes_fetched > content, "manifests count too");

    let out = tempdir();
    export(fetcher, &big_id, &out.path().join("big.bin")).await;
    assert_same(&big, &out.path().join("big.bin"));
    export(fetcher, &tree_id, &out.path().join("tree")).await;
    assert_same(&tree, &out.path().join("tree"));
    assert_store_clean(fetcher);
    // a second fetch finds everything here
    let again = fetcher.transfer().fetch(tree_id).await.expect("again");
    assert_eq!(again.bytes_fetched, 0);
    eprintln!(
        "64 MiB in {blob_time:?} ({:.0} MiB/s), tree of 1000 files in {tree_time:?}",
        64.0 / blob_time.as_secs_f64()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_from_three_providers_uses_all_three() {
    let cluster = Cluster::start(4, ClusterOptions::default())
        .await
        .expect("cluster");
    let dir = tempdir();
    let file = dir.path().join("data.bin");
    write_data(&file, 64 << 20, 2);
    let mut id = None;
    for i in 0..3 {
        id = Some(add(cluster.node(i), &file).await);
    }
    let id = id.expect("id");
    let fetcher = cluster.node(3);
    let report = fetcher.transfer().fetch(id).await.expect("fetch");
    assert_eq!(report.bytes_fetched, 64 << 20);
    let shares: BTreeMap<&str, u64> = (0..3)
        .map(|i| {
            let p = cluster.node(i).peer_id();
            (p, report.by_peer.get(p).copied().unwrap_or(0))
        })
        .collect();
    eprintln!("bytes per provider: {shares:?}");
    for (peer, bytes) in &shares {
        assert!(*bytes >= 1 << 20, "provider {peer} sent only {bytes} bytes");
    }
    assert_eq!(shares.values().sum::<u64>(), 64 << 20);
    // the providers count what they sent in their metrics
    for i in 0..3 {
        let text = reqwest::get(format!("{}/metrics", cluster.node(i).api_url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let line = format!(
            "weft_peer_sent_bytes_total{{peer=\"{}\"}}",
            fetcher.peer_id()
        );
        let sent: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            sent >= shares[cluster.node(i).peer_id()],
            "node {i} sent {sent}"
        );
    }
    let out = tempdir();
    export(fetcher, &id, &out.path().join("data.bin")).await;
    assert_same(&file, &out.path().join("data.bin"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_flipping_bytes_is_banned_and_nothing_corrupt_is_written() {
    let mut cluster = Cluster::start(3, ClusterOptions::default())
        .await
        .expect("cluster");
    let liar = cluster
        .add_node(|c| c.data.faults.flip_bytes = true)
        .await
        .expect("liar");
    wait_all_see(&cluster).await;
    let dir = tempdir();
    let file = dir.path().join("data.bin");
    write_data(&file, 32 << 20, 3);
    let small = dir.path().join("small.bin");
    write_data(&small, 100_000, 4);
    let mut id = None;
    for i in [0, 1, liar] {
        id = Some(add(cluster.node(i), &file).await);
    }
    let id = id.expect("id");
    // a small one, fetched in a single request
    let small_id = add(cluster.node(liar), &small).await;
    add(cluster.node(0), &small).await;
    add(cluster.node(1), &small).await;

    let fetcher = cluster.node(2);
    let report = fetcher.transfer().fetch(id).await.expect("fetch");
    let liar_id = cluster.node(liar).peer_id().to_string();
    assert_eq!(report.banned, vec![liar_id.clone()], "{report:?}");
    assert_eq!(report.bytes_fetched, 32 << 20);
    let small_report = fetcher
        .transfer()
        .fetch(small_id)
        .await
        .expect("fetch small");
    assert_eq!(small_report.bytes_fetched, 100_000);
    assert!(
        small_report.by_peer.keys().all(|p| *p != liar_id),
        "{small_report:?}"
    );
    assert_store_clean(fetcher);
    let out = tempdir();
    export(fetcher, &id, &out.path().join("data.bin")).await;
    assert_same(&file, &out.path().join("data.bin"));
    export(fetcher, &small_id, &out.path().join("small.bin")).await;
    assert_same(&small, &out.path().join("small.bin"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_stopped_mid_transfer_is_replaced() {
    let mut cluster = Cluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    // two providers serving at 8 MiB/s each: a 32 MiB fetch takes seconds
    let mut providers = Vec::new();
    for _ in 0..2 {
        providers.push(
            cluster
                .add_node(|c| c.data.faults.max_send_rate = 8 << 20)
                .await
                .expect("provider"),
        );
    }
    wait_all_see(&cluster).await;
    let dir = tempdir();
    let file = dir.path().join("data.bin");
    write_data(&file, 32 << 20, 5);
    let mut id = None;
    for &p in &providers {
        id = Some(add(cluster.node(p), &file).await);
    }
    let id = id.expect("id");
    let mut ticket = cluster
        .node(0)
        .transfer()
        .start_fetch(id)
        .await
        .expect("start");
    ticket
        .progress
        .wait_for(|p| p.bytes_fetched >= 6 << 20)
        .await
        .expect("progress");
    let gone = cluster.node(providers[0]).peer_id().to_string();
    cluster.stop_node(providers[0]).await;
    let report = tokio::time::timeout(Duration::from_secs(60), ticket.finished())
        .await
        .expect("finished in time")
        .expect("fetch");
    eprintln!("bytes per provider: {:?}", report.by_peer);
    assert_eq!(report.bytes_fetched, 32 << 20);
    assert!(report.by_peer.get(&gone).copied().unwrap_or(0) > 0);
    assert!(report.by_peer.len() == 2);
    assert_store_clean(cluster.node(0));
    let out = tempdir();
    export(cluster.node(0), &id, &out.path().join("data.bin")).await;
    assert_same(&file, &out.path().join("data.bin"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_without_fetching_a_verified_group_twice() {
    let mut cluster = Cluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    let provider = cluster
        .add_node(|c| c.data.faults.max_send_rate = 16 << 20)
        .await
        .expect("provider");
    let fetcher = cluster.add_node(|_| {}).await.expect("fetcher");
    wait_all_see(&cluster).await;
    let dir = tempdir();
    let file = dir.path().join("data.bin");
    let size: u64 = (32 << 20) + 12_345;
    write_data(&file, size as usize, 6);
    let id = add(cluster.node(provider), &file).await;

    let mut ticket = cluster
        .node(fetcher)
        .transfer()
        .start_fetch(id)
        .await
        .expect("start");
    if ticket
        .progress
        .wait_for(|p| p.bytes_fetched >= 10 << 20)
        .await
        .is_err()
    {
        panic!(
            "the fetch ended before 10 MiB arrived: {:?}",
            ticket.finished().await
        );
    }
    let home: PathBuf = cluster.node(fetcher).home().store_dir();
    cluster.stop_node(fetcher).await;
    assert!(
        ticket.finished().await.is_err(),
        "a stopped fetch must not succeed"
    );

    // what the stopped node recorded as verified
    let verified = {
        let store = Store::open(&home, "inspector").expect("open store");
        let rec = store
            .partial_record(&id)
            .expect("record")
            .expect("a partial blob is recorded");
        assert_eq!(rec.size, size);
        rec.verified
    };
    let groups_total = size.div_ceil(16 * 1024);
    let done = verified.group_count();
    assert!(done > 0 && done < groups_total, "{done} of {groups_total}");
    // the last group is short; it is verified by the first request
    assert!(verified.contains(groups_total - 1));
    let resumed_bytes = (done - 1) * 16 * 1024 + (size - (groups_total - 1) * 16 * 1024);

    cluster.restart_node(fetcher).await.expect("restart");
    wait_all_see(&cluster).await;
    let report = cluster
        .node(fetcher)
        .transfer()
        .fetch(id)
        .await
        .expect("resumed fetch");
    eprintln!(
        "resumed {} of {size} bytes, fetched {} more",
        report.bytes_resumed, report.bytes_fetched
    );
    assert_eq!(report.bytes_resumed, resumed_bytes);
    assert_eq!(report.bytes_fetched, size - resumed_bytes);
    assert_store_clean(cluster.node(fetcher));
    let out = tempdir();
    export(cluster.node(fetcher), &id, &out.path().join("data.bin")).await;
    assert_same(&file, &out.path().join("data.bin"));
    cluster.stop().await;
}

fn holders(cluster: &Cluster, id: &Hash) -> Vec<usize> {
    cluster
        .running()
        .filter(|(_, n)| n.store().has(id).unwrap_or(false))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_five_nodes_are_kept_after_a_holder_stops() {
    let mut cluster = Cluster::start(5, ClusterOptions::default())
        .await
        .expect("cluster");
    let dir = tempdir();
    let file = dir.path().join("model.bin");
    write_data(&file, 3 << 20, 7);
    let id = add(cluster.node(0), &file).await;
    let resp = ApiClient::from_home(cluster.node(0).home())
        .expect("api client")
        .request(reqwest::Method::PUT, &format!("/api/v1/pins/{id}"))
        .json(&serde_json::json!({ "replicas": 3 }))
        .send()
        .await
        .expect("pin");
    assert!(resp.status().is_success());
    let took = cluster
        .wait_until(Duration::from_secs(20), "three nodes hold the pin", |c| {
            let n = holders(c, &id).len();
            async move { n >= 3 }
        })
        .await
        .expect("replicated");
    let first = holders(&cluster, &id);
    eprintln!("holders {first:?} after {took:?}");
    assert_eq!(first.len(), 3, "over-replicated: {first:?}");

    // stop a holder (not node 0, the cluster's bootstrap node)
    let victim = *first.iter().find(|&&i| i != 0).expect("another holder");
    cluster.stop_node(victim).await;
    let took = cluster
        .wait_until(
            Duration::from_secs(20),
            "three live nodes hold the pin again",
            |c| {
                let n = holders(c, &id).len();
                async move { n >= 3 }
            },
        )
        .await
        .expect("repaired");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = holders(&cluster, &id);
    eprintln!("holders {after:?} {took:?} after stopping node {victim}");
    assert_eq!(after.len(), 3, "{after:?}");
    // each holder keeps it pinned with the count asked for
    for &i in &after {
        let pins = cluster.node(i).store().list_pins().expect("pins");
        assert!(
            pins.iter().any(|p| p.id == id && p.replicas == 3),
            "node {i}: {pins:?}"
        );
    }
    let status: serde_json::Value = ApiClient::from_home(cluster.node(0).home())
        .expect("api client")
        .get("/api/v1/transfers")
        .await
        .expect("status");
    assert_eq!(status["replication"]["pins"][0]["wanted"], 3, "{status}");
    cluster.stop().await;
}
