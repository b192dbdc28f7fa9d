//! The scheduler's records in sled: the jobs a node coordinates (so a
//! restart resumes tracking them) and the results every node has heard of
//! (the memoization cache), each carrying a version.

use serde::{Deserialize, Serialize};
use weft_protocol::sched::{Assignment, JobId, JobResult, JobStatus, Submission};

use crate::store::records::Record;

/// A job this node coordinates (key: the job id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) v: u8,
    pub(crate) status: JobStatus,
    pub(crate) submission: Submission,
    /// The task with references resolved; `attempt` is set per placement.
    pub(crate) assignment: Assignment,
}

/// A successful result, reusable by an identical job (key: the cache key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CacheRecord {
    pub(crate) v: u8,
    pub(crate) job: JobId,
    pub(crate) result: JobResult,
    pub(crate) at_ms: u64,
}

impl Record for JobRecord {
    const WHAT: &'static str = "job";
    const VERSION: u8 = 1;
}

impl Record for CacheRecord {
    const WHAT: &'static str = "cache";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hash;

    /// On-disk format of cache records, version 1.
    #[test]
    fn golden_cache_record() {
        let r = CacheRecord {
            v: 1,
            job: JobId::new(1, 2),
            result: JobResult {
                exit_code: Some(0),
                outputs: vec![("/outputs/m".into(), Hash::EMPTY)],
                ..JobResult::default()
            },
            at_ms: 5,
        };
        let bytes = r.to_bytes().expect("encode");
        // checked against an independent CBOR encoder (Python's cbor2)
        assert_eq!(
            hex::encode(&bytes),
            concat!(
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
            )
        );
        assert_eq!(CacheRecord::from_bytes(&bytes).expect("decode"), r);
    }
}
