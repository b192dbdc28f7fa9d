//! weft's shared vocabulary: content ids, directory manifests, tag names,
//! job specs, node adverts and every message that crosses a wire or lands on
//! disk, with the codecs and size limits that guard them.
//!
//! This crate does no I/O: no files, no sockets, no runtime. Everything here
//! is a pure function of its input, so every format can be pinned by golden
//! bytes in its tests.

pub mod advert;
pub mod auth;
pub mod bounds;
pub mod codec;
pub mod hash;
pub mod job;
pub mod ledger;
pub mod pipeline;
pub mod rpc;
pub mod sched;
pub mod service;
pub mod tag;
pub mod transfer;
pub mod tree;

pub use advert::{Executors, GpuInfo, NodeAdvert};
pub use bounds::{Bounded, BoundsError};
pub use codec::{CodecError, decode, decode_peer, encode};
pub use hash::{Hash, HashParseError, HashPrefix};
pub use job::{JobSpec, JobSpecError};
pub use ledger::{Entry, EntryBody};
pub use rpc::{ErrorCode, HaveBlob, Request, Response, Topic};
pub use tag::{ArtifactRef, Hlc, TagName, TagUpdate, TagVersion};
pub use tree::{EntryKind, Tree, TreeEntry, TreeError};

/// weft's version, carried in adverts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// BLAKE3 chunk groups used for verified streaming: 2^4 chunks of 1 KiB = 16 KiB.
pub const CHUNK_GROUP_LOG: u8 = 4;

/// Bytes in one chunk group.
pub const CHUNK_GROUP_BYTES: u64 = 1024 << CHUNK_GROUP_LOG;
