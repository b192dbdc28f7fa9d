//! Serving blobs to other nodes: one task per incoming connection (the
//! cluster-secret exchange first, then one task per request stream). At
//! most [`MAX_UNAUTHENTICATED`] connections may be waiting to prove the
//! secret at once (more are refused unseen), each closed if it has not
//! within [`UNAUTHENTICATED_TIMEOUT`]; one that fails the proof is closed at
//! once. Each
//! request is encoded on a blocking thread, straight from the blob file and
//! its outboard and checked against the id as it is read, and streamed out
//! in large chunks.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bao_tree::BaoTree;
use bao_tree::io::EncodeError;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::{Outboard, ReadAt, encode_ranges_validated};
use bytes::{Bytes, BytesMut};
use libp2p::PeerId;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, instrument, warn};
use weft_protocol::auth::SECRET_LEN;
use weft_protocol::transfer::{
    CLOSE_AUTH_FAILED, CLOSE_PROTOCOL, GetRequest, GetResponse, GroupRanges, MAX_REQUEST_BYTES,
    RESET_CORRUPT_SOURCE, RESET_INTERNAL, groups,
};
use weft_protocol::{ErrorCode, Hash};

use super::Faults;
use super::endpoint::{StreamError, server_auth, write_frame};
use super::pull::chunk_ranges;
use crate::api::Metrics;
use crate::store::{BLOCK_SIZE, Store};
use weft_protocol::transfer::{FRAME_PREFIX, frame_len};

/// Bytes handed to quinn at a time.
const SEND_CHUNK: usize = 256 * 1024;

/// Encoded chunks queued between the encoder thread and the stream.
const SEND_QUEUE: usize = 8;

/// Requests encoded at once by this node, all connections together.
const MAX_ENCODERS: usize = 64;

/// How long a client has to send its request once it opened a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Incoming connections that have not yet proven the cluster secret, at
/// once; more are refused before their handshake.
pub(super) const MAX_UNAUTHENTICATED: usize = 64;

/// How long an incoming connection has, from its first packet, for the TLS
/// handshake and the cluster proof together; then it is closed.
pub(super) const UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(5);

/// What every serving task shares.
pub(super) struct ServeCtx {
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) local: PeerId,
    pub(super) secret: [u8; SECRET_LEN],
    pub(super) faults: Faults,
    /// Transport settings for clients on loopback.
    loopback_server: Arc<quinn::ServerConfig>,
    encoders: Semaphore,
    /// Room for connections not yet authenticated.
    unauthenticated: Semaphore,
    /// When the next byte may leave, under `faults.max_send_rate`.
    pacer: Mutex<Instant>,
    /// Who answers service streams, once the services are up.
    streams: super::StreamsSlot,
}

impl ServeCtx {
    pub(super) fn new(
        store: Store,
        metrics: Arc<Metrics>,
        local: PeerId,
        secret: [u8; SECRET_LEN],
        faults: Faults,
        loopback_server: Arc<quinn::ServerConfig>,
        streams: super::StreamsSlot,
    ) -> Self {
        ServeCtx {
            store,
            metrics,
            local,
            secret,
            faults,
            loopback_server,
            encoders: Semaphore::new(MAX_ENCODERS),
            unauthenticated: Semaphore::new(MAX_UNAUTHENTICATED),
            pacer: Mutex::new(Instant::now()),
            streams,
        }
    }

    /// Waits until `n` more bytes fit the test-only send rate.
    async fn pace(&self, n: usize) {
        let Some(rate) = self.faults.max_send_rate.filter(|r| *r > 0) else {
            return;
        };
        let at = {
            let mut next = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Serves one incoming connection until it closes.
#[instrument(skip_all, fields(remote = %incoming.remote_address()))]
pub(super) async fn connection(incoming: quinn::Incoming, ctx: Arc<ServeCtx>) {
    // held until the peer proves the cluster secret
    let Ok(unauthenticated) = ctx.unauthenticated.try_acquire() else {
        debug!(
            limit = MAX_UNAUTHENTICATED,
            "refusing a data-plane connection: too many not yet authenticated"
        );
        incoming.refuse();
        return;
    };
    let deadline = tokio::time::Instant::now() + UNAUTHENTICATED_TIMEOUT;
    let connecting = if incoming.remote_address().ip().is_loopback() {
        incoming.accept_with(ctx.loopback_server.clone())
    } else {
        incoming.accept()
    };
    let connecting = match connecting {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "cannot accept connection");
            return;
        }
    };
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    let peer =
        match tokio::time::timeout_at(deadline, server_auth(&conn, &ctx.secret, ctx.local)).await {
            Ok(Ok(peer)) => peer,
            Ok(Err(reason)) => {
                warn!(%reason, "refusing a data-plane connection");
                conn.close(VarInt::from_u32(CLOSE_AUTH_FAILED), reason.as_bytes());
                return;
            }
            Err(_) => {
                warn!("refusing a data-plane connection: no proof of the cluster secret in time");
                conn.close(VarInt::from_u32(CLOSE_AUTH_FAILED), b"no proof in time");
                return;
            }
        };
    drop(unauthenticated);
    debug!(%peer, "data-plane connection authenticated");
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    requests.spawn(request(ctx.clone(), peer, send, recv));
                }
                Err(e) => {
                    let st = conn.stats();
                    debug!(
                        %peer,
                        reason = %e,
                        mtu = st.path.current_mtu,
                        sent_packets = st.path.sent_packets,
                        lost_packets = st.path.lost_packets,
                        probes = st.path.sent_plpmtud_probes,
                        lost_probes = st.path.lost_plpmtud_probes,
                        black_holes = st.path.black_holes_detected,
                        tx_ios = st.udp_tx.ios,
                        tx_datagrams = st.udp_tx.datagrams,
                        "data-plane connection closed"
                    );
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
}

/// Serves one request stream.
#[instrument(skip_all, fields(%peer, stream = %send.id()))]
async fn request(ctx: Arc<ServeCtx>, peer: PeerId, mut send: SendStream, mut recv: RecvStream) {
    // the first four bytes: a blob request's frame length, or the mark of a
    // service request
    let mut prefix = [0u8; FRAME_PREFIX];
    let first = match tokio::time::timeout(REQUEST_TIMEOUT, recv.read_exact(&mut prefix)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StreamError::from(e)),
        Err(_) => Err(StreamError::Timeout(REQUEST_TIMEOUT)),
    };
    if first.is_ok() && prefix == weft_protocol::service::SERVICE_STREAM_MAGIC {
        let streams = ctx
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match streams {
            Some(streams) => streams.serve(peer, send, recv).await,
            None => {
                let _ = send.reset(VarInt::from_u32(CLOSE_PROTOCOL));
            }
        }
        return;
    }
    let read = async {
        first?;
        let len = frame_len(prefix, MAX_REQUEST_BYTES)?;
        let mut payload = vec![0u8; len];
        recv.read_exact(&mut payload).await?;
        Ok::<_, StreamError>(payload)
    };
    let req = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(payload)) => GetRequest::decode(&payload).map_err(StreamError::from),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StreamError::Timeout(REQUEST_TIMEOUT)),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "bad request");
            let answer = GetResponse::Error {
                code: ErrorCode::BadRequest,
                message: e.to_string(),
            };
            if let Ok(f) = answer.to_frame() {
                let _ = write_frame(&mut send, &f).await;
            }
            let _ = send.finish();
            if matches!(e, StreamError::Frame(_)) {
                let _ = recv.stop(VarInt::from_u32(CLOSE_PROTOCOL));
            }
            return;
        }
    };
    let sent = match serve(&ctx, &req, &mut send).await {
        Ok(n) => {
            let _ = send.finish();
            n
        }
        Err((n, code, e)) => {
            debug!(id = %req.hash, error = %e, "request failed");
            let _ = send.reset(VarInt::from_u32(code));
            n
        }
    };
    if sent > 0 {
        ctx.metrics.peer_bytes(&peer.to_string(), 0, sent);
    }
}

/// Answers `req` on `send`; returns the bytes sent, or (bytes sent, reset
/// code, why) on failure.
async fn serve(
    ctx: &Arc<ServeCtx>,
    req: &GetRequest,
    send: &mut SendStream,
) -> Result<u64, (u64, u32, String)> {
    let internal = |e: String| (0, RESET_INTERNAL, e);
    let store = ctx.store.clone();
    let hash = req.hash;
    let held = tokio::task::spawn_blocking(move || -> Result<Option<(u64, bool)>, String> {
        if !store.has(&hash).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        let size = store.blob_size(&hash).map_err(|e| e.to_string())?;
        let tree = store.is_tree(&hash).map_err(|e| e.to_string())?;
        Ok(Some((size, tree)))
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)?;
    let Some((size, tree)) = held else {
        let f = GetResponse::NotFound
            .to_frame()
            .map_err(|e| internal(e.to_string()))?;
        write_frame(send, &f)
            .await
            .map_err(|e| internal(e.to_string()))?;
        return Ok(0);
    };
    let n = groups(size);
    let mut ranges = req.ranges.intersection(&GroupRanges::all(size));
    if req.size_proof && n > 0 {
        ranges = ranges.union(&GroupRanges::range(n - 1, n));
    }
    let header = GetResponse::Found {
        size,
        tree,
        ranges: ranges.clone(),
    }
    .to_frame()
    .map_err(|e| internal(e.to_string()))?;
    write_frame(send, &header)
        .await
        .map_err(|e| internal(e.to_string()))?;
    if ranges.is_empty() {
        return Ok(header.len() as u64);
    }
    let _permit = ctx
        .encoders
        .acquire()
        .await
        .map_err(|e| internal(e.to_string()))?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
    let store = ctx.store.clone();
    let flip = ctx.faults.flip_bytes;
    let encoder =
        tokio::task::spawn_blocking(move || encode_blocking(&store, hash, size, &ranges, tx, flip));
    let mut sent = header.len() as u64;
    let mut write_error = None;
    while let Some(chunk) = rx.recv().await {
        ctx.pace(chunk.len()).await;
        let len = chunk.len() as u64;
        if let Err(e) = send.write_chunk(chunk).await {
            write_error = Some(e.to_string());
            break;
        }
        sent += len;
    }
    drop(rx);
    let encoded = encoder
        .await
        .map_err(|e| (sent, RESET_INTERNAL, e.to_string()))?;
    if let Some(e) = write_error {
        return Err((sent, RESET_INTERNAL, e));
    }
    match encoded {
        Ok(()) => Ok(sent),
        Err(EncodeFailure::Corrupt(why)) => {
            tracing::error!(id = %hash, %why, "local blob failed verification while serving it; run `weft store verify`");
            Err((sent, RESET_CORRUPT_SOURCE, why))
        }
        Err(EncodeFailure::Io(e)) => Err((sent, RESET_INTERNAL, e.to_string())),
    }
}

enum EncodeFailure {
    Corrupt(String),
    Io(io::Error),
}

/// Encodes `ranges` of blob `hash` into `tx`, verifying every group and
/// parent against the id on the way.
fn encode_blocking(
    store: &Store,
    hash: Hash,
    size: u64,
    ranges: &GroupRanges,
    tx: mpsc::Sender<Bytes>,
    flip: bool,
) -> Result<(), EncodeFailure> {
    let data_path = store.blob_path(&hash);
    let data = File::open(&data_path).map_err(EncodeFailure::Io)?;
    let data = WindowReader::new(data, size);
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let mut out = ChannelWriter {
        tx,
        buf: BytesMut::with_capacity(SEND_CHUNK),
        flip,
    };
    let chunks = chunk_ranges(ranges);
    let result = if tree.outboard_size() == 0 {
        encode_with(
            &data,
            PreOrderOutboard {
                root: hash.into(),
                tree,
                data: Vec::<u8>::new(),
            },
            &chunks,
            &mut out,
        )
    } else {
        let ob = File::open(store.outboard_path(&hash)).map_err(EncodeFailure::Io)?;
        encode_with(
            &data,
            PreOrderOutboard {
                root: hash.into(),
                tree,
                data: ob,
            },
            &chunks,
            &mut out,
        )
    };
    result?;
    out.flush().map_err(EncodeFailure::Io)
}

fn encode_with<O: Outboard>(
    data: &WindowReader,
    outboard: O,
    chunks: &bao_tree::ChunkRanges,
    out: &mut ChannelWriter,
) -> Result<(), EncodeFailure> {
    encode_ranges_validated(data, outboard, chunks, out).map_err(|e| match e {
        EncodeError::ParentHashMismatch(node) => {
            EncodeFailure::Corrupt(format!("outboard node {node:?} does not match"))
        }
        EncodeError::LeafHashMismatch(chunk) => {
            EncodeFailure::Corrupt(format!("data at chunk {chunk:?} does not match"))
        }
        EncodeError::Io(e) => EncodeFailure::Io(e),
        other => EncodeFailure::Io(io::Error::other(other.to_string())),
    })
}

/// Reads a file through a window of up to [`WINDOW`] bytes, so the
/// encoder's many small positioned reads cost few system calls.
struct WindowReader {
    file: File,
    /// (offset of the window, valid bytes, buffer)
    window: RefCell<(u64, usize, Box<[u8]>)>,
}

const WINDOW: usize = 1 << 20;

impl WindowReader {
    fn new(file: File, len: u64) -> Self {
        let size = usize::try_from(len).unwrap_or(WINDOW).clamp(1, WINDOW);
        WindowReader {
            file,
            window: RefCell::new((0, 0, vec![0u8; size].into_boxed_slice())),
        }
    }
}

impl ReadAt for WindowReader {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.window.borrow_mut();
        let (start, valid, data) = &mut *w;
        let in_window = pos >= *start && pos < *start + *valid as u64;
        if !in_window {
            if buf.len() >= data.len() {
                return FileExt::read_at(&self.file, buf, pos);
            }
            let mut filled = 0;
            while filled < data.len() {
                let n = FileExt::read_at(&self.file, &mut data[filled..], pos + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            *start = pos;
            *valid = filled;
            if filled == 0 {
                return Ok(0);
            }
        }
        let off = (pos - *start) as usize;
        let n = buf.len().min(*valid - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
}

/// Collects the encoder's output into [`SEND_CHUNK`]-sized buffers and hands
/// them to the stream task. With `flip` (tests only), one byte of every
/// buffer is flipped.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    flip: bool,
}

impl ChannelWriter {
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut chunk = self.buf.split();
        if self.flip {
            let mid = chunk.len() / 2;
            chunk[mid] ^= 0x55;
        }
        self.buf.reserve(SEND_CHUNK);
        self.tx
            .blocking_send(chunk.freeze())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the stream was closed"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND_CHUNK {
            self.ship()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship()
    }
}
