//! A small WASI HTTP function for weft's tests and examples.
//!
//! Routes:
//! - `GET /healthz`: 200 `ok`, or 500 when the environment has `UNHEALTHY=1`
//! - `GET /hello`: 200 `hello from NAME` (env `NAME`, default `world`)
//! - `POST /echo`: 200 with the request body
//! - `GET /sleep?ms=N`: sleeps N ms (`&busy=1`: spins on the clock instead), then 200
//! - `GET /version`: 200 with env `VERSION` (empty when unset)
//!
//! Routes that show the sandbox's limits:
//! - `GET /inputs/PATH`: the file `/inputs/PATH`, or 404
//! - `POST /inputs/PATH`: tries to write the body to `/inputs/PATH`; 200 when
//!   it could, 403 with the error when refused
//! - `GET /outgoing?url=URL`: tries an outgoing HTTP request; 200 with the
//!   status when it went out, 502 with the error when refused
//! - `GET /bytes?n=N`: N bytes of `x`
//! - `GET /log?line=TEXT`: writes TEXT to stdout and stderr, then 200
//! - `GET /trap`: panics (a trap)
//! - `GET /exit`: exits the process
//! - `GET /noresponse`: returns without answering
//! - `GET /alloc?mb=N`: allocates and touches N MiB, then 200
//! - `GET /headers`: the request's method, path, authority and headers
//! - `GET /counter`: bumps a counter in the instance's memory and answers
//!   its value (always 1 where every request gets a fresh instance)

use std::io::Write;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct HttpTest;

/// Requests this instance has counted.
static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

wasi::http::proxy::export!(HttpTest);

impl Guest for HttpTest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = request.method();
        let full = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (full.clone(), String::new()),
        };
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let env = |name: &str| std::env::var(name).ok();

        let (status, body): (u16, Vec<u8>) = match (&method, path.as_str()) {
            (Method::Get, "/healthz") => {
                if env("UNHEALTHY").as_deref() == Some("1") {
                    (500, b"unhealthy\n".to_vec())
                } else {
                    (200, b"ok\n".to_vec())
                }
            }
            (Method::Get, "/hello") => {
                let name = env("NAME").unwrap_or_else(|| "world".to_string());
                (200, format!("hello from {name}").into_bytes())
            }
            (Method::Post, "/echo") => (200, read_body(request)),
            (Method::Get, "/sleep") => {
                let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                let until = std::time::Duration::from_millis(ms);
                if param("busy").as_deref() == Some("1") {
                    let start = std::time::Instant::now();
                    while start.elapsed() < until {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::sleep(until);
                }
                (200, format!("slept {ms} ms").into_bytes())
            }
            (Method::Get, "/version") => (200, env("VERSION").unwrap_or_default().into_bytes()),
            (Method::Get, p) if p.starts_with("/inputs/") => match std::fs::read(p) {
                Ok(bytes) => (200, bytes),
                Err(e) => (404, format!("{p}: {e}").into_bytes()),
            },
            (Method::Post, p) if p.starts_with("/inputs/") => {
                let data = read_body(request);
                match std::fs::write(p, data) {
                    Ok(()) => (200, b"written".to_vec()),
                    Err(e) => (403, format!("{p}: {e}").into_bytes()),
                }
            }
            (Method::Get, "/outgoing") => {
                let url = param("url").unwrap_or_else(|| "http://127.0.0.1:9/".to_string());
                match outgoing(&url) {
                    Ok(status) => (200, format!("sent: status {status}").into_bytes()),
                    Err(e) => (502, format!("refused: {e}").into_bytes()),
                }
            }
            (Method::Get, "/bytes") => {
                let n: usize = param("n").and_then(|v| v.parse().ok()).unwrap_or(0);
                (200, vec![b'x'; n])
            }
            (Method::Get, "/log") => {
                let line = param("line").unwrap_or_default();
                println!("out: {line}");
                eprintln!("err: {line}");
                let _ = std::io::stdout().flush();
                (200, b"logged".to_vec())
            }
            (Method::Get, "/trap") => panic!("the /trap route panics on purpose"),
            (Method::Get, "/exit") => std::process::exit(3),
            (Method::Get, "/noresponse") => return,
            (Method::Get, "/alloc") => {
                let mb: usize = param("mb").and_then(|v| v.parse().ok()).unwrap_or(1);
                let mut v = vec![0u8; mb << 20];
                for i in (0..v.len()).step_by(4096) {
                    v[i] = 1;
                }
                let sum: usize = v.iter().step_by(4096).map(|&b| b as usize).sum();
                (200, format!("touched {sum} pages").into_bytes())
            }
            (Method::Get, "/counter") => {
                let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                (200, n.to_string().into_bytes())
            }
            (Method::Get, "/headers") => {
                let mut text = format!(
                    "method GET\npath {full}\nauthority {}\n",
                    request.authority().unwrap_or_default()
                );
                for (k, v) in request.headers().entries() {
                    text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(&v)));
                }
                (200, text.into_bytes())
            }
            _ => (404, format!("no route for {full}").into_bytes()),
        };
        respond(out, status, &body);
    }
}

/// Reads the whole request body.
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else {
        return data;
    };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            data.extend_from_slice(&chunk);
        }
    }
    data
}

/// Sends `body` with `status` and a text content type.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Tries a GET to `url`; the status when a response came.
fn outgoing(url: &str) -> Result<u16, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not a URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    req.set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme".to_string())?;
    req.set_authority(Some(authority))
        .map_err(|()| "bad authority".to_string())?;
    req.set_path_with_query(Some(path))
        .map_err(|()| "bad path".to_string())?;
    let future = wasi::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(resp))) => Ok(resp.status()),
        Some(Ok(Err(e))) => Err(format!("{e:?}")),
        Some(Err(())) => Err("response already taken".to_string()),
        None => Err("no response".to_string()),
    }
}
