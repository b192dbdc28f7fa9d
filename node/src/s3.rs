//! The S3 gateway: the S3 API on its own listener (`s3.listen`), built on
//! the `s3s` crate (SigV4 and SigV2 signatures, headers and presigned URLs,
//! `aws-chunked` bodies, XML), with buckets and objects mapped onto the
//! store's tags so they are named mesh-wide (see `names`).
//!
//! - `gateway`: the operations; `uploads`: multipart uploads;
//! - `names`: buckets and keys as tag names; `records`: `meta.json` and the
//!   upload records; `keys`: the access keys (`$WEFT_HOME/s3-keys`);
//! - `ingest`: request bodies streamed into the store with their checksums
//!   checked, response bodies streamed from blobs;
//! - `metrics`: `weft_s3_*`.
//!
//! The gateway serves no route of the node API.

pub mod gateway;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod records;
mod uploads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use tokio_util::sync::CancellationToken;

use crate::api::Metrics;
use crate::store::Store;
use crate::transfer::TransferHandle;
use gateway::Gateway;
use keys::KeyCache;

/// Bytes of an XML request body taken at most (a `DeleteObjects` of 1000
/// long keys fits).
pub const MAX_XML_BODY: usize = 2 * 1024 * 1024;

/// What the gateway needs.
pub struct S3Setup {
    pub store: Store,
    pub transfer: Option<TransferHandle>,
    pub metrics: Arc<Metrics>,
    /// `$WEFT_HOME/s3-keys`.
    pub keys_file: PathBuf,
    /// `$WEFT_HOME/s3-uploads`.
    pub uploads_dir: PathBuf,
    /// Buckets answer as `BUCKET.<domain>` too.
    pub domain: String,
}

struct KeyAuth(Arc<KeyCache>);

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "the access key is not known to this node (see `weft s3 key ls`)"
            )),
        }
    }
}

/// Virtual-host addressing under one domain; every other host is
/// path-style.
struct Host {
    domain: String,
}

impl S3Host for Host {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        if !self.domain.is_empty()
            && let Some(bucket) = name
                .to_ascii_lowercase()
                .strip_suffix(&format!(".{}", self.domain))
                .filter(|b| !b.is_empty())
        {
            return Ok(VirtualHost::new(self.domain.as_str()).with_bucket(bucket.to_string()));
        }
        Ok(VirtualHost::new(name))
    }
}

/// The operation a request asks for, for metrics.
fn op_name(method: &http::Method, path: &str, query: &str, bucket_in_host: bool) -> &'static str {
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    let segments = path
        .trim_start_matches('/')
        .splitn(2, '/')
        .filter(|s| !s.is_empty())
        .count()
        + usize::from(bucket_in_host);
    let object = segments >= 2;
    match (method.as_str(), object) {
        (_, _) if has("uploadId") => match method.as_str() {
            "PUT" => "UploadPart",
            "POST" => "CompleteMultipartUpload",
            "DELETE" => "AbortMultipartUpload",
            _ => "ListParts",
        },
        ("POST", true) if has("uploads") => "CreateMultipartUpload",
        ("GET", false) if has("uploads") => "ListMultipartUploads",
        ("POST", false) if has("delete") => "DeleteObjects",
        ("GET", _) if segments == 0 => "ListBuckets",
        ("GET", false) => "ListObjects",
        ("HEAD", false) => "HeadBucket",
        ("PUT", false) => "CreateBucket",
        ("DELETE", false) => "DeleteBucket",
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("PUT", true) => "PutObject",
        ("DELETE", true) => "DeleteObject",
        _ => "Other",
    }
}

/// Whether the request names its bucket in the `Host` header.
fn bucket_in_host(headers: &http::HeaderMap, domain: &str) -> bool {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map(|(n, _)| n).unwrap_or(h))
        .is_some_and(|h| {
            !domain.is_empty() && h.to_ascii_lowercase().ends_with(&format!(".{domain}"))
        })
}

/// The answer to an XML body declared larger than [`MAX_XML_BODY`].
fn too_large_xml() -> http::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>MaxMessageLengthExceeded</Code><Message>XML request bodies may have at most {MAX_XML_BODY} bytes</Message></Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// Serves the gateway on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    setup: S3Setup,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let keys = Arc::new(KeyCache::new(setup.keys_file));
    let metrics = setup.metrics.clone();
    let gw = Gateway {
        store: setup.store,
        transfer: setup.transfer,
        keys: keys.clone(),
        uploads_dir: setup.uploads_dir,
        metrics: setup.metrics,
    };
    let domain = Arc::new(setup.domain.to_ascii_lowercase());
    let mut b = S3ServiceBuilder::new(gw);
    b.set_auth(KeyAuth(keys));
    b.set_host(Host {
        domain: domain.to_string(),
    });
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = MAX_XML_BODY;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let service = b.build();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 gateway: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let domain = domain.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    let metrics = metrics.clone();
                    let op = op_name(
                        req.method(),
                        req.uri().path(),
                        req.uri().query().unwrap_or(""),
                        bucket_in_host(req.headers(), &domain),
                    );
                    let declared = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let xml_too_large = req.method() == http::Method::POST
                        && declared.is_some_and(|n| n > MAX_XML_BODY as u64);
                    async move {
                        if xml_too_large {
                            // refused before a byte of the body is read
                            metrics.s3.request(op, 400);
                            return Ok(too_large_xml());
                        }
                        let r = hyper::service::Service::call(&service, req).await;
                        if let Ok(resp) = &r {
                            metrics.s3.request(op, resp.status().as_u16());
                        }
                        r
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "S3 connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The address `s3.listen` names, checked.
pub fn listen_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        format!("s3.listen = {s:?} is not an address like 127.0.0.1:4900 (or \"\" to turn it off)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_under_the_domain_name_a_bucket() {
        let h = Host {
            domain: "s3.localhost".into(),
        };
        let vh = h.parse_host_header("photos.s3.localhost:9000").expect("vh");
        assert_eq!(vh.bucket(), Some("photos"));
        for plain in [
            "127.0.0.1:9000",
            "s3.localhost:9000",
            "localhost",
            "example.com",
        ] {
            let vh = h.parse_host_header(plain).expect("path style");
            assert_eq!(vh.bucket(), None, "{plain}");
        }
    }

    #[test]
    fn operations_are_named_for_metrics() {
        use http::Method;
        assert_eq!(op_name(&Method::GET, "/", "", false), "ListBuckets");
        assert_eq!(op_name(&Method::GET, "/k", "", true), "GetObject");
        assert_eq!(
            op_name(&Method::GET, "/", "list-type=2", true),
            "ListObjects"
        );
        assert_eq!(
            op_name(&Method::GET, "/b", "list-type=2", false),
            "ListObjects"
        );
        assert_eq!(op_name(&Method::PUT, "/b/k", "", false), "PutObject");
        assert_eq!(
            op_name(&Method::PUT, "/b/k", "partNumber=1&uploadId=x", false),
            "UploadPart"
        );
        assert_eq!(
            op_name(&Method::POST, "/b", "delete", false),
            "DeleteObjects"
        );
        assert_eq!(
            op_name(&Method::POST, "/b/k", "uploads", false),
            "CreateMultipartUpload"
        );
    }
}
