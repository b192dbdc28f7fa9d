//! `weft s3`: access keys of the S3 gateway, and datasets exposed as
//! bucket prefixes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use weft_protocol::{EntryKind, Hash, TagName, TreeEntry};

use super::backend::{daemon_client, open_local};
use super::output::{self, Table};
use crate::home::Home;
use crate::s3::keys::{self, Key, KeyFile, Perm};
use crate::s3::names;
use crate::s3::records::{DEFAULT_CONTENT_TYPE, META_V, Meta, etag_of};

/// `weft s3 key create`.
pub(crate) fn key_create(
    home: &Home,
    name: Option<String>,
    buckets: &[String],
    read_only: bool,
    access_key: Option<String>,
    secret_key: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    home.ensure()?;
    let path = home.s3_keys_path();
    let mut file = KeyFile::load(&path)?;
    let mut grants = BTreeMap::new();
    for b in buckets {
        let (bucket, perm) = match b.rsplit_once(':') {
            Some((bucket, p)) => (
                bucket,
                Perm::parse(p).with_context(|| {
                    format!(
                        "--bucket {b}: the permission is r(ead) or w(rite), as in {bucket}:read"
                    )
                })?,
            ),
            None => (b.as_str(), if read_only { Perm::Read } else { Perm::Write }),
        };
        if !names::valid_bucket(bucket) {
            bail!("--bucket {b}: {bucket:?} is not a bucket name (3-63 of a-z, 0-9, '.', '-')");
        }
        let perm = if read_only { Perm::Read } else { perm };
        grants.insert(bucket.to_string(), perm);
    }
    let access_key = access_key.unwrap_or_else(keys::new_access_key);
    let secret_key = secret_key.unwrap_or_else(keys::new_secret_key);
    keys::check_key_text("access key", &access_key)?;
    keys::check_key_text("secret key", &secret_key)?;
    if file.get(&access_key).is_some() {
        bail!(
            "an S3 key {access_key} already exists; remove it first with `weft s3 key rm {access_key}`"
        );
    }
    let key = Key {
        access_key: access_key.clone(),
        secret_key: secret_key.clone(),
        name: name.unwrap_or_default(),
        created_ms: crate::s3::gateway::now_ms(),
        all: if grants.is_empty() {
            Some(if read_only { Perm::Read } else { Perm::Write })
        } else {
            None
        },
        buckets: grants,
    };
    file.keys.push(key.clone());
    file.save(&path)?;
    if json {
        output::json(&serde_json::json!({
            "access_key": access_key,
            "secret_key": secret_key,
            "name": key.name,
            "all": key.all,
            "buckets": key.buckets,
        }))?;
    } else {
        println!("access key: {access_key}");
        println!("secret key: {secret_key}");
        println!(
            "(the secret is shown once; it is kept in {}, mode 0600)",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(k: &Key) -> String {
    let mut parts = Vec::new();
    if let Some(a) = k.all {
        parts.push(format!("*:{}", perm_word(a)));
    }
    for (b, p) in &k.buckets {
        parts.push(format!("{b}:{}", perm_word(*p)));
    }
    parts.join(",")
}

fn perm_word(p: Perm) -> &'static str {
    match p {
        Perm::Read => "read",
        Perm::Write => "write",
    }
}

/// `weft s3 key ls` (never shows secrets).
pub(crate) fn key_ls(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let file = KeyFile::load(&home.s3_keys_path())?;
    if json {
        let rows: Vec<_> = file
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "access_key": k.access_key,
                    "name": k.name,
                    "created_ms": k.created_ms,
                    "all": k.all,
                    "buckets": k.buckets,
                })
            })
            .collect();
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["ACCESS KEY", "NAME", "BUCKETS"]);
    for k in &file.keys {
        t.row(vec![k.access_key.clone(), k.name.clone(), describe(k)]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

/// `weft s3 key rm`.
pub(crate) fn key_rm(home: &Home, access_key: &str) -> anyhow::Result<ExitCode> {
    let path = home.s3_keys_path();
    let mut file = KeyFile::load(&path)?;
    let before = file.keys.len();
    file.keys.retain(|k| k.access_key != access_key);
    if file.keys.len() == before {
        bail!("no S3 key {access_key} (see `weft s3 key ls`)");
    }
    file.save(&path)?;
    println!("removed {access_key}");
    Ok(ExitCode::SUCCESS)
}

/// A guess at a file's content type from its name.
pub(crate) fn content_type_for(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("csv") => "text/csv",
        Some("txt" | "md") => "text/plain",
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        Some("html") => "text/html",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("parquet") => "application/vnd.apache.parquet",
        _ => DEFAULT_CONTENT_TYPE,
    }
}

/// What `expose` needs of the store, local or through the daemon.
enum Target {
    Local(crate::store::Store),
    Remote(crate::api::client::ApiClient),
}

impl Target {
    async fn resolve(&self, reference: &str) -> anyhow::Result<(Hash, Option<Vec<TreeEntry>>)> {
        match self {
            Target::Local(s) => {
                let id = s.resolve_str(reference)?;
                if s.is_tree(&id)? {
                    Ok((id, Some(s.read_tree(&id)?.entries().to_vec())))
                } else {
                    Ok((id, None))
                }
            }
            Target::Remote(c) => {
                let resp = c
                    .get_stream(&format!(
                        "/api/v1/artifacts/{}",
                        crate::api::client::segment(reference)
                    ))
                    .await?;
                let tree = resp
                    .headers()
                    .get("x-weft-kind")
                    .is_some_and(|k| k == "tree");
                if !tree {
                    let id = resp
                        .headers()
                        .get("x-weft-id")
                        .and_then(|v| v.to_str().ok())
                        .context("the daemon did not name the artifact's id")?
                        .parse()?;
                    return Ok((id, None));
                }
                #[derive(serde::Deserialize)]
                struct Listing {
                    id: Hash,
                    entries: Vec<TreeEntry>,
                }
                let l: Listing = resp.json().await.context("reading a tree listing")?;
                Ok((l.id, Some(l.entries)))
            }
        }
    }

    async fn add_tagged(&self, bytes: Vec<u8>, tag: &TagName) -> anyhow::Result<()> {
        match self {
            Target::Local(s) => {
                s.add_reader_kept(
                    &bytes[..],
                    &crate::store::Keep {
                        pin: None,
                        tag: Some(tag.clone()),
                    },
                    &(),
                )?;
                s.flush()?;
            }
            Target::Remote(c) => {
                let req = c
                    .request(Method::POST, &format!("/api/v1/artifacts?tag={tag}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes);
                c.send(req).await?;
            }
        }
        Ok(())
    }

    async fn set_tag(&self, tag: &TagName, id: &Hash) -> anyhow::Result<()> {
        match self {
            Target::Local(s) => {
                s.set_tag(tag, Some(*id))?;
                s.flush()?;
            }
            Target::Remote(c) => {
                let _: serde_json::Value = c
                    .call(
                        Method::PUT,
                        &format!("/api/v1/tags/{tag}"),
                        &serde_json::json!({ "ref": id.to_string() }),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn tag_live(&self, tag: &TagName) -> anyhow::Result<bool> {
        match self {
            Target::Local(s) => Ok(s.tag(tag)?.is_some()),
            Target::Remote(c) => {
                let tags: Vec<crate::store::TagInfo> = c.get("/api/v1/tags").await?;
                Ok(tags.iter().any(|t| t.name == tag.as_str()))
            }
        }
    }
}

/// `weft s3 expose REF --bucket B --prefix P`: every file of a tree (or
/// one file) becomes an object under `P` in `B`, pointing at the same blob.
pub(crate) async fn expose(
    home: &Home,
    reference: &str,
    bucket: &str,
    prefix: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target = match daemon_client(home).await? {
        Some(c) => Target::Remote(c),
        None => Target::Local(open_local(home)?),
    };
    let btag = names::bucket_tag(bucket)?;
    if !target.tag_live(&btag).await? {
        let record = serde_json::to_vec(&serde_json::json!({"v": 1, "bucket": bucket}))?;
        target.add_tagged(record, &btag).await?;
    }
    let (root, entries) = target.resolve(reference).await?;
    let mut files: Vec<(String, TreeEntry)> = Vec::new();
    match entries {
        None => {
            let name = if prefix.is_empty() || prefix.ends_with('/') {
                bail!(
                    "{reference} is one file: give --prefix the object's whole key (e.g. data/file.csv)"
                );
            } else {
                prefix.to_string()
            };
            let size = match &target {
                Target::Local(s) => s.blob_size(&root)?,
                Target::Remote(c) => {
                    let info: Vec<crate::store::ArtifactInfo> =
                        c.get("/api/v1/artifacts?all=true").await?;
                    info.iter()
                        .find(|a| a.id == root)
                        .map(|a| a.size)
                        .unwrap_or(0)
                }
            };
            files.push((
                name,
                TreeEntry {
                    name: String::new(),
                    kind: EntryKind::File,
                    hash: root,
                    size,
                    executable: false,
                },
            ));
        }
        Some(top) => {
            let mut stack: Vec<(String, Vec<TreeEntry>)> = vec![(prefix.to_string(), top)];
            while let Some((at, list)) = stack.pop() {
                for e in list {
                    match e.kind {
                        EntryKind::Tree => {
                            let (_, sub) = target.resolve(&e.hash.to_string()).await?;
                            stack.push((format!("{at}{}/", e.name), sub.unwrap_or_default()));
                        }
                        _ => files.push((format!("{at}{}", e.name), e)),
                    }
                }
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, e) in &files {
        let meta_tag = names::object_tag(bucket, key, names::META)
            .with_context(|| format!("the key {key:?}"))?;
        let obj_tag = names::object_tag(bucket, key, names::OBJECT)?;
        target.set_tag(&obj_tag, &e.hash).await?;
        let meta = Meta {
            v: META_V,
            data: e.hash,
            size: e.size,
            etag: etag_of(&e.hash),
            content_type: content_type_for(key).to_string(),
            metadata: BTreeMap::new(),
            checksums: Default::default(),
            parts: 0,
        };
        target.add_tagged(meta.to_bytes(), &meta_tag).await?;
    }
    if json {
        let keys: Vec<&str> = files.iter().map(|(k, _)| k.as_str()).collect();
        output::json(&serde_json::json!({"bucket": bucket, "keys": keys}))?;
    } else {
        println!("exposed {} objects in s3://{bucket}/{prefix}", files.len());
    }
    Ok(ExitCode::SUCCESS)
}
