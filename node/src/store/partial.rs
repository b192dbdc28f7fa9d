//! Partial blobs: blobs being fetched, kept so that a fetch stopped by a
//! crash or a restart resumes with only the chunk groups it lacks.
//!
//! A partial lives in `partial/<id>.data` (pre-sized, sparse) and
//! `partial/<id>.obao` (the pre-order outboard, pre-sized; absent for a blob
//! of one group), described by a versioned [`PartialRecord`] in the sled
//! tree `partials`. It never has a blob record, so nothing reads it as
//! complete, and `weft store verify` does not look at it.
//!
//! Rules that keep a crash harmless:
//! - the record is written before the files are created and removed after
//!   they are gone, so a file without a record is debris that GC removes;
//! - a group enters the record's `verified` set only after its bytes and the
//!   parent hashes above it were verified, written and synced;
//! - completion syncs, renames both files into `blobs/`, syncs the
//!   directories, writes the complete blob record and only then removes the
//!   partial record, all under the import side of the GC lock.
//!
//! One fetch at a time works on a given blob: a [`FetchClaim`] marks it; GC
//! leaves claimed partials alone and removes unclaimed ones not updated for
//! [`PARTIAL_TTL`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use bao_tree::{BaoTree, TreeNode};
use weft_protocol::Hash;
use weft_protocol::codec::MAX_RECORD_BYTES;
use weft_protocol::transfer::GroupRanges;

use super::records::{
    BLOB_V, BlobKind, BlobRecord, PARTIAL_V, PartialRecord, Record, hash_key, key_hash,
};
use super::{BLOCK_SIZE, Result, Store, StoreError, now_ms};
use crate::home::sync_dir;

/// How long an unclaimed partial may sit without progress before GC removes
/// it.
pub const PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most ranges a partial record keeps; a more fragmented verified set is
/// saved coarsened (losing only some progress).
const MAX_SAVED_RANGES: usize = (MAX_RECORD_BYTES - 1024) / 24;

/// The files of a blob being fetched. Writes are positioned, so several
/// threads may write different groups at once.
#[derive(Debug)]
pub struct PartialBlob {
    hash: Hash,
    size: u64,
    kind: BlobKind,
    tree: BaoTree,
    data: File,
    data_path: PathBuf,
    /// `None` when the blob is one group or less (no outboard).
    outboard: Option<(File, PathBuf)>,
}

impl PartialBlob {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    /// The blob's hash tree.
    pub fn tree(&self) -> BaoTree {
        self.tree
    }

    /// Writes verified bytes at `offset`.
    pub fn write_leaf(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if offset.saturating_add(bytes.len() as u64) > self.size {
            return Err(io::Error::other(format!(
                "leaf at {offset} of {} bytes is past the blob's end ({})",
                bytes.len(),
                self.size
            )));
        }
        self.data.write_all_at(bytes, offset)
    }

    /// Writes a verified parent hash pair into the outboard.
    pub fn write_parent(
        &self,
        node: TreeNode,
        pair: &(blake3::Hash, blake3::Hash),
    ) -> io::Result<()> {
        let Some((file, _)) = &self.outboard else {
            return Ok(());
        };
        let Some(index) = self.tree.pre_order_offset(node) else {
            // a node inside a chunk group: not stored by design
            return Ok(());
        };
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(pair.0.as_bytes());
        buf[32..].copy_from_slice(pair.1.as_bytes());
        file.write_all_at(&buf, index * 64)
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.data.sync_data()?;
        if let Some((f, _)) = &self.outboard {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Marks a blob as being fetched by one task; released on drop.
pub struct FetchClaim {
    store: Store,
    hash: Hash,
}

impl std::fmt::Debug for FetchClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchClaim")
            .field("hash", &self.hash)
            .finish()
    }
}

impl Drop for FetchClaim {
    fn drop(&mut self) {
        let mut set = self
            .store
            .inner
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.remove(&self.hash);
    }
}

fn create_sized(path: &std::path::Path, len: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    if f.metadata()?.len() != len {
        f.set_len(len)?;
    }
    Ok(f)
}

impl Store {
    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.inner.dir.join("partial")
    }

    fn partial_paths(&self, h: &Hash) -> (PathBuf, PathBuf) {
        let hex = h.to_hex();
        let dir = self.partial_dir();
        (
            dir.join(format!("{hex}.data")),
            dir.join(format!("{hex}.obao")),
        )
    }

    /// Marks `h` as being fetched; `None` if another task already is.
    pub fn claim_fetch(&self, h: Hash) -> Option<FetchClaim> {
        let mut set = self
            .inner
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.insert(h).then(|| FetchClaim {
            store: self.clone(),
            hash: h,
        })
    }

    pub(crate) fn is_claimed(&self, h: &Hash) -> bool {
        self.inner
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(h)
    }

    /// The record of a partial blob, if one is being fetched.
    pub fn partial_record(&self, h: &Hash) -> Result<Option<PartialRecord>> {
        match self.inner.partials.get(hash_key(h))? {
            Some(bytes) => PartialRecord::from_bytes(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Record {
                    key: h.to_string(),
                    source,
                }),
            None => Ok(None),
        }
    }

    /// Every partial blob, in id order.
    pub fn list_partials(&self) -> Result<Vec<(Hash, PartialRecord)>> {
        let mut out = Vec::new();
        for kv in self.inner.partials.iter() {
            let (k, v) = kv?;
            let Some(h) = key_hash(&k) else { continue };
            let rec = PartialRecord::from_bytes(&v).map_err(|source| StoreError::Record {
                key: h.to_string(),
                source,
            })?;
            out.push((h, rec));
        }
        Ok(out)
    }

    fn put_partial_record(&self, h: &Hash, rec: &PartialRecord) -> Result<()> {
        let bytes = rec.to_bytes().map_err(|source| StoreError::Record {
            key: h.to_string(),
            source,
        })?;
        self.inner.partials.insert(hash_key(h), bytes)?;
        Ok(())
    }

    /// Opens the partial blob `h` of `size` bytes: resumes the one on disk
    /// (returning the groups already verified) when it has this size and its
    /// files are whole, else starts an empty one. The caller holds the
    /// blob's [`FetchClaim`] and has proven `size` (by its last group).
    pub fn open_partial(
        &self,
        h: &Hash,
        size: u64,
        kind: BlobKind,
    ) -> Result<(PartialBlob, GroupRanges)> {
        let dir = self.partial_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let (data_path, ob_path) = self.partial_paths(h);
        let existing = self.partial_record(h)?;
        let resumable = existing.as_ref().filter(|r| {
            r.size == size
                && fs::metadata(&data_path).is_ok_and(|m| m.len() == size)
                && (tree.outboard_size() == 0
                    || fs::metadata(&ob_path).is_ok_and(|m| m.len() == tree.outboard_size()))
        });
        let (kind, verified) = match resumable {
            Some(r) => (r.kind, r.verified.intersection(&GroupRanges::all(size))),
            None => {
                if existing.is_some() {
                    tracing::info!(id = %h, "partial blob does not match its record; starting it again");
                }
                for p in [&data_path, &ob_path] {
                    remove_quiet(p)?;
                }
                let now = now_ms();
                self.put_partial_record(
                    h,
                    &PartialRecord {
                        v: PARTIAL_V,
                        size,
                        kind,
                        verified: GroupRanges::empty(),
                        created_ms: now,
                        updated_ms: now,
                    },
                )?;
                self.flush()?;
                (kind, GroupRanges::empty())
            }
        };
        let data = create_sized(&data_path, size).map_err(StoreError::io(&data_path))?;
        let outboard = if tree.outboard_size() > 0 {
            let f =
                create_sized(&ob_path, tree.outboard_size()).map_err(StoreError::io(&ob_path))?;
            Some((f, ob_path))
        } else {
            None
        };
        Ok((
            PartialBlob {
                hash: *h,
                size,
                kind,
                tree,
                data,
                data_path,
                outboard,
            },
            verified,
        ))
    }

    /// Records `verified` as the groups of `p` that are verified: syncs the
    /// files first, so the record never claims bytes a crash could lose.
    pub fn save_partial(&self, p: &PartialBlob, verified: &GroupRanges) -> Result<()> {
        p.sync().map_err(StoreError::io(&p.data_path))?;
        let created_ms = self
            .partial_record(&p.hash)?
            .map(|r| r.created_ms)
            .unwrap_or_else(now_ms);
        self.put_partial_record(
            &p.hash,
            &PartialRecord {
                v: PARTIAL_V,
                size: p.size,
                kind: p.kind,
                verified: verified.coarsen(MAX_SAVED_RANGES),
                created_ms,
                updated_ms: now_ms(),
            },
        )?;
        self.flush()
    }

    /// Moves a partial whose every group is verified into `blobs/` and
    /// indexes it as complete; returns false if the blob was already here
    /// (the partial is then dropped).
    pub fn complete_partial(&self, p: &PartialBlob) -> Result<bool> {
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        if self.has(&p.hash)? {
            self.keep_fresh(&p.hash);
            self.remove_partial(&p.hash)?;
            return Ok(false);
        }
        p.sync().map_err(StoreError::io(&p.data_path))?;
        let data_path = self.blob_path(&p.hash);
        let dir = data_path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| self.dir().to_path_buf());
        let new_dir = !dir.exists();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        if let Some((_, ob_src)) = &p.outboard {
            let ob_dst = self.outboard_path(&p.hash);
            fs::rename(ob_src, &ob_dst).map_err(StoreError::io(&ob_dst))?;
        }
        fs::rename(&p.data_path, &data_path).map_err(StoreError::io(&data_path))?;
        // complete blobs are read-only, as imports leave them
        set_read_only(&data_path)?;
        if p.outboard.is_some() {
            set_read_only(&self.outboard_path(&p.hash))?;
        }
        sync_dir(&dir).map_err(StoreError::io(&dir))?;
        if new_dir && let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(StoreError::io(parent))?;
        }
        let partial_dir = self.partial_dir();
        sync_dir(&partial_dir).map_err(StoreError::io(&partial_dir))?;
        self.index_fetched(
            &p.hash,
            &BlobRecord {
                v: BLOB_V,
                size: p.size,
                kind: p.kind,
                complete: true,
                root: false,
                created_ms: now_ms(),
            },
        )?;
        self.inner.partials.remove(hash_key(&p.hash))?;
        self.flush()?;
        Ok(true)
    }

    /// Stores a small blob fetched and verified in memory (under the import
    /// side of the GC lock); returns its id.
    pub fn add_fetched(&self, bytes: &[u8], kind: BlobKind) -> Result<Hash> {
        let h = self.add_verified(bytes, kind)?;
        self.keep_fresh(&h);
        self.flush()?;
        Ok(h)
    }

    /// Stores small blobs fetched and verified in memory, all at once: their
    /// files are written and synced together (in parallel, which the file
    /// system turns into few journal commits), renamed into `blobs/`, the
    /// directories synced, and only then indexed. A few syncs for many blobs
    /// instead of several per blob is what makes fetching a tree of many
    /// small files quick. Returns each blob's id.
    pub fn add_fetched_many(&self, blobs: &[(Vec<u8>, BlobKind)]) -> Result<Vec<Hash>> {
        use bao_tree::io::outboard::PreOrderOutboard;
        use bao_tree::io::sync::CreateOutboard;
        use std::io::Write;

        struct Staged {
            hash: Hash,
            kind: BlobKind,
            size: u64,
            files: Vec<(File, PathBuf, PathBuf)>,
        }
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        let tmp = self.tmp_dir();
        let mut staged: Vec<Staged> = Vec::new();
        let mut ids = Vec::with_capacity(blobs.len());
        let result = (|| -> Result<()> {
            for (bytes, kind) in blobs {
                let ob = PreOrderOutboard::<Vec<u8>>::create_sized(
                    &bytes[..],
                    bytes.len() as u64,
                    BLOCK_SIZE,
                )
                .map_err(StoreError::io(std::path::Path::new("<memory>")))?;
                let hash = Hash::from(ob.root);
                ids.push(hash);
                if self.has(&hash)? || staged.iter().any(|s| s.hash == hash) {
                    // an import's rollback must leave what a fetch relies on
                    self.keep_fresh(&hash);
                    continue;
                }
                let name = format!("{:016x}", rand::random::<u64>());
                let mut entry = Staged {
                    hash,
                    kind: *kind,
                    size: bytes.len() as u64,
                    files: Vec::new(),
                };
                let mut parts = vec![(
                    tmp.join(format!("{name}.data")),
                    self.blob_path(&hash),
                    &bytes[..],
                )];
                if !ob.data.is_empty() {
                    parts.push((
                        tmp.join(format!("{name}.obao")),
                        self.outboard_path(&hash),
                        &ob.data[..],
                    ));
                }
                for (path, dest, content) in parts {
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o444)
                        .open(&path)
                        .map_err(StoreError::io(&path))?;
                    // staged first: a failed write still gets its file removed
                    let written = f.write_all(content);
                    entry.files.push((f, path.clone(), dest));
                    written.map_err(StoreError::io(&path))?;
                }
                staged.push(entry);
            }
            Ok(())
        })();
        let cleanup = |staged: &[Staged]| {
            for s in staged {
                for (_, path, _) in &s.files {
                    let _ = fs::remove_file(path);
                }
            }
        };
        if let Err(e) = result {
            cleanup(&staged);
            return Err(e);
        }
        if staged.is_empty() {
            return Ok(ids);
        }
        let files: Vec<(&File, &PathBuf)> = staged
            .iter()
            .flat_map(|s| s.files.iter().map(|(f, p, _)| (f, p)))
            .collect();
        if let Err(e) = sync_parallel(&files, |f| f.sync_data()) {
            cleanup(&staged);
            return Err(e);
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for s in &staged {
            for (_, path, dest) in &s.files {
                if let Some(dir) = dest.parent() {
                    if !dir.exists() {
                        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
                        dirs.push(self.inner.dir.join("blobs"));
                    }
                    dirs.push(dir.to_path_buf());
                }
                fs::rename(path, dest).map_err(StoreError::io(dest))?;
            }
        }
        dirs.sort();
        dirs.dedup();
        let mut opened = Vec::with_capacity(dirs.len());
        for d in &dirs {
            opened.push(File::open(d).map_err(StoreError::io(d))?);
        }
        let dir_refs: Vec<(&File, &PathBuf)> = opened.iter().zip(dirs.iter()).collect();
        sync_parallel(&dir_refs, |f| f.sync_all())?;
        for s in &staged {
            self.index_fetched(
                &s.hash,
                &BlobRecord {
                    v: BLOB_V,
                    size: s.size,
                    kind: s.kind,
                    complete: true,
                    root: false,
                    created_ms: now_ms(),
                },
            )?;
        }
        self.flush()?;
        Ok(ids)
    }

    /// Removes a partial blob's files, then its record.
    pub fn remove_partial(&self, h: &Hash) -> Result<()> {
        let (data, ob) = self.partial_paths(h);
        for p in [&data, &ob] {
            remove_quiet(p)?;
        }
        self.inner.partials.remove(hash_key(h))?;
        Ok(())
    }

    /// GC's part for partials: removes unclaimed ones not updated for
    /// [`PARTIAL_TTL`], and files in `partial/` without a record. Returns how
    /// many partials and stray files it removed.
    pub(crate) fn gc_partials(&self) -> Result<u64> {
        let now = now_ms();
        let ttl = PARTIAL_TTL.as_millis() as u64;
        let mut removed = 0;
        for (h, rec) in self.list_partials()? {
            if !self.is_claimed(&h) && now.saturating_sub(rec.updated_ms) > ttl {
                tracing::info!(id = %h, verified_groups = rec.verified.group_count(), "removing abandoned partial blob");
                self.remove_partial(&h)?;
                removed += 1;
            }
        }
        let dir = self.partial_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(StoreError::io(&dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(StoreError::io(&dir))?.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let keep = match stem.parse::<Hash>() {
                Ok(h) => self.is_claimed(&h) || self.partial_record(&h)?.is_some(),
                Err(_) => false,
            };
            if !keep {
                remove_quiet(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Runs `sync` on every file, from up to 16 threads at once: the file
/// system commits concurrent syncs together.
fn sync_parallel(
    files: &[(&File, &PathBuf)],
    sync: impl Fn(&File) -> io::Result<()> + Sync,
) -> Result<()> {
    let per_thread = files.len().div_ceil(16).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| {
                let sync = &sync;
                scope.spawn(move || {
                    for (f, path) in chunk {
                        sync(f).map_err(StoreError::io(path))?;
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap_or_else(|_| {
                Err(StoreError::io(std::path::Path::new("sync"))(
                    io::Error::other("sync thread panicked"),
                ))
            })?;
        }
        Ok(())
    })
}

fn set_read_only(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).map_err(StoreError::io(path))
}

fn remove_quiet(p: &std::path::Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PreOrderMemOutboard;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 241) as u8).collect()
    }

    fn write_groups(p: &PartialBlob, blob: &[u8], groups: std::ops::Range<u64>) {
        for g in groups {
            let start = (g * 16384) as usize;
            let end = (start + 16384).min(blob.len());
            p.write_leaf(start as u64, &blob[start..end]).expect("leaf");
        }
    }

    fn write_outboard(p: &PartialBlob, blob: &[u8]) {
        let ob = PreOrderMemOutboard::create(blob, BLOCK_SIZE);
        let (f, _) = p.outboard.as_ref().expect("outboard");
        f.write_all_at(&ob.data, 0).expect("outboard");
    }

    #[test]
    fn a_partial_survives_reopening_and_completes_into_a_whole_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = pattern(100_000);
        let h = Hash::of(&blob);
        {
            let store = Store::open(&dir.path().join("s"), "a").expect("open");
            let (p, verified) = store
                .open_partial(&h, blob.len() as u64, BlobKind::Raw)
                .expect("partial");
            assert!(verified.is_empty());
            write_outboard(&p, &blob);
            write_groups(&p, &blob, 0..3);
            store
                .save_partial(&p, &GroupRanges::range(0, 3))
                .expect("save");
            assert!(!store.has(&h).expect("has"));
            assert!(
                store.verify().expect("verify").is_empty(),
                "partials are not blobs"
            );
            assert!(store.list(true).expect("list").is_empty());
        }
        let store = Store::open(&dir.path().join("s"), "a").expect("reopen");
        let (p, verified) = store
            .open_partial(&h, blob.len() as u64, BlobKind::Raw)
            .expect("resume");
        assert_eq!(verified, GroupRanges::range(0, 3));
        write_groups(&p, &blob, 3..7);
        assert!(store.complete_partial(&p).expect("complete"));
        drop(p);
        assert!(store.has(&h).expect("has"));
        assert!(store.verify().expect("verify").is_empty());
        assert!(store.partial_record(&h).expect("record").is_none());
        assert_eq!(fs::read_dir(store.partial_dir()).expect("dir").count(), 0);
        let mut back = Vec::new();
        io::Read::read_to_end(&mut store.open_blob(&h).expect("open"), &mut back).expect("read");
        assert_eq!(back, blob);
    }

    #[test]
    fn a_partial_of_another_size_or_with_lost_files_starts_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s"), "a").expect("open");
        let blob = pattern(70_000);
        let h = Hash::of(&blob);
        let (p, _) = store
            .open_partial(&h, 70_000, BlobKind::Raw)
            .expect("partial");
        store
            .save_partial(&p, &GroupRanges::range(0, 2))
            .expect("save");
        drop(p);
        let (_, verified) = store
            .open_partial(&h, 80_000, BlobKind::Raw)
            .expect("other size");
        assert!(verified.is_empty());
        let (p, _) = store
            .open_partial(&h, 70_000, BlobKind::Raw)
            .expect("partial");
        store
            .save_partial(&p, &GroupRanges::range(0, 2))
            .expect("save");
        drop(p);
        fs::remove_file(store.partial_dir().join(format!("{h}.data"))).expect("rm");
        let (_, verified) = store
            .open_partial(&h, 70_000, BlobKind::Raw)
            .expect("files lost");
        assert!(verified.is_empty());
    }

    #[test]
    fn gc_keeps_fresh_and_claimed_partials_and_removes_abandoned_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s"), "a").expect("open");
        let [fresh, stale, claimed] = [1u8, 2, 3].map(|i| Hash::of(&[i]));
        for h in [fresh, stale, claimed] {
            let (p, _) = store.open_partial(&h, 50_000, BlobKind::Raw).expect("p");
            store
                .save_partial(&p, &GroupRanges::range(0, 1))
                .expect("save");
        }
        for h in [stale, claimed] {
            let mut rec = store.partial_record(&h).expect("rec").expect("some");
            rec.updated_ms = 0;
            store.put_partial_record(&h, &rec).expect("put");
        }
        let _claim = store.claim_fetch(claimed).expect("claim");
        assert!(store.claim_fetch(claimed).is_none(), "one claim at a time");
        fs::write(store.partial_dir().join("debris.data"), b"x").expect("debris");
        let report = store.gc(&[]).expect("gc");
        assert_eq!(
            report.partials_removed, 2,
            "the stale partial and the debris"
        );
        assert!(store.partial_record(&fresh).expect("rec").is_some());
        assert!(store.partial_record(&claimed).expect("rec").is_some());
        assert!(store.partial_record(&stale).expect("rec").is_none());
        assert!(!store.partial_dir().join(format!("{stale}.data")).exists());
        assert!(store.partial_dir().join(format!("{fresh}.data")).exists());
    }

    #[test]
    fn small_blobs_are_stored_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s"), "a").expect("open");
        let existing = pattern(5000);
        store.add_bytes(&existing, BlobKind::Raw).expect("add");
        let blobs: Vec<(Vec<u8>, BlobKind)> = vec![
            (pattern(100), BlobKind::Raw),
            (pattern(40_000), BlobKind::Raw),
            (existing.clone(), BlobKind::Raw),
            (pattern(100), BlobKind::Raw),
            (Vec::new(), BlobKind::Raw),
        ];
        let ids = store.add_fetched_many(&blobs).expect("add many");
        for ((bytes, _), id) in blobs.iter().zip(&ids) {
            assert_eq!(*id, Hash::of(bytes));
            assert!(store.has(id).expect("has"));
        }
        assert!(store.verify().expect("verify").is_empty());
        assert_eq!(fs::read_dir(store.tmp_dir()).expect("tmp").count(), 0);
    }
}
