//! Desired state: writing a service's ledger entries and folding them.
//!
//! Every write is one ledger entry by this node (gossiped to every peer);
//! an `Apply` is also pushed to every live peer with the `LedgerPush`
//! barrier before its revision number is returned, so the number is the
//! same on every node (see `crate::ledger`). The checks here (an unknown
//! service, a removed one, a revision that does not exist) are for the
//! person asking; the fold ignores what they would refuse, so an entry
//! written without them changes nothing it should not.

use std::collections::BTreeMap;

use weft_protocol::bounds::{MAX_REASON_BYTES, clip};
use weft_protocol::ledger::{Entry, EntryBody, EntryKind};
use weft_protocol::service::{
    MAX_SERVICE_REPLICAS, Replicas, ServiceChange, ServiceEvent, ServiceName, ServiceSpec,
};

use super::fold::{fold, previous_revision, revision_of};
use super::{Applied, HistoryItem, ServiceError, ServiceHandle, ServiceState};
use crate::ledger::LedgerError;

impl ServiceHandle {
    /// Applies a spec: a new revision unless it equals the current one.
    pub async fn apply(&self, spec_yaml: &str) -> Result<Applied, ServiceError> {
        let spec = ServiceSpec::from_yaml(spec_yaml)?;
        let name = spec.name.clone();
        let state = self.state_blocking(&name).await?;
        if let Some(st) = &state
            && let Some(current) = st.current.and_then(|n| st.revision(n))
            && (current.yaml == spec_yaml || current.spec.as_ref() == Some(&spec))
        {
            return Ok(Applied {
                name: name.to_string(),
                revision: current.number,
                changed: false,
                unconfirmed: Vec::new(),
            });
        }
        let entry = self
            .write(
                &name,
                ServiceChange::Apply {
                    spec: spec_yaml.to_string(),
                },
            )
            .await?;
        // the number is final once every live peer holds the entry
        let unconfirmed = self.ledger().push_to_all(&entry).await;
        if !unconfirmed.is_empty() {
            tracing::warn!(service = %name, peers = ?unconfirmed, "service revision not confirmed by every live peer");
        }
        let entries = self.entries_blocking(&name).await?;
        let revision = revision_of(&entry, &entries).ok_or_else(|| {
            ServiceError::Ledger(LedgerError::Invalid(
                "the new revision was not stored".into(),
            ))
        })?;
        tracing::info!(service = %name, revision, "service applied");
        Ok(Applied {
            name: name.to_string(),
            revision,
            changed: true,
            unconfirmed: unconfirmed
                .into_iter()
                .map(|(peer, why)| format!("{peer}: {why}"))
                .collect(),
        })
    }

    /// Sets the desired replicas of the current revision.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<(), ServiceError> {
        if replicas > MAX_SERVICE_REPLICAS {
            return Err(ServiceError::Invalid(format!(
                "{replicas} replicas is more than the most a service may have ({MAX_SERVICE_REPLICAS})"
            )));
        }
        let (name, st) = self.existing(name).await?;
        let current = live(&st)?;
        let Some(spec) = st.revision(current).and_then(|r| r.spec.as_ref()) else {
            return Err(unreadable(&st, current));
        };
        if spec.replicas == Replicas::Auto {
            return Err(ServiceError::Invalid(format!(
                "service {name} scales itself (replicas: auto); change spec.autoscale (min, max) and apply the spec again"
            )));
        }
        self.write(&name, ServiceChange::Scale { replicas }).await?;
        tracing::info!(service = %name, replicas, "service scaled");
        Ok(())
    }

    /// Makes an earlier revision current (`None`: the one before the current).
    pub async fn rollback(&self, name: &str, to: Option<u32>) -> Result<u32, ServiceError> {
        let (name, st) = self.existing(name).await?;
        let current = live(&st)?;
        let to = match to {
            Some(n) => n,
            None => previous_revision(&st).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "service {name} has had no other revision to roll back to; give one with --to-revision"
                ))
            })?,
        };
        if st.revision(to).is_none() {
            return Err(ServiceError::NoRevision {
                name: name.to_string(),
                revision: to,
            });
        }
        if to == current {
            return Err(ServiceError::Invalid(format!(
                "revision {to} of service {name} is already current"
            )));
        }
        self.write(&name, ServiceChange::Rollback { to, reason: None })
            .await?;
        tracing::info!(service = %name, from = current, to, "service rolled back");
        Ok(to)
    }

    /// Written by the owner when a rollout missed its deadline.
    pub async fn revert(&self, name: &str, to: u32, reason: String) -> Result<(), ServiceError> {
        let (name, st) = self.existing(name).await?;
        if st.revision(to).is_none() {
            return Err(ServiceError::NoRevision {
                name: name.to_string(),
                revision: to,
            });
        }
        let mut reason = reason;
        clip(&mut reason, MAX_REASON_BYTES);
        tracing::warn!(service = %name, to, %reason, "service reverted");
        self.write(
            &name,
            ServiceChange::Rollback {
                to,
                reason: Some(reason),
            },
        )
        .await?;
        Ok(())
    }

    /// Removes the service: its replicas stop; its history stays.
    pub async fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let (name, st) = self.existing(name).await?;
        live(&st)?;
        self.write(&name, ServiceChange::Remove).await?;
        tracing::info!(service = %name, "service removed");
        Ok(())
    }

    pub fn history(&self, name: &str) -> Result<Vec<HistoryItem>, ServiceError> {
        Ok(self.state(name)?.history)
    }

    /// The fold of `name`'s entries; `NotFound` if it has none.
    pub fn state(&self, name: &str) -> Result<ServiceState, ServiceError> {
        let not_found = || ServiceError::NotFound(name.chars().take(80).collect());
        let parsed: ServiceName = name.parse().map_err(|_| not_found())?;
        let entries = self
            .store()
            .ledger_subject(EntryKind::Service, parsed.as_str())?;
        fold(&parsed, &entries).ok_or_else(not_found)
    }

    /// Every service with entries here, removed ones included, by name.
    pub fn states(&self) -> Result<Vec<ServiceState>, ServiceError> {
        let mut by_name: BTreeMap<ServiceName, Vec<Entry>> = BTreeMap::new();
        for e in self.store().ledger_kind(EntryKind::Service)? {
            if let EntryBody::Service(ev) = &e.body {
                by_name.entry(ev.name.clone()).or_default().push(e);
            }
        }
        Ok(by_name
            .iter()
            .filter_map(|(name, entries)| fold(name, entries))
            .collect())
    }

    /// `name` parsed and its state, or `NotFound`.
    async fn existing(&self, name: &str) -> Result<(ServiceName, ServiceState), ServiceError> {
        let parsed: ServiceName = name
            .parse()
            .map_err(|_| ServiceError::NotFound(name.chars().take(80).collect()))?;
        let st = self
            .state_blocking(&parsed)
            .await?
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
        Ok((parsed, st))
    }

    async fn state_blocking(
        &self,
        name: &ServiceName,
    ) -> Result<Option<ServiceState>, ServiceError> {
        let this = self.clone();
        let n = name.clone();
        tokio::task::spawn_blocking(move || match this.state(n.as_str()) {
            Ok(st) => Ok(Some(st)),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| ServiceError::Ledger(LedgerError::Task(e.to_string())))?
    }

    async fn entries_blocking(&self, name: &ServiceName) -> Result<Vec<Entry>, ServiceError> {
        let store = self.store().clone();
        let n = name.clone();
        Ok(tokio::task::spawn_blocking(move || {
            store.ledger_subject(EntryKind::Service, n.as_str())
        })
        .await
        .map_err(|e| ServiceError::Ledger(LedgerError::Task(e.to_string())))??)
    }

    async fn write(
        &self,
        name: &ServiceName,
        change: ServiceChange,
    ) -> Result<Entry, ServiceError> {
        Ok(self
            .ledger()
            .append(EntryBody::Service(ServiceEvent {
                name: name.clone(),
                change,
            }))
            .await?)
    }
}

/// The current revision, or why there is none.
fn live(st: &ServiceState) -> Result<u32, ServiceError> {
    st.current.ok_or_else(|| {
        ServiceError::Invalid(format!(
            "service {} is removed; `weft service apply -f FILE` brings it back",
            st.name
        ))
    })
}

fn unreadable(st: &ServiceState, revision: u32) -> ServiceError {
    ServiceError::Invalid(format!(
        "this node cannot read revision {revision} of service {}; apply a spec it can read",
        st.name
    ))
}
