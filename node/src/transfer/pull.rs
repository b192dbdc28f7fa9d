//! One request stream, as the fetching side runs it: a blob's first request
//! (decoded in memory), and the streams of the parallel phase, whose bytes
//! are verified on a blocking thread as they arrive and written into the
//! partial blob group by group. Nothing unverified is ever written.

use std::io::{self, Read};
use std::sync::Arc;

use bao_tree::io::sync::DecodeResponseIter;
use bao_tree::io::{BaoContentItem, DecodeError, Leaf, Parent};
use bao_tree::{BaoTree, ChunkNum, ChunkRanges};
use bytes::{Buf, Bytes};
use libp2p::PeerId;
use quinn::{Connection, VarInt};
use tokio::sync::mpsc;
use weft_protocol::transfer::{
    GetRequest, GetResponse, GroupRanges, MAX_RESPONSE_BYTES, RESET_CORRUPT_SOURCE, STOP_CANCELLED,
    groups,
};
use weft_protocol::{CHUNK_GROUP_BYTES, CHUNK_GROUP_LOG, Hash};

use super::TransferHandle;
use super::discover::Provider;
use super::endpoint::{StreamError, read_frame, write_frame};
use crate::store::{BLOCK_SIZE, PartialBlob};

/// Groups asked for by a blob's first request (2 MiB): blobs up to this
/// size are fetched in one request, into memory.
pub(super) const FIRST_GROUPS: u64 = 128;

/// Why one stream to one provider failed, as the fetch acts on it.
#[derive(Debug, thiserror::Error)]
pub(super) enum PullError {
    /// The provider's bytes failed verification: ban it.
    #[error("bytes failed verification: {0}")]
    Corrupt(String),
    /// The provider answered something other than what was asked: ban it.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// The provider does not hold the blob.
    #[error("not held by the provider")]
    NotFound,
    /// The provider refused or broke off; ask it again later or others.
    #[error("{0}")]
    Transient(String),
    /// The provider cannot be reached.
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    /// Writing here failed; the whole fetch stops.
    #[error("local store: {0}")]
    Local(io::Error),
}

impl From<StreamError> for PullError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Frame(e) => PullError::Violation(format!("malformed header: {e}")),
            e => PullError::Transient(e.to_string()),
        }
    }
}

fn decode_error(e: DecodeError) -> PullError {
    match e {
        DecodeError::ParentHashMismatch(n) => {
            PullError::Corrupt(format!("parent hash at node {n:?} does not match"))
        }
        DecodeError::LeafHashMismatch(c) => {
            PullError::Corrupt(format!("chunk group at chunk {} does not match", c.0))
        }
        DecodeError::ParentNotFound(_) | DecodeError::LeafNotFound(_) => {
            PullError::Transient("the stream ended early".into())
        }
        DecodeError::Io(e) => PullError::Transient(e.to_string()),
    }
}

/// The chunk ranges (1 KiB chunks) covering chunk-group ranges.
pub(super) fn chunk_ranges(ranges: &GroupRanges) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for (s, e) in ranges.iter() {
        out |= ChunkRanges::from(ChunkNum(s << CHUNK_GROUP_LOG)..ChunkNum(e << CHUNK_GROUP_LOG));
    }
    out
}

/// A generous bound on the encoded size of `ranges`: every group's bytes
/// plus parent nodes.
fn encoded_bound(ranges: &GroupRanges) -> usize {
    let g = ranges.group_count();
    let bound = g
        .saturating_mul(CHUNK_GROUP_BYTES + 128)
        .saturating_add(64 * 64 * (ranges.range_count() as u64 + 1));
    usize::try_from(bound).unwrap_or(usize::MAX)
}

/// The result of a blob's first request.
pub(super) enum First {
    NotFound,
    /// The whole blob, verified.
    Whole {
        bytes: Vec<u8>,
        tree: bool,
        wire: u64,
    },
    /// A larger blob: its proven size, and the verified items received.
    Large {
        size: u64,
        tree: bool,
        items: Vec<BaoContentItem>,
        wire: u64,
    },
}

/// Verified groups reported to the coordinator at once (256 KiB).
const REPORT_GROUPS: u64 = 16;

/// Events from a large blob's streams to its coordinator.
pub(super) enum Event {
    /// Groups `start..end` (`bytes` bytes) are verified and written.
    Verified {
        peer: PeerId,
        start: u64,
        end: u64,
        bytes: u64,
    },
    /// A stream ended.
    Done {
        slot: u64,
        wire: u64,
        result: Result<(), PullError>,
    },
}

/// A blob's first request: its first [`FIRST_GROUPS`] groups and its last,
/// decoded into memory.
pub(super) async fn first_request(conn: &Connection, hash: Hash) -> Result<First, PullError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(StreamError::from)?;
    let req = GetRequest {
        hash,
        ranges: GroupRanges::range(0, FIRST_GROUPS),
        size_proof: true,
    };
    let frame = req
        .to_frame()
        .map_err(|e| PullError::Transient(e.to_string()))?;
    write_frame(&mut send, &frame).await?;
    send.finish().map_err(StreamError::from)?;
    let payload = read_frame(&mut recv, MAX_RESPONSE_BYTES).await?;
    let header_len = payload.len() as u64 + 4;
    let (size, tree, ranges) = match GetResponse::decode(&payload).map_err(StreamError::from)? {
        GetResponse::NotFound => return Ok(First::NotFound),
        GetResponse::Error { code, message } => {
            return Err(PullError::Transient(format!(
                "refused ({code:?}): {message}"
            )));
        }
        GetResponse::Found { size, tree, ranges } => (size, tree, ranges),
    };
    let n = groups(size);
    let mut expected = GroupRanges::range(0, FIRST_GROUPS.min(n));
    if n > 0 {
        expected = expected.union(&GroupRanges::range(n - 1, n));
    }
    if ranges != expected {
        let _ = recv.stop(VarInt::from_u32(STOP_CANCELLED));
        return Err(PullError::Violation(format!(
            "asked for the first groups and the last, got {ranges:?}"
        )));
    }
    let body = recv
        .read_to_end(encoded_bound(&ranges))
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::TooLong => {
                PullError::Violation("more bytes than the ranges encode to".into())
            }
            quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))
                if code == VarInt::from_u32(RESET_CORRUPT_SOURCE) =>
            {
                PullError::Transient("the provider's copy is corrupt".into())
            }
            e => PullError::Transient(e.to_string()),
        })?;
    let wire = header_len + body.len() as u64;
    let items = tokio::task::spawn_blocking(move || decode_all(hash, size, &ranges, &body))
        .await
        .map_err(|e| PullError::Transient(e.to_string()))??;
    if n <= FIRST_GROUPS {
        let mut bytes = vec![0u8; size as usize];
        for item in items {
            if let BaoContentItem::Leaf(Leaf { offset, data }) = item {
                let start = offset as usize;
                bytes[start..start + data.len()].copy_from_slice(&data);
            }
        }
        Ok(First::Whole { bytes, tree, wire })
    } else {
        Ok(First::Large {
            size,
            tree,
            items,
            wire,
        })
    }
}

/// Verifies a whole response held in memory.
pub(super) fn decode_all(
    hash: Hash,
    size: u64,
    ranges: &GroupRanges,
    body: &[u8],
) -> Result<Vec<BaoContentItem>, PullError> {
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let chunks = chunk_ranges(ranges);
    let mut reader = body;
    let mut items = Vec::new();
    for item in DecodeResponseIter::new(hash.into(), tree, &mut reader, &chunks) {
        let item = item.map_err(decode_error)?;
        if let BaoContentItem::Leaf(Leaf { offset, data }) = &item
            && offset.saturating_add(data.len() as u64) > size
        {
            return Err(PullError::Violation("leaf past the blob's end".into()));
        }
        items.push(item);
    }
    if !reader.is_empty() {
        return Err(PullError::Violation(format!(
            "{} bytes after the encoding",
            reader.len()
        )));
    }
    Ok(items)
}

/// One request stream of a large blob: asks `ranges` of `provider`,
/// verifies what arrives on a blocking thread, writes it into the partial
/// and reports every verified group.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(skip_all, fields(peer = %provider.peer, slot))]
pub(super) async fn pull(
    handle: TransferHandle,
    provider: Provider,
    hash: Hash,
    size: u64,
    ranges: GroupRanges,
    partial: Arc<PartialBlob>,
    slot: u64,
    events: mpsc::Sender<Event>,
) {
    let mut wire = 0u64;
    let result = match handle.connect(provider.peer, provider.addr).await {
        Ok(conn) => {
            pull_inner(
                &conn,
                hash,
                size,
                ranges,
                partial,
                provider.peer,
                &events,
                &mut wire,
            )
            .await
        }
        Err(e) => Err(PullError::Unreachable(e.to_string())),
    };
    let _ = events.send(Event::Done { slot, wire, result }).await;
}

#[allow(clippy::too_many_arguments)]
async fn pull_inner(
    conn: &Connection,
    hash: Hash,
    size: u64,
    ranges: GroupRanges,
    partial: Arc<PartialBlob>,
    peer: PeerId,
    events: &mpsc::Sender<Event>,
    wire: &mut u64,
) -> Result<(), PullError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(StreamError::from)?;
    let req = GetRequest {
        hash,
        ranges: ranges.clone(),
        size_proof: false,
    };
    let frame = req
        .to_frame()
        .map_err(|e| PullError::Transient(e.to_string()))?;
    write_frame(&mut send, &frame).await?;
    send.finish().map_err(StreamError::from)?;
    let payload = read_frame(&mut recv, MAX_RESPONSE_BYTES).await?;
    *wire += payload.len() as u64 + 4;
    let served = match GetResponse::decode(&payload).map_err(StreamError::from)? {
        GetResponse::NotFound => return Err(PullError::NotFound),
        GetResponse::Error { code, message } => {
            return Err(PullError::Transient(format!(
                "refused ({code:?}): {message}"
            )));
        }
        GetResponse::Found {
            size: theirs,
            ranges: served,
            ..
        } => {
            if theirs != size {
                return Err(PullError::Violation(format!(
                    "says the blob has {theirs} bytes; its last group proved {size}"
                )));
            }
            if !served.difference(&ranges).is_empty() {
                return Err(PullError::Violation(
                    "sends groups that were not asked for".into(),
                ));
            }
            served
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let decode_events = events.clone();
    let decoder = tokio::task::spawn_blocking(move || {
        decode_into(hash, &partial, &served, rx, peer, &decode_events)
    });
    let mut limit = encoded_bound(&ranges) as u64;
    let read_result: Result<(), PullError> = loop {
        match recv.read_chunk(1 << 20, true).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len() as u64;
                *wire += n;
                if n > limit {
                    break Err(PullError::Violation(
                        "more bytes than the ranges encode to".into(),
                    ));
                }
                limit -= n;
                if tx.send(chunk.bytes).await.is_err() {
                    // the decoder stopped: it says why
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(quinn::ReadError::Reset(code))
                if code == VarInt::from_u32(RESET_CORRUPT_SOURCE) =>
            {
                break Err(PullError::Transient(
                    "the provider's copy is corrupt".into(),
                ));
            }
            Err(e) => break Err(PullError::Transient(e.to_string())),
        }
    };
    drop(tx);
    let decoded = decoder
        .await
        .map_err(|e| PullError::Transient(e.to_string()))?;
    // a verification failure explains a broken stream better than the stream does
    match (decoded, read_result) {
        (Err(e @ (PullError::Corrupt(_) | PullError::Violation(_) | PullError::Local(_))), _) => {
            let _ = recv.stop(VarInt::from_u32(STOP_CANCELLED));
            Err(e)
        }
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Feeds the chunks of a stream to the verifying decoder.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Verifies a response as it arrives and writes each verified parent and
/// group into the partial blob; nothing unverified is written.
pub(super) fn decode_into(
    hash: Hash,
    partial: &PartialBlob,
    served: &GroupRanges,
    rx: mpsc::Receiver<Bytes>,
    peer: PeerId,
    events: &mpsc::Sender<Event>,
) -> Result<(), PullError> {
    let chunks = chunk_ranges(served);
    let mut reader = ChannelReader {
        rx,
        cur: Bytes::new(),
    };
    // consecutive verified groups are reported together
    let mut run: Option<(u64, u64, u64)> = None;
    let report = |run: &mut Option<(u64, u64, u64)>| {
        if let Some((start, end, bytes)) = run.take() {
            let _ = events.blocking_send(Event::Verified {
                peer,
                start,
                end,
                bytes,
            });
        }
    };
    for item in DecodeResponseIter::new(hash.into(), partial.tree(), &mut reader, &chunks) {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                report(&mut run);
                return Err(decode_error(e));
            }
        };
        match item {
            BaoContentItem::Parent(Parent { node, pair }) => {
                if let Err(e) = partial.write_parent(node, &pair) {
                    report(&mut run);
                    return Err(PullError::Local(e));
                }
            }
            BaoContentItem::Leaf(Leaf { offset, data }) => {
                if let Err(e) = partial.write_leaf(offset, &data) {
                    report(&mut run);
                    return Err(PullError::Local(e));
                }
                let group = offset >> (10 + CHUNK_GROUP_LOG);
                let len = data.len() as u64;
                match &mut run {
                    Some((_, end, bytes)) if *end == group => {
                        *end += 1;
                        *bytes += len;
                    }
                    _ => {
                        report(&mut run);
                        run = Some((group, group + 1, len));
                    }
                }
                if run.is_some_and(|(s, e, _)| e - s >= REPORT_GROUPS) {
                    report(&mut run);
                }
            }
        }
    }
    report(&mut run);
    let mut probe = [0u8; 1];
    if reader.read(&mut probe).map_err(PullError::Local)? > 0 {
        return Err(PullError::Violation("bytes after the encoding".into()));
    }
    Ok(())
}
