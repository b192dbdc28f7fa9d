//! A task's host folders and the disk quota that bounds what it writes.
//!
//! Layout of a task folder `DIR`:
//! - `DIR/inputs`: shown read-only at `/inputs`;
//! - `DIR/volume`: with a quota, a tmpfs of that size mounted `nosuid,nodev`
//!   (so a setuid or device file a task leaves there is inert on the host
//!   too), holding `outputs` (`/outputs`) and `tmp` (`/tmp`): the two share
//!   the quota, and a task that fills it gets `ENOSPC` inside the task
//!   instead of filling the node's disk. Without a quota (or when the node
//!   is not root) it is a plain folder and a note says so.
//!
//! tmpfs pages are memory (swappable): a quota is a bound on memory as well
//! as on disk, and for containers the pages a task writes are charged to its
//! memory cgroup, so `/outputs` and `/tmp` count against its memory limit.
//!
//! `outputs` and `tmp` belong to the ids the writer runs as: the mapped
//! root of a container in a user namespace, or the node for WASM tasks.
//! The tmpfs stays mounted until [`TaskFolders::release`] (or drop), after
//! the node has imported the outputs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::IdMap;

/// Space left below which a quota volume counts as full: a task that hit
/// `ENOSPC` leaves less than a few pages.
const FULL_MARGIN: u64 = 64 << 10;

/// A task's folders, with its quota volume mounted when one applies.
#[derive(Debug)]
pub struct TaskFolders {
    dir: PathBuf,
    inputs: PathBuf,
    outputs: PathBuf,
    tmp: PathBuf,
    /// The mounted tmpfs, until released.
    mounted: Option<PathBuf>,
    quota: Option<u64>,
    notes: Vec<String>,
}

/// Whether this process can mount quota volumes (it runs as root).
pub fn mount_quota_volume_supported() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl TaskFolders {
    /// Makes (or reuses) the folders of a task under `dir`.
    ///
    /// `quota`: bytes for `/outputs` and `/tmp` together; `None` or 0 for
    /// none. `owner`: the ids a container's root maps to, when the task is
    /// a container in a user namespace; `outputs` and `tmp` are given to
    /// it, mode 0700. A volume left mounted by an earlier run is unmounted
    /// first.
    pub fn prepare(
        dir: &Path,
        quota: Option<u64>,
        owner: Option<IdMap>,
    ) -> io::Result<TaskFolders> {
        let inputs = dir.join("inputs");
        let volume = dir.join("volume");
        let outputs = volume.join("outputs");
        let tmp = volume.join("tmp");
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::create_dir_all(&inputs)?;
        std::fs::create_dir_all(&volume)?;
        if is_mount_point(&volume)? {
            unmount(&volume)?;
        }
        let mut notes = Vec::new();
        let quota = quota.filter(|q| *q > 0);
        let mut mounted = None;
        if let Some(q) = quota {
            if mount_quota_volume_supported() {
                mount_tmpfs(&volume, q)?;
                mounted = Some(volume.clone());
            } else {
                notes.push(
                    "disk quota not applied: the node does not run as root (/outputs and /tmp are plain folders)"
                        .to_string(),
                );
            }
        }
        let mut folders = TaskFolders {
            dir: dir.to_path_buf(),
            inputs,
            outputs,
            tmp,
            quota: mounted.as_ref().and(quota),
            mounted,
            notes,
        };
        for d in [folders.outputs.clone(), folders.tmp.clone()] {
            if let Err(e) = make_owned_dir(&d, owner) {
                folders.release();
                return Err(e);
            }
        }
        Ok(folders)
    }

    /// The task folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shown read-only at `/inputs`.
    pub fn inputs(&self) -> &Path {
        &self.inputs
    }

    /// Shown writable at `/outputs`.
    pub fn outputs(&self) -> &Path {
        &self.outputs
    }

    /// Shown writable at `/tmp`.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The quota in force: `Some` only while a quota volume is mounted.
    /// Give it to [`crate::Limits::disk_quota`].
    pub fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// What could not be applied, for the task's outcome.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Unmounts the quota volume (its contents go with it). Call after the
    /// outputs have been imported; dropping does the same.
    pub fn release(&mut self) {
        if let Some(v) = self.mounted.take() {
            self.quota = None;
            if let Err(e) = unmount(&v) {
                warn!(volume = %v.display(), error = %e, "cannot unmount a task's quota volume");
            }
        }
    }
}

impl Drop for TaskFolders {
    fn drop(&mut self) {
        self.release();
    }
}

/// Unmounts every quota volume left mounted under `dir` (by a node that
/// stopped mid-task), so the folder can be removed.
pub fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(dir) = std::path::absolute(dir) else {
        return;
    };
    // Field 5 is the mount point, with spaces and the like octal-escaped.
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&dir) && p != &dir)
        .collect();
    // deepest first
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = unmount(&p) {
            warn!(volume = %p.display(), error = %e, "cannot unmount a volume left by an earlier run");
        }
    }
}

fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Whether the quota volume holding `path` is full: less than a few pages
/// or no inodes left.
pub(crate) fn volume_full(path: &Path) -> bool {
    let Ok(st) = statvfs(path) else {
        return false;
    };
    // `fsblkcnt_t` and `c_ulong` are narrower than u64 on some targets.
    #[allow(clippy::useless_conversion)]
    let (avail, size, files) = (
        u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)),
        u64::from(st.f_blocks).saturating_mul(u64::from(st.f_frsize)),
        u64::from(st.f_favail),
    );
    avail < FULL_MARGIN.min(size / 16).max(4096) || files == 0
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` points to
    // writable memory for one `statvfs`, filled on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `statvfs` returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mount_point(p: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::symlink_metadata(p)?;
    let parent = std::fs::symlink_metadata(p.join(".."))?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}

fn mount_tmpfs(at: &Path, quota: u64) -> io::Result<()> {
    let target = cstr(at)?;
    // Inodes bounded too, so a task cannot spend memory on empty files.
    let inodes = (quota / 1024).clamp(4096, 1 << 22);
    let data = CString::new(format!(
        "size={}k,nr_inodes={inodes},mode=0700,uid=0,gid=0",
        quota.div_ceil(1024)
    ))
    .map_err(io::Error::other)?;
    let source = c"weft-task";
    let fstype = c"tmpfs";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot mount the task's quota volume on {}: {e}",
                at.display()
            ),
        ));
    }
    Ok(())
}

fn unmount(at: &Path) -> io::Result<()> {
    let target = cstr(at)?;
    // SAFETY: `target` is NUL-terminated and outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        // Something still holds it open: detach now, freed when let go.
        // SAFETY: as above.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(io::Error::last_os_error());
    }
    Err(e)
}

/// Creates `d` (a folder already there is kept), mode 0700, owned by the
/// mapped root when there is one.
fn make_owned_dir(d: &Path, owner: Option<IdMap>) -> io::Result<()> {
    match std::fs::symlink_metadata(d) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => std::fs::remove_file(d)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if !d.is_dir() {
        std::fs::create_dir(d)?;
    }
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    let (uid, gid) = match owner {
        Some(m) => (m.host_base, m.host_base),
        None => (0, 0),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(d, Some(uid), Some(gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_made_and_reused_without_a_quota() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("t");
        let f = TaskFolders::prepare(&dir, None, None).expect("prepare");
        assert!(f.inputs().is_dir() && f.outputs().is_dir() && f.tmp().is_dir());
        assert_eq!(f.quota(), None);
        assert!(f.outputs().starts_with(&dir) && f.tmp().starts_with(&dir));
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(f);
        let f = TaskFolders::prepare(&dir, Some(0), None).expect("again");
        assert_eq!(f.quota(), None, "0 means no quota");
    }
}
