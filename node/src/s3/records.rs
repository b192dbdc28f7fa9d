//! The gateway's formats: an object's `meta.json` (a blob the object's
//! `:meta` tag points at) and a multipart upload's records (files under
//! `$WEFT_HOME/s3-uploads/ID/`). Every record carries a version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_protocol::Hash;

/// Version of `meta.json`.
pub const META_V: u32 = 1;
/// Version of upload records.
pub const UPLOAD_V: u32 = 1;

/// Bytes of a `meta.json` the gateway reads at most.
pub const MAX_META_BYTES: usize = 64 * 1024;

/// Checksums of an object or part, base64 as S3 shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
}

impl Checksums {
    pub fn is_empty(&self) -> bool {
        self.crc32.is_none() && self.crc32c.is_none() && self.crc64nvme.is_none()
    }
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub v: u32,
    /// The blob holding the object's bytes.
    pub data: Hash,
    pub size: u64,
    /// As S3 shows it, without quotes.
    pub etag: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub checksums: Checksums,
    /// Parts of a multipart upload (0 for a single PUT).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// ETag of one blob: the first 16 bytes of its BLAKE3 hash, as hex.
pub fn etag_of(h: &Hash) -> String {
    hex::encode(&h.as_bytes()[..16])
}

/// The content type of an object put without one.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

impl Meta {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a `meta.json`; `None` for one this weft cannot read.
    pub fn parse(bytes: &[u8]) -> Option<Meta> {
        if bytes.len() > MAX_META_BYTES {
            return None;
        }
        let m: Meta = serde_json::from_slice(bytes).ok()?;
        (m.v <= META_V).then_some(m)
    }
}

/// A multipart upload, `upload.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub v: u32,
    pub bucket: String,
    pub key: String,
    pub created_ms: u64,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The checksum algorithm the client announced (e.g. `CRC32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
}

/// One uploaded part, `part-N.json` beside its bytes `part-N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub v: u32,
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub checksums: Checksums,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_meta_json() {
        let mut metadata = BTreeMap::new();
        metadata.insert("owner".to_string(), "me".to_string());
        let m = Meta {
            v: 1,
            data: Hash::of(b"hello"),
            size: 5,
            etag: etag_of(&Hash::of(b"hello")),
            content_type: "text/plain".into(),
            metadata,
            checksums: Checksums {
                crc32: Some("NhCmhg==".into()),
                ..Checksums::default()
            },
            parts: 0,
        };
        let golden = r#"{"v":1,"data":"ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f","size":5,"etag":"ea8f163db38682925e4491c5e58d4bb3","content_type":"text/plain","metadata":{"owner":"me"},"checksums":{"crc32":"NhCmhg=="}}"#;
        assert_eq!(String::from_utf8(m.to_bytes()).expect("utf8"), golden);
        assert_eq!(Meta::parse(golden.as_bytes()), Some(m));
        assert_eq!(Meta::parse(br#"{"v":2,"data":"ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f","size":5,"etag":"x","content_type":"t"}"#), None);
    }

    #[test]
    fn golden_upload_records() {
        let u = UploadRecord {
            v: 1,
            bucket: "b".into(),
            key: "k/x.bin".into(),
            created_ms: 7,
            content_type: DEFAULT_CONTENT_TYPE.into(),
            metadata: BTreeMap::new(),
            checksum_algorithm: Some("CRC32".into()),
        };
        assert_eq!(
            serde_json::to_string(&u).expect("json"),
            r#"{"v":1,"bucket":"b","key":"k/x.bin","created_ms":7,"content_type":"binary/octet-stream","checksum_algorithm":"CRC32"}"#
        );
        let p = PartRecord {
            v: 1,
            number: 3,
            size: 10,
            etag: "00112233445566778899aabbccddeeff".into(),
            last_modified_ms: 9,
            checksums: Checksums::default(),
        };
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            r#"{"v":1,"number":3,"size":10,"etag":"00112233445566778899aabbccddeeff","last_modified_ms":9}"#
        );
    }
}
