//! Multipart uploads: kept on the node that created them, under
//! `$WEFT_HOME/s3-uploads/ID/` (`upload.json`, `part-N` with `part-N.json`);
//! completing one streams the parts, in order, into one blob of the store.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::gateway::{Gateway, blocking, internal, now_ms, store_error, timestamp};
use super::ingest::{BodyReader, Expected, MAX_UPLOAD};
use super::keys::Perm;
use super::names;
use super::records::{DEFAULT_CONTENT_TYPE, Meta, PartRecord, UPLOAD_V, UploadRecord, etag_of};
use crate::home::write_atomic;
use crate::store::Keep;

/// Parts of one upload at most (S3's limit).
const MAX_PARTS: i32 = 10_000;

fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn no_upload(id: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        format!(
            "no multipart upload {id:.40} on this node (uploads are kept by the node that created them)"
        ),
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl Gateway {
    fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads_dir.join(id)
    }

    /// The upload `id` of `bucket`/`key`.
    fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<UploadRecord> {
        if !valid_id(id) {
            return Err(no_upload(id));
        }
        let rec: UploadRecord =
            read_json(&self.upload_dir(id).join("upload.json")).map_err(|_| no_upload(id))?;
        if rec.v > UPLOAD_V || rec.bucket != bucket || rec.key != key {
            return Err(no_upload(id));
        }
        Ok(rec)
    }

    fn parts(&self, id: &str) -> S3Result<Vec<PartRecord>> {
        let dir = self.upload_dir(id);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|_| no_upload(id))? {
            let e = e.map_err(internal)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") && name.ends_with(".json") {
                let rec: PartRecord = read_json(&e.path()).map_err(internal)?;
                out.push(rec);
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    pub(super) async fn mp_create(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.bucket_exists(&input.bucket).await?;
        names::object_tag(&input.bucket, &input.key, names::OBJECT)
            .map_err(|e| S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()))?;
        let id = hex::encode(rand::random::<[u8; 16]>());
        let rec = UploadRecord {
            v: UPLOAD_V,
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            created_ms: now_ms(),
            content_type: input
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
            metadata: input
                .metadata
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            checksum_algorithm: input
                .checksum_algorithm
                .as_ref()
                .map(|a| a.as_str().to_string()),
        };
        let dir = self.upload_dir(&id);
        blocking(move || {
            fs::create_dir_all(&dir).map_err(internal)?;
            let bytes = serde_json::to_vec(&rec).map_err(internal)?;
            write_atomic(&dir.join("upload.json"), &bytes, 0o600).map_err(internal)
        })
        .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    pub(super) async fn mp_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers go from 1 to 10000"
            ));
        }
        if input.content_length.is_some_and(|n| n as u64 > MAX_UPLOAD) {
            return Err(s3_error!(EntityTooLarge, "a part may have at most 5 GiB"));
        }
        let expected = Expected::from_request(
            &req.headers,
            input.checksum_crc32.clone(),
            input.checksum_crc32c.clone(),
            input.checksum_crc64nvme.clone(),
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        );
        let (mut reader, outcome) =
            BodyReader::new(input.body, expected, req.trailing_headers, MAX_UPLOAD);
        let dir = self.upload_dir(&input.upload_id);
        let n = input.part_number as u32;
        let written =
            tokio::task::spawn_blocking(move || -> io::Result<(blake3::Hash, PathBuf)> {
                let tmp = dir.join(format!(
                    ".part-{n}.{}.tmp",
                    hex::encode(rand::random::<[u8; 8]>())
                ));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; 256 * 1024];
                let r = (|| {
                    loop {
                        let k = reader.read(&mut buf)?;
                        if k == 0 {
                            break;
                        }
                        hasher.update(&buf[..k]);
                        f.write_all(&buf[..k])?;
                    }
                    f.sync_data()
                })();
                if let Err(e) = r {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                Ok((hasher.finalize(), tmp))
            })
            .await
            .map_err(internal)?;
        if let Some(f) = outcome.failure() {
            return Err(f);
        }
        let (hash, tmp) = written.map_err(internal)?;
        let seen = outcome.seen();
        self.metrics.s3.bytes_in(seen.size);
        let etag = hex::encode(&hash.as_bytes()[..16]);
        let rec = PartRecord {
            v: UPLOAD_V,
            number: n,
            size: seen.size,
            etag: etag.clone(),
            last_modified_ms: now_ms(),
            checksums: seen.sums.clone(),
        };
        let dir = self.upload_dir(&input.upload_id);
        blocking(move || {
            fs::rename(&tmp, dir.join(format!("part-{n}"))).map_err(internal)?;
            let bytes = serde_json::to_vec(&rec).map_err(internal)?;
            write_atomic(&dir.join(format!("part-{n}.json")), &bytes, 0o600).map_err(internal)
        })
        .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: seen.sums.crc32,
            checksum_crc32c: seen.sums.crc32c,
            checksum_crc64nvme: seen.sums.crc64nvme,
            ..Default::default()
        }))
    }

    pub(super) async fn mp_complete(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.bucket_exists(&input.bucket).await?;
        let rec = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let have = self.parts(&input.upload_id)?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "the upload names no parts"));
        }
        let mut files = Vec::new();
        let mut last = 0;
        for p in &asked {
            let n = p.part_number.unwrap_or(0);
            if n <= last {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order"
                ));
            }
            last = n;
            let Some(h) = have.iter().find(|h| h.number as i32 == n) else {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidPart,
                    format!("part {n} was not uploaded"),
                ));
            };
            if let Some(e) = &p.e_tag
                && e.value() != h.etag
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidPart,
                    format!("part {n} has ETag {}, not {}", h.etag, e.value()),
                ));
            }
            files.push(self.upload_dir(&input.upload_id).join(format!("part-{n}")));
        }
        let obj_tag = names::object_tag(&input.bucket, &input.key, names::OBJECT)
            .map_err(|e| S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()))?;
        let store = self.store.clone();
        let added = blocking(move || {
            let mut reader: Box<dyn Read + Send> = Box::new(io::empty());
            for f in files {
                let file = fs::File::open(&f).map_err(internal)?;
                reader = Box::new(reader.chain(file));
            }
            store
                .add_reader_kept(
                    reader,
                    &Keep {
                        pin: None,
                        tag: Some(obj_tag),
                    },
                    &(),
                )
                .map_err(store_error)
        })
        .await?;
        if let Some(t) = &self.transfer {
            t.announce(added.id).await;
        }
        let etag = format!("{}-{}", etag_of(&added.id), asked.len());
        let meta = Meta {
            v: super::records::META_V,
            data: added.id,
            size: added.size,
            etag: etag.clone(),
            content_type: rec.content_type,
            metadata: rec.metadata,
            checksums: Default::default(),
            parts: asked.len() as u32,
        };
        self.write_meta(&input.bucket, &input.key, &meta, false)
            .await?;
        let dir = self.upload_dir(&input.upload_id);
        let _ = blocking(move || fs::remove_dir_all(&dir).map_err(internal)).await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    pub(super) async fn mp_abort(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Write)?;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let dir = self.upload_dir(&input.upload_id);
        blocking(move || fs::remove_dir_all(&dir).map_err(internal)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn mp_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let all: Vec<PartRecord> = self
            .parts(&input.upload_id)?
            .into_iter()
            .filter(|p| p.number as i32 > marker)
            .collect();
        let truncated = all.len() > max;
        let parts: Vec<Part> = all
            .into_iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(ETag::Strong(p.etag)),
                last_modified: Some(timestamp(p.last_modified_ms)),
                checksum_crc32: p.checksums.crc32,
                checksum_crc32c: p.checksums.crc32c,
                checksum_crc64nvme: p.checksums.crc64nvme,
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    pub(super) async fn mp_list_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.allow(req.credentials.as_ref(), &input.bucket, Perm::Read)?;
        self.bucket_exists(&input.bucket).await?;
        let dir = self.uploads_dir.clone();
        let bucket = input.bucket.clone();
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut found = blocking(move || {
            let mut out = Vec::new();
            let Ok(rd) = fs::read_dir(&dir) else {
                return Ok(out);
            };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !valid_id(&id) {
                    continue;
                }
                let Ok(rec) = read_json::<UploadRecord>(&e.path().join("upload.json")) else {
                    continue;
                };
                if rec.bucket == bucket && rec.key.starts_with(&prefix) {
                    out.push((rec.key.clone(), id, rec.created_ms));
                }
            }
            Ok(out)
        })
        .await?;
        found.sort();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let truncated = found.len() > max;
        let uploads = found
            .into_iter()
            .take(max)
            .map(|(key, id, ms)| MultipartUpload {
                key: Some(key),
                upload_id: Some(id),
                initiated: Some(timestamp(ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
