//! Verification and garbage collection.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use bao_tree::BaoTree;
use bao_tree::io::outboard::PreOrderOutboard;
use serde::{Deserialize, Serialize};
use weft_protocol::Hash;

use super::records::BlobKind;
use super::{BLOCK_SIZE, Result, Store, StoreError};

/// One blob that failed verification.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyProblem {
    #[schema(value_type = String)]
    pub id: Hash,
    pub problem: String,
}

/// What a GC pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    /// Blobs kept because a pin, tag or running job reaches them.
    pub kept: u64,
    /// Indexed blobs removed.
    pub removed: u64,
    /// Bytes those held.
    pub freed_bytes: u64,
    /// Files in `blobs/` with no index entry (left by a crash), removed.
    pub orphan_files: u64,
    /// Abandoned partial blobs (fetches not resumed for a day) and stray
    /// files in `partial/`, removed.
    #[serde(default)]
    pub partials_removed: u64,
}

impl Store {
    /// Re-hashes every complete blob and its outboard; returns each problem.
    pub fn verify(&self) -> Result<Vec<VerifyProblem>> {
        let mut problems = Vec::new();
        let mut ids = HashSet::new();
        let mut trees = Vec::new();
        for item in self.blob_records() {
            let (id, rec) = item?;
            if !rec.complete {
                continue;
            }
            ids.insert(id);
            if let Some(problem) = self.verify_blob(&id, rec.size) {
                problems.push(VerifyProblem { id, problem });
                continue;
            }
            if rec.kind == BlobKind::Tree {
                trees.push(id);
            }
        }
        for id in trees {
            match self.read_tree(&id) {
                Ok(tree) => {
                    for e in tree.entries() {
                        if !ids.contains(&e.hash) && !self.has(&e.hash)? {
                            problems.push(VerifyProblem {
                                id,
                                problem: format!("entry {:?} ({}) is missing", e.name, e.hash),
                            });
                        }
                    }
                }
                Err(e) => problems.push(VerifyProblem {
                    id,
                    problem: e.to_string(),
                }),
            }
        }
        Ok(problems)
    }

    fn verify_blob(&self, id: &Hash, size: u64) -> Option<String> {
        let path = self.blob_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => return Some(format!("data file: {e}")),
        };
        match file.metadata() {
            Ok(m) if m.len() != size => {
                return Some(format!("data file is {} bytes, {} expected", m.len(), size));
            }
            Err(e) => return Some(format!("data file: {e}")),
            Ok(_) => {}
        }
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let mut ob = PreOrderOutboard {
            root: blake3::Hash::from_bytes([0; 32]),
            tree,
            data: Vec::with_capacity(tree.outboard_size() as usize),
        };
        let root = match bao_tree::io::sync::outboard(
            BufReader::with_capacity(1 << 20, file),
            tree,
            &mut ob,
        ) {
            Ok(r) => r,
            Err(e) => return Some(format!("reading data: {e}")),
        };
        if Hash::from(root) != *id {
            return Some(format!("content hashes to {}", Hash::from(root)));
        }
        if tree.outboard_size() > 0 {
            match fs::read(self.outboard_path(id)) {
                Ok(stored) if stored == ob.data => {}
                Ok(_) => return Some("outboard does not match the content".into()),
                Err(e) => return Some(format!("outboard: {e}")),
            }
        }
        None
    }

    /// Removes every blob not reachable from a pin, a live tag or one of
    /// `extra_roots` (running jobs' inputs), and blob files left without an
    /// index entry by a crash.
    pub fn gc(&self, extra_roots: &[Hash]) -> Result<GcReport> {
        let _guard = self
            .inner
            .gc_lock
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut roots: Vec<Hash> = extra_roots.to_vec();
        roots.extend(self.list_pins()?.into_iter().map(|p| p.id));
        roots.extend(self.list_tags()?.into_iter().map(|t| t.id));
        let live = self.closure(roots)?;
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for item in self.blob_records() {
            let (id, rec) = item?;
            if live.contains(&id) {
                report.kept += 1;
            } else {
                doomed.push((id, rec.size));
            }
        }
        // every record removal is durable before any file goes: a crash in
        // between leaves orphan files (removed below or by the next pass),
        // never a record whose bytes are gone
        for (id, _) in &doomed {
            self.inner.blobs.remove(super::records::hash_key(id))?;
        }
        self.flush()?;
        for (id, size) in doomed {
            self.unlink_blob(&id)?;
            report.removed += 1;
            report.freed_bytes += size;
        }
        report.orphan_files = self.remove_orphans()?;
        report.partials_removed = self.gc_partials()?;
        self.flush()?;
        tracing::info!(
            kept = report.kept,
            removed = report.removed,
            freed = report.freed_bytes,
            orphans = report.orphan_files,
            partials = report.partials_removed,
            "gc done"
        );
        Ok(report)
    }

    /// Deletes files under `blobs/` whose blob has no index entry.
    fn remove_orphans(&self) -> Result<u64> {
        let blobs = self.dir().join("blobs");
        let mut removed = 0;
        for shard in fs::read_dir(&blobs).map_err(StoreError::io(&blobs))? {
            let shard = shard.map_err(StoreError::io(&blobs))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(StoreError::io(&shard))? {
                let path = entry.map_err(StoreError::io(&shard))?.path();
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let indexed = match stem.parse::<Hash>() {
                    Ok(h) => self.blob_record(&h)?.is_some(),
                    Err(_) => false,
                };
                if !indexed {
                    remove_file_quiet(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

fn remove_file_quiet(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(p)(e)),
    }
}
