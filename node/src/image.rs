//! Container images as artifacts.
//!
//! `weft image import ARCHIVE` unpacks a `docker save` or OCI image-layout
//! archive (see `weft_sandbox::image`: layers in order, whiteouts, no escape
//! from the root) and stores it as one tree:
//!
//! ```text
//! <image id>/
//!   config.json   entrypoint, cmd, env, workdir: the defaults a job's
//!                 container task starts from
//!   rootfs/       the root filesystem (files shared with other images are
//!                 stored once)
//! ```
//!
//! So an image travels through the mesh like any other artifact, its
//! defaults with it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use weft_protocol::{Hash, TagName};
use weft_sandbox::image::{ImageConfig, ImageError, UnpackOptions, unpack};

use crate::store::{AddOptions, Store, StoreError};

/// Name of the image's run configuration in its tree.
pub const CONFIG: &str = "config.json";
/// Name of the image's root filesystem in its tree.
pub const ROOTFS: &str = "rootfs";

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{archive}: {source}")]
    Unpack { archive: String, source: ImageError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the image config: {0}")]
    Config(String),
}

/// What an import stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    /// The image's id (a tree of `config.json` and `rootfs/`).
    pub id: Hash,
    pub rootfs: Hash,
    pub config: ImageConfig,
    pub files: u64,
    pub size: u64,
    pub tag: Option<TagName>,
}

/// Unpacks `archive` and stores it as an image tree; tags and pins it.
pub fn import(
    store: &Store,
    archive: &Path,
    tag: Option<&TagName>,
    allow_devices: bool,
) -> Result<Imported, ImportError> {
    let staging = store
        .tmp_dir()
        .join(format!("image-{:016x}", rand::random::<u64>()));
    let result = (|| {
        std::fs::create_dir_all(&staging).map_err(StoreError::io(&staging))?;
        let rootfs = staging.join(ROOTFS);
        let config = unpack(
            archive,
            &rootfs,
            &UnpackOptions {
                allow_devices,
                ..UnpackOptions::default()
            },
        )
        .map_err(|source| ImportError::Unpack {
            archive: archive.display().to_string(),
            source,
        })?;
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| ImportError::Config(e.to_string()))?;
        let config_path = staging.join(CONFIG);
        std::fs::write(&config_path, json).map_err(StoreError::io(&config_path))?;
        // pinned and tagged inside the import's critical section with GC
        let keep = crate::store::Keep {
            pin: Some(1),
            tag: tag.cloned(),
        };
        let added = store.add_path_kept(&staging, &AddOptions::default(), &keep, &())?;
        let tree = store.read_tree(&added.id)?;
        let rootfs_id = tree
            .get(ROOTFS)
            .map(|e| e.hash)
            .ok_or_else(|| ImportError::Config("the stored image has no rootfs".into()))?;
        store.flush()?;
        Ok(Imported {
            id: added.id,
            rootfs: rootfs_id,
            config,
            files: added.files,
            size: added.size,
            tag: tag.cloned(),
        })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Reads an image's run configuration from the store.
pub fn config(store: &Store, image: &Hash) -> Result<(Hash, ImageConfig), StoreError> {
    let tree = store.read_tree(image)?;
    let not_image =
        |what: &str| StoreError::NotFound(format!("{image} is not an image (no {what})"));
    let config_id = tree
        .get(CONFIG)
        .map(|e| e.hash)
        .ok_or_else(|| not_image(CONFIG))?;
    let rootfs_id = tree
        .get(ROOTFS)
        .map(|e| e.hash)
        .ok_or_else(|| not_image(ROOTFS))?;
    let p = store.blob_path(&config_id);
    let bytes = std::fs::read(&p).map_err(StoreError::io(&p))?;
    let config = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::NotFound(format!("{image}: unreadable {CONFIG}: {e}")))?;
    Ok((rootfs_id, config))
}

/// An image's root folder for tasks, exported once (hard links) under
/// `work_dir/images/<id>/rootfs` and its config; shared by tasks and
/// services.
pub fn rootfs(
    store: &Store,
    work_dir: &std::path::Path,
    image: &Hash,
) -> Result<(std::path::PathBuf, ImageConfig), StoreError> {
    static EXPORTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let base = work_dir.join("images").join(image.to_hex());
    let rootfs = base.join("rootfs");
    let ready = base.join("ready");
    let (rootfs_id, config) = config(store, image)?;
    let _one = EXPORTING.lock().unwrap_or_else(|p| p.into_inner());
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).map_err(StoreError::io(&base))?;
        store.export(
            &rootfs_id,
            &rootfs,
            crate::store::ExportOptions {
                force: false,
                link: true,
            },
            &(),
        )?;
        std::fs::write(&ready, b"").map_err(StoreError::io(&ready))?;
    }
    Ok((rootfs, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `config.json` stored in every image tree. A change here changes
    /// image ids: make it deliberately.
    #[test]
    fn golden_config_json() {
        let c = ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            workdir: Some("/".into()),
            user: None,
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
        };
        let json = String::from_utf8(serde_json::to_vec_pretty(&c).expect("json")).expect("utf8");
        assert_eq!(
            json,
            "{\n  \"entrypoint\": [],\n  \"cmd\": [\n    \"sh\"\n  ],\n  \"env\": [\n    \"PATH=/bin\"\n  ],\n  \"workdir\": \"/\",\n  \"architecture\": \"amd64\",\n  \"os\": \"linux\"\n}"
        );
    }
}
