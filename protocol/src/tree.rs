//! Directory manifests.
//!
//! Goals: a directory becomes a [`Tree`], a blob whose bytes are a canonical
//! CBOR list of its entries, so equal directories always get equal ids. Names
//! are single path components, checked when a tree is built and again when
//! one is decoded, so no manifest can point outside the directory it
//! describes.
//!
//! Wire form (version 1), a CBOR array:
//! `[1, [[name: text, kind: 0 file | 1 tree, id: bytes(32), size: uint, executable: bool], ...]]`
//! with entries sorted by the bytes of their names and no duplicates. `size`
//! is a file's length, or for a subtree the sum of the sizes of its entries.
//! Decoding re-encodes and compares, so only the canonical bytes are accepted.
//!
//! Non-goals: file modes beyond the executable bit, owners, times, symlinks.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, MAX_TREE_BYTES};
use crate::hash::Hash;

/// The manifest format version written by this code.
pub const TREE_VERSION: u8 = 1;

/// Longest entry name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// What an entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A blob holding a file's bytes.
    File,
    /// A blob holding another encoded [`Tree`].
    Tree,
}

/// One named entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub name: String,
    pub kind: EntryKind,
    pub hash: Hash,
    pub size: u64,
    pub executable: bool,
}

/// A directory manifest: entries sorted by name, each name a valid component.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    entries: Vec<TreeEntry>,
}

/// Why a name or a manifest is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("invalid entry name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("duplicate entry name {0:?}")]
    Duplicate(String),
    #[error("entries are not sorted by name at {0:?}")]
    Unsorted(String),
    #[error("unsupported tree manifest version {0}; this weft reads version {TREE_VERSION}")]
    Version(u8),
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("tree manifest is not in canonical form")]
    NotCanonical,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Checks that `name` is one path component weft may create.
pub fn validate_name(name: &str) -> Result<(), TreeError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not allowed")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.len() > MAX_NAME_BYTES {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => Err(TreeError::BadName {
            name: name.chars().take(64).collect(),
            why,
        }),
        None => Ok(()),
    }
}

#[derive(Serialize, Deserialize)]
struct WireEntry(String, u8, Hash, u64, bool);

#[derive(Serialize, Deserialize)]
struct WireTree(u8, Vec<WireEntry>);

impl Tree {
    /// Builds a tree from entries in any order; names are validated and must be unique.
    pub fn new(mut entries: Vec<TreeEntry>) -> Result<Self, TreeError> {
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Self::check(&entries)?;
        Ok(Tree { entries })
    }

    fn check(entries: &[TreeEntry]) -> Result<(), TreeError> {
        for (i, e) in entries.iter().enumerate() {
            validate_name(&e.name)?;
            if i > 0 {
                let prev = &entries[i - 1].name;
                match prev.as_bytes().cmp(e.name.as_bytes()) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Err(TreeError::Duplicate(e.name.clone())),
                    std::cmp::Ordering::Greater => return Err(TreeError::Unsorted(e.name.clone())),
                }
            }
        }
        Ok(())
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Sum of the entries' sizes.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The canonical bytes of this manifest.
    pub fn encode(&self) -> Result<Vec<u8>, TreeError> {
        let wire = WireTree(
            TREE_VERSION,
            self.entries
                .iter()
                .map(|e| {
                    WireEntry(
                        e.name.clone(),
                        match e.kind {
                            EntryKind::File => 0,
                            EntryKind::Tree => 1,
                        },
                        e.hash,
                        e.size,
                        e.executable,
                    )
                })
                .collect(),
        );
        Ok(codec::encode(&wire, MAX_TREE_BYTES)?)
    }

    /// The id of this manifest (the hash of its canonical bytes).
    pub fn hash(&self) -> Result<Hash, TreeError> {
        Ok(Hash::of(&self.encode()?))
    }

    /// Decodes and validates a manifest from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, TreeError> {
        let WireTree(version, wire) = codec::decode(bytes, MAX_TREE_BYTES)?;
        if version != TREE_VERSION {
            return Err(TreeError::Version(version));
        }
        let mut entries = Vec::with_capacity(wire.len());
        for WireEntry(name, kind, hash, size, executable) in wire {
            let kind = match kind {
                0 => EntryKind::File,
                1 => EntryKind::Tree,
                k => return Err(TreeError::Kind(k)),
            };
            entries.push(TreeEntry {
                name,
                kind,
                hash,
                size,
                executable,
            });
        }
        Self::check(&entries)?;
        let tree = Tree { entries };
        if tree.encode()? != bytes {
            return Err(TreeError::NotCanonical);
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: &str, kind: EntryKind, content: &[u8], exec: bool) -> TreeEntry {
        TreeEntry {
            name: name.to_string(),
            kind,
            hash: Hash::of(content),
            size: content.len() as u64,
            executable: exec,
        }
    }

    fn sample() -> Tree {
        Tree::new(vec![
            entry("run.sh", EntryKind::File, b"#!/bin/sh\n", true),
            entry("a.txt", EntryKind::File, b"hello", false),
            entry("sub", EntryKind::Tree, b"", false),
        ])
        .expect("valid tree")
    }

    /// The version 1 manifest format. A change to these bytes changes every
    /// tree id: make it a new version instead.
    #[test]
    fn golden_bytes() {
        let bytes = sample().encode().expect("encode");
        let golden = concat!(
            "8201", // array(2), version 1
            "83",   // array(3) of entries
            // ["a.txt", 0, blake3("hello"), 5, false]
            "85",
            "65612e747874",
            "00",
            "5820ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
            "05",
            "f4",
            // ["run.sh", 0, blake3("#!/bin/sh\n"), 10, true]
            "85",
            "6672756e2e7368",
            "00",
            "5820bc1f407a11c9377c8b9b13f956b279c8462775105eb958fc9ae3c40de87cc96e",
            "0a",
            "f5",
            // ["sub", 1, blake3(""), 0, false]
            "85",
            "63737562",
            "01",
            "5820af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "00",
            "f4",
        );
        assert_eq!(hex::encode(&bytes), golden);
        assert_eq!(Tree::decode(&bytes).expect("decode"), sample());
        assert_eq!(
            sample().hash().expect("hash").to_hex(),
            "1c6edf8d066a7c79288ecbdae8e57c19c748729fc1d0c226bf0a696b07834ff1",
            "tree id changed"
        );
    }

    #[test]
    fn order_of_construction_does_not_matter() {
        let mut e = sample().entries().to_vec();
        e.reverse();
        assert_eq!(
            Tree::new(e).expect("valid").hash().ok(),
            sample().hash().ok()
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            let err = Tree::new(vec![entry(name, EntryKind::File, b"", false)]);
            assert!(matches!(err, Err(TreeError::BadName { .. })), "{name:?}");
        }
        assert!(Tree::new(vec![entry("..a", EntryKind::File, b"", false)]).is_ok());
        assert!(Tree::new(vec![entry(&"x".repeat(255), EntryKind::File, b"", false)]).is_ok());
    }

    #[test]
    fn duplicates_are_refused() {
        let e = entry("a", EntryKind::File, b"", false);
        assert!(matches!(
            Tree::new(vec![e.clone(), e]),
            Err(TreeError::Duplicate(_))
        ));
    }

    #[test]
    fn decode_checks_names_order_and_canonical_form() {
        let bad = |wire: WireTree| codec::encode(&wire, 1 << 20).expect("encode");
        let h = Hash::EMPTY;
        assert!(matches!(
            Tree::decode(&bad(WireTree(
                1,
                vec![WireEntry("../x".into(), 0, h, 0, false)]
            ))),
            Err(TreeError::BadName { .. })
        ));
        assert!(matches!(
            Tree::decode(&bad(WireTree(
                1,
                vec![
                    WireEntry("b".into(), 0, h, 0, false),
                    WireEntry("a".into(), 0, h, 0, false)
                ]
            ))),
            Err(TreeError::Unsorted(_))
        ));
        assert!(matches!(
            Tree::decode(&bad(WireTree(2, vec![]))),
            Err(TreeError::Version(2))
        ));
        assert!(matches!(
            Tree::decode(&bad(WireTree(
                1,
                vec![WireEntry("a".into(), 7, h, 0, false)]
            ))),
            Err(TreeError::Kind(7))
        ));
        // size 5 written with a two-byte integer instead of one
        let mut bytes = sample().encode().expect("encode");
        let pos = bytes
            .windows(2)
            .position(|w| w == [0x05, 0xf4])
            .expect("size field");
        bytes.splice(pos..pos + 1, [0x18, 0x05]);
        assert!(matches!(Tree::decode(&bytes), Err(TreeError::NotCanonical)));
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ._\u{e9}\u{4e2d}-]{1,40}".prop_filter("component", |s| s != "." && s != "..")
    }

    fn arb_entry() -> impl Strategy<Value = TreeEntry> {
        (
            arb_name(),
            any::<bool>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(name, t, h, size, executable)| TreeEntry {
                name,
                kind: if t { EntryKind::Tree } else { EntryKind::File },
                hash: Hash::from_bytes(h),
                size,
                executable,
            })
    }

    proptest! {
        #[test]
        fn round_trips(entries in proptest::collection::vec(arb_entry(), 0..40)) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<_> = entries.into_iter().filter(|e| seen.insert(e.name.clone())).collect();
            let tree = Tree::new(entries).expect("valid");
            let bytes = tree.encode().expect("encode");
            prop_assert_eq!(Tree::decode(&bytes).expect("decode"), tree);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Tree::decode(&bytes);
        }

        #[test]
        fn mutated_manifests_never_panic(idx in any::<usize>(), val in any::<u8>()) {
            let mut bytes = sample().encode().expect("encode");
            let i = idx % bytes.len();
            bytes[i] = val;
            if let Ok(tree) = Tree::decode(&bytes) {
                // a mutation that still decodes must still be canonical
                prop_assert_eq!(tree.encode().expect("encode"), bytes);
            }
        }
    }
}
