//! The libp2p behaviours a weft node runs, and how the Swarm is built from
//! them: QUIC and TCP (noise, yamux) transports; connection limits (per
//! peer, in total, and on handshakes in flight), identify, ping, Kademlia,
//! mDNS (optional), gossipsub and two request/response protocols
//! (`/weft/auth/1`, `/weft/rpc/1`).

use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, kad, mdns, noise, ping, tcp,
    yamux,
};
use weft_protocol::auth::{AuthRequest, AuthResponse, MAX_AUTH_BYTES};
use weft_protocol::codec::MAX_MESSAGE_BYTES;
use weft_protocol::rpc::{AUTH_PROTOCOL, IDENTIFY_PROTOCOL, KAD_PROTOCOL, RPC_PROTOCOL};
use weft_protocol::{Request, Response, VERSION};

use super::codec::CborCodec;
use super::{NetConfig, NetError};

/// Application score given to a peer until it proves the cluster secret.
/// Multiplied by the default weight (10) it is far below gossipsub's graylist
/// threshold (-80): nothing is published or forwarded to the peer and its
/// RPCs are dropped.
pub(crate) const UNAUTHENTICATED_SCORE: f64 = -1000.0;

/// How long an idle connection (no open streams) stays up.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Room in a gossipsub RPC around the largest message.
const GOSSIP_FRAME_OVERHEAD: usize = 64 * 1024;

pub(crate) type AuthBehaviour = request_response::Behaviour<CborCodec<AuthRequest, AuthResponse>>;
pub(crate) type RpcBehaviour = request_response::Behaviour<CborCodec<Request, Response>>;

/// Connections at once to one peer (a simultaneous dial makes two; TCP and
/// QUIC may each carry one).
pub(crate) const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// Established connections at once, all peers together.
pub(crate) const MAX_CONNECTIONS: u32 = 512;

/// Incoming connections still in their handshake at once.
pub(crate) const MAX_PENDING_INCOMING: u32 = 64;

/// Outgoing dials in flight at once.
pub(crate) const MAX_PENDING_OUTGOING: u32 = 128;

/// How long a provider record stays valid (Kademlia's default).
pub(crate) const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(48 * 3600);

/// Keys this node may announce itself; room the store keeps for them
/// whatever peers send.
pub(crate) const MAX_LOCAL_PROVIDED_KEYS: usize = 16 * 1024;

/// Provider records accepted from one peer.
pub(crate) const MAX_PROVIDER_RECORDS_PER_PEER: usize = 4096;

/// Provider records accepted from peers, all together.
pub(crate) const MAX_REMOTE_PROVIDER_RECORDS: usize = 64 * 1024;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so a connection over a limit is refused before any other
    /// behaviour sets up for it.
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) auth: AuthBehaviour,
    pub(crate) rpc: RpcBehaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The gossipsub heartbeat for an advert interval: frequent enough that a
/// new peer joins the mesh within about one advert interval.
fn heartbeat_for(advert_interval: Duration) -> Duration {
    advert_interval.clamp(Duration::from_millis(100), Duration::from_secs(1))
}

pub(crate) fn auth_behaviour(timeout: Duration) -> AuthBehaviour {
    request_response::Behaviour::with_codec(
        CborCodec::new(MAX_AUTH_BYTES),
        [(StreamProtocol::new(AUTH_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

pub(crate) fn rpc_behaviour(timeout: Duration) -> RpcBehaviour {
    request_response::Behaviour::with_codec(
        CborCodec::new(MAX_MESSAGE_BYTES),
        [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

/// gossipsub as weft uses it: strict signing, every message validated by the
/// net actor, flood publishing (small meshes), and peer scoring so that
/// unauthenticated peers can be graylisted.
pub(crate) fn gossipsub_behaviour(
    keypair: &Keypair,
    advert_interval: Duration,
) -> Result<gossipsub::Behaviour, NetError> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .flood_publish(true)
        .heartbeat_interval(heartbeat_for(advert_interval))
        .max_transmit_size(MAX_MESSAGE_BYTES + GOSSIP_FRAME_OVERHEAD)
        .build()
        .map_err(|e| NetError::Transport(format!("gossipsub config: {e}")))?;
    let mut behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), config)
            .map_err(|e| NetError::Transport(format!("gossipsub: {e}")))?;
    // Peers are admitted by the cluster secret, not by IP, and a test mesh
    // or a NATed site puts many nodes behind one address.
    let params = PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    behaviour
        .with_peer_score(params, PeerScoreThresholds::default())
        .map_err(|e| NetError::Transport(format!("gossipsub scoring: {e}")))?;
    Ok(behaviour)
}

fn build_behaviour(keypair: &Keypair, config: &NetConfig) -> Result<Behaviour, NetError> {
    let local = keypair.public().to_peer_id();

    let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    // Only peers that proved the cluster secret enter the routing table; the
    // actor adds them.
    kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
    // Records peers send are handed to the actor, which stores provider
    // records only from peers that proved the cluster secret, a bounded
    // number per peer; weft stores no values.
    kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
    kad_config.set_provider_record_ttl(Some(PROVIDER_RECORD_TTL));
    let store_config = kad::store::MemoryStoreConfig {
        max_provided_keys: MAX_LOCAL_PROVIDED_KEYS + MAX_REMOTE_PROVIDER_RECORDS,
        ..Default::default()
    };
    let store = kad::store::MemoryStore::with_config(local, store_config);
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    // Nodes on private networks have no confirmed external address, yet each
    // must answer the others' queries.
    kad.set_mode(Some(kad::Mode::Server));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
            .with_agent_version(format!("weft/{VERSION}")),
    );

    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| NetError::Transport(format!("mdns: {e}")))?,
        )
    } else {
        None
    };

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING));

    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        auth: auth_behaviour(config.auth_timeout),
        rpc: rpc_behaviour(config.request_timeout),
        gossipsub: gossipsub_behaviour(keypair, config.advert_interval)?,
        kad,
        identify,
        ping: ping::Behaviour::default(),
        mdns: Toggle::from(mdns),
    })
}

/// Builds the Swarm: TCP (noise, yamux) and QUIC on tokio, with [`Behaviour`].
pub(crate) fn build_swarm(config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let behaviour = build_behaviour(&config.keypair, config)?;
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(format!("tcp: {e}")))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Transport(format!("behaviour: {e:?}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
