//! Every node's HTTP ingress: a request for a service, by
//! `Host: NAME.<domain>` or by path `/s/NAME/...`, goes to a ready replica
//! wherever it runs.
//!
//! Balancing is by outstanding requests, power of two choices: two ready
//! replicas at random, the one with fewer of this node's requests in flight
//! wins. A replica that refuses a request never saw it, so it goes to
//! another; one whose node cannot be reached is passed over for a while; a
//! request lost after it was sent is sent again only when its method is
//! idempotent. A function service with `replicas: auto` and no ready
//! replica (or all of them at their target concurrency) gets one more,
//! started here when this node can run it, else on a capable peer.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{self, HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use weft_protocol::service::{
    Refusal, Replicas as ReplicaCount, ServiceName, ServiceRequestHead, ServiceSpec,
};
use weft_protocol::{Request, Response as RpcResponse};

use super::backends::MAX_BODY;
use super::mesh::{Mesh, Route};
use super::proxy::{self, ProxyError};
use super::replicas::Replicas;
use super::{ServiceHandle, placement};
use crate::net::NetHandle;
use crate::transfer::TransferHandle;

/// Sends of one request that were lost after it went out (idempotent
/// methods only).
const ATTEMPTS: usize = 4;

/// How long a request waits for a replica that takes it.
const WAIT_READY: Duration = Duration::from_secs(20);

/// Headers that belong to one hop and are not passed on.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The ingress's shared state.
pub struct Ingress {
    pub services: ServiceHandle,
    pub replicas: Replicas,
    pub mesh: Mesh,
    pub transfer: TransferHandle,
    pub net: NetHandle,
    /// Services are `NAME.<domain>`.
    pub domain: String,
    /// Services this node is adding a replica to now.
    activating: Mutex<HashSet<ServiceName>>,
}

impl Ingress {
    pub fn new(
        services: ServiceHandle,
        replicas: Replicas,
        mesh: Mesh,
        transfer: TransferHandle,
        net: NetHandle,
        domain: String,
    ) -> Ingress {
        Ingress {
            services,
            replicas,
            mesh,
            transfer,
            net,
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            activating: Mutex::default(),
        }
    }
}

/// Serves the ingress on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingress: Arc<Ingress>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(handle).with_state(ingress);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Which service a request is for, and the path and query it sees.
pub fn route(domain: &str, headers: &HeaderMap, uri: &http::Uri) -> Option<(ServiceName, String)> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(label) = host.strip_suffix(domain).and_then(|h| h.strip_suffix('.'))
        && !domain.is_empty()
        && let Ok(name) = label.parse::<ServiceName>()
    {
        return Some((name, path_and_query.to_string()));
    }
    let rest = path_and_query.strip_prefix("/s/")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let name = rest[..end].parse::<ServiceName>().ok()?;
    let tail = &rest[end..];
    let tail = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Some((name, tail))
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn handle(
    State(ing): State<Arc<Ingress>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: http::Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let Some((name, uri)) = route(&ing.domain, &parts.headers, &parts.uri) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no service named in this request: use Host: NAME.{} or the path /s/NAME/...",
                ing.domain
            ),
        );
    };
    // the folded state is shared (`Arc`); the spec is borrowed from it
    let Some(state) = ing.services.cached(name.as_str()) else {
        return text(StatusCode::NOT_FOUND, format!("no service named {name}"));
    };
    let Some((_, spec)) = state.current_spec() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("service {name} is not running"),
        );
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes"),
            );
        }
    };
    let mut headers = Vec::new();
    for (k, v) in &parts.headers {
        if HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        match v.to_str() {
            Ok(v) => headers.push((k.as_str().to_string(), v.to_string())),
            Err(_) => {
                return text(StatusCode::BAD_REQUEST, format!("header {k} is not text"));
            }
        }
    }
    headers.push(("x-forwarded-for".into(), client.ip().to_string()));
    headers.push(("x-forwarded-proto".into(), "http".into()));
    if headers.len() > weft_protocol::service::MAX_SERVICE_HEADERS {
        return text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many headers",
        );
    }
    let method = parts.method.clone();
    let head = ServiceRequestHead {
        service: name.clone(),
        replica: weft_protocol::service::ReplicaId(0),
        method: method.as_str().to_string(),
        uri,
        headers,
    };
    // Replicas tried since the view last changed. A refusal or an
    // unreachable node means the request was never seen, so when every
    // ready replica has refused (the view lags a replica that is draining
    // or turned unhealthy) the request waits for the view to change and
    // goes again, up to WAIT_READY; only a request lost after it was sent
    // counts as an attempt.
    let mut tried: Vec<weft_protocol::service::ReplicaId> = Vec::new();
    let waiting_since = Instant::now();
    let mut last_error = String::new();
    let mut lost = 0;
    while lost < ATTEMPTS {
        let ready: Vec<Route> = ing
            .mesh
            .ready(&name)
            .into_iter()
            .filter(|r| !tried.contains(&r.info.id))
            .collect();
        if wants_more(&ing, spec, &ready) {
            activate(&ing, spec);
        }
        let Some(route) = pick(&ing.mesh, &ready) else {
            if waiting_since.elapsed() > WAIT_READY {
                break;
            }
            tokio::select! {
                _ = ing.replicas.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            tried.clear();
            continue;
        };
        tried.push(route.info.id);
        let counter = ing.mesh.outstanding(route.info.id);
        counter.fetch_add(1, Ordering::Relaxed);
        let result = forward(&ing, &route, &head, body.clone()).await;
        counter.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(resp) => return respond(resp),
            Err(Forward::Refused(why)) => {
                debug!(service = %name, replica = %route.info.id, %why, "refused; trying another replica");
                last_error = why;
            }
            Err(Forward::Unreachable(why)) => {
                ing.mesh.unreachable(&route.node);
                last_error = why;
            }
            Err(Forward::Lost(why)) => {
                ing.mesh.suspect(route.info.id);
                if !idempotent(&method) {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("the replica of {name} stopped answering: {why}"),
                    );
                }
                lost += 1;
                last_error = why;
            }
            Err(Forward::Failed(resp)) => return respond(resp),
        }
    }
    let why = if last_error.is_empty() {
        String::new()
    } else {
        format!(" (last: {last_error})")
    };
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no ready replica of {name} answered{why}; `weft service endpoints {name}` shows them"
        ),
    )
}

enum Forward {
    Refused(String),
    Unreachable(String),
    Lost(String),
    /// The replica answered with an error of its own.
    Failed(http::Response<Bytes>),
}

async fn forward(
    ing: &Ingress,
    route: &Route,
    head: &ServiceRequestHead,
    body: Bytes,
) -> Result<http::Response<Bytes>, Forward> {
    match (route.peer, route.addr) {
        (None, _) => {
            let Some(replica) = ing.replicas.get(route.info.id) else {
                return Err(Forward::Refused("stopped".into()));
            };
            let req = proxy::build_request(head, body).map_err(|e| {
                Forward::Failed(
                    http::Response::builder()
                        .status(StatusCode::BAD_REQUEST)
                        .body(Bytes::from(e))
                        .unwrap_or_default(),
                )
            })?;
            match replica.invoke(req).await {
                Ok(r) => Ok(r),
                Err(None) => Err(Forward::Refused("not taking requests".into())),
                Err(Some(why)) => Err(Forward::Failed(
                    http::Response::builder()
                        .status(StatusCode::BAD_GATEWAY)
                        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                        .body(Bytes::from(format!(
                            "replica {} failed: {why}\n",
                            replica.id
                        )))
                        .unwrap_or_default(),
                )),
            }
        }
        (Some(peer), Some(addr)) => {
            let mut head = head.clone();
            head.replica = route.info.id;
            match proxy::send(&ing.transfer, peer, addr, &head, body).await {
                Ok(r) => Ok(r),
                Err(ProxyError::Refused { reason, message }) => {
                    if reason == Refusal::BadRequest {
                        Err(Forward::Failed(
                            http::Response::builder()
                                .status(StatusCode::BAD_REQUEST)
                                .body(Bytes::from(message))
                                .unwrap_or_default(),
                        ))
                    } else {
                        Err(Forward::Refused(message))
                    }
                }
                Err(ProxyError::Unreachable(e)) => Err(Forward::Unreachable(e)),
                Err(e @ (ProxyError::Lost(_) | ProxyError::Protocol(_))) => {
                    Err(Forward::Lost(e.to_string()))
                }
            }
        }
        (Some(_), None) => Err(Forward::Unreachable(
            "the node has no data-plane address".into(),
        )),
    }
}

fn respond(resp: http::Response<Bytes>) -> Response {
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert("x-served-by", HeaderValue::from_static("weft"));
    Response::from_parts(parts, Body::from(body))
}

/// Power of two choices on this node's outstanding requests.
fn pick(mesh: &Mesh, ready: &[Route]) -> Option<Route> {
    match ready.len() {
        0 => None,
        1 => Some(ready[0].clone()),
        n => {
            let mut rng = rand::thread_rng();
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (&ready[a], &ready[b]);
            let (lx, ly) = (mesh.load(x.info.id), mesh.load(y.info.id));
            // equal loads: prefer a replica on this node (no hop)
            if lx < ly || (lx == ly && x.is_local()) {
                Some(x.clone())
            } else {
                Some(y.clone())
            }
        }
    }
}

/// Whether an `auto` function needs one more replica for this request.
fn wants_more(ing: &Ingress, spec: &ServiceSpec, ready: &[Route]) -> bool {
    let (ReplicaCount::Auto, Some(auto)) = (spec.replicas, spec.autoscale) else {
        return false;
    };
    let view = ing.mesh.view();
    let live = view
        .routes(&spec.name)
        .iter()
        .filter(|r| {
            !matches!(
                r.info.state,
                weft_protocol::service::ReplicaState::Draining
                    | weft_protocol::service::ReplicaState::Failed
            )
        })
        .count() as u32;
    if live >= auto.max {
        return false;
    }
    let starting = live as usize > ready.len();
    if ready.is_empty() {
        return !starting;
    }
    // every ready replica carries its target concurrency from here
    !starting
        && ready
            .iter()
            .all(|r| ing.mesh.load(r.info.id) >= auto.target_concurrency)
}

/// Starts one more replica of `spec`: here when this node can run it, else
/// on the best peer. One at a time per service from this node.
fn activate(ing: &Arc<Ingress>, spec: &ServiceSpec) {
    {
        let mut a = ing.activating.lock().unwrap_or_else(|p| p.into_inner());
        if !a.insert(spec.name.clone()) {
            return;
        }
    }
    let ing = ing.clone();
    let spec = spec.clone();
    tokio::spawn(async move {
        let Some(state) = ing.services.cached(spec.name.as_str()) else {
            return;
        };
        let Some(revision) = state.current else {
            return;
        };
        let id = ServiceHandle::new_replica_id();
        let view = ing.mesh.view();
        // the first replica here when this node can run it (no hop for the
        // request that waits for it); more where there are fewest
        let none_ready = ing.mesh.ready(&spec.name).is_empty();
        let target = if none_ready && ing.replicas.can_run(&spec).is_ok() {
            view.members.iter().find(|m| m.peer.is_none())
        } else {
            placement::choose(&view, &spec, Some(revision), &[], &[])
        };
        match target {
            Some(m) if m.peer.is_none() => {
                if let Err((_, why)) = ing.replicas.start(&spec.name, revision, id) {
                    warn!(service = %spec.name, %why, "cannot start a replica on demand");
                }
            }
            Some(m) => {
                let peer = m.peer;
                if let Some(peer) = peer {
                    let r = ing
                        .net
                        .request(
                            peer,
                            Request::StartReplica {
                                service: spec.name.clone(),
                                revision,
                                replica: id,
                            },
                        )
                        .await;
                    if !matches!(r, Ok(RpcResponse::Ack)) {
                        warn!(service = %spec.name, %peer, answer = ?r, "a peer did not start a replica on demand");
                    }
                }
            }
            None => warn!(service = %spec.name, "no node can run a replica"),
        }
        // let the new replica show before another is asked for
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if ing
                .mesh
                .view()
                .routes(&spec.name)
                .iter()
                .any(|r| r.info.id == id)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ing.activating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&spec.name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(host: Option<&str>, uri: &str) -> Option<(String, String)> {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
        }
        let uri: http::Uri = uri.parse().expect("uri");
        route("weft.localhost", &h, &uri).map(|(n, p)| (n.to_string(), p))
    }

    #[test]
    fn requests_name_their_service_by_host_or_path() {
        let r = |n: &str, p: &str| Some((n.to_string(), p.to_string()));
        assert_eq!(
            routed(Some("web.weft.localhost"), "/a?b=1"),
            r("web", "/a?b=1")
        );
        assert_eq!(routed(Some("WEB.Weft.Localhost.:4480"), "/"), r("web", "/"));
        assert_eq!(
            routed(Some("127.0.0.1:4480"), "/s/web/a/b?c"),
            r("web", "/a/b?c")
        );
        assert_eq!(routed(Some("localhost"), "/s/web"), r("web", "/"));
        assert_eq!(routed(Some("localhost"), "/s/web?x=1"), r("web", "/?x=1"));
        assert_eq!(routed(None, "/s/web/"), r("web", "/"));
        // the host wins over the path
        assert_eq!(
            routed(Some("api.weft.localhost"), "/s/web/x"),
            r("api", "/s/web/x")
        );
        for (host, uri) in [
            (Some("web.weft.localhost.example.com"), "/"),
            (Some("a.b.weft.localhost"), "/"),
            (Some("weft.localhost"), "/"),
            (Some("-x.weft.localhost"), "/"),
            (Some("localhost"), "/s/../x"),
            (Some("localhost"), "/s/"),
            (Some("localhost"), "/s/Web/"),
            (Some("localhost"), "/web/"),
        ] {
            assert_eq!(routed(host, uri), None, "{host:?} {uri}");
        }
    }
}
