//! Where artifact commands go: the running daemon's API when there is one,
//! else the home's store directly. Both answer with the same types, so each
//! command prints the same way either way.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use weft_protocol::{Hash, TagName, TagVersion};

use super::output::Bar;
use crate::api::client::{ApiClient, ClientError, segment};
use crate::home::Home;
use crate::store::{
    AddOptions, AddOutcome, ArtifactInfo, ExportOptions, GcReport, PinInfo, Store, TagInfo,
    VerifyProblem,
};

pub(crate) enum Backend {
    Local(Store),
    Remote(ApiClient),
}

/// The API of the daemon running on `home`, if one answers.
pub(crate) async fn daemon_client(home: &Home) -> anyhow::Result<Option<ApiClient>> {
    let client = match ApiClient::from_home(home) {
        Ok(c) => c,
        Err(ClientError::NoDaemon { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match client.get::<serde_json::Value>("/api/v1/node").await {
        Ok(_) => Ok(Some(client)),
        // a stale address file left by a daemon that was killed
        Err(ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the home's store directly (no daemon).
pub(crate) fn open_local(home: &Home) -> anyhow::Result<Store> {
    home.ensure()?;
    let origin = home.identity()?.public().to_peer_id().to_string();
    Ok(Store::open(&home.store_dir(), &origin)?)
}

impl Backend {
    pub(crate) async fn connect(home: &Home) -> anyhow::Result<Backend> {
        match daemon_client(home).await? {
            Some(c) => Ok(Backend::Remote(c)),
            None => Ok(Backend::Local(open_local(home)?)),
        }
    }

    fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::path::absolute(path)
            .with_context(|| format!("{}: cannot make absolute", path.display()))
    }

    pub(crate) async fn add(
        &self,
        path: &Path,
        follow_symlinks: bool,
        tag: Option<&TagName>,
        pin: bool,
    ) -> anyhow::Result<AddOutcome> {
        match self {
            Backend::Local(store) => {
                let bar = Bar::bytes("adding");
                // pinned and tagged inside the import's critical section with GC
                let keep = crate::store::Keep {
                    pin: pin.then_some(1),
                    tag: tag.cloned(),
                };
                let out = store.add_path_kept(path, &AddOptions { follow_symlinks }, &keep, &bar);
                bar.finish();
                let out = out?;
                store.flush()?;
                Ok(out)
            }
            Backend::Remote(c) => Ok(c
                .call(
                    Method::POST,
                    "/api/v1/artifacts/import",
                    &serde_json::json!({
                        "path": Self::absolute(path)?,
                        "follow_symlinks": follow_symlinks,
                        "tag": tag.map(|t| t.to_string()),
                        "pin": pin,
                    }),
                )
                .await?),
        }
    }

    pub(crate) async fn export(
        &self,
        reference: &str,
        dest: &Path,
        force: bool,
    ) -> anyhow::Result<Hash> {
        match self {
            Backend::Local(store) => {
                let id = store.resolve_str(reference)?;
                if !crate::transfer::complete_locally(store, &id)? {
                    anyhow::bail!(
                        "{id} is not wholly in the local store; with a daemon running (`weft daemon`), `weft get` fetches it from the mesh"
                    );
                }
                let bar = Bar::bytes("writing");
                let r = store.export(&id, dest, ExportOptions { force, link: false }, &bar);
                bar.finish();
                r?;
                Ok(id)
            }
            Backend::Remote(c) => {
                super::fetch::from_mesh(c, reference).await?;
                #[derive(serde::Deserialize)]
                struct Exported {
                    id: Hash,
                }
                let out: Exported = c
                    .call(
                        Method::POST,
                        &format!("/api/v1/artifacts/{}/export", segment(reference)),
                        &serde_json::json!({ "path": Self::absolute(dest)?, "force": force }),
                    )
                    .await?;
                Ok(out.id)
            }
        }
    }

    pub(crate) async fn cat(&self, reference: &str, out: &mut impl Write) -> anyhow::Result<()> {
        match self {
            Backend::Local(store) => {
                let id = store.resolve_str(reference)?;
                if store.is_tree(&id)? {
                    return Err(crate::store::StoreError::IsTree(id).into());
                }
                let mut f = store.open_blob(&id)?;
                std::io::copy(&mut f, out).context("writing to stdout")?;
            }
            Backend::Remote(c) => {
                let resp = c
                    .get_stream(&format!("/api/v1/artifacts/{}", segment(reference)))
                    .await?;
                if resp
                    .headers()
                    .get("x-weft-kind")
                    .is_some_and(|k| k == "tree")
                {
                    let id = resp
                        .headers()
                        .get("x-weft-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(reference)
                        .to_string();
                    anyhow::bail!(
                        "{id} is a tree (a directory); export it with `weft get {reference} -o DIR`"
                    );
                }
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk.context("reading from the daemon")?)
                        .context("writing to stdout")?;
                }
            }
        }
        out.flush().context("writing to stdout")?;
        Ok(())
    }

    pub(crate) async fn list(&self, all: bool) -> anyhow::Result<Vec<ArtifactInfo>> {
        match self {
            Backend::Local(store) => Ok(store.list(all)?),
            Backend::Remote(c) => Ok(c.get(&format!("/api/v1/artifacts?all={all}")).await?),
        }
    }

    pub(crate) async fn set_tag(
        &self,
        name: &TagName,
        reference: &str,
    ) -> anyhow::Result<TagVersion> {
        match self {
            Backend::Local(store) => {
                let id = store.resolve_str(reference)?;
                let v = store.set_tag(name, Some(id))?;
                store.flush()?;
                Ok(v)
            }
            Backend::Remote(c) => Ok(c
                .call(
                    Method::PUT,
                    &format!("/api/v1/tags/{name}"),
                    &serde_json::json!({ "ref": reference }),
                )
                .await?),
        }
    }

    pub(crate) async fn list_tags(&self) -> anyhow::Result<Vec<TagInfo>> {
        match self {
            Backend::Local(store) => Ok(store.list_tags()?),
            Backend::Remote(c) => Ok(c.get("/api/v1/tags").await?),
        }
    }

    pub(crate) async fn tag_history(&self, name: &TagName) -> anyhow::Result<Vec<TagVersion>> {
        match self {
            Backend::Local(store) => Ok(store.tag_history(name)?),
            Backend::Remote(c) => Ok(c.get(&format!("/api/v1/tag-history/{name}")).await?),
        }
    }

    pub(crate) async fn remove_tag(&self, name: &TagName) -> anyhow::Result<()> {
        match self {
            Backend::Local(store) => {
                store.remove_tag(name)?;
                store.flush()?;
            }
            Backend::Remote(c) => {
                c.call_empty(Method::DELETE, &format!("/api/v1/tags/{name}"))
                    .await?
            }
        }
        Ok(())
    }

    pub(crate) async fn pin(&self, reference: &str, replicas: u32) -> anyhow::Result<Hash> {
        match self {
            Backend::Local(store) => {
                let id = store.resolve_str(reference)?;
                if !store.has(&id)? {
                    return Err(crate::store::StoreError::Missing(id).into());
                }
                store.pin(&id, replicas)?;
                Ok(id)
            }
            Backend::Remote(c) => {
                #[derive(serde::Deserialize)]
                struct Pinned {
                    id: Hash,
                }
                let p: Pinned = c
                    .call(
                        Method::PUT,
                        &format!("/api/v1/pins/{}", segment(reference)),
                        &serde_json::json!({ "replicas": replicas }),
                    )
                    .await?;
                Ok(p.id)
            }
        }
    }

    pub(crate) async fn unpin(&self, reference: &str) -> anyhow::Result<()> {
        match self {
            Backend::Local(store) => {
                let id = store.resolve_str(reference)?;
                if !store.unpin(&id)? {
                    anyhow::bail!("{id} is not pinned");
                }
            }
            Backend::Remote(c) => {
                c.call_empty(
                    Method::DELETE,
                    &format!("/api/v1/pins/{}", segment(reference)),
                )
                .await?
            }
        }
        Ok(())
    }

    pub(crate) async fn list_pins(&self) -> anyhow::Result<Vec<PinInfo>> {
        match self {
            Backend::Local(store) => Ok(store.list_pins()?),
            Backend::Remote(c) => Ok(c.get("/api/v1/pins").await?),
        }
    }

    pub(crate) async fn import_image(
        &self,
        archive: &Path,
        tag: Option<&TagName>,
        allow_devices: bool,
    ) -> anyhow::Result<crate::image::Imported> {
        match self {
            Backend::Local(store) => Ok(crate::image::import(store, archive, tag, allow_devices)?),
            Backend::Remote(c) => Ok(c
                .call(
                    Method::POST,
                    "/api/v1/images/import",
                    &serde_json::json!({
                        "path": Self::absolute(archive)?,
                        "tag": tag.map(|t| t.to_string()),
                        "allow_devices": allow_devices,
                    }),
                )
                .await?),
        }
    }

    pub(crate) async fn gc(&self) -> anyhow::Result<GcReport> {
        match self {
            Backend::Local(store) => Ok(store.gc(&[])?),
            Backend::Remote(c) => Ok(c.call_no_body(Method::POST, "/api/v1/gc").await?),
        }
    }

    pub(crate) async fn verify(&self) -> anyhow::Result<Vec<VerifyProblem>> {
        match self {
            Backend::Local(store) => Ok(store.verify()?),
            Backend::Remote(c) => {
                #[derive(serde::Deserialize)]
                struct Verified {
                    problems: Vec<VerifyProblem>,
                }
                let v: Verified = c.call_no_body(Method::POST, "/api/v1/store/verify").await?;
                Ok(v.problems)
            }
        }
    }
}
