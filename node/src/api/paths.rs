//! Paths on the daemon's host that import and export may touch: only under
//! `api.path_roots`.
//!
//! A requested path is made absolute by the client and checked here: its
//! parent is canonicalized (`..` and every symbolic link resolved), the
//! result must lie under a root, and that parent is then opened
//! (`O_PATH | O_NOFOLLOW`) and checked again through `/proc/self/fd`, so a
//! folder swapped for a link after the check is caught. The store then works
//! on `/proc/self/fd/N/NAME`, beneath the opened folder, and never resolves
//! the path from `/` again. The last component is not followed: the store
//! refuses a symbolic link there (import) or replaces the link itself
//! (export), never what it points to. An image archive, which its reader
//! opens by path, is opened here beneath the folder (`O_NOFOLLOW`) and read
//! through `/proc/self/fd/F`. Following links inside an imported tree
//! (`follow_symlinks`) is allowed only when `/` is a root, and a forced
//! export of a tree checks that no folder it writes into is a link.

use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;

use super::ApiError;

/// The folders import and export may use, canonical.
#[derive(Debug, Clone)]
pub struct PathRoots {
    roots: Vec<PathBuf>,
    /// As configured, for messages.
    shown: String,
}

/// A path checked to lie under a root, its parent folder held open.
pub(crate) struct Beneath {
    dir: OwnedFd,
    /// The target's name in `dir`.
    name: OsString,
    /// The canonical path, for messages.
    pub(crate) shown: PathBuf,
}

impl Beneath {
    /// The path the store uses: beneath the held folder, whatever happens
    /// to the names above it.
    pub(crate) fn store_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(&self.name)
    }

    /// Opens the target file for reading without following a link, for a
    /// reader that takes a path: `/proc/self/fd/F` reopens this very file.
    pub(crate) fn open_file(&self) -> Result<(OwnedFd, PathBuf), ApiError> {
        let c = std::ffi::CString::new(self.name.as_bytes())
            .map_err(|_| ApiError::bad_request("a NUL byte in the path"))?;
        // SAFETY: dir is an open fd and c a valid C string for the call.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ELOOP) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_input",
                    format!(
                        "{} is a symbolic link; name the file it points to",
                        self.shown.display()
                    ),
                ));
            }
            return Err(io(&self.shown, e));
        }
        // SAFETY: fd was just returned by openat(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = fs::File::from(fd);
        let meta = file.metadata().map_err(|e| io(&self.shown, e))?;
        if !meta.is_file() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_input",
                format!("{} is not a regular file", self.shown.display()),
            ));
        }
        let fd = OwnedFd::from(file);
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok((fd, path))
    }

    /// Writes store error text with the canonical path in place of the
    /// `/proc` one.
    pub(crate) fn explain(&self, mut e: ApiError) -> ApiError {
        let held = format!("/proc/self/fd/{}", self.dir.as_raw_fd());
        let parent = self.shown.parent().unwrap_or(Path::new("/"));
        e.detail = e.detail.replace(&held, &parent.display().to_string());
        e
    }
}

fn outside(path: &Path, roots: &PathRoots) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "outside_roots",
        format!(
            "{} is outside the folders this daemon may read and write (api.path_roots = {}); add a root in the node's config.toml or use a path under one",
            path.display(),
            roots.shown
        ),
    )
}

fn io(path: &Path, e: std::io::Error) -> ApiError {
    let status = if e.kind() == std::io::ErrorKind::NotFound {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    let code = if status == StatusCode::NOT_FOUND {
        "not_found"
    } else {
        "bad_input"
    };
    ApiError::new(status, code, format!("{}: {e}", path.display()))
}

/// Opens `path` (canonical, a folder) without following a last link.
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL byte in the path"))?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` beneath `dir` as a folder, creating it if missing, without
/// following a link.
fn open_child_dir(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::other("a NUL byte in the path"))?;
    // SAFETY: dir is an open fd and c a valid C string for the call.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where an open fd is now, as the kernel sees it.
fn fd_path(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl PathRoots {
    /// Canonicalizes the configured roots; each must be an absolute path to
    /// an existing folder.
    pub fn new(roots: &[PathBuf]) -> Result<PathRoots, String> {
        let shown = format!(
            "[{}]",
            roots
                .iter()
                .map(|r| format!("{:?}", r.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut out = Vec::new();
        for r in roots {
            if !r.is_absolute() {
                return Err(format!(
                    "api.path_roots entry {} is not an absolute path",
                    r.display()
                ));
            }
            let c = fs::canonicalize(r).map_err(|e| {
                format!(
                    "api.path_roots entry {}: {e}; create the folder or remove the entry",
                    r.display()
                )
            })?;
            if !c.is_dir() {
                return Err(format!(
                    "api.path_roots entry {} is not a folder",
                    r.display()
                ));
            }
            out.push(c);
        }
        Ok(PathRoots { roots: out, shown })
    }

    /// Whether `/` is a root: every path is allowed.
    pub fn everywhere(&self) -> bool {
        self.roots.iter().any(|r| r == Path::new("/"))
    }

    fn contains(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// Splits an absolute client path into its parent and last name.
    fn split(path: &Path) -> Result<(&Path, OsString), ApiError> {
        if !path.is_absolute() {
            return Err(ApiError::bad_request(format!(
                "path {} must be absolute: the daemon resolves it, not the client",
                path.display()
            )));
        }
        match (path.parent(), path.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => Ok((parent, name.to_os_string())),
            _ => Err(ApiError::bad_request(format!(
                "path {} must end in a file or folder name (not /, . or ..)",
                path.display()
            ))),
        }
    }

    /// Checks a path to import: it must exist under a root.
    pub(crate) fn for_import(&self, path: &Path, follow: bool) -> Result<Beneath, ApiError> {
        if follow && !self.everywhere() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "outside_roots",
                format!(
                    "follow_symlinks may lead out of api.path_roots = {}, so it is refused unless \"/\" is a root; import without it",
                    self.shown
                ),
            ));
        }
        let (parent, name) = Self::split(path)?;
        let parent = fs::canonicalize(parent).map_err(|e| io(path, e))?;
        let shown = parent.join(&name);
        if !self.contains(&shown) {
            return Err(outside(&shown, self));
        }
        let dir = Self::hold(&parent, path)?;
        // the last component itself: a link is refused by the store (not
        // followed); check now too, for a clear message
        if follow {
            let target = fs::canonicalize(&shown).map_err(|e| io(path, e))?;
            if !self.contains(&target) {
                return Err(outside(&target, self));
            }
        }
        Ok(Beneath { dir, name, shown })
    }

    /// Checks a path to export to: its nearest existing ancestor must lie
    /// under a root (or be one); folders missing below it are made here,
    /// one at a time beneath the held one.
    pub(crate) fn for_export(&self, path: &Path) -> Result<Beneath, ApiError> {
        let (parent, name) = Self::split(path)?;
        // the nearest ancestor that exists, and the names below it
        let mut base = parent.to_path_buf();
        let mut missing: Vec<OsString> = Vec::new();
        let base = loop {
            match fs::canonicalize(&base) {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match base.components().next_back() {
                        Some(Component::Normal(n)) => missing.push(n.to_os_string()),
                        _ => return Err(io(path, e)),
                    }
                    base.pop();
                }
                Err(e) => return Err(io(path, e)),
            }
        };
        missing.reverse();
        let mut shown = base.clone();
        for m in &missing {
            shown.push(m);
        }
        shown.push(&name);
        if !self.contains(&shown) {
            return Err(outside(&shown, self));
        }
        let mut dir = Self::hold(&base, path)?;
        for m in &missing {
            dir = open_child_dir(&dir, m).map_err(|e| io(path, e))?;
        }
        Ok(Beneath { dir, name, shown })
    }

    /// Opens a canonical folder and checks it is still where it was
    /// checked (no link swapped in above it meanwhile).
    fn hold(canonical: &Path, asked: &Path) -> Result<OwnedFd, ApiError> {
        let dir = open_dir(canonical).map_err(|e| io(asked, e))?;
        let now = fd_path(&dir).map_err(|e| io(asked, e))?;
        if now != canonical {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "changed",
                format!(
                    "{} changed while it was being checked; try again",
                    asked.display()
                ),
            ));
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(r: &[&Path]) -> PathRoots {
        PathRoots::new(&r.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>()).expect("roots")
    }

    #[test]
    fn inside_outside_dotdot_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical");
        let ok = base.join("ok");
        let no = base.join("no");
        fs::create_dir_all(ok.join("sub")).expect("mkdir");
        fs::create_dir_all(&no).expect("mkdir");
        fs::write(ok.join("f"), b"f").expect("write");
        fs::write(no.join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(&no, ok.join("link")).expect("symlink");
        let r = roots(&[&ok]);

        let b = r.for_import(&ok.join("f"), false).expect("inside");
        assert_eq!(fs::read(b.store_path()).expect("read"), b"f");
        assert_eq!(b.shown, ok.join("f"));
        for bad in [
            no.join("secret"),
            ok.join("../no/secret"),
            ok.join("sub/../../no/secret"),
            ok.join("link/secret"),
        ] {
            let e = r.for_import(&bad, false).err().expect("outside");
            assert_eq!(e.code, "outside_roots", "{}", bad.display());
            assert!(e.detail.contains("api.path_roots"), "{}", e.detail);
        }
        // a link as the last component is held, not followed: the store refuses it
        let b = r.for_import(&ok.join("link"), false).expect("held");
        assert!(
            fs::symlink_metadata(b.store_path())
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert!(r.for_import(&ok.join("link"), true).is_err());
        assert!(r.for_import(Path::new("relative"), false).is_err());
        assert!(r.for_import(Path::new("/"), false).is_err());

        // export: missing folders are made beneath the root, not elsewhere
        let b = r.for_export(&ok.join("new/deeper/out")).expect("export");
        assert!(ok.join("new/deeper").is_dir());
        assert_eq!(b.shown, ok.join("new/deeper/out"));
        fs::write(b.store_path(), b"x").expect("write beneath");
        assert_eq!(fs::read(ok.join("new/deeper/out")).expect("read"), b"x");
        let e = r
            .for_export(&ok.join("link/out"))
            .err()
            .expect("through a link");
        assert_eq!(e.code, "outside_roots");
        assert!(r.for_export(&no.join("out")).is_err());
        assert!(!no.join("out").exists());

        // everywhere
        let all = roots(&[Path::new("/")]);
        assert!(all.everywhere());
        all.for_import(&no.join("secret"), true).expect("anywhere");
        assert!(PathRoots::new(&[PathBuf::from("rel")]).is_err());
        assert!(PathRoots::new(&[base.join("missing")]).is_err());
    }
}
