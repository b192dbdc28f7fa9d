//! Container images: unpacking a `docker save` archive or an OCI
//! image-layout archive into a root folder of plain files.
//!
//! Goals: apply the image's layers in order, honouring whiteouts
//! (`.wh.NAME` removes NAME from lower layers) and opaque folders
//! (`.wh..wh..opq` hides a folder's lower contents); check every blob
//! against its digest (sha256 of the OCI blob, and of the uncompressed
//! layer against the config's `diff_ids`); refuse entries that would escape
//! the root (`..` components, links resolving outside it) and device files
//! (unless allowed, in which case they are skipped); and return the image's
//! run configuration.
//!
//! weft's tree format has no links, so the result holds only regular files
//! and folders: a symbolic link or hard link becomes a copy of what it
//! points at inside the root (files are hard-linked on disk, which the store
//! reads as separate regular files with the same content, stored once), and
//! a link that points at nothing in the root is dropped with a warning.
//! Writing never follows a link: a folder that a lower layer made a link is
//! replaced by a real folder before anything is written under it.
//!
//! The standard mount points (`/proc`, `/sys`, `/dev`, `/tmp`, `/inputs`,
//! `/outputs`) are created empty when the image lacks them, so a container
//! can use the root read-only as it is.
//!
//! On any error the destination folder is removed.
//!
//! Non-goals: pulling from registries, zstd layers, file owners, extended
//! attributes, times.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

/// Largest JSON document (manifest, index, config) read from an archive.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// Most symbolic links followed while resolving one path.
const MAX_LINK_HOPS: u32 = 40;

/// Most entries written while materialising links into copies.
const MAX_MATERIALISED_ENTRIES: u64 = 1_000_000;

/// Folders a container mounts over.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp", "inputs", "outputs"];

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("not a usable image archive: {0}")]
    Format(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("entry {entry:?} escapes the image root; the archive is refused")]
    Escape { entry: String },
    #[error("link {entry:?} -> {target:?} resolves outside the image root; the archive is refused")]
    LinkEscape { entry: String, target: String },
    #[error("entry {entry:?} is a device file or fifo; allow devices to skip such entries")]
    Device { entry: String },
    #[error("blob {blob} does not match its digest (expected {expected}, found {actual})")]
    Digest {
        blob: String,
        expected: String,
        actual: String,
    },
    #[error("destination {0} exists and is not empty; give a new folder")]
    DestinationExists(PathBuf),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// Choices for [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Skip device files and fifos (with a warning) instead of refusing the image.
    pub allow_devices: bool,
    /// Most bytes all layers may hold once decompressed (`None`:
    /// [`DEFAULT_MAX_UNPACKED_BYTES`]): a small archive that inflates past
    /// it is refused before it fills the disk.
    pub max_unpacked_bytes: Option<u64>,
}

/// Default bound on the decompressed size of an image's layers together.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 64 << 30;

/// A layer stream that fails once the image's decompressed budget is spent.
struct Budgeted<'a, R> {
    inner: R,
    left: &'a std::cell::Cell<u64>,
    limit: u64,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.left.get();
        if n as u64 > left {
            return Err(io::Error::other(format!(
                "the layers decompress to more than {} bytes; the image is refused \
                 (raise the unpack limit if it is genuine)",
                self.limit
            )));
        }
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// How the image says to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` strings.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

impl ImageConfig {
    /// The command line to run, as `docker run` forms it: a given `command`
    /// replaces the entrypoint (and drops the image's cmd); given `args`
    /// replace the cmd.
    pub fn command_line(&self, command: &[String], args: &[String]) -> Vec<String> {
        let mut line = if command.is_empty() {
            self.entrypoint.clone()
        } else {
            command.to_vec()
        };
        if !args.is_empty() {
            line.extend_from_slice(args);
        } else if command.is_empty() {
            line.extend_from_slice(&self.cmd);
        }
        line
    }

    /// The image's environment with `overrides` applied, as pairs.
    pub fn environment(&self, overrides: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let pairs = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(overrides.iter().cloned());
        for (k, v) in pairs {
            match env.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        env
    }
}

/// Unpacks the image in `archive` into `dest`, which must not exist or be
/// empty, and returns its configuration. On error `dest` is removed.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<ImageConfig, ImageError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ImageError::DestinationExists(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest)
                .map_err(io_err(format!("cannot create {}", dest.display())))?;
        }
        Err(e) => return Err(io_err(format!("cannot read {}", dest.display()))(e)),
    }
    let result = unpack_into(archive, dest, opts);
    if let Err(e) = &result {
        warn!(archive = %archive.display(), error = %e, "image refused; removing the destination");
        if let Err(rm) = fs::remove_dir_all(dest) {
            warn!(dest = %dest.display(), error = %rm, "cannot remove the destination");
        }
    }
    result
}

fn unpack_into(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<ImageConfig, ImageError> {
    let outer = Outer::open(archive)?;
    let plan = if outer.has("index.json") {
        outer.oci_plan()?
    } else if outer.has("manifest.json") {
        outer.docker_plan()?
    } else {
        return Err(ImageError::Format(
            "neither index.json (OCI image layout) nor manifest.json (docker save) found".into(),
        ));
    };
    if plan.diff_ids.len() != plan.layers.len() {
        return Err(ImageError::Format(format!(
            "the config lists {} layer digests for {} layers",
            plan.diff_ids.len(),
            plan.layers.len()
        )));
    }
    let limit = opts
        .max_unpacked_bytes
        .unwrap_or(DEFAULT_MAX_UNPACKED_BYTES);
    let budget = std::cell::Cell::new(limit);
    for (i, (layer, diff_id)) in plan.layers.iter().zip(&plan.diff_ids).enumerate() {
        debug!(layer = %layer.name, index = i, "applying layer");
        let blob = outer.blob(&layer.name)?;
        let blob = Verified::new(blob, layer.digest.clone(), layer.name.clone());
        let mut buffered = BufReader::new(blob);
        let kind = sniff(&mut buffered).map_err(io_err(format!("cannot read {}", layer.name)))?;
        let diff = match kind {
            Compression::Gzip => {
                let gz = flate2::read::GzDecoder::new(buffered);
                apply_verified(gz, diff_id, &layer.name, dest, opts, (&budget, limit))?
            }
            Compression::None => {
                apply_verified(buffered, diff_id, &layer.name, dest, opts, (&budget, limit))?
            }
            Compression::Zstd => {
                return Err(ImageError::Unsupported(format!(
                    "layer {} is zstd-compressed; save the image with gzip or uncompressed layers",
                    layer.name
                )));
            }
        };
        diff.check_blob()?;
    }
    materialise_links(dest)?;
    for dir in MOUNT_POINTS {
        let p = dest.join(dir);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).map_err(io_err(format!("cannot create {}", p.display())))?;
        }
    }
    info!(archive = %archive.display(), layers = plan.layers.len(), "image unpacked");
    Ok(plan.config)
}

/// Applies one uncompressed layer stream, checking it against its diff id,
/// and hands back the compressed reader so its own digest can be checked.
fn apply_verified<R: Read + IntoVerified>(
    layer: R,
    diff_id: &str,
    name: &str,
    dest: &Path,
    opts: &UnpackOptions,
    (left, limit): (&std::cell::Cell<u64>, u64),
) -> Result<Verified<Box<dyn Read>>, ImageError> {
    let mut uncompressed = Verified::new(
        layer,
        Some(diff_id.to_string()),
        format!("{name} (uncompressed)"),
    );
    apply_layer(
        Budgeted {
            inner: &mut uncompressed,
            left,
            limit,
        },
        dest,
        opts,
    )?;
    // Read to the end so both digests cover every byte.
    io::copy(&mut uncompressed, &mut io::sink()).map_err(io_err(format!("cannot read {name}")))?;
    let (inner, check) = uncompressed.finish();
    check?;
    Ok(inner.into_verified())
}

/// Gets the blob reader back out of a layer decoder.
trait IntoVerified {
    fn into_verified(self) -> Verified<Box<dyn Read>>;
}

impl IntoVerified for BufReader<Verified<Box<dyn Read>>> {
    fn into_verified(self) -> Verified<Box<dyn Read>> {
        self.into_inner()
    }
}

impl IntoVerified for flate2::read::GzDecoder<BufReader<Verified<Box<dyn Read>>>> {
    fn into_verified(self) -> Verified<Box<dyn Read>> {
        self.into_inner().into_inner()
    }
}

enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff(r: &mut impl BufRead) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// A reader that hashes what passes through and compares it at the end.
struct Verified<R> {
    inner: R,
    hasher: Sha256,
    expected: Option<String>,
    name: String,
}

impl<R: Read> Verified<R> {
    fn new(inner: R, expected: Option<String>, name: String) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            expected,
            name,
        }
    }

    fn finish(self) -> (R, Result<(), ImageError>) {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        let check = match self.expected {
            Some(expected) if expected != actual => Err(ImageError::Digest {
                blob: self.name,
                expected,
                actual,
            }),
            _ => Ok(()),
        };
        (self.inner, check)
    }

    /// Reads what is left and compares the digest.
    fn check_blob(mut self) -> Result<(), ImageError> {
        io::copy(&mut self, &mut io::sink())
            .map_err(io_err(format!("cannot read {}", self.name)))?;
        self.finish().1
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// The outer archive.

/// One layer to apply.
struct LayerRef {
    /// The blob's path in the archive.
    name: String,
    /// `sha256:...` of the blob, when the format gives one.
    digest: Option<String>,
}

struct Plan {
    config: ImageConfig,
    layers: Vec<LayerRef>,
    diff_ids: Vec<String>,
}

/// The outer tar, indexed: where each member's bytes are.
struct Outer {
    file: File,
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
    _tmp: Option<File>,
}

impl Outer {
    fn open(path: &Path) -> Result<Outer, ImageError> {
        let mut file =
            File::open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
        let mut magic = [0u8; 2];
        let n = file
            .read(&mut magic)
            .map_err(io_err("cannot read the archive"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("cannot read the archive"))?;
        let mut tmp = None;
        if n == 2 && magic == [0x1f, 0x8b] {
            // A gzipped archive: index an uncompressed copy.
            let mut plain =
                tempfile::tempfile().map_err(io_err("cannot create a temporary file"))?;
            io::copy(&mut flate2::read::GzDecoder::new(&file), &mut plain)
                .map_err(io_err("cannot decompress the archive"))?;
            plain
                .seek(SeekFrom::Start(0))
                .map_err(io_err("cannot read the archive"))?;
            file = plain
                .try_clone()
                .map_err(io_err("cannot read the archive"))?;
            tmp = Some(plain);
        }
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        {
            let reader = file
                .try_clone()
                .map_err(io_err("cannot read the archive"))?;
            let mut tar = tar::Archive::new(reader);
            let entries = tar
                .entries_with_seek()
                .map_err(|e| ImageError::Format(format!("not a tar archive: {e}")))?;
            for entry in entries {
                let entry = entry.map_err(|e| ImageError::Format(format!("bad tar entry: {e}")))?;
                let name = normal_member_name(&String::from_utf8_lossy(&entry.path_bytes()));
                let kind = entry.header().entry_type();
                if kind.is_file() {
                    files.insert(name, (entry.raw_file_position(), entry.size()));
                } else if (kind.is_symlink() || kind.is_hard_link())
                    && let Ok(Some(target)) = entry.link_name()
                {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if kind.is_symlink() {
                        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        normal_member_name(&format!("{dir}/{target}"))
                    } else {
                        normal_member_name(&target)
                    };
                    links.insert(name, resolved);
                }
            }
        }
        Ok(Outer {
            file,
            files,
            links,
            _tmp: tmp,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn blob(&self, name: &str) -> Result<Box<dyn Read>, ImageError> {
        let mut name = name.to_string();
        for _ in 0..8 {
            if let Some(&(offset, size)) = self.files.get(&name) {
                let mut f = self
                    .file
                    .try_clone()
                    .map_err(io_err("cannot read the archive"))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(io_err("cannot read the archive"))?;
                return Ok(Box::new(f.take(size)));
            }
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(ImageError::Format(format!(
            "the archive has no member {name:?}"
        )))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<T, ImageError> {
        let mut bytes = Vec::new();
        let reader = Verified::new(
            self.blob(name)?,
            digest.map(str::to_string),
            name.to_string(),
        );
        let mut limited = reader.take(MAX_JSON_BYTES + 1);
        limited
            .read_to_end(&mut bytes)
            .map_err(io_err(format!("cannot read {name}")))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(ImageError::Format(format!("{name} is larger than 16 MiB")));
        }
        limited.into_inner().finish().1?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Format(format!("{name}: {e}")))
    }

    fn docker_plan(&self) -> Result<Plan, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            layers: Vec<String>,
        }
        let manifest: Vec<Entry> = self.json("manifest.json", None)?;
        let [entry] = manifest.as_slice() else {
            return Err(ImageError::Format(format!(
                "manifest.json lists {} images; weft imports one image per archive",
                manifest.len()
            )));
        };
        let (config, diff_ids) = self.config(&normal_member_name(&entry.config), None)?;
        Ok(Plan {
            config,
            layers: entry
                .layers
                .iter()
                .map(|l| LayerRef {
                    name: normal_member_name(l),
                    digest: None,
                })
                .collect(),
            diff_ids,
        })
    }

    fn oci_plan(&self) -> Result<Plan, ImageError> {
        let index: OciIndex = self.json("index.json", None)?;
        let mut manifests = index.manifests;
        for _ in 0..4 {
            let chosen = choose(&manifests)?;
            if chosen.media_type.contains("image.index")
                || chosen.media_type.contains("manifest.list")
            {
                let nested: OciIndex =
                    self.json(&blob_path(&chosen.digest)?, Some(&chosen.digest))?;
                manifests = nested.manifests;
                continue;
            }
            let manifest: OciManifest =
                self.json(&blob_path(&chosen.digest)?, Some(&chosen.digest))?;
            let (config, diff_ids) = self.config(
                &blob_path(&manifest.config.digest)?,
                Some(&manifest.config.digest),
            )?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    Ok(LayerRef {
                        name: blob_path(&l.digest)?,
                        digest: Some(l.digest.clone()),
                    })
                })
                .collect::<Result<_, ImageError>>()?;
            return Ok(Plan {
                config,
                layers,
                diff_ids,
            });
        }
        Err(ImageError::Format("image indexes nested too deeply".into()))
    }

    fn config(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<(ImageConfig, Vec<String>), ImageError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Run {
            entrypoint: Option<Vec<String>>,
            cmd: Option<Vec<String>>,
            env: Option<Vec<String>>,
            working_dir: Option<String>,
            user: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            architecture: Option<String>,
            #[serde(default)]
            os: Option<String>,
            #[serde(default)]
            config: Option<Run>,
            #[serde(default)]
            rootfs: RootFs,
        }
        let c: Config = self.json(name, digest)?;
        let run = c.config.unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok((
            ImageConfig {
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                env: run.env.unwrap_or_default(),
                workdir: nonempty(run.working_dir),
                user: nonempty(run.user),
                architecture: c.architecture,
                os: c.os,
            },
            c.rootfs.diff_ids,
        ))
    }
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    architecture: String,
    os: String,
}

/// The one manifest to use: the only one, or the one for this host's platform.
fn choose(manifests: &[Descriptor]) -> Result<&Descriptor, ImageError> {
    if let [only] = manifests {
        return Ok(only);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let for_host: Vec<&Descriptor> = manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    match for_host.as_slice() {
        [one, ..] if manifests.iter().all(|m| m.platform.is_some()) => Ok(one),
        _ if manifests.is_empty() => {
            Err(ImageError::Format("index.json lists no manifests".into()))
        }
        _ => Err(ImageError::Format(format!(
            "index.json lists {} manifests and none for linux/{arch} alone; weft imports one image per archive",
            manifests.len()
        ))),
    }
}

/// `sha256:HEX` to `blobs/sha256/HEX`, refusing anything else.
fn blob_path(digest: &str) -> Result<String, ImageError> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("blobs/sha256/{hex}"))
        }
        _ => Err(ImageError::Unsupported(format!(
            "digest {digest:?}: only sha256 digests are supported"
        ))),
    }
}

/// A member name without `./` or `/` in front, `..` resolved lexically.
fn normal_member_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

// ---------------------------------------------------------------------------
// Applying a layer.

/// The path of a layer entry as components under the root, refusing `..`.
fn entry_components(raw: &Path, shown: &str) -> Result<Vec<OsString>, ImageError> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::Escape {
                    entry: shown.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Makes every parent of `comps` a real folder, replacing files and links.
fn ensure_parents(root: &Path, comps: &[OsString]) -> Result<(), ImageError> {
    let mut p = root.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&p).map_err(io_err(format!("cannot replace {}", p.display())))?;
                make_dir(&p)?;
            }
            Err(_) => make_dir(&p)?,
        }
    }
    Ok(())
}

fn make_dir(p: &Path) -> Result<(), ImageError> {
    fs::create_dir(p).map_err(io_err(format!("cannot create {}", p.display())))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("cannot set the mode of {}", p.display())))
}

/// Removes whatever is at `p`, without following links.
fn remove_any(p: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    }
    .map_err(io_err(format!("cannot remove {}", p.display())))
}

/// Whether every parent of `comps` is a real folder (so `comps` names
/// something that is in the tree, not behind a link).
fn parents_are_dirs(root: &Path, comps: &[OsString]) -> bool {
    let mut p = root.to_path_buf();
    comps[..comps.len().saturating_sub(1)].iter().all(|c| {
        p.push(c);
        fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
    })
}

fn apply_layer(reader: impl Read, root: &Path, opts: &UnpackOptions) -> Result<(), ImageError> {
    let mut tar = tar::Archive::new(reader);
    // Paths written by this layer, which its own opaque markers keep.
    let mut created: HashSet<Vec<OsString>> = HashSet::new();
    let entries = tar
        .entries()
        .map_err(|e| ImageError::Format(format!("a layer is not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Format(format!("bad layer entry: {e}")))?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let raw = entry
            .path()
            .map_err(|e| ImageError::Format(format!("bad path {shown:?}: {e}")))?
            .into_owned();
        let comps = entry_components(&raw, &shown)?;
        let Some(name) = comps.last().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent = &comps[..comps.len() - 1];
        if name == ".wh..wh..opq" {
            if parents_are_dirs(root, &comps) {
                let dir = join(root, parent);
                for child in
                    fs::read_dir(&dir).map_err(io_err(format!("cannot read {}", dir.display())))?
                {
                    let child = child.map_err(io_err(format!("cannot read {}", dir.display())))?;
                    let mut key = parent.to_vec();
                    key.push(child.file_name());
                    if !created.contains(&key) {
                        remove_any(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden.starts_with(".wh.") {
                continue; // other aufs metadata (`.wh..wh.plnk`, ...): nothing to apply
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                // `.wh..` or `.wh...` would name the folder itself or its
                // parent (at the top level: the unpack root or above it)
                return Err(ImageError::Format(format!(
                    "whiteout {shown:?} names no entry of its folder; the layer is malformed"
                )));
            }
            let mut target = parent.to_vec();
            target.push(OsString::from(hidden));
            if parents_are_dirs(root, &target) {
                remove_any(&join(root, &target))?;
            }
            continue;
        }
        let path = join(root, &comps);
        let kind = entry.header().entry_type();
        ensure_parents(root, &comps)?;
        match kind {
            tar::EntryType::Directory => match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&path)?;
                    make_dir(&path)?;
                }
                Err(_) => make_dir(&path)?,
            },
            tar::EntryType::GNUSparse => {
                // holes would be written out as zeros: a tiny entry could
                // fill the disk
                return Err(ImageError::Unsupported(format!(
                    "entry {shown:?} is a sparse file; save the image without sparse files"
                )));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&path)?;
                let mode = entry.header().mode().unwrap_or(0o644);
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(format!("cannot create {}", path.display())))?;
                io::copy(&mut entry, &mut f)
                    .map_err(io_err(format!("cannot write {}", path.display())))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ImageError::Format(format!("bad link target of {shown:?}: {e}")))?
                    .ok_or_else(|| ImageError::Format(format!("link {shown:?} has no target")))?
                    .into_owned();
                remove_any(&path)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(io_err(format!("cannot create link {}", path.display())))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| ImageError::Format(format!("bad link target of {shown:?}: {e}")))?
                    .ok_or_else(|| {
                        ImageError::Format(format!("hard link {shown:?} has no target"))
                    })?
                    .into_owned();
                let target_shown = target.to_string_lossy().into_owned();
                let tcomps = entry_components(&target, &target_shown).map_err(|_| {
                    ImageError::LinkEscape {
                        entry: shown.clone(),
                        target: target_shown.clone(),
                    }
                })?;
                let source = join(root, &tcomps);
                if tcomps == comps {
                    continue;
                }
                let meta = fs::symlink_metadata(&source)
                    .ok()
                    .filter(|_| parents_are_dirs(root, &tcomps));
                match meta {
                    Some(m) if !m.is_dir() => {
                        remove_any(&path)?;
                        fs::hard_link(&source, &path).map_err(io_err(format!(
                            "cannot link {} to {}",
                            path.display(),
                            source.display()
                        )))?;
                    }
                    _ => {
                        return Err(ImageError::Format(format!(
                            "hard link {shown:?} points at {target_shown:?}, which is not a file written earlier"
                        )));
                    }
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if !opts.allow_devices {
                    return Err(ImageError::Device { entry: shown });
                }
                warn!(entry = %shown, "skipping a device file");
                continue;
            }
            other => {
                debug!(entry = %shown, kind = ?other, "skipping an entry of an unsupported kind");
                continue;
            }
        }
        created.insert(comps);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Turning links into copies.

enum Resolved {
    /// Components under the root of what the link points at (never a link).
    Found(Vec<OsString>),
    Dangling,
    Loop,
}

/// Resolves `target`, written in a link at `at` (components under the root),
/// the way the kernel would inside a chroot, except that climbing above the
/// root is an error.
fn resolve(root: &Path, at: &[OsString], target: &Path) -> Result<Resolved, ()> {
    let mut stack: Vec<OsString> = if target.is_absolute() {
        Vec::new()
    } else {
        at[..at.len().saturating_sub(1)].to_vec()
    };
    let mut pending: VecDeque<OsString> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            if stack.pop().is_none() {
                return Err(());
            }
            continue;
        }
        stack.push(c);
        let p = join(root, &stack);
        match fs::symlink_metadata(&p) {
            Err(_) => return Ok(Resolved::Dangling),
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Ok(Resolved::Loop);
                }
                let Ok(next) = fs::read_link(&p) else {
                    return Ok(Resolved::Dangling);
                };
                stack.pop();
                if next.is_absolute() {
                    stack.clear();
                }
                let comps: Vec<OsString> = next
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .collect();
                for c in comps.into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Ok(m) if !m.is_dir() && !pending.is_empty() => return Ok(Resolved::Dangling),
            Ok(_) => {}
        }
    }
    Ok(Resolved::Found(stack))
}

fn shown(comps: &[OsString]) -> String {
    let parts: Vec<String> = comps
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    format!("/{}", parts.join("/"))
}

/// Replaces every symbolic link under `root` by a copy of its target.
fn materialise_links(root: &Path) -> Result<(), ImageError> {
    let mut links = Vec::new();
    let mut stack: Vec<Vec<OsString>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let p = join(root, &dir);
        for e in fs::read_dir(&p).map_err(io_err(format!("cannot read {}", p.display())))? {
            let e = e.map_err(io_err(format!("cannot read {}", p.display())))?;
            let ft = e
                .file_type()
                .map_err(io_err(format!("cannot read {}", p.display())))?;
            let mut comps = dir.clone();
            comps.push(e.file_name());
            if ft.is_symlink() {
                links.push(comps);
            } else if ft.is_dir() {
                stack.push(comps);
            }
        }
    }
    links.sort();
    let mut budget = MAX_MATERIALISED_ENTRIES;
    for link in links {
        let path = join(root, &link);
        // An earlier copy may have replaced a folder above this link.
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let target =
            fs::read_link(&path).map_err(io_err(format!("cannot read link {}", path.display())))?;
        let found = match resolve(root, &link, &target) {
            Err(()) => {
                return Err(ImageError::LinkEscape {
                    entry: shown(&link),
                    target: target.to_string_lossy().into_owned(),
                });
            }
            Ok(Resolved::Found(t)) => t,
            Ok(Resolved::Dangling) => {
                warn!(link = %shown(&link), target = %target.display(), "dropping a link to nothing in the image");
                remove_any(&path)?;
                continue;
            }
            Ok(Resolved::Loop) => {
                warn!(link = %shown(&link), target = %target.display(), "dropping a link loop");
                remove_any(&path)?;
                continue;
            }
        };
        remove_any(&path)?;
        copy_resolved(root, &found, &link, &mut budget)?;
    }
    Ok(())
}

/// Copies what is at `from` (components, not a link) to `to`, turning links
/// inside folders into copies too.
fn copy_resolved(
    root: &Path,
    from: &[OsString],
    to: &[OsString],
    budget: &mut u64,
) -> Result<(), ImageError> {
    *budget = budget.checked_sub(1).ok_or_else(|| {
        ImageError::Unsupported("links expand to more than a million entries".into())
    })?;
    let src = join(root, from);
    let dst = join(root, to);
    let meta =
        fs::symlink_metadata(&src).map_err(io_err(format!("cannot read {}", src.display())))?;
    if !meta.is_dir() {
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err(format!(
                "cannot copy {} to {}",
                src.display(),
                dst.display()
            )))?;
        }
        return Ok(());
    }
    if to.starts_with(from) {
        warn!(link = %shown(to), target = %shown(from), "dropping a link to a folder that contains it");
        return Ok(());
    }
    make_dir(&dst)?;
    let mut children: Vec<_> = fs::read_dir(&src)
        .map_err(io_err(format!("cannot read {}", src.display())))?
        .collect::<Result<_, _>>()
        .map_err(io_err(format!("cannot read {}", src.display())))?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let mut cf = from.to_vec();
        cf.push(child.file_name());
        let mut ct = to.to_vec();
        ct.push(child.file_name());
        let ft = child
            .file_type()
            .map_err(io_err(format!("cannot read {}", src.display())))?;
        if ft.is_symlink() {
            let target = fs::read_link(child.path()).map_err(io_err("cannot read a link"))?;
            match resolve(root, &cf, &target) {
                Err(()) => {
                    return Err(ImageError::LinkEscape {
                        entry: shown(&cf),
                        target: target.to_string_lossy().into_owned(),
                    });
                }
                Ok(Resolved::Found(t)) => copy_resolved(root, &t, &ct, budget)?,
                Ok(Resolved::Dangling | Resolved::Loop) => {
                    warn!(link = %shown(&cf), "dropping a link to nothing in the image");
                }
            }
        } else {
            copy_resolved(root, &cf, &ct, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8], u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Char(&'a str),
        /// A regular file whose name is written as raw bytes (no checks).
        Raw(&'a [u8], &'a [u8]),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).expect("dir");
                }
                E::File(p, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).expect("file");
                }
                E::Sym(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).expect("symlink");
                }
                E::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).expect("hard link");
                }
                E::Char(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    h.set_size(0);
                    h.set_device_major(1).expect("major");
                    h.set_device_minor(3).expect("minor");
                    b.append_data(&mut h, p, io::empty()).expect("char");
                }
                E::Raw(name, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.set_cksum();
                    b.append(&h, *data).expect("raw");
                }
            }
        }
        b.into_inner().expect("finish")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("member");
    }

    fn config_json(layers: &[Vec<u8>]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": null, "Cmd": ["sh", "-c", "echo hi"],
                       "Env": ["PATH=/bin:/usr/bin"], "WorkingDir": "/work"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .expect("json")
    }

    /// An OCI layout archive; each layer gzipped when its flag is set.
    fn oci(layers: &[(Vec<u8>, bool)], tamper_diff: bool) -> Vec<u8> {
        let plain: Vec<Vec<u8>> = layers.iter().map(|(l, _)| l.clone()).collect();
        let mut config = config_json(&plain);
        if tamper_diff {
            // Change the first digit of the first diff id.
            let at = config
                .windows(7)
                .position(|w| w == b"sha256:")
                .expect("a diff id")
                + 7;
            config[at] = if config[at] == b'0' { b'1' } else { b'0' };
        }
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut descs = Vec::new();
        for (l, gz) in layers {
            let blob = if *gz { gzip(l) } else { l.clone() };
            let d = sha(&blob);
            add(&mut b, &format!("blobs/sha256/{}", &d[7..]), &blob);
            descs.push(serde_json::json!({
                "mediaType": if *gz { "application/vnd.oci.image.layer.v1.tar+gzip" }
                             else { "application/vnd.oci.image.layer.v1.tar" },
                "digest": d, "size": blob.len()}));
        }
        let cd = sha(&config);
        add(&mut b, &format!("blobs/sha256/{}", &cd[7..]), &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": descs
        }))
        .expect("json");
        let md = sha(&manifest);
        add(&mut b, &format!("blobs/sha256/{}", &md[7..]), &manifest);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()}]
        }))
        .expect("json");
        add(&mut b, "index.json", &index);
        b.into_inner().expect("finish")
    }

    /// A `docker save` archive.
    fn docker(layers: &[Vec<u8>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut names = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let name = format!("layer{i}/layer.tar");
            add(&mut b, &name, l);
            names.push(name);
        }
        add(&mut b, "cafe.json", &config_json(layers));
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": "cafe.json", "RepoTags": ["x:1"], "Layers": names}
        ]))
        .expect("json");
        add(&mut b, "manifest.json", &manifest);
        b.into_inner().expect("finish")
    }

    fn unpack_bytes(
        archive: &[u8],
        opts: &UnpackOptions,
    ) -> (tempfile::TempDir, PathBuf, Result<ImageConfig, ImageError>) {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("image.tar");
        fs::write(&a, archive).expect("write");
        let dest = dir.path().join("rootfs");
        let r = unpack(&a, &dest, opts);
        (dir, dest, r)
    }

    /// Every entry under `root` is a regular file or a folder.
    fn assert_plain(root: &Path) {
        for e in walk(root) {
            let m = fs::symlink_metadata(&e).expect("meta");
            assert!(
                m.is_file() || m.is_dir(),
                "{} is neither a file nor a folder",
                e.display()
            );
        }
    }

    fn walk(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read") {
                let p = e.expect("entry").path();
                if fs::symlink_metadata(&p).expect("meta").is_dir() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
        out
    }

    fn base_layer() -> Vec<u8> {
        layer(&[
            E::Dir("bin/"),
            E::File("bin/busybox", b"BUSYBOX", 0o755),
            E::Sym("bin/sh", "busybox"),
            E::Hard("bin/true", "bin/busybox"),
            E::Dir("usr/bin/"),
            E::Sym("usr/bin/env", "/bin/busybox"),
            E::Dir("usr/lib/"),
            E::File("usr/lib/libc.so", b"LIBC", 0o644),
            E::Sym("lib", "usr/lib"),
            E::Dir("etc/"),
            E::File("etc/a", b"A", 0o644),
            E::File("etc/b", b"B", 0o600),
            E::Sym("etc/mtab", "/proc/self/mounts"),
            E::Sym("etc/loop1", "loop2"),
            E::Sym("etc/loop2", "loop1"),
            E::Dir("opt/"),
            E::File("opt/x", b"X", 0o644),
        ])
    }

    fn top_layer() -> Vec<u8> {
        layer(&[
            E::File("etc/.wh.a", b"", 0o644),
            E::File("opt/z", b"Z", 0o644),
            E::File("opt/.wh..wh..opq", b"", 0o644),
            E::File("opt/y", b"Y", 0o644),
            E::File("bin/sh", b"not a link any more", 0o755),
        ])
    }

    fn check_result(dest: &Path) {
        assert_plain(dest);
        let read = |p: &str| fs::read(dest.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(read("bin/busybox"), b"BUSYBOX");
        assert_eq!(read("bin/true"), b"BUSYBOX", "hard link copied");
        assert_eq!(
            read("usr/bin/env"),
            b"BUSYBOX",
            "absolute link resolved in the root"
        );
        assert_eq!(read("lib/libc.so"), b"LIBC", "folder link copied");
        assert_eq!(
            read("bin/sh"),
            b"not a link any more",
            "upper layer replaced the link"
        );
        assert!(!dest.join("etc/a").exists(), "whiteout removed etc/a");
        assert_eq!(read("etc/b"), b"B");
        assert!(!dest.join("etc/mtab").exists(), "dangling link dropped");
        assert!(!dest.join("etc/loop1").exists() && !dest.join("etc/loop2").exists());
        assert!(
            !dest.join("opt/x").exists(),
            "opaque folder hid the lower layer"
        );
        assert_eq!(read("opt/y"), b"Y");
        assert_eq!(
            read("opt/z"),
            b"Z",
            "same-layer entries survive the opaque marker"
        );
        let mode = fs::metadata(dest.join("usr/bin/env")).expect("meta").mode();
        assert_ne!(mode & 0o111, 0, "executable bit kept");
        for d in MOUNT_POINTS {
            assert!(dest.join(d).is_dir(), "mount point {d}");
        }
    }

    #[test]
    fn oci_layout_with_whiteouts_and_links() {
        let archive = oci(&[(base_layer(), true), (top_layer(), false)], false);
        let (_dir, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        let config = r.expect("unpacks");
        check_result(&dest);
        assert_eq!(config.cmd, ["sh", "-c", "echo hi"]);
        assert!(config.entrypoint.is_empty());
        assert_eq!(config.workdir.as_deref(), Some("/work"));
        assert_eq!(config.env, ["PATH=/bin:/usr/bin"]);
        assert_eq!(config.architecture.as_deref(), Some("amd64"));
    }

    #[test]
    fn docker_save_archive_plain_and_gzipped() {
        let archive = docker(&[base_layer(), gzip(&top_layer())]);
        // The second layer's diff id is of the gzipped bytes here, as the
        // test writes it; a real docker save lists the uncompressed digest.
        let archive_ok = docker(&[base_layer(), top_layer()]);
        let (_d, dest, r) = unpack_bytes(&archive_ok, &UnpackOptions::default());
        r.expect("docker save unpacks");
        check_result(&dest);
        let (_d, dest, r) = unpack_bytes(&gzip(&archive_ok), &UnpackOptions::default());
        r.expect("gzipped docker save unpacks");
        check_result(&dest);
        let (_d, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        assert!(matches!(r, Err(ImageError::Digest { .. })), "{r:?}");
        assert!(!dest.exists());
    }

    #[test]
    fn entries_escaping_the_root_are_refused_and_nothing_is_left() {
        let bad = layer(&[
            E::Dir("etc/"),
            E::File("etc/ok", b"ok", 0o644),
            E::Raw(b"../../etc/x", b"x"),
        ]);
        let (dir, dest, r) = unpack_bytes(&oci(&[(bad, false)], false), &UnpackOptions::default());
        assert!(
            matches!(&r, Err(ImageError::Escape { entry }) if entry == "../../etc/x"),
            "{r:?}"
        );
        assert!(!dest.exists(), "destination removed");
        assert!(
            !dir.path().join("etc/x").exists()
                && !dir.path().parent().expect("p").join("etc/x").exists()
        );

        let bad = layer(&[E::Sym("evil", "../../../etc/passwd")]);
        let (_d, dest, r) = unpack_bytes(&oci(&[(bad, false)], false), &UnpackOptions::default());
        assert!(matches!(r, Err(ImageError::LinkEscape { .. })), "{r:?}");
        assert!(!dest.exists());

        let bad = layer(&[E::File("a", b"a", 0o644), E::Hard("b", "../a")]);
        let (_d, dest, r) = unpack_bytes(&oci(&[(bad, false)], false), &UnpackOptions::default());
        assert!(matches!(r, Err(ImageError::LinkEscape { .. })), "{r:?}");
        assert!(!dest.exists());
    }

    #[test]
    fn sparse_entries_and_layers_inflating_past_the_budget_are_refused() {
        // A GNU sparse entry: its holes would be written out as zeros.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(0);
        // a file of 1 GiB, all hole: one empty chunk at its end
        let gnu = h.as_gnu_mut().expect("a gnu header");
        gnu.set_real_size(1 << 30);
        gnu.sparse[0].offset = *b"10000000000\0";
        gnu.sparse[0].numbytes = *b"00000000000\0";
        h.set_cksum();
        b.append_data(&mut h, "holes", io::empty()).expect("sparse");
        let sparse = b.into_inner().expect("finish");
        let (_dir, dest, r) = unpack_bytes(
            &oci(&[(base_layer(), false), (sparse, false)], false),
            &UnpackOptions::default(),
        );
        assert!(
            matches!(&r, Err(ImageError::Unsupported(m)) if m.contains("sparse")),
            "{r:?}"
        );
        assert!(!dest.exists(), "the failed unpack left nothing");
        // 4 MiB of zeros gzip to a few KiB: over a 1 MiB budget, refused
        // before more than the budget reaches the disk.
        let zeros = vec![0u8; 4 << 20];
        let bomb = layer(&[E::File("zeros", &zeros, 0o644)]);
        let archive = oci(&[(base_layer(), false), (bomb, true)], false);
        assert!(archive.len() < 64 << 10, "the archive is small");
        let (_dir, dest, r) = unpack_bytes(
            &archive,
            &UnpackOptions {
                max_unpacked_bytes: Some(1 << 20),
                ..UnpackOptions::default()
            },
        );
        assert!(
            matches!(&r, Err(ImageError::Io { source, .. }) if source.to_string().contains("decompress to more than 1048576 bytes")),
            "{r:?}"
        );
        assert!(!dest.exists());
        // the same image within the default budget unpacks
        let (_dir, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        r.expect("within the budget");
        assert_eq!(
            fs::metadata(dest.join("zeros")).expect("zeros").len(),
            4 << 20
        );
    }

    #[test]
    fn top_level_whiteouts_stay_inside_the_root() {
        // `.wh..` and `.wh...` would name the root and its parent: refused,
        // and neither the root's parent nor anything beside the root goes.
        for name in [&b".wh.."[..], b".wh...", b"./.wh..", b"bin/.wh.."] {
            let bad = layer(&[E::File("keep", b"k", 0o644), E::Raw(name, b"")]);
            let (dir, dest, r) = unpack_bytes(
                &oci(&[(base_layer(), false), (bad, false)], false),
                &UnpackOptions::default(),
            );
            assert!(
                matches!(&r, Err(ImageError::Format(m)) if m.contains("whiteout")),
                "{}: {r:?}",
                String::from_utf8_lossy(name)
            );
            assert!(dir.path().is_dir(), "the root's parent is still there");
            assert!(
                dir.path().join("image.tar").is_file(),
                "a file beside the root is still there"
            );
            assert!(!dest.exists(), "the failed unpack left nothing");
        }
        // An opaque marker at the top level hides the lower layers' root
        // entries and keeps the root and what this layer writes.
        let top = layer(&[
            E::File(".wh..wh..opq", b"", 0o644),
            E::File("only", b"o", 0o644),
        ]);
        let (dir, dest, r) = unpack_bytes(
            &oci(&[(base_layer(), false), (top, false)], false),
            &UnpackOptions::default(),
        );
        r.expect("an opaque root unpacks");
        assert!(dir.path().join("image.tar").is_file());
        assert_eq!(fs::read(dest.join("only")).expect("only"), b"o");
        assert!(
            !dest.join("bin").exists() && !dest.join("etc").exists(),
            "lower entries hidden"
        );
        // aufs metadata entries are skipped, not applied
        let top = layer(&[
            E::File(".wh..wh.plnk", b"", 0o644),
            E::File("bin/.wh..wh.aufs", b"", 0o644),
        ]);
        let (_d, dest, r) = unpack_bytes(
            &oci(&[(base_layer(), false), (top, false)], false),
            &UnpackOptions::default(),
        );
        r.expect("aufs metadata is ignored");
        assert_eq!(
            fs::read(dest.join("bin/busybox")).expect("busybox"),
            b"BUSYBOX"
        );
    }

    #[test]
    fn writes_never_follow_links() {
        let outside = tempfile::tempdir().expect("tmp");
        let target = outside.path().to_string_lossy().into_owned();
        let l1 = layer(&[E::Sym("evil", &target), E::Sym("etc", "/data")]);
        let l2 = layer(&[
            E::File("evil/planted", b"p", 0o644),
            E::File("etc/x", b"x", 0o644),
        ]);
        let (_d, dest, r) = unpack_bytes(
            &oci(&[(l1, false), (l2, false)], false),
            &UnpackOptions::default(),
        );
        r.expect("unpacks");
        assert!(
            !outside.path().join("planted").exists(),
            "wrote through a link"
        );
        assert!(
            fs::symlink_metadata(dest.join("evil"))
                .expect("meta")
                .is_dir()
        );
        assert_eq!(fs::read(dest.join("evil/planted")).expect("read"), b"p");
        assert!(!dest.join("data").exists());
        assert_eq!(fs::read(dest.join("etc/x")).expect("read"), b"x");
    }

    #[test]
    fn device_files_are_refused_unless_allowed() {
        let l = layer(&[
            E::Dir("dev/"),
            E::Char("dev/null"),
            E::File("ok", b"ok", 0o644),
        ]);
        let archive = oci(&[(l, false)], false);
        let (_d, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        assert!(
            matches!(&r, Err(ImageError::Device { entry }) if entry == "dev/null"),
            "{r:?}"
        );
        assert!(!dest.exists());
        let (_d, dest, r) = unpack_bytes(
            &archive,
            &UnpackOptions {
                allow_devices: true,
                ..UnpackOptions::default()
            },
        );
        r.expect("devices skipped");
        assert!(!dest.join("dev/null").exists());
        assert_eq!(fs::read(dest.join("ok")).expect("read"), b"ok");
    }

    #[test]
    fn digests_are_checked() {
        let archive = oci(&[(base_layer(), true)], true);
        let (_d, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        assert!(matches!(r, Err(ImageError::Digest { .. })), "{r:?}");
        assert!(!dest.exists());
        // A corrupted blob: flip a byte inside the gzipped layer.
        let mut archive = oci(&[(base_layer(), true)], false);
        let gz = gzip(&base_layer());
        let at = archive
            .windows(gz.len())
            .position(|w| w == gz.as_slice())
            .expect("layer bytes in the archive");
        archive[at + gz.len() / 2] ^= 0xff;
        let (_d, dest, r) = unpack_bytes(&archive, &UnpackOptions::default());
        assert!(r.is_err(), "a corrupted layer must be refused");
        assert!(!dest.exists());
    }

    #[test]
    fn a_non_empty_destination_is_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("image.tar");
        fs::write(&a, oci(&[(base_layer(), false)], false)).expect("write");
        let dest = dir.path().join("rootfs");
        fs::create_dir(&dest).expect("mkdir");
        fs::write(dest.join("keep"), b"mine").expect("write");
        let r = unpack(&a, &dest, &UnpackOptions::default());
        assert!(matches!(r, Err(ImageError::DestinationExists(_))), "{r:?}");
        assert_eq!(fs::read(dest.join("keep")).expect("still there"), b"mine");
    }

    #[test]
    fn not_an_image() {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "hello.txt", b"hi");
        let (_d, dest, r) = unpack_bytes(&b.into_inner().expect("tar"), &UnpackOptions::default());
        assert!(
            matches!(&r, Err(ImageError::Format(m)) if m.contains("index.json")),
            "{r:?}"
        );
        assert!(!dest.exists());
    }

    /// Golden JSON: the node stores this next to an imported image.
    #[test]
    fn image_config_json_and_command_lines() {
        let c = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            workdir: Some("/app".into()),
            user: None,
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
        };
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(
            json,
            r#"{"entrypoint":["/entry"],"cmd":["--serve"],"env":["PATH=/bin","A=1"],"workdir":"/app","architecture":"amd64","os":"linux"}"#
        );
        assert_eq!(serde_json::from_str::<ImageConfig>(&json).expect("back"), c);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(c.command_line(&[], &[]), s(&["/entry", "--serve"]));
        assert_eq!(c.command_line(&[], &s(&["x"])), s(&["/entry", "x"]));
        assert_eq!(c.command_line(&s(&["sh"]), &[]), s(&["sh"]));
        assert_eq!(
            c.command_line(&s(&["sh"]), &s(&["-c", "y"])),
            s(&["sh", "-c", "y"])
        );
        assert_eq!(
            c.environment(&[("A".into(), "2".into()), ("B".into(), "3".into())]),
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("A".to_string(), "2".to_string()),
                ("B".to_string(), "3".to_string())
            ]
        );
    }
}
