//! The S3 side of the harness: a cluster whose nodes serve the gateway and
//! share one access key, and a small AWS Signature V4 signer (headers and
//! presigned URLs) so tests send exactly what S3 clients send.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use weft_node::s3::keys::{Key, KeyFile, Perm};

use crate::{Cluster, ClusterOptions};

/// The region the test clients sign for.
pub const REGION: &str = "us-east-1";

/// An access key and secret.
#[derive(Debug, Clone)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
}

impl Cluster {
    /// Starts `n` nodes serving S3 on loopback, every one accepting the
    /// returned key (all buckets, write).
    pub async fn start_s3(n: usize) -> anyhow::Result<(Cluster, Creds)> {
        let creds = Creds {
            access_key: weft_node::s3::keys::new_access_key(),
            secret_key: weft_node::s3::keys::new_secret_key(),
        };
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            secret: weft_node::config::new_secret(),
            opts: ClusterOptions::default(),
            bootstrap: Vec::new(),
            dir,
        };
        for i in 0..n {
            let home = cluster.dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&home)?;
            let file = KeyFile {
                v: 1,
                keys: vec![Key {
                    access_key: creds.access_key.clone(),
                    secret_key: creds.secret_key.clone(),
                    name: "test".into(),
                    created_ms: 0,
                    all: Some(Perm::Write),
                    buckets: BTreeMap::new(),
                }],
            };
            file.save(&home.join("s3-keys"))?;
            cluster
                .add_node(|c| c.s3.listen = "127.0.0.1:0".into())
                .await?;
        }
        cluster
            .wait_until(
                std::time::Duration::from_secs(20),
                "all nodes see each other",
                |c| {
                    let want = n - 1;
                    async move { c.all_see(want).await }
                },
            )
            .await?;
        Ok((cluster, creds))
    }

    /// Node `i`'s S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn s3_url(&self, i: usize) -> String {
        let addr = self.node(i).s3_addr().expect("the node serves S3");
        format!("http://{addr}")
    }

    /// Node `i`'s key file.
    pub fn s3_keys_path(&self, i: usize) -> std::path::PathBuf {
        self.node(i).home().s3_keys_path()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(b: &[u8]) -> String {
    hex_encode(&Sha256::digest(b))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// URI-encodes as SigV4 wants (`/` kept when `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` of a Unix time.
pub fn amz_date(secs: u64) -> (String, String) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let date = format!("{y:04}{m:02}{d:02}");
    let full = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (full, date)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn signing_key(secret: &str, date: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, REGION);
    let k = hmac(&k, "s3");
    hmac(&k, "aws4_request")
}

fn canonical_query(q: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A request signed with SigV4 in its `Authorization` header.
pub struct Signed {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Signs `method` on `base` + `path` (already a path like `/bucket/key`,
/// not encoded) with `query`, the payload hash `payload` (a hex SHA-256 or
/// `UNSIGNED-PAYLOAD`) and extra headers to sign.
pub fn sign(
    creds: &Creds,
    method: &str,
    base: &str,
    path: &str,
    query: &[(String, String)],
    extra: &[(String, String)],
    payload: &str,
) -> Signed {
    sign_at(creds, method, base, path, query, extra, payload, now_secs())
}

/// [`sign`] at a given time.
#[allow(clippy::too_many_arguments)]
pub fn sign_at(
    creds: &Creds,
    method: &str,
    base: &str,
    path: &str,
    query: &[(String, String)],
    extra: &[(String, String)],
    payload: &str,
    secs: u64,
) -> Signed {
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (full, date) = amz_date(secs);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    headers.insert("host".into(), host);
    headers.insert("x-amz-content-sha256".into(), payload.into());
    headers.insert("x-amz-date".into(), full.clone());
    for (k, v) in extra {
        headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
    }
    let uri = uri_encode(path, true);
    let cq = canonical_query(query);
    let ch: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let sh = headers.keys().cloned().collect::<Vec<_>>().join(";");
    let canonical = format!("{method}\n{uri}\n{cq}\n{ch}\n{sh}\n{payload}");
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{full}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let sig = hex_encode(&hmac(&signing_key(&creds.secret_key, &date), &sts));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={sh}, Signature={sig}",
        creds.access_key
    );
    let mut out: Vec<(String, String)> = headers.into_iter().filter(|(k, _)| k != "host").collect();
    out.push(("authorization".into(), auth));
    Signed {
        url: if cq.is_empty() {
            format!("{}{uri}", base.trim_end_matches('/'))
        } else {
            format!("{}{uri}?{cq}", base.trim_end_matches('/'))
        },
        headers: out,
    }
}

/// A presigned GET URL valid `expires` seconds from `secs`.
pub fn presign_get(creds: &Creds, base: &str, path: &str, expires: u64, secs: u64) -> String {
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (full, date) = amz_date(secs);
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let mut q = vec![
        (
            "X-Amz-Algorithm".to_string(),
            "AWS4-HMAC-SHA256".to_string(),
        ),
        (
            "X-Amz-Credential".to_string(),
            format!("{}/{scope}", creds.access_key),
        ),
        ("X-Amz-Date".to_string(), full.clone()),
        ("X-Amz-Expires".to_string(), expires.to_string()),
        ("X-Amz-SignedHeaders".to_string(), "host".to_string()),
    ];
    let uri = uri_encode(path, true);
    let cq = canonical_query(&q);
    let canonical = format!("GET\n{uri}\n{cq}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{full}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let sig = hex_encode(&hmac(&signing_key(&creds.secret_key, &date), &sts));
    q.push(("X-Amz-Signature".to_string(), sig));
    format!(
        "{}{uri}?{}",
        base.trim_end_matches('/'),
        canonical_query(&q)
    )
}

/// The hex SHA-256 of a payload.
pub fn payload_hash(b: &[u8]) -> String {
    sha256_hex(b)
}

/// Sends one request signed with `creds` (SigV4, headers), with the given
/// query and extra headers, and the body's SHA-256 as its payload hash.
pub async fn send_signed(
    creds: &Creds,
    base: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
    let q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = sign(creds, method, base, path, &q, &h, &payload_hash(&body));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut r = reqwest::Client::new().request(method, &s.url);
    for (k, v) in &s.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    r.body(body).send().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_calendar_dates() {
        assert_eq!(amz_date(0).0, "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160).0, "20150830T123600Z");
        assert_eq!(amz_date(951_782_400).1, "20000229");
    }
}
