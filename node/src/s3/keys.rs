//! Access keys of the gateway: `$WEFT_HOME/s3-keys` (mode 0600, a
//! versioned JSON document written atomically), managed by `weft s3 key`
//! and read by the daemon whenever the file changes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::home::write_atomic;

/// Version of the key file.
pub const KEYS_V: u32 = 1;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: not an S3 key file ({why}); fix or remove it, then recreate the keys with `weft s3 key create`"
    )]
    Bad { path: PathBuf, why: String },
    #[error("{path}: version {v} is newer than this weft understands ({KEYS_V}); upgrade weft")]
    Version { path: PathBuf, v: u32 },
    #[error("{path}: readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// What a key may do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
}

impl Perm {
    /// Parses `r`, `read`, `w`, `rw`, `write`.
    pub fn parse(s: &str) -> Option<Perm> {
        match s {
            "r" | "read" => Some(Perm::Read),
            "w" | "rw" | "write" => Some(Perm::Write),
            _ => None,
        }
    }
}

/// One access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub name: String,
    pub created_ms: u64,
    /// What the key may do with every bucket (`None`: only `buckets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Perm>,
    /// What the key may do with named buckets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<String, Perm>,
}

impl Key {
    /// Whether the key may do `want` with `bucket`.
    pub fn allows(&self, bucket: &str, want: Perm) -> bool {
        let have = self.buckets.get(bucket).copied().max(self.all);
        have.is_some_and(|p| p >= want)
    }
}

/// The key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub v: u32,
    pub keys: Vec<Key>,
}

impl Default for KeyFile {
    fn default() -> Self {
        KeyFile {
            v: KEYS_V,
            keys: Vec::new(),
        }
    }
}

impl KeyFile {
    /// Reads the file; a missing file has no keys.
    pub fn load(path: &Path) -> Result<KeyFile, KeyError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyFile::default()),
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let meta = fs::metadata(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o777,
            });
        }
        Self::parse(path, &bytes)
    }

    /// Parses the bytes of the file at `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<KeyFile, KeyError> {
        #[derive(Deserialize)]
        struct Head {
            v: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| KeyError::Bad {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        if head.v > KEYS_V {
            return Err(KeyError::Version {
                path: path.to_path_buf(),
                v: head.v,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| KeyError::Bad {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        write_atomic(path, &self.to_bytes(), 0o600).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The key with this access key id.
    pub fn get(&self, access_key: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.access_key == access_key)
    }
}

/// A new access key id (`WK` + 18 upper-case letters and digits).
pub fn new_access_key() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    let mut s = String::from("WK");
    for _ in 0..18 {
        s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    s
}

/// A new secret (40 characters of base-32).
pub fn new_secret_key() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks an access key id or secret given by a user.
pub fn check_key_text(what: &str, s: &str) -> Result<(), KeyError> {
    if !(16..=128).contains(&s.len())
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_'))
    {
        return Err(KeyError::Invalid(format!(
            "the {what} must be 16 to 128 letters, digits or + / = - _"
        )));
    }
    Ok(())
}

/// What tells one version of the key file from another: mtime (ns),
/// ctime (s, ns), length, inode.
type Stamp = (i64, i64, i64, u64, u64);

/// The daemon's view of the key file, read again when it changes.
pub struct KeyCache {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, KeyFile)>,
}

impl KeyCache {
    pub fn new(path: PathBuf) -> Self {
        KeyCache {
            path,
            state: Mutex::new((None, KeyFile::default())),
        }
    }

    /// The key with this id, as the file says now.
    pub fn get(&self, access_key: &str) -> Option<Key> {
        let stamp = fs::metadata(&self.path)
            .ok()
            .map(|m| (m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.len(), m.ino()));
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 != stamp || stamp.is_none() {
            match KeyFile::load(&self.path) {
                Ok(f) => *st = (stamp, f),
                Err(e) => {
                    tracing::warn!(error = %e, "S3 keys not read; refusing every key");
                    *st = (None, KeyFile::default());
                }
            }
        }
        st.1.get(access_key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_key_file() {
        let mut buckets = BTreeMap::new();
        buckets.insert("photos".to_string(), Perm::Read);
        let f = KeyFile {
            v: 1,
            keys: vec![
                Key {
                    access_key: "WKAAAAAAAAAAAAAAAAAA".into(),
                    secret_key: "s".repeat(40),
                    name: "ci".into(),
                    created_ms: 1_700_000_000_000,
                    all: Some(Perm::Write),
                    buckets: BTreeMap::new(),
                },
                Key {
                    access_key: "WKBBBBBBBBBBBBBBBBBB".into(),
                    secret_key: "t".repeat(40),
                    name: String::new(),
                    created_ms: 1,
                    all: None,
                    buckets,
                },
            ],
        };
        let golden = format!(
            r#"{{
  "v": 1,
  "keys": [
    {{
      "access_key": "WKAAAAAAAAAAAAAAAAAA",
      "secret_key": "{s}",
      "name": "ci",
      "created_ms": 1700000000000,
      "all": "write"
    }},
    {{
      "access_key": "WKBBBBBBBBBBBBBBBBBB",
      "secret_key": "{t}",
      "name": "",
      "created_ms": 1,
      "buckets": {{
        "photos": "read"
      }}
    }}
  ]
}}
"#,
            s = "s".repeat(40),
            t = "t".repeat(40)
        );
        assert_eq!(String::from_utf8(f.to_bytes()).expect("utf8"), golden);
        assert_eq!(
            KeyFile::parse(Path::new("k"), golden.as_bytes()).expect("parse"),
            f
        );
        assert!(f.keys[0].allows("any", Perm::Write));
        assert!(f.keys[1].allows("photos", Perm::Read));
        assert!(!f.keys[1].allows("photos", Perm::Write));
        assert!(!f.keys[1].allows("other", Perm::Read));
    }

    #[test]
    fn newer_and_broken_files_are_refused() {
        assert!(matches!(
            KeyFile::parse(Path::new("k"), br#"{"v":2,"keys":[]}"#),
            Err(KeyError::Version { v: 2, .. })
        ));
        assert!(matches!(
            KeyFile::parse(Path::new("k"), b"nope"),
            Err(KeyError::Bad { .. })
        ));
    }

    #[test]
    fn a_file_others_can_read_is_refused_and_changes_are_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s3-keys");
        let cache = KeyCache::new(path.clone());
        assert!(cache.get("WKAAAAAAAAAAAAAAAAAA").is_none());
        let mut f = KeyFile::default();
        f.keys.push(Key {
            access_key: "WKAAAAAAAAAAAAAAAAAA".into(),
            secret_key: new_secret_key(),
            name: String::new(),
            created_ms: 0,
            all: Some(Perm::Read),
            buckets: BTreeMap::new(),
        });
        f.save(&path).expect("save");
        assert!(cache.get("WKAAAAAAAAAAAAAAAAAA").is_some());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(KeyFile::load(&path), Err(KeyError::Mode { .. })));
        assert!(cache.get("WKAAAAAAAAAAAAAAAAAA").is_none());
    }
}
