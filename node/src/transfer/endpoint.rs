//! The quinn endpoint: TLS bound to the node key (libp2p's certificate
//! form, ALPN `weft/blobs/1`, see `tls`), the transport tuning for throughput, the
//! cluster-secret exchange on each connection's first stream, and framed
//! reads and writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, MtuDiscoveryConfig, RecvStream, SendStream, TransportConfig, VarInt};
use weft_protocol::CodecError;
use weft_protocol::auth::{AuthProof, AuthRequest, MAX_AUTH_BYTES, SECRET_LEN};
use weft_protocol::transfer::{CLOSE_AUTH_FAILED, FRAME_PREFIX, frame, frame_len};

use super::{TransferError, tls};

/// The TLS server name clients send; certificates are checked by peer id,
/// not by name.
const SERVER_NAME: &str = "weft";

/// How long each side has for the cluster-secret exchange.
pub(super) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Request streams a peer may have open on one connection at once.
pub(super) const MAX_STREAMS_PER_CONNECTION: u32 = 512;

/// Incoming connections quinn holds before the node accepts or refuses
/// them (each is then capped by the serving side's limit on connections not
/// yet authenticated).
const MAX_INCOMING: usize = 256;

/// Socket buffers asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 8 << 20;

/// Largest UDP payload path MTU discovery tries: jumbo frames carry big
/// packets, which cost far less per byte; elsewhere the probes are lost and
/// quinn stays at what works.
const MTU_UPPER_BOUND: u16 = 8952;

/// UDP payload size used over loopback, whose MTU is 64 KiB.
const LOOPBACK_MTU: u16 = 16 * 1024;

/// Largest UDP payload searched for over loopback (its MTU is 64 KiB; quinn
/// starts connections below 16 KiB, so bigger ones are reached by discovery).
const LOOPBACK_MTU_MAX: u16 = 65_000;

/// Why one stream's exchange failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StreamError {
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("sending: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("receiving: {0}")]
    Read(String),
    #[error("malformed frame: {0}")]
    Frame(#[from] CodecError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl From<quinn::ReadExactError> for StreamError {
    fn from(e: quinn::ReadExactError) -> Self {
        StreamError::Read(e.to_string())
    }
}

impl From<quinn::ReadError> for StreamError {
    fn from(e: quinn::ReadError) -> Self {
        StreamError::Read(e.to_string())
    }
}

impl From<quinn::ReadToEndError> for StreamError {
    fn from(e: quinn::ReadToEndError) -> Self {
        StreamError::Read(e.to_string())
    }
}

/// Transport settings for bulk transfer: wide windows so a sender is not
/// starved by flow control, room for many request streams, keep-alives so
/// a vanished peer is noticed. Over loopback the path MTU is known (64 KiB),
/// so big packets are used from the start and never given up; elsewhere path
/// MTU discovery looks for jumbo frames.
fn transport(loopback: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    // 10 s is a valid idle timeout: far below the varint limit
    t.max_idle_timeout(Duration::from_secs(10).try_into().ok());
    if loopback {
        // Round trips take microseconds: small windows still allow tens of
        // GB/s, and keep the sender from overrunning the receiver's socket
        // buffer when the receiver is busy hashing (lost packets cost more
        // than they save here).
        t.stream_receive_window(VarInt::from_u32(2 << 20));
        t.receive_window(VarInt::from_u32(4 << 20));
        t.send_window(8 << 20);
        t.initial_mtu(LOOPBACK_MTU);
        t.min_mtu(LOOPBACK_MTU);
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(LOOPBACK_MTU_MAX);
        mtu.black_hole_cooldown(Duration::from_secs(1));
        t.mtu_discovery_config(Some(mtu));
        // segmentation offload of packets this big over loopback loses all
        // but the first segment of each batch (seen on Linux 6.x)
        t.enable_segmentation_offload(false);
        // the default initial window is sized for 1200-byte packets; it must
        // hold at least one packet of this size (RFC 9002 asks for ten)
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(10 * u64::from(LOOPBACK_MTU));
        t.congestion_controller_factory(Arc::new(cubic));
    } else {
        t.stream_receive_window(VarInt::from_u32(8 << 20));
        t.receive_window(VarInt::from_u32(16 << 20));
        t.send_window(32 << 20);
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(MTU_UPPER_BOUND);
        mtu.black_hole_cooldown(Duration::from_secs(10));
        t.mtu_discovery_config(Some(mtu));
    }
    Arc::new(t)
}

/// A bound endpoint, and the server config it uses for loopback clients.
pub(super) struct Bound {
    pub(super) endpoint: quinn::Endpoint,
    pub(super) loopback_server: Arc<quinn::ServerConfig>,
}

fn server_config(keypair: &Keypair, loopback: bool) -> Result<quinn::ServerConfig, TransferError> {
    let tls = tls::server(keypair)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TransferError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(loopback));
    server.max_incoming(MAX_INCOMING);
    Ok(server)
}

/// Binds the endpoint on `listen`, serving with the node's certificate.
pub(super) fn bind(keypair: &Keypair, listen: SocketAddr) -> Result<Bound, TransferError> {
    let server = server_config(keypair, false)?;
    let loopback_server = Arc::new(server_config(keypair, true)?);
    let bind_err = |e: std::io::Error| TransferError::Bind {
        addr: listen,
        reason: e.to_string(),
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
    let sock = socket2::SockRef::from(&socket);
    if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP send buffer");
    }
    tracing::debug!(
        recv = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(LOOPBACK_MTU_MAX.max(MTU_UPPER_BOUND))
        .map_err(|e| TransferError::Config(e.to_string()))?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    Ok(Bound {
        endpoint,
        loopback_server,
    })
}

/// A client config that accepts only `peer`'s certificate.
fn client_config(
    keypair: &Keypair,
    peer: PeerId,
    loopback: bool,
) -> Result<quinn::ClientConfig, TransferError> {
    let tls = tls::client(keypair, peer)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TransferError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(loopback));
    Ok(config)
}

/// The peer id in the certificate the remote side presented.
pub(super) fn remote_peer_id(conn: &Connection) -> Result<PeerId, String> {
    let identity = conn
        .peer_identity()
        .ok_or_else(|| "the peer presented no certificate".to_string())?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected certificate type".to_string())?;
    let cert = certs
        .first()
        .ok_or_else(|| "the peer presented no certificate".to_string())?;
    libp2p_tls::certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| format!("not a libp2p certificate: {e}"))
}

/// Dials `peer` at `addr` and runs the client side of the cluster-secret
/// exchange. The returned connection is ready for requests.
#[tracing::instrument(skip_all, fields(%peer, %addr))]
pub(super) async fn connect(
    endpoint: &quinn::Endpoint,
    keypair: &Keypair,
    secret: &[u8; SECRET_LEN],
    peer: PeerId,
    addr: SocketAddr,
) -> Result<Connection, TransferError> {
    let fail = |reason: String| TransferError::Connect {
        peer: peer.to_string(),
        addr,
        reason,
    };
    let config = client_config(keypair, peer, addr.ip().is_loopback())?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?;
    let conn = tokio::time::timeout(AUTH_TIMEOUT, connecting)
        .await
        .map_err(|_| fail(format!("no handshake within {AUTH_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let local = keypair.public().to_peer_id();
    match tokio::time::timeout(AUTH_TIMEOUT, client_auth(&conn, secret, local, peer)).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(reason)) => {
            conn.close(VarInt::from_u32(CLOSE_AUTH_FAILED), reason.as_bytes());
            Err(TransferError::Auth {
                peer: peer.to_string(),
                reason,
            })
        }
        Err(_) => {
            let reason = format!("no proof within {AUTH_TIMEOUT:?}");
            conn.close(VarInt::from_u32(CLOSE_AUTH_FAILED), reason.as_bytes());
            Err(TransferError::Auth {
                peer: peer.to_string(),
                reason,
            })
        }
    }
}

async fn client_auth(
    conn: &Connection,
    secret: &[u8; SECRET_LEN],
    local: PeerId,
    remote: PeerId,
) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let proof = AuthProof::new(secret, &local.to_bytes(), &remote.to_bytes());
    write_frame(
        &mut send,
        &frame(&AuthRequest { proof }, MAX_AUTH_BYTES).map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let payload = read_frame(&mut recv, MAX_AUTH_BYTES).await.map_err(|e| {
        format!("the peer sent no proof ({e}); does it use the same cluster secret?")
    })?;
    let theirs = AuthRequest::decode(&payload).map_err(|e| e.to_string())?;
    if !theirs
        .proof
        .verify(secret, &remote.to_bytes(), &local.to_bytes())
    {
        return Err("its proof of the cluster secret is wrong".into());
    }
    Ok(())
}

/// The server side of the cluster-secret exchange, on the first stream the
/// client opens. Returns the client's peer id, or why it was refused (the
/// caller closes the connection).
pub(super) async fn server_auth(
    conn: &Connection,
    secret: &[u8; SECRET_LEN],
    local: PeerId,
) -> Result<PeerId, String> {
    let peer = remote_peer_id(conn)?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let payload = read_frame(&mut recv, MAX_AUTH_BYTES)
        .await
        .map_err(|e| format!("no proof of the cluster secret: {e}"))?;
    let theirs = AuthRequest::decode(&payload).map_err(|e| format!("malformed proof: {e}"))?;
    if !theirs
        .proof
        .verify(secret, &peer.to_bytes(), &local.to_bytes())
    {
        return Err("wrong proof of the cluster secret".into());
    }
    let proof = AuthProof::new(secret, &local.to_bytes(), &peer.to_bytes());
    write_frame(
        &mut send,
        &frame(&AuthRequest { proof }, MAX_AUTH_BYTES).map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    Ok(peer)
}

/// Writes an encoded frame.
pub(super) async fn write_frame(send: &mut SendStream, frame: &[u8]) -> Result<(), StreamError> {
    send.write_all(frame).await?;
    Ok(())
}

/// Reads one frame's payload, refusing one announced above `limit` before
/// reading it.
pub(super) async fn read_frame(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Vec<u8>, StreamError> {
    let mut prefix = [0u8; FRAME_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let len = frame_len(prefix, limit)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await?;
    Ok(payload)
}
