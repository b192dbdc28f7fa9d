//! The S3 operations, mapped onto the store's blobs and tags (see `names`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use weft_protocol::{Hash, TagName, TagVersion};

use super::ingest::{BodyReader, Expected, MAX_UPLOAD, stream_blob};
use super::keys::{KeyCache, Perm};
use super::names::{self, NameError};
use super::records::{DEFAULT_CONTENT_TYPE, MAX_META_BYTES, Meta, etag_of};
use crate::api::Metrics;
use crate::store::{Keep, Store, StoreError};
use crate::transfer::TransferHandle;

/// Keys listed per page at most (S3's default and maximum).
const MAX_KEYS: usize = 1000;

/// Listings read the metadata of this many objects at once.
const META_CONCURRENCY: usize = 16;

/// The gateway: the store, the mesh to fetch from, the keys.
pub struct Gateway {
    pub(super) store: Store,
    pub(super) transfer: Option<TransferHandle>,
    pub(super) keys: Arc<KeyCache>,
    pub(super) uploads_dir: PathBuf,
    pub(super) metrics: Arc<Metrics>,
}

/// One object as the tags say.
#[derive(Debug, Clone, Default)]
pub(super) struct Entry {
    pub(super) meta: Option<TagVersion>,
    pub(super) object: Option<TagVersion>,
}

/// What a read of an object found.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) meta: Meta,
    pub(super) modified_ms: u64,
}

pub(super) fn internal(e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

fn name_error(e: NameError) -> S3Error {
    match e {
        NameError::Bucket(_) => {
            S3Error::with_message(S3ErrorCode::InvalidBucketName, e.to_string())
        }
        NameError::EmptyKey => S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()),
        NameError::TooLong(_) => S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()),
    }
}

pub(super) fn store_error(e: StoreError) -> S3Error {
    match e {
        StoreError::NoSpace { .. } => {
            S3Error::with_message(S3ErrorCode::InternalError, format!("{e}"))
        }
        e => internal(e),
    }
}

pub(super) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs blocking store work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// Percent-encodes for `encoding-type=url` (what boto3 decodes with
/// `unquote_plus`): everything but unreserved characters and `/`.
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn metadata_map(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

impl Gateway {
    /// Refuses a request whose key may not do `want` with `bucket`.
    pub(super) fn allow(
        &self,
        creds: Option<&s3s::auth::Credentials>,
        bucket: &str,
        want: Perm,
    ) -> S3Result<()> {
        let Some(c) = creds else {
            return Err(s3_error!(AccessDenied, "the request is not signed"));
        };
        let Some(key) = self.keys.get(&c.access_key) else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        if key.allows(bucket, want) {
            Ok(())
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!(
                    "the key {} may not {} bucket {bucket}",
                    c.access_key,
                    if want == Perm::Write { "write" } else { "read" }
                ),
            ))
        }
    }

    pub(super) async fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        let tag = names::bucket_tag(bucket).map_err(|_| s3_error!(NoSuchBucket))?;
        let store = self.store.clone();
        let live = blocking(move || store.live_tag(&tag).map_err(store_error)).await?;
        if live.is_none() {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchBucket,
                format!("no bucket named {bucket}"),
            ));
        }
        Ok(())
    }

    /// Makes `h` whole here, fetching it from the mesh when needed.
    pub(super) async fn ensure_local(&self, h: Hash) -> S3Result<()> {
        let store = self.store.clone();
        let here = blocking(move || Ok(store.blob_size(&h).is_ok())).await?;
        if here {
            return Ok(());
        }
        let Some(t) = &self.transfer else {
            return Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("{h} is not held here and this node has no data plane"),
            ));
        };
        t.fetch(h).await.map_err(|e| {
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("fetching the object's bytes from the mesh: {e}"),
            )
        })?;
        Ok(())
    }

    /// Waits until the bytes at `offset` of `h` can be read here (whole, or
    /// verified in its partial blob), starting the fetch when needed, so a
    /// blob no peer can give is answered 503 before any header is sent.
    async fn first_bytes_ready(&self, h: Hash, offset: u64) -> S3Result<()> {
        let ready = {
            let store = self.store.clone();
            move || {
                if store.blob_size(&h).is_ok() {
                    return true;
                }
                let g = offset / weft_protocol::CHUNK_GROUP_BYTES;
                matches!(store.partial_record(&h), Ok(Some(r)) if r.verified.contains(g))
            }
        };
        let check = ready.clone();
        if blocking(move || Ok(check())).await? {
            return Ok(());
        }
        let Some(t) = &self.transfer else {
            return self.ensure_local(h).await;
        };
        let unavailable = |e: String| {
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("fetching the object's bytes from the mesh: {e}"),
            )
        };
        let mut ticket = t
            .start_fetch(h)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        loop {
            let event = tokio::time::timeout(Duration::from_millis(200), ticket.next()).await;
            if let Ok(Some(crate::transfer::FetchEvent::Finished(r))) = &event {
                return r
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| unavailable(e.to_string()));
            }
            if let Ok(None) = event {
                return Ok(());
            }
            let check = ready.clone();
            if blocking(move || Ok(check())).await? {
                return Ok(());
            }
        }
    }

    async fn read_small(&self, h: Hash) -> S3Result<Vec<u8>> {
        self.ensure_local(h).await?;
        let store = self.store.clone();
        blocking(move || {
            let f = store.open_blob(&h).map_err(store_error)?;
            let mut out = Vec::new();
            f.take(MAX_META_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(internal)?;
            Ok(out)
        })
        .await
    }

    /// The object's metadata from its tags.
    pub(super) async fn found(&self, e: &Entry) -> S3Result<Found> {
        if let Some(m) = &e.meta
            && let Some(h) = m.target
        {
            let bytes = self.read_small(h).await?;
            let meta = Meta::parse(&bytes)
                .ok_or_else(|| internal(format!("the object's meta.json {h} is not readable")))?;
            return Ok(Found {
                meta,
                modified_ms: m.hlc.wall_ms,
            });
        }
        if let Some(o) = &e.object
            && let Some(h) = o.target
        {
            self.ensure_local(h).await?;
            let store = self.store.clone();
            let size = blocking(move || store.blob_size(&h).map_err(store_error)).await?;
            return Ok(Found {
                meta: Meta {
                    v: super::records::META_V,
                    data: h,
                    size,
                    etag: etag_of(&h),
                    content_type: DEFAULT_CONTENT_TYPE.into(),
                    metadata: BTreeMap::new(),
                    checksums: Default::default(),
                    parts: 0,
                },
                modified_ms: o.hlc.wall_ms,
            });
        }
        Err(s3_error!(NoSuchKey))
    }

    /// An object's tags.
    pub(super) async fn entry(&self, bucket: &str, key: &str) -> S3Result<Entry> {
        let meta_tag = names::object_tag(bucket, key, names::META).map_err(name_error)?;
        let obj_tag = names::object_tag(bucket, key, names::OBJECT).map_err(name_error)?;
        let store = self.store.clone();
        blocking(move || {
            Ok(Entry {
                meta: store.live_tag(&meta_tag).map_err(store_error)?,
                object: store.live_tag(&obj_tag).map_err(store_error)?,
            })
        })
        .await
    }

    /// A readable object.
    pub(super) async fn object(&self, bucket: &str, key: &str) -> S3Result<Found> {
        self.bucket_exists(bucket).await?;
        let e = self.entry(bucket, key).await?;
        if e.meta.is_none() && e.object.is_none() {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                format!("no object {key:?} in bucket {bucket}"),
            ));
        }
        self.found(&e).await
    }

    /// Every object of a bucket, by key.
    pub(super) async fn entries(&self, bucket: &str) -> S3Result<BTreeMap<String, Entry>> {
        let prefix = names::object_prefix(bucket);
        let store = self.store.clone();
        blocking(move || {
            let mut out: BTreeMap<String, Entry> = BTreeMap::new();
            for (name, v) in store.live_tags_with_prefix(&prefix).map_err(store_error)? {
                let Some((key, version)) = names::parse_object_tag(&prefix, name.as_str()) else {
                    continue;
                };
                match version {
                    names::META => out.entry(key).or_default().meta = Some(v),
                    names::OBJECT => out.entry(key).or_default().object = Some(v),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    /// Writes an object: its data tag already points at `meta.data` (or
    /// is set here), then its `meta.json`.
    pub(super) async fn write_meta(
        &self,
        bucket: &str,
        key: &str,
        meta: &Meta,
        set_object: bool,
    ) -> S3Result<u64> {
        let meta_tag = names::object_tag(bucket, key, names::META).map_err(name_error)?;
        let obj_tag = names::object_tag(bucket, key, names::OBJECT).map_err(name_error)?;
        let bytes = meta.to_bytes();
        let data = meta.data;
        let store = self.store.clone();
        blocking(move || {
            if set_object {
                store.set_tag(&obj_tag, Some(data)).map_err(store_error)?;
            }
            store
                .add_reader_kept(
                    &bytes[..],
                    &Keep {
                        pin: None,
                        tag: Some(meta_tag.clone()),
                    },
                    &(),
                )
                .map_err(store_error)?;
            Ok(store
                .live_tag(&meta_tag)
                .map_err(store_error)?
                .map(|v| v.hlc.wall_ms)
                .unwrap_or_else(now_ms))
        })
        .await
    }

    /// Streams a request body into the store; the object's data tag is set
    /// only once every byte is in and the checksums hold.
    pub(super) async fn ingest(
        &self,
        body: Option<StreamingBlob>,
        expected: Expected,
        trailers: Option<s3s::TrailingHeaders>,
        tag: Option<TagName>,
    ) -> S3Result<(Hash, super::ingest::Seen)> {
        let (reader, outcome) = BodyReader::new(body, expected, trailers, MAX_UPLOAD);
        let store = self.store.clone();
        let o = outcome.clone();
        let result = tokio::task::spawn_blocking(move || {
            store.add_reader_kept(reader, &Keep { pin: None, tag }, &())
        })
        .await
        .map_err(internal)?;
        if let Some(f) = o.failure() {
            return Err(f);
        }
        let added = result.map_err(store_error)?;
        if let Some(t) = &self.transfer {
            t.announce(added.id).await;
        }
        let seen = outcome.seen();
        self.metrics.s3.bytes_in(seen.size);
        Ok((added.id, seen))
    }

    async fn remove_object(&self, bucket: &str, key: &str) -> S3Result<()> {
        let meta_tag = names::object_tag(bucket, key, names::META).map_err(name_error)?;
        let obj_tag = names::object_tag(bucket, key, names::OBJECT).map_err(name_error)?;
        let store = self.store.clone();
        blocking(move || {
            for t in [&meta_tag, &obj_tag] {
                if store.live_tag(t).map_err(store_error)?.is_some() {
                    store.set_tag(t, None).map_err(store_error)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Sizes and ETags of listed keys.
    async fn describe(&self, keys: Vec<(String, Entry)>) -> Vec<Object> {
        futures::stream::iter(keys)
            .map(|(key, e)| async move {
                let (size, etag, ms) = match self.found(&e).await {
                    Ok(f) => (f.meta.size, f.meta.etag, f.modified_ms),
                    Err(_) => {
                        let v = e.object.as_ref().or(e.meta.as_ref());
                        let h = v.and_then(|v| v.target);
                        (
                            0,
                            h.map(|h| etag_of(&h)).unwrap_or_default(),
                            v.map(|v| v.hlc.wall_ms).unwrap_or(0),
                        )
                    }
                };
                Object {
                    key: Some(key),
                    size: Some(size as i64),
                    e_tag: Some(ETag::Strong(etag)),
                    last_modified: Some(timestamp(ms)),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }
            })
            .buffered(META_CONCURRENCY)
            .collect()
            .await
    }

    /// One page of a listing: objects and common prefixes after `after`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: usize,
    ) -> S3Result<Page> {
        self.bucket_exists(bucket).await?;
        let all = self.entries(bucket).await?;
        let mut page = Page::default();
        let mut picked = Vec::new();
        let mut last_prefix: Option<String> = None;
        for (key, e) in all {
            if !key.starts_with(prefix) {
                continue;
            }
            if let Some(a) = after
                && key.as_str() <= a
            {
                continue;
            }
            let common = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|i| key[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(cp) = common {
                if last_prefix.as_deref() == Some(cp.as_str()) {
                    continue;
                }
                if let Some(a) = after
                    && cp.as_str() <= a
                {
                    continue;
                }
                if picked.len() + page.prefixes.len() == max_keys {
                    page.truncated = true;
                    break;
                }
                page.next = Some(cp.clone());
                last_prefix = Some(cp.clone());
                page.prefixes.push(cp);
                continue;
            }
            if picked.len() + page.prefixes.len() == max_keys {
                page.truncated = true;
                break;
            }
            page.next = Some(key.clone());
            picked.push((key, e));
        }
        page.objects = self.describe(picked).await;
        Ok(page)
    }
}

#[derive(Default)]
struct Page {
    objects: Vec<Object>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or prefix listed.
    next: Option<String>,
}

fn wants_url(e: &Option<EncodingType>) -> bool {
    e.as_ref()
        .is_some_and(|e| e.as_str().eq_ignore_ascii_case("url"))
}

fn max_keys(m: Option<i32>) -> usize {
    m.map(|m| m.clamp(0, MAX_KEYS as i32) as usize)
        .unwrap_or(MAX_KEYS)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let Some(c) = req.credentials.as_ref() else {
            return Err(s3_error!(AccessDenied));
        };
        let Some(key) = self.keys.get(&c.access_key) else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        let store = self.store.clone();
        let tags = blocking(move || {
            store
                .live_tags_with_prefix(names::ROOT)
                .map_err(store_error)
        })
        .await?;
        let buckets = tags
            .iter()
            .filter_map(|(name, v)| {
                let b = names::parse_bucket_tag(name.as_str())?;
                key.allows(b, Perm::Read).then(|| Bucket {
                    name: Some(b.to_string()),
                    creation_date: Some(timestamp(v.hlc.wall_ms)),
                    ..Default::default()
                })
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("weft".into()),
                id: Some("weft".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket.clone();
        self.allow(req.credentials.as_ref(), &bucket, Perm::Write)?;
        let tag = names::bucket_tag(&bucket).map_err(name_error)?;
        let store = self.store.clone();
        let record =
            serde_json::to_vec(&serde_json::json!({"v": 1, "bucket": bucket})).map_err(internal)?;
        blocking(move || {
            if store.live_tag(&tag).map_err(store_error)?.is_some() {
                return Err(s3_error!(BucketAlreadyOwnedByYou));
            }
            store
                .add_reader_kept(
                    &record[..],
                    &Keep {
                        pin: None,
                        tag: Some(tag),
                    },
                    &(),
                )
                .map_err(store_error)?;
            Ok(())
        })
        .await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.allow(req.credentials.as_ref(), &req.input.bucket, Perm::Read)?;
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.allow(req.credentials.as_ref(), &req.input.bucket, Perm::Read)?;
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket.clone();
        self.allow(req.credentials.as_ref(), &bucket, Perm::Write)?;
        self.bucket_exists(&bucket).await?;
        if !self.entries(&bucket).await?.is_empty() {
            return Err(s3_error!(BucketNotEmpty));
        }
        let tag = names::bucket_tag(&bucket).map_err(name_error)?;
        let store = self.store.clone();
        blocking(move || store.remove_tag(&tag).map(|_| ()).map_err(store_error)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        if input.content_length.is_some_and(|n| n as u64 > MAX_UPLOAD) {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("an object may have at most {MAX_UPLOAD} bytes; use a multipart upload"),
            ));
        }
        self.bucket_exists(&input.bucket).await?;
        let obj_tag =
            names::object_tag(&input.bucket, &input.key, names::OBJECT).map_err(name_error)?;
        let expected = Expected::from_request(
            &req.headers,
            input.checksum_crc32.clone(),
            input.checksum_crc32c.clone(),
            input.checksum_crc64nvme.clone(),
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        );
        let (data, seen) = self
            .ingest(input.body, expected, req.trailing_headers, Some(obj_tag))
            .await?;
        let meta = Meta {
            v: super::records::META_V,
            data,
            size: seen.size,
            etag: etag_of(&data),
            content_type: input
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
            metadata: metadata_map(input.metadata),
            checksums: seen.sums.clone(),
            parts: 0,
        };
        self.write_meta(&input.bucket, &input.key, &meta, false)
            .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(meta.etag)),
            checksum_crc32: seen.sums.crc32,
            checksum_crc32c: seen.sums.crc32c,
            checksum_crc64nvme: seen.sums.crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        let found = self.object(&input.bucket, &input.key).await?;
        let size = found.meta.size;
        let range = match &input.range {
            Some(r) => Some(r.check(size).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidRange,
                    format!("the range is outside the object's {size} bytes"),
                )
            })?),
            None => None,
        };
        let (start, end) = range
            .as_ref()
            .map(|r| (r.start, r.end))
            .unwrap_or((0, size));
        self.first_bytes_ready(found.meta.data, start).await?;
        let metrics = self.metrics.clone();
        let body = stream_blob(
            self.store.clone(),
            self.transfer.clone(),
            found.meta.data,
            start,
            end - start,
            move |n| metrics.s3.bytes_out(n),
        );
        let meta = found.meta;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((end - start) as i64),
            content_range: range
                .as_ref()
                .map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1))),
            accept_ranges: Some("bytes".into()),
            content_type: Some(meta.content_type),
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(timestamp(found.modified_ms)),
            metadata: (!meta.metadata.is_empty()).then(|| meta.metadata.into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        let found = self.object(&input.bucket, &input.key).await?;
        let meta = found.meta;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            accept_ranges: Some("bytes".into()),
            content_type: Some(meta.content_type),
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(timestamp(found.modified_ms)),
            metadata: (!meta.metadata.is_empty()).then(|| meta.metadata.into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are served"
            ));
        };
        self.allow(req.credentials.as_ref(), src_bucket, Perm::Read)?;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.bucket_exists(&input.bucket).await?;
        let src = self.object(src_bucket, src_key).await?;
        let mut meta = src.meta;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if replace {
            meta.metadata = metadata_map(input.metadata);
            meta.content_type = input
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
        }
        let ms = self
            .write_meta(&input.bucket, &input.key, &meta, true)
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(meta.etag)),
                last_modified: Some(timestamp(ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.bucket_exists(&input.bucket).await?;
        self.remove_object(&input.bucket, &input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.bucket_exists(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            match self.remove_object(&input.bucket, &o.key).await {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let page = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        let url = wants_url(&input.encoding_type);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let mut objects = page.objects;
        for o in &mut objects {
            o.key = o.key.take().map(enc);
        }
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            marker: input.marker.map(enc),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_marker: if page.truncated && input.delimiter.is_some() {
                page.next.map(enc)
            } else {
                None
            },
            contents: Some(objects),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect(),
            ),
            delimiter: input.delimiter.map(enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let after = match &input.continuation_token {
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        s3_error!(InvalidArgument, "the continuation token is not valid")
                    })?,
            ),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let page = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.as_deref(),
                max,
            )
            .await?;
        let url = wants_url(&input.encoding_type);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let mut objects = page.objects;
        for o in &mut objects {
            o.key = o.key.take().map(enc);
        }
        let count = objects.len() + page.prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            max_keys: Some(max as i32),
            key_count: Some(count as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: if page.truncated {
                page.next.map(hex::encode)
            } else {
                None
            },
            contents: Some(objects),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect(),
            ),
            delimiter: input.delimiter.map(enc),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(enc),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.mp_create(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.mp_upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.mp_complete(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.mp_abort(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.mp_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.mp_list_uploads(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_is_what_unquote_plus_reverses() {
        assert_eq!(url_encode("e f+g.txt"), "e%20f%2Bg.txt");
        assert_eq!(url_encode("100%/real"), "100%25/real");
        assert_eq!(url_encode("~tilde/(paren)"), "~tilde/%28paren%29");
        assert_eq!(url_encode("z/ü"), "z/%C3%BC");
    }
}
