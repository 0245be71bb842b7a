//! Failure classes: why an attempt failed, told apart from real pod status fields.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a job attempt failed. The names are the wire and storage names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// `ErrImagePull`, `ImagePullBackOff` or `InvalidImageName` for too long.
    ImagePull,
    /// `PodScheduled=False` (`Unschedulable`) for longer than the autoscaler needs.
    Unschedulable,
    /// The container could not be created (`CreateContainerConfigError`, ...).
    ContainerConfig,
    /// The container was killed for exceeding its memory limit.
    OomKilled,
    /// The container exited with a non-zero code.
    ExitCode,
    /// The job ran past its timeout.
    DeadlineExceeded,
    /// The kubelet evicted the pod, or the pod was a disruption target.
    Evicted,
    /// The pod's node stopped responding or went away.
    NodeLost,
    /// The pod was deleted by something other than podbridge.
    PodVanished,
    /// The Kubernetes API refused the pod (422 Invalid, or a policy).
    ApiRejected,
    /// The pod never started within its start limit, for any other reason.
    StartTimeout,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 11] = [
        Self::ImagePull,
        Self::Unschedulable,
        Self::ContainerConfig,
        Self::OomKilled,
        Self::ExitCode,
        Self::DeadlineExceeded,
        Self::Evicted,
        Self::NodeLost,
        Self::PodVanished,
        Self::ApiRejected,
        Self::StartTimeout,
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
            Self::NodeLost => "node_lost",
            Self::PodVanished => "pod_vanished",
            Self::ApiRejected => "api_rejected",
            Self::StartTimeout => "start_timeout",
        }
    }

    /// Classes retried unless a job says otherwise: those the job did not cause.
    pub const RETRIED_BY_DEFAULT: [FailureClass; 3] = [Self::Evicted, Self::NodeLost, Self::PodVanished];
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
