//! Request bodies in, response bodies out, without holding them in memory.
//!
//! An upload is read on the blocking pool as a `Read` that pulls the
//! request's byte stream chunk by chunk, computes the CRC checksums as the
//! bytes pass, counts them against the size limit and, at the end, checks
//! the checksums the client sent (headers, or `aws-chunked` trailers that
//! arrive after the last chunk). A failure is kept aside and the read
//! fails, so the import stores nothing.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme};
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, TrailingHeaders};
use tokio::sync::mpsc;

use super::records::Checksums;

/// The largest object or part taken in one request (S3's limit): 5 GiB.
pub const MAX_UPLOAD: u64 = 5 << 30;

/// Which checksums the client announced, and the values it sent up front.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub sums: Checksums,
    pub crc32: bool,
    pub crc32c: bool,
    pub crc64nvme: bool,
}

impl Expected {
    /// From the request: values in `x-amz-checksum-*`, algorithms from the
    /// `x-amz-sdk-checksum-algorithm` and `x-amz-trailer` headers.
    pub fn from_request(
        headers: &http::HeaderMap,
        crc32: Option<String>,
        crc32c: Option<String>,
        crc64nvme: Option<String>,
        algorithm: Option<&str>,
    ) -> Expected {
        let mut e = Expected {
            crc32: crc32.is_some(),
            crc32c: crc32c.is_some(),
            crc64nvme: crc64nvme.is_some(),
            sums: Checksums {
                crc32,
                crc32c,
                crc64nvme,
            },
        };
        let mut announce = |name: &str| match name.to_ascii_lowercase().as_str() {
            "crc32" | "x-amz-checksum-crc32" => e.crc32 = true,
            "crc32c" | "x-amz-checksum-crc32c" => e.crc32c = true,
            "crc64nvme" | "x-amz-checksum-crc64nvme" => e.crc64nvme = true,
            _ => {}
        };
        if let Some(a) = algorithm {
            announce(a);
        }
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for name in t.split(',') {
                announce(name.trim());
            }
        }
        e
    }
}

/// What a finished read saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub size: u64,
    /// The checksums announced, as computed (and checked).
    pub sums: Checksums,
}

/// A request body as a blocking `Read` (use it on the blocking pool only).
pub struct BodyReader {
    rt: tokio::runtime::Handle,
    body: Option<StreamingBlob>,
    chunk: Bytes,
    expected: Expected,
    trailers: Option<TrailingHeaders>,
    crc32: Option<Crc32>,
    crc32c: Option<Crc32c>,
    crc64: Option<Crc64Nvme>,
    limit: u64,
    seen: Arc<Mutex<Seen>>,
    failure: Arc<Mutex<Option<S3Error>>>,
    done: bool,
}

/// What the caller keeps of a [`BodyReader`] it hands to an import.
#[derive(Clone)]
pub struct Outcome {
    pub seen: Arc<Mutex<Seen>>,
    pub failure: Arc<Mutex<Option<S3Error>>>,
}

impl Outcome {
    /// The refusal kept by the reader, if any.
    pub fn failure(&self) -> Option<S3Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl BodyReader {
    pub fn new(
        body: Option<StreamingBlob>,
        expected: Expected,
        trailers: Option<TrailingHeaders>,
        limit: u64,
    ) -> (BodyReader, Outcome) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let failure = Arc::new(Mutex::new(None));
        let r = BodyReader {
            rt: tokio::runtime::Handle::current(),
            body,
            chunk: Bytes::new(),
            crc32: expected.crc32.then(Crc32::new),
            crc32c: expected.crc32c.then(Crc32c::new),
            crc64: expected.crc64nvme.then(Crc64Nvme::new),
            expected,
            trailers,
            limit,
            seen: seen.clone(),
            failure: failure.clone(),
            done: false,
        };
        (r, Outcome { seen, failure })
    }

    fn fail(&self, e: S3Error) -> io::Error {
        let msg = e.message().unwrap_or("refused").to_string();
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        io::Error::other(msg)
    }

    fn finish(&mut self) -> io::Result<()> {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let got = Checksums {
            crc32: self.crc32.take().map(|c| b64(c.finalize().as_ref())),
            crc32c: self.crc32c.take().map(|c| b64(c.finalize().as_ref())),
            crc64nvme: self.crc64.take().map(|c| b64(c.finalize().as_ref())),
        };
        let mut want = self.expected.sums.clone();
        if let Some(t) = self.trailers.as_ref().and_then(|t| t.take()) {
            let get = |n: &str| t.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            want.crc32 = want.crc32.or_else(|| get("x-amz-checksum-crc32"));
            want.crc32c = want.crc32c.or_else(|| get("x-amz-checksum-crc32c"));
            want.crc64nvme = want.crc64nvme.or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        for (name, w, g) in [
            ("CRC32", &want.crc32, &got.crc32),
            ("CRC32C", &want.crc32c, &got.crc32c),
            ("CRC64NVME", &want.crc64nvme, &got.crc64nvme),
        ] {
            if let (Some(w), Some(g)) = (w, g)
                && w != g
            {
                return Err(self.fail(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!("the {name} checksum sent ({w}) does not match the bytes received ({g}); nothing was stored"),
                )));
            }
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).sums = got;
        Ok(())
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            let next = match self.body.as_mut() {
                Some(b) => self.rt.block_on(b.next()),
                None => None,
            };
            match next {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    return Err(self.fail(S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("reading the request body: {e}"),
                    )));
                }
                None => {
                    self.done = true;
                    self.finish()?;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        let part = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&part);
        if let Some(c) = &mut self.crc32 {
            c.update(&part);
        }
        if let Some(c) = &mut self.crc32c {
            c.update(&part);
        }
        if let Some(c) = &mut self.crc64 {
            c.update(&part);
        }
        let size = {
            let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            s.size += n as u64;
            s.size
        };
        if size > self.limit {
            return Err(self.fail(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("the body is larger than {} bytes", self.limit),
            )));
        }
        Ok(n)
    }
}

/// A response body fed by a task through a channel.
pub struct ChannelBody(pub mpsc::Receiver<io::Result<Bytes>>);

impl futures::Stream for ChannelBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// What [`send_range`] ran into.
enum SendEnd {
    /// The client went away: stop.
    Gone,
    /// Reading failed: try again from where it stopped.
    Read(io::Error, u64),
}

/// Sends `[pos, end)` of `file`; returns how far it got on a read error.
fn send_range(
    file: &mut std::fs::File,
    pos: u64,
    end: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    on_bytes: &(impl Fn(u64) + Send),
) -> Result<(), SendEnd> {
    use std::io::{Seek, SeekFrom};
    if let Err(e) = file.seek(SeekFrom::Start(pos)) {
        return Err(SendEnd::Read(e, pos));
    }
    let mut at = pos;
    while at < end {
        let mut buf = vec![0u8; (256 * 1024).min((end - at) as usize)];
        match file.read(&mut buf) {
            Ok(0) => {
                return Err(SendEnd::Read(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the blob ended early"),
                    at,
                ));
            }
            Ok(n) => {
                buf.truncate(n);
                at += n as u64;
                on_bytes(n as u64);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Err(SendEnd::Gone);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SendEnd::Read(e, at)),
        }
    }
    Ok(())
}

/// Streams `[start, start + len)` of blob `h`: from the store when it is
/// whole here, else while the data plane fetches it, each piece as soon as
/// its chunk groups are verified and recorded (the partial blob's record),
/// so a large object not held here is read as it lands.
pub fn stream_blob(
    store: crate::store::Store,
    transfer: Option<crate::transfer::TransferHandle>,
    h: weft_protocol::Hash,
    start: u64,
    len: u64,
    on_bytes: impl Fn(u64) + Send + 'static,
) -> StreamingBlob {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(AtomicBool::new(false));
        let here = {
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.blob_size(&h).is_ok())
                .await
                .unwrap_or(false)
        };
        if !here {
            let Some(t) = transfer else {
                let _ = tx
                    .send(Err(io::Error::other(format!("{h} is not held here"))))
                    .await;
                return;
            };
            match t.start_fetch(h).await {
                Ok(ticket) => {
                    let failed = failed.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        if let Err(e) = ticket.finished().await {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        }
                        done.store(true, Ordering::SeqCst);
                    });
                }
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        } else {
            done.store(true, Ordering::SeqCst);
        }
        let _ = tokio::task::spawn_blocking(move || {
            let group = weft_protocol::CHUNK_GROUP_BYTES;
            let end = start + len;
            let mut pos = start;
            let mut idle_after_done = 0u32;
            while pos < end {
                if let Ok(mut f) = store.open_blob(&h) {
                    match send_range(&mut f, pos, end, &tx, &on_bytes) {
                        Ok(()) | Err(SendEnd::Gone) => return,
                        Err(SendEnd::Read(e, _)) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                let avail = match store.partial_record(&h) {
                    Ok(Some(r)) => r
                        .verified
                        .iter()
                        .find(|(a, b)| a * group <= pos && pos < b * group)
                        .map(|(_, b)| (b * group).min(end)),
                    _ => None,
                };
                if let Some(avail_end) = avail {
                    let path = store.partial_dir().join(format!("{}.data", h.to_hex()));
                    if let Ok(mut f) = std::fs::File::open(&path) {
                        match send_range(&mut f, pos, avail_end, &tx, &on_bytes) {
                            Ok(()) => {
                                pos = avail_end;
                                continue;
                            }
                            Err(SendEnd::Gone) => return,
                            // the fetch finished and moved the file: go on from the blob
                            Err(SendEnd::Read(_, at)) => pos = at,
                        }
                    }
                }
                if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.blocking_send(Err(io::Error::other(e)));
                    return;
                }
                if done.load(Ordering::SeqCst) {
                    idle_after_done += 1;
                    if idle_after_done > 100 {
                        let _ = tx.blocking_send(Err(io::Error::other(format!(
                            "{h}: the fetch ended but the blob is not whole here"
                        ))));
                        return;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
        .await;
    });
    StreamingBlob::wrap(ChannelBody(rx))
}
