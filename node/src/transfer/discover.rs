//! Finding providers: which peers hold a blob, and where their data planes
//! listen. Connected peers and a few others are asked `Has`; Kademlia's
//! provider records add peers not connected; a peer whose control plane does
//! not answer is asked on its data plane.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tracing::debug;
use weft_protocol::{Hash, Request, Response};

use quinn::VarInt;
use weft_protocol::transfer::{
    GetRequest, GetResponse, GroupRanges, MAX_RESPONSE_BYTES, STOP_CANCELLED,
};

use super::endpoint::{read_frame, write_frame};
use super::fetch::Shared;
use super::{TransferError, TransferHandle};
use crate::net::PeerInfo;

/// Peers asked `Has` at most, beyond Kademlia's providers.
const MAX_ASKED: usize = 32;

/// How long a peer has to answer `Has`.
const HAS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer's control plane has to answer `Has` before its data
/// plane is asked as well.
const HEDGE_AFTER: Duration = Duration::from_millis(100);

/// How long the Kademlia lookup may take.
const KAD_TIMEOUT: Duration = Duration::from_secs(3);

/// How long discovery waits for more providers once one answered.
const DISCOVERY_GRACE: Duration = Duration::from_millis(250);

/// A node that holds what is being fetched, and where its endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Provider {
    pub(super) peer: PeerId,
    pub(super) addr: SocketAddr,
}

/// Where `p`'s data plane listens (see [`PeerInfo::data_addr`]).
pub(super) fn data_addr(p: &PeerInfo) -> Option<SocketAddr> {
    p.data_addr()
}

/// Providers of `hash` among the mesh: connected peers and up to
/// [`MAX_ASKED`] others are asked `Has`, and so are the peers Kademlia names
/// as providers (looked up meanwhile). A peer whose `Has` fails is asked on
/// the data plane instead. Returns the providers and how many peers were
/// asked.
pub(super) async fn discover(
    shared: &Shared,
    handle: &TransferHandle,
    hash: Hash,
    exclude: &HashSet<PeerId>,
) -> Result<(Vec<Provider>, usize), TransferError> {
    let peers = shared.net.peers().await?;
    let addrs: HashMap<PeerId, SocketAddr> = peers
        .iter()
        .filter_map(|p| data_addr(p).map(|a| (p.peer_id, a)))
        .filter(|(p, _)| *p != shared.local && !exclude.contains(p))
        .collect();
    let mut ask: Vec<PeerId> = Vec::new();
    for p in peers.iter().filter(|p| p.connected) {
        ask.push(p.peer_id);
    }
    for p in peers.iter().filter(|p| !p.connected) {
        if ask.len() >= MAX_ASKED {
            break;
        }
        ask.push(p.peer_id);
    }
    ask.retain(|p| addrs.contains_key(p));
    let mut asked: HashSet<PeerId> = ask.iter().copied().collect();
    let ask_one = |peer: PeerId, addr: SocketAddr| {
        let net = shared.net.clone();
        let handle = handle.clone();
        async move { has(&net, &handle, peer, addr, hash).await.then_some(peer) }
    };
    let mut answers: FuturesUnordered<_> = ask
        .into_iter()
        .filter_map(|p| addrs.get(&p).map(|&a| ask_one(p, a)))
        .collect();
    let kad = tokio::time::timeout(KAD_TIMEOUT, shared.net.get_providers(hash));
    tokio::pin!(kad);
    let mut kad_done = false;
    // once one provider answered, slower peers get a short grace, not the
    // whole timeout: a fetch starts with whoever is quick
    let mut providers: Vec<Provider> = Vec::new();
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if answers.is_empty() && kad_done {
            break;
        }
        tokio::select! {
            found = &mut kad, if !kad_done => {
                kad_done = true;
                if let Ok(Ok(found)) = found {
                    for p in found {
                        if let Some(&a) = addrs.get(&p)
                            && asked.insert(p)
                        {
                            answers.push(ask_one(p, a));
                        }
                    }
                }
            }
            Some(answer) = answers.next(), if !answers.is_empty() => {
                if let Some(peer) = answer
                    && let Some(&addr) = addrs.get(&peer)
                {
                    providers.push(Provider { peer, addr });
                    if grace.is_none() {
                        grace = Some(Box::pin(tokio::time::sleep(DISCOVERY_GRACE)));
                    }
                }
            }
            _ = async {
                match grace.as_mut() {
                    Some(g) => g.await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
    Ok((providers, asked.len()))
}

/// Whether `peer` holds `hash` whole: asked with `Has` on the control
/// plane and, when that has not answered within [`HEDGE_AFTER`] (or failed),
/// with an empty request on the data plane too; the first answer counts.
async fn has(
    net: &crate::net::NetHandle,
    handle: &TransferHandle,
    peer: PeerId,
    addr: SocketAddr,
    hash: Hash,
) -> bool {
    let control = async {
        // a connection being set up can drop a request: ask twice
        for attempt in 0..2 {
            let req = Request::Has {
                hashes: vec![hash],
                closure: false,
            };
            match net.request(peer, req).await {
                Ok(Response::Have { blobs }) => return Some(blobs.iter().any(|b| b.hash == hash)),
                Ok(other) => {
                    debug!(%peer, answer = ?other, "unexpected answer to Has");
                    return Some(false);
                }
                Err(e) => {
                    debug!(%peer, error = %e, attempt, "Has failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        None
    };
    let data = async {
        tokio::time::sleep(HEDGE_AFTER).await;
        probe(handle, peer, addr, hash).await
    };
    let answer = async {
        tokio::pin!(control, data);
        let (mut control_done, mut data_done) = (false, false);
        while !(control_done && data_done) {
            tokio::select! {
                r = &mut control, if !control_done => {
                    control_done = true;
                    if let Some(held) = r {
                        return held;
                    }
                }
                r = &mut data, if !data_done => {
                    data_done = true;
                    match r {
                        Ok(held) => return held,
                        Err(e) => debug!(%peer, error = %e, "data-plane probe failed"),
                    }
                }
            }
        }
        false
    };
    tokio::time::timeout(HAS_TIMEOUT, answer)
        .await
        .unwrap_or(false)
}

/// Asks `peer`'s data plane for no groups of `hash`: the header says
/// whether it holds the blob.
async fn probe(
    handle: &TransferHandle,
    peer: PeerId,
    addr: SocketAddr,
    hash: Hash,
) -> Result<bool, String> {
    let conn = handle
        .connect(peer, addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let req = GetRequest {
        hash,
        ranges: GroupRanges::empty(),
        size_proof: false,
    };
    let frame = req.to_frame().map_err(|e| e.to_string())?;
    write_frame(&mut send, &frame)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let payload = read_frame(&mut recv, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let _ = recv.stop(VarInt::from_u32(STOP_CANCELLED));
    Ok(matches!(
        GetResponse::decode(&payload).map_err(|e| e.to_string())?,
        GetResponse::Found { .. }
    ))
}
