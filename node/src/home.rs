//! The node's home directory: where its store, identity, config and runtime
//! files live, and the small helpers for writing files there atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// A weft home directory (`--home`, `WEFT_HOME`, or `~/.weft`).
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

/// Why the home or something in it could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("no home directory: pass --home DIR or set WEFT_HOME")]
    NoHome,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a weft identity ({why}); move it away to let weft create a new one")]
    BadIdentity { path: PathBuf, why: String },
    #[error(
        "{path}: the API token may be read by other users (mode {mode:03o}); run `chmod 600 {path}` (or delete the file to let the daemon make a new token)"
    )]
    TokenMode { path: PathBuf, mode: u32 },
    #[error(
        "{path}: the API token belongs to uid {owner}, not to uid {me} that runs this daemon; `chown` it to that user or delete it to let the daemon make a new token"
    )]
    TokenOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{path}: not an API token ({why}); delete it to let the daemon make a new token")]
    BadToken { path: PathBuf, why: String },
    #[error(
        "{path}: cannot read the API token (permission denied); run the command as the user that runs the daemon, or set api.token in config.toml"
    )]
    TokenUnreadable { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Home {
    /// The home named by the flag, else `WEFT_HOME`, else `~/.weft`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home, HomeError> {
        let root = match flag {
            Some(p) => p,
            None => match std::env::var_os("WEFT_HOME") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    let home = std::env::var_os("HOME").ok_or(HomeError::NoHome)?;
                    PathBuf::from(home).join(".weft")
                }
            },
        };
        Ok(Home::at(root))
    }

    /// The home at `root`, which need not exist yet.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the home directory if missing.
    /// Creates the home if needed and keeps it private (0700): it holds the
    /// node's keys, its token, its store and its tasks' folders.
    pub fn ensure(&self) -> Result<(), HomeError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let meta = fs::metadata(&self.root).map_err(io_err(&self.root))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&self.root))?;
        }
        Ok(())
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// Holds the running daemon's API address.
    pub fn api_file(&self) -> PathBuf {
        self.root.join("api")
    }

    /// Holds the ingress's URL while the daemon runs.
    pub fn ingress_file(&self) -> PathBuf {
        self.root.join("ingress")
    }

    /// Holds the S3 gateway's URL while the daemon runs.
    pub fn s3_file(&self) -> PathBuf {
        self.root.join("s3")
    }

    /// The S3 gateway's access keys (mode 0600).
    pub fn s3_keys_path(&self) -> PathBuf {
        self.root.join("s3-keys")
    }

    /// Multipart uploads in progress on this node's S3 gateway.
    pub fn s3_uploads_dir(&self) -> PathBuf {
        self.root.join("s3-uploads")
    }

    /// Holds the API token (mode 0600): every mutating API request, and
    /// every read but the OpenAPI document and metrics, must carry it.
    pub fn api_token_path(&self) -> PathBuf {
        self.root.join("api-token")
    }

    /// Held locked by the running daemon.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// Scratch space for running tasks.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Loads the node's Ed25519 key, creating it (mode 0600) on first use.
    pub fn identity(&self) -> Result<Keypair, HomeError> {
        let path = self.identity_path();
        match fs::read(&path) {
            Ok(bytes) => {
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| HomeError::BadIdentity {
                    path: path.clone(),
                    why: e.to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure()?;
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|e| HomeError::BadIdentity {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
                // another process may have won the race; read back what is there
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| HomeError::BadIdentity {
                    path,
                    why: e.to_string(),
                })
            }
            Err(e) => Err(HomeError::Io { path, source: e }),
        }
    }
}

/// Bytes of randomness in a new API token (written as hex).
const API_TOKEN_BYTES: usize = 32;

/// The longest token file read back (a token from elsewhere may be longer
/// than the ones weft makes).
const API_TOKEN_MAX: usize = 1024;

impl Home {
    /// The API token as a client reads it: the token file's content, or
    /// `None` when there is no file (no daemon has made one). Clients do not
    /// check the file's mode: the daemon refuses to start on a loose one.
    pub fn api_token(&self) -> Result<Option<String>, HomeError> {
        let path = self.api_token_path();
        match fs::read(&path) {
            Ok(bytes) => parse_token(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(HomeError::TokenUnreadable { path })
            }
            Err(e) => Err(HomeError::Io { path, source: e }),
        }
    }

    /// The API token as the daemon loads it: made on first use (random,
    /// written once with `O_EXCL` and mode 0600, then linked into place so no
    /// reader sees it half written); an existing file must be a regular file
    /// owned by this process's user that no one else may read, as ssh asks
    /// of a private key.
    pub fn ensure_api_token(&self) -> Result<String, HomeError> {
        let path = self.api_token_path();
        match read_private(&path) {
            Err(HomeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        self.ensure()?;
        let token = hex::encode(rand::random::<[u8; API_TOKEN_BYTES]>());
        let tmp = self
            .root
            .join(format!(".api-token.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let made = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()?;
            // link(2) never replaces: a token another process made first wins
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            linked?;
            sync_dir(&self.root)
        })();
        match made {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_private(&path),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(HomeError::Io { path, source: e })
            }
        }
    }
}

/// Reads a token file that must be private to this process's user.
fn read_private(path: &Path) -> Result<String, HomeError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                HomeError::BadToken {
                    path: path.to_path_buf(),
                    why: "a symbolic link".into(),
                }
            } else {
                HomeError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(HomeError::BadToken {
            path: path.to_path_buf(),
            why: "not a regular file".into(),
        });
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(HomeError::TokenOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HomeError::TokenMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut f)
        .take(API_TOKEN_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    parse_token(path, &bytes)
}

/// A token file holds one line of visible ASCII.
fn parse_token(path: &Path, bytes: &[u8]) -> Result<String, HomeError> {
    let bad = |why: &str| HomeError::BadToken {
        path: path.to_path_buf(),
        why: why.into(),
    };
    if bytes.len() > API_TOKEN_MAX {
        return Err(bad("longer than 1024 bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not text"))?;
    let token = text.strip_suffix('\n').unwrap_or(text);
    if token.len() < 16 {
        return Err(bad("shorter than 16 characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("holds spaces, line breaks or control characters"));
    }
    Ok(token.to_string())
}

/// Writes `bytes` to `path` through a temp file, fsync and rename, so readers
/// see the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path().join("h"));
        let a = home.identity().expect("create");
        let b = home.identity().expect("load");
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(home.identity_path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn api_token_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path().join("h"));
        assert_eq!(home.api_token().expect("none yet"), None);
        let a = home.ensure_api_token().expect("create");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let b = home.ensure_api_token().expect("load");
        assert_eq!(a, b);
        assert_eq!(home.api_token().expect("read"), Some(a.clone()));
        let meta = fs::metadata(home.api_token_path()).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // and the home around it is private
        let meta = fs::metadata(home.root()).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        // the file is the token and a newline
        assert_eq!(
            fs::read(home.api_token_path()).expect("read"),
            format!("{a}\n").into_bytes()
        );
        // no temp file is left behind
        let names: Vec<_> = fs::read_dir(home.root())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api-token")]);
    }

    #[test]
    fn api_token_file_format_golden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        let golden = b"8f0c2a6e4b1d3957a0e8c6b4d2f1a3957e0c8a6b4d2f1e3c5a7b9d0e2f4a6c8b\n";
        fs::write(home.api_token_path(), golden).expect("write");
        fs::set_permissions(home.api_token_path(), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let want = "8f0c2a6e4b1d3957a0e8c6b4d2f1a3957e0c8a6b4d2f1e3c5a7b9d0e2f4a6c8b";
        assert_eq!(home.ensure_api_token().expect("daemon"), want);
        assert_eq!(home.api_token().expect("client").as_deref(), Some(want));
        // a token without the newline, as an editor may leave it
        fs::write(home.api_token_path(), &golden[..64]).expect("write");
        assert_eq!(home.ensure_api_token().expect("no newline"), want);
        for bad in [
            &b"short\n"[..],
            b"with a space in the middle of it\n",
            b"two\nlines-and-more-text\n",
        ] {
            fs::write(home.api_token_path(), bad).expect("write");
            let e = home.ensure_api_token().expect_err("bad token");
            assert!(matches!(e, HomeError::BadToken { .. }), "{e}");
        }
    }

    #[test]
    fn loose_or_odd_token_files_are_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        home.ensure_api_token().expect("create");
        let path = home.api_token_path();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let e = home.ensure_api_token().expect_err("loose mode");
            assert!(matches!(e, HomeError::TokenMode { .. }), "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        home.ensure_api_token().expect("0400 is private");
        // a symbolic link in its place is not followed
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(&path, &elsewhere).expect("move");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
        let e = home.ensure_api_token().expect_err("symlink");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn corrupt_identity_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        fs::write(home.identity_path(), b"junk").expect("write");
        let err = home.identity().expect_err("corrupt");
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
