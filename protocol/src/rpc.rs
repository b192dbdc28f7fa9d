//! The control-plane protocols between nodes: protocol ids, gossip topics and
//! the request/response messages of `/weft/rpc/1`.
//!
//! Goals: one [`Request`] enum and one [`Response`] enum for every
//! node-to-node question, each variant saying who sends it and what answers
//! it, so later subsystems (transfer provider queries, tag sync, scheduler
//! probes) add variants here rather than new protocols. Every frame is CBOR
//! of at most [`MAX_MESSAGE_BYTES`].
//!
//! Wire form: serde's external tagging in CBOR: a unit variant is its name as
//! text (`"Hello"`), a variant with fields is a one-entry map from its name to
//! a map of its fields (`{"Ping": {"nonce": 7}}`). A variant a peer does not
//! know fails to decode and its stream is reset without an answer, so a sender
//! only uses a new variant with peers whose advert shows a version that has
//! it. On a stream each message is prefixed by its length (see the node's net
//! codec).
//!
//! Non-goals: authentication (see [`crate::auth`]), bulk bytes (the QUIC data
//! plane carries those).

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::advert::NodeAdvert;
use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};

/// Request/response protocol for weft messages between authenticated nodes.
pub const RPC_PROTOCOL: &str = "/weft/rpc/1";

/// Request/response protocol proving the cluster secret (see [`crate::auth`]).
pub const AUTH_PROTOCOL: &str = "/weft/auth/1";

/// Most ids in one [`Request::Has`].
pub const MAX_HAS_HASHES: usize = 4096;

/// Kademlia protocol id, so weft nodes form their own DHT.
pub const KAD_PROTOCOL: &str = "/weft/kad/1";

/// identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/weft/id/1";

/// A gossip topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// [`NodeAdvert`]s, consumed by the net layer for membership.
    Adverts,
    /// Job submissions and state changes (scheduler).
    Jobs,
    /// Tag updates (store replication).
    Tags,
}

impl Topic {
    /// Every topic a node subscribes to.
    pub const ALL: [Topic; 3] = [Topic::Adverts, Topic::Jobs, Topic::Tags];

    /// The topic's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::Adverts => "weft/adverts/1",
            Topic::Jobs => "weft/jobs/1",
            Topic::Tags => "weft/tags/1",
        }
    }

    /// The topic with this wire name, if weft knows it.
    pub fn from_wire(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request on `/weft/rpc/1`. Only sent to, and only answered by, peers that
/// have proven the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Sent by a node to a peer it has just authenticated, or whenever it
    /// wants the peer's current state. Answered by the peer's net layer with
    /// [`Response::Hello`] carrying its current advert.
    Hello,
    /// Sent by anyone checking that a peer's daemon is responsive end to end.
    /// Answered by the peer's daemon (not its net layer) with
    /// [`Response::Pong`] echoing `nonce`.
    Ping { nonce: u64 },
    /// Sent by a node looking for copies of blobs (a fetch) or counting them
    /// (replication), with at most [`MAX_HAS_HASHES`] ids. Answered by the
    /// peer's transfer subsystem with [`Response::Have`] listing those it
    /// holds whole. With `closure`, a tree counts only when every blob below
    /// it is held too.
    Has {
        hashes: Vec<Hash>,
        #[serde(default)]
        closure: bool,
    },
    /// Sent by a node keeping a pin with `replicas` > 1 to a peer it chose
    /// to hold one more copy. The peer fetches the artifact (with everything
    /// below it) in the background, pins it with the same `replicas`, and
    /// answers [`Response::Replicating`] at once.
    Replicate { hash: Hash, replicas: u32 },
}

/// A response on `/weft/rpc/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answers [`Request::Hello`]: the responder's current advert.
    Hello(Box<NodeAdvert>),
    /// Answers [`Request::Ping`] with its nonce.
    Pong { nonce: u64 },
    /// Answers [`Request::Has`]: the asked-for blobs the responder holds.
    Have { blobs: Vec<HaveBlob> },
    /// Answers [`Request::Replicate`]: the responder holds the artifact or
    /// has started fetching it.
    Replicating { hash: Hash },
    /// Answers any request the responder cannot or will not serve.
    Error { code: ErrorCode, message: String },
}

/// One blob a peer holds whole, in [`Response::Have`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveBlob {
    pub hash: Hash,
    /// Its size in bytes (as the holder says; a fetch proves it).
    pub size: u64,
    /// It is a tree manifest.
    pub tree: bool,
}

/// Why a request failed, for the requester to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or made no sense.
    BadRequest,
    /// The responder knows the request but does not serve it (subsystem
    /// disabled or not built).
    Unsupported,
    /// The thing asked about does not exist on the responder.
    NotFound,
    /// The responder is overloaded; retry later or elsewhere.
    Busy,
    /// The responder failed while answering.
    Internal,
    /// A code this node does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl Request {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_MESSAGE_BYTES)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes, MAX_MESSAGE_BYTES)
    }
}

impl Response {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_MESSAGE_BYTES)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes, MAX_MESSAGE_BYTES)
    }

    /// An [`Response::Error`].
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_requests() {
        // "Hello"
        assert_eq!(
            hex::encode(Request::Hello.encode().expect("encode")),
            "6548656c6c6f"
        );
        // {"Ping": {"nonce": 7}}
        let ping = Request::Ping { nonce: 7 };
        let bytes = ping.encode().expect("encode");
        assert_eq!(hex::encode(&bytes), "a16450696e67a1656e6f6e636507");
        assert_eq!(Request::decode(&bytes).expect("decode"), ping);
    }

    #[test]
    fn golden_responses() {
        // {"Pong": {"nonce": 7}}
        let pong = Response::Pong { nonce: 7 };
        let bytes = pong.encode().expect("encode");
        assert_eq!(hex::encode(&bytes), "a164506f6e67a1656e6f6e636507");
        assert_eq!(Response::decode(&bytes).expect("decode"), pong);
        // {"Error": {"code": "busy", "message": "later"}}
        let err = Response::error(ErrorCode::Busy, "later");
        let bytes = err.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            "a1654572726f72a264636f64656462757379676d657373616765656c61746572"
        );
        assert_eq!(Response::decode(&bytes).expect("decode"), err);
        // {"Hello": {}}: an advert with every field missing decodes to defaults
        let bytes = hex::decode("a16548656c6c6fa0").expect("hex");
        assert_eq!(
            Response::decode(&bytes).expect("decode"),
            Response::Hello(Box::default())
        );
    }

    #[test]
    fn golden_transfer_messages() {
        // {"Has": {"hashes": [h], "closure": false}}
        let has = Request::Has {
            hashes: vec![Hash::EMPTY],
            closure: false,
        };
        let bytes = has.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "63486173",
                "a2",
                "66686173686573",
                "81",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "67636c6f73757265",
                "f4"
            )
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), has);
        // "closure" may be left out
        let short = hex::decode(concat!("a163486173a1666861736865738", "0")).expect("hex");
        assert_eq!(
            Request::decode(&short).expect("decode"),
            Request::Has {
                hashes: vec![],
                closure: false
            }
        );
        // {"Replicate": {"hash": h, "replicas": 3}}
        let rep = Request::Replicate {
            hash: Hash::EMPTY,
            replicas: 3,
        };
        let bytes = rep.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "695265706c6963617465",
                "a2",
                "6468617368",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "687265706c6963617303"
            )
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), rep);
        // {"Have": {"blobs": [{"hash": h, "size": 5, "tree": true}]}}
        let have = Response::Have {
            blobs: vec![HaveBlob {
                hash: Hash::EMPTY,
                size: 5,
                tree: true,
            }],
        };
        let bytes = have.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "6448617665",
                "a1",
                "65626c6f6273",
                "81",
                "a3",
                "6468617368",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "6473697a6505",
                "6474726565f5"
            )
        );
        assert_eq!(Response::decode(&bytes).expect("decode"), have);
        let r = Response::Replicating { hash: Hash::EMPTY };
        assert_eq!(
            Response::decode(&r.encode().expect("encode")).expect("decode"),
            r
        );
    }

    #[test]
    fn unknown_error_codes_and_variants() {
        // {"Error": {"code": "quota", "message": ""}}
        let bytes =
            hex::decode("a1654572726f72a264636f64656571756f7461676d65737361676560").expect("hex");
        assert_eq!(
            Response::decode(&bytes).expect("decode"),
            Response::error(ErrorCode::Unknown, "")
        );
        // "Probe": a request this version does not know
        assert!(Request::decode(&hex::decode("6550726f6265").expect("hex")).is_err());
    }

    #[test]
    fn topics_round_trip() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_wire(t.as_str()), Some(t));
        }
        assert_eq!(Topic::from_wire("weft/adverts/2"), None);
        assert_eq!(Topic::Jobs.to_string(), "weft/jobs/1");
    }
}
