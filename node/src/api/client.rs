//! A client of the REST API, used by the CLI when a daemon runs, and by
//! tests: [`ApiClient::from_home`] finds the daemon's address and token the
//! way the CLI does.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
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
    /// No daemon has written its address in the home.
    #[error("no weft daemon is running on {home}; start one with `weft daemon`")]
    NoDaemon { home: String },
    /// The daemon's address is served by a process of another user.
    #[error(
        "{addr} (from {api_file}) is served by uid {uid}, not by uid {owner} that runs the daemon, so the API token is not sent there; the daemon may have stopped: start it again with `weft daemon`"
    )]
    Impostor {
        addr: SocketAddr,
        uid: u32,
        owner: u32,
        api_file: String,
    },
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A connection to one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Where the token came from, for the advice on a 401 or 403.
    source: Option<TokenSource>,
}

/// Where a client found its token: named when the daemon refuses it.
#[derive(Clone, Debug)]
struct TokenSource {
    token_file: std::path::PathBuf,
    config: std::path::PathBuf,
    from_config: bool,
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
            source: None,
        }
    }

    /// A client for the daemon running on `home`: its address from the
    /// home's `api` file, its token from `api.token` in the config, else the
    /// home's `api-token` file (what the CLI does).
    pub fn from_home(home: &crate::home::Home) -> Result<ApiClient, ClientError> {
        let base = match std::fs::read_to_string(home.api_file()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NoDaemon {
                    home: home.root().display().to_string(),
                });
            }
            Err(source) => {
                return Err(crate::home::HomeError::Io {
                    path: home.api_file(),
                    source,
                }
                .into());
            }
        };
        let base = base.trim();
        // the token goes only to a listener of the daemon's user: after a
        // daemon died, another local user may have bound its port
        if let Some(addr) = base
            .strip_prefix("http://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .filter(|a| a.ip().is_loopback())
        {
            let owner = std::fs::metadata(home.api_file())
                .map_err(|source| crate::home::HomeError::Io {
                    path: home.api_file(),
                    source,
                })?
                .uid();
            if let Some(uid) = listener_uids(addr).into_iter().find(|u| *u != owner) {
                return Err(ClientError::Impostor {
                    addr,
                    uid,
                    owner,
                    api_file: home.api_file().display().to_string(),
                });
            }
        }
        let (token, from_config) = home_token(home)?;
        let mut client = ApiClient::new(base, token);
        client.source = Some(TokenSource {
            token_file: home.api_token_path(),
            config: home.config_path(),
            from_config,
        });
        Ok(client)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` with the token set, for calls the typed helpers
    /// do not cover.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
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
            Ok(e) => {
                let detail = match self.advice(status, &e.error) {
                    Some(a) => format!("{}\n{a}", e.detail),
                    None => e.detail,
                };
                ClientError::Api {
                    status,
                    code: e.error,
                    detail,
                }
            }
            Err(_) => ClientError::Api {
                status,
                code: "unknown".into(),
                detail: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            },
        })
    }

    /// What to do about a refusal, naming this machine's files.
    fn advice(&self, status: u16, code: &str) -> Option<String> {
        let src = self.source.as_ref()?;
        match (status, code) {
            (401, _) if src.from_config => Some(format!(
                "hint: the CLI sent api.token from {}; it must match the token of the daemon serving {}",
                src.config.display(),
                self.base
            )),
            (401, _) => Some(format!(
                "hint: the CLI sends the token in {} (written by the daemon, mode 0600); run the CLI as the daemon's user with the daemon's home (--home or WEFT_HOME), or set api.token in {}",
                src.token_file.display(),
                src.config.display()
            )),
            (403, "bad_host") => Some(format!(
                "hint: address the daemon as 127.0.0.1 or localhost, or add this host name to api.allowed_hosts in the daemon's {}",
                src.config.display()
            )),
            (403, "outside_roots") => Some(format!(
                "hint: the daemon imports and exports only under api.path_roots in its {}",
                src.config.display()
            )),
            (403, _) => Some(
                "hint: the daemon refuses requests from web pages of other origins; send no Origin header".into(),
            ),
            _ => None,
        }
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

    /// `METHOD path` with no body → JSON.
    pub async fn call_no_body<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let resp = self.send(self.request(method, path)).await?;
        Self::decode(resp).await
    }

    /// `METHOD path` with no body, ignoring the answer's content.
    pub async fn call_empty(&self, method: reqwest::Method, path: &str) -> Result<(), ClientError> {
        self.send(self.request(method, path)).await.map(|_| ())
    }

    /// `POST /api/v1/pipelines/runs`: starts a run of `spec` (YAML, `uses:`
    /// inlined) on the daemon, which coordinates it.
    pub async fn pipeline_start(
        &self,
        spec: &str,
        params: &[(String, String)],
        force: bool,
        force_steps: &[String],
    ) -> Result<weft_protocol::ledger::PipelineRunRecord, ClientError> {
        let params: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let body = serde_json::json!({
            "spec": spec, "params": params, "force": force, "force_steps": force_steps,
        });
        self.call(reqwest::Method::POST, "/api/v1/pipelines/runs", &body)
            .await
    }

    /// `GET /api/v1/pipelines/runs`: every run the daemon knows, newest first.
    pub async fn pipeline_runs(
        &self,
    ) -> Result<Vec<weft_protocol::ledger::PipelineRunRecord>, ClientError> {
        self.get("/api/v1/pipelines/runs").await
    }

    /// `GET /api/v1/pipelines/runs/{id}`, waiting up to `wait_ms` for its
    /// end (or, with `since`, its next change after that `updated_ms`).
    pub async fn pipeline_run(
        &self,
        id: &str,
        wait_ms: Option<u64>,
        since: Option<u64>,
    ) -> Result<weft_protocol::ledger::PipelineRunRecord, ClientError> {
        let mut path = format!("/api/v1/pipelines/runs/{}", segment(id));
        let mut sep = '?';
        if let Some(ms) = wait_ms {
            path.push_str(&format!("{sep}wait_ms={ms}"));
            sep = '&';
        }
        if let Some(s) = since {
            path.push_str(&format!("{sep}since={s}"));
        }
        self.get(&path).await
    }

    /// `POST /api/v1/pipelines/runs/{id}/cancel`.
    pub async fn pipeline_cancel(
        &self,
        id: &str,
    ) -> Result<weft_protocol::ledger::PipelineRunRecord, ClientError> {
        self.call_no_body(
            reqwest::Method::POST,
            &format!("/api/v1/pipelines/runs/{}/cancel", segment(id)),
        )
        .await
    }
}

/// The token a client of `home`'s daemon sends, and whether it came from
/// the config: `api.token`, else the `api-token` file, else none.
pub fn home_token(home: &crate::home::Home) -> Result<(Option<String>, bool), ClientError> {
    let config = crate::config::Config::load(home)?;
    if let Some(t) = config.api.token {
        return Ok((Some(t), true));
    }
    Ok((home.api_token()?, false))
}

/// The owners of the TCP sockets listening on `addr`'s port at its address
/// or at an unspecified one, from `/proc/net/tcp` and `/proc/net/tcp6`
/// (empty when none is found or the tables cannot be read).
fn listener_uids(addr: SocketAddr) -> Vec<u32> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(uid)) = (f.get(1), f.get(3), f.get(7)) else {
                continue;
            };
            if *state != LISTEN {
                continue;
            }
            let Some((ip, port)) = parse_proc_addr(local) else {
                continue;
            };
            if port != addr.port() || !(ip == addr.ip() || ip.is_unspecified()) {
                continue;
            }
            if let Ok(uid) = uid.parse() {
                out.push(uid);
            }
        }
    }
    out
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the
/// kernel prints each 32-bit word of the address in host byte order.
fn parse_proc_addr(s: &str) -> Option<(std::net::IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<[u8; 4]> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect::<Option<_>>()?;
    let ip = match words.len() {
        1 => std::net::IpAddr::from(words[0]),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(w);
            }
            let v6 = std::net::Ipv6Addr::from(b);
            // a v4 address on a dual-stack socket
            match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::from(v4),
                None => std::net::IpAddr::from(v6),
            }
        }
        _ => return None,
    };
    Some((ip, port))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        let (ip, port) =
            parse_proc_addr(&format!("{:08X}:1F90", u32::from_ne_bytes([127, 0, 0, 1])))
                .expect("v4");
        assert_eq!((ip.to_string().as_str(), port), ("127.0.0.1", 8080));
        let mut v6 = String::new();
        for w in [
            [0u8, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0xff, 0xff],
            [127, 0, 0, 1],
        ] {
            v6.push_str(&format!("{:08X}", u32::from_ne_bytes(w)));
        }
        let (ip, _) = parse_proc_addr(&format!("{v6}:0050")).expect("mapped");
        assert_eq!(ip.to_string(), "127.0.0.1");
        assert!(parse_proc_addr("zz:1").is_none());
        assert!(parse_proc_addr("0100007F").is_none());
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        // SAFETY: geteuid takes no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(listener_uids(addr), vec![me]);
        drop(l);
        assert!(listener_uids(addr).is_empty());
    }
}
