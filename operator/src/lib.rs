//! The letsgo operator: reconciles a `Store` custom resource into a running shop.
//!
//! - [`store`]: the `Store` types, from which the CRD is generated (`crdgen`).
//! - [`manifests`]: pure builders from a Store to the Kubernetes objects that run it.
//! - [`controller`]: the reconciler, its status and its error policy.
//! - [`leader`]: leader election on a Lease, so only one replica reconciles.
//! - [`reachability`]: whether the operator reaches each external middleware.
//! - [`stuck_pods`]: middleware Pods a StatefulSet rollout would wait on for ever.
//! - [`metrics`]: what the operator tells about itself (its logs and traces: letsgo-traces).

pub mod controller;
pub mod crd;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod reachability;
pub mod status;
pub mod store;
pub mod stuck_pods;

#[cfg(test)]
mod fixtures;

/// Everything that can go wrong in a reconcile or in the operator's start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("the Store has no {0}")]
    MissingObjectKey(&'static str),
    #[error("serializing {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
    #[error("writing the CRD: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A short, bounded label for the failures metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => format!("api_{}", status.code),
            Error::Kube(_) => "kube".to_owned(),
            Error::MissingObjectKey(_) => "missing_object_key".to_owned(),
            Error::Serialize(..) => "serialize".to_owned(),
            Error::Io(_) => "io".to_owned(),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
