//! Artifact, tag, pin and maintenance endpoints, and the node's own status.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::{Hash, TagName};

use super::{ApiError, ApiResult, ApiState, blocking, parse_json};
use crate::store::{AddOptions, ExportOptions};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(node))
        .routes(routes!(peers))
        .routes(routes!(list, upload))
        .routes(routes!(import))
        .routes(routes!(download, head))
        .routes(routes!(export))
        .routes(routes!(list_tags))
        .routes(routes!(get_tag, set_tag, remove_tag))
        .routes(routes!(tag_history))
        .routes(routes!(list_pins))
        .routes(routes!(pin, unpin))
        .routes(routes!(import_image))
        .routes(routes!(gc))
        .routes(routes!(verify))
}

/// `{"name", "id"}`: what a tag points at.
#[derive(Serialize, ToSchema)]
pub(super) struct TagTarget {
    /// The tag, `NAME:VERSION`.
    #[schema(value_type = String)]
    name: TagName,
    /// The artifact's id (64 hex digits).
    #[schema(value_type = String)]
    id: Hash,
}

/// `{"id", "replicas"}`: a pin.
#[derive(Serialize, ToSchema)]
pub(super) struct Pinned {
    #[schema(value_type = String)]
    id: Hash,
    replicas: u32,
}

/// `{"id", "path"}`: where an export went.
#[derive(Serialize, ToSchema)]
pub(super) struct Exported {
    #[schema(value_type = String)]
    id: Hash,
    /// The destination as the caller named it.
    #[schema(value_type = String)]
    path: PathBuf,
}

/// One value of a tag (`weft_protocol::TagVersion`): what it pointed at
/// (`null` once removed), when, and which node wrote it.
#[derive(ToSchema)]
#[schema(as = TagVersion)]
#[allow(dead_code)] // the schema of `weft_protocol::TagVersion`
pub(super) struct TagVersionSchema {
    /// The artifact's id, or `null` for a removal.
    target: Option<String>,
    /// The writer's hybrid logical clock.
    hlc: HlcSchema,
    /// The writer's node id.
    origin: String,
}

/// A hybrid logical clock reading (`weft_protocol::Hlc`).
#[derive(ToSchema)]
#[schema(as = Hlc)]
#[allow(dead_code)] // the schema of `weft_protocol::Hlc`
pub(super) struct HlcSchema {
    wall_ms: u64,
    counter: u32,
}

/// `{"problems": [...]}`: what re-hashing found.
#[derive(Serialize, ToSchema)]
pub(super) struct Verified {
    /// One entry per blob whose bytes do not match its id.
    problems: Vec<crate::store::VerifyProblem>,
}

fn tag_name(s: &str) -> ApiResult<TagName> {
    TagName::new(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn resolve(state: &ApiState, reference: String) -> ApiResult<Hash> {
    let store = state.store.clone();
    blocking(move || store.resolve_str(&reference)).await
}

#[utoipa::path(
    get,
    path = "/api/v1/node",
    tag = "node",
    summary = "This node: id, version, resources, addresses",
    responses((status = 200, description = "the node", body = Object)),
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/peers",
    tag = "node",
    summary = "Live peers from their adverts",
    responses((status = 200, description = "the peers", body = Vec<Object>)),
)]
async fn peers(State(state): State<ApiState>) -> ApiResult<Response> {
    match &state.node {
        Some(n) => Ok(axum::Json(n.peers().await).into_response()),
        None => Ok(axum::Json(serde_json::json!([])).into_response()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Every blob, not only the artifacts (tree roots and loose files).
    #[serde(default)]
    all: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/artifacts",
    tag = "artifacts",
    summary = "Artifacts (query all=true for every blob)",
    params(ListQuery),
    responses((status = 200, description = "the artifacts here", body = Vec<crate::store::ArtifactInfo>)),
)]
async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let store = state.store.clone();
    let items = blocking(move || store.list(q.all)).await?;
    Ok(axum::Json(items).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AddQuery {
    /// Tag the upload (`NAME:VERSION`).
    tag: Option<String>,
    /// Pin the upload (default true).
    #[serde(default = "yes")]
    #[param(default = true)]
    pin: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/artifacts`: the body is a file's bytes, streamed to disk.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts",
    tag = "artifacts",
    summary = "Upload a file's bytes (query tag, pin)",
    params(AddQuery),
    request_body(content = String, content_type = "application/octet-stream", description = "the file's bytes, streamed"),
    responses(
        (status = 201, description = "stored", body = crate::store::AddOutcome),
        (status = 507, description = "the store's disk is full"),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    /// A path on the daemon's host, under api.path_roots.
    #[schema(value_type = String)]
    path: PathBuf,
    #[serde(default)]
    follow_symlinks: bool,
    tag: Option<String>,
    #[serde(default = "yes")]
    pin: bool,
}

/// `POST /api/v1/artifacts/import`: the daemon reads a path on its own host
/// (what the CLI uses: one pass over the file, no copy through HTTP).
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/import",
    tag = "artifacts",
    summary = "Import a path on the daemon's host",
    request_body(content = ImportBody, content_type = "application/json"),
    responses(
        (status = 201, description = "stored", body = crate::store::AddOutcome),
        (status = 404, description = "no such path"),
        (status = 507, description = "the store's disk is full"),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImageImportBody {
    /// An image archive on the daemon's host, under api.path_roots.
    #[schema(value_type = String)]
    path: PathBuf,
    tag: Option<String>,
    #[serde(default)]
    allow_devices: bool,
}

/// `POST /api/v1/images/import`: an image archive on the daemon's host.
#[utoipa::path(
    post,
    path = "/api/v1/images/import",
    tag = "artifacts",
    summary = "Import an image archive on the daemon's host",
    request_body(content = ImageImportBody, content_type = "application/json"),
    responses(
        (status = 201, description = "imported", body = Object),
        (status = 404, description = "no such path"),
        (status = 507, description = "the store's disk is full"),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    /// Where to write, on the daemon's host, under api.path_roots.
    #[schema(value_type = String)]
    path: PathBuf,
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/artifacts/{ref}/export`: the daemon writes the artifact to
/// a path on its host, fetching first from the mesh what it lacks.
#[utoipa::path(
    post,
    path = "/api/v1/artifacts/{reference}/export",
    tag = "artifacts",
    summary = "Write an artifact to a path on the daemon's host",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    request_body(content = ExportBody, content_type = "application/json"),
    responses(
        (status = 200, description = "written", body = Exported),
        (status = 404, description = "no such artifact, here or in the mesh"),
        (status = 409, description = "the destination exists (send force)"),
        (status = 502, description = "fetching from the mesh failed"),
        (status = 503, description = "the node is stopping"),
        (status = 507, description = "the destination's disk is full"),
    ),
)]
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
    Ok(axum::Json(Exported { id, path: shown }).into_response())
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

/// A tree's entries.
#[derive(Serialize, ToSchema)]
struct TreeListing {
    #[schema(value_type = String)]
    id: Hash,
    /// `tree`.
    #[schema(value_type = String)]
    kind: &'static str,
    #[schema(value_type = Vec<Object>)]
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

#[utoipa::path(
    head,
    path = "/api/v1/artifacts/{reference}",
    tag = "artifacts",
    summary = "Size, kind and id of an artifact",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    responses(
        (status = 200, description = "headers only: ETag, X-Weft-Id, X-Weft-Kind, Content-Length"),
        (status = 404, description = "no such artifact here"),
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{reference}",
    tag = "artifacts",
    summary = "A file's bytes (Range supported) or a tree's entries",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    responses(
        (status = 200, description = "a file's bytes, or a tree's entries", content(
            (String = "application/octet-stream"),
            (TreeListing = "application/json"),
        )),
        (status = 206, description = "the asked range of a file's bytes", content_type = "application/octet-stream", body = String),
        (status = 404, description = "no such artifact here"),
        (status = 416, description = "the range is not within the file"),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/tags",
    tag = "tags",
    summary = "Live tags",
    responses((status = 200, description = "the tags", body = Vec<crate::store::TagInfo>)),
)]
async fn list_tags(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.list_tags()).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tags/{*name}",
    tag = "tags",
    summary = "What a tag points at",
    params(("name" = String, Path, description = "a tag name (NAME:VERSION)")),
    responses(
        (status = 200, description = "the tag", body = TagTarget),
        (status = 404, description = "no such tag"),
    ),
)]
async fn get_tag(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let store = state.store.clone();
    let n = name.clone();
    let id = blocking(move || store.tag(&n)).await?;
    match id {
        Some(id) => Ok(axum::Json(TagTarget { name, id }).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tag named {name}"),
        )),
    }
}

/// `{"ref": ID|PREFIX|TAG}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetTagBody {
    #[serde(rename = "ref")]
    reference: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/tags/{*name}",
    tag = "tags",
    summary = "Point a tag at an artifact",
    params(("name" = String, Path, description = "a tag name (NAME:VERSION)")),
    request_body(content = SetTagBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the tag's new version", body = TagVersionSchema),
        (status = 404, description = "no such artifact"),
    ),
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/tags/{*name}",
    tag = "tags",
    summary = "Remove a tag",
    params(("name" = String, Path, description = "a tag name (NAME:VERSION)")),
    responses(
        (status = 200, description = "the tag's new version (pointing at nothing)", body = TagVersionSchema),
        (status = 404, description = "no such tag"),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/tag-history/{*name}",
    tag = "tags",
    summary = "Every version a tag has had",
    params(("name" = String, Path, description = "a tag name (NAME:VERSION)")),
    responses(
        (status = 200, description = "the versions, oldest first", body = Vec<TagVersionSchema>),
        (status = 404, description = "no such tag"),
    ),
)]
async fn tag_history(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let name = tag_name(&name)?;
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.tag_history(&name)).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/pins",
    tag = "pins",
    summary = "Pins",
    responses((status = 200, description = "the pins", body = Vec<crate::store::PinInfo>)),
)]
async fn list_pins(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.list_pins()).await?).into_response())
}

/// `{"replicas": N}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct PinBody {
    /// How many nodes should hold it (default 1).
    replicas: Option<u32>,
}

#[utoipa::path(
    put,
    path = "/api/v1/pins/{reference}",
    tag = "pins",
    summary = "Pin an artifact: {\"replicas\": N} (or no body: one replica)",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    request_body(content = Option<PinBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "pinned", body = Pinned),
        (status = 404, description = "no such artifact, here or in the mesh"),
        (status = 502, description = "fetching from the mesh failed"),
        (status = 503, description = "the node is stopping"),
    ),
)]
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
    Ok(axum::Json(Pinned { id, replicas }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/pins/{reference}",
    tag = "pins",
    summary = "Unpin an artifact",
    params(("reference" = String, Path, description = "an id, a unique id prefix or a tag (NAME:VERSION)")),
    responses(
        (status = 204, description = "unpinned"),
        (status = 404, description = "no such artifact, or not pinned"),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/gc",
    tag = "store",
    summary = "Remove what no pin or tag keeps",
    responses((status = 200, description = "what was removed", body = crate::store::GcReport)),
)]
async fn gc(State(state): State<ApiState>) -> ApiResult<Response> {
    // what fetches in progress are bringing here stays
    let keep = match &state.transfer {
        Some(t) => t.active_roots().await,
        None => Vec::new(),
    };
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.gc(&keep)).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/store/verify",
    tag = "store",
    summary = "Re-hash every blob",
    responses((status = 200, description = "what does not match", body = Verified)),
)]
async fn verify(State(state): State<ApiState>) -> ApiResult<Response> {
    let store = state.store.clone();
    let problems = blocking(move || store.verify()).await?;
    Ok(axum::Json(Verified { problems }).into_response())
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
