//! What the API shows of services, from the desired state alone: no
//! replica is observed here (`ready` and `total` are 0, no endpoints, no
//! logs). The runtime replaces these views with ones that read the
//! replicas every node lists in its advert.

use weft_protocol::service::{Replicas, ServiceTask};

use super::{
    Endpoint, ReplicaLogs, ServiceError, ServiceHandle, ServiceState, ServiceStatus, ServiceSummary,
};

fn summary(st: &ServiceState) -> ServiceSummary {
    let spec = st.current_spec().map(|(_, s)| s);
    ServiceSummary {
        name: st.name.to_string(),
        revision: st.current,
        kind: match spec.map(|s| &s.task) {
            Some(ServiceTask::Wasm { .. }) => "wasm".into(),
            Some(ServiceTask::Container { .. }) => "container".into(),
            None => "-".into(),
        },
        desired: st.replicas,
        autoscale: spec
            .filter(|s| s.replicas == Replicas::Auto)
            .and_then(|s| s.autoscale)
            .map(|a| (a.min, a.max)),
        ready: 0,
        total: 0,
        owner: None,
    }
}

impl ServiceHandle {
    /// Every service, removed ones with no revision.
    pub fn list(&self) -> Result<Vec<ServiceSummary>, ServiceError> {
        Ok(self.states()?.iter().map(summary).collect())
    }

    pub fn status(&self, name: &str) -> Result<ServiceStatus, ServiceError> {
        let st = self.state(name)?;
        let summary = summary(&st);
        let rollout = match st.current {
            None => "removed",
            Some(_) if st.replicas == 0 => "scaled to zero",
            Some(_) => "pending",
        };
        Ok(ServiceStatus {
            summary,
            rollout: rollout.into(),
            endpoints: Vec::new(),
            spec: st
                .current
                .and_then(|n| st.revision(n))
                .map(|r| r.yaml.clone()),
            history: st.history,
        })
    }

    pub fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>, ServiceError> {
        self.state(name)?;
        Ok(Vec::new())
    }

    pub async fn logs(&self, name: &str) -> Result<Vec<ReplicaLogs>, ServiceError> {
        self.state(name)?;
        Ok(Vec::new())
    }
}
