//! Who may call the API, and how: the checks every request passes before a
//! handler sees it, in this order.
//!
//! 1. **Host.** The `Host` header (or HTTP/2 authority) must name this
//!    daemon: its listen address, `localhost`, `127.0.0.1` or `[::1]` with
//!    the API's port, a name in `api.allowed_hosts`, or (when the API
//!    listens on an unspecified address such as `0.0.0.0`) any IP literal
//!    with the API's port. Anything else is a DNS-rebinding attempt or a
//!    mistake: 403 for every request, reads included. An IP literal cannot
//!    be rebound, so it needs no list.
//! 2. **Origin.** A request that carries `Origin` must come from the
//!    daemon's own origin, `http://` and the request's own host and port;
//!    `Sec-Fetch-Site`, when sent, must be `same-origin` or `none`. Pages
//!    of other sites are refused with 403 (the API sends no CORS headers,
//!    so a browser never lets them read an answer either).
//! 3. **Token.** Every request needs `Authorization: Bearer <token>`, except
//!    the operations the document marks open (an empty security
//!    requirement: `GET`/`HEAD` of `/api/openapi.json` and `/metrics`) when
//!    the API listens on a loopback address. The token is `api.token` from the config, else
//!    the daemon's `api-token` file in the home (mode 0600): holding it is
//!    being the home's user. 401 without it.
//! 4. **Content type.** A `POST`, `PUT`, `PATCH` or `DELETE` may carry only
//!    the media types its operation's request body lists in the generated
//!    document ([`super::openapi::body_rule`]: JSON endpoints
//!    `application/json`, uploads `application/octet-stream`, job specs
//!    JSON or YAML); an endpoint that takes no body accepts no
//!    `Content-Type` but `application/json`. The bodies a browser may send
//!    cross-site without asking first (`text/plain`, forms) are refused
//!    with 415.
//! 5. **Size.** A body the handler buffers may have at most the
//!    `x-weft-max-body-bytes` of its request body in the document; a
//!    larger `Content-Length` is refused with 413 before it is read (a
//!    chunked body is cut at the same limit by the extractor).
//!
//! The rules are read from the document, and a route exists only through
//! `routes!`, which puts it in the document: no route escapes them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::openapi::{self, Operation};
use super::{ApiError, ApiState};

/// What the guard checks requests against.
#[derive(Debug, Clone)]
pub struct Access {
    token: Arc<str>,
    listen: SocketAddr,
    /// `(name, port)`: `None` means the API's port.
    allowed_hosts: Vec<(String, Option<u16>)>,
}

/// A host and port as a `Host` header or an origin names them, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    port: u16,
}

impl Authority {
    /// Parses `name`, `name:port`, `1.2.3.4:port` or `[::1]:port`; a missing
    /// port is HTTP's 80.
    fn parse(s: &str) -> Option<Authority> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            h.parse::<std::net::Ipv6Addr>().ok()?;
            match after {
                "" => (h.to_string(), 80),
                p => (h.to_string(), p.strip_prefix(':')?.parse().ok()?),
            }
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (s.to_string(), 80),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        valid.then_some(Authority { host, port })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl Access {
    /// Checks for the API bound at `listen` (its real port, not 0).
    pub fn new(
        listen: SocketAddr,
        token: impl Into<Arc<str>>,
        allowed_hosts: &[String],
    ) -> Result<Access, String> {
        let mut hosts = Vec::new();
        for h in allowed_hosts {
            let a = Authority::parse(h).ok_or_else(|| {
                format!("api.allowed_hosts entry {h:?} is not a host name or host:port")
            })?;
            // `name:port` and `[v6]:port` name a port; `name` and `[v6]` do not
            let explicit_port = match h.trim().strip_prefix('[') {
                Some(rest) => rest
                    .split_once(']')
                    .is_some_and(|(_, after)| !after.is_empty()),
                None => h.contains(':'),
            };
            hosts.push((a.host, explicit_port.then_some(a.port)));
        }
        let token = token.into();
        if token.is_empty() {
            return Err("the API token is empty".into());
        }
        Ok(Access {
            token,
            listen,
            allowed_hosts: hosts,
        })
    }

    /// Whether `host` names this daemon.
    fn host_ok(&self, a: &Authority) -> bool {
        let port = self.listen.port();
        if self
            .allowed_hosts
            .iter()
            .any(|(h, p)| *h == a.host && p.unwrap_or(port) == a.port)
        {
            return true;
        }
        if a.port != port {
            return false;
        }
        if a.host == "localhost" {
            return true;
        }
        match a.ip() {
            Some(ip) if ip.is_loopback() => true,
            Some(ip) if ip == self.listen.ip() => true,
            Some(_) => self.listen.ip().is_unspecified(),
            None => false,
        }
    }

    /// Whether the request may go without the token: an operation the
    /// document marks open, on a loopback listener.
    fn open_read(&self, method: &Method, route: Option<&str>) -> bool {
        // HEAD is GET without the body where no HEAD is documented
        let op = |m: &str| route.and_then(|r| openapi::body_rule(m, r));
        let op = match op(method.as_str()) {
            None if method == Method::HEAD => op("GET"),
            found => found,
        };
        self.listen.ip().is_loopback() && op.is_some_and(|op| op.open)
    }
}

fn forbidden(code: &'static str, detail: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, detail)
}

/// The request's host: `Host`, else the URI's authority (HTTP/2).
fn request_host(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok().map(str::to_string),
        None => req.uri().authority().map(|a| a.as_str().to_string()),
    }
}

fn check_host(access: &Access, req: &Request) -> Result<Authority, ApiError> {
    let Some(raw) = request_host(req) else {
        return Err(forbidden(
            "bad_host",
            "the request names no host; send a Host header such as 127.0.0.1:PORT".into(),
        ));
    };
    match Authority::parse(&raw) {
        Some(a) if access.host_ok(&a) => Ok(a),
        _ => Err(forbidden(
            "bad_host",
            format!(
                "Host {raw:?} does not name this daemon; call it as 127.0.0.1:{port} or localhost:{port}, or add the name to api.allowed_hosts in the node's config.toml",
                port = access.listen.port()
            ),
        )),
    }
}

fn check_origin(headers: &HeaderMap, host: &Authority) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(forbidden(
                "cross_origin",
                format!("requests from other sites (Sec-Fetch-Site: {site}) are refused"),
            ));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let raw = origin.to_str().unwrap_or("");
    let same = raw
        .strip_prefix("http://")
        .and_then(Authority::parse)
        .is_some_and(|a| a == *host);
    if same {
        Ok(())
    } else {
        Err(forbidden(
            "cross_origin",
            format!(
                "requests from web pages of other origins ({raw}) are refused; the API serves only its own origin http://{}:{}",
                host.host, host.port
            ),
        ))
    }
}

fn check_token(access: &Access, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), access.token.as_bytes())) {
        return Ok(());
    }
    let why = if given.is_some() {
        "the token does not match"
    } else {
        "no token was sent"
    };
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "{why}: this API needs `Authorization: Bearer <token>`; the token is in the file api-token in the node's home (readable by its user only), or api.token in its config.toml"
        ),
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The documented operation a matched route is; the router spells a
/// catch-all `{*name}`, the document `{name}`.
fn endpoint(method: &Method, route: &str) -> Option<&'static Operation> {
    openapi::body_rule(method.as_str(), route)
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A `Content-Length` over what the operation buffers is refused before
/// the body is read.
fn check_size(op: &Operation, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(max) = op.max_body else {
        return Ok(()); // streamed
    };
    // an operation without a body still takes an empty JSON object
    let max = max.max(if op.body.is_empty() { 1024 } else { 0 });
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) if n > max => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is {n} bytes; {} {} takes at most {max} (send large files as application/octet-stream to POST /api/v1/artifacts)",
                op.method.to_ascii_uppercase(),
                op.path
            ),
        )),
        _ => Ok(()),
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn check_content_type(req: &Request) -> Result<(), ApiError> {
    if !mutating(req.method()) {
        return Ok(());
    }
    let Some(route) = req.extensions().get::<MatchedPath>().map(|p| p.as_str()) else {
        return Ok(()); // no route: the fallback answers 404
    };
    let Some(ep) = endpoint(req.method(), route) else {
        if openapi::has_path(route) {
            return Ok(()); // the router answers 405
        }
        return Err(ApiError::internal(format!(
            "{} {route} is served but missing from the API document; this is a bug",
            req.method()
        )));
    };
    let given = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| media_type(v.to_str().unwrap_or("")));
    let refuse = |detail: String| {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        ))
    };
    let accepted = &ep.body;
    check_size(ep, req.headers())?;
    match given {
        None if accepted.is_empty() || (!ep.body_required && !has_body(req.headers())) => Ok(()),
        None => refuse(format!(
            "this endpoint takes a body of type {}; send a Content-Type header",
            accepted.join(" or ")
        )),
        Some(t) if accepted.is_empty() && t == "application/json" => Ok(()),
        Some(t) if accepted.is_empty() => refuse(format!(
            "this endpoint takes no body, and Content-Type {t} is refused; send none"
        )),
        Some(t) if accepted.contains(&t) => Ok(()),
        Some(t) => refuse(format!(
            "Content-Type {t} is refused here; this endpoint takes {}",
            accepted.join(" or ")
        )),
    }
}

/// The middleware: host, origin, token, content type.
pub(super) async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    match check(&state.access, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::debug!(
                method = %req.method(),
                path = %req.uri().path(),
                code = e.code,
                "API request refused"
            );
            e.into_response()
        }
    }
}

fn check(access: &Access, req: &Request) -> Result<(), ApiError> {
    let host = check_host(access, req)?;
    check_origin(req.headers(), &host)?;
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    if !access.open_read(req.method(), route) {
        check_token(access, req.headers())?;
    }
    check_content_type(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, allowed: &[&str]) -> Access {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Access::new(listen.parse().expect("addr"), "t0k3n-t0k3n-t0k3n", &allowed).expect("access")
    }

    fn ok(a: &Access, host: &str) -> bool {
        Authority::parse(host).is_some_and(|h| a.host_ok(&h))
    }

    #[test]
    fn hosts_on_loopback() {
        let a = access("127.0.0.1:4080", &[]);
        for good in [
            "127.0.0.1:4080",
            "localhost:4080",
            "LOCALHOST:4080",
            "localhost.:4080",
            "[::1]:4080",
            "127.0.0.2:4080",
        ] {
            assert!(ok(&a, good), "{good}");
        }
        for bad in [
            "evil.example:4080",
            "127.0.0.1:4081",
            "localhost",
            "127.0.0.1",
            "10.0.0.5:4080",
            "localhost:4080:1",
            "[::1",
            "",
            "a b:4080",
        ] {
            assert!(!ok(&a, bad), "{bad}");
        }
    }

    #[test]
    fn allowed_hosts_and_unspecified_listen() {
        let a = access("0.0.0.0:4080", &["weft.lab", "Proxy.Lab:80"]);
        assert!(ok(&a, "weft.lab:4080"));
        assert!(!ok(&a, "weft.lab:80"));
        assert!(ok(&a, "proxy.lab"));
        assert!(ok(&a, "proxy.lab:80"));
        assert!(!ok(&a, "proxy.lab:4080"));
        // IP literals cannot be rebound
        assert!(ok(&a, "10.0.0.5:4080"));
        assert!(ok(&a, "[fe80::1]:4080"));
        assert!(!ok(&a, "evil.example:4080"));
        let a = access("10.0.0.5:4080", &[]);
        assert!(ok(&a, "10.0.0.5:4080"));
        assert!(!ok(&a, "10.0.0.6:4080"));
        assert!(
            Access::new(
                "127.0.0.1:1".parse().expect("addr"),
                "t",
                &["bad host!".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn origins() {
        let host = Authority::parse("127.0.0.1:4080").expect("host");
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().expect("header"));
            check_origin(&h, &host).is_ok()
        };
        assert!(with("http://127.0.0.1:4080"));
        for bad in [
            "http://evil.example",
            "http://localhost:4080",
            "https://127.0.0.1:4080",
            "http://127.0.0.1:4081",
            "null",
            "http://127.0.0.1:4080.evil.example",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(check_origin(&HeaderMap::new(), &host).is_ok());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().expect("header"));
        assert!(check_origin(&h, &host).is_err());
        h.insert("sec-fetch-site", "same-origin".parse().expect("header"));
        assert!(check_origin(&h, &host).is_ok());
    }

    #[test]
    fn every_documented_endpoint_is_found_by_its_route() {
        assert!(endpoint(&Method::PUT, "/api/v1/tags/{*name}").is_some());
        assert!(endpoint(&Method::POST, "/api/v1/jobs").is_some());
        assert!(endpoint(&Method::POST, "/api/v1/nowhere").is_none());
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
    }
}
