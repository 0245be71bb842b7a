//! Failure classes: why an attempt failed, told apart from real pod status fields.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a job attempt failed. The names are the wire and storage names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// `ErrImagePull`, `ImagePullBackOff` or `InvalidImageName` for too long (of the
    /// job's container or of an init container).
    ImagePull,
    /// `PodScheduled=False` (`Unschedulable`) for longer than the autoscaler needs.
    Unschedulable,
    /// The container could not be created or started: `CreateContainerConfigError` and
    /// its kin for too long, a volume that cannot be mounted (`FailedMount`), or a
    /// runtime that could not start the process (`StartError`, `ContainerCannotRun`).
    ContainerConfig,
    /// The container was killed for exceeding its memory limit.
    OomKilled,
    /// The container exited with a non-zero code.
    ExitCode,
    /// The job ran past its timeout.
    DeadlineExceeded,
    /// The kubelet evicted the pod for the node's sake (node pressure, graceful node
    /// shutdown), or the pod was a disruption target (preemption, the Eviction API).
    Evicted,
    /// The kubelet evicted the pod for exceeding its own ephemeral-storage limit (or an
    /// `emptyDir` size limit): the job's own doing.
    StorageLimit,
    /// The node's kubelet refused the pod the scheduler placed there before any of its
    /// containers ran (admission: `OutOfcpu`, `NodeAffinity`, `UnexpectedAdmissionError`,
    /// `NodeShutdown`, ...).
    NodeRejected,
    /// An init container (the job's environment, often injected by a webhook) failed.
    InitContainer,
    /// The pod's node stopped responding or went away.
    NodeLost,
    /// The pod was deleted by something other than podbridge: gone, or stopped by the
    /// deletion while it ran.
    PodVanished,
    /// The Kubernetes API refused the pod (422 Invalid, or a policy).
    ApiRejected,
    /// The stored job no longer passes the deployment's guardrails (they were narrowed
    /// since it was accepted): the attempt was not started.
    NoLongerAllowed,
    /// The pod never started within its start limit, for any other reason.
    StartTimeout,
    /// The pod failed in a way podbridge does not recognise; the record keeps the API's
    /// own reason and message.
    Unknown,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 16] = [
        Self::ImagePull,
        Self::Unschedulable,
        Self::ContainerConfig,
        Self::OomKilled,
        Self::ExitCode,
        Self::DeadlineExceeded,
        Self::Evicted,
        Self::StorageLimit,
        Self::NodeRejected,
        Self::InitContainer,
        Self::NodeLost,
        Self::PodVanished,
        Self::ApiRejected,
        Self::NoLongerAllowed,
        Self::StartTimeout,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImagePull => "image_pull",
            Self::Unschedulable => "unschedulable",
            Self::ContainerConfig => "container_config",
            Self::OomKilled => "oom_killed",
            Self::ExitCode => "exit_code",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Evicted => "evicted",
            Self::StorageLimit => "storage_limit",
            Self::NodeRejected => "node_rejected",
            Self::InitContainer => "init_container",
            Self::NodeLost => "node_lost",
            Self::PodVanished => "pod_vanished",
            Self::ApiRejected => "api_rejected",
            Self::NoLongerAllowed => "no_longer_allowed",
            Self::StartTimeout => "start_timeout",
            Self::Unknown => "unknown",
        }
    }

    /// Classes retried unless a job says otherwise: those the job did not cause, where
    /// the same pod has every chance on another node or a moment later. `unknown` is
    /// among them: podbridge could not tell, and a retry is bounded by `maxAttempts`.
    pub const RETRIED_BY_DEFAULT: [FailureClass; 5] =
        [Self::Evicted, Self::NodeRejected, Self::NodeLost, Self::PodVanished, Self::Unknown];
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure class name that is not one of [`FailureClass::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure class {0:?}")]
pub struct UnknownFailureClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == name).ok_or_else(|| UnknownFailureClass(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::FailureClass;

    #[test]
    fn names_match_serde_and_parse_back() {
        for class in FailureClass::ALL {
            assert_eq!(serde_json::to_string(&class).unwrap(), format!("\"{class}\""));
            assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
        }
        assert!("oom".parse::<FailureClass>().is_err());
    }
}
