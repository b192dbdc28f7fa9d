//! A client of the REST API, used by the CLI when a daemon runs.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{detail}")]
    Api {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("cannot reach the weft daemon at {base}: {source}")]
    Connect {
        base: String,
        source: reqwest::Error,
    },
    #[error("unexpected answer from the weft daemon: {0}")]
    Decode(String),
}

/// A connection to one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    detail: String,
}

impl ApiClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:4080`).
    pub fn new(base: &str, token: Option<String>) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends a request and returns the response if it succeeded.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Connect {
            base: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Api {
                status,
                code: e.error,
                detail: e.detail,
            },
            Err(_) => ClientError::Api {
                status,
                code: "unknown".into(),
                detail: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            },
        })
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        Self::decode(resp).await
    }

    /// `GET path` → the raw response, for streaming.
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with no body → the raw response, for streaming.
    pub async fn post_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    /// `METHOD path` with a JSON body → JSON.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self.send(self.request(method, path).json(body)).await?;
        Self::decode(resp).await
    }

    /// `METHOD path` with no body, ignoring the answer's content.
    pub async fn call_empty(&self, method: reqwest::Method, path: &str) -> Result<(), ClientError> {
        self.send(self.request(method, path)).await.map(|_| ())
    }
}

/// Percent-encodes one path segment (tag names carry `/` and `:`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
