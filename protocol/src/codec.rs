//! CBOR encoding with explicit size limits.
//!
//! Goals: every message weft reads from a peer or from disk goes through
//! [`decode`], which refuses input longer than the caller's limit before
//! looking at it, never panics, bounds nesting, and allocates in proportion
//! to the bytes actually present (a header claiming a huge length does not
//! reserve it).
//!
//! Messages from peers go through [`decode_peer`], which also checks the
//! bound of every field ([`crate::bounds`]).
//!
//! Non-goals: framing on a stream. Transports prefix each message with its
//! length and check that length against the same limit before reading.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bounds::{Bounded, BoundsError};

/// Largest control-plane message (requests, responses, gossip).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest encoded tree manifest.
pub const MAX_TREE_BYTES: usize = 16 * 1024 * 1024;

/// Largest persisted metadata record.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Deepest nesting accepted when decoding.
const MAX_DEPTH: usize = 64;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    #[error("trailing bytes after the message ({0} left)")]
    Trailing(usize),
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A field is longer than its bound ([`crate::bounds`]).
    #[error("field out of bounds: {0}")]
    Bounds(#[from] BoundsError),
}

/// Encodes `value` as CBOR, failing if the result exceeds `limit` bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge {
            len: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// Decodes exactly one CBOR value from `bytes`, refusing more than `limit` bytes
/// and anything after the value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(CodecError::Trailing(reader.len()));
    }
    Ok(value)
}

/// Decodes a message received from a peer: [`decode`], then every field's
/// bound ([`Bounded`]). Every decoder of peer bytes goes through here.
pub fn decode_peer<T: DeserializeOwned + Bounded>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    let value: T = decode(bytes, limit)?;
    value.check_bounds()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn round_trip() {
        let v: BTreeMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let bytes = encode(&v, 100).expect("encode");
        let back: BTreeMap<String, u64> = decode(&bytes, 100).expect("decode");
        assert_eq!(v, back);
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let v = vec![0u8; 100];
        assert!(matches!(
            encode(&v, 10),
            Err(CodecError::TooLarge { limit: 10, .. })
        ));
        let bytes = encode(&v, 1000).expect("encode");
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 10),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_declared_lengths_fail_without_allocating() {
        // byte string claiming 2^63 bytes, then nothing
        let bytes = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<serde_bytes_like::Buf>(&bytes, 100).is_err());
        // array claiming 2^32 elements
        let bytes = [0x9b, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(decode::<Vec<u64>>(&bytes, 100).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = vec![0x81u8; 10_000];
        bytes.push(0x00);
        assert!(decode::<ciborium::Value>(&bytes, 1 << 20).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32, 10).expect("encode");
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes, 10),
            Err(CodecError::Trailing(1))
        ));
    }

    mod serde_bytes_like {
        use serde::de::{Deserialize, Deserializer, Visitor};

        pub(super) struct Buf;

        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, _v: Vec<u8>) -> Result<Buf, E> {
                        Ok(Buf)
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
