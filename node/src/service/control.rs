//! Desired state: writing a service's ledger entries and folding them.

use super::{Applied, HistoryItem, ServiceError, ServiceHandle, ServiceState};

impl ServiceHandle {
    /// Applies a spec: a new revision unless it equals the current one.
    pub async fn apply(&self, spec_yaml: &str) -> Result<Applied, ServiceError> {
        let _ = spec_yaml;
        Err(ServiceError::Invalid("not yet".into()))
    }

    /// Sets the desired replicas of the current revision.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<(), ServiceError> {
        let _ = (name, replicas);
        Err(ServiceError::Invalid("not yet".into()))
    }

    /// Makes an earlier revision current (`None`: the one before the current).
    pub async fn rollback(&self, name: &str, to: Option<u32>) -> Result<u32, ServiceError> {
        let _ = (name, to);
        Err(ServiceError::Invalid("not yet".into()))
    }

    /// Written by the owner when a rollout missed its deadline.
    pub async fn revert(&self, name: &str, to: u32, reason: String) -> Result<(), ServiceError> {
        let _ = (name, to, reason);
        Err(ServiceError::Invalid("not yet".into()))
    }

    pub async fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let _ = name;
        Err(ServiceError::Invalid("not yet".into()))
    }

    pub fn history(&self, name: &str) -> Result<Vec<HistoryItem>, ServiceError> {
        Ok(self.state(name)?.history)
    }

    /// The fold of `name`'s entries; `NotFound` if it has none.
    pub fn state(&self, name: &str) -> Result<ServiceState, ServiceError> {
        Err(ServiceError::NotFound(name.to_string()))
    }

    /// Every service with entries here, removed ones included.
    pub fn states(&self) -> Result<Vec<ServiceState>, ServiceError> {
        Ok(Vec::new())
    }
}
