//! Exporting blobs and trees to the file system.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use weft_protocol::{EntryKind, Hash};

use super::import::Progress;
use super::{Result, Store, StoreError};

/// How an export treats what is already at the destination.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Replace an existing file, or fill an existing non-empty directory.
    pub force: bool,
    /// Hard-link blob files instead of copying them (the files stay
    /// read-only, so a task can read but not change the store).
    pub link: bool,
}

impl Store {
    /// Lays out a task's or replica's inputs: each artifact exported
    /// (read-only hard links) at its checked path under `inputs`, written
    /// fresh, with every folder on the way one this export made, so nothing
    /// is replaced and nothing outside `inputs` is touched.
    pub fn export_inputs(
        &self,
        inputs: &Path,
        list: &[(Hash, weft_protocol::job::InputPath)],
    ) -> Result<()> {
        for (id, path) in list {
            let rel = path.relative();
            let dest = if rel.is_empty() {
                inputs.to_path_buf()
            } else {
                inputs.join(rel)
            };
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(StoreError::io(parent))?;
                let real = parent.canonicalize().map_err(StoreError::io(parent))?;
                let root = inputs.canonicalize().map_err(StoreError::io(inputs))?;
                if !real.starts_with(&root) {
                    return Err(StoreError::Escapes { path: dest });
                }
            }
            self.export(
                id,
                &dest,
                ExportOptions {
                    force: false,
                    link: true,
                },
                &(),
            )?;
        }
        Ok(())
    }

    /// Bytes of content below `h` (a file's size or a tree's total).
    pub fn content_size(&self, h: &Hash) -> Result<u64> {
        if self.is_tree(h)? {
            Ok(self.read_tree(h)?.total_size())
        } else {
            self.blob_size(h)
        }
    }

    /// Writes the file or tree `h` to `dest`.
    pub fn export(
        &self,
        h: &Hash,
        dest: &Path,
        opts: ExportOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.start(self.content_size(h)?);
        if self.is_tree(h)? {
            match fs::symlink_metadata(dest) {
                Ok(m) if m.is_dir() => {
                    let empty = fs::read_dir(dest)
                        .map_err(StoreError::io(dest))?
                        .next()
                        .is_none();
                    if !empty && !opts.force {
                        return Err(StoreError::Exists {
                            path: dest.to_path_buf(),
                        });
                    }
                }
                Ok(_) => {
                    return Err(StoreError::Exists {
                        path: dest.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(dest).map_err(StoreError::io(dest))?;
                }
                Err(e) => return Err(StoreError::io(dest)(e)),
            }
            self.export_tree(h, dest, opts, progress)
        } else {
            if fs::symlink_metadata(dest).is_ok() && !opts.force {
                return Err(StoreError::Exists {
                    path: dest.to_path_buf(),
                });
            }
            self.export_file(h, dest, false, opts, progress)
        }
    }

    fn export_tree(
        &self,
        h: &Hash,
        dir: &Path,
        opts: ExportOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let tree = self.read_tree(h)?;
        for e in tree.entries() {
            // names were validated when the manifest was decoded: one component each
            let path = dir.join(&e.name);
            match e.kind {
                EntryKind::Tree => {
                    match fs::create_dir(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && opts.force => {}
                        Err(err) => return Err(StoreError::io(&path)(err)),
                    }
                    self.export_tree(&e.hash, &path, opts, progress)?;
                }
                EntryKind::File => {
                    self.export_file(&e.hash, &path, e.executable, opts, progress)?;
                }
            }
        }
        Ok(())
    }

    fn export_file(
        &self,
        h: &Hash,
        dest: &Path,
        executable: bool,
        opts: ExportOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let size = self.blob_size(h)?;
        let src = self.blob_path(h);
        if opts.link {
            if opts.force {
                let _ = fs::remove_file(dest);
            }
            // a link shares the blob's inode, so an executable entry needs
            // the blob itself executable (still read-only)
            if executable {
                let mode = fs::metadata(&src)
                    .map_err(StoreError::io(&src))?
                    .permissions()
                    .mode();
                if mode & 0o111 == 0 {
                    fs::set_permissions(&src, fs::Permissions::from_mode(0o555))
                        .map_err(StoreError::io(&src))?;
                }
            }
            fs::hard_link(&src, dest).map_err(StoreError::io(dest))?;
            progress.advance(size);
            return Ok(());
        }
        let tmp = temp_sibling(dest);
        let result = (|| -> io::Result<()> {
            let mut input = fs::File::open(&src)?;
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if executable { 0o755 } else { 0o644 })
                .open(&tmp)?;
            let copied = io::copy(&mut input, &mut out)?;
            if copied != size {
                return Err(io::Error::other(format!(
                    "blob {h} is {copied} bytes on disk, {size} expected; run `weft store verify`"
                )));
            }
            out.flush()?;
            out.set_permissions(fs::Permissions::from_mode(if executable {
                0o755
            } else {
                0o644
            }))?;
            fs::rename(&tmp, dest)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(dest)(e));
        }
        progress.advance(size);
        Ok(())
    }
}

fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.weft-{:08x}.tmp", rand::random::<u32>()))
}
