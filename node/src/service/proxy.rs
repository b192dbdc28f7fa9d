//! One HTTP request to a replica on another node, over the data plane.
//!
//! The stream starts with [`SERVICE_STREAM_MAGIC`], then the
//! [`ServiceRequestHead`] as one frame, then the request body until the
//! sender finishes its side. The answer is a [`ServiceResponseHead`] frame
//! and, after `Response`, the body until the end of the stream. The data
//! plane's connections are authenticated both ways (node keys, the cluster
//! secret), so only members send or answer these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http;
use bytes::Bytes;
use futures::future::BoxFuture;
use libp2p::PeerId;
use tracing::debug;
use weft_protocol::codec;
use weft_protocol::service::{
    MAX_SERVICE_HEAD_BYTES, Refusal, SERVICE_STREAM_MAGIC, ServiceRequestHead, ServiceResponseHead,
};
use weft_protocol::transfer::{FRAME_PREFIX, frame, frame_len};

use super::backends::MAX_BODY;
use super::replicas::Replicas;
use crate::transfer::{ServiceStreams, TransferHandle};

/// How long a connection to a replica's node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a peer has to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to a remote replica got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The replica never saw the request: safe to send elsewhere.
    #[error("refused ({reason:?}): {message}")]
    Refused { reason: Refusal, message: String },
    /// The node could not be reached; nothing was sent.
    #[error("cannot reach the replica's node: {0}")]
    Unreachable(String),
    /// Sent, but the answer was lost: only an idempotent request may be
    /// sent again.
    #[error("the replica's node stopped answering: {0}")]
    Lost(String),
    #[error("the replica's node answered out of protocol: {0}")]
    Protocol(String),
}

/// Sends `head` and `body` to the replica on `peer` and waits for the answer.
pub async fn send(
    transfer: &TransferHandle,
    peer: PeerId,
    addr: SocketAddr,
    head: &ServiceRequestHead,
    body: Bytes,
) -> Result<http::Response<Bytes>, ProxyError> {
    let head_frame =
        frame(head, MAX_SERVICE_HEAD_BYTES).map_err(|e| ProxyError::Protocol(e.to_string()))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, transfer.connect(peer, addr))
        .await
        .map_err(|_| {
            ProxyError::Unreachable(format!(
                "no data-plane connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
    let lost = |e: &dyn std::fmt::Display| ProxyError::Lost(e.to_string());
    send.write_all(&SERVICE_STREAM_MAGIC)
        .await
        .map_err(|e| lost(&e))?;
    send.write_all(&head_frame).await.map_err(|e| lost(&e))?;
    send.write_all(&body).await.map_err(|e| lost(&e))?;
    let _ = send.finish();
    let head = read_head::<ServiceResponseHead>(&mut recv)
        .await
        .map_err(|e| match e {
            HeadError::Io(e) => ProxyError::Lost(e),
            HeadError::Bad(e) => ProxyError::Protocol(e),
        })?;
    match head {
        ServiceResponseHead::Refused { reason, message } => {
            Err(ProxyError::Refused { reason, message })
        }
        ServiceResponseHead::Response { status, headers } => {
            let body = recv.read_to_end(MAX_BODY).await.map_err(|e| match e {
                quinn::ReadToEndError::TooLong => {
                    ProxyError::Protocol(format!("response body over {MAX_BODY} bytes"))
                }
                quinn::ReadToEndError::Read(e) => ProxyError::Lost(e.to_string()),
            })?;
            let mut resp = http::Response::builder().status(status);
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            resp.body(Bytes::from(body))
                .map_err(|e| ProxyError::Protocol(e.to_string()))
        }
    }
}

enum HeadError {
    Io(String),
    Bad(String),
}

async fn read_head<T: serde::de::DeserializeOwned + weft_protocol::Bounded>(
    recv: &mut quinn::RecvStream,
) -> Result<T, HeadError> {
    let mut prefix = [0u8; FRAME_PREFIX];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| HeadError::Io(e.to_string()))?;
    let len =
        frame_len(prefix, MAX_SERVICE_HEAD_BYTES).map_err(|e| HeadError::Bad(e.to_string()))?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| HeadError::Io(e.to_string()))?;
    codec::decode_peer(&payload, MAX_SERVICE_HEAD_BYTES).map_err(|e| HeadError::Bad(e.to_string()))
}

/// Answers service streams from peers with this node's replicas.
pub struct Streams {
    pub replicas: Replicas,
}

impl ServiceStreams for Streams {
    fn serve(
        &self,
        peer: PeerId,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<'static, ()> {
        let replicas = self.replicas.clone();
        Box::pin(async move { answer(replicas, peer, send, recv).await })
    }
}

async fn answer(
    replicas: Replicas,
    peer: PeerId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let refuse =
        |reason: Refusal, message: String| ServiceResponseHead::Refused { reason, message };
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head::<ServiceRequestHead>(&mut recv))
        .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(HeadError::Bad(e))) => {
            debug!(%peer, error = %e, "bad service request head");
            reply_head(&mut send, &refuse(Refusal::BadRequest, e)).await;
            return;
        }
        Ok(Err(HeadError::Io(_))) | Err(_) => return,
    };
    let body = match recv.read_to_end(MAX_BODY).await {
        Ok(b) => Bytes::from(b),
        Err(quinn::ReadToEndError::TooLong) => {
            reply_head(
                &mut send,
                &refuse(
                    Refusal::BadRequest,
                    format!("request body over {MAX_BODY} bytes"),
                ),
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    let Some(replica) = replicas
        .get(head.replica)
        .filter(|r| r.service == head.service)
    else {
        reply_head(
            &mut send,
            &refuse(
                Refusal::NotHere,
                format!("no replica {} of {} here", head.replica, head.service),
            ),
        )
        .await;
        return;
    };
    let req = match build_request(&head, body) {
        Ok(r) => r,
        Err(e) => {
            reply_head(&mut send, &refuse(Refusal::BadRequest, e)).await;
            return;
        }
    };
    let (head, body) = match replica.invoke(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            (
                ServiceResponseHead::Response {
                    status: parts.status.as_u16(),
                    headers: header_pairs(&parts.headers),
                },
                body,
            )
        }
        Err(None) => (
            refuse(
                Refusal::Draining,
                format!("replica {} is not taking requests", replica.id),
            ),
            Bytes::new(),
        ),
        Err(Some(why)) => (
            ServiceResponseHead::Response {
                status: 502,
                headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            },
            Bytes::from(format!("replica {} failed: {why}\n", replica.id)),
        ),
    };
    reply_head(&mut send, &head).await;
    if !body.is_empty() {
        let _ = send.write_all(&body).await;
    }
    let _ = send.finish();
}

async fn reply_head(send: &mut quinn::SendStream, head: &ServiceResponseHead) {
    match frame(head, MAX_SERVICE_HEAD_BYTES) {
        Ok(f) => {
            let _ = send.write_all(&f).await;
        }
        Err(e) => debug!(error = %e, "cannot encode a service response head"),
    }
    if matches!(head, ServiceResponseHead::Refused { .. }) {
        let _ = send.finish();
    }
}

/// The request a replica sees.
pub fn build_request(
    head: &ServiceRequestHead,
    body: Bytes,
) -> Result<http::Request<Bytes>, String> {
    let mut req = http::Request::builder()
        .method(head.method.as_str())
        .uri(head.uri.as_str());
    for (k, v) in &head.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(body)
        .map_err(|e| format!("malformed request: {e}"))
}

/// Headers as text pairs; values that are not text are left out.
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .take(weft_protocol::service::MAX_SERVICE_HEADERS)
        .collect()
}

/// Registers the stream handler with the data plane.
pub fn install(transfer: &TransferHandle, replicas: Replicas) {
    transfer.set_service_streams(Arc::new(Streams { replicas }));
}
