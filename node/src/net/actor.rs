//! The net actor: the one owner of the Swarm. It runs the auth exchange with
//! every new peer, the membership table built from adverts, and the replies
//! in flight, all from one `tokio::select!` loop over Swarm events, handle
//! commands, advert changes and two timers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, ProviderRecord, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, trace, warn};
use weft_protocol::auth::{AuthProof, AuthRequest, AuthResponse, SECRET_LEN};
use weft_protocol::bounds::MAX_LISTEN_ADDRS;
use weft_protocol::codec::MAX_MESSAGE_BYTES;
use weft_protocol::ledger::LedgerGossip;
use weft_protocol::sched::JobGossip;
use weft_protocol::{Bounded, ErrorCode, NodeAdvert, Request, Response, TagUpdate, Topic, VERSION};

use super::behaviour::{
    Behaviour, BehaviourEvent, MAX_PROVIDER_RECORDS_PER_PEER, MAX_REMOTE_PROVIDER_RECORDS,
    PROVIDER_RECORD_TTL, UNAUTHENTICATED_SCORE, build_swarm,
};
use super::{Command, NetConfig, NetError, NetEvent, PeerInfo, Reply};

/// How long `spawn` waits for the listeners to bind.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests held per peer while it authenticates; more close the connection.
const MAX_HELD_REQUESTS: usize = 16;

/// How often this node's proof is sent on a peer's connections before it
/// waits for the peer's auth deadline to settle things.
const MAX_PROOF_SENDS: u8 = 4;

/// How long a peer that failed authentication is refused.
const BAN: Duration = Duration::from_secs(10);

/// Least time between two Kademlia bootstraps triggered by new peers.
const BOOTSTRAP_THROTTLE: Duration = Duration::from_secs(5);

/// How often the bootstrap peers are dialed again while no peer is
/// authenticated.
const BOOTSTRAP_REDIAL: Duration = Duration::from_secs(5);

/// How long a gone peer's last advert is remembered, so a late relayed copy
/// does not bring it back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Addresses kept per peer from identify (and per provider record).
const MAX_PEER_ADDRS: usize = 16;

/// How often expired provider records are dropped from the count of what
/// each peer stored here.
const PROVIDER_PRUNE_EVERY: Duration = Duration::from_secs(60);

type InboundReply = (
    ResponseChannel<Response>,
    Result<Response, oneshot::error::RecvError>,
);

/// Where a connected peer stands.
enum AuthState {
    /// Proof not yet seen; requests it sent wait here, unanswered.
    Pending {
        deadline: Instant,
        held: Vec<(Request, ResponseChannel<Response>)>,
    },
    /// Proved the cluster secret.
    Authenticated,
}

/// A peer with at least one open connection.
struct Conn {
    auth: AuthState,
    /// The address this node dialed it at, if it did.
    dialed_addr: Option<Multiaddr>,
    /// The IP address its first connection came from or went to: where
    /// this node reaches it.
    remote_ip: Option<IpAddr>,
    /// Its listen addresses, from identify.
    listen_addrs: Vec<Multiaddr>,
    /// How many times this node's own proof was sent to it.
    proofs_sent: u8,
}

impl Conn {
    fn is_authenticated(&self) -> bool {
        matches!(self.auth, AuthState::Authenticated)
    }
}

/// A node in the membership table.
struct Member {
    advert: NodeAdvert,
    last_seen: Instant,
}

/// What is remembered of a node whose advert expired.
struct Tombstone {
    /// `(started_ms, seq)` of its last advert.
    last: (u64, u64),
    at: Instant,
}

/// Who is waiting for an outbound request's answer.
enum Pending {
    User(Reply<Response>),
    Hello,
}

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    secret: [u8; SECRET_LEN],
    advert_interval: Duration,
    advert_ttl: Duration,
    auth_timeout: Duration,
    bootstrap: Vec<Multiaddr>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    advert: watch::Receiver<NodeAdvert>,
    advert_open: bool,
    started_ms: u64,
    seq: u64,
    conns: HashMap<PeerId, Conn>,
    banned: HashMap<PeerId, Instant>,
    members: HashMap<PeerId, Member>,
    tombstones: HashMap<PeerId, Tombstone>,
    pending_requests: HashMap<OutboundRequestId, Pending>,
    /// Requests for peers not yet connected or authenticated.
    pending_auth: HashMap<PeerId, Vec<(Request, Reply<Response>)>>,
    /// Requests handed to the daemon, waiting for its answer.
    pending_inbound: FuturesUnordered<BoxFuture<'static, InboundReply>>,
    pending_providers: HashMap<QueryId, (HashSet<PeerId>, Reply<Vec<PeerId>>)>,
    pending_start_providing: HashMap<QueryId, Reply<()>>,
    last_bootstrap: Option<Instant>,
    last_bootstrap_dial: Instant,
    /// Provider records each peer stored here, with when they expire.
    remote_providers: HashMap<PeerId, HashMap<RecordKey, Instant>>,
    /// Their number, all peers together.
    remote_provider_count: usize,
    last_provider_prune: Instant,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// The IP address a multiaddr starts with, if any.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

fn advert_addrs(advert: &NodeAdvert) -> Vec<Multiaddr> {
    advert
        .listen_addrs
        .iter()
        .filter_map(|a| a.parse().ok())
        .take(MAX_PEER_ADDRS)
        .collect()
}

impl Actor {
    /// Builds the Swarm, subscribes to the topics, binds every listen
    /// address and dials the bootstrap peers.
    pub(crate) async fn start(
        config: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        advert: watch::Receiver<NodeAdvert>,
    ) -> Result<Actor, NetError> {
        let mut swarm = build_swarm(&config)?;
        for topic in Topic::ALL {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(topic.as_str()))
                .map_err(|e| NetError::Transport(format!("subscribing to {topic}: {e}")))?;
        }
        let mut waiting = HashMap::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            waiting.insert(id, addr.clone());
        }
        let deadline = tokio::time::sleep(LISTEN_TIMEOUT);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        info!(%address, "listening");
                        waiting.remove(&listener_id);
                    }
                    SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                        if let Some(addr) = waiting.remove(&listener_id) {
                            let reason = match reason {
                                Ok(()) => "listener closed".to_string(),
                                Err(e) => e.to_string(),
                            };
                            return Err(NetError::Listen { addr, reason });
                        }
                    }
                    SwarmEvent::ListenerError { listener_id, error } => {
                        if let Some(addr) = waiting.remove(&listener_id) {
                            return Err(NetError::Listen { addr, reason: error.to_string() });
                        }
                    }
                    other => trace!(?other, "event while starting"),
                },
                () = &mut deadline => {
                    let addr = waiting.into_values().next().expect("loop runs while some listener waits");
                    return Err(NetError::Listen {
                        addr,
                        reason: format!("no address bound within {LISTEN_TIMEOUT:?}"),
                    });
                }
            }
        }

        let mut actor = Actor {
            local: *swarm.local_peer_id(),
            swarm,
            secret: config.cluster_secret,
            advert_interval: config.advert_interval,
            advert_ttl: config.advert_ttl,
            auth_timeout: config.auth_timeout,
            bootstrap: config.bootstrap,
            commands,
            events,
            advert,
            advert_open: true,
            started_ms: unix_ms(),
            seq: 0,
            conns: HashMap::new(),
            banned: HashMap::new(),
            members: HashMap::new(),
            tombstones: HashMap::new(),
            pending_requests: HashMap::new(),
            pending_auth: HashMap::new(),
            pending_inbound: FuturesUnordered::new(),
            pending_providers: HashMap::new(),
            pending_start_providing: HashMap::new(),
            last_bootstrap: None,
            last_bootstrap_dial: Instant::now(),
            remote_providers: HashMap::new(),
            remote_provider_count: 0,
            last_provider_prune: Instant::now(),
        };
        actor.dial_bootstrap();
        Ok(actor)
    }

    /// The event loop, until shutdown or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        info!(peer = %self.local, "net started");
        let mut advert_tick = tokio::time::interval(self.advert_interval);
        advert_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let period = (self.advert_interval.min(self.auth_timeout) / 4)
            .clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut housekeeping = tokio::time::interval(period);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let shutdown = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if let Some(reply) = self.on_command(command) {
                            break Some(reply);
                        }
                    }
                    None => break None,
                },
                changed = self.advert.changed(), if self.advert_open => match changed {
                    Ok(()) => self.publish_advert(),
                    Err(_) => {
                        debug!("advert source closed; republishing the last advert");
                        self.advert_open = false;
                    }
                },
                _ = advert_tick.tick() => self.publish_advert(),
                _ = housekeeping.tick() => self.housekeeping(),
                Some(reply) = self.pending_inbound.next(), if !self.pending_inbound.is_empty() => {
                    self.on_inbound_reply(reply);
                }
            }
        };
        self.close().await;
        info!("net stopped");
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Closes every connection (waiting up to [`CLOSE_TIMEOUT`] for them to
    /// go), then drops the Swarm. Pending replies are dropped with it, so
    /// their callers see `NetError::Stopped`.
    async fn close(mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let swarm = &mut self.swarm;
        let drained = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while swarm.connected_peers().next().is_some() {
                if swarm.next().await.is_none() {
                    break;
                }
            }
        })
        .await;
        if drained.is_err() {
            debug!("connections still open at shutdown; dropping them");
        }
    }

    fn dial_bootstrap(&mut self) {
        self.last_bootstrap_dial = Instant::now();
        for addr in self.bootstrap.clone() {
            if addr.iter().last() == Some(Protocol::P2p(self.local)) {
                trace!(%addr, "not dialing this node itself");
                continue;
            }
            if let Err(error) = self.swarm.dial(addr.clone()) {
                warn!(%addr, %error, "cannot dial bootstrap peer");
            }
        }
    }

    /// Handles a command; returns the reply to send once stopped if it asked
    /// to shut down.
    fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::AuthenticatedPeers(reply) => {
                let mut peers: Vec<PeerId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.is_authenticated())
                    .map(|(p, _)| *p)
                    .collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::Request {
                peer,
                request,
                reply,
            } => self.request(peer, request, reply),
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Dial { addr, reply } => {
                let result = self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
                    target: addr.to_string(),
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::StartProviding { key, reply } => {
                let key = RecordKey::new(key.as_bytes());
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        self.pending_start_providing.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Kad(e.to_string())));
                    }
                }
            }
            Command::GetProviders { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(RecordKey::new(key.as_bytes()));
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn request(&mut self, peer: PeerId, request: Request, reply: Reply<Response>) {
        if peer == self.local {
            let _ = reply.send(Err(NetError::Request {
                peer,
                reason: "a node does not send requests to itself".into(),
            }));
            return;
        }
        match self.conns.get(&peer).map(Conn::is_authenticated) {
            Some(true) => self.send_rpc(peer, request, Pending::User(reply)),
            Some(false) => self
                .pending_auth
                .entry(peer)
                .or_default()
                .push((request, reply)),
            None if self.banned.contains_key(&peer) => {
                let _ = reply.send(Err(NetError::NotAuthenticated(peer)));
            }
            None => {
                let addrs = self
                    .members
                    .get(&peer)
                    .map(|m| advert_addrs(&m.advert))
                    .unwrap_or_default();
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                        self.pending_auth
                            .entry(peer)
                            .or_default()
                            .push((request, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial {
                            target: peer.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
        }
    }

    fn send_rpc(&mut self, peer: PeerId, request: Request, pending: Pending) {
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
        self.pending_requests.insert(id, pending);
    }

    fn fail_pending_auth(&mut self, peer: PeerId, error: impl Fn() -> NetError) {
        for (_, reply) in self.pending_auth.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(error()));
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        if topic == Topic::Adverts {
            return Err(NetError::Publish {
                topic,
                reason: "adverts are published by the net layer itself".into(),
            });
        }
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(NetError::Publish {
                topic,
                reason: format!(
                    "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes",
                    data.len()
                ),
            });
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic.as_str()), data)
            .map(|_| ())
            .map_err(|e| NetError::Publish {
                topic,
                reason: e.to_string(),
            })
    }

    /// The daemon's advert with what the net layer knows filled in.
    fn stamped_advert(&mut self) -> NodeAdvert {
        let mut advert = self.advert.borrow_and_update().clone();
        advert.peer_id = self.local.to_string();
        if advert.version.is_empty() {
            advert.version = VERSION.to_string();
        }
        advert.started_ms = self.started_ms;
        self.seq += 1;
        advert.seq = self.seq;
        advert.timestamp_ms = unix_ms();
        // peers refuse an advert with more; the first ones are enough to
        // reach this node
        advert.listen_addrs = self
            .swarm
            .listeners()
            .map(ToString::to_string)
            .take(MAX_LISTEN_ADDRS)
            .collect();
        advert
    }

    fn publish_advert(&mut self) {
        let advert = self.stamped_advert();
        if let Err(error) = advert.check_bounds() {
            warn!(%error, "this node's advert is over a bound peers check; they will refuse it");
        }
        let bytes = match advert.encode() {
            Ok(bytes) => bytes,
            Err(error) => {
                warn!(%error, "cannot encode this node's advert; not publishing it");
                return;
            }
        };
        let topic = IdentTopic::new(Topic::Adverts.as_str());
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => trace!(seq = advert.seq, "advert published"),
            Err(PublishError::NoPeersSubscribedToTopic) => {
                trace!("no authenticated peer to send the advert to yet");
            }
            Err(error) => debug!(%error, "advert not published"),
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut peers: Vec<PeerInfo> = self
            .members
            .iter()
            .map(|(peer, member)| {
                let conn = self.conns.get(peer);
                let addrs = match conn {
                    Some(c) if !c.listen_addrs.is_empty() => c.listen_addrs.clone(),
                    _ => advert_addrs(&member.advert),
                };
                PeerInfo {
                    peer_id: *peer,
                    advert: member.advert.clone(),
                    addrs,
                    remote_ip: conn.and_then(|c| c.remote_ip),
                    connected: conn.is_some_and(Conn::is_authenticated),
                    last_seen_age: now.saturating_duration_since(member.last_seen),
                }
            })
            .collect();
        peers.sort_by_key(|p| p.peer_id);
        peers
    }

    fn emit(&self, event: NetEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                warn!(?event, "net event queue full; dropping the event");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => trace!("no one listens to net events"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Auth(event)) => self.on_auth_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => self.on_connection_established(peer_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, num_established, ?cause, "connection closed");
                if num_established == 0 {
                    self.on_disconnected(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    let reason = error.to_string();
                    self.fail_pending_auth(peer, || NetError::Dial {
                        target: peer.to_string(),
                        reason: reason.clone(),
                    });
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => debug!(%send_back_addr, %error, "incoming connection failed"),
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                info!(%address, "no longer listening");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => warn!(?addresses, ?reason, "listener closed"),
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            other => trace!(?other, "swarm event"),
        }
    }

    fn on_connection_established(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        if !self.is_authenticated(&peer) {
            // Nothing is published to, forwarded to or accepted from the peer
            // until it proves the secret.
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, UNAUTHENTICATED_SCORE);
        }
        if self.banned.contains_key(&peer) {
            debug!(peer = %peer, "closing a connection from a peer that recently failed authentication");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let dialed = match endpoint {
            ConnectedPoint::Dialer { address, .. } => Some(without_p2p(address.clone())),
            ConnectedPoint::Listener { .. } => None,
        };
        let remote_ip = ip_of(endpoint.get_remote_address());
        match self.conns.entry(peer) {
            Entry::Occupied(mut entry) => {
                let conn = entry.get_mut();
                if conn.dialed_addr.is_none() {
                    conn.dialed_addr = dialed;
                }
                if conn.remote_ip.is_none() {
                    conn.remote_ip = remote_ip;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Conn {
                    auth: AuthState::Pending {
                        deadline: Instant::now() + self.auth_timeout,
                        held: Vec::new(),
                    },
                    dialed_addr: dialed,
                    remote_ip,
                    listen_addrs: Vec::new(),
                    proofs_sent: 0,
                });
                self.send_proof(peer);
                debug!(peer = %peer, "connected; exchanging cluster proofs");
            }
        }
    }

    /// Sends this node's cluster proof to `peer`.
    fn send_proof(&mut self, peer: PeerId) {
        if let Some(conn) = self.conns.get_mut(&peer) {
            conn.proofs_sent = conn.proofs_sent.saturating_add(1);
        }
        let proof = AuthProof::new(&self.secret, &self.local.to_bytes(), &peer.to_bytes());
        self.swarm
            .behaviour_mut()
            .auth
            .send_request(&peer, AuthRequest { proof });
    }

    fn on_disconnected(&mut self, peer: PeerId) {
        if let Some(conn) = self.conns.remove(&peer) {
            debug!(peer = %peer, authenticated = conn.is_authenticated(), "peer disconnected");
        }
        // whatever closed it, the peer never proved the secret
        self.fail_pending_auth(peer, || NetError::NotAuthenticated(peer));
    }

    fn is_authenticated(&self, peer: &PeerId) -> bool {
        self.conns.get(peer).is_some_and(Conn::is_authenticated)
    }

    fn on_auth_event(&mut self, event: request_response::Event<AuthRequest, AuthResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !self.conns.contains_key(&peer) {
                    return;
                }
                let ok =
                    request
                        .proof
                        .verify(&self.secret, &peer.to_bytes(), &self.local.to_bytes());
                let verdict = if ok {
                    AuthResponse::Accepted
                } else {
                    AuthResponse::Rejected
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .auth
                    .send_response(channel, verdict);
                if ok {
                    self.on_authenticated(peer);
                } else {
                    self.reject(peer, "wrong cluster proof");
                }
            }
            request_response::Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => match response {
                AuthResponse::Accepted => {
                    debug!(peer = %peer, "peer accepted this node's cluster proof")
                }
                AuthResponse::Rejected => warn!(
                    peer = %peer,
                    "peer rejected this node's cluster proof; check that both nodes use the same cluster secret"
                ),
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(peer = %peer, %error, "cluster proof not delivered");
                // Two nodes dialing each other at once keep one of the two
                // connections; a proof sent on the one that closed is sent
                // again on the one that stays, or the peer would hold this
                // node's requests until its auth deadline.
                let again = self
                    .conns
                    .get(&peer)
                    .is_some_and(|c| c.proofs_sent < MAX_PROOF_SENDS)
                    && self.swarm.is_connected(&peer);
                if again {
                    self.send_proof(peer);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(peer = %peer, %error, "cluster proof not received");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_authenticated(&mut self, peer: PeerId) {
        let Some(conn) = self.conns.get_mut(&peer) else {
            return;
        };
        let held = match std::mem::replace(&mut conn.auth, AuthState::Authenticated) {
            AuthState::Pending { held, .. } => held,
            AuthState::Authenticated => return,
        };
        let addrs = if conn.listen_addrs.is_empty() {
            conn.dialed_addr.iter().cloned().collect()
        } else {
            conn.listen_addrs.clone()
        };
        debug!(peer = %peer, "peer proved the cluster secret");
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossipsub.set_application_score(&peer, 0.0);
        for addr in addrs {
            behaviour.kad.add_address(&peer, addr);
        }
        if self
            .last_bootstrap
            .is_none_or(|t| t.elapsed() >= BOOTSTRAP_THROTTLE)
            && behaviour.kad.bootstrap().is_ok()
        {
            self.last_bootstrap = Some(Instant::now());
        }
        for (request, channel) in held {
            self.serve(peer, request, channel);
        }
        for (request, reply) in self.pending_auth.remove(&peer).unwrap_or_default() {
            self.send_rpc(peer, request, Pending::User(reply));
        }
        self.send_rpc(peer, Request::Hello, Pending::Hello);
    }

    /// Disconnects a peer that failed to prove the secret and refuses it for
    /// a while. Requests it sent stay unanswered.
    fn reject(&mut self, peer: PeerId, reason: &'static str) {
        warn!(peer = %peer, reason, "disconnecting a peer that did not prove the cluster secret");
        self.banned.insert(peer, Instant::now() + BAN);
        self.conns.remove(&peer);
        self.fail_pending_auth(peer, || NetError::NotAuthenticated(peer));
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_rpc_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_inbound_request(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match self.pending_requests.remove(&request_id) {
                Some(Pending::User(reply)) => {
                    let _ = reply.send(Ok(response));
                }
                Some(Pending::Hello) => match response {
                    Response::Hello(advert) => self.on_advert(peer, *advert),
                    other => debug!(peer = %peer, ?other, "unexpected answer to hello"),
                },
                None => debug!(peer = %peer, "answer to an unknown request"),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => match self.pending_requests.remove(&request_id) {
                Some(Pending::User(reply)) => {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
                Some(Pending::Hello) => debug!(peer = %peer, %error, "hello failed"),
                None => {}
            },
            request_response::Event::InboundFailure { peer, error, .. } => match error {
                request_response::InboundFailure::Io(e)
                    if e.kind() == std::io::ErrorKind::InvalidData =>
                {
                    warn!(peer = %peer, error = %e, "refused a malformed request");
                }
                error => debug!(peer = %peer, %error, "inbound request failed"),
            },
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        match self.conns.get_mut(&peer).map(|c| &mut c.auth) {
            Some(AuthState::Authenticated) => self.serve(peer, request, channel),
            Some(AuthState::Pending { held, .. }) if held.len() < MAX_HELD_REQUESTS => {
                debug!(peer = %peer, "holding a request until the peer proves the cluster secret");
                held.push((request, channel));
            }
            _ => self.reject(peer, "sent requests without proving the cluster secret"),
        }
    }

    /// Answers an authenticated peer's request, itself or through the daemon.
    fn serve(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        if let Request::Hello = request {
            let advert = self.stamped_advert();
            self.respond(channel, Response::Hello(Box::new(advert)));
            return;
        }
        let (reply, answer) = oneshot::channel();
        let event = NetEvent::InboundRequest {
            peer,
            request,
            reply,
        };
        match self.events.try_send(event) {
            Ok(()) => self
                .pending_inbound
                .push(Box::pin(async move { (channel, answer.await) })),
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(peer = %peer, "net event queue full; answering busy");
                self.respond(
                    channel,
                    Response::error(ErrorCode::Busy, "node is overloaded; retry later"),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.respond(
                channel,
                Response::error(ErrorCode::Unsupported, "this node serves no requests"),
            ),
        }
    }

    fn on_inbound_reply(&mut self, (channel, answer): InboundReply) {
        let response = answer.unwrap_or_else(|_| {
            Response::error(ErrorCode::Internal, "the request was dropped unanswered")
        });
        self.respond(channel, response);
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, response: Response) {
        if self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response)
            .is_err()
        {
            debug!("requester went away before the answer");
        }
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            trace!(?event, "gossipsub");
            return;
        };
        let acceptance = self.judge(propagation_source, message);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    /// Decides a gossip message's fate, acting on it if accepted.
    fn judge(&mut self, via: PeerId, message: gossipsub::Message) -> MessageAcceptance {
        if !self.is_authenticated(&via) {
            warn!(peer = %via, "rejecting gossip from a peer that has not proven the cluster secret");
            return MessageAcceptance::Reject;
        }
        let Some(source) = message.source else {
            return MessageAcceptance::Reject;
        };
        let Some(topic) = Topic::from_wire(message.topic.as_str()) else {
            return MessageAcceptance::Ignore;
        };
        match topic {
            Topic::Adverts => match NodeAdvert::decode(&message.data) {
                Ok(advert) if advert.peer_id == source.to_string() => {
                    self.on_advert(source, advert);
                    MessageAcceptance::Accept
                }
                Ok(advert) => {
                    debug!(peer = %via, %source, named = %advert.peer_id, "advert names another node than its author");
                    MessageAcceptance::Reject
                }
                Err(error) => {
                    warn!(peer = %via, %source, %error, "malformed advert refused");
                    MessageAcceptance::Reject
                }
            },
            topic => {
                // not passed on (nor forwarded by gossipsub) unless it
                // decodes within its bounds and a tag version is its
                // signer's own
                let refused = match topic {
                    Topic::Tags => match TagUpdate::decode(&message.data) {
                        Ok(u) if u.version.origin != source.to_string() => {
                            Some("a tag version whose origin is not its signer".to_string())
                        }
                        Ok(_) => None,
                        Err(error) => Some(error.to_string()),
                    },
                    Topic::Jobs => JobGossip::decode(&message.data)
                        .err()
                        .map(|e| e.to_string()),
                    Topic::Ledger => match LedgerGossip::decode(&message.data) {
                        Ok(g) if g.entries.iter().any(|e| e.origin != source.to_string()) => {
                            Some("a ledger entry whose origin is not its signer".to_string())
                        }
                        Ok(_) => None,
                        Err(error) => Some(error.to_string()),
                    },
                    Topic::Adverts => None,
                };
                if let Some(error) = refused {
                    warn!(peer = %via, %source, %topic, %error, "gossip refused");
                    return MessageAcceptance::Reject;
                }
                self.emit(NetEvent::Gossip {
                    topic,
                    source,
                    data: message.data,
                });
                MessageAcceptance::Accept
            }
        }
    }

    /// Records an advert authored by `author` in the membership table.
    fn on_advert(&mut self, author: PeerId, advert: NodeAdvert) {
        if author == self.local || advert.peer_id != author.to_string() {
            return;
        }
        let now = Instant::now();
        match self.members.entry(author) {
            Entry::Occupied(mut entry) => {
                let member = entry.get_mut();
                if advert.is_newer_than(&member.advert) {
                    member.advert = advert;
                    member.last_seen = now;
                }
            }
            Entry::Vacant(entry) => {
                if let Some(t) = self.tombstones.get(&author)
                    && (advert.started_ms, advert.seq) <= t.last
                {
                    trace!(peer = %author, "ignoring a stale advert from a gone peer");
                    return;
                }
                self.tombstones.remove(&author);
                info!(peer = %author, "peer joined");
                entry.insert(Member {
                    advert,
                    last_seen: now,
                });
                self.emit(NetEvent::PeerUp(author));
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let (id, result, step) = match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => (id, result, step),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => {
                self.on_provider_record(record);
                return;
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(_),
                        ..
                    },
            } => {
                debug!(peer = %source, "dropping a kademlia value: weft stores none");
                return;
            }
            event => {
                trace!(?event, "kademlia");
                return;
            }
        };
        match result {
            QueryResult::GetProviders(result) => {
                if let Some((found, _)) = self.pending_providers.get_mut(&id) {
                    match result {
                        Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                            found.extend(providers);
                        }
                        Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {}
                        Err(error) => debug!(%error, "provider lookup ended early"),
                    }
                }
                if step.last
                    && let Some((found, reply)) = self.pending_providers.remove(&id)
                {
                    let mut providers: Vec<PeerId> = found.into_iter().collect();
                    providers.sort();
                    let _ = reply.send(Ok(providers));
                }
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_start_providing.remove(&id) {
                    let _ =
                        reply.send(result.map(|_| ()).map_err(|e| NetError::Kad(e.to_string())));
                }
            }
            QueryResult::Bootstrap(result) => debug!(?result, "kademlia bootstrap step"),
            other => trace!(?other, "kademlia query"),
        }
    }

    /// Stores a provider record a peer sent (Kademlia `ADD_PROVIDER`; the
    /// provider is the sender): only from a peer that proved the cluster
    /// secret, and at most [`MAX_PROVIDER_RECORDS_PER_PEER`] per peer and
    /// [`MAX_REMOTE_PROVIDER_RECORDS`] in all, so peers can neither fill the
    /// store nor crowd out this node's own announcements.
    fn on_provider_record(&mut self, mut record: ProviderRecord) {
        let peer = record.provider;
        if !self.is_authenticated(&peer) {
            warn!(peer = %peer, "dropping a provider record from a peer that has not proven the cluster secret");
            return;
        }
        let now = Instant::now();
        let keys = self.remote_providers.entry(peer).or_default();
        let before = keys.len();
        keys.retain(|_, expires| *expires > now);
        self.remote_provider_count -= before - keys.len();
        let expires = now + PROVIDER_RECORD_TTL;
        match keys.get_mut(&record.key) {
            Some(at) => *at = expires,
            None => {
                if keys.len() >= MAX_PROVIDER_RECORDS_PER_PEER
                    || self.remote_provider_count >= MAX_REMOTE_PROVIDER_RECORDS
                {
                    debug!(peer = %peer, held = keys.len(), "dropping a provider record over the limit");
                    return;
                }
                keys.insert(record.key.clone(), expires);
                self.remote_provider_count += 1;
            }
        }
        record.addresses.truncate(MAX_PEER_ADDRS);
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .add_provider(record)
        {
            debug!(peer = %peer, ?error, "provider record not stored");
        }
    }

    /// Forgets expired provider records in the per-peer counts.
    fn prune_provider_counts(&mut self, now: Instant) {
        let mut dropped = 0;
        self.remote_providers.retain(|_, keys| {
            let before = keys.len();
            keys.retain(|_, expires| *expires > now);
            dropped += before - keys.len();
            !keys.is_empty()
        });
        self.remote_provider_count -= dropped;
        self.last_provider_prune = now;
    }

    fn on_identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&peer_id) else {
            return;
        };
        conn.listen_addrs = info
            .listen_addrs
            .into_iter()
            .map(without_p2p)
            .take(MAX_PEER_ADDRS)
            .collect();
        if conn.is_authenticated() {
            for addr in conn.listen_addrs.clone() {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
    }

    fn on_mdns_event(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        for (peer, addr) in found {
            if peer == self.local
                || self.swarm.is_connected(&peer)
                || self.banned.contains_key(&peer)
            {
                continue;
            }
            debug!(peer = %peer, %addr, "discovered on the LAN");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                trace!(peer = %peer, %error, "not dialing discovered peer");
            }
        }
    }

    /// Timers: authentication deadlines, advert expiry, bans, bootstrap
    /// redials.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let late: Vec<PeerId> = self
            .conns
            .iter()
            .filter(
                |(_, c)| matches!(c.auth, AuthState::Pending { deadline, .. } if deadline <= now),
            )
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            self.reject(peer, "no cluster proof in time");
        }

        let ttl = self.advert_ttl;
        let gone: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > ttl)
            .map(|(p, _)| *p)
            .collect();
        for peer in gone {
            if let Some(member) = self.members.remove(&peer) {
                info!(peer = %peer, "peer gone: advert expired");
                self.tombstones.insert(
                    peer,
                    Tombstone {
                        last: (member.advert.started_ms, member.advert.seq),
                        at: now,
                    },
                );
                self.emit(NetEvent::PeerGone(peer));
            }
        }

        self.banned.retain(|_, until| *until > now);
        if now.saturating_duration_since(self.last_provider_prune) >= PROVIDER_PRUNE_EVERY {
            self.prune_provider_counts(now);
        }
        self.tombstones
            .retain(|_, t| now.saturating_duration_since(t.at) < TOMBSTONE_TTL);

        if !self.bootstrap.is_empty()
            && !self.conns.values().any(Conn::is_authenticated)
            && self.last_bootstrap_dial.elapsed() >= BOOTSTRAP_REDIAL
        {
            debug!("no authenticated peer; dialing the bootstrap peers again");
            self.dial_bootstrap();
        }
    }
}
