//! A rogue member: a peer that holds the cluster secret (so the mesh admits
//! it) but runs none of weft's own logic. Security tests use it to send what
//! an honest node never would: forged assignments, results for attempts it
//! was never given, cache records, tags with huge origins or far-future
//! clocks. Its inbound requests are handed to the test, which answers them
//! as it likes.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use weft_node::config::parse_secret;
use weft_node::net::{self, NetConfig, NetEvent, NetHandle};
use weft_protocol::{NodeAdvert, Request, Response};

use crate::Cluster;

/// A member of the cluster driven by a test.
pub struct Rogue {
    /// Sends requests and gossip as this member.
    pub net: NetHandle,
    /// What the mesh tells this member: inbound requests (answer them on
    /// their `reply`, or drop it), gossip, membership changes.
    pub events: mpsc::Receiver<NetEvent>,
    /// Change the advert the member gossips (e.g. to look like an executor).
    pub advert: watch::Sender<NodeAdvert>,
    keypair: Keypair,
}

impl Rogue {
    /// Joins `cluster` with its secret (so it is authenticated like any
    /// member), bootstrapped off node 0, advertising `advert`.
    pub async fn join(cluster: &Cluster, advert: NodeAdvert) -> anyhow::Result<Rogue> {
        Self::join_with_secret(cluster, cluster.secret(), advert).await
    }

    /// [`Rogue::join`], then waits until every running node lists the
    /// member and the member lists every running node (so what it sends
    /// next is neither refused as from a stranger nor undeliverable for want
    /// of an address).
    pub async fn join_seen(cluster: &Cluster, advert: NodeAdvert) -> anyhow::Result<Rogue> {
        let rogue = Self::join(cluster, advert).await?;
        let id = rogue.peer_id().to_string();
        let net = rogue.net.clone();
        cluster
            .wait_until(
                Duration::from_secs(20),
                "the rogue and every node list each other",
                |c| {
                    let id = id.clone();
                    let net = net.clone();
                    async move {
                        let known: Vec<String> = net
                            .peers()
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|p| p.peer_id.to_string())
                            .collect();
                        for (i, n) in c.running() {
                            if !known.contains(&n.peer_id().to_string())
                                || !c.peers_of(i).await.contains(&id)
                            {
                                return false;
                            }
                        }
                        true
                    }
                },
            )
            .await?;
        Ok(rogue)
    }

    /// Like [`Rogue::join`] with another secret: a non-member, which the
    /// mesh must never admit.
    pub async fn join_with_secret(
        cluster: &Cluster,
        secret: &str,
        advert: NodeAdvert,
    ) -> anyhow::Result<Rogue> {
        let keypair = Keypair::generate_ed25519();
        let mut config = NetConfig::new(keypair.clone(), parse_secret(secret)?);
        config.mdns = false;
        config.advert_interval = Duration::from_millis(300);
        config.advert_ttl = Duration::from_millis(1000);
        config.bootstrap = cluster
            .node(0)
            .net()
            .dialable_addrs()
            .await?
            .into_iter()
            .filter(|a| a.to_string().contains("/tcp/"))
            .collect::<Vec<Multiaddr>>();
        let (tx, rx) = watch::channel(advert);
        let (net, events) = net::spawn(config, rx).await?;
        Ok(Rogue {
            net,
            events,
            advert: tx,
            keypair,
        })
    }

    /// This member's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// This member's key (to sign records as it likes).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Sends `request` to `peer` as this member.
    pub async fn request(&self, peer: PeerId, request: Request) -> anyhow::Result<Response> {
        Ok(self.net.request(peer, request).await?)
    }

    /// Waits up to `timeout` for the next inbound request, answering every
    /// other event by ignoring it. Returns the request and where to answer.
    pub async fn next_request(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(PeerId, Request, oneshot::Sender<Response>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no request within {timeout:?}"))?
                .ok_or_else(|| anyhow::anyhow!("the rogue's net actor stopped"))?;
            if let NetEvent::InboundRequest {
                peer,
                request,
                reply,
            } = event
            {
                return Ok((peer, request, reply));
            }
        }
    }

    /// Stops the member.
    pub async fn stop(self) {
        let _ = self.net.shutdown().await;
    }
}
