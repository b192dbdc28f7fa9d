//! The QUIC data plane: ALPN `weft/blobs/1`, the frames on its streams and
//! the chunk-group range sets they carry.
//!
//! Goals: move a blob's bytes between two nodes so that the receiver checks
//! every 16 KiB chunk group against the blob's id before it writes it, can
//! ask for any subset of groups (so a fetch splits across providers and
//! resumes after a restart), and learns from the header alone what the
//! sender will and will not send.
//!
//! Connection: QUIC with TLS certificates bound to the node keys (libp2p's
//! TLS certificate form), ALPN [`ALPN`]. The client checks it reached the
//! peer id it meant; the server reads the client's peer id from its
//! certificate. The first bidirectional stream the client opens proves the
//! cluster secret both ways, with the proof of [`crate::auth`]: the client
//! sends a frame holding its `AuthRequest` (prover: client, verifier:
//! server), the server answers with its own (prover: server, verifier:
//! client). Nothing is served before that exchange, and either side closes
//! the connection with [`CLOSE_AUTH_FAILED`] when a proof is wrong.
//!
//! Requests: every later bidirectional stream carries one request. The
//! client sends one frame holding a [`GetRequest`] and finishes its side; the
//! server answers one frame holding a [`GetResponse`] and, after
//! [`GetResponse::Found`], the BLAKE3 verified-streaming encoding of exactly
//! the ranges that header names: bao-tree 0.17's pre-order response
//! encoding with 16 KiB chunk groups ([`crate::CHUNK_GROUP_LOG`]), no size
//! prefix, parent nodes as 64 bytes (left and right chaining values) and
//! leaves as the group's bytes. Then it finishes the stream.
//!
//! Frames: a `u32` big-endian length, then that many bytes of CBOR. The
//! length is checked against the message's limit before anything is read,
//! so a malformed or oversized frame is refused, never buffered.
//!
//! Non-goals: discovering who holds a blob (`Request::Has` on the control
//! plane does that), trees (a tree is a blob; its children are fetched by id
//! like any other), serving groups the sender has not verified (a sender
//! serves only blobs it holds whole).

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::rpc::ErrorCode;
use crate::{CHUNK_GROUP_BYTES, Hash};

/// The data plane's ALPN protocol id.
pub const ALPN: &[u8] = b"weft/blobs/1";

/// Bytes of a frame's length prefix.
pub const FRAME_PREFIX: usize = 4;

/// Largest encoded [`GetRequest`].
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest encoded [`GetResponse`] header.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Most ranges in one request or response header.
pub const MAX_RANGES: usize = 1024;

/// Groups in the largest blob weft addresses (2^64 bytes in 16 KiB groups).
pub const MAX_GROUPS: u64 = 1 << 50;

/// Application close code: the peer's cluster-secret proof was wrong (or
/// missing). The reason names which.
pub const CLOSE_AUTH_FAILED: u32 = 1;

/// Application close code: the peer broke the protocol (malformed frame,
/// ranges it did not ask for).
pub const CLOSE_PROTOCOL: u32 = 2;

/// Application close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 3;

/// Stream reset code: the sender's own copy failed verification while it
/// was being encoded; ask another provider.
pub const RESET_CORRUPT_SOURCE: u32 = 1;

/// Stream reset code: the sender failed for another reason.
pub const RESET_INTERNAL: u32 = 2;

/// Stream stop code: the receiver no longer wants the rest (bad bytes,
/// cancelled fetch).
pub const STOP_CANCELLED: u32 = 3;

/// Chunk groups (16 KiB each) in a blob of `size` bytes: 0 for the empty
/// blob.
pub const fn groups(size: u64) -> u64 {
    size.div_ceil(CHUNK_GROUP_BYTES)
}

/// A set of chunk-group indexes as sorted, disjoint, non-adjacent half-open
/// ranges `[start, end)`. Canonical by construction, so a set has exactly
/// one encoding; decoding refuses any other form.
///
/// Wire form: a CBOR array of two-element arrays `[[start, end], ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u64, u64)>", into = "Vec<(u64, u64)>")]
pub struct GroupRanges(Vec<(u64, u64)>);

/// Why a range list is not canonical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    #[error("range {start}..{end} is empty or reversed")]
    Empty { start: u64, end: u64 },
    #[error("range {start}..{end} is not after the range before it with a gap")]
    Unordered { start: u64, end: u64 },
    #[error("range end {0} is past the largest blob ({MAX_GROUPS} groups)")]
    TooFar(u64),
}

impl TryFrom<Vec<(u64, u64)>> for GroupRanges {
    type Error = RangesError;

    fn try_from(v: Vec<(u64, u64)>) -> Result<Self, RangesError> {
        let mut prev_end: Option<u64> = None;
        for &(start, end) in &v {
            if start >= end {
                return Err(RangesError::Empty { start, end });
            }
            if end > MAX_GROUPS {
                return Err(RangesError::TooFar(end));
            }
            if prev_end.is_some_and(|p| start <= p) {
                return Err(RangesError::Unordered { start, end });
            }
            prev_end = Some(end);
        }
        Ok(GroupRanges(v))
    }
}

impl From<GroupRanges> for Vec<(u64, u64)> {
    fn from(r: GroupRanges) -> Self {
        r.0
    }
}

impl GroupRanges {
    /// The empty set.
    pub const fn empty() -> Self {
        GroupRanges(Vec::new())
    }

    /// `[start, end)`, or the empty set if `start >= end`.
    pub fn range(start: u64, end: u64) -> Self {
        if start < end {
            GroupRanges(vec![(start, end.min(MAX_GROUPS))])
        } else {
            GroupRanges::empty()
        }
    }

    /// Every group of a blob of `size` bytes.
    pub fn all(size: u64) -> Self {
        GroupRanges::range(0, groups(size))
    }

    /// The set covering any ranges, in any order, overlapping or not.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges
            .into_iter()
            .filter(|(s, e)| s < e)
            .map(|(s, e)| (s, e.min(MAX_GROUPS)))
            .filter(|(s, e)| s < e)
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        GroupRanges(out)
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of groups in the set.
    pub fn group_count(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether group `g` is in the set.
    pub fn contains(&self, g: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= g);
        self.0.get(i).is_some_and(|&(s, _)| s <= g)
    }

    /// The groups in either set.
    pub fn union(&self, other: &GroupRanges) -> GroupRanges {
        GroupRanges::from_ranges(self.iter().chain(other.iter()))
    }

    /// The groups in both sets.
    pub fn intersection(&self, other: &GroupRanges) -> GroupRanges {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            let s = a.0.max(b.0);
            let e = a.1.min(b.1);
            if s < e {
                out.push((s, e));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        GroupRanges::from_ranges(out)
    }

    /// The groups in `self` but not in `other`.
    pub fn difference(&self, other: &GroupRanges) -> GroupRanges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(s, e) in &self.0 {
            let mut cur = s;
            while j < other.0.len() && other.0[j].1 <= cur {
                j += 1;
            }
            let mut k = j;
            while cur < e {
                match other.0.get(k) {
                    Some(&(os, oe)) if os < e => {
                        if os > cur {
                            out.push((cur, os));
                        }
                        cur = cur.max(oe);
                        k += 1;
                    }
                    _ => {
                        out.push((cur, e));
                        cur = e;
                    }
                }
            }
        }
        GroupRanges::from_ranges(out)
    }

    /// The first `n` groups of the set, in order.
    pub fn take_first(&self, n: u64) -> GroupRanges {
        let mut left = n;
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            if left == 0 {
                break;
            }
            let take = (e - s).min(left);
            out.push((s, s + take));
            left -= take;
        }
        GroupRanges(out)
    }

    /// A subset holding at most `max` ranges: the largest ones are kept.
    /// Dropping groups from a set of verified groups is always safe (they
    /// are fetched again), so this is how a set is made to fit a limit.
    pub fn coarsen(&self, max: usize) -> GroupRanges {
        if self.0.len() <= max {
            return self.clone();
        }
        let mut by_len: Vec<(u64, u64)> = self.0.clone();
        by_len.sort_unstable_by_key(|(s, e)| std::cmp::Reverse(e - s));
        by_len.truncate(max);
        GroupRanges::from_ranges(by_len)
    }
}

/// Sent by the client on a request stream: which groups of which blob it
/// wants. Answered by a [`GetResponse`] and, after `Found`, the encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// The blob.
    pub hash: Hash,
    /// The groups wanted; groups past the blob's end are ignored.
    pub ranges: GroupRanges,
    /// Also send the blob's last group, whatever `ranges` says. Its
    /// verification proves the size the header claims.
    #[serde(default)]
    pub size_proof: bool,
}

/// The server's header on a request stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GetResponse {
    /// The server holds the blob. The encoding of `ranges` follows: the
    /// groups asked for (plus the last one with `size_proof`) that the
    /// server holds verified. Groups asked for but absent from `ranges` are
    /// ones it lacks.
    Found {
        /// The blob's size in bytes (proven by its last group).
        size: u64,
        /// The blob is a tree manifest.
        tree: bool,
        ranges: GroupRanges,
    },
    /// The server holds none of the blob.
    NotFound,
    /// The server refuses the request: malformed, or it is overloaded.
    Error { code: ErrorCode, message: String },
}

impl GetRequest {
    /// The request as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        if self.ranges.range_count() > MAX_RANGES {
            return Err(CodecError::Encode(format!(
                "{} ranges in one request; at most {MAX_RANGES}",
                self.ranges.range_count()
            )));
        }
        frame(self, MAX_REQUEST_BYTES)
    }

    /// Decodes a frame's payload (after the length prefix).
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(payload, MAX_REQUEST_BYTES)
    }
}

impl GetResponse {
    /// The header as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        frame(self, MAX_RESPONSE_BYTES)
    }

    /// Decodes a frame's payload (after the length prefix).
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(payload, MAX_RESPONSE_BYTES)
    }
}

/// Encodes `msg` as a frame: length prefix, then CBOR of at most `limit`
/// bytes.
pub fn frame<T: Serialize + ?Sized>(msg: &T, limit: usize) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(msg, limit)?;
    let mut out = Vec::with_capacity(FRAME_PREFIX + body.len());
    // body.len() <= limit, and every limit here fits a u32
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The payload length a frame's prefix announces, refused above `limit`.
pub fn frame_len(prefix: [u8; FRAME_PREFIX], limit: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(CodecError::TooLarge { len, limit });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[(u64, u64)]) -> GroupRanges {
        GroupRanges::try_from(v.to_vec()).expect("canonical")
    }

    #[test]
    fn golden_request() {
        let req = GetRequest {
            hash: Hash::EMPTY,
            ranges: r(&[(0, 4), (9, 10)]),
            size_proof: true,
        };
        let bytes = req.to_frame().expect("frame");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "00000042", // length 66
                "a3",       // map(3)
                "6468617368",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "6672616e676573",
                "82", // "ranges": [[0, 4], [9, 10]]
                "820004",
                "82090a",
                "6a73697a655f70726f6f66",
                "f5" // "size_proof": true
            )
        );
        let len =
            frame_len(bytes[..4].try_into().expect("prefix"), MAX_REQUEST_BYTES).expect("len");
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(GetRequest::decode(&bytes[4..]).expect("decode"), req);
    }

    #[test]
    fn golden_responses() {
        let found = GetResponse::Found {
            size: 40_000,
            tree: false,
            ranges: r(&[(0, 3)]),
        };
        let bytes = found.to_frame().expect("frame");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "00000021",
                "a1", // {"Found": {...}}
                "65466f756e64",
                "a3",
                "6473697a65",
                "199c40", // "size": 40000
                "6474726565",
                "f4", // "tree": false
                "6672616e676573",
                "81820003" // "ranges": [[0, 3]]
            )
        );
        assert_eq!(GetResponse::decode(&bytes[4..]).expect("decode"), found);
        let nf = GetResponse::NotFound.to_frame().expect("frame");
        assert_eq!(hex::encode(&nf), "00000009684e6f74466f756e64");
        let err = GetResponse::Error {
            code: ErrorCode::Busy,
            message: "x".into(),
        };
        let bytes = err.to_frame().expect("frame");
        assert_eq!(GetResponse::decode(&bytes[4..]).expect("decode"), err);
    }

    #[test]
    fn malformed_and_oversized_frames_are_refused() {
        // a prefix announcing more than the limit
        assert!(matches!(
            frame_len([0, 1, 0, 1], MAX_REQUEST_BYTES),
            Err(CodecError::TooLarge { .. })
        ));
        // garbage, truncated CBOR, unknown variant
        assert!(GetRequest::decode(&[0xff, 0x00]).is_err());
        assert!(GetRequest::decode(&[0xa3, 0x64]).is_err());
        assert!(GetResponse::decode(&hex::decode("654f74686572").expect("hex")).is_err());
        // non-canonical ranges: overlapping, adjacent, reversed, past the end
        for bad in [
            vec![(0u64, 4u64), (3, 5)],
            vec![(0, 4), (4, 5)],
            vec![(5, 5)],
            vec![(0, MAX_GROUPS + 1)],
        ] {
            let req = GetRequest {
                hash: Hash::EMPTY,
                ranges: GroupRanges(bad.clone()),
                size_proof: false,
            };
            let bytes = codec::encode(&req, MAX_REQUEST_BYTES).expect("encode");
            assert!(GetRequest::decode(&bytes).is_err(), "{bad:?} accepted");
        }
        // too many ranges
        let many = GroupRanges::from_ranges((0..=MAX_RANGES as u64).map(|i| (i * 2, i * 2 + 1)));
        let req = GetRequest {
            hash: Hash::EMPTY,
            ranges: many,
            size_proof: false,
        };
        assert!(req.to_frame().is_err());
        let bytes = codec::encode(&req, MAX_REQUEST_BYTES).expect("encode");
        assert!(GetRequest::decode(&bytes).is_err());
    }

    #[test]
    fn range_set_operations() {
        let a = GroupRanges::from_ranges([(5, 9), (0, 3), (2, 4), (9, 10)]);
        assert_eq!(a, r(&[(0, 4), (5, 10)]));
        assert_eq!(a.group_count(), 9);
        assert!(a.contains(0) && a.contains(3) && !a.contains(4) && a.contains(9));
        assert!(!a.contains(10));
        let b = r(&[(2, 6), (8, 20)]);
        assert_eq!(a.union(&b), r(&[(0, 20)]));
        assert_eq!(a.intersection(&b), r(&[(2, 4), (5, 6), (8, 10)]));
        assert_eq!(a.difference(&b), r(&[(0, 2), (6, 8)]));
        assert_eq!(b.difference(&a), r(&[(4, 5), (10, 20)]));
        assert_eq!(a.difference(&GroupRanges::empty()), a);
        assert_eq!(GroupRanges::all(0), GroupRanges::empty());
        assert_eq!(GroupRanges::all(16 * 1024 + 1), r(&[(0, 2)]));
        assert_eq!(a.take_first(6), r(&[(0, 4), (5, 7)]));
        assert_eq!(
            r(&[(0, 1), (2, 10), (11, 12), (13, 15)]).coarsen(2),
            r(&[(2, 10), (13, 15)])
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(0u8..=255, 0..200)) {
            let _ = GetRequest::decode(&bytes);
            let _ = GetResponse::decode(&bytes);
            if bytes.len() >= FRAME_PREFIX {
                let _ = frame_len([bytes[0], bytes[1], bytes[2], bytes[3]], MAX_REQUEST_BYTES);
            }
        }

        #[test]
        fn set_operations_match_a_bitmap(
            a in proptest::collection::vec((0u64..64, 0u64..8), 0..8),
            b in proptest::collection::vec((0u64..64, 0u64..8), 0..8),
        ) {
            let a = GroupRanges::from_ranges(a.into_iter().map(|(s, l)| (s, s + l)));
            let b = GroupRanges::from_ranges(b.into_iter().map(|(s, l)| (s, s + l)));
            for g in 0..80 {
                proptest::prop_assert_eq!(a.union(&b).contains(g), a.contains(g) || b.contains(g));
                proptest::prop_assert_eq!(a.intersection(&b).contains(g), a.contains(g) && b.contains(g));
                proptest::prop_assert_eq!(a.difference(&b).contains(g), a.contains(g) && !b.contains(g));
            }
            // every result is canonical
            for set in [a.union(&b), a.intersection(&b), a.difference(&b)] {
                let v: Vec<(u64, u64)> = set.clone().into();
                proptest::prop_assert_eq!(GroupRanges::try_from(v).ok(), Some(set));
            }
        }
    }
}
