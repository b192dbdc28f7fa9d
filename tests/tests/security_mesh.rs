//! What a peer sends is bounded and checked: attacks on the mesh driven from
//! outside against real nodes, by a rogue member (holds the cluster secret,
//! runs none of weft's logic) or a non-member (raw libp2p or QUIC client).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, QueryResult, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use weft_node::store::records::BlobKind;
use weft_protocol::bounds::{MAX_LABELS, MAX_NODE_ID_BYTES, MAX_REPLICAS};
use weft_protocol::sched::{JobGossip, JobId, JobState, JobStatus};
use weft_protocol::tag::MAX_CLOCK_SKEW_MS;
use weft_protocol::{
    Hash, Hlc, NodeAdvert, Request, Response, TagName, TagUpdate, TagVersion, Topic,
};
use weft_tests::rogue::Rogue;
use weft_tests::{Cluster, ClusterOptions};

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn update(name: &str, origin: String, wall_ms: u64) -> Vec<u8> {
    TagUpdate {
        name: tag(name),
        version: TagVersion {
            target: Some(Hash::EMPTY),
            hlc: Hlc {
                wall_ms,
                counter: 0,
            },
            origin,
        },
    }
    .encode()
    .expect("encode")
}

/// Publishes as the rogue, retrying while its gossip mesh forms.
async fn publish(rogue: &Rogue, topic: Topic, data: Vec<u8>) {
    let start = Instant::now();
    loop {
        match rogue.net.publish(topic, data.clone()).await {
            Ok(()) => return,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("rogue cannot publish: {e}"),
        }
    }
}

/// Publishes an honest tag update as the rogue and waits until every node
/// holds it: gossip from one source arrives in order, so whatever the rogue
/// published before has been judged by then.
async fn barrier(cluster: &Cluster, rogue: &Rogue, name: &str) {
    publish(
        rogue,
        Topic::Tags,
        update(name, rogue.peer_id().to_string(), now_ms()),
    )
    .await;
    cluster
        .wait_until(
            Duration::from_secs(10),
            "every node merged the barrier tag",
            |c| {
                let name = tag(name);
                async move {
                    c.running()
                        .all(|(_, n)| n.store().tag(&name).ok().flatten().is_some())
                }
            },
        )
        .await
        .expect("barrier");
}

fn has_tag(cluster: &Cluster, name: &str) -> Vec<usize> {
    cluster
        .running()
        .filter(|(_, n)| n.store().tag_history(&tag(name)).is_ok())
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_foreign_tag_origins_are_refused_and_tags_keep_working() {
    let mut cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let node0 = cluster.node(0).peer_id().to_string();

    // an origin of 100 kB, one just over the bound, and one naming node 0
    publish(
        &rogue,
        Topic::Tags,
        update("evil/big:v1", "1".repeat(100_000), now_ms()),
    )
    .await;
    publish(
        &rogue,
        Topic::Tags,
        update("evil/over:v1", "1".repeat(MAX_NODE_ID_BYTES + 1), now_ms()),
    )
    .await;
    publish(
        &rogue,
        Topic::Tags,
        update("evil/foreign:v1", node0, now_ms()),
    )
    .await;
    barrier(&cluster, &rogue, "rogue/ok:v1").await;
    for name in ["evil/big:v1", "evil/over:v1", "evil/foreign:v1"] {
        assert_eq!(
            has_tag(&cluster, name),
            Vec::<usize>::new(),
            "{name} was stored"
        );
    }

    // listing, GC and sync work on every node
    let id = cluster
        .node(1)
        .store()
        .add_bytes(b"after the attack", BlobKind::Raw)
        .expect("add")
        .0;
    cluster
        .node(1)
        .store()
        .set_tag(&tag("data/after:v1"), Some(id))
        .expect("set tag");
    for (i, n) in cluster.running() {
        n.store()
            .list_tags()
            .unwrap_or_else(|e| panic!("node {i} lists tags: {e}"));
        n.store()
            .gc(&[])
            .unwrap_or_else(|e| panic!("node {i} runs GC: {e}"));
    }
    let late = cluster.add_node(|_| {}).await.expect("a new node");
    cluster
        .wait_until(
            Duration::from_secs(15),
            "the new node synced the tags",
            |c| async move {
                c.node(late)
                    .store()
                    .tag(&tag("data/after:v1"))
                    .ok()
                    .flatten()
                    == Some(id)
                    && c.node(late)
                        .store()
                        .tag(&tag("rogue/ok:v1"))
                        .ok()
                        .flatten()
                        .is_some()
            },
        )
        .await
        .expect("tag sync works");
    assert_eq!(has_tag(&cluster, "evil/big:v1"), Vec::<usize>::new());
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_clocks_are_refused_and_clocks_do_not_jump() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let mut rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let me = rogue.peer_id().to_string();

    // by gossip: u64::MAX and an hour ahead
    publish(
        &rogue,
        Topic::Tags,
        update("clock/x:v1", me.clone(), u64::MAX),
    )
    .await;
    publish(
        &rogue,
        Topic::Tags,
        update("clock/y:v1", me.clone(), now_ms() + 3_600_000),
    )
    .await;

    // by tag sync: each node asked the rogue for its tags when it joined; the
    // answer relays a far-future version and an honest one written by
    // another node (relayed origins may name any node)
    let relayed = PeerId::random().to_string();
    let mut answered = 0;
    while answered < 2 {
        let (_, request, reply) = rogue
            .next_request(Duration::from_secs(10))
            .await
            .expect("a tag sync request");
        if let Request::LedgerSync { .. } = request {
            // the ledger is synced on join too: nothing to give
            let _ = reply.send(Response::Ledger {
                entries: vec![],
                more: false,
            });
            continue;
        }
        assert!(
            matches!(request, Request::TagSync { after: None }),
            "{request:?}"
        );
        answered += 1;
        let page = Response::Tags {
            tags: vec![
                (
                    tag("clock/z:v1"),
                    vec![TagVersion {
                        target: Some(Hash::EMPTY),
                        hlc: Hlc {
                            wall_ms: u64::MAX,
                            counter: u32::MAX,
                        },
                        origin: me.clone(),
                    }],
                ),
                (
                    tag("relayed/w:v1"),
                    vec![TagVersion {
                        target: Some(Hash::EMPTY),
                        hlc: Hlc {
                            wall_ms: now_ms(),
                            counter: 0,
                        },
                        origin: relayed.clone(),
                    }],
                ),
            ],
            more: false,
        };
        let _ = reply.send(page);
    }
    cluster
        .wait_until(
            Duration::from_secs(10),
            "the relayed tag arrived",
            |c| async move {
                c.running()
                    .all(|(_, n)| n.store().tag(&tag("relayed/w:v1")).ok().flatten().is_some())
            },
        )
        .await
        .expect("relayed tag synced");
    barrier(&cluster, &rogue, "rogue/ok:v1").await;
    for name in ["clock/x:v1", "clock/y:v1", "clock/z:v1"] {
        assert_eq!(
            has_tag(&cluster, name),
            Vec::<usize>::new(),
            "{name} was stored"
        );
    }

    // an honest write after the attack wins everywhere, at an honest time
    let id = cluster
        .node(1)
        .store()
        .add_bytes(b"honest", BlobKind::Raw)
        .expect("add")
        .0;
    let before = now_ms();
    let v = cluster
        .node(1)
        .store()
        .set_tag(&tag("clock/x:v1"), Some(id))
        .expect("set");
    assert!(
        v.hlc.wall_ms <= before + MAX_CLOCK_SKEW_MS && v.hlc.wall_ms + 60_000 >= before,
        "node 1's clock jumped: {:?} at {before}",
        v.hlc
    );
    cluster
        .wait_until(
            Duration::from_secs(10),
            "node 0 takes the honest write",
            |c| async move { c.node(0).store().tag(&tag("clock/x:v1")).ok().flatten() == Some(id) },
        )
        .await
        .expect("honest write wins");
    let v0 = cluster
        .node(0)
        .store()
        .set_tag(&tag("clock/own:v1"), Some(id))
        .expect("set");
    assert!(
        v0.hlc.wall_ms <= now_ms() + MAX_CLOCK_SKEW_MS,
        "node 0's clock jumped: {:?}",
        v0.hlc
    );
    rogue.stop().await;
    cluster.stop().await;
}

/// A raw Kademlia client speaking weft's DHT protocol, with no cluster
/// secret.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct RawKad {
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_from_a_non_member_are_not_stored() {
    const FAKE_KEYS: usize = 1024;
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let node0: PeerId = cluster.node(0).peer_id().parse().expect("peer id");
    let addr: Multiaddr = cluster
        .node(0)
        .net()
        .listen_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .expect("tcp address");

    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| {
            let id = k.public().to_peer_id();
            let mut config = kad::Config::new(StreamProtocol::new("/weft/kad/1"));
            config.set_query_timeout(Duration::from_secs(4));
            let store_config = kad::store::MemoryStoreConfig {
                max_provided_keys: 2 * FAKE_KEYS,
                ..Default::default()
            };
            RawKad {
                kad: kad::Behaviour::with_config(
                    id,
                    kad::store::MemoryStore::with_config(id, store_config),
                    config,
                ),
            }
        })
        .expect("behaviour")
        .build();
    // announcements carry the client's address, so a node that stored them
    // would hand them out
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let listening = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.add_external_address(listening);
    swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    swarm.behaviour_mut().kad.add_address(&node0, addr);
    let keys: Vec<Hash> = (0..FAKE_KEYS)
        .map(|i| Hash::of(format!("fake {i}").as_bytes()))
        .collect();
    for k in &keys {
        swarm
            .behaviour_mut()
            .kad
            .start_providing(RecordKey::new(k.as_bytes()))
            .expect("start providing");
    }
    // the node hears the announcements before it closes the unproven
    // connection; each query ends when it has sent its ADD_PROVIDER
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent < FAKE_KEYS {
        let event = match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(e) => e,
            Err(_) => break,
        };
        if let SwarmEvent::Behaviour(RawKadEvent::Kad(kad::Event::OutboundQueryProgressed {
            result: QueryResult::StartProviding(Ok(_)),
            ..
        })) = event
        {
            sent += 1;
        }
    }
    eprintln!("{sent} of {FAKE_KEYS} fake announcements sent to node 0");
    assert!(
        sent > FAKE_KEYS / 2,
        "only {sent} announcements reached the node"
    );
    drop(swarm);

    // a member asking node 0 finds none of them
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    for k in keys.iter().step_by(64) {
        let found = rogue.net.get_providers(*k).await.expect("lookup");
        assert!(
            !found.contains(&me),
            "node 0 stored a non-member's provider record"
        );
    }

    // node 0 still announces its own artifacts, and a member's announcements
    // are stored
    let id = cluster
        .node(0)
        .store()
        .add_bytes(b"node 0's own artifact", BlobKind::Raw)
        .expect("add")
        .0;
    cluster
        .node(0)
        .net()
        .start_providing(id)
        .await
        .expect("node 0 announces");
    let member_key = Hash::of(b"the member's artifact");
    rogue
        .net
        .start_providing(member_key)
        .await
        .expect("member announces");
    let member = rogue.peer_id();
    cluster
        .wait_until(
            Duration::from_secs(10),
            "node 1 finds both providers",
            |c| async move {
                let own = c.node(1).net().get_providers(id).await.unwrap_or_default();
                let theirs = c
                    .node(1)
                    .net()
                    .get_providers(member_key)
                    .await
                    .unwrap_or_default();
                own.contains(&node0) && theirs.contains(&member)
            },
        )
        .await
        .expect("announcements work");
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_is_capped_and_bounded_per_requester() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let node1: PeerId = cluster.node(1).peer_id().parse().expect("peer id");
    let id = cluster
        .node(0)
        .store()
        .add_bytes(b"pin me everywhere", BlobKind::Raw)
        .expect("add")
        .0;

    // replicas: u32::MAX does not decode; the node refuses it and stays up
    let refused = rogue
        .request(
            node1,
            Request::Replicate {
                hash: id,
                replicas: u32::MAX,
            },
        )
        .await;
    assert!(refused.is_err(), "accepted: {refused:?}");
    let over = rogue
        .request(
            node1,
            Request::Replicate {
                hash: id,
                replicas: MAX_REPLICAS + 1,
            },
        )
        .await;
    assert!(over.is_err(), "accepted: {over:?}");
    match rogue.request(node1, Request::Ping { nonce: 5 }).await {
        Ok(Response::Pong { nonce: 5 }) => {}
        other => panic!("node 1 unhealthy after the attack: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster
            .node(1)
            .store()
            .list_pins()
            .expect("pins")
            .is_empty(),
        "node 1 pinned"
    );

    // a requester gets a bounded number of copies fetched at once: ids no
    // one holds keep their fetches waiting
    let mut answers = Vec::new();
    for i in 0..6u8 {
        let missing = Hash::of(&[i; 8]);
        answers.push(
            rogue
                .request(
                    node1,
                    Request::Replicate {
                        hash: missing,
                        replicas: 2,
                    },
                )
                .await
                .expect("answer"),
        );
    }
    let agreed = answers
        .iter()
        .filter(|a| matches!(a, Response::Replicating { .. }))
        .count();
    let declined = answers
        .iter()
        .filter(|a| matches!(a, Response::Error { .. }))
        .count();
    eprintln!("replicate: {agreed} agreed, {declined} declined");
    assert!(
        agreed <= 4 && agreed + declined == 6 && declined >= 2,
        "{answers:?}"
    );
    rogue.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_from_a_rogue_are_refused_and_the_node_stays_healthy() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let rogue = Rogue::join_seen(&cluster, NodeAdvert::default())
        .await
        .expect("rogue joins");
    let node0: PeerId = cluster.node(0).peer_id().parse().expect("peer id");

    // rpc: a task update with a 1 MiB reason
    let job = JobId::new(now_ms(), 7);
    let big = rogue
        .request(
            node0,
            Request::TaskUpdate {
                job: job.clone(),
                attempt: 1,
                state: JobState::Failed,
                reason: Some("r".repeat(1 << 20)),
                result: None,
            },
        )
        .await;
    assert!(big.is_err(), "accepted: {big:?}");

    // gossip: a job status with a 1 MiB name and one over the history bound
    let status = |name: String, history: usize| JobStatus {
        id: job.clone(),
        name,
        coordinator: rogue.peer_id().to_string(),
        state: JobState::Succeeded,
        attempt: 1,
        node: None,
        reason: None,
        result: None,
        cache_key: Hash::EMPTY,
        history: (0..history)
            .map(|i| weft_protocol::sched::Transition {
                state: JobState::Pending,
                at_ms: i as u64,
                attempt: 0,
                node: None,
                reason: None,
            })
            .collect(),
        created_ms: 1,
        updated_ms: 1,
        revision: 1,
    };
    for s in [status("n".repeat(1 << 20), 0), status("j".into(), 10_000)] {
        let data = JobGossip { statuses: vec![s] }.encode().expect("encode");
        publish(&rogue, Topic::Jobs, data).await;
    }
    // an advert over a bound: its labels
    rogue.advert.send_modify(|a| {
        a.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect()
    });
    barrier(&cluster, &rogue, "rogue/ok:v1").await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    for (i, n) in cluster.running() {
        assert!(
            n.sched().status(job.clone()).await.is_err(),
            "node {i} took the oversized job status"
        );
        let peers = n.net().peers().await.expect("peers");
        assert!(
            peers.iter().all(|p| p.advert.labels.len() <= MAX_LABELS),
            "node {i} took an advert over its bound"
        );
    }
    match rogue.request(node0, Request::Ping { nonce: 9 }).await {
        Ok(Response::Pong { nonce: 9 }) => {}
        other => panic!("node 0 unhealthy after the attack: {other:?}"),
    }
    rogue.stop().await;
    cluster.stop().await;
}

/// A QUIC client with a valid certificate for `key` that never proves the
/// cluster secret.
fn silent_client(key: &Keypair, server: PeerId) -> (quinn::Endpoint, quinn::ClientConfig) {
    let mut tls = libp2p_tls::make_client_config(key, Some(server)).expect("tls");
    tls.alpn_protocols = vec![weft_protocol::transfer::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    (endpoint, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_quic_connections_are_capped_and_timed_out() {
    const FLOOD: usize = 80;
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let node0: PeerId = cluster.node(0).peer_id().parse().expect("peer id");
    let data_addr = cluster.node(0).transfer().local_addr();
    let key = Keypair::generate_ed25519();
    let (endpoint, config) = silent_client(&key, node0);

    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let connecting = endpoint
            .connect_with(config.clone(), data_addr, "weft")
            .expect("connect");
        tries.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(3), connecting).await {
                Ok(Ok(conn)) => {
                    // held open, silent, until the node closes it
                    let t = Instant::now();
                    let reason = conn.closed().await;
                    Some((t.elapsed(), reason))
                }
                _ => None,
            }
        });
    }
    let started = Instant::now();
    let mut accepted = 0;
    let mut longest = Duration::ZERO;
    while let Some(done) = tries.join_next().await {
        if let Some((held, reason)) = done.expect("task") {
            accepted += 1;
            longest = longest.max(held);
            assert!(
                matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
                "{reason}"
            );
        }
    }
    eprintln!("{accepted} of {FLOOD} silent connections accepted, held at most {longest:?}");
    assert!(accepted >= 1, "no connection got through the handshake");
    assert!(
        accepted <= 64,
        "{accepted} unauthenticated connections held at once"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15) && longest <= Duration::from_secs(7),
        "silent connections held for {longest:?}"
    );

    // honest transfers still work
    let id = cluster
        .node(0)
        .store()
        .add_bytes(&vec![7u8; 300_000], BlobKind::Raw)
        .expect("add")
        .0;
    cluster
        .node(0)
        .net()
        .start_providing(id)
        .await
        .expect("announce");
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        cluster.node(1).transfer().fetch(id),
    )
    .await
    .expect("fetch in time")
    .expect("fetch");
    assert_eq!(report.root, id);
    cluster.stop().await;
}
