//! The content-addressed artifact store.
//!
//! Blob bytes live in files under `blobs/`, each beside a pre-order BLAKE3
//! outboard with 16 KiB chunk groups (`<id>.obao`, absent for blobs of one
//! group or less), so any range of a blob can be served and checked against
//! its id. Metadata lives in sled: one versioned record per blob, pin and tag.
//!
//! Writes go temp file, fsync, rename, fsync directory, then index, so a
//! process killed at any point leaves either no index entry or one for a
//! whole, valid blob. Leftover temp files are removed on open; blob files
//! without an index entry are removed by GC. Blobs being fetched live apart,
//! in `partial/`, with their own records (see `partial`).
//!
//! The store is a cheap `Clone` handle over shared state; sled is safe to use
//! from many threads. Its methods block, so async callers run them on the
//! blocking pool.

pub(crate) mod beneath;
mod export;
mod import;
pub mod ledger;
mod maintenance;
mod partial;
pub mod records;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::{BaoTree, BlockSize};
use serde::{Deserialize, Serialize};
use weft_protocol::ledger::{ModelSelector, parse_model_ref};
use weft_protocol::{ArtifactRef, Hash, Hlc, TagName, TagUpdate, TagVersion, Tree, TreeError};

pub use export::ExportOptions;
pub use import::{AddOptions, AddOutcome, Keep, Progress};
pub use maintenance::{GcReport, VerifyProblem};
pub use partial::{FetchClaim, PARTIAL_TTL, PartialBlob};
use records::{
    BlobKind, BlobRecord, PinRecord, Record, RecordError, TagRecord, hash_key, key_hash,
};

/// Chunk-group size of every outboard: 16 KiB.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(weft_protocol::CHUNK_GROUP_LOG);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no space left on the device; free some space and retry (nothing was stored)")]
    NoSpace { path: PathBuf },
    #[error(
        "{path}: is a symbolic link; weft stores no links (pass --follow-symlinks to store what it points to)"
    )]
    Symlink { path: PathBuf },
    #[error("{path}: is a {kind}; only regular files and directories can be stored")]
    Special { path: PathBuf, kind: &'static str },
    #[error("{path}: the name is not valid UTF-8; rename it to store it")]
    NonUtf8 { path: PathBuf },
    #[error("{path}: {source}")]
    BadName { path: PathBuf, source: TreeError },
    #[error("{path}: changed while it was being stored; retry once nothing is writing it")]
    Changed { path: PathBuf },
    #[error("{path}: leads out of the folder being stored")]
    Escapes { path: PathBuf },
    #[error("{path}: symbolic links form a loop")]
    LinkLoop { path: PathBuf },
    /// Nothing is known by that name; the text says what was looked for.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    BadRef(#[from] weft_protocol::tag::RefParseError),
    #[error("id prefix {prefix} matches {} artifacts ({}); give more digits", .candidates.len(), .candidates.iter().map(|h| h.short(12)).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<Hash>,
    },
    #[error("no tag named {0}")]
    NoTag(String),
    #[error("{0} is not in the local store")]
    Missing(Hash),
    #[error("{0} is a tree (a directory); export it with `weft get {0} -o DIR`")]
    IsTree(Hash),
    #[error("{path}: already exists; choose another path or remove it first")]
    Exists { path: PathBuf },
    #[error(
        "the store at {path} is in use by another weft process (a running daemon?); stop it or go through its API"
    )]
    Locked { path: PathBuf },
    #[error("blob {hash} is corrupt: {why}; run `weft store verify`")]
    Corrupt { hash: Hash, why: String },
    #[error("metadata database: {0}")]
    Db(#[from] sled::Error),
    #[error("stored record for {key}: {source}")]
    Record { key: String, source: RecordError },
    #[error("tree {hash}: {source}")]
    Tree { hash: Hash, source: TreeError },
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| {
            if source.kind() == io::ErrorKind::StorageFull {
                StoreError::NoSpace {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A tag name with the versions it has had.
pub type TagHistory = (TagName, Vec<TagVersion>);

/// The store: a clonable handle.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    blobs: sled::Tree,
    pins: sled::Tree,
    tags: sled::Tree,
    /// Blobs being fetched (see `partial`).
    partials: sled::Tree,
    /// Blobs a fetch is working on now; GC leaves their partials alone.
    fetching: Mutex<HashSet<Hash>>,
    /// Imports hold it shared, from their first blob to their pin or tag;
    /// GC holds it exclusively, so a sweep never sees the children of a
    /// tree whose manifest is not written yet, nor an import not pinned yet.
    gc_lock: RwLock<()>,
    /// Blobs created by imports still running (see `import`).
    fresh: Mutex<HashMap<Hash, import::Fresh>>,
    /// Called inside imports, by tests only.
    #[cfg(test)]
    hook: Mutex<Option<TestHook>>,
    /// Called before a blob's files are unlinked, by tests only.
    #[cfg(test)]
    unlink_check: Mutex<Option<UnlinkCheck>>,
    /// Writer id stamped on tag versions.
    origin: String,
    hlc: Mutex<Hlc>,
    /// Tag versions written by this node, for replication to the mesh.
    local_tags: tokio::sync::broadcast::Sender<TagUpdate>,
    /// Every tag version stored here (written here or merged from a peer).
    stored_tags: tokio::sync::broadcast::Sender<TagUpdate>,
    /// The ledger's entries (see `ledger`).
    ledger: sled::Tree,
    /// Ledger entries written by this node, for gossip.
    ledger_local: tokio::sync::broadcast::Sender<weft_protocol::ledger::Entry>,
    /// Every ledger entry stored here, for those that act on them.
    ledger_stored: tokio::sync::broadcast::Sender<weft_protocol::ledger::Entry>,
}

#[cfg(test)]
type TestHook = Arc<dyn Fn(import::Hook<'_>) + Send + Sync>;
#[cfg(test)]
type UnlinkCheck = Box<dyn Fn(&Hash) + Send + Sync>;

/// One artifact as listed by `weft ls`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactInfo {
    #[schema(value_type = String)]
    pub id: Hash,
    /// "file" or "tree".
    pub kind: String,
    /// A file's bytes, or for a tree the sum of its files.
    pub size: u64,
    pub complete: bool,
    pub pinned: bool,
    pub tags: Vec<String>,
    pub created_ms: u64,
}

/// One live tag.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TagInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub id: Hash,
    pub set_ms: u64,
    pub origin: String,
}

/// One pin.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PinInfo {
    #[schema(value_type = String)]
    pub id: Hash,
    pub replicas: u32,
    pub created_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`; `origin` is this node's
    /// id, written into the tag versions it makes.
    pub fn open(dir: &Path, origin: &str) -> Result<Store> {
        for sub in ["blobs", "tmp", "partial"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(StoreError::io(&p))?;
        }
        let meta = dir.join("meta");
        let db = sled::Config::new()
            .path(&meta)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == io::ErrorKind::WouldBlock => {
                    StoreError::Locked { path: meta.clone() }
                }
                sled::Error::Io(ref io)
                    if io.raw_os_error() == Some(libc::EAGAIN)
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked { path: meta.clone() }
                }
                e => StoreError::Db(e),
            })?;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                blobs: db.open_tree("blobs")?,
                pins: db.open_tree("pins")?,
                tags: db.open_tree("tags")?,
                partials: db.open_tree("partials")?,
                ledger: db.open_tree("ledger")?,
                ledger_local: tokio::sync::broadcast::channel(4096).0,
                ledger_stored: tokio::sync::broadcast::channel(4096).0,
                fetching: Mutex::new(HashSet::new()),
                db,
                gc_lock: RwLock::new(()),
                fresh: Mutex::new(HashMap::new()),
                #[cfg(test)]
                hook: Mutex::new(None),
                #[cfg(test)]
                unlink_check: Mutex::new(None),
                origin: origin.to_string(),
                hlc: Mutex::new(Hlc::default()),
                local_tags: tokio::sync::broadcast::channel(1024).0,
                stored_tags: tokio::sync::broadcast::channel(1024).0,
            }),
        };
        store.clean_tmp()?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(StoreError::io(&tmp))? {
            let entry = entry.map_err(StoreError::io(&tmp))?;
            let p = entry.path();
            let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = r {
                tracing::warn!(path = %p.display(), error = %e, "could not remove leftover temp file");
            }
        }
        Ok(())
    }

    /// Where a blob's bytes live.
    pub fn blob_path(&self, h: &Hash) -> PathBuf {
        let hex = h.to_hex();
        self.inner.dir.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Where a blob's outboard lives.
    pub fn outboard_path(&self, h: &Hash) -> PathBuf {
        let mut p = self.blob_path(h);
        p.set_extension("obao");
        p
    }

    /// A sled tree of this store's database, for another subsystem's records.
    pub(crate) fn db_tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    // ---- blob records -------------------------------------------------------

    pub(crate) fn blob_record(&self, h: &Hash) -> Result<Option<BlobRecord>> {
        match self.inner.blobs.get(hash_key(h))? {
            Some(bytes) => {
                BlobRecord::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Record {
                        key: h.to_string(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    pub(crate) fn put_blob_record(&self, h: &Hash, r: &BlobRecord) -> Result<()> {
        let bytes = r.to_bytes().map_err(|source| StoreError::Record {
            key: h.to_string(),
            source,
        })?;
        self.inner.blobs.insert(hash_key(h), bytes)?;
        Ok(())
    }

    /// Whether the whole blob is here.
    pub fn has(&self, h: &Hash) -> Result<bool> {
        Ok(self.blob_record(h)?.is_some_and(|r| r.complete))
    }

    /// Size of a complete local blob.
    pub fn blob_size(&self, h: &Hash) -> Result<u64> {
        match self.blob_record(h)? {
            Some(r) if r.complete => Ok(r.size),
            _ => Err(StoreError::Missing(*h)),
        }
    }

    /// Whether a local blob is a tree manifest.
    pub fn is_tree(&self, h: &Hash) -> Result<bool> {
        Ok(self
            .blob_record(h)?
            .is_some_and(|r| r.kind == BlobKind::Tree))
    }

    /// Reads and decodes a tree manifest held locally.
    pub fn read_tree(&self, h: &Hash) -> Result<Tree> {
        let size = self.blob_size(h)?;
        let path = self.blob_path(h);
        if size > weft_protocol::codec::MAX_TREE_BYTES as u64 {
            return Err(StoreError::Corrupt {
                hash: *h,
                why: "tree manifest larger than the limit".into(),
            });
        }
        let bytes = fs::read(&path).map_err(StoreError::io(&path))?;
        Tree::decode(&bytes).map_err(|source| StoreError::Tree { hash: *h, source })
    }

    /// Opens a complete local blob for reading.
    pub fn open_blob(&self, h: &Hash) -> Result<File> {
        self.blob_size(h)?;
        let path = self.blob_path(h);
        File::open(&path).map_err(StoreError::io(&path))
    }

    /// The outboard of a complete local blob, for serving verified ranges.
    pub fn outboard(&self, h: &Hash) -> Result<PreOrderOutboard<Vec<u8>>> {
        let size = self.blob_size(h)?;
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let data = if tree.outboard_size() == 0 {
            Vec::new()
        } else {
            let p = self.outboard_path(h);
            fs::read(&p).map_err(StoreError::io(&p))?
        };
        Ok(PreOrderOutboard {
            root: (*h).into(),
            tree,
            data,
        })
    }

    /// Every blob record, in id order.
    pub(crate) fn blob_records(&self) -> impl Iterator<Item = Result<(Hash, BlobRecord)>> + '_ {
        self.inner.blobs.iter().filter_map(|kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let h = key_hash(&k)?;
            Some(
                BlobRecord::from_bytes(&v)
                    .map(|r| (h, r))
                    .map_err(|source| StoreError::Record {
                        key: h.to_string(),
                        source,
                    }),
            )
        })
    }

    // ---- references ----------------------------------------------------------

    /// Resolves an id, unique id prefix or tag to an id. A full id resolves
    /// even when the blob is not here (it may be fetched).
    pub fn resolve(&self, r: &ArtifactRef) -> Result<Hash> {
        match r {
            ArtifactRef::ModelAlias { name, alias } => {
                self.resolve_model(name, &ModelSelector::Alias(alias.clone()))
            }
            ArtifactRef::Tag(name) => {
                // `models/NAME:N` is a model version once NAME is registered
                if let Some((model, selector)) = parse_model_ref(name.as_str())
                    && !self.model_versions(&model)?.is_empty()
                {
                    return self.resolve_model(&model, &selector);
                }
                self.tag(name)?
                    .ok_or_else(|| StoreError::NoTag(name.to_string()))
            }
            ArtifactRef::Id(prefix) => {
                if let Some(h) = prefix.as_full() {
                    return Ok(h);
                }
                let mut found = Vec::new();
                for kv in self.inner.blobs.scan_prefix(prefix.byte_prefix()) {
                    let (k, _) = kv?;
                    if let Some(h) = key_hash(&k).filter(|h| prefix.matches(h)) {
                        found.push(h);
                        if found.len() > 8 {
                            break;
                        }
                    }
                }
                match found.len() {
                    0 => Err(StoreError::NotFound(format!(
                        "no artifact id starts with {}",
                        prefix.as_str()
                    ))),
                    1 => Ok(found[0]),
                    _ => Err(StoreError::Ambiguous {
                        prefix: prefix.as_str().to_string(),
                        candidates: found,
                    }),
                }
            }
        }
    }

    /// Parses and resolves a reference as a user typed it.
    pub fn resolve_str(&self, s: &str) -> Result<Hash> {
        let r: ArtifactRef = s.parse()?;
        self.resolve(&r)
    }

    // ---- tags ------------------------------------------------------------------

    fn tag_record(&self, name: &str) -> Result<Option<TagRecord>> {
        match self.inner.tags.get(name.as_bytes())? {
            Some(bytes) => {
                TagRecord::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Record {
                        key: name.to_string(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    fn next_hlc(&self) -> Hlc {
        let mut last = self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner());
        *last = Hlc::tick(*last, now_ms());
        *last
    }

    /// What a tag currently points at.
    pub fn tag(&self, name: &TagName) -> Result<Option<Hash>> {
        Ok(self
            .tag_record(name.as_str())?
            .and_then(|r| r.current().and_then(|v| v.target)))
    }

    /// Points `name` at `target` (or removes it, with `None`) as a new
    /// version written by this node; returns the version.
    pub fn set_tag(&self, name: &TagName, target: Option<Hash>) -> Result<TagVersion> {
        // a new local write must win over everything this node has seen
        if let Some(current) = self
            .tag_record(name.as_str())?
            .as_ref()
            .and_then(|r| r.current().cloned())
        {
            let mut last = self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner());
            *last = Hlc::observe(*last, current.hlc);
        }
        let version = TagVersion {
            target,
            hlc: self.next_hlc(),
            origin: self.inner.origin.clone(),
        };
        self.merge_tag(name, version.clone())?;
        // nobody listening (no daemon) is fine: peers catch up on sync
        let _ = self.inner.local_tags.send(TagUpdate {
            name: name.clone(),
            version: version.clone(),
        });
        Ok(version)
    }

    /// Tag versions this node writes from now on.
    pub fn subscribe_tags(&self) -> tokio::sync::broadcast::Receiver<TagUpdate> {
        self.inner.local_tags.subscribe()
    }

    /// Every tag version stored here from now on, written here or merged
    /// from a peer (for those that act on tag changes).
    pub fn subscribe_tag_changes(&self) -> tokio::sync::broadcast::Receiver<TagUpdate> {
        self.inner.stored_tags.subscribe()
    }

    /// Tags named after `after` (in name order), at most `limit` of them,
    /// each with its newest versions; and whether more follow.
    pub fn tag_page(
        &self,
        after: Option<&TagName>,
        limit: usize,
        max_versions: usize,
    ) -> Result<(Vec<TagHistory>, bool)> {
        let start = match after {
            // the first key strictly after `after`
            Some(a) => {
                let mut k = a.as_str().as_bytes().to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for kv in self.inner.tags.range(start..) {
            let (k, v) = kv?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(name) = TagName::new(&key) else {
                continue;
            };
            let Some(mut rec) = records::readable::<TagRecord>(&key, &v) else {
                continue;
            };
            let extra = rec.history.len().saturating_sub(max_versions);
            rec.history.drain(..extra);
            out.push((name, rec.history));
        }
        Ok((out, false))
    }

    /// The live tags whose names start with `prefix`, in name order, each
    /// with its current version.
    pub fn live_tags_with_prefix(&self, prefix: &str) -> Result<Vec<(TagName, TagVersion)>> {
        let mut out = Vec::new();
        for kv in self.inner.tags.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(name) = TagName::new(&key) else {
                continue;
            };
            let Some(rec) = records::readable::<TagRecord>(&key, &v) else {
                continue;
            };
            if let Some(cur) = rec.current()
                && cur.target.is_some()
            {
                out.push((name, cur.clone()));
            }
        }
        Ok(out)
    }

    /// A tag's current version when it is live.
    pub fn live_tag(&self, name: &TagName) -> Result<Option<TagVersion>> {
        Ok(self
            .tag_record(name.as_str())?
            .and_then(|r| r.current().cloned())
            .filter(|v| v.target.is_some()))
    }

    /// Removes a tag (a tombstone version, so the removal replicates).
    pub fn remove_tag(&self, name: &TagName) -> Result<TagVersion> {
        if self.tag(name)?.is_none() {
            return Err(StoreError::NoTag(name.to_string()));
        }
        self.set_tag(name, None)
    }

    /// Adds a version of a tag, from this node or another; returns whether it
    /// was new. The winner is the last writer by hybrid clock, then node id.
    pub fn merge_tag(&self, name: &TagName, version: TagVersion) -> Result<bool> {
        {
            let mut last = self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner());
            *last = Hlc::observe(*last, version.hlc);
        }
        let changed = self
            .inner
            .tags
            .transaction(|tx| {
                let mut rec = match tx.get(name.as_str().as_bytes())? {
                    Some(bytes) => TagRecord::from_bytes(&bytes).map_err(|source| {
                        sled::transaction::ConflictableTransactionError::Abort(StoreError::Record {
                            key: name.to_string(),
                            source,
                        })
                    })?,
                    None => TagRecord {
                        v: records::TAG_V,
                        history: Vec::new(),
                    },
                };
                let changed = rec.merge(version.clone());
                if changed {
                    let bytes = rec.to_bytes().map_err(|source| {
                        sled::transaction::ConflictableTransactionError::Abort(StoreError::Record {
                            key: name.to_string(),
                            source,
                        })
                    })?;
                    tx.insert(name.as_str().as_bytes(), bytes)?;
                }
                Ok(changed)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
            })?;
        if changed {
            let _ = self.inner.stored_tags.send(TagUpdate {
                name: name.clone(),
                version,
            });
        }
        Ok(changed)
    }

    /// Every version of a tag this node has seen, oldest first.
    pub fn tag_history(&self, name: &TagName) -> Result<Vec<TagVersion>> {
        self.tag_record(name.as_str())?
            .map(|r| r.history)
            .ok_or_else(|| StoreError::NoTag(name.to_string()))
    }

    /// Every tag name with its full history (for replication).
    pub fn tag_records(&self) -> Result<Vec<TagHistory>> {
        let mut out = Vec::new();
        for kv in self.inner.tags.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(name) = TagName::new(&key) else {
                continue;
            };
            let Some(rec) = records::readable::<TagRecord>(&key, &v) else {
                continue;
            };
            out.push((name, rec.history));
        }
        Ok(out)
    }

    /// Live tags (not removed), by name.
    pub fn list_tags(&self) -> Result<Vec<TagInfo>> {
        let mut out = Vec::new();
        for (name, history) in self.tag_records()? {
            let rec = TagRecord {
                v: records::TAG_V,
                history,
            };
            if let Some(v) = rec.current()
                && let Some(id) = v.target
            {
                out.push(TagInfo {
                    name: name.to_string(),
                    id,
                    set_ms: v.hlc.wall_ms,
                    origin: v.origin.clone(),
                });
            }
        }
        Ok(out)
    }

    // ---- pins --------------------------------------------------------------------

    /// Pins an artifact so GC keeps it and, with `replicas > 1`, the mesh keeps copies.
    pub fn pin(&self, h: &Hash, replicas: u32) -> Result<()> {
        self.keep_fresh(h);
        let rec = PinRecord {
            v: records::PIN_V,
            created_ms: now_ms(),
            replicas: replicas.max(1),
        };
        let bytes = rec.to_bytes().map_err(|source| StoreError::Record {
            key: h.to_string(),
            source,
        })?;
        self.inner.pins.insert(hash_key(h), bytes)?;
        self.flush()
    }

    /// Removes a pin; returns whether there was one.
    pub fn unpin(&self, h: &Hash) -> Result<bool> {
        let had = self.inner.pins.remove(hash_key(h))?.is_some();
        self.flush()?;
        Ok(had)
    }

    /// Every pin.
    pub fn list_pins(&self) -> Result<Vec<PinInfo>> {
        let mut out = Vec::new();
        for kv in self.inner.pins.iter() {
            let (k, v) = kv?;
            let Some(id) = key_hash(&k) else { continue };
            let rec = PinRecord::from_bytes(&v).map_err(|source| StoreError::Record {
                key: id.to_string(),
                source,
            })?;
            out.push(PinInfo {
                id,
                replicas: rec.replicas,
                created_ms: rec.created_ms,
            });
        }
        Ok(out)
    }

    // ---- listing -------------------------------------------------------------------

    /// Artifacts added by name (or every blob, with `all`), with their tags.
    pub fn list(&self, all: bool) -> Result<Vec<ArtifactInfo>> {
        let mut tags_by_id: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
        for t in self.list_tags()? {
            tags_by_id.entry(t.id).or_default().push(t.name);
        }
        let pins: std::collections::HashSet<Hash> =
            self.list_pins()?.into_iter().map(|p| p.id).collect();
        let mut out = Vec::new();
        for item in self.blob_records() {
            let (id, rec) = item?;
            let tags = tags_by_id.remove(&id).unwrap_or_default();
            let pinned = pins.contains(&id);
            if !(all || rec.root || !tags.is_empty() || pinned) {
                continue;
            }
            let size = match rec.kind {
                BlobKind::Tree if rec.complete => self
                    .read_tree(&id)
                    .map(|t| t.total_size())
                    .unwrap_or(rec.size),
                _ => rec.size,
            };
            out.push(ArtifactInfo {
                id,
                kind: match rec.kind {
                    BlobKind::Raw => "file",
                    BlobKind::Tree => "tree",
                }
                .to_string(),
                size,
                complete: rec.complete,
                pinned,
                tags,
                created_ms: rec.created_ms,
            });
        }
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Bytes and count of complete blobs (for metrics).
    pub fn stats(&self) -> Result<(u64, u64)> {
        let (mut bytes, mut blobs) = (0, 0);
        for item in self.blob_records() {
            let (_, rec) = item?;
            if rec.complete {
                bytes += rec.size;
                blobs += 1;
            }
        }
        Ok((bytes, blobs))
    }
}

#[cfg(test)]
mod tests;
