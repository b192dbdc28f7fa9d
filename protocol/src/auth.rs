//! Proof of the cluster secret, bound to both ends of a connection.
//!
//! Goals: a node answers weft messages and accepts gossip only from peers
//! that know the cluster's 32-byte secret, without the secret ever crossing
//! the wire. Right after a connection is established each side sends, on
//! `/weft/auth/1`, an [`AuthRequest`] whose proof is
//!
//! ```text
//! blake3::keyed_hash(secret, "weft-auth-v1"
//!     || u64le(len(prover)) || prover || u64le(len(verifier)) || verifier)
//! ```
//!
//! where `prover` and `verifier` are peer ids as bytes, each prefixed by its
//! length so no two pairs hash the same input. The verifier recomputes it
//! with the ids the transport authenticated (noise or TLS bind each
//! connection to its peer's key) and answers [`AuthResponse::Accepted`] or [`AuthResponse::Rejected`].
//! A proof is only good for one ordered pair of peers, so it cannot be
//! replayed to a third node or reflected back to its sender.
//!
//! Wire form: `AuthRequest` is the CBOR map `{"proof": bytes(32)}`,
//! `AuthResponse` the text `"Accepted"` or `"Rejected"`.
//!
//! Non-goals: confidentiality (the transport encrypts), freshness (a proof
//! for a pair stays valid while the secret does; that is fine because only
//! the holder of the prover's key can open a connection as the prover).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, CodecError};

/// Bytes in a cluster secret.
pub const SECRET_LEN: usize = 32;

/// Largest encoded auth message; proofs are tiny.
pub const MAX_AUTH_BYTES: usize = 256;

/// Domain separation for the proof.
const CONTEXT: &[u8] = b"weft-auth-v1";

/// A keyed BLAKE3 MAC proving knowledge of the cluster secret.
#[derive(Clone, Copy)]
pub struct AuthProof([u8; 32]);

/// Sent by each side of a new connection on `/weft/auth/1`; answered by an
/// [`AuthResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub proof: AuthProof,
}

/// The verifier's verdict on an [`AuthRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResponse {
    /// The proof matched; the verifier will answer this peer's messages.
    Accepted,
    /// The proof did not match; the verifier is closing the connection.
    Rejected,
}

impl AuthProof {
    /// The proof that `prover` knows `secret`, addressed to `verifier`. Both
    /// ids are peer ids as bytes (`PeerId::to_bytes`).
    pub fn new(secret: &[u8; SECRET_LEN], prover: &[u8], verifier: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_keyed(secret);
        hasher.update(CONTEXT);
        for id in [prover, verifier] {
            hasher.update(&(id.len() as u64).to_le_bytes());
            hasher.update(id);
        }
        AuthProof(*hasher.finalize().as_bytes())
    }

    /// Whether this is `prover`'s proof for `verifier` under `secret`, compared
    /// in constant time.
    pub fn verify(&self, secret: &[u8; SECRET_LEN], prover: &[u8], verifier: &[u8]) -> bool {
        let expected = AuthProof::new(secret, prover, verifier);
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(expected.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        AuthProof(bytes)
    }
}

impl PartialEq for AuthProof {
    fn eq(&self, other: &Self) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for AuthProof {}

impl fmt::Debug for AuthProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthProof({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for AuthProof {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for AuthProof {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProofVisitor;

        impl Visitor<'_> for ProofVisitor {
            type Value = AuthProof;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<AuthProof, E> {
                let arr: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(AuthProof(arr))
            }
        }

        deserializer.deserialize_bytes(ProofVisitor)
    }
}

impl AuthRequest {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_AUTH_BYTES)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_AUTH_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    #[test]
    fn golden_proof_and_request() {
        let proof = AuthProof::new(&SECRET, b"prover", b"verifier");
        let bytes = AuthRequest { proof }.encode().expect("encode");
        let golden = concat!(
            "a1",           // map(1)
            "6570726f6f66", // "proof"
            "5820",         // bytes(32)
            "PROOF",
        )
        .replace("PROOF", &hex::encode(proof.as_bytes()));
        assert_eq!(hex::encode(&bytes), golden);
        assert_eq!(
            hex::encode(proof.as_bytes()),
            "baf848256394c5c33deae85a6a5de5b491120d9114e1d133cfb1a52d60bea9c2",
            "proof construction changed"
        );
        assert_eq!(AuthRequest::decode(&bytes).expect("decode").proof, proof);
        assert_eq!(
            hex::encode(codec::encode(&AuthResponse::Accepted, MAX_AUTH_BYTES).expect("encode")),
            "684163636570746564"
        );
    }

    #[test]
    fn proof_is_bound_to_secret_and_ordered_pair() {
        let p = AuthProof::new(&SECRET, b"a", b"b");
        assert!(p.verify(&SECRET, b"a", b"b"));
        assert!(!p.verify(&[8; 32], b"a", b"b"), "other secret");
        assert!(!p.verify(&SECRET, b"b", b"a"), "reflected");
        assert!(!p.verify(&SECRET, b"a", b"c"), "replayed to a third node");
        assert!(!p.verify(&SECRET, b"ab", b""), "split moved");
    }

    #[test]
    fn malformed_requests_are_refused() {
        // {"proof": bytes(31)}
        let mut short = hex::decode("a16570726f6f66581f").expect("hex");
        short.extend([0u8; 31]);
        assert!(AuthRequest::decode(&short).is_err());
        assert!(AuthRequest::decode(&[0xa1]).is_err());
        assert!(AuthRequest::decode(&[0u8; MAX_AUTH_BYTES + 1]).is_err());
    }
}
