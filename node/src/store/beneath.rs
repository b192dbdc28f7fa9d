//! Opening paths beneath a directory handle, never following a link.
//!
//! Used to read what a task left in its outputs folder, which is hostile:
//! the folder is opened once, and every path below it is resolved by the
//! kernel relative to that handle with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so no
//! symlink (in any component, swapped in at any moment), no `..` and no mount
//! point leads anywhere, let alone out. Where the kernel has no `openat2`
//! (before Linux 5.6) each component is opened in turn with
//! `openat(O_NOFOLLOW)` from the handle and checked to be on the folder's
//! device, which holds the same guarantee one step at a time.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel answered `openat2` with `ENOSYS`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A directory opened once; paths below it are opened relative to it.
pub(crate) struct Beneath {
    root: OwnedFd,
    /// The folder's device: nothing below it may be on another.
    dev: u64,
    /// The directory's path, for messages only: nothing is opened by it.
    path: PathBuf,
    /// Whether to try `openat2` (tests turn it off to check the fallback).
    openat2: bool,
}

/// What a path below the handle is, found without following it.
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Special(&'static str),
}

impl Beneath {
    /// Opens the directory `path` (itself not a link).
    pub(crate) fn open(path: &Path) -> io::Result<Beneath> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let dev = std::os::unix::fs::MetadataExt::dev(&dir.metadata()?);
        Ok(Beneath {
            root: dir.into(),
            dev,
            path: path.to_path_buf(),
            openat2: !NO_OPENAT2.load(Ordering::Relaxed),
        })
    }

    /// Like [`Beneath::open`], walking with `openat(O_NOFOLLOW)` only.
    #[cfg(test)]
    pub(crate) fn open_without_openat2(path: &Path) -> io::Result<Beneath> {
        let mut b = Beneath::open(path)?;
        b.openat2 = false;
        Ok(b)
    }

    /// The directory's path (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as a path on the host, for messages.
    pub(crate) fn shown(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// Opens `rel` (relative; empty for the directory itself) with `flags`,
    /// which gain `O_NOFOLLOW | O_CLOEXEC`. A symlink anywhere on the way is
    /// `ELOOP`; a path that would leave the directory is `EXDEV`.
    pub(crate) fn open_at(&self, rel: &Path, flags: libc::c_int) -> io::Result<File> {
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let parts = components(rel)?;
        if self.openat2 {
            match self.openat2(&parts, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.walk(&parts, flags)
    }

    /// What `rel` is, without following it.
    pub(crate) fn kind(&self, rel: &Path) -> io::Result<(Kind, std::fs::Metadata)> {
        let f = self.open_at(rel, libc::O_PATH)?;
        let meta = f.metadata()?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Special(super::import::file_kind(&ft))
        };
        Ok((kind, meta))
    }

    /// The first component of `rel` that is a symlink, when opening `rel`
    /// failed with `ELOOP` (for the message).
    pub(crate) fn first_symlink(&self, rel: &Path) -> Option<PathBuf> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            match self.kind(&prefix) {
                Ok((Kind::Symlink, _)) => return Some(prefix),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// The names in the directory `rel` (without `.` and `..`).
    pub(crate) fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let dir = self.open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        read_names(dir)
    }

    fn openat2(&self, parts: &[CString], flags: libc::c_int) -> io::Result<File> {
        let mut joined = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                joined.push(b'/');
            }
            joined.extend_from_slice(p.as_bytes());
        }
        if joined.is_empty() {
            joined.push(b'.');
        }
        let path = CString::new(joined).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is a plain C struct; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV;
        // SAFETY: the root fd is open for the life of `self`, `path` is a
        // NUL-terminated string and `how` a valid open_how whose size is
        // passed; the kernel only reads them.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    /// One `openat(O_NOFOLLOW)` per component: every directory on the way is
    /// a real directory (a link is `ELOOP`), and no component is `..`.
    fn walk(&self, parts: &[CString], flags: libc::c_int) -> io::Result<File> {
        let Some((last, dirs)) = parts.split_last() else {
            return openat(self.root.as_raw_fd(), c".", flags);
        };
        let mut at: Option<File> = None;
        for d in dirs {
            let fd = at.as_ref().map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
            // O_PATH | O_NOFOLLOW opens a link itself, which is then refused
            let next = openat(fd, d, libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)?;
            let meta = next.metadata()?;
            if meta.file_type().is_symlink() {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            if !meta.file_type().is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            self.same_device(&meta)?;
            at = Some(next);
        }
        let fd = at.as_ref().map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
        let f = openat(fd, last, flags)?;
        let meta = f.metadata()?;
        if meta.file_type().is_dir() {
            self.same_device(&meta)?;
        }
        Ok(f)
    }

    /// `EXDEV` for a folder on another file system (a mount point). Only
    /// folders are compared: overlayfs may report a file's own layer.
    fn same_device(&self, meta: &std::fs::Metadata) -> io::Result<()> {
        if std::os::unix::fs::MetadataExt::dev(meta) == self.dev {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EXDEV))
        }
    }
}

/// The components of a relative path, each a plain name.
fn components(rel: &Path) -> io::Result<Vec<CString>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => out.push(
                CString::new(name.as_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            ),
            Component::CurDir => {}
            // `..` or an absolute path would leave the directory
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
        }
    }
    Ok(out)
}

fn openat(dir: libc::c_int, name: &std::ffi::CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: `dir` is an open descriptor borrowed for the call and `name` a
    // NUL-terminated string; openat only reads them.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Every name in an open directory, but `.` and `..`.
fn read_names(dir: File) -> io::Result<Vec<OsString>> {
    let fd = dir.into_raw_fd();
    // SAFETY: fd is an open directory descriptor we own; on success
    // fdopendir takes it over (closedir below closes it).
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the descriptor is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it tells end of stream
        // (NULL, errno 0) from an error (NULL, errno set).
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid DIR* until closedir below.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir64 returned a valid entry whose d_name is
        // NUL-terminated; it is copied before the next call.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes.to_vec()));
        }
    };
    // SAFETY: `stream` came from fdopendir and is closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn both(dir: &Path) -> [Beneath; 2] {
        [
            Beneath::open(dir).expect("open"),
            Beneath::open_without_openat2(dir).expect("open"),
        ]
    }

    #[test]
    fn a_symlink_in_any_component_is_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("etc")).expect("mkdir");
        std::fs::write(outside.join("etc/passwd"), b"host secret").expect("write");
        let root = dir.path().join("outputs");
        std::fs::create_dir_all(root.join("real")).expect("mkdir");
        std::fs::write(root.join("real/file"), b"ok").expect("write");
        symlink("../outside", root.join("up")).expect("symlink");
        symlink(&outside, root.join("abs")).expect("symlink");
        symlink("file", root.join("real/same-dir")).expect("symlink");
        for b in both(&root) {
            for rel in ["up/etc/passwd", "abs/etc/passwd", "up", "real/same-dir"] {
                let err = b
                    .open_at(Path::new(rel), libc::O_RDONLY)
                    .expect_err("a link was followed");
                assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{rel}: {err}");
            }
            assert_eq!(
                b.first_symlink(Path::new("up/etc/passwd")),
                Some(PathBuf::from("up"))
            );
            assert!(matches!(
                b.kind(Path::new("abs")).expect("kind").0,
                Kind::Symlink
            ));
            for rel in ["../outside/etc/passwd", "/etc/passwd", "real/../../outside"] {
                let err = b
                    .open_at(Path::new(rel), libc::O_RDONLY)
                    .expect_err("left the directory");
                assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{rel}: {err}");
            }
            let mut got = String::new();
            std::io::Read::read_to_string(
                &mut b
                    .open_at(Path::new("real/file"), libc::O_RDONLY)
                    .expect("plain file"),
                &mut got,
            )
            .expect("read");
            assert_eq!(got, "ok");
            let mut names = b.read_dir(Path::new("")).expect("list");
            names.sort();
            assert_eq!(names, ["abs", "real", "up"]);
        }
    }

    #[test]
    fn a_mount_point_below_the_folder_is_not_crossed() {
        // SAFETY: geteuid has no preconditions
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("outputs");
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs here");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&mnt);
        std::fs::write(mnt.join("f"), b"other fs").expect("write");
        for b in both(&root) {
            for rel in ["mnt", "mnt/f", "mnt/."] {
                let err = b
                    .open_at(Path::new(rel), libc::O_RDONLY)
                    .expect_err("crossed a mount");
                assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{rel}: {err}");
            }
        }
    }
}
