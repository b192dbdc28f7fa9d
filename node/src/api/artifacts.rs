//! Artifact, tag, pin and maintenance endpoints, and the node's own status.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};
use weft_protocol::{Hash, TagName};

use super::{ApiError, ApiResult, ApiState, blocking, parse_json};
use crate::store::{AddOptions, ExportOptions};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/node", get(node))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/artifacts", get(list).post(upload))
        .route("/api/v1/artifacts/import", post(import))
        .route("/api/v1/artifacts/{reference}", get(download).head(head))
        .route("/api/v1/artifacts/{reference}/export", post(export))
        .route("/api/v1/tags", get(list_tags))
        .route(
            "/api/v1/tags/{*name}",
            get(get_tag).put(set_tag).delete(remove_tag),
        )
        .route("/api/v1/tag-history/{*name}", get(tag_history))
        .route("/api/v1/pins", get(list_pins))
        .route(
            "/api/v1/pins/{reference}",
            axum::routing::put(pin).delete(unpin),
        )
        .route("/api/v1/images/import", post(import_image))
        .route("/api/v1/gc", post(gc))
        .route("/api/v1/store/verify", post(verify))
}

fn tag_name(s: &str) -> ApiResult<TagName> {
    TagName::new(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn resolve(state: &ApiState, reference: String) -> ApiResult<Hash> {
    let store = state.store.clone();
    blocking(move || store.resolve_str(&reference)).await
}

async fn node(State(state): State<ApiState>) -> ApiResult<Response> {
    match &state.node {
        Some(n) => Ok(axum::Json(n.node().await).into_response()),
        None => Ok(axum::Json(serde_json::json!({
            "version": weft_protocol::VERSION,
            "uptime_s": state.started.elapsed().as_secs(),
        }))
        .into_response()),
    }
}

async fn peers(State(state): State<ApiState>) -> ApiResult<Response> {
    match &state.node {
        Some(n) => Ok(axum::Json(n.peers().await).into_response()),
        None => Ok(axum::Json(serde_json::json!([])).into_response()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let store = state.store.clone();
    let items = blocking(move || store.list(q.all)).await?;
    Ok(axum::Json(items).into_response())
}

#[derive(Deserialize)]
struct AddQuery {
    tag: Option<String>,
    #[serde(default = "yes")]
    pin: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/artifacts`: the body is a file's bytes, streamed to disk.
async fn upload(
    State(state): State<ApiState>,
    Query(q): Query<AddQuery>,
    body: Body,
) -> ApiResult<Response> {
    let tag = q.tag.as_deref().map(tag_name).transpose()?;
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(format!("upload interrupted: {e}")));
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let store = state.store.clone();
    let out = blocking(move || {
        // pinned and tagged inside the import's critical section with GC
        let keep = crate::store::Keep {
            pin: q.pin.then_some(1),
            tag,
        };
        store.add_reader_kept(reader, &keep, &())
    })
    .await?;
    state.metrics.added(out.size);
    announce(&state, out.id).await;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// Tells the mesh this node holds `id`.
async fn announce(state: &ApiState, id: Hash) {
    if let Some(t) = &state.transfer {
        t.announce(id).await;
    }
}

/// Makes `id` whole here, fetching from the mesh what is missing.
async fn fetch_missing(state: &ApiState, id: Hash) -> ApiResult<()> {
    let Some(t) = &state.transfer else {
        return Ok(());
    };
    let store = state.store.clone();
    if !blocking(move || crate::transfer::complete_locally(&store, &id)).await? {
        t.fetch(id).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    path: PathBuf,
    #[serde(default)]
    follow_symlinks: bool,
    tag: Option<String>,
    #[serde(default = "yes")]
    pin: bool,
}

/// `POST /api/v1/artifacts/import`: the daemon reads a path on its own host
/// (what the CLI uses: one pass over the file, no copy through HTTP).
async fn import(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: ImportBody = parse_json(&body)?;
    let tag = req.tag.as_deref().map(tag_name).transpose()?;
    let src = state.roots.for_import(&req.path, req.follow_symlinks)?;
    let store = state.store.clone();
    let out = tokio::task::spawn_blocking(move || {
        // pinned and tagged inside the import's critical section with GC
        let keep = crate::store::Keep {
            pin: req.pin.then_some(1),
            tag,
        };
        let out = store
            .add_path_kept(
                &src.store_path(),
                &AddOptions {
                    follow_symlinks: req.follow_symlinks,
                },
                &keep,
                &(),
            )
            .map_err(|e| src.explain(e.into()))?;
        store.flush()?;
        Ok::<_, ApiError>(out)
    })
    .await??;
    state.metrics.added(out.size);
    announce(&state, out.id).await;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageImportBody {
    path: PathBuf,
    tag: Option<String>,
    #[serde(default)]
    allow_devices: bool,
}

/// `POST /api/v1/images/import`: an image archive on the daemon's host.
async fn import_image(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: ImageImportBody = parse_json(&body)?;
    let tag = req.tag.as_deref().map(tag_name).transpose()?;
    let src = state.roots.for_import(&req.path, false)?;
    let store = state.store.clone();
    let out = tokio::task::spawn_blocking(move || {
        // the archive is read through a path: hand over the opened file's
        let (_file, archive) = src.open_file()?;
        crate::image::import(&store, &archive, tag.as_ref(), req.allow_devices).map_err(|e| {
            src.explain(match e {
                crate::image::ImportError::Store(s) => ApiError::from(s),
                other => ApiError::new(StatusCode::BAD_REQUEST, "bad_image", other.to_string()),
            })
        })
    })
    .await??;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    path: PathBuf,
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/artifacts/{ref}/export`: the daemon writes the artifact to
/// a path on its host, fetching first from the mesh what it lacks.
async fn export(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ExportBody = parse_json(&body)?;
    let dest = state.roots.for_export(&req.path)?;
    let id = resolve(&state, reference).await?;
    fetch_missing(&state, id).await?;
    let store = state.store.clone();
    let force = req.force;
    let everywhere = state.roots.everywhere();
    let shown = dest.shown.clone();
    tokio::task::spawn_blocking(move || {
        let path = dest.store_path();
        if force && !everywhere {
            no_links_on_the_way(&store, &id, &path).map_err(|e| dest.explain(e))?;
        }
        store
            .export(&id, &path, ExportOptions { force, link: false }, &())
            .map_err(|e| dest.explain(e.into()))
    })
    .await??;
    Ok(axum::Json(serde_json::json!({ "id": id, "path": shown })).into_response())
}

/// Before a forced export of a tree into a folder that holds things
/// already: every folder of the tree that exists at the destination must be
/// a real folder, not a link that the export would write through (out of
/// the roots).
fn no_links_on_the_way(
    store: &crate::store::Store,
    id: &Hash,
    dest: &std::path::Path,
) -> ApiResult<()> {
    if !store.is_tree(id)? {
        return Ok(()); // a file replaces a link, it does not follow it
    }
    let tree = store.read_tree(id)?;
    for e in tree.entries() {
        if e.kind != weft_protocol::EntryKind::Tree {
            continue;
        }
        let p = dest.join(&e.name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "outside_roots",
                    format!(
                        "{} is a symbolic link where the artifact has a folder; a forced export does not write through links (api.path_roots); remove it first",
                        p.display()
                    ),
                ));
            }
            Ok(m) if m.is_dir() => no_links_on_the_way(store, &e.hash, &p)?,
            _ => {}
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct TreeListing {
    id: Hash,
    kind: &'static str,
    entries: Vec<weft_protocol::TreeEntry>,
}

/// Parses a single `bytes=` range against a length; `None` means the whole.
fn parse_range(headers: &HeaderMap, len: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the artifact has {len} bytes; ask for one range within them"),
        )
    };
    let s = v.to_str().map_err(|_| unsatisfiable())?;
    let spec = s.strip_prefix("bytes=").ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        return Err(unsatisfiable());
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| unsatisfiable())?;
            if n == 0 {
                return Err(unsatisfiable());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (a, "") => (
            a.parse().map_err(|_| unsatisfiable())?,
            len.saturating_sub(1),
        ),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| unsatisfiable())?;
            let b: u64 = b.parse().map_err(|_| unsatisfiable())?;
            (a, b.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || start > end || start >= len {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

fn id_headers(id: &Hash, kind: &str, len: u64) -> [(header::HeaderName, HeaderValue); 4] {
    let etag = HeaderValue::from_str(&format!("\"{id}\"")).unwrap_or(HeaderValue::from_static(""));
    let id_v = HeaderValue::from_str(&id.to_hex()).unwrap_or(HeaderValue::from_static(""));
    [
        (header::ETAG, etag),
        (header::HeaderName::from_static("x-weft-id"), id_v),
        (
            header::HeaderName::from_static("x-weft-kind"),
            HeaderValue::from_str(kind).unwrap_or(HeaderValue::from_static("file")),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
    ]
}

async fn head(State(state): State<ApiState>, Path(reference): Path<String>) -> ApiResult<Response> {
    let id = resolve(&state, reference).await?;
    let store = state.store.clone();
    let (is_tree, size) =
        blocking(move || Ok((store.is_tree(&id)?, store.blob_size(&id)?))).await?;
    let kind = if is_tree { "tree" } else { "file" };
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().extend(id_headers(&id, kind, size));
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(resp)
}

/// `GET /api/v1/artifacts/{ref}`: a file's bytes (Range supported), or a
/// tree's entries as JSON.
async fn download(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = resolve(&state, reference).await?;
    let store = state.store.clone();
    let (is_tree, size) =
        blocking(move || Ok((store.is_tree(&id)?, store.blob_size(&id)?))).await?;
    if is_tree {
        let store = state.store.clone();
        let tree = blocking(move || store.read_tree(&id)).await?;
        let mut resp = axum::Json(TreeListing {
            id,
            kind: "tree",
            entries: tree.entries().to_vec(),
        })
        .into_response();
        resp.headers_mut().insert(
            header::HeaderName::from_static("x-weft-kind"),
            HeaderValue::from_static("tree"),
        );
        return Ok(resp);
    }
    let range = parse_range(&headers, size)?;
    let path = state.store.blob_path(&id);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    state.metrics.served(len);
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), 256 * 1024));
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.extend(id_headers(&id, "file", len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

async fn list_tags(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.list_tags()).await?).into_response())
}

async fn get_tag(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let store = state.store.clone();
    let n = name.clone();
    let id = blocking(move || store.tag(&n)).await?;
    match id {
        Some(id) => Ok(axum::Json(serde_json::json!({ "name": name, "id": id })).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tag named {name}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTagBody {
    #[serde(rename = "ref")]
    reference: String,
}

async fn set_tag(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let req: SetTagBody = parse_json(&body)?;
    let id = resolve(&state, req.reference).await?;
    let store = state.store.clone();
    let version = blocking(move || {
        let v = store.set_tag(&name, Some(id))?;
        store.flush()?;
        Ok(v)
    })
    .await?;
    Ok(axum::Json(version).into_response())
}

async fn remove_tag(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let store = state.store.clone();
    let version = blocking(move || {
        let v = store.remove_tag(&name)?;
        store.flush()?;
        Ok(v)
    })
    .await?;
    Ok(axum::Json(version).into_response())
}

async fn tag_history(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.tag_history(&name)).await?).into_response())
}

async fn list_pins(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.list_pins()).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PinBody {
    replicas: Option<u32>,
}

async fn pin(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: PinBody = if body.is_empty() {
        PinBody::default()
    } else {
        parse_json(&body)?
    };
    let id = resolve(&state, reference).await?;
    fetch_missing(&state, id).await?;
    let store = state.store.clone();
    let replicas = req.replicas.unwrap_or(1);
    blocking(move || {
        if !store.has(&id)? {
            return Err(crate::store::StoreError::Missing(id));
        }
        store.pin(&id, replicas)
    })
    .await?;
    if let Some(t) = &state.transfer {
        t.nudge_replication().await;
    }
    Ok(axum::Json(serde_json::json!({ "id": id, "replicas": replicas })).into_response())
}

async fn unpin(
    State(state): State<ApiState>,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let id = resolve(&state, reference).await?;
    let store = state.store.clone();
    if !blocking(move || store.unpin(&id)).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{id} is not pinned"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn gc(State(state): State<ApiState>) -> ApiResult<Response> {
    // what fetches in progress are bringing here stays
    let keep = match &state.transfer {
        Some(t) => t.active_roots().await,
        None => Vec::new(),
    };
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.gc(&keep)).await?).into_response())
}

async fn verify(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    let problems = blocking(move || store.verify()).await?;
    Ok(axum::Json(serde_json::json!({ "problems": problems })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, len: u64) -> ApiResult<Option<(u64, u64)>> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).expect("header"));
        parse_range(&h, len)
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100).ok().flatten(), Some((0, 9)));
        assert_eq!(range("bytes=90-", 100).ok().flatten(), Some((90, 99)));
        assert_eq!(range("bytes=-10", 100).ok().flatten(), Some((90, 99)));
        assert_eq!(range("bytes=95-200", 100).ok().flatten(), Some((95, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=x-",
        ] {
            let e = range(bad, 100).expect_err(bad);
            assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
        assert!(range("bytes=0-0", 0).is_err());
        assert_eq!(parse_range(&HeaderMap::new(), 5).ok().flatten(), None);
    }
}
