//! How buckets and keys become tag names.
//!
//! - a bucket `B` is the tag `s3/B:bucket`;
//! - an object `K` in `B` is the tag `s3/B/ENC(K):object` (its bytes, a
//!   blob) and `s3/B/ENC(K):meta` (its `meta.json`, see `records`).
//!
//! `ENC` keeps `A-Z a-z 0-9 . -`, keeps `/` between segments, writes every
//! other byte as `_XX` (upper-case hex), an empty segment as `_` and a
//! segment of only dots (`.`, `..`) with its dots escaped, so every key is a
//! valid tag name and decodes back to itself; `..` in a key is a name, never
//! a path.

use weft_protocol::TagName;
use weft_protocol::tag::MAX_TAG_BYTES;

/// The tag namespace of the gateway.
pub const ROOT: &str = "s3/";

/// Version part of a bucket's tag.
pub const BUCKET: &str = "bucket";
/// Version part of an object's data tag.
pub const OBJECT: &str = "object";
/// Version part of an object's metadata tag.
pub const META: &str = "meta";

/// Why a name cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the bucket name {0:?} is not valid: use 3-63 of a-z, 0-9, '.' and '-'")]
    Bucket(String),
    #[error("the key is empty")]
    EmptyKey,
    #[error("the key is too long: {0} bytes once encoded as a tag name (at most {MAX_TAG_BYTES})")]
    TooLong(usize),
}

/// Whether `b` is a bucket name the gateway takes (S3's rules, lower case).
pub fn valid_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

fn keep(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// Encodes a key as tag-name segments.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if seg.is_empty() {
            out.push('_');
            continue;
        }
        let only_dots = seg.bytes().all(|c| c == b'.');
        for &c in seg.as_bytes() {
            if keep(c) && !(only_dots && c == b'.') {
                out.push(c as char);
            } else {
                out.push_str(&format!("_{c:02X}"));
            }
        }
    }
    out
}

/// Decodes what [`encode_key`] made; `None` for anything it cannot have made.
pub fn decode_key(enc: &str) -> Option<String> {
    let mut out = Vec::with_capacity(enc.len());
    for (i, seg) in enc.split('/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        if seg == "_" {
            continue;
        }
        let b = seg.as_bytes();
        let mut j = 0;
        while j < b.len() {
            if b[j] == b'_' {
                let hex = seg.get(j + 1..j + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                j += 3;
            } else if keep(b[j]) {
                out.push(b[j]);
                j += 1;
            } else {
                return None;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The tag of a bucket.
pub fn bucket_tag(bucket: &str) -> Result<TagName, NameError> {
    if !valid_bucket(bucket) {
        return Err(NameError::Bucket(bucket.chars().take(80).collect()));
    }
    TagName::new(&format!("{ROOT}{bucket}:{BUCKET}"))
        .map_err(|_| NameError::Bucket(bucket.chars().take(80).collect()))
}

/// The tag prefix under which a bucket's objects are named.
pub fn object_prefix(bucket: &str) -> String {
    format!("{ROOT}{bucket}/")
}

/// The tag of an object's data (`OBJECT`) or metadata (`META`).
pub fn object_tag(bucket: &str, key: &str, version: &str) -> Result<TagName, NameError> {
    if !valid_bucket(bucket) {
        return Err(NameError::Bucket(bucket.chars().take(80).collect()));
    }
    if key.is_empty() {
        return Err(NameError::EmptyKey);
    }
    let name = format!("{ROOT}{bucket}/{}:{version}", encode_key(key));
    // both tags of an object must fit: check the longer one
    let longest = name.len() - version.len() + OBJECT.len().max(META.len());
    if longest > MAX_TAG_BYTES {
        return Err(NameError::TooLong(longest));
    }
    TagName::new(&name).map_err(|_| NameError::TooLong(longest))
}

/// What a tag under `s3/BUCKET/` names: the key and the version part.
pub fn parse_object_tag<'a>(bucket_prefix: &str, name: &'a str) -> Option<(String, &'a str)> {
    let rest = name.strip_prefix(bucket_prefix)?;
    let (enc, version) = rest.rsplit_once(':')?;
    Some((decode_key(enc)?, version))
}

/// The bucket a tag `s3/B:bucket` names.
pub fn parse_bucket_tag(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(ROOT)?;
    let b = rest.strip_suffix(&format!(":{BUCKET}"))?;
    (!b.contains('/')).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_encodings() {
        for (key, enc) in [
            ("docs/hello.txt", "docs/hello.txt"),
            ("e f+g.txt", "e_20f_2Bg.txt"),
            ("100%/real", "100_25/real"),
            ("a//b/", "a/_/b/_"),
            ("/lead", "_/lead"),
            ("../etc/passwd", "_2E_2E/etc/passwd"),
            ("./x/.../y", "_2E/x/_2E_2E_2E/y"),
            ("a..b", "a..b"),
            ("z/ü.txt", "z/_C3_BC.txt"),
            ("under_score:colon", "under_5Fscore_3Acolon"),
        ] {
            assert_eq!(encode_key(key), enc, "{key:?}");
            assert_eq!(decode_key(enc).as_deref(), Some(key), "{enc:?}");
            let t = object_tag("bkt", key, OBJECT).expect("tag");
            assert_eq!(t.as_str(), format!("s3/bkt/{enc}:object"));
        }
    }

    #[test]
    fn decode_refuses_what_encode_never_makes() {
        for bad in ["a_2", "a_zz", "a_2e", "a b", "x/_y"] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_keys_and_bad_buckets_are_refused() {
        let long = "k".repeat(300);
        assert!(matches!(
            object_tag("bkt", &long, OBJECT),
            Err(NameError::TooLong(_))
        ));
        assert_eq!(object_tag("bkt", "", META), Err(NameError::EmptyKey));
        for b in ["ab", "Upper", "a..b", "-ab", "a_b", "ab-"] {
            assert!(bucket_tag(b).is_err(), "{b}");
        }
        assert_eq!(
            bucket_tag("my.bucket-1").expect("ok").as_str(),
            "s3/my.bucket-1:bucket"
        );
        assert_eq!(
            parse_bucket_tag("s3/my.bucket-1:bucket"),
            Some("my.bucket-1")
        );
        assert_eq!(parse_bucket_tag("s3/b/k:bucket"), None);
        assert_eq!(
            parse_object_tag("s3/b/", "s3/b/e_20f:meta"),
            Some(("e f".to_string(), "meta"))
        );
    }

    proptest::proptest! {
        #[test]
        fn every_key_round_trips(key in "\\PC{1,40}") {
            let enc = encode_key(&key);
            proptest::prop_assert_eq!(decode_key(&enc), Some(key.clone()));
            let name = format!("s3/b/{enc}:object");
            proptest::prop_assert!(TagName::new(&name).is_ok() || name.len() > MAX_TAG_BYTES);
        }
    }
}
