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
use crate::sched::{Assignment, JobId, JobResult, JobState, JobStatus, Needs};
use crate::tag::{TagName, TagVersion};

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
    /// Ledger entries: model versions, aliases, runs, lineage, pipeline runs.
    Ledger,
}

impl Topic {
    /// Every topic a node subscribes to.
    pub const ALL: [Topic; 4] = [Topic::Adverts, Topic::Jobs, Topic::Tags, Topic::Ledger];

    /// The topic's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::Adverts => "weft/adverts/1",
            Topic::Jobs => "weft/jobs/1",
            Topic::Tags => "weft/tags/1",
            Topic::Ledger => "weft/ledger/1",
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
    /// Sent by a node to each peer that enters its membership table (so also
    /// to every peer after a restart), to catch up on tags it missed.
    /// Answered with [`Response::Tags`]: the tags named after `after`, in
    /// name order, one page at a time.
    TagSync { after: Option<TagName> },
    /// Sent by a job's coordinator to a candidate executor: hold a place in
    /// its queue for this attempt. Answered with [`Response::Reserved`]; the
    /// executor sends [`Request::Claim`] when the reservation's turn comes.
    /// `unsupported` or `busy` errors mean it cannot take the task.
    Reserve {
        job: JobId,
        attempt: u32,
        needs: Box<Needs>,
    },
    /// Sent by the coordinator to executors holding a reservation that is no
    /// longer needed (another executor claimed the task, or it was
    /// cancelled). Answered with [`Response::Ack`].
    Release { job: JobId, attempt: u32 },
    /// Sent by an executor to a job's coordinator when its reservation
    /// reaches the head of its queue. Answered with [`Response::Assignment`]
    /// (the first claim wins) or a `not_found` error (placed elsewhere or
    /// over), after which the executor drops the reservation.
    Claim { job: JobId, attempt: u32 },
    /// Sent by the executor to the coordinator on each state change of an
    /// attempt, with the result at the end. Answered with [`Response::Ack`],
    /// or `not_found` when the attempt is no longer current.
    TaskUpdate {
        job: JobId,
        attempt: u32,
        state: JobState,
        reason: Option<String>,
        result: Option<Box<JobResult>>,
    },
    /// Sent to a job's coordinator by the node a user asked to cancel it.
    /// Answered with [`Response::Job`] (the job's status after the cancel).
    CancelJob { job: JobId },
    /// Sent by the coordinator to the executor running an attempt it
    /// cancels. Answered with [`Response::Ack`].
    CancelTask { job: JobId, attempt: u32 },
    /// Sent to a job's coordinator for its full, current status. Answered
    /// with [`Response::Job`] or a `not_found` error.
    GetJob { job: JobId },
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
    /// Sent by a node to each peer that enters its membership table, to
    /// catch up on ledger entries it missed. Answered with
    /// [`Response::Ledger`]: entries whose keys follow `after` (the hex of
    /// the last key of the previous page), in key order, one page at a time.
    LedgerSync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Sent by a node that wrote entries it must know every live peer holds
    /// before it acts on them (a model version's number). The peer stores
    /// them (each must be written by the sender) and answers
    /// [`Response::Ledger`] with every entry it holds of the same subjects.
    LedgerPush { entries: Vec<crate::ledger::Entry> },
    /// Sent to a pipeline run's coordinator by the node a user asked to
    /// cancel it. Answered with [`Response::Ack`] once the cancel is
    /// recorded, or a `not_found` error.
    CancelPipeline { run: JobId },
    /// Sent by a service's owner to the node it places a replica on: run
    /// `replica` of `service` at `revision`, taking the spec from the
    /// receiver's own ledger. Answered with [`Response::Ack`] once the
    /// replica is starting, or an error (`not_found`: the receiver does not
    /// know that revision yet; `unsupported`/`busy`: it cannot run it).
    StartReplica {
        service: crate::service::ServiceName,
        revision: u32,
        replica: crate::service::ReplicaId,
    },
    /// Sent by a service's owner: stop taking new requests on `replica`,
    /// finish those in flight (at most `drain_ms`), then stop it. Answered
    /// with [`Response::Ack`] at once.
    StopReplica {
        service: crate::service::ServiceName,
        replica: crate::service::ReplicaId,
        drain_ms: u32,
    },
    /// Sent by any node gathering a service's logs. Answered with
    /// [`Response::ServiceLogs`]: the recent output of each of its replicas
    /// of `service` on the receiver.
    ServiceLogs {
        service: crate::service::ServiceName,
    },
}

/// A response on `/weft/rpc/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answers [`Request::Hello`]: the responder's current advert.
    Hello(Box<NodeAdvert>),
    /// Answers [`Request::Ping`] with its nonce.
    Pong { nonce: u64 },
    /// Answers [`Request::TagSync`]: a page of tags with every version the
    /// responder holds; `more` says whether another page follows the last name.
    Tags {
        tags: Vec<(TagName, Vec<TagVersion>)>,
        more: bool,
    },
    /// Answers [`Request::Reserve`]: reservations queued ahead of this one.
    Reserved { queued: u32 },
    /// Answers [`Request::Claim`]: the task to run.
    Assignment(Box<Assignment>),
    /// Answers [`Request::Release`], [`Request::TaskUpdate`] and
    /// [`Request::CancelTask`].
    Ack,
    /// Answers [`Request::CancelJob`] and [`Request::GetJob`].
    Job(Box<JobStatus>),
    /// Answers [`Request::Has`]: the asked-for blobs the responder holds.
    Have { blobs: Vec<HaveBlob> },
    /// Answers [`Request::Replicate`]: the responder holds the artifact or
    /// has started fetching it.
    Replicating { hash: Hash },
    /// Answers [`Request::LedgerSync`] (a page; `more` when another
    /// follows its last key) and [`Request::LedgerPush`].
    Ledger {
        entries: Vec<crate::ledger::Entry>,
        more: bool,
    },
    /// Answers [`Request::ServiceLogs`].
    ServiceLogs {
        replicas: Vec<(crate::service::ReplicaId, String)>,
    },
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

    /// Decodes a message from a peer, checking every field's bound.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_MESSAGE_BYTES)
    }
}

impl Response {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_MESSAGE_BYTES)
    }

    /// Decodes a message from a peer, checking every field's bound.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_MESSAGE_BYTES)
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
    fn golden_tag_sync() {
        // {"TagSync": {"after": "a:b"}}
        let req = Request::TagSync {
            after: Some(TagName::new("a:b").expect("tag")),
        };
        let bytes = req.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!("a1", "6754616753796e63", "a1", "656166746572", "63613a62")
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), req);
        // {"Tags": {"tags": [["a:b", []]], "more": false}}
        let resp = Response::Tags {
            tags: vec![(TagName::new("a:b").expect("tag"), vec![])],
            more: false,
        };
        let bytes = resp.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "6454616773",
                "a2",
                "6474616773",
                "81",
                "82",
                "63613a62",
                "80",
                "646d6f7265",
                "f4"
            )
        );
        assert_eq!(Response::decode(&bytes).expect("decode"), resp);
        // a tag name that is not valid fails to decode
        let bad = hex::decode("a16754616753796e63a16561667465726178").expect("hex");
        assert!(Request::decode(&bad).is_err());
    }

    /// Scheduler requests; bytes checked against an independent CBOR
    /// encoder (Python's cbor2).
    #[test]
    fn golden_scheduler_requests() {
        use crate::sched::{ExecutorKind, JobId};
        let reserve = Request::Reserve {
            job: JobId::new(1, 2),
            attempt: 1,
            needs: Box::new(Needs {
                executor: ExecutorKind::Wasm,
                cpu_millis: 250,
                memory_bytes: 1024,
                gpu: None,
            }),
        };
        let bytes = reserve.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "6752657365727665",
                "a3",
                "636a6f62",
                "74",
                "3030303030303030303030313030303030303032",
                "67617474656d7074",
                "01",
                "656e65656473",
                "a3",
                "686578656375746f72",
                "647761736d",
                "6a6370755f6d696c6c6973",
                "18fa",
                "6c6d656d6f72795f6279746573",
                "190400"
            )
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), reserve);
        let claim = Request::Claim {
            job: JobId::new(1, 2),
            attempt: 2,
        };
        assert_eq!(
            hex::encode(claim.encode().expect("encode")),
            "a165436c61696da2636a6f6274303030303030303030303031303030303030303267617474656d707402"
        );
        // checked against Python's cbor2
        let cancel = Request::CancelPipeline {
            run: JobId::new(1, 2),
        };
        assert_eq!(
            hex::encode(cancel.encode().expect("encode")),
            "a16e43616e63656c506970656c696e65a16372756e743030303030303030303030313030303030303032"
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

    /// Ledger replication; bytes checked against an independent CBOR
    /// encoder (Python's cbor2).
    #[test]
    fn golden_ledger_messages() {
        use crate::ledger::{Entry, EntryBody, PipelineDef, TriggerClaim};
        use crate::tag::Hlc;
        let entry = |body| Entry {
            hlc: Hlc {
                wall_ms: 1,
                counter: 2,
            },
            origin: "n".into(),
            body,
        };
        // {"LedgerSync": {"after": "00ab"}}
        let sync = Request::LedgerSync {
            after: Some("00ab".into()),
        };
        let bytes = sync.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "6a4c656467657253796e63",
                "a1",
                "656166746572",
                "6430306162"
            )
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), sync);
        // {"LedgerSync": {}}: the first page
        let first = Request::LedgerSync { after: None };
        let bytes = first.encode().expect("encode");
        assert_eq!(hex::encode(&bytes), "a16a4c656467657253796e63a0");
        assert_eq!(Request::decode(&bytes).expect("decode"), first);
        // {"LedgerPush": {"entries": [{"hlc": .., "origin": "n", "body":
        //   {"trigger": {"pipeline": "p", "tag": "d/i:v1", "target": h}}}]}}
        let push = Request::LedgerPush {
            entries: vec![entry(EntryBody::Trigger(TriggerClaim {
                pipeline: "p".into(),
                tag: TagName::new("d/i:v1").expect("tag"),
                target: Hash::EMPTY,
                run: None,
            }))],
        };
        let bytes = push.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "6a4c656467657250757368",
                "a1",
                "67656e7472696573",
                "81",
                "a3",
                "63686c63",
                "a2",
                "6777616c6c5f6d7301",
                "67636f756e74657202",
                "666f726967696e",
                "616e",
                "64626f6479",
                "a1",
                "6774726967676572",
                "a3",
                "68706970656c696e65",
                "6170",
                "63746167",
                "66642f693a7631",
                "66746172676574",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
            )
        );
        assert_eq!(Request::decode(&bytes).expect("decode"), push);
        // {"Ledger": {"entries": [{.., "body": {"pipeline": {"name": "p",
        //   "spec": "s", "params": [["k", "v"]], "active": true}}}], "more": true}}
        let page = Response::Ledger {
            entries: vec![entry(EntryBody::Pipeline(PipelineDef {
                name: "p".into(),
                spec: "s".into(),
                params: vec![("k".into(), "v".into())],
                active: true,
            }))],
            more: true,
        };
        let bytes = page.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "664c6564676572",
                "a2",
                "67656e7472696573",
                "81",
                "a3",
                "63686c63",
                "a2",
                "6777616c6c5f6d7301",
                "67636f756e74657202",
                "666f726967696e",
                "616e",
                "64626f6479",
                "a1",
                "68706970656c696e65",
                "a4",
                "646e616d65",
                "6170",
                "6473706563",
                "6173",
                "66706172616d73",
                "81",
                "82",
                "616b",
                "6176",
                "66616374697665",
                "f5",
                "646d6f7265",
                "f5"
            )
        );
        assert_eq!(Response::decode(&bytes).expect("decode"), page);
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
