//! The scheduler's records in sled: the jobs a node coordinates (so a
//! restart resumes tracking them), the results every node has heard of
//! (the memoization cache) and an executor's final reports not yet
//! acknowledged, each carrying a version.
//!
//! Cache records are signed: [`CacheRecord`] names the job, attempt,
//! coordinator and executor of the result, and carries the executor's
//! Ed25519 signature (its libp2p node key, recovered from its peer id) over
//! [`weft_protocol::sched::signed_result`]. Version 1 cache records carried
//! no signature; they are dropped when read (the job runs once more and
//! writes a version 2 record).

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use weft_protocol::Hash;
use weft_protocol::sched::{
    Assignment, JobId, JobResult, JobStatus, ResultSignature, Submission, signed_result,
};

use crate::store::records::Record;

/// A job this node coordinates (key: the job id).
///
/// Version 2 added `deadline_ms`; a version 1 record reads with none, and
/// [`JobRecord::deadline_ms`] derives it from the attempt's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) v: u8,
    pub(crate) status: JobStatus,
    pub(crate) submission: Submission,
    /// The task with references resolved; `attempt` is set per placement.
    pub(crate) assignment: Assignment,
    /// Unix ms past which the current attempt is given up (its timeout plus
    /// a grace), once it is placed.
    #[serde(default)]
    pub(crate) deadline_ms: Option<u64>,
}

impl JobRecord {
    /// The current attempt's deadline: as stored, or for a version 1
    /// record, from when the attempt was placed.
    pub(crate) fn deadline_ms(&self, grace_ms: impl Fn(u64) -> u64) -> Option<u64> {
        if self.deadline_ms.is_some() {
            return self.deadline_ms;
        }
        let placed = self.status.history.iter().rev().find(|t| {
            t.attempt == self.status.attempt && t.state == weft_protocol::sched::JobState::Placed
        })?;
        let timeout = self.assignment.timeout_ms;
        Some(
            placed
                .at_ms
                .saturating_add(timeout)
                .saturating_add(grace_ms(timeout)),
        )
    }
}

/// A successful result, reusable by an identical job (key: the cache key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CacheRecord {
    pub(crate) v: u8,
    /// The cache key (also the sled key), signed with the rest.
    pub(crate) key: Hash,
    pub(crate) job: JobId,
    pub(crate) attempt: u32,
    /// The job's coordinator (peer id), the only node whose gossip of it is
    /// accepted.
    pub(crate) coordinator: String,
    /// The executor (peer id) that produced and signed the result.
    pub(crate) executor: String,
    /// The result, without its signature (kept in `signature`).
    pub(crate) result: JobResult,
    pub(crate) signature: ResultSignature,
    /// When this node recorded it (local clock).
    pub(crate) at_ms: u64,
}

impl Record for JobRecord {
    const WHAT: &'static str = "job";
    const VERSION: u8 = 2;
}

impl Record for CacheRecord {
    const WHAT: &'static str = "cache";
    const VERSION: u8 = 2;
}

/// Why a cache record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CacheRecordError {
    #[error("the result carries no executor signature")]
    Unsigned,
    #[error("executor {0:?} is not a peer id with an Ed25519 key")]
    NoKey(String),
    #[error("the signature does not verify against executor {0}")]
    BadSignature(String),
}

impl CacheRecord {
    /// A record for `result` (its signature moved out); refused when the
    /// result is unsigned or the signature does not verify against
    /// `executor`.
    pub(crate) fn signed(
        key: Hash,
        job: JobId,
        attempt: u32,
        coordinator: String,
        executor: String,
        mut result: JobResult,
        at_ms: u64,
    ) -> Result<CacheRecord, CacheRecordError> {
        let signature = result.signature.take().ok_or(CacheRecordError::Unsigned)?;
        result.cached = false;
        let rec = CacheRecord {
            v: <CacheRecord as Record>::VERSION,
            key,
            job,
            attempt,
            coordinator,
            executor,
            result,
            signature,
            at_ms,
        };
        rec.verify()?;
        Ok(rec)
    }

    /// What the executor signed.
    pub(crate) fn payload(&self) -> Vec<u8> {
        signed_result(
            &self.key,
            &self.job,
            self.attempt,
            &self.coordinator,
            &self.executor,
            &self.result,
        )
    }

    /// Checks the executor's signature.
    pub(crate) fn verify(&self) -> Result<(), CacheRecordError> {
        let key = public_key(&self.executor)
            .ok_or_else(|| CacheRecordError::NoKey(self.executor.clone()))?;
        if key.verify(&self.payload(), &self.signature.0) {
            Ok(())
        } else {
            Err(CacheRecordError::BadSignature(self.executor.clone()))
        }
    }

    /// Reads a stored record; `Ok(None)` for a version 1 record, which is
    /// unsigned and so no longer used.
    pub(crate) fn load(
        bytes: &[u8],
    ) -> Result<Option<CacheRecord>, crate::store::records::RecordError> {
        #[derive(Deserialize)]
        struct Probe {
            v: u8,
        }
        if let Ok(Probe { v }) = weft_protocol::decode::<Probe>(bytes, bytes.len())
            && v < 2
        {
            return Ok(None);
        }
        CacheRecord::from_bytes(bytes).map(Some)
    }
}

/// The Ed25519 key an ed25519 peer id embeds (libp2p inlines keys of 42
/// bytes or less in the id with the identity multihash).
pub(crate) fn public_key(peer: &str) -> Option<PublicKey> {
    let id: PeerId = peer.parse().ok()?;
    let mh: &libp2p::multihash::Multihash<64> = id.as_ref();
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

/// Signs a successful result as its executor.
pub(crate) fn sign_result(
    keypair: &Keypair,
    assignment_key: &Hash,
    job: &JobId,
    attempt: u32,
    coordinator: &str,
    executor: &str,
    result: &JobResult,
) -> Option<ResultSignature> {
    let payload = signed_result(assignment_key, job, attempt, coordinator, executor, result);
    let sig = keypair.sign(&payload).ok()?;
    Some(ResultSignature(sig.try_into().ok()?))
}

/// An executor's final report, kept until its coordinator acknowledges it
/// (key: job id then attempt), so a result survives a lost reply, a
/// coordinator restart and an executor restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReportRecord {
    pub(crate) v: u8,
    pub(crate) coordinator: String,
    pub(crate) job: JobId,
    pub(crate) attempt: u32,
    pub(crate) state: weft_protocol::sched::JobState,
    pub(crate) reason: Option<String>,
    pub(crate) result: Option<JobResult>,
    /// When it was first written (local clock); old ones are dropped.
    pub(crate) at_ms: u64,
}

impl Record for ReportRecord {
    const WHAT: &'static str = "report";
    const VERSION: u8 = 1;
}

impl ReportRecord {
    /// The sled key of a report.
    pub(crate) fn key(job: &JobId, attempt: u32) -> Vec<u8> {
        let mut k = job.as_str().as_bytes().to_vec();
        k.extend_from_slice(&attempt.to_be_bytes());
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::sched::JobState;

    fn result() -> JobResult {
        JobResult {
            exit_code: Some(0),
            outputs: vec![("/outputs/m".into(), Hash::EMPTY)],
            ..JobResult::default()
        }
    }

    /// On-disk format of cache records, version 2.
    #[test]
    fn golden_cache_record() {
        let r = CacheRecord {
            v: 2,
            key: Hash::EMPTY,
            job: JobId::new(1, 2),
            attempt: 3,
            coordinator: "c".into(),
            executor: "e".into(),
            result: result(),
            signature: ResultSignature([9; 64]),
            at_ms: 5,
        };
        let bytes = r.to_bytes().expect("encode");
        // checked against an independent CBOR encoder (Python's cbor2)
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a9",
                "6176",
                "02",
                "636b6579",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "636a6f62",
                "74",
                "3030303030303030303030313030303030303032",
                "67617474656d7074",
                "03",
                "6b636f6f7264696e61746f72",
                "6163",
                "686578656375746f72",
                "6165",
                "66726573756c74",
                "a8",
                "69657869745f636f6465",
                "00",
                "676f757470757473",
                "81",
                "82",
                "6a2f6f7574707574732f6d",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
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
                "697369676e6174757265",
                "5840",
                "09090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909",
                "6561745f6d73",
                "05"
            )
        );
        assert_eq!(CacheRecord::load(&bytes).expect("decode"), Some(r));
    }

    /// A version 1 record (unsigned) is no longer used: it reads as none.
    #[test]
    fn a_version_1_cache_record_is_dropped() {
        // the version 1 golden bytes
        let v1 = hex::decode(concat!(
            "a4",
            "6176",
            "01",
            "636a6f62",
            "74",
            "3030303030303030303030313030303030303032",
            "66726573756c74",
            "a8",
            "69657869745f636f6465",
            "00",
            "676f757470757473",
            "81",
            "82",
            "6a2f6f7574707574732f6d",
            "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
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
            "6561745f6d73",
            "05"
        ))
        .expect("hex");
        assert_eq!(CacheRecord::load(&v1).expect("read"), None);
        assert!(CacheRecord::load(b"\xff").is_err());
    }

    #[test]
    fn a_record_is_kept_only_with_its_executor_s_signature() {
        let executor = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let e = executor.public().to_peer_id().to_string();
        let job = JobId::new(1, 2);
        let sign = |key: &Keypair, coordinator: &str| {
            let mut r = result();
            r.signature = sign_result(key, &Hash::EMPTY, &job, 3, coordinator, &e, &r);
            r
        };
        let signed = |r: JobResult, executor: &str| {
            CacheRecord::signed(
                Hash::EMPTY,
                job.clone(),
                3,
                "c".into(),
                executor.into(),
                r,
                5,
            )
        };
        let rec = signed(sign(&executor, "c"), &e).expect("signed by its executor");
        assert_eq!(rec.verify(), Ok(()));
        assert_eq!(rec.result.signature, None, "kept beside the result");
        // signed by another member in the executor's name
        assert_eq!(
            signed(sign(&other, "c"), &e),
            Err(CacheRecordError::BadSignature(e.clone()))
        );
        // unsigned
        assert_eq!(signed(result(), &e), Err(CacheRecordError::Unsigned));
        // moved to another coordinator, key or outputs
        assert!(signed(sign(&executor, "d"), &e).is_err());
        let mut moved = rec.clone();
        moved.key = Hash::of(b"another task");
        assert!(moved.verify().is_err());
        let mut forged = rec.clone();
        forged.result.outputs[0].1 = Hash::of(b"forged");
        assert!(forged.verify().is_err());
        // an executor that is not a peer id
        assert_eq!(
            signed(sign(&executor, "c"), "nobody"),
            Err(CacheRecordError::NoKey("nobody".into()))
        );
    }

    /// On-disk format of an executor's unacknowledged final report.
    #[test]
    fn golden_report_record() {
        let r = ReportRecord {
            v: 1,
            coordinator: "c".into(),
            job: JobId::new(1, 2),
            attempt: 3,
            state: JobState::Succeeded,
            reason: None,
            result: None,
            at_ms: 5,
        };
        let bytes = r.to_bytes().expect("encode");
        // checked against an independent CBOR encoder (Python's cbor2)
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a8",
                "6176",
                "01",
                "6b636f6f7264696e61746f72",
                "6163",
                "636a6f62",
                "74",
                "3030303030303030303030313030303030303032",
                "67617474656d7074",
                "03",
                "657374617465",
                "69",
                "737563636565646564",
                "66726561736f6e",
                "f6",
                "66726573756c74",
                "f6",
                "6561745f6d73",
                "05"
            )
        );
        assert_eq!(ReportRecord::from_bytes(&bytes).expect("decode"), r);
        assert_eq!(
            ReportRecord::key(&JobId::new(1, 2), 3),
            b"00000000000100000002\0\0\0\x03".to_vec()
        );
    }
}
