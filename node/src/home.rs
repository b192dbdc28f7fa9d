//! The node's home directory: where its store, identity, config and runtime
//! files live, and the small helpers for writing files there atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    pub fn ensure(&self) -> Result<(), HomeError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))
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
    use std::os::unix::fs::PermissionsExt;

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
    fn corrupt_identity_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        fs::write(home.identity_path(), b"junk").expect("write");
        let err = home.identity().expect_err("corrupt");
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
