//! Importing files and directories.
//!
//! A file is read once: each block read is handed to a writer thread (the
//! temp file) while this thread hashes it into the outboard, so hashing and
//! writing overlap. A directory is scanned first, so a symlink, special file
//! or bad name anywhere is reported before anything is written; if a read
//! fails later, every blob this import created is removed again, unless
//! another import used it meanwhile (or a fetch, pin or tag took it).
//!
//! An import holds the import side of the GC lock from its first blob to
//! its pin and tag ([`Keep`]), so GC never runs between an import and what
//! keeps it. An import from a hostile folder (a task's outputs) opens
//! everything beneath one handle on the folder, following no link
//! ([`Store::add_beneath`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bao_tree::BaoTree;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::CreateOutboard;
use serde::{Deserialize, Serialize};
use weft_protocol::{EntryKind, Hash, TagName, Tree, TreeEntry, tree::validate_name};

use super::beneath::{Beneath, Kind};
use super::records::{BLOB_V, BlobKind, BlobRecord};
use super::{BLOCK_SIZE, Result, Store, StoreError, now_ms};
use crate::home::sync_dir;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Store what symbolic links point to instead of refusing them.
    pub follow_symlinks: bool,
}

/// What an import produced.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddOutcome {
    #[schema(value_type = String)]
    pub id: Hash,
    /// "file" or "tree".
    pub kind: String,
    /// Bytes of file content (for a tree, all its files).
    pub size: u64,
    /// Files imported.
    pub files: u64,
    /// Blobs that were not already in the store.
    pub new_blobs: u64,
}

/// Receives progress of a long import or export.
pub trait Progress: Sync {
    /// Total bytes expected.
    fn start(&self, _total: u64) {}
    /// More bytes done.
    fn advance(&self, _bytes: u64) {}
}

impl Progress for () {}

/// Size of each read from a source file.
const READ_BLOCK: usize = 1 << 20;

/// Files up to this size are read into memory in one go.
const SMALL_FILE: u64 = 256 * 1024;

enum Plan {
    File {
        /// The file's path; below the handle's folder for an import
        /// beneath one.
        path: PathBuf,
        size: u64,
        executable: bool,
        /// Device and inode seen by the scan.
        ino: (u64, u64),
    },
    Dir {
        children: Vec<(String, Plan)>,
    },
}

impl Plan {
    fn bytes(&self) -> u64 {
        match self {
            Plan::File { size, .. } => *size,
            Plan::Dir { children } => children.iter().map(|(_, p)| p.bytes()).sum(),
        }
    }
}

pub(super) fn file_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

fn scan(path: &Path, follow: bool, ancestors: &mut Vec<(u64, u64)>) -> Result<Plan> {
    let mut meta = fs::symlink_metadata(path).map_err(StoreError::io(path))?;
    if meta.file_type().is_symlink() {
        if !follow {
            return Err(StoreError::Symlink {
                path: path.to_path_buf(),
            });
        }
        meta = fs::metadata(path).map_err(StoreError::io(path))?;
    }
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(Plan::File {
            path: path.to_path_buf(),
            size: meta.len(),
            executable: meta.permissions().mode() & 0o111 != 0,
            ino: (meta.dev(), meta.ino()),
        });
    }
    if !ft.is_dir() {
        return Err(StoreError::Special {
            path: path.to_path_buf(),
            kind: file_kind(&ft),
        });
    }
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) {
        return Err(StoreError::LinkLoop {
            path: path.to_path_buf(),
        });
    }
    ancestors.push(id);
    let mut children = Vec::new();
    for entry in fs::read_dir(path).map_err(StoreError::io(path))? {
        let entry = entry.map_err(StoreError::io(path))?;
        let child = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| StoreError::NonUtf8 {
                path: child.clone(),
            })?;
        validate_name(&name).map_err(|source| StoreError::BadName {
            path: child.clone(),
            source,
        })?;
        children.push((name, scan(&child, follow, ancestors)?));
    }
    ancestors.pop();
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(Plan::Dir { children })
}

/// Reads from a source and passes every block to the writer thread.
struct Tee<'a> {
    src: File,
    tx: &'a mpsc::SyncSender<Vec<u8>>,
    read: u64,
    progress: &'a dyn Progress,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if n > 0 {
            self.read += n as u64;
            self.progress.advance(n as u64);
            self.tx
                .send(buf[..n].to_vec())
                .map_err(|_| io::Error::other("temp file writer stopped"))?;
        }
        Ok(n)
    }
}

/// Starts disk writeback of a large file while it is still being written, so
/// the final fsync finds little left to do and the disk works while the
/// hasher does. Each window is handed to the kernel once full; the one before
/// it is waited for, which keeps dirty pages bounded.
#[derive(Default)]
struct Writeback {
    written: u64,
    started: u64,
}

impl Writeback {
    const WINDOW: u64 = 8 << 20;

    fn wrote(&mut self, file: &File, n: u64) {
        use std::os::fd::AsRawFd;
        self.written += n;
        while self.written - self.started >= Self::WINDOW {
            let fd = file.as_raw_fd();
            // SAFETY: fd is an open file descriptor owned by `file` for the
            // duration of the call; sync_file_range only reads its arguments.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.started as i64,
                    Self::WINDOW as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
                if self.started >= Self::WINDOW {
                    libc::sync_file_range(
                        fd,
                        (self.started - Self::WINDOW) as i64,
                        Self::WINDOW as i64,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
            self.started += Self::WINDOW;
        }
    }
}

fn open_source(path: &Path, follow: bool) -> Result<File> {
    let mut flags = libc::O_NONBLOCK;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StoreError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::io(path)(e)
            }
        })?;
    let meta = f.metadata().map_err(StoreError::io(path))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Special {
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    Ok(f)
}

/// Scans `rel` below the handle's folder, following no link.
fn scan_beneath(b: &Beneath, rel: &Path) -> Result<Plan> {
    let (kind, meta) = b
        .kind(rel)
        .map_err(|e| beneath_error(Some(b), b.path(), rel, e))?;
    match kind {
        Kind::Symlink => Err(StoreError::Symlink { path: b.shown(rel) }),
        Kind::Special(kind) => Err(StoreError::Special {
            path: b.shown(rel),
            kind,
        }),
        Kind::File => Ok(Plan::File {
            path: rel.to_path_buf(),
            size: meta.len(),
            executable: meta.permissions().mode() & 0o111 != 0,
            ino: (meta.dev(), meta.ino()),
        }),
        Kind::Dir => {
            let names = b
                .read_dir(rel)
                .map_err(|e| beneath_error(Some(b), b.path(), rel, e))?;
            let mut children = Vec::with_capacity(names.len());
            for name in names {
                let child = rel.join(&name);
                let name = name.into_string().map_err(|_| StoreError::NonUtf8 {
                    path: b.shown(&child),
                })?;
                validate_name(&name).map_err(|source| StoreError::BadName {
                    path: b.shown(&child),
                    source,
                })?;
                children.push((name, scan_beneath(b, &child)?));
            }
            children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            Ok(Plan::Dir { children })
        }
    }
}

/// Opens a regular file that the scan saw as `ino`, beneath the handle.
fn open_beneath(b: &Beneath, rel: &Path, ino: (u64, u64)) -> Result<File> {
    let f = b
        .open_at(rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
        .map_err(|e| beneath_error(Some(b), b.path(), rel, e))?;
    let meta = f.metadata().map_err(StoreError::io(&b.shown(rel)))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Special {
            path: b.shown(rel),
            kind: file_kind(&meta.file_type()),
        });
    }
    if (meta.dev(), meta.ino()) != ino {
        return Err(StoreError::Changed { path: b.shown(rel) });
    }
    Ok(f)
}

/// The store error for a failed open beneath `root`: a link on the way is
/// named, a path that would leave the folder is refused.
fn beneath_error(b: Option<&Beneath>, root: &Path, rel: &Path, e: io::Error) -> StoreError {
    let shown = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            let link = b.and_then(|b| b.first_symlink(rel));
            StoreError::Symlink {
                path: link.map_or(shown, |l| root.join(l)),
            }
        }
        Some(libc::EXDEV) => StoreError::Escapes { path: shown },
        _ => StoreError::io(&shown)(e),
    }
}

/// A temp file in the store's `tmp/`, removed on drop unless kept.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(crate) fn create(store: &Store, suffix: &str) -> Result<(TempFile, File)> {
        let name = format!("{:016x}.{suffix}", rand::random::<u64>());
        let path = store.tmp_dir().join(name);
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        Ok((TempFile { path, keep: false }, f))
    }

    fn kept(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep && !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where an import reads its files.
enum Source<'a> {
    /// By path, following symbolic links when asked.
    Paths { follow: bool },
    /// Below a directory handle, following no link.
    Beneath(&'a Beneath),
}

/// What keeps an import's result from GC. It is written before the import
/// leaves its critical section with GC, so no sweep can fall between the
/// import and its pin or tag.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Pin the result (with this many replicas).
    pub pin: Option<u32>,
    /// Point this tag at the result.
    pub tag: Option<TagName>,
}

/// A blob created by an import not finished yet.
#[derive(Debug)]
pub(super) struct Fresh {
    /// Unfinished imports using it (its creator included).
    holders: u32,
    /// A finished import, a fetch or a pin took it: never rolled back.
    kept: bool,
}

/// The fresh blobs one import holds, for its end.
#[derive(Default)]
struct Claims {
    created: u64,
    held: Vec<Hash>,
}

/// Test-only points inside an import.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) enum Hook<'a> {
    /// A file was imported (named by its path or path below the handle).
    FileImported(&'a Path),
    /// Everything is imported; the pin and tag come next.
    BeforeKeep,
}

impl Store {
    /// Imports a file or a directory tree; the result is marked as a root
    /// (listed by `weft ls`).
    pub fn add_path(
        &self,
        path: &Path,
        opts: &AddOptions,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        self.add_path_kept(path, opts, &Keep::default(), progress)
    }

    /// Like [`Store::add_path`], pinning and tagging the result as `keep`
    /// says within the import's critical section with GC.
    pub fn add_path_kept(
        &self,
        path: &Path,
        opts: &AddOptions,
        keep: &Keep,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        let plan = scan(path, opts.follow_symlinks, &mut Vec::new())?;
        let source = Source::Paths {
            follow: opts.follow_symlinks,
        };
        self.import(&plan, &source, keep, progress)
    }

    /// Imports `rel` (a relative path; empty for the folder itself) below
    /// the folder `root`, which is opened once: every file and folder is
    /// opened beneath that handle and no symbolic link is followed, in any
    /// component, even one swapped in while the import runs. A link or a
    /// special file anywhere is refused ([`StoreError::Symlink`],
    /// [`StoreError::Special`]); nothing is stored then.
    pub fn add_beneath(
        &self,
        root: &Path,
        rel: &Path,
        keep: &Keep,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        let b = Beneath::open(root).map_err(|e| beneath_error(None, root, Path::new(""), e))?;
        self.add_beneath_handle(&b, rel, keep, progress)
    }

    fn add_beneath_handle(
        &self,
        b: &Beneath,
        rel: &Path,
        keep: &Keep,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        let plan = scan_beneath(b, rel)?;
        self.import(&plan, &Source::Beneath(b), keep, progress)
    }

    /// [`Store::add_beneath`] through a handle a test opened.
    #[cfg(test)]
    pub(super) fn add_beneath_for_test(&self, b: &Beneath, rel: &Path) -> Result<AddOutcome> {
        self.add_beneath_handle(b, rel, &Keep::default(), &())
    }

    /// Imports a scanned plan under the import side of the GC lock, keeps
    /// it as `keep` says, and rolls back on failure.
    fn import(
        &self,
        plan: &Plan,
        source: &Source<'_>,
        keep: &Keep,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        progress.start(plan.bytes());
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut claims = Claims::default();
        let mut files = 0;
        let result = self
            .import_plan(plan, source, progress, &mut claims, &mut files)
            .and_then(|(id, kind, size)| {
                self.mark_root(&id)?;
                self.hook(Hook::BeforeKeep);
                self.keep(&id, keep)?;
                self.flush()?;
                Ok((id, kind, size))
            });
        let new_blobs = claims.created;
        self.finish(claims, result.is_ok());
        let (id, kind, size) = result?;
        Ok(AddOutcome {
            id,
            kind: match kind {
                EntryKind::File => "file",
                EntryKind::Tree => "tree",
            }
            .to_string(),
            size,
            files,
            new_blobs,
        })
    }

    fn keep(&self, id: &Hash, keep: &Keep) -> Result<()> {
        if let Some(replicas) = keep.pin {
            self.pin(id, replicas)?;
        }
        if let Some(tag) = &keep.tag {
            self.set_tag(tag, Some(*id))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn hook(&self, at: Hook<'_>) {
        let hook = self
            .inner
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(h) = hook {
            h(at);
        }
    }

    #[cfg(not(test))]
    fn hook(&self, _at: Hook<'_>) {}

    /// Whether `h` is complete here; if an unfinished import created it,
    /// `claims` now holds it too, so that import's rollback leaves it.
    fn reuse(&self, h: &Hash, claims: &mut Claims) -> Result<bool> {
        let mut fresh = self.inner.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if !self.has(h)? {
            return Ok(false);
        }
        if let Some(f) = fresh.get_mut(h)
            && !claims.held.contains(h)
        {
            f.holders += 1;
            claims.held.push(*h);
        }
        Ok(true)
    }

    /// Indexes a blob whose files are in place, as created by `claims`'
    /// import; false if it was complete already.
    fn index_new(&self, h: Hash, rec: &BlobRecord, claims: &mut Claims) -> Result<bool> {
        let mut fresh = self.inner.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if self.has(&h)? {
            drop(fresh);
            self.reuse(&h, claims)?;
            return Ok(false);
        }
        self.put_blob_record(&h, rec)?;
        fresh.insert(
            h,
            Fresh {
                holders: 1,
                kept: false,
            },
        );
        claims.created += 1;
        claims.held.push(h);
        Ok(true)
    }

    /// Indexes a fetched blob whose files are in place. Done under the lock
    /// that rollbacks hold, so a failed import that created the same blob
    /// meanwhile cannot remove it after this.
    pub(super) fn index_fetched(&self, h: &Hash, rec: &BlobRecord) -> Result<()> {
        let mut fresh = self.inner.fresh.lock().unwrap_or_else(|p| p.into_inner());
        // a rollback of the same blob may have removed the files just put
        // in place: then fail (the fetch is retried), never index them
        let data = self.blob_path(h);
        if !data.exists() {
            return Err(StoreError::Changed { path: data });
        }
        self.put_blob_record(h, rec)?;
        if let Some(f) = fresh.get_mut(h) {
            f.kept = true;
        }
        Ok(())
    }

    /// Marks `h` as taken by something that is not an import (a fetch that
    /// found it here), so no import's rollback removes it.
    pub(crate) fn keep_fresh(&self, h: &Hash) {
        let mut fresh = self.inner.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fresh.get_mut(h) {
            f.kept = true;
        }
    }

    /// Ends an import: its fresh blobs are kept if it succeeded; if it
    /// failed, each one that no other import, fetch, pin or tag took is
    /// removed.
    fn finish(&self, claims: Claims, ok: bool) {
        let mut fresh = self.inner.fresh.lock().unwrap_or_else(|p| p.into_inner());
        let mut doomed = Vec::new();
        for h in claims.held {
            let Some(f) = fresh.get_mut(&h) else {
                continue;
            };
            f.holders = f.holders.saturating_sub(1);
            f.kept |= ok;
            if f.holders == 0 {
                if !f.kept {
                    doomed.push(h);
                }
                fresh.remove(&h);
            }
        }
        if doomed.is_empty() {
            return;
        }
        // still under the lock, so no import can take one of them meanwhile
        let tagged: HashSet<Hash> = match self.list_tags() {
            Ok(tags) => tags.into_iter().map(|t| t.id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list tags; the failed import's blobs are left to GC");
                return;
            }
        };
        for h in doomed {
            let pinned = self
                .inner
                .pins
                .contains_key(super::records::hash_key(&h))
                .unwrap_or(true);
            if pinned || tagged.contains(&h) {
                continue;
            }
            if let Err(e) = self.remove_blob(&h) {
                tracing::warn!(id = %h, error = %e, "could not roll back blob");
            }
        }
    }

    fn import_plan(
        &self,
        plan: &Plan,
        source: &Source<'_>,
        progress: &dyn Progress,
        claims: &mut Claims,
        files: &mut u64,
    ) -> Result<(Hash, EntryKind, u64)> {
        match plan {
            Plan::File {
                path, size, ino, ..
            } => {
                let (src, shown) = match source {
                    Source::Paths { follow } => (open_source(path, *follow)?, path.clone()),
                    Source::Beneath(b) => (open_beneath(b, path, *ino)?, b.shown(path)),
                };
                let h = self.import_file(&shown, src, *size, progress, claims)?;
                *files += 1;
                self.hook(Hook::FileImported(path));
                Ok((h, EntryKind::File, *size))
            }
            Plan::Dir { children } => {
                let mut entries = Vec::with_capacity(children.len());
                for (name, child) in children {
                    let (hash, kind, size) =
                        self.import_plan(child, source, progress, claims, files)?;
                    let executable = matches!(
                        child,
                        Plan::File {
                            executable: true,
                            ..
                        }
                    );
                    entries.push(TreeEntry {
                        name: name.clone(),
                        kind,
                        hash,
                        size,
                        executable,
                    });
                }
                let tree = Tree::new(entries).map_err(|source| StoreError::BadName {
                    path: PathBuf::new(),
                    source,
                })?;
                let size = tree.total_size();
                let bytes = tree.encode().map_err(|source| StoreError::BadName {
                    path: PathBuf::new(),
                    source,
                })?;
                let h = self.add_bytes_in(&bytes, BlobKind::Tree, claims)?;
                Ok((h, EntryKind::Tree, size))
            }
        }
    }

    /// Stores `bytes` as one blob; returns its id and whether it was new.
    pub fn add_bytes(&self, bytes: &[u8], kind: BlobKind) -> Result<(Hash, bool)> {
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut claims = Claims::default();
        let result = self.add_bytes_in(bytes, kind, &mut claims);
        let new = claims.created > 0;
        self.finish(claims, result.is_ok());
        result.map(|h| (h, new))
    }

    /// Stores `bytes` as one blob for the import holding `claims` (which
    /// holds the GC lock).
    fn add_bytes_in(&self, bytes: &[u8], kind: BlobKind, claims: &mut Claims) -> Result<Hash> {
        let ob = PreOrderOutboard::<Vec<u8>>::create_sized(bytes, bytes.len() as u64, BLOCK_SIZE)
            .map_err(StoreError::io(Path::new("<memory>")))?;
        let h = Hash::from(ob.root);
        if self.reuse(&h, claims)? {
            return Ok(h);
        }
        let (tmp, mut f) = TempFile::create(self, "data")?;
        f.write_all(bytes).map_err(StoreError::io(&tmp.path))?;
        f.sync_data().map_err(StoreError::io(&tmp.path))?;
        self.commit_in(h, bytes.len() as u64, kind, tmp, &ob.data, claims)?;
        Ok(h)
    }

    /// Stores a small blob already verified (a fetch) under the import side
    /// of the GC lock; returns its id.
    pub(super) fn add_verified(&self, bytes: &[u8], kind: BlobKind) -> Result<Hash> {
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut claims = Claims::default();
        let result = self.add_bytes_in(bytes, kind, &mut claims);
        self.finish(claims, result.is_ok());
        result
    }

    /// Stores a stream of unknown length (an HTTP upload): the bytes are
    /// spooled to a temp file while hashed, then the outboard is computed
    /// from the temp file, which the first pass left in the page cache.
    pub fn add_reader(&self, reader: impl Read, progress: &dyn Progress) -> Result<AddOutcome> {
        self.add_reader_kept(reader, &Keep::default(), progress)
    }

    /// Like [`Store::add_reader`], pinning and tagging the result as `keep`
    /// says within the import's critical section with GC.
    pub fn add_reader_kept(
        &self,
        reader: impl Read,
        keep: &Keep,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut claims = Claims::default();
        let result = self
            .add_reader_in(reader, progress, &mut claims)
            .and_then(|(id, size)| {
                self.keep(&id, keep)?;
                self.flush()?;
                Ok((id, size))
            });
        let new_blobs = claims.created;
        self.finish(claims, result.is_ok());
        let (id, size) = result?;
        Ok(AddOutcome {
            id,
            kind: "file".to_string(),
            size,
            files: 1,
            new_blobs,
        })
    }

    fn add_reader_in(
        &self,
        mut reader: impl Read,
        progress: &dyn Progress,
        claims: &mut Claims,
    ) -> Result<(Hash, u64)> {
        let (tmp, mut out) = TempFile::create(self, "data")?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; READ_BLOCK];
        let mut size = 0u64;
        let mut flusher = Writeback::default();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io(Path::new("<upload>"))(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(StoreError::io(&tmp.path))?;
            flusher.wrote(&out, n as u64);
            size += n as u64;
            progress.advance(n as u64);
        }
        out.sync_data().map_err(StoreError::io(&tmp.path))?;
        let h = Hash::from(hasher.finalize());
        if !self.reuse(&h, claims)? {
            let tree = BaoTree::new(size, BLOCK_SIZE);
            let mut ob = PreOrderOutboard {
                root: h.into(),
                tree,
                data: Vec::with_capacity(tree.outboard_size() as usize),
            };
            let spooled = File::open(&tmp.path).map_err(StoreError::io(&tmp.path))?;
            let root = bao_tree::io::sync::outboard(
                BufReader::with_capacity(READ_BLOCK, spooled),
                tree,
                &mut ob,
            )
            .map_err(StoreError::io(&tmp.path))?;
            if Hash::from(root) != h {
                return Err(StoreError::Changed {
                    path: tmp.path.clone(),
                });
            }
            self.commit_in(h, size, BlobKind::Raw, tmp, &ob.data, claims)?;
        }
        self.mark_root(&h)?;
        self.flush()?;
        Ok((h, size))
    }

    /// Stores a file read from `src` (of `size` bytes, named `path` in errors).
    fn import_file(
        &self,
        path: &Path,
        mut src: File,
        size: u64,
        progress: &dyn Progress,
        claims: &mut Claims,
    ) -> Result<Hash> {
        if size <= SMALL_FILE {
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut src)
                .take(size + 1)
                .read_to_end(&mut bytes)
                .map_err(StoreError::io(path))?;
            if bytes.len() as u64 != size {
                return Err(StoreError::Changed {
                    path: path.to_path_buf(),
                });
            }
            progress.advance(size);
            return self.add_bytes_in(&bytes, BlobKind::Raw, claims);
        }
        let (tmp, mut out) = TempFile::create(self, "data")?;
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let mut ob = PreOrderOutboard {
            root: blake3::Hash::from_bytes([0; 32]),
            tree,
            data: Vec::with_capacity(tree.outboard_size() as usize),
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
        let tmp_path = tmp.path.clone();
        let (hashed, written) = std::thread::scope(|s| {
            let writer = s.spawn(move || -> io::Result<()> {
                let mut flusher = Writeback::default();
                for block in rx {
                    out.write_all(&block)?;
                    flusher.wrote(&out, block.len() as u64);
                }
                out.sync_data()
            });
            let mut tee = Tee {
                src,
                tx: &tx,
                read: 0,
                progress,
            };
            let hashed = (|| {
                let root = bao_tree::io::sync::outboard(
                    BufReader::with_capacity(READ_BLOCK, &mut tee),
                    tree,
                    &mut ob,
                )?;
                // the source must end exactly where its size said
                let mut probe = [0u8; 1];
                let extra = tee.src.read(&mut probe)?;
                Ok::<_, io::Error>((root, tee.read + extra as u64))
            })();
            drop(tee);
            drop(tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("temp file writer panicked")));
            (hashed, written)
        });
        let (root, read) = match hashed {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(StoreError::Changed {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(StoreError::io(path)(e)),
        };
        written.map_err(StoreError::io(&tmp_path))?;
        if read != size {
            return Err(StoreError::Changed {
                path: path.to_path_buf(),
            });
        }
        ob.root = root;
        let h = Hash::from(root);
        if self.reuse(&h, claims)? {
            return Ok(h);
        }
        self.commit_in(h, size, BlobKind::Raw, tmp, &ob.data, claims)?;
        Ok(h)
    }

    /// Moves a synced temp data file into place with its outboard, then
    /// indexes it. Returns false if the blob was already complete.
    fn commit_in(
        &self,
        h: Hash,
        size: u64,
        kind: BlobKind,
        tmp: TempFile,
        outboard: &[u8],
        claims: &mut Claims,
    ) -> Result<bool> {
        if self.reuse(&h, claims)? {
            return Ok(false);
        }
        let data_path = self.blob_path(&h);
        let dir = data_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir().to_path_buf());
        let new_dir = !dir.exists();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        if !outboard.is_empty() {
            let (ob_tmp, mut f) = TempFile::create(self, "obao")?;
            f.write_all(outboard)
                .map_err(StoreError::io(&ob_tmp.path))?;
            f.sync_data().map_err(StoreError::io(&ob_tmp.path))?;
            let ob_path = self.outboard_path(&h);
            fs::rename(ob_tmp.kept(), &ob_path).map_err(StoreError::io(&ob_path))?;
        }
        let tmp_path = tmp.kept();
        fs::rename(&tmp_path, &data_path).map_err(StoreError::io(&data_path))?;
        sync_dir(&dir).map_err(StoreError::io(&dir))?;
        if new_dir && let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(StoreError::io(parent))?;
        }
        let previous = self.blob_record(&h)?;
        self.index_new(
            h,
            &BlobRecord {
                v: BLOB_V,
                size,
                kind,
                complete: true,
                root: previous.as_ref().is_some_and(|r| r.root),
                created_ms: now_ms(),
            },
            claims,
        )
    }

    /// Marks a blob as added by name, so `weft ls` lists it.
    pub fn mark_root(&self, h: &Hash) -> Result<()> {
        if let Some(mut rec) = self.blob_record(h)?
            && !rec.root
        {
            rec.root = true;
            self.put_blob_record(h, &rec)?;
        }
        Ok(())
    }

    /// Removes a blob's record and makes that durable, then removes its
    /// files: a crash in between leaves only orphan files, which GC removes,
    /// never a record without its bytes.
    pub(crate) fn remove_blob(&self, h: &Hash) -> Result<()> {
        self.inner.blobs.remove(super::records::hash_key(h))?;
        self.flush()?;
        self.unlink_blob(h)
    }

    /// Removes a blob's files (its record is gone, durably).
    pub(super) fn unlink_blob(&self, h: &Hash) -> Result<()> {
        #[cfg(test)]
        if let Some(check) = self
            .inner
            .unlink_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            check(h);
        }
        for p in [self.blob_path(h), self.outboard_path(h)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&p)(e)),
            }
        }
        Ok(())
    }

    /// Every blob reachable from `roots` through trees (roots included).
    /// Children missing locally are included too, but not descended into.
    pub fn closure(&self, roots: impl IntoIterator<Item = Hash>) -> Result<HashSet<Hash>> {
        let mut seen = HashSet::new();
        let mut stack: Vec<Hash> = roots.into_iter().collect();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            if self.is_tree(&h)? && self.has(&h)? {
                for e in self.read_tree(&h)?.entries() {
                    stack.push(e.hash);
                }
            }
        }
        Ok(seen)
    }
}
