//! Tests of the net actor with real swarms on 127.0.0.1 (mDNS off, short
//! intervals), and a hand-built "raw" client for what a well-behaved node
//! never sends: no proof, bad frames, gossip from outside the cluster.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, tcp, yamux};
use rand::RngCore;
use tokio::sync::{mpsc, watch};
use weft_protocol::auth::{AuthProof, AuthRequest, AuthResponse};
use weft_protocol::codec::MAX_MESSAGE_BYTES;
use weft_protocol::rpc::RPC_PROTOCOL;
use weft_protocol::{ErrorCode, Executors, Hash, NodeAdvert, Request, Response, Topic};

use super::behaviour::{AuthBehaviour, auth_behaviour, gossipsub_behaviour};
use super::codec::{encode_frame, read_frame};
use super::*;

const SECRET: [u8; 32] = [42; 32];
const INTERVAL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(1);
const AUTH_TIMEOUT: Duration = Duration::from_secs(1);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(secret: [u8; 32], bootstrap: Vec<Multiaddr>) -> NetConfig {
    let mut c = NetConfig::new(Keypair::generate_ed25519(), secret);
    c.mdns = false;
    c.bootstrap = bootstrap;
    c.advert_interval = INTERVAL;
    c.advert_ttl = TTL;
    c.auth_timeout = AUTH_TIMEOUT;
    c.request_timeout = Duration::from_secs(5);
    c
}

fn sample_advert(cores: u32) -> NodeAdvert {
    NodeAdvert {
        cpu_cores: cores,
        memory_total_bytes: 8 << 30,
        executors: Executors {
            wasm: true,
            container_runtime: None,
        },
        labels: BTreeMap::from([("zone".to_string(), format!("z{cores}"))]),
        ..NodeAdvert::default()
    }
}

/// A valid, empty `weft/jobs/1` message.
fn jobs_gossip() -> Vec<u8> {
    weft_protocol::sched::JobGossip { statuses: vec![] }
        .encode()
        .expect("encode")
}

fn tag_update(origin: String) -> Vec<u8> {
    weft_protocol::TagUpdate {
        name: weft_protocol::TagName::new("a:b").expect("tag"),
        version: weft_protocol::TagVersion {
            target: None,
            hlc: weft_protocol::Hlc::default(),
            origin,
        },
    }
    .encode()
    .expect("encode")
}

/// A node plus a stand-in daemon answering `Ping` and recording what it saw.
struct TestNode {
    handle: NetHandle,
    id: PeerId,
    advert: watch::Sender<NodeAdvert>,
    gossip: mpsc::UnboundedReceiver<(Topic, PeerId, Vec<u8>)>,
    /// Peers whose requests reached the daemon.
    requesters: mpsc::UnboundedReceiver<PeerId>,
    membership: mpsc::UnboundedReceiver<NetEvent>,
}

impl TestNode {
    async fn start(config: NetConfig, cores: u32) -> TestNode {
        let (advert, advert_rx) = watch::channel(sample_advert(cores));
        let (handle, mut events) = spawn(config, advert_rx).await.expect("spawn");
        let (gossip_tx, gossip) = mpsc::unbounded_channel();
        let (requesters_tx, requesters) = mpsc::unbounded_channel();
        let (membership_tx, membership) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NetEvent::InboundRequest {
                        peer,
                        request,
                        reply,
                    } => {
                        let _ = requesters_tx.send(peer);
                        let response = match request {
                            Request::Ping { nonce } => Response::Pong { nonce },
                            _ => Response::error(ErrorCode::Unsupported, "test daemon"),
                        };
                        let _ = reply.send(response);
                    }
                    NetEvent::Gossip {
                        topic,
                        source,
                        data,
                    } => {
                        let _ = gossip_tx.send((topic, source, data));
                    }
                    other => {
                        let _ = membership_tx.send(other);
                    }
                }
            }
        });
        TestNode {
            id: handle.local_peer_id(),
            handle,
            advert,
            gossip,
            requesters,
            membership,
        }
    }

    async fn listed(&self) -> HashSet<PeerId> {
        self.handle
            .peers()
            .await
            .expect("peers")
            .into_iter()
            .map(|p| p.peer_id)
            .collect()
    }

    async fn addr(&self, transport: &str) -> Multiaddr {
        self.handle
            .dialable_addrs()
            .await
            .expect("addrs")
            .into_iter()
            .find(|a| a.iter().any(|p| p.tag() == transport))
            .expect("address for transport")
    }

    async fn socket(&self, transport: &str) -> SocketAddr {
        let addr = self.addr(transport).await;
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(a),
                Protocol::Tcp(p) | Protocol::Udp(p) => port = Some(p),
                _ => {}
            }
        }
        SocketAddr::from((ip.expect("ip"), port.expect("port")))
    }
}

/// Polls `check` every 50 ms until it holds; returns how long that took, or
/// panics after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cluster(n: usize) -> Vec<TestNode> {
    let first = TestNode::start(config(SECRET, vec![]), 1).await;
    let tcp = first.addr("tcp").await;
    let quic = first.addr("quic-v1").await;
    let mut nodes = vec![first];
    for i in 1..n {
        // half the nodes join over TCP, half over QUIC
        let boot = if i % 2 == 1 {
            tcp.clone()
        } else {
            quic.clone()
        };
        let cores = u32::try_from(i + 1).expect("small");
        nodes.push(TestNode::start(config(SECRET, vec![boot]), cores).await);
    }
    nodes
}

async fn all_list_each_other(nodes: &[TestNode]) -> bool {
    for node in nodes {
        let want: HashSet<PeerId> = nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != node.id)
            .collect();
        if node.listed().await != want {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_then_forget_a_stopped_one() {
    init_tracing();
    let mut nodes = cluster(5).await;
    let took = eventually(Duration::from_secs(10), "5 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    eprintln!("converged in {took:?}");

    // the table carries what each node advertised
    let peers = nodes[0].handle.peers().await.expect("peers");
    for info in &peers {
        let i = nodes
            .iter()
            .position(|n| n.id == info.peer_id)
            .expect("member");
        let cores = u32::try_from(i + 1).expect("small");
        assert_eq!(info.advert.cpu_cores, cores);
        assert_eq!(info.advert.labels.get("zone"), Some(&format!("z{cores}")));
        assert_eq!(info.advert.peer_id, info.peer_id.to_string());
        assert!(!info.advert.listen_addrs.is_empty());
        assert!(!info.addrs.is_empty());
        assert!(info.last_seen_age < TTL);
    }
    // and every node told its daemon who came up
    for node in &mut nodes {
        let mut up = HashSet::new();
        while let Ok(NetEvent::PeerUp(p)) = node.membership.try_recv() {
            up.insert(p);
        }
        assert_eq!(up.len(), 4, "PeerUp for every other node");
    }

    let stopped = nodes.pop().expect("five nodes");
    stopped.handle.shutdown().await.expect("shutdown");
    assert!(matches!(
        stopped.handle.peers().await,
        Err(NetError::Stopped)
    ));
    let took = eventually(
        TTL + Duration::from_millis(1500),
        "stopped node leaves every table",
        || async {
            for node in &nodes {
                if node.listed().await.contains(&stopped.id) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    eprintln!("stopped node forgotten in {took:?}");
    assert!(all_list_each_other(&nodes).await, "the others stay listed");
    for node in &mut nodes {
        let mut gone = Vec::new();
        while let Ok(event) = node.membership.try_recv() {
            if let NetEvent::PeerGone(p) = event {
                gone.push(p);
            }
        }
        assert_eq!(gone, vec![stopped.id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_gossip_between_authenticated_nodes() {
    init_tracing();
    let mut nodes = cluster(3).await;
    eventually(Duration::from_secs(10), "3 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    let (a, b) = (&nodes[1], &nodes[0]);
    let response = a
        .handle
        .request(b.id, Request::Ping { nonce: 77 })
        .await
        .expect("ping");
    assert_eq!(response, Response::Pong { nonce: 77 });
    match a.handle.request(b.id, Request::Hello).await.expect("hello") {
        Response::Hello(advert) => {
            assert_eq!(advert.peer_id, b.id.to_string());
            assert_eq!(advert.cpu_cores, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(nodes[0].requesters.try_recv().ok(), Some(nodes[1].id));
    assert!(
        nodes[0].requesters.try_recv().is_err(),
        "hello is answered by the net layer"
    );

    // gossip on the jobs topic reaches the others, with its author
    nodes[2]
        .handle
        .publish(Topic::Jobs, jobs_gossip())
        .await
        .expect("publish");
    for i in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(5), nodes[i].gossip.recv())
            .await
            .expect("gossip in time")
            .expect("gossip");
        assert_eq!(got, (Topic::Jobs, nodes[2].id, jobs_gossip()));
    }
    assert!(matches!(
        nodes[0].handle.publish(Topic::Adverts, vec![1]).await,
        Err(NetError::Publish { .. })
    ));
    assert!(matches!(
        nodes[0]
            .handle
            .publish(Topic::Tags, vec![0; MAX_MESSAGE_BYTES + 1])
            .await,
        Err(NetError::Publish { .. })
    ));

    // providers are found through Kademlia
    let key = Hash::of(b"artifact");
    nodes[2].handle.start_providing(key).await.expect("provide");
    let providers = nodes[1].handle.get_providers(key).await.expect("providers");
    assert!(providers.contains(&nodes[2].id), "{providers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advert_changes_are_published_at_once() {
    init_tracing();
    let slow = |boot| {
        let mut c = config(SECRET, boot);
        c.advert_interval = Duration::from_secs(20);
        c.advert_ttl = Duration::from_secs(60);
        c
    };
    let a = TestNode::start(slow(vec![]), 1).await;
    let b = TestNode::start(slow(vec![a.addr("tcp").await]), 2).await;
    // the first adverts come from the hello exchange, long before an interval
    eventually(Duration::from_secs(5), "nodes see each other", || async {
        a.listed().await.contains(&b.id) && b.listed().await.contains(&a.id)
    })
    .await;
    // give gossipsub a heartbeat to build its mesh
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut changed = sample_advert(1);
    changed.labels.insert("gpu".into(), "h100".into());
    changed.running_tasks = 3;
    a.advert.send(changed).expect("advert receiver alive");
    let took = eventually(Duration::from_secs(3), "change seen", || async {
        b.handle.peers().await.expect("peers").iter().any(|p| {
            p.peer_id == a.id
                && p.advert.running_tasks == 3
                && p.advert.labels.get("gpu").map(String::as_str) == Some("h100")
        })
    })
    .await;
    eprintln!("advert change seen in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_wrong_secret_is_never_admitted() {
    init_tracing();
    let mut nodes = cluster(2).await;
    eventually(Duration::from_secs(10), "2 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    let mut intruder = TestNode::start(
        config(
            [13; 32],
            vec![nodes[0].addr("tcp").await, nodes[1].addr("quic-v1").await],
        ),
        9,
    )
    .await;

    // a request from the intruder gets no answer
    let err = intruder
        .handle
        .request(nodes[0].id, Request::Ping { nonce: 1 })
        .await
        .expect_err("no answer for the intruder");
    // refused while its connection is up, or, when the node has already
    // dropped it for its wrong proof, no way back in
    assert!(
        matches!(&err, NetError::NotAuthenticated(p) if *p == nodes[0].id)
            || matches!(&err, NetError::Dial { target, .. } if *target == nodes[0].id.to_string()),
        "{err}"
    );
    let published = intruder.handle.publish(Topic::Jobs, b"evil".to_vec()).await;
    eprintln!("intruder's publish: {published:?}");

    // for several TTLs, nobody lists anybody across the secret boundary
    let watch_until = Instant::now() + 3 * TTL;
    while Instant::now() < watch_until {
        for node in &nodes {
            assert!(
                !node.listed().await.contains(&intruder.id),
                "intruder listed"
            );
            assert!(
                !node
                    .handle
                    .authenticated_peers()
                    .await
                    .expect("peers")
                    .contains(&intruder.id)
            );
        }
        assert!(intruder.listed().await.is_empty(), "intruder lists members");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all_list_each_other(&nodes).await);
    for node in &mut nodes {
        assert!(
            node.requesters.try_recv().is_err(),
            "intruder's request reached a daemon"
        );
        assert!(
            node.gossip.try_recv().is_err(),
            "intruder's gossip delivered"
        );
    }
    assert!(
        intruder.gossip.try_recv().is_err(),
        "members' gossip reached the intruder"
    );
    // members still talk to each other
    let pong = nodes[1]
        .handle
        .request(nodes[0].id, Request::Ping { nonce: 2 })
        .await
        .expect("ping");
    assert_eq!(pong, Response::Pong { nonce: 2 });
}

// ---- a raw client that skips the rules -------------------------------------

/// Writes request bytes verbatim on `/weft/rpc/1`; reads framed responses.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_MESSAGE_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut body = Vec::new();
        io.take(MAX_MESSAGE_BYTES as u64 + 4)
            .read_to_end(&mut body)
            .await?;
        let frame = body.get(4..).ok_or(io::ErrorKind::UnexpectedEof)?;
        Response::decode(frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[derive(NetworkBehaviour)]
struct RawBehaviour {
    auth: AuthBehaviour,
    rpc: request_response::Behaviour<RawCodec>,
    gossipsub: gossipsub::Behaviour,
}

fn raw_client() -> Swarm<RawBehaviour> {
    let keypair = Keypair::generate_ed25519();
    let behaviour = RawBehaviour {
        auth: auth_behaviour(Duration::from_secs(5)),
        rpc: request_response::Behaviour::with_codec(
            RawCodec,
            [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
        ),
        gossipsub: gossipsub_behaviour(&keypair, INTERVAL).expect("gossipsub"),
    };
    SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Drives `swarm` until `f` returns something, or `limit` passes.
async fn drive<T>(
    swarm: &mut Swarm<RawBehaviour>,
    limit: Duration,
    mut f: impl FnMut(SwarmEvent<RawBehaviourEvent>) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let Some(t) = f(event) {
                    return Some(t);
                }
            }
            () = &mut deadline => return None,
        }
    }
}

async fn connect(swarm: &mut Swarm<RawBehaviour>, addr: Multiaddr) {
    swarm.dial(addr).expect("dial");
    drive(swarm, Duration::from_secs(5), |e| {
        matches!(e, SwarmEvent::ConnectionEstablished { .. }).then_some(())
    })
    .await
    .expect("connected");
}

/// Sends raw bytes on `/weft/rpc/1` and waits for the outcome.
async fn raw_request(
    swarm: &mut Swarm<RawBehaviour>,
    peer: PeerId,
    bytes: Vec<u8>,
) -> Result<Response, String> {
    let id = swarm.behaviour_mut().rpc.send_request(&peer, bytes);
    drive(swarm, Duration::from_secs(8), |e| match e {
        SwarmEvent::Behaviour(RawBehaviourEvent::Rpc(request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        })) if request_id == id => Some(Ok(response)),
        SwarmEvent::Behaviour(RawBehaviourEvent::Rpc(
            request_response::Event::OutboundFailure {
                request_id, error, ..
            },
        )) if request_id == id => Some(Err(error.to_string())),
        _ => None,
    })
    .await
    .unwrap_or_else(|| Err("no outcome".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_gets_no_answer_no_gossip_and_is_dropped() {
    init_tracing();
    let mut nodes = cluster(2).await;
    eventually(Duration::from_secs(10), "2 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    let target = nodes[0].id;
    let mut raw = raw_client();
    for topic in Topic::ALL {
        raw.behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(topic.as_str()))
            .expect("subscribe");
    }
    let connected_at = Instant::now();
    connect(&mut raw, nodes[0].addr("tcp").await).await;
    // wait until the raw client knows the node subscribes to jobs
    drive(&mut raw, Duration::from_secs(5), |e| match e {
        SwarmEvent::Behaviour(RawBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
            peer_id,
            topic,
        })) if peer_id == target && topic.as_str() == Topic::Jobs.as_str() => Some(()),
        _ => None,
    })
    .await
    .expect("node's subscriptions");
    raw.behaviour_mut()
        .gossipsub
        .publish(
            IdentTopic::new(Topic::Jobs.as_str()),
            b"from outside".to_vec(),
        )
        .expect("the raw client has the node as a jobs subscriber");
    // a member publishes too: the control that gossip does get through
    nodes[1]
        .handle
        .publish(Topic::Jobs, jobs_gossip())
        .await
        .expect("publish");

    // a well-formed ping without a proof: the node holds it unanswered and
    // closes the connection when the auth timeout passes; meanwhile no
    // gossip reaches the silent peer
    let ping = encode_frame(&Request::Ping { nonce: 5 }, MAX_MESSAGE_BYTES).expect("frame");
    let id = raw.behaviour_mut().rpc.send_request(&target, ping);
    let mut gossip_seen = 0;
    let mut outcome = None;
    let mut closed = None;
    drive(&mut raw, AUTH_TIMEOUT + Duration::from_secs(3), |e| {
        match e {
            SwarmEvent::Behaviour(RawBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                ..
            })) => gossip_seen += 1,
            SwarmEvent::Behaviour(RawBehaviourEvent::Rpc(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => outcome = Some(Ok(response)),
            SwarmEvent::Behaviour(RawBehaviourEvent::Rpc(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) if request_id == id => outcome = Some(Err(error.to_string())),
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } => closed = Some(connected_at.elapsed()),
            _ => {}
        }
        (outcome.is_some() && closed.is_some()).then_some(())
    })
    .await;
    eprintln!("silent peer's ping: {outcome:?}; dropped after {closed:?}");
    assert!(
        matches!(outcome, Some(Err(_))),
        "silent peer got an answer: {outcome:?}"
    );
    let closed = closed.expect("node closed the silent peer's connection");
    assert!(closed >= AUTH_TIMEOUT, "closed before the auth timeout");
    assert!(closed < AUTH_TIMEOUT + Duration::from_secs(2));
    assert_eq!(gossip_seen, 0, "gossip relayed to an unauthenticated peer");

    let got = tokio::time::timeout(Duration::from_secs(5), nodes[0].gossip.recv())
        .await
        .expect("member gossip in time")
        .expect("gossip");
    assert_eq!(got, (Topic::Jobs, nodes[1].id, jobs_gossip()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        nodes[0].gossip.try_recv().is_err(),
        "outsider gossip delivered"
    );
    assert!(
        nodes[0].requesters.try_recv().is_err(),
        "outsider request delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_leave_the_node_serving() {
    init_tracing();
    let nodes = cluster(2).await;
    eventually(Duration::from_secs(10), "2 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    let target = &nodes[0];
    let mut rng = rand::thread_rng();

    // random bytes at the TCP port
    let tcp = target.socket("tcp").await;
    for size in [1usize, 100, 64 * 1024] {
        let mut junk = vec![0u8; size];
        rng.fill_bytes(&mut junk);
        let mut stream = tokio::net::TcpStream::connect(tcp).await.expect("connect");
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let _ = stream.write_all(&junk).await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    }
    // random datagrams at the QUIC port, some dressed as QUIC v1 initials
    let udp = target.socket("quic-v1").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for i in 0..50 {
        let mut junk = vec![0u8; [1, 40, 1200, 1500, 9000][i % 5]];
        rng.fill_bytes(&mut junk);
        if i % 2 == 0 && junk.len() > 5 {
            junk[0] = 0xc3;
            junk[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        socket.send_to(&junk, udp).await.expect("send");
    }

    // a client that proves the secret, then sends bad frames on /weft/rpc/1
    let mut raw = raw_client();
    connect(&mut raw, target.addr("tcp").await).await;
    let proof = AuthProof::new(
        &SECRET,
        &raw.local_peer_id().to_bytes(),
        &target.id.to_bytes(),
    );
    raw.behaviour_mut()
        .auth
        .send_request(&target.id, AuthRequest { proof });
    let verdict = drive(&mut raw, Duration::from_secs(5), |e| match e {
        SwarmEvent::Behaviour(RawBehaviourEvent::Auth(request_response::Event::Message {
            message: request_response::Message::Response { response, .. },
            ..
        })) => Some(response),
        _ => None,
    })
    .await;
    assert_eq!(verdict, Some(AuthResponse::Accepted));

    // a frame declaring one byte over the limit, with a short body
    let mut oversized = u32::try_from(MAX_MESSAGE_BYTES + 1)
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    oversized.extend_from_slice(&[0xa1; 64]);
    let outcome = raw_request(&mut raw, target.id, oversized).await;
    assert!(outcome.is_err(), "oversized frame answered: {outcome:?}");
    // a frame declaring 4 GiB
    let outcome = raw_request(&mut raw, target.id, vec![0xff; 8]).await;
    assert!(outcome.is_err(), "4 GiB frame answered: {outcome:?}");
    // a well-sized frame of garbage CBOR
    let outcome = raw_request(&mut raw, target.id, vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert!(outcome.is_err(), "garbage answered: {outcome:?}");
    // a request variant this node does not know
    let mut unknown = vec![0, 0, 0, 6];
    unknown.extend_from_slice(&hex::decode("6550726f6265").expect("hex"));
    assert!(raw_request(&mut raw, target.id, unknown).await.is_err());
    // the same client, same connection, asking properly, is answered
    let ping = encode_frame(&Request::Ping { nonce: 9 }, MAX_MESSAGE_BYTES).expect("frame");
    assert_eq!(
        raw_request(&mut raw, target.id, ping).await,
        Ok(Response::Pong { nonce: 9 })
    );

    // and the node still serves its cluster
    let pong = nodes[1]
        .handle
        .request(target.id, Request::Ping { nonce: 3 })
        .await
        .expect("node still answers");
    assert_eq!(pong, Response::Pong { nonce: 3 });
    assert!(all_list_each_other(&nodes).await);
}

#[tokio::test]
async fn config_is_validated_and_the_secret_never_printed() {
    let mut c = config(SECRET, vec![]);
    let printed = format!("{c:?}");
    assert!(printed.contains("<redacted>"));
    assert!(!printed.contains("42, 42"));
    c.advert_ttl = c.advert_interval;
    let (_tx, rx) = watch::channel(NodeAdvert::default());
    assert!(matches!(spawn(c, rx).await, Err(NetError::Config(_))));
    let mut c = config(SECRET, vec![]);
    c.listen = vec!["/ip4/127.0.0.1/tcp/1/tcp/2".parse().expect("multiaddr")];
    let (_tx, rx) = watch::channel(NodeAdvert::default());
    assert!(matches!(spawn(c, rx).await, Err(NetError::Listen { .. })));
}

/// Gossip that does not decode within its bounds, or a tag version that is
/// not its signer's own, is refused by the net layer: not handed to the
/// daemon (nor forwarded); a valid message after it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_over_its_bounds_or_with_a_foreign_tag_origin_is_refused() {
    init_tracing();
    let mut nodes = cluster(2).await;
    eventually(Duration::from_secs(10), "2 nodes list each other", || {
        all_list_each_other(&nodes)
    })
    .await;
    let (from, to) = (nodes[1].id, nodes[0].id);
    let mut bad = vec![
        tag_update(to.to_string()),
        tag_update("1".repeat(weft_protocol::bounds::MAX_NODE_ID_BYTES + 1)),
    ];
    // a jobs message over the count bound: the bytes of 257 statuses
    let status = weft_protocol::sched::JobStatus {
        id: weft_protocol::sched::JobId::new(1, 2),
        name: "j".into(),
        coordinator: from.to_string(),
        state: weft_protocol::sched::JobState::Pending,
        attempt: 0,
        node: None,
        reason: None,
        result: None,
        cache_key: Hash::EMPTY,
        history: vec![],
        created_ms: 1,
        updated_ms: 1,
        revision: 1,
    };
    bad.push(
        weft_protocol::sched::JobGossip {
            statuses: vec![status; weft_protocol::bounds::MAX_GOSSIP_STATUSES + 1],
        }
        .encode()
        .expect("encode"),
    );
    for (i, data) in bad.into_iter().enumerate() {
        let topic = if i < 2 { Topic::Tags } else { Topic::Jobs };
        nodes[1].handle.publish(topic, data).await.expect("publish");
    }
    let good = tag_update(from.to_string());
    nodes[1]
        .handle
        .publish(Topic::Tags, good.clone())
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), nodes[0].gossip.recv())
        .await
        .expect("gossip in time")
        .expect("gossip");
    assert_eq!(
        got,
        (Topic::Tags, from, good),
        "a refused message got through"
    );
}

/// One peer gets at most `MAX_CONNECTIONS_PER_PEER` connections, even a
/// member: more are denied, those within the limit stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_peer_are_limited() {
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};

    use super::behaviour::MAX_CONNECTIONS_PER_PEER;
    init_tracing();
    let target = TestNode::start(config(SECRET, Vec::new()), 1).await;
    let mut raw = raw_client();
    let addr = target.addr("tcp").await;
    connect(&mut raw, addr.clone()).await;
    let proof = AuthProof::new(
        &SECRET,
        &raw.local_peer_id().to_bytes(),
        &target.id.to_bytes(),
    );
    raw.behaviour_mut()
        .auth
        .send_request(&target.id, AuthRequest { proof });
    let verdict = drive(&mut raw, Duration::from_secs(5), |e| match e {
        SwarmEvent::Behaviour(RawBehaviourEvent::Auth(request_response::Event::Message {
            message: request_response::Message::Response { response, .. },
            ..
        })) => Some(response),
        _ => None,
    })
    .await;
    assert_eq!(verdict, Some(AuthResponse::Accepted));

    let extra = MAX_CONNECTIONS_PER_PEER as usize + 3;
    for _ in 0..extra {
        let opts = DialOpts::peer_id(target.id)
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::Always)
            .build();
        raw.dial(opts).expect("dial");
    }
    // let every dial settle (established, or denied and closed)
    let _ = drive(&mut raw, Duration::from_millis(1500), |_| None::<()>).await;
    let open = raw.network_info().connection_counters().num_established();
    eprintln!("{open} connections open after {} dials", extra + 1);
    assert!(
        (1..=MAX_CONNECTIONS_PER_PEER).contains(&open),
        "{open} connections from one peer"
    );
}

fn peer_with(data_plane: &str, remote_ip: Option<&str>, addrs: &[&str]) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId::random(),
        advert: NodeAdvert {
            data_plane_addr: Some(data_plane.to_string()),
            ..NodeAdvert::default()
        },
        addrs: addrs
            .iter()
            .map(|a| a.parse().expect("multiaddr"))
            .collect(),
        remote_ip: remote_ip.map(|ip| ip.parse().expect("ip")),
        connected: remote_ip.is_some(),
        last_seen_age: Duration::ZERO,
    }
}

fn sock(s: &str) -> Option<SocketAddr> {
    Some(s.parse().expect("socket address"))
}

/// A peer on another machine whose data plane listens on 0.0.0.0 lists its
/// loopback address first among its libp2p addresses: dialing that would
/// reach this machine's own node. Its data plane is reached where the peer
/// is connected to, else on a non-loopback address it listens on.
#[test]
fn data_addr_of_a_wildcard_listener_is_never_anothers_loopback() {
    let listens = [
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/198.18.0.5/udp/4001/quic-v1",
        "/ip6/::1/udp/4001/quic-v1",
    ];
    // not connected: the first address that is not loopback
    let p = peer_with("0.0.0.0:4002", None, &listens);
    assert_eq!(p.data_addr(), sock("198.18.0.5:4002"));
    // connected: where this node reaches it, whatever it lists
    let p = peer_with("0.0.0.0:4002", Some("198.18.0.9"), &listens);
    assert_eq!(p.data_addr(), sock("198.18.0.9:4002"));
    // an IPv4 wildcard is not reached on an IPv6 address
    let p = peer_with("0.0.0.0:4002", Some("fd00::5"), &listens);
    assert_eq!(p.data_addr(), sock("198.18.0.5:4002"));
    let p = peer_with("[::]:4002", Some("fd00::5"), &listens);
    assert_eq!(p.data_addr(), sock("[fd00::5]:4002"));
    // a node on this machine (a devnet): loopback is right
    let p = peer_with("0.0.0.0:4002", None, &["/ip4/127.0.0.1/tcp/4001"]);
    assert_eq!(p.data_addr(), sock("127.0.0.1:4002"));
    // a named host is taken as it is
    let p = peer_with("10.1.2.3:4002", Some("198.18.0.9"), &listens);
    assert_eq!(p.data_addr(), sock("10.1.2.3:4002"));
    // nothing to reach it on, or no address at all
    let p = peer_with("0.0.0.0:4002", None, &["/dns4/example.org/tcp/4001"]);
    assert_eq!(p.data_addr(), None);
    let mut p = peer_with("0.0.0.0:4002", None, &listens);
    p.advert.data_plane_addr = None;
    assert_eq!(p.data_addr(), None);
}
