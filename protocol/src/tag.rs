//! Tag names, artifact references and tag versions.
//!
//! Goals: one grammar for the names users give artifacts
//! (`datasets/mnist:v1`, `models/mnist:production`), one parser for what a
//! user may type where an artifact is expected (an id, an id prefix or a tag),
//! and the versioned value a tag holds, ordered by a hybrid logical clock so
//! that every node picks the same winner for a name.
//!
//! Non-goals: storing or replicating tags (the node's store and net do that).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, HashParseError, HashPrefix};

/// Longest tag name, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// A tag name: `REPOSITORY:VERSION`, where the repository is one or more
/// `/`-separated segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagName(String);

/// Why a string is not a valid tag name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag name {name:?}: {why} (tags look like datasets/mnist:v1)")]
pub struct TagNameError {
    pub name: String,
    pub why: &'static str,
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TagName {
    /// Validates `s` as a tag name.
    pub fn new(s: &str) -> Result<Self, TagNameError> {
        let err = |why| TagNameError {
            name: s.chars().take(80).collect(),
            why,
        };
        if s.len() > MAX_TAG_BYTES {
            return Err(err("longer than 256 bytes"));
        }
        let (repo, version) = s
            .rsplit_once(':')
            .ok_or_else(|| err("missing ':VERSION'"))?;
        if repo.is_empty() {
            return Err(err("missing the name before ':'"));
        }
        if !repo.split('/').all(segment_ok) {
            return Err(err(
                "name segments use letters, digits, '.', '_' and '-', separated by single '/'",
            ));
        }
        if !segment_ok(version) || version.len() > 128 {
            return Err(err(
                "the version uses letters, digits, '.', '_' and '-' (at most 128)",
            ));
        }
        Ok(TagName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the last ':'.
    pub fn repository(&self) -> &str {
        self.0.rsplit_once(':').map(|(r, _)| r).unwrap_or(&self.0)
    }

    /// The part after the last ':'.
    pub fn version(&self) -> &str {
        self.0.rsplit_once(':').map(|(_, v)| v).unwrap_or("")
    }
}

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TagName {
    type Err = TagNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagName::new(s)
    }
}

impl TryFrom<String> for TagName {
    type Error = TagNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TagName::new(&s)
    }
}

impl From<TagName> for String {
    fn from(t: TagName) -> String {
        t.0
    }
}

/// What a user may write where an artifact is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// A full id or a prefix of one.
    Id(HashPrefix),
    /// A tag name. `models/NAME:N` (N digits) is also a model version when
    /// NAME is a registered model (see [`crate::ledger::parse_model_ref`]).
    Tag(TagName),
    /// `models/NAME@ALIAS`: the version of a model an alias points at.
    ModelAlias {
        name: crate::ledger::ModelName,
        alias: crate::ledger::AliasName,
    },
}

/// Why a string is neither an id nor a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefParseError {
    #[error(transparent)]
    Tag(#[from] TagNameError),
    #[error("{input:?} is not a model alias: write models/NAME@ALIAS, e.g. models/iris@champion")]
    Alias { input: String },
    /// The reason is part of the message (not a `source`), so a printed
    /// error chain names it once.
    #[error("{input:?} is not an artifact id ({reason}) nor a tag (NAME:VERSION)")]
    Id {
        input: String,
        reason: HashParseError,
    },
}

impl FromStr for ArtifactRef {
    type Err = RefParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((name, crate::ledger::ModelSelector::Alias(alias))) =
            crate::ledger::parse_model_ref(s)
        {
            return Ok(ArtifactRef::ModelAlias { name, alias });
        }
        if s.contains('@') {
            return Err(RefParseError::Alias {
                input: s.chars().take(80).collect(),
            });
        }
        if s.contains(':') {
            Ok(ArtifactRef::Tag(TagName::new(s)?))
        } else {
            s.parse()
                .map(ArtifactRef::Id)
                .map_err(|reason| RefParseError::Id {
                    input: s.chars().take(80).collect(),
                    reason,
                })
        }
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactRef::Id(p) => f.write_str(p.as_str()),
            ArtifactRef::Tag(t) => f.write_str(t.as_str()),
            ArtifactRef::ModelAlias { name, alias } => write!(f, "models/{name}@{alias}"),
        }
    }
}

/// Farthest a clock reading from another node may run ahead of this node's
/// wall clock. A reading further ahead is refused, so one node's bad clock
/// (or a forged `u64::MAX`) cannot drag every clock forward.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// A clock reading from another node that is too far ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "clock reading of {wall_ms} ms is {ahead_ms} ms ahead of this node's clock (at most \
     {MAX_CLOCK_SKEW_MS} ms allowed); check the writing node's clock"
)]
pub struct ClockSkewError {
    pub wall_ms: u64,
    pub ahead_ms: u64,
}

/// A hybrid logical clock reading: wall-clock milliseconds, then a counter
/// for events within the same millisecond or behind a clock seen elsewhere.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
}

impl Hlc {
    /// The next reading after `last`, given the local wall clock `now_ms`.
    pub fn tick(last: Hlc, now_ms: u64) -> Hlc {
        if now_ms > last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                wall_ms: last.wall_ms,
                counter: last.counter.saturating_add(1),
            }
        }
    }

    /// Refuses a reading from another node more than [`MAX_CLOCK_SKEW_MS`]
    /// ahead of the local wall clock `now_ms`. Check before [`Hlc::observe`].
    pub fn check_skew(&self, now_ms: u64) -> Result<(), ClockSkewError> {
        let ahead_ms = self.wall_ms.saturating_sub(now_ms);
        if ahead_ms > MAX_CLOCK_SKEW_MS {
            return Err(ClockSkewError {
                wall_ms: self.wall_ms,
                ahead_ms,
            });
        }
        Ok(())
    }

    /// The local clock after receiving `remote`: never behind what was seen.
    pub fn observe(last: Hlc, remote: Hlc) -> Hlc {
        last.max(remote)
    }
}

/// One value of a tag: what it pointed at (nothing, once removed), when, and
/// which node wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagVersion {
    /// The artifact, or `None` for a removal.
    pub target: Option<Hash>,
    /// When the writer set it.
    pub hlc: Hlc,
    /// The writer's node id.
    pub origin: String,
}

impl TagVersion {
    /// Last-writer-wins order: the later clock wins, ties go to the greater node id.
    pub fn lww_cmp(&self, other: &TagVersion) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.origin.cmp(&other.origin))
    }
}

/// A tag change as gossiped on `weft/tags/1`: one new version of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagUpdate {
    pub name: TagName,
    pub version: TagVersion,
}

impl TagUpdate {
    pub fn encode(&self) -> Result<Vec<u8>, crate::CodecError> {
        crate::codec::encode(self, crate::codec::MAX_MESSAGE_BYTES)
    }

    /// Decodes an update from a peer, checking every field's bound.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::CodecError> {
        crate::codec::decode_peer(bytes, crate::codec::MAX_MESSAGE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for s in [
            "datasets/mnist:v1",
            "models/mnist:production",
            "a:b",
            "images/busybox:1.36.1",
            "x_y-z.w/q:latest",
        ] {
            let t = TagName::new(s).expect(s);
            assert_eq!(t.as_str(), s);
        }
        let t = TagName::new("datasets/mnist:v1").expect("valid");
        assert_eq!(t.repository(), "datasets/mnist");
        assert_eq!(t.version(), "v1");
    }

    #[test]
    fn invalid_names() {
        for s in [
            "mnist", ":v1", "mnist:", "a//b:v1", "/a:v1", "a/:v1", "../a:v1", "a/..:v1", "a b:v1",
            "a:v/1", "a:..",
        ] {
            assert!(TagName::new(s).is_err(), "{s}");
        }
        assert!(TagName::new(&format!("a:{}", "v".repeat(300))).is_err());
    }

    #[test]
    fn refs() {
        assert!(matches!(
            "datasets/mnist:v1".parse::<ArtifactRef>(),
            Ok(ArtifactRef::Tag(_))
        ));
        assert!(matches!(
            "3f9a1c".parse::<ArtifactRef>(),
            Ok(ArtifactRef::Id(_))
        ));
        let err = "mnist".parse::<ArtifactRef>().expect_err("not a ref");
        assert!(err.to_string().contains("not an artifact id"), "{err}");
    }

    #[test]
    fn hlc_orders_and_ticks() {
        let a = Hlc::tick(Hlc::default(), 100);
        assert_eq!(
            a,
            Hlc {
                wall_ms: 100,
                counter: 0
            }
        );
        let b = Hlc::tick(a, 90); // wall clock went backwards
        assert!(b > a);
        let seen = Hlc::observe(
            b,
            Hlc {
                wall_ms: 500,
                counter: 3,
            },
        );
        assert!(Hlc::tick(seen, 120) > seen);
    }

    #[test]
    fn clock_skew_is_bounded() {
        let now = 1_000_000;
        let at = |wall_ms| Hlc {
            wall_ms,
            counter: 0,
        };
        assert!(at(now).check_skew(now).is_ok());
        assert!(at(0).check_skew(now).is_ok());
        assert!(at(now + MAX_CLOCK_SKEW_MS).check_skew(now).is_ok());
        let err = at(now + MAX_CLOCK_SKEW_MS + 1)
            .check_skew(now)
            .expect_err("ahead");
        assert_eq!(err.ahead_ms, MAX_CLOCK_SKEW_MS + 1);
        assert!(err.to_string().contains("ahead"), "{err}");
        assert!(at(u64::MAX).check_skew(now).is_err());
        assert!(at(u64::MAX).check_skew(u64::MAX).is_ok());
    }

    #[test]
    fn golden_tag_update() {
        let u = TagUpdate {
            name: TagName::new("m/x:v1").expect("tag"),
            version: TagVersion {
                target: None,
                hlc: Hlc {
                    wall_ms: 1,
                    counter: 2,
                },
                origin: "n".into(),
            },
        };
        let bytes = u.encode().expect("encode");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "a2",
                "646e616d65",
                "666d2f783a7631", // "name": "m/x:v1"
                "6776657273696f6e",
                "a3", // "version": {
                "66746172676574",
                "f6", //   "target": null
                "63686c63",
                "a2",
                "6777616c6c5f6d73",
                "01",
                "67636f756e746572",
                "02",
                "666f726967696e",
                "616e" //   "origin": "n" }
            )
        );
        assert_eq!(TagUpdate::decode(&bytes).expect("decode"), u);
    }

    #[test]
    fn lww_ties_go_to_node_id() {
        let hlc = Hlc {
            wall_ms: 1,
            counter: 0,
        };
        let a = TagVersion {
            target: None,
            hlc,
            origin: "a".into(),
        };
        let b = TagVersion {
            target: None,
            hlc,
            origin: "b".into(),
        };
        assert_eq!(a.lww_cmp(&b), Ordering::Less);
    }
}
