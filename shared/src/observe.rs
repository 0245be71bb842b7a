//! What a pod says about its job: one pure function from the pod's status fields, as
//! the kubelet and the controllers write them, to what podbridge needs to decide.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};

use crate::failure::FailureClass;

/// The kubelet's reason for a container killed for exceeding its memory limit; also the
/// reason recorded for the attempt it ended.
pub const OOM_KILLED: &str = "OOMKilled";

/// A pod, read for its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodView {
    /// Not running yet, for no reason worth acting on (scheduling, pulling, starting).
    Starting,
    /// The scheduler cannot place it (`PodScheduled=False`, `Unschedulable`), since then.
    Unschedulable { since: Option<Timestamp>, message: String },
    /// The container cannot start and will not by itself soon: image pull failures or
    /// a configuration error (`reason` is the kubelet's, e.g. `ImagePullBackOff`).
    Stuck { class: FailureClass, reason: String, message: String },
    /// The container runs (since `started_at`).
    Running { started_at: Option<Timestamp> },
    /// The container exited with 0.
    Succeeded { finished_at: Option<Timestamp> },
    /// The attempt failed: why, the exit code when there is one, and the kubelet's or
    /// controller's words.
    Failed { class: FailureClass, exit_code: Option<i32>, reason: String, message: String },
}

/// Everything worth keeping from a pod besides its view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub view: PodView,
    pub node: Option<String>,
    /// The container's termination message (its last log lines on failure).
    pub termination_message: Option<String>,
    /// The pod is being deleted.
    pub terminating: bool,
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn main_container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

/// Reads a pod podbridge created.
pub fn observe(pod: &Pod) -> Observed {
    let status = pod.status.clone().unwrap_or_default();
    let container = main_container(pod);
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let terminated = state.terminated.clone();
    let termination_message = terminated.as_ref().and_then(|t| t.message.clone()).filter(|m| !m.is_empty());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let disruption = condition(pod, "DisruptionTarget").filter(|c| c.status == "True");
    let disruption_reason = disruption.and_then(|c| c.reason.clone()).unwrap_or_default();
    let disruption_message = disruption.and_then(|c| c.message.clone()).unwrap_or_default();
    let node_lost = matches!(disruption_reason.as_str(), "DeletionByTaintManager" | "DeletionByPodGC");
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let status_reason = status.reason.clone().unwrap_or_default();
    let status_message = status.message.clone().unwrap_or_default();

    let failed = |class, exit_code, reason: &str, message: &str| PodView::Failed {
        class,
        exit_code,
        reason: reason.to_owned(),
        message: message.to_owned(),
    };

    let view = match phase {
        // The node went away under the pod: whatever the last status said, the job is
        // lost with its node (the taint manager or the pod GC says so).
        _ if node_lost => failed(FailureClass::NodeLost, None, &disruption_reason, &disruption_message),
        "Succeeded" => PodView::Succeeded { finished_at: terminated.and_then(|t| t.finished_at).map(|t| t.0) },
        "Failed" => {
            if status_reason == "DeadlineExceeded" {
                failed(FailureClass::DeadlineExceeded, None, &status_reason, &status_message)
            } else if status_reason == "Evicted" || disruption.is_some() {
                let reason = if status_reason.is_empty() { disruption_reason.clone() } else { status_reason.clone() };
                let message =
                    if status_message.is_empty() { disruption_message.clone() } else { status_message.clone() };
                failed(FailureClass::Evicted, None, &reason, &message)
            } else {
                match &terminated {
                    Some(t) if t.reason.as_deref() == Some(OOM_KILLED) => failed(
                        FailureClass::OomKilled,
                        Some(t.exit_code),
                        OOM_KILLED,
                        "the container was killed for using more memory than its limit",
                    ),
                    Some(t) => failed(
                        FailureClass::ExitCode,
                        Some(t.exit_code),
                        t.reason.as_deref().unwrap_or("Error"),
                        &format!("the container exited with code {}", t.exit_code),
                    ),
                    None => failed(FailureClass::ExitCode, None, &status_reason, &status_message),
                }
            }
        }
        "Running" => PodView::Running {
            started_at: state.running.and_then(|r| r.started_at).map(|t| t.0).or(status.start_time.map(|t| t.0)),
        },
        // Pending (or Unknown): why is it not running?
        _ => {
            let waiting = state.waiting.clone().unwrap_or_default();
            let reason = waiting.reason.clone().unwrap_or_default();
            let message = waiting.message.clone().unwrap_or_default();
            let scheduled = condition(pod, "PodScheduled");
            match reason.as_str() {
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                    PodView::Stuck { class: FailureClass::ImagePull, reason, message }
                }
                "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                    PodView::Stuck { class: FailureClass::ContainerConfig, reason, message }
                }
                _ => match scheduled {
                    Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
                        PodView::Unschedulable {
                            since: c.last_transition_time.as_ref().map(|t| t.0),
                            message: c.message.clone().unwrap_or_default(),
                        }
                    }
                    _ => PodView::Starting,
                },
            }
        }
    };
    Observed { view, node, termination_message, terminating }
}
