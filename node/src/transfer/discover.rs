//! Finding providers: which peers hold a blob, and where their data planes
//! listen. Connected peers and a few others are asked `Has`; Kademlia's
//! provider records add peers not connected.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use tracing::debug;
use weft_protocol::{Hash, Request, Response};

use super::TransferError;
use super::fetch::Shared;
use crate::net::PeerInfo;

/// Peers asked `Has` at most, beyond Kademlia's providers.
const MAX_ASKED: usize = 32;

/// How long a peer has to answer `Has`.
const HAS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long discovery waits for more providers once one answered.
const DISCOVERY_GRACE: Duration = Duration::from_millis(250);

/// A node that holds what is being fetched, and where its endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Provider {
    pub(super) peer: PeerId,
    pub(super) addr: SocketAddr,
}

/// Where `p`'s data plane listens: its advert's address, with the host
/// taken from its libp2p addresses when the advert names an unspecified one.
pub(super) fn data_addr(p: &PeerInfo) -> Option<SocketAddr> {
    let a: SocketAddr = p.advert.data_plane_addr.as_deref()?.parse().ok()?;
    if !a.ip().is_unspecified() {
        return Some(a);
    }
    p.addrs.iter().find_map(|m| {
        m.iter().find_map(|proto| match proto {
            Protocol::Ip4(ip) => Some(SocketAddr::new(IpAddr::V4(ip), a.port())),
            Protocol::Ip6(ip) => Some(SocketAddr::new(IpAddr::V6(ip), a.port())),
            _ => None,
        })
    })
}

/// Providers of `hash` among the mesh: connected peers and up to
/// [`MAX_ASKED`] others are asked `Has`, plus those Kademlia names. Returns
/// them and how many peers were asked.
pub(super) async fn discover(
    shared: &Shared,
    hash: Hash,
    exclude: &HashSet<PeerId>,
) -> Result<(Vec<Provider>, usize), TransferError> {
    let peers = shared.net.peers().await?;
    let addrs: HashMap<PeerId, SocketAddr> = peers
        .iter()
        .filter_map(|p| data_addr(p).map(|a| (p.peer_id, a)))
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
    if let Ok(Ok(found)) =
        tokio::time::timeout(Duration::from_secs(2), shared.net.get_providers(hash)).await
    {
        for p in found {
            if !ask.contains(&p) {
                ask.push(p);
            }
        }
    }
    ask.retain(|p| *p != shared.local && !exclude.contains(p) && addrs.contains_key(p));
    let asked = ask.len();
    let mut answers: FuturesUnordered<_> = ask
        .into_iter()
        .map(|peer| {
            let net = shared.net.clone();
            async move {
                // a connection being set up can drop a request: ask twice
                for attempt in 0..2 {
                    let req = Request::Has {
                        hashes: vec![hash],
                        closure: false,
                    };
                    match tokio::time::timeout(HAS_TIMEOUT, net.request(peer, req)).await {
                        Ok(Ok(Response::Have { blobs })) => {
                            return blobs.iter().any(|b| b.hash == hash).then_some(peer);
                        }
                        Ok(Ok(other)) => {
                            debug!(%peer, answer = ?other, "unexpected answer to Has");
                            return None;
                        }
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, attempt, "Has failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => return None,
                    }
                }
                None
            }
        })
        .collect();
    // once one provider answered, slower peers get a short grace, not the
    // whole timeout: a fetch starts with whoever is quick
    let mut providers: Vec<Provider> = Vec::new();
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let next = match grace.as_mut() {
            Some(g) => tokio::select! {
                _ = g => break,
                n = answers.next() => n,
            },
            None => answers.next().await,
        };
        match next {
            None => break,
            Some(Some(peer)) => {
                if let Some(&addr) = addrs.get(&peer) {
                    providers.push(Provider { peer, addr });
                }
                if grace.is_none() {
                    grace = Some(Box::pin(tokio::time::sleep(DISCOVERY_GRACE)));
                }
            }
            Some(None) => {}
        }
    }
    Ok((providers, asked))
}
