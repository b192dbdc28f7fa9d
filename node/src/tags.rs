//! Tag replication: every tag set anywhere resolves everywhere.
//!
//! A tag is a last-writer-wins register per name (hybrid logical clock, ties
//! by node id; see `weft_protocol::tag`). Versions this node writes are
//! gossiped on `weft/tags/1` as they happen; versions gossiped by others are
//! merged into the store. When a peer enters the membership table (and so,
//! for a node that restarts, every peer) the two exchange all their tags
//! with `Request::TagSync`, a page at a time, so a node that was away catches
//! up. Every node keeps every version it has seen in the tag's history.
//!
//! What a peer sends is checked before it is merged: a gossiped version
//! must be written by the node that signed the gossip (its origin is the
//! gossip's source); a version relayed in a sync page may come from any node
//! but its origin must be a node id; and no version's clock may run more
//! than [`weft_protocol::tag::MAX_CLOCK_SKEW_MS`] ahead of this node's, so the local clock never
//! jumps to a forged reading. Refusals are logged with the peer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use weft_protocol::tag::ClockSkewError;
use weft_protocol::{Bounded, ErrorCode, Request, Response, TagName, TagUpdate, TagVersion, Topic};

use crate::net::NetHandle;
use crate::store::Store;

/// Tags per `TagSync` page.
const PAGE: usize = 200;
/// Versions of one tag sent in a sync page (its newest).
const PAGE_VERSIONS: usize = 50;

/// What the replicator is told by the daemon's dispatch loop.
#[derive(Debug)]
pub enum TagEvent {
    /// A `weft/tags/1` message.
    Gossip { source: PeerId, data: Vec<u8> },
    /// A peer joined: sync with it.
    PeerUp(PeerId),
}

/// Handle to the replicator.
#[derive(Clone)]
pub struct TagsHandle {
    tx: mpsc::Sender<TagEvent>,
}

impl TagsHandle {
    /// Passes an event on; drops it if the replicator is far behind (a
    /// later sync repairs anything missed).
    pub fn send(&self, event: TagEvent) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "tag replicator busy; event dropped, next sync repairs it");
        }
    }
}

/// The replicator: its handle, and the loop for the caller to spawn.
pub fn replicator(
    store: Store,
    net: NetHandle,
    shutdown: CancellationToken,
) -> (
    TagsHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(1024);
    let local = store.subscribe_tags();
    (TagsHandle { tx }, run(store, net, local, rx, shutdown))
}

async fn run(
    store: Store,
    net: NetHandle,
    mut local: broadcast::Receiver<TagUpdate>,
    mut events: mpsc::Receiver<TagEvent>,
    shutdown: CancellationToken,
) {
    let mut syncs = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            update = local.recv() => match update {
                Ok(update) => publish(&net, &update).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "local tag changes outran gossip; peers catch up on their next sync");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            event = events.recv() => match event {
                Some(TagEvent::Gossip { source, data }) => merge_gossip(&store, source, &data).await,
                Some(TagEvent::PeerUp(peer)) => {
                    let (store, net) = (store.clone(), net.clone());
                    syncs.spawn(async move { sync_with(store, net, peer).await });
                }
                None => break,
            },
            Some(_) = syncs.join_next(), if !syncs.is_empty() => {}
        }
    }
    syncs.shutdown().await;
}

async fn publish(net: &NetHandle, update: &TagUpdate) {
    let data = match update.encode() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(tag = %update.name, error = %e, "cannot encode tag update");
            return;
        }
    };
    if let Err(e) = net.publish(Topic::Tags, data).await {
        // no peer subscribed yet, or none at all: they catch up on sync
        tracing::debug!(tag = %update.name, error = %e, "tag update not gossiped");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a tag version from a peer is refused.
#[derive(Debug, thiserror::Error)]
pub enum TagRefusal {
    /// A gossiped version names another writer than the node that signed it.
    #[error("the version's origin {origin:?} is not the node that gossiped it")]
    NotItsOrigin { origin: String },
    /// A relayed version's origin is no node id.
    #[error("the version's origin {origin:?} is not a node id")]
    BadOrigin { origin: String },
    #[error(transparent)]
    Clock(#[from] ClockSkewError),
}

/// Checks a version gossiped by `source`: it must be `source`'s own, with a
/// clock at most [`weft_protocol::tag::MAX_CLOCK_SKEW_MS`] ahead of this node's.
pub fn check_gossiped(
    source: &PeerId,
    version: &TagVersion,
    now_ms: u64,
) -> Result<(), TagRefusal> {
    if version.origin != source.to_string() {
        return Err(TagRefusal::NotItsOrigin {
            origin: version.origin.chars().take(80).collect(),
        });
    }
    version.hlc.check_skew(now_ms)?;
    Ok(())
}

/// Checks a version relayed in a `TagSync` page: the peer answers with the
/// history it holds, so the origin may be any node, but it must be a node id
/// (decoding already bounded its length), and its clock at most
/// [`weft_protocol::tag::MAX_CLOCK_SKEW_MS`] ahead of this node's.
pub fn check_relayed(version: &TagVersion, now_ms: u64) -> Result<(), TagRefusal> {
    if version.origin.parse::<PeerId>().is_err() {
        return Err(TagRefusal::BadOrigin {
            origin: version.origin.chars().take(80).collect(),
        });
    }
    version.hlc.check_skew(now_ms)?;
    Ok(())
}

async fn merge_gossip(store: &Store, source: PeerId, data: &[u8]) {
    let update = match TagUpdate::decode(data) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(%source, error = %e, "malformed tag update dropped");
            return;
        }
    };
    if let Err(e) = check_gossiped(&source, &update.version, now_ms()) {
        tracing::warn!(%source, tag = %update.name, error = %e, "tag update refused");
        return;
    }
    let store = store.clone();
    let name = update.name.clone();
    match tokio::task::spawn_blocking(move || store.merge_tag(&update.name, update.version)).await {
        Ok(Ok(changed)) => tracing::debug!(tag = %name, %source, changed, "tag update merged"),
        Ok(Err(e)) => tracing::warn!(tag = %name, error = %e, "cannot merge tag update"),
        Err(e) => tracing::warn!(error = %e, "tag merge task failed"),
    }
}

/// Pulls every tag `peer` has, page by page, and merges them.
#[tracing::instrument(skip(store, net))]
async fn sync_with(store: Store, net: NetHandle, peer: PeerId) {
    let mut after: Option<TagName> = None;
    let mut merged = 0usize;
    loop {
        let response = match tokio::time::timeout(
            Duration::from_secs(30),
            net.request(
                peer,
                Request::TagSync {
                    after: after.clone(),
                },
            ),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tag sync failed");
                return;
            }
            Err(_) => {
                tracing::debug!("tag sync timed out");
                return;
            }
        };
        let (tags, more) = match response {
            Response::Tags { tags, more } => (tags, more),
            other => {
                tracing::debug!(response = ?other, "peer does not sync tags");
                return;
            }
        };
        after = tags.last().map(|(n, _)| n.clone());
        let s = store.clone();
        let result =
            tokio::task::spawn_blocking(move || -> Result<usize, crate::store::StoreError> {
                let mut changed = 0;
                let now = now_ms();
                for (name, versions) in tags {
                    for v in versions {
                        if let Err(e) = check_relayed(&v, now) {
                            tracing::warn!(tag = %name, error = %e, "synced tag version refused");
                            continue;
                        }
                        changed += usize::from(s.merge_tag(&name, v)?);
                    }
                }
                s.flush()?;
                Ok(changed)
            })
            .await;
        match result {
            Ok(Ok(n)) => merged += n,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot merge synced tags");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "tag merge task failed");
                return;
            }
        }
        if !more || after.is_none() {
            break;
        }
    }
    tracing::debug!(merged, "tag sync done");
}

/// Answers a `TagSync` request from the store.
pub async fn answer_sync(store: &Store, after: Option<TagName>) -> Response {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.tag_page(after.as_ref(), PAGE, PAGE_VERSIONS))
        .await
    {
        Ok(Ok((mut tags, more))) => {
            // a version stored before origins were bounded would make the
            // whole page undecodable for the asker: leave such versions out
            for (name, versions) in &mut tags {
                versions.retain(|v| match v.check_bounds() {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(tag = %name, %error, "not syncing a stored tag version over its bounds");
                        false
                    }
                });
            }
            Response::Tags { tags, more }
        }
        Ok(Err(e)) => Response::error(ErrorCode::Internal, e.to_string()),
        Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hlc;
    use weft_protocol::tag::MAX_CLOCK_SKEW_MS;

    fn version(origin: String, wall_ms: u64) -> TagVersion {
        TagVersion {
            target: None,
            hlc: Hlc {
                wall_ms,
                counter: 0,
            },
            origin,
        }
    }

    #[test]
    fn gossiped_versions_are_their_signers_own() {
        let source = PeerId::random();
        let other = PeerId::random();
        let now = 1_000_000;
        assert!(check_gossiped(&source, &version(source.to_string(), now), now).is_ok());
        let err = check_gossiped(&source, &version(other.to_string(), now), now)
            .expect_err("another node's origin");
        assert!(matches!(err, TagRefusal::NotItsOrigin { .. }), "{err}");
        for ahead in [MAX_CLOCK_SKEW_MS + 1, u64::MAX - now] {
            let err = check_gossiped(&source, &version(source.to_string(), now + ahead), now)
                .expect_err("far future");
            assert!(matches!(err, TagRefusal::Clock(_)), "{err}");
        }
        assert!(
            check_gossiped(
                &source,
                &version(source.to_string(), now + MAX_CLOCK_SKEW_MS),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn relayed_versions_name_a_node_and_a_sane_clock() {
        let now = 1_000_000;
        let other = PeerId::random().to_string();
        assert!(check_relayed(&version(other.clone(), now), now).is_ok());
        let err = check_relayed(&version("1111".into(), now), now).expect_err("not a peer id");
        assert!(matches!(err, TagRefusal::BadOrigin { .. }), "{err}");
        let err = check_relayed(&version(other, u64::MAX), now).expect_err("far future");
        assert!(matches!(err, TagRefusal::Clock(_)), "{err}");
    }
}
