//! The records the store keeps in sled, each carrying a version.
//!
//! Every value is a CBOR map with a `v` field. A record is never changed in
//! place: a new layout is a new version with a migration, and a version this
//! code does not know is refused with an error that says to upgrade weft.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_protocol::codec::{self, MAX_RECORD_BYTES};
use weft_protocol::transfer::GroupRanges;
use weft_protocol::{Hash, TagVersion};

/// What a blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// Opaque bytes: a file.
    Raw,
    /// An encoded [`weft_protocol::Tree`].
    Tree,
}

/// One blob in the store (key: the 32 hash bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub v: u8,
    pub size: u64,
    pub kind: BlobKind,
    /// All bytes present and verified. Incomplete blobs are being fetched.
    pub complete: bool,
    /// Added by name (a user's `add`, a job's output), as opposed to a child
    /// of a tree; `weft ls` lists these.
    pub root: bool,
    pub created_ms: u64,
}

/// A pin (key: the 32 hash bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    pub v: u8,
    pub created_ms: u64,
    /// Copies the mesh should keep; 1 means this node only.
    pub replicas: u32,
}

/// A tag's versions, every one this node has seen (key: the tag name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub v: u8,
    pub history: Vec<TagVersion>,
}

/// A blob being fetched (key: the 32 hash bytes; sled tree `partials`).
/// Its bytes live in `partial/<id>.data` and `partial/<id>.obao`, never in
/// `blobs/`, and it has no blob record until it is whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRecord {
    pub v: u8,
    /// The blob's size, proven by its last chunk group before the record
    /// was first written.
    pub size: u64,
    pub kind: BlobKind,
    /// Chunk groups whose bytes, and the parent hashes above them, were
    /// verified against the id, written and synced.
    pub verified: GroupRanges,
    pub created_ms: u64,
    /// Last time `verified` was written; GC removes partials left alone for
    /// long.
    pub updated_ms: u64,
}

/// Oldest versions of a tag beyond this many are dropped from its history.
pub const MAX_TAG_HISTORY: usize = 1000;

impl TagRecord {
    /// The winning version (last writer wins); `None` target means removed.
    pub fn current(&self) -> Option<&TagVersion> {
        self.history.iter().max_by(|a, b| a.lww_cmp(b))
    }

    /// Adds `version` unless already present; returns whether the record changed.
    pub fn merge(&mut self, version: TagVersion) -> bool {
        if self.history.contains(&version) {
            return false;
        }
        self.history.push(version);
        self.history.sort_by(|a, b| a.lww_cmp(b));
        if self.history.len() > MAX_TAG_HISTORY {
            let extra = self.history.len() - MAX_TAG_HISTORY;
            self.history.drain(..extra);
        }
        true
    }
}

/// The current version of each record type.
pub const BLOB_V: u8 = 1;
pub const PIN_V: u8 = 1;
pub const TAG_V: u8 = 1;
pub const PARTIAL_V: u8 = 1;

#[derive(Deserialize)]
struct Probe {
    v: u8,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{what} record has version {found}; this weft reads up to {known}, upgrade weft")]
    Newer {
        what: &'static str,
        found: u8,
        known: u8,
    },
    #[error("{what} record is malformed: {source}")]
    Malformed {
        what: &'static str,
        source: codec::CodecError,
    },
    #[error("{what} record of {len} bytes exceeds the limit of {limit} bytes; it is not stored")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("cannot encode the {what} record: {reason}")]
    Encode { what: &'static str, reason: String },
}

pub(crate) trait Record: Serialize + DeserializeOwned {
    const WHAT: &'static str;
    const VERSION: u8;

    /// The record's bytes; one over [`MAX_RECORD_BYTES`] is an error, never
    /// stored (an empty or cut record would fail every later read).
    fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        codec::encode(self, MAX_RECORD_BYTES).map_err(|e| match e {
            codec::CodecError::TooLarge { len, limit } => RecordError::TooLarge {
                what: Self::WHAT,
                len,
                limit,
            },
            other => RecordError::Encode {
                what: Self::WHAT,
                reason: other.to_string(),
            },
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let malformed = |source| RecordError::Malformed {
            what: Self::WHAT,
            source,
        };
        let probe: Probe = codec::decode(bytes, MAX_RECORD_BYTES).map_err(malformed)?;
        if probe.v > Self::VERSION {
            return Err(RecordError::Newer {
                what: Self::WHAT,
                found: probe.v,
                known: Self::VERSION,
            });
        }
        codec::decode(bytes, MAX_RECORD_BYTES).map_err(malformed)
    }
}

/// Reads a record met while walking a table: one that cannot be read is
/// skipped with a warning, so that one bad record does not fail listing,
/// GC or sync of all the others.
pub(crate) fn readable<R: Record>(key: &str, bytes: &[u8]) -> Option<R> {
    match R::from_bytes(bytes) {
        Ok(r) => Some(r),
        Err(error) => {
            tracing::warn!(key, %error, "skipping a record that cannot be read");
            None
        }
    }
}

impl Record for BlobRecord {
    const WHAT: &'static str = "blob";
    const VERSION: u8 = BLOB_V;
}

impl Record for PinRecord {
    const WHAT: &'static str = "pin";
    const VERSION: u8 = PIN_V;
}

impl Record for TagRecord {
    const WHAT: &'static str = "tag";
    const VERSION: u8 = TAG_V;
}

impl Record for PartialRecord {
    const WHAT: &'static str = "partial";
    const VERSION: u8 = PARTIAL_V;
}

/// Key for a blob or pin record.
pub(crate) fn hash_key(h: &Hash) -> [u8; 32] {
    *h.as_bytes()
}

/// Hash from a record key, if it is one.
pub(crate) fn key_hash(k: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(k).ok().map(Hash::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hlc;

    /// On-disk format of version 1 records. Changing these bytes means a new
    /// record version and a migration.
    #[test]
    fn golden_blob_record() {
        let r = BlobRecord {
            v: 1,
            size: 5,
            kind: BlobKind::Raw,
            complete: true,
            root: false,
            created_ms: 1_700_000_000_000,
        };
        let bytes = r.to_bytes().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a6", // map(6)
                "6176",
                "01", // "v": 1
                "6473697a65",
                "05", // "size": 5
                "646b696e64",
                "63726177", // "kind": "raw"
                "68636f6d706c657465",
                "f5", // "complete": true
                "64726f6f74",
                "f4", // "root": false
                "6a637265617465645f6d73",
                "1b0000018bcfe56800" // "created_ms": u64
            )
        );
        assert_eq!(BlobRecord::from_bytes(&bytes).expect("decode"), r);
    }

    #[test]
    fn golden_pin_record() {
        let r = PinRecord {
            v: 1,
            created_ms: 0,
            replicas: 3,
        };
        assert_eq!(
            hex::encode(r.to_bytes().expect("encode")),
            concat!(
                "a3",
                "6176",
                "01",
                "6a637265617465645f6d73",
                "00", // "created_ms": 0
                "687265706c69636173",
                "03" // "replicas": 3
            )
        );
    }

    #[test]
    fn golden_tag_record() {
        let r = TagRecord {
            v: 1,
            history: vec![TagVersion {
                target: Some(Hash::EMPTY),
                hlc: Hlc {
                    wall_ms: 2,
                    counter: 1,
                },
                origin: "n1".into(),
            }],
        };
        assert_eq!(
            hex::encode(r.to_bytes().expect("encode")),
            concat!(
                "a2",
                "6176",
                "01",
                "67686973746f7279",
                "81",
                "a3",
                "66746172676574",
                "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "63686c63",
                "a2",
                "6777616c6c5f6d73",
                "02",
                "67636f756e746572",
                "01",
                "666f726967696e",
                "626e31"
            )
        );
        assert_eq!(
            TagRecord::from_bytes(&r.to_bytes().expect("encode")).expect("decode"),
            r
        );
    }

    #[test]
    fn golden_partial_record() {
        let r = PartialRecord {
            v: 1,
            size: 40_000,
            kind: BlobKind::Tree,
            verified: GroupRanges::from_ranges([(0, 1), (2, 3)]),
            created_ms: 1,
            updated_ms: 2,
        };
        let bytes = r.to_bytes().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a6", // map(6)
                "6176",
                "01", // "v": 1
                "6473697a65",
                "199c40", // "size": 40000
                "646b696e64",
                "6474726565", // "kind": "tree"
                "68766572696669656482",
                "820001",
                "820203", // "verified": [[0, 1], [2, 3]]
                "6a637265617465645f6d73",
                "01", // "created_ms": 1
                "6a757064617465645f6d73",
                "02" // "updated_ms": 2
            )
        );
        assert_eq!(PartialRecord::from_bytes(&bytes).expect("decode"), r);
    }

    #[test]
    fn newer_versions_are_refused_with_advice() {
        let mut r = PinRecord {
            v: 9,
            created_ms: 0,
            replicas: 1,
        }
        .to_bytes()
        .expect("encode");
        let err = PinRecord::from_bytes(&r).expect_err("newer");
        assert!(err.to_string().contains("upgrade weft"), "{err}");
        r.truncate(3);
        assert!(matches!(
            PinRecord::from_bytes(&r),
            Err(RecordError::Malformed { .. })
        ));
    }

    #[test]
    fn an_oversized_record_is_an_error_not_an_empty_record() {
        let r = TagRecord {
            v: 1,
            history: (0..600)
                .map(|i| TagVersion {
                    target: None,
                    hlc: Hlc {
                        wall_ms: i,
                        counter: 0,
                    },
                    origin: "o".repeat(2048),
                })
                .collect(),
        };
        match r.to_bytes() {
            Err(RecordError::TooLarge {
                what: "tag",
                len,
                limit,
            }) => {
                assert!(len > limit && limit == MAX_RECORD_BYTES);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A tag write that would take its record over the limit fails and
    /// leaves the record as it was; a record that cannot be read is skipped
    /// by listing and sync rather than failing them.
    #[test]
    fn store_refuses_oversized_tags_and_skips_bad_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path(), "n1").expect("open");
        let name = weft_protocol::TagName::new("a:b").expect("tag");
        let big = |i: u64| TagVersion {
            target: Some(Hash::EMPTY),
            hlc: Hlc {
                wall_ms: i + 1,
                counter: 0,
            },
            origin: "o".repeat(4096),
        };
        let mut refused = None;
        for i in 0..400 {
            if let Err(e) = store.merge_tag(&name, big(i)) {
                refused = Some((i, e));
                break;
            }
        }
        let (at, err) = refused.expect("a write over the limit is refused");
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let kept = store.tag_history(&name).expect("still readable");
        assert_eq!(kept.len() as u64, at, "the refused version was not stored");
        assert_eq!(store.tag(&name).expect("tag"), Some(Hash::EMPTY));

        // a record that cannot be read (here: garbage) next to a good one
        let good = weft_protocol::TagName::new("c:d").expect("tag");
        store.set_tag(&good, Some(Hash::EMPTY)).expect("set");
        store
            .inner
            .tags
            .insert("b:c".as_bytes(), &b"\xff\x00garbage"[..])
            .expect("insert");
        let listed: Vec<String> = store
            .list_tags()
            .expect("listing survives a bad record")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(listed, ["a:b", "c:d"]);
        let (page, more) = store.tag_page(None, 10, 10).expect("sync page survives");
        assert!(!more);
        assert_eq!(page.len(), 2);
    }

    #[test]
    fn tag_merge_is_idempotent_and_ordered() {
        let v = |ms, origin: &str, t: Option<Hash>| TagVersion {
            target: t,
            hlc: Hlc {
                wall_ms: ms,
                counter: 0,
            },
            origin: origin.into(),
        };
        let mut r = TagRecord {
            v: 1,
            history: vec![],
        };
        assert!(r.merge(v(5, "b", Some(Hash::EMPTY))));
        assert!(r.merge(v(3, "a", None)));
        assert!(!r.merge(v(3, "a", None)));
        assert_eq!(r.current().map(|c| c.hlc.wall_ms), Some(5));
        assert!(r.merge(v(5, "c", None)));
        assert_eq!(r.current().map(|c| c.origin.as_str()), Some("c"));
        assert_eq!(r.history.len(), 3);
    }
}
