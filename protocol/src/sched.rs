//! Scheduler messages: job ids and states, the task an executor receives,
//! the result it reports, and the job status every node keeps.
//!
//! Goals: the coordinator of a job (the node it was submitted to) and its
//! executor agree through a few `/weft/rpc/1` requests (reserve, claim,
//! update, cancel); every other node learns a job's state from
//! [`JobGossip`] on `weft/jobs/1`, so any node can answer `weft job status`.
//! A [`JobStatus`] carries a `revision` that grows with every change, so a
//! node keeps the newest copy whatever order gossip arrives in.
//!
//! Non-goals: placement policy and execution (the node's `sched` module).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};
use crate::hash::Hash;
use crate::job::{GpuRequest, JobSpec};
use crate::ledger::Metric;
use crate::tag::TagName;

/// A job's id: 12 hex digits of submission time (ms) then 8 random ones,
/// so ids sort by age.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// A new id for a job submitted at `now_ms`, with `random` bits.
    pub fn new(now_ms: u64, random: u32) -> JobId {
        JobId(format!("{:012x}{random:08x}", now_ms & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 20 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(JobId(s.to_string()))
        } else {
            Err(format!(
                "{:?} is not a job id (20 lowercase hex digits, as `weft job ls` shows)",
                s.chars().take(40).collect::<String>()
            ))
        }
    }
}

impl TryFrom<String> for JobId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(j: JobId) -> String {
        j.0
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a node that can run it (the reason says why).
    Pending,
    /// An executor has claimed it.
    Placed,
    /// The executor is fetching inputs.
    Fetching,
    /// The task runs.
    Running,
    /// The executor is storing outputs and logs.
    Uploading,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Placed => "placed",
            JobState::Fetching => "fetching",
            JobState::Running => "running",
            JobState::Uploading => "uploading",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of executor a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Wasm,
    Container,
}

/// What a task needs of its executor, for reservations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    pub executor: ExecutorKind,
    /// Thousandths of a core.
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
}

/// The program of a task, with every reference resolved to an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Program {
    Wasm {
        module: Hash,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    Container {
        image: Hash,
        /// Replaces the image's entrypoint when not empty.
        command: Vec<String>,
        /// Replaces the image's cmd when not empty.
        args: Vec<String>,
        env: Vec<(String, String)>,
        workdir: Option<String>,
    },
}

/// One task as its executor receives it (answer to a claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobId,
    pub attempt: u32,
    /// The job's name (for logs and container ids).
    pub name: String,
    pub program: Program,
    /// Artifact ids and where they appear (paths under `/inputs`).
    pub inputs: Vec<(Hash, String)>,
    /// Paths under `/outputs` to store, each optionally tagged.
    pub outputs: Vec<(String, Option<TagName>)>,
    pub needs: Needs,
    pub timeout_ms: u64,
    pub cache_key: Hash,
    /// Where the task leaves its metrics (a JSON object of numbers and
    /// lists of numbers), read into [`JobResult::metrics`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// How a finished attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobResult {
    /// The task's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Output paths and the artifacts stored from them.
    pub outputs: Vec<(String, Hash)>,
    /// A tree with `stdout` and `stderr`, when the task printed anything.
    pub logs: Option<Hash>,
    /// The sandbox's error class (`timeout`, `memory limit`, ...) and message.
    pub error: Option<(String, String)>,
    /// Whether this result was reused from an earlier identical job.
    pub cached: bool,
    pub wall_ms: u64,
    pub peak_memory: Option<u64>,
    /// Limits not applied and the like.
    pub notes: Vec<String>,
    /// On a successful result, its executor's signature over
    /// [`signed_result`]: what makes the result a cache record other nodes
    /// accept. Absent (and not encoded) on any other result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ResultSignature>,
    /// What the task reported in its metrics file (a series is one metric
    /// per step). Not signed: it is the executor's report, like `wall_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

/// An executor's Ed25519 signature (its libp2p node key) over
/// [`signed_result`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultSignature(pub [u8; 64]);

impl fmt::Debug for ResultSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResultSignature({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for ResultSignature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ResultSignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SigVisitor;

        impl Visitor<'_> for SigVisitor {
            type Value = ResultSignature;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 bytes or 128 hex digits")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ResultSignature, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(ResultSignature(arr))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ResultSignature, E> {
                if v.len() != 128 {
                    return Err(E::invalid_length(v.len(), &self));
                }
                let bytes = hex::decode(v).map_err(E::custom)?;
                self.visit_bytes(&bytes)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(SigVisitor)
        } else {
            deserializer.deserialize_bytes(SigVisitor)
        }
    }
}

/// What an executor signs for a successful attempt: a domain tag, then the
/// CBOR array `[cache_key, job, attempt, coordinator, executor, outputs,
/// logs]`. Only successes are signed (the domain says so), so a signature
/// cannot be moved onto a failed attempt's result, another job's cache key,
/// another coordinator or other outputs.
pub fn signed_result(
    cache_key: &Hash,
    job: &JobId,
    attempt: u32,
    coordinator: &str,
    executor: &str,
    result: &JobResult,
) -> Vec<u8> {
    let body = (
        cache_key,
        job,
        attempt,
        coordinator,
        executor,
        &result.outputs,
        &result.logs,
    );
    let mut out = RESULT_SIGNATURE_DOMAIN.to_vec();
    // a tuple of ids, short strings and a list bounded by the spec's
    // outputs: encoding into a Vec cannot fail
    out.extend(codec::encode(&body, usize::MAX).unwrap_or_default());
    out
}

/// The domain tag that starts every [`signed_result`] payload.
pub const RESULT_SIGNATURE_DOMAIN: &[u8] = b"weft/succeeded-result/1\0";

impl JobResult {
    /// Exited 0 without an error.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }
}

/// One step of a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub state: JobState,
    pub at_ms: u64,
    pub attempt: u32,
    /// The executor, once there is one.
    pub node: Option<String>,
    pub reason: Option<String>,
}

/// A job as every node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub name: String,
    /// The node the job was submitted to, which places and tracks it.
    pub coordinator: String,
    pub state: JobState,
    /// The current (or last) attempt, from 1; 0 before the first placement.
    pub attempt: u32,
    /// The executor of the current attempt.
    pub node: Option<String>,
    /// Why the job is in its state (pending: what no peer has; failed: why).
    pub reason: Option<String>,
    pub result: Option<JobResult>,
    pub cache_key: Hash,
    pub history: Vec<Transition>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Grows with every change; the higher revision of a job wins.
    pub revision: u64,
}

/// Job status changes, gossiped by coordinators on `weft/jobs/1` in batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGossip {
    pub statuses: Vec<JobStatus>,
}

impl JobGossip {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self, MAX_MESSAGE_BYTES)
    }

    /// Decodes gossip from a peer, checking every field's bound.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode_peer(bytes, MAX_MESSAGE_BYTES)
    }
}

/// A job submission as the API and the coordinator receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub spec: JobSpec,
    /// Run on the node it was submitted to, nowhere else.
    #[serde(default)]
    pub local: bool,
    /// What the job is a run of: its experiment, params, pipeline run and step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunContext>,
}

/// What a job's run records besides the job: set by the pipeline engine
/// for its steps, and from `metadata.experiment` for a plain job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        let id = JobId::new(0x0123_4567_89ab, 0xdead_beef);
        assert_eq!(id.as_str(), "0123456789abdeadbeef");
        assert_eq!(id.as_str().parse::<JobId>(), Ok(id.clone()));
        assert!("xyz".parse::<JobId>().is_err());
        assert!("0123456789ABDEADBEEF".parse::<JobId>().is_err());
        assert!(JobId::new(1, 0) < JobId::new(2, 0));
    }

    /// The gossip format. A change here needs `weft/jobs/2`.
    #[test]
    fn golden_gossip() {
        let status = JobStatus {
            id: JobId::new(1, 2),
            name: "j".into(),
            coordinator: "c".into(),
            state: JobState::Succeeded,
            attempt: 1,
            node: Some("e".into()),
            reason: None,
            result: Some(JobResult {
                exit_code: Some(0),
                ..JobResult::default()
            }),
            cache_key: Hash::EMPTY,
            history: vec![Transition {
                state: JobState::Pending,
                at_ms: 1,
                attempt: 0,
                node: None,
                reason: None,
            }],
            created_ms: 1,
            updated_ms: 2,
            revision: 3,
        };
        let g = JobGossip {
            statuses: vec![status],
        };
        let bytes = g.encode().expect("encode");
        // the same bytes as an independent CBOR encoder (Python's cbor2)
        // gives for these fields in this order
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a1",
                "68",
                "7374617475736573",
                "81",
                "ad",
                "626964",
                "74",
                "3030303030303030303030313030303030303032",
                "646e616d65",
                "616a",
                "6b636f6f7264696e61746f72",
                "6163",
                "657374617465",
                "69",
                "737563636565646564",
                "67617474656d7074",
                "01",
                "646e6f6465",
                "6165",
                "66726561736f6e",
                "f6",
                "66726573756c74",
                "a8",
                "69657869745f636f6465",
                "00",
                "676f757470757473",
                "80",
                "646c6f6773",
                "f6",
                "656572726f72",
                "f6",
                "66636163686564",
                "f4",
                "6777616c6c5f6d73",
                "00",
                "6b7065616b5f6d656d6f7279",
                "f6",
                "656e6f746573",
                "80",
                "6963616368655f6b6579",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "67686973746f7279",
                "81",
                "a5",
                "657374617465",
                "67",
                "70656e64696e67",
                "6561745f6d73",
                "01",
                "67617474656d7074",
                "00",
                "646e6f6465",
                "f6",
                "66726561736f6e",
                "f6",
                "6a637265617465645f6d73",
                "01",
                "6a757064617465645f6d73",
                "02",
                "687265766973696f6e",
                "03"
            )
        );
        assert_eq!(JobGossip::decode(&bytes).expect("decode"), g);
    }

    /// What an executor signs. A change here invalidates every signed
    /// result: it needs a new domain tag.
    #[test]
    fn golden_signed_result() {
        let result = JobResult {
            exit_code: Some(0),
            outputs: vec![("/outputs/m".into(), Hash::EMPTY)],
            // not signed: only outputs and logs are
            wall_ms: 12,
            ..JobResult::default()
        };
        let payload = signed_result(&Hash::EMPTY, &JobId::new(1, 2), 3, "c", "e", &result);
        // checked against an independent CBOR encoder (Python's cbor2)
        assert_eq!(
            hex::encode(&payload),
            concat!(
                "776566742f7375636365656465642d726573756c742f3100", // domain
                "87",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "743030303030303030303030313030303030303032",
                "03",
                "6163",
                "6165",
                "81",
                "82",
                "6a2f6f7574707574732f6d",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "f6"
            )
        );
        // every signed field changes it
        let other_outputs = JobResult {
            outputs: vec![("/outputs/n".into(), Hash::EMPTY)],
            ..result.clone()
        };
        for other in [
            signed_result(&Hash::of(b"x"), &JobId::new(1, 2), 3, "c", "e", &result),
            signed_result(&Hash::EMPTY, &JobId::new(1, 3), 3, "c", "e", &result),
            signed_result(&Hash::EMPTY, &JobId::new(1, 2), 4, "c", "e", &result),
            signed_result(&Hash::EMPTY, &JobId::new(1, 2), 3, "d", "e", &result),
            signed_result(&Hash::EMPTY, &JobId::new(1, 2), 3, "c", "f", &result),
            signed_result(&Hash::EMPTY, &JobId::new(1, 2), 3, "c", "e", &other_outputs),
        ] {
            assert_ne!(other, payload);
        }
    }

    /// A signed result on the wire: the signature is a 64-byte string, and
    /// a result without one encodes as before.
    #[test]
    fn golden_result_signature() {
        let mut result = JobResult {
            exit_code: Some(0),
            ..JobResult::default()
        };
        let unsigned = codec::encode(&result, MAX_MESSAGE_BYTES).expect("encode");
        assert_eq!(&hex::encode(&unsigned)[..2], "a8", "8 fields, as before");
        result.signature = Some(ResultSignature([7; 64]));
        let bytes = codec::encode(&result, MAX_MESSAGE_BYTES).expect("encode");
        let hex = hex::encode(&bytes);
        assert_eq!(&hex[..2], "a9");
        assert!(hex.ends_with(&format!(
            "697369676e6174757265{}{}",
            "5840",
            "07".repeat(64)
        )));
        let back: JobResult = codec::decode(&bytes, MAX_MESSAGE_BYTES).expect("decode");
        assert_eq!(back, result);
        // in text formats (the REST API's JSON, YAML) it is 128 hex digits
        let text = serde_yaml_ng::to_string(&result).expect("yaml");
        assert!(text.contains(&"07".repeat(64)), "{text}");
        let back: JobResult = serde_yaml_ng::from_str(&text).expect("from yaml");
        assert_eq!(back, result);
        let cut = text.replace(&"07".repeat(64), &"07".repeat(63));
        assert!(serde_yaml_ng::from_str::<JobResult>(&cut).is_err());
        // a signature of another length is refused
        let short = hex.replace(
            &format!("5840{}", "07".repeat(64)),
            &format!("5820{}", "07".repeat(32)),
        );
        let short = hex::decode(short).expect("hex");
        assert!(codec::decode::<JobResult>(&short, MAX_MESSAGE_BYTES).is_err());
    }
}
