//! Importing files and directories.
//!
//! A file is read once: each block read is handed to a writer thread (the
//! temp file) while this thread hashes it into the outboard, so hashing and
//! writing overlap. A directory is scanned first, so a symlink, special file
//! or bad name anywhere is reported before anything is written; if a read
//! fails later, every blob this import created is removed again.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bao_tree::BaoTree;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::CreateOutboard;
use serde::Serialize;
use weft_protocol::{EntryKind, Hash, Tree, TreeEntry, tree::validate_name};

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
#[derive(Debug, Clone, Serialize)]
pub struct AddOutcome {
    pub id: Hash,
    pub kind: &'static str,
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
        path: PathBuf,
        size: u64,
        executable: bool,
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

fn file_kind(ft: &fs::FileType) -> &'static str {
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

impl Store {
    /// Imports a file or a directory tree; the result is marked as a root
    /// (listed by `weft ls`).
    pub fn add_path(
        &self,
        path: &Path,
        opts: &AddOptions,
        progress: &dyn Progress,
    ) -> Result<AddOutcome> {
        let plan = scan(path, opts.follow_symlinks, &mut Vec::new())?;
        progress.start(plan.bytes());
        let _guard = self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut created = Vec::new();
        let mut files = 0;
        let result = self.import_plan(&plan, opts, progress, &mut created, &mut files);
        match result {
            Ok((id, kind, size)) => {
                self.mark_root(&id)?;
                self.flush()?;
                Ok(AddOutcome {
                    id,
                    kind: match kind {
                        EntryKind::File => "file",
                        EntryKind::Tree => "tree",
                    },
                    size,
                    files,
                    new_blobs: created.len() as u64,
                })
            }
            Err(e) => {
                self.roll_back(&created);
                Err(e)
            }
        }
    }

    fn roll_back(&self, created: &[Hash]) {
        for h in created {
            if let Err(e) = self.remove_blob(h) {
                tracing::warn!(id = %h, error = %e, "could not roll back blob");
            }
        }
        let _ = self.flush();
    }

    fn import_plan(
        &self,
        plan: &Plan,
        opts: &AddOptions,
        progress: &dyn Progress,
        created: &mut Vec<Hash>,
        files: &mut u64,
    ) -> Result<(Hash, EntryKind, u64)> {
        match plan {
            Plan::File { path, size, .. } => {
                let src = open_source(path, opts.follow_symlinks)?;
                let (h, new) = self.import_file(path, src, *size, progress)?;
                if new {
                    created.push(h);
                }
                *files += 1;
                Ok((h, EntryKind::File, *size))
            }
            Plan::Dir { children } => {
                let mut entries = Vec::with_capacity(children.len());
                for (name, child) in children {
                    let (hash, kind, size) =
                        self.import_plan(child, opts, progress, created, files)?;
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
                let (h, new) = self.add_bytes(&bytes, BlobKind::Tree)?;
                if new {
                    created.push(h);
                }
                Ok((h, EntryKind::Tree, size))
            }
        }
    }

    /// Stores `bytes` as one blob; returns its id and whether it was new.
    pub fn add_bytes(&self, bytes: &[u8], kind: BlobKind) -> Result<(Hash, bool)> {
        let ob = PreOrderOutboard::<Vec<u8>>::create_sized(bytes, bytes.len() as u64, BLOCK_SIZE)
            .map_err(StoreError::io(Path::new("<memory>")))?;
        let h = Hash::from(ob.root);
        if self.has(&h)? {
            return Ok((h, false));
        }
        let (tmp, mut f) = TempFile::create(self, "data")?;
        f.write_all(bytes).map_err(StoreError::io(&tmp.path))?;
        f.sync_data().map_err(StoreError::io(&tmp.path))?;
        let new = self.commit(h, bytes.len() as u64, kind, tmp, &ob.data)?;
        Ok((h, new))
    }

    /// Stores a file read from `src` (of `size` bytes, named `path` in errors).
    fn import_file(
        &self,
        path: &Path,
        mut src: File,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(Hash, bool)> {
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
            return self.add_bytes(&bytes, BlobKind::Raw);
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
                for block in rx {
                    out.write_all(&block)?;
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
        if self.has(&h)? {
            return Ok((h, false));
        }
        let new = self.commit(h, size, BlobKind::Raw, tmp, &ob.data)?;
        Ok((h, new))
    }

    /// Moves a synced temp data file into place with its outboard, then
    /// indexes it. Returns false if the blob was already complete.
    pub(crate) fn commit(
        &self,
        h: Hash,
        size: u64,
        kind: BlobKind,
        tmp: TempFile,
        outboard: &[u8],
    ) -> Result<bool> {
        if self.has(&h)? {
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
        self.put_blob_record(
            &h,
            &BlobRecord {
                v: BLOB_V,
                size,
                kind,
                complete: true,
                root: previous.as_ref().is_some_and(|r| r.root),
                created_ms: now_ms(),
            },
        )?;
        Ok(true)
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

    /// Removes a blob's record, then its files.
    pub(crate) fn remove_blob(&self, h: &Hash) -> Result<()> {
        self.inner.blobs.remove(super::records::hash_key(h))?;
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
