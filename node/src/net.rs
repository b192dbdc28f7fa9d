//! The control-plane mesh: one actor owns the libp2p Swarm; the rest of the
//! daemon talks to it through a cloneable [`NetHandle`] and hears from it
//! through a stream of [`NetEvent`]s.
//!
//! What it does:
//! - listens on QUIC and TCP (noise, yamux), dials the bootstrap peers and
//!   finds the rest through Kademlia (`/weft/kad/1`) and, on a LAN, mDNS;
//! - admits a peer only once it has proven the cluster secret on
//!   `/weft/auth/1` (see `weft_protocol::auth`): both sides send a proof as
//!   soon as a connection is up; a peer whose proof is wrong, or that stays
//!   silent past [`NetConfig::auth_timeout`], is disconnected. Until then its
//!   `/weft/rpc/1` requests are held unanswered, gossipsub neither sends it
//!   anything nor accepts anything from it (graylisted by score, and every
//!   message it propagates is rejected), and its addresses stay out of
//!   Kademlia;
//! - gossips this node's [`NodeAdvert`] on `weft/adverts/1` every
//!   [`NetConfig::advert_interval`] and whenever the daemon's advert changes,
//!   and keeps the membership table: the latest advert of every node in the
//!   cluster, dropped (with [`NetEvent::PeerGone`]) when not refreshed within
//!   [`NetConfig::advert_ttl`];
//! - answers `Request::Hello` itself and hands every other request to the
//!   daemon as [`NetEvent::InboundRequest`];
//! - bounds what peers send: every request, response and gossip message is
//!   decoded through `weft_protocol::codec::decode_peer`, which checks the
//!   bound of every field (`weft_protocol::bounds`); gossip on
//!   `weft/tags/1` whose tag version is not its signer's own, or on
//!   `weft/jobs/1` over its bounds, is rejected (not handed on, not
//!   forwarded); connections are limited per peer, in total and while in
//!   their handshake; Kademlia stores provider records only from peers that
//!   proved the cluster secret, a bounded number per peer and in all, with
//!   room always kept for this node's own announcements, and stores no
//!   values.
//!
//! **Architecture Invariant:** only the actor in `net/actor.rs` touches the
//! Swarm.

mod actor;
mod behaviour;
mod codec;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use weft_protocol::auth::SECRET_LEN;
use weft_protocol::{CodecError, Hash, NodeAdvert, Request, Response, Topic};

/// Commands queued to the actor before senders wait.
const COMMAND_QUEUE: usize = 64;

/// Events queued for the daemon before the actor starts dropping them.
const EVENT_QUEUE: usize = 1024;

/// How the net actor runs.
#[derive(Clone)]
pub struct NetConfig {
    /// The node's identity; its peer id is the node id.
    pub keypair: Keypair,
    /// Where to listen. Default: TCP and QUIC on `127.0.0.1`, ports chosen by
    /// the OS.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and again while no peer is authenticated).
    /// An address ending in `/p2p/<peer id>` is checked against that id.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// The cluster secret every member shares.
    pub cluster_secret: [u8; SECRET_LEN],
    /// How often this node's advert is gossiped.
    pub advert_interval: Duration,
    /// How long a peer's advert stays valid without a fresh one.
    pub advert_ttl: Duration,
    /// How long a new peer has to prove the cluster secret.
    pub auth_timeout: Duration,
    /// How long a `/weft/rpc/1` request may take, on either side.
    pub request_timeout: Duration,
}

impl NetConfig {
    /// Defaults: listen on TCP and QUIC on `127.0.0.1:0`, no bootstrap peers,
    /// mDNS on, adverts every 2 s expiring after 3 intervals, 5 s to
    /// authenticate, 30 s per request.
    pub fn new(keypair: Keypair, cluster_secret: [u8; SECRET_LEN]) -> Self {
        let advert_interval = Duration::from_secs(2);
        NetConfig {
            keypair,
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("literal multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("literal multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            cluster_secret,
            advert_interval,
            advert_ttl: advert_interval * 3,
            auth_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }

    fn validate(&self) -> Result<(), NetError> {
        if self.listen.is_empty() {
            return Err(NetError::Config("no listen address".into()));
        }
        if self.advert_interval.is_zero() || self.auth_timeout.is_zero() {
            return Err(NetError::Config(
                "advert_interval and auth_timeout must be above zero".into(),
            ));
        }
        if self.advert_ttl <= self.advert_interval {
            return Err(NetError::Config(format!(
                "advert_ttl ({:?}) must exceed advert_interval ({:?}); use about 3 intervals",
                self.advert_ttl, self.advert_interval
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("cluster_secret", &"<redacted>")
            .field("advert_interval", &self.advert_interval)
            .field("advert_ttl", &self.advert_ttl)
            .field("auth_timeout", &self.auth_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// What went wrong in the mesh.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid net config: {0}")]
    Config(String),
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot dial {target}: {reason}")]
    Dial { target: String, reason: String },
    #[error(
        "peer {0} has not proven the cluster secret; check that both nodes use the same cluster secret"
    )]
    NotAuthenticated(PeerId),
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("cannot publish on {topic}: {reason}")]
    Publish { topic: Topic, reason: String },
    #[error("kademlia: {0}")]
    Kad(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the net actor has stopped")]
    Stopped,
}

/// What the net actor tells the daemon.
#[derive(Debug)]
pub enum NetEvent {
    /// An authenticated peer asks something the net layer does not answer
    /// itself. Send the answer on `reply`; dropping it answers
    /// `ErrorCode::Internal`.
    InboundRequest {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A gossip message on a topic other than adverts, authored (and signed)
    /// by `source`.
    Gossip {
        topic: Topic,
        source: PeerId,
        data: Vec<u8>,
    },
    /// A node's first advert entered the membership table.
    PeerUp(PeerId),
    /// A node's advert expired; it left the membership table.
    PeerGone(PeerId),
}

/// A member of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    /// The latest advert from the peer.
    pub advert: NodeAdvert,
    /// Addresses to reach it: what it told us through identify when
    /// connected, else those in its advert.
    pub addrs: Vec<Multiaddr>,
    /// The IP address this node is connected to it on, when connected.
    pub remote_ip: Option<IpAddr>,
    /// Whether this node has an authenticated connection to it.
    pub connected: bool,
    /// Time since its advert was last refreshed.
    pub last_seen_age: Duration,
}

impl PeerInfo {
    /// Where its data plane listens: its advert's address, or, when the
    /// advert names an unspecified host (`0.0.0.0:4002`), that port on a
    /// host this node can reach it on. See [`reachable_host`].
    pub fn data_addr(&self) -> Option<SocketAddr> {
        let a: SocketAddr = self.advert.data_plane_addr.as_deref()?.parse().ok()?;
        if !a.ip().is_unspecified() {
            return Some(a);
        }
        reachable_host(a.ip(), self.remote_ip, &self.addrs).map(|ip| SocketAddr::new(ip, a.port()))
    }
}

/// A host to reach a peer's service that listens on `unspecified`
/// (`0.0.0.0` or `::`): the address this node is connected to the peer on,
/// else the first of its libp2p addresses that is not a loopback address
/// (a loopback address of another machine is this machine's own), else a
/// loopback one (the peer runs on this machine). A service bound to
/// `0.0.0.0` takes IPv4 only.
pub fn reachable_host(
    unspecified: IpAddr,
    remote_ip: Option<IpAddr>,
    addrs: &[Multiaddr],
) -> Option<IpAddr> {
    let fits = |ip: &IpAddr| !ip.is_unspecified() && (unspecified.is_ipv6() || ip.is_ipv4());
    if let Some(ip) = remote_ip.filter(fits) {
        return Some(ip);
    }
    let ips: Vec<IpAddr> = addrs
        .iter()
        .filter_map(|m| {
            m.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
        })
        .filter(fits)
        .collect();
    ips.iter()
        .find(|ip| !ip.is_loopback())
        .or_else(|| ips.first())
        .copied()
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// Requests to the actor, each with its reply.
enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    AuthenticatedPeers(oneshot::Sender<Vec<PeerId>>),
    Request {
        peer: PeerId,
        request: Request,
        reply: Reply<Response>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<()>,
    },
    StartProviding {
        key: Hash,
        reply: Reply<()>,
    },
    GetProviders {
        key: Hash,
        reply: Reply<Vec<PeerId>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A cloneable handle on the net actor.
#[derive(Debug, Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    /// Bound on waiting for one request: authentication plus the request.
    request_deadline: Duration,
}

impl NetHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The addresses the node listens on (without `/p2p/`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(Command::ListenAddrs).await
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`,
    /// ready to hand to another node as a bootstrap address.
    pub async fn dialable_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let id = self.local_peer_id;
        Ok(self
            .listen_addrs()
            .await?
            .into_iter()
            .map(|a| a.with(Protocol::P2p(id)))
            .collect())
    }

    /// The membership table: every node whose advert is live, sorted by peer
    /// id.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(Command::Peers).await
    }

    /// Peers with a live connection that have proven the cluster secret.
    pub async fn authenticated_peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.call(Command::AuthenticatedPeers).await
    }

    /// Sends `request` to `peer` on `/weft/rpc/1`, dialing it if needed, once
    /// it has proven the cluster secret.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        let reply = self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        });
        match tokio::time::timeout(self.request_deadline, reply).await {
            Ok(result) => result?,
            Err(_) => Err(NetError::Request {
                peer,
                reason: format!("no answer within {:?}", self.request_deadline),
            }),
        }
    }

    /// Gossips `data` on `topic`, signed by this node. Adverts are the net
    /// layer's own; publish on the other topics.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Dials `addr` (which may end in `/p2p/<peer id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Announces in Kademlia that this node provides `key`.
    pub async fn start_providing(&self, key: Hash) -> Result<(), NetError> {
        self.call(|reply| Command::StartProviding { key, reply })
            .await?
    }

    /// Asks Kademlia which peers provide `key` (this node included, if it
    /// does).
    pub async fn get_providers(&self, key: Hash) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::GetProviders { key, reply })
            .await?
    }

    /// Stops the actor and closes every connection; returns once the Swarm is
    /// gone. Later calls on any clone fail with [`NetError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.call(Command::Shutdown).await
    }
}

/// Starts the net actor: builds the Swarm, waits until every listen address
/// is bound, dials the bootstrap peers and returns the handle and the event
/// stream. The advert the daemon publishes comes from `advert`; the net
/// layer fills in `peer_id`, `listen_addrs`, `started_ms`, `seq` and
/// `timestamp_ms` itself.
pub async fn spawn(
    config: NetConfig,
    advert: watch::Receiver<NodeAdvert>,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    config.validate()?;
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let handle = NetHandle {
        commands: command_tx,
        local_peer_id: config.keypair.public().to_peer_id(),
        request_deadline: config.auth_timeout + config.request_timeout,
    };
    let span = tracing::info_span!("net", node = %handle.local_peer_id);
    let actor = actor::Actor::start(config, command_rx, event_tx, advert)
        .instrument(span.clone())
        .await?;
    tokio::spawn(actor.run().instrument(span));
    Ok((handle, event_rx))
}
