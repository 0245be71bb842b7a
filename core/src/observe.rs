//! What a pod says about its job: one pure function from the pod's status fields, as
//! the kubelet and the controllers write them, to what podbridge needs to decide.
//!
//! The job is its own container (the one [`crate::pod::CONTAINER`] names), not the pod:
//! admission webhooks inject sidecars and init containers, and the kubelet sorts
//! `containerStatuses` by name (`pkg/kubelet/kubelet_pods.go`, `SortedContainerStatuses`),
//! so the first status is often not the job's. When the job's container has ended, the
//! job has ended, whatever the sidecars are doing.
//!
//! Where each shape comes from, in the Kubernetes sources:
//! - kubelet admission refusals: `pkg/kubelet/kubelet.go` `rejectPod` (phase `Failed`,
//!   the admit handler's reason, message `"Pod was rejected: "` + its message, no
//!   container statuses) with the reasons of `pkg/kubelet/lifecycle/predicate.go`
//!   (`OutOf<resource>`, `NodeAffinity`, ...) and `pkg/kubelet/nodeshutdown`
//!   (`NodeShutdown`);
//! - evictions: `pkg/kubelet/eviction/eviction_manager.go` (reason `Evicted`; the
//!   local-storage messages name the pod's own limits);
//! - graceful node shutdown: `pkg/kubelet/nodeshutdown` (reason `Terminated` and its
//!   message since 1.22, `Shutdown` in 1.21);
//! - node loss: the taint eviction controller and pod GC (`DisruptionTarget` with
//!   `DeletionByTaintManager` / `DeletionByPodGC`), and the node lifecycle controller
//!   of older releases (reason `NodeLost`);
//! - `activeDeadlineSeconds`: `pkg/kubelet/active_deadline.go` (reason `DeadlineExceeded`);
//! - container start failures: the CRI's terminated state, reason `StartError`
//!   (containerd) or `ContainerCannotRun` (dockershim), exit 128 / 127.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Event, Pod, PodCondition};

use crate::failure::FailureClass;
use crate::pod::CONTAINER;
use crate::record::{MAX_TERMINATION_MESSAGE, cut};

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
    /// The job's container runs (since `started_at`).
    Running { started_at: Option<Timestamp> },
    /// The job's container exited with 0.
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
    /// The termination message of the container that ended the attempt (its last log
    /// lines on failure, with `FallbackToLogsOnError`).
    pub termination_message: Option<String>,
    /// The pod is being deleted.
    pub terminating: bool,
    /// When the job's container started running, if it ever did (a container the
    /// runtime could not start never ran).
    pub started_at: Option<Timestamp>,
    /// The job's container has ended but the pod still runs other containers
    /// (sidecars): once the end is recorded, the pod is deleted so they stop.
    pub outlives_job: bool,
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// The status of the job's container: the one podbridge named, or the only container
/// of a pod podbridge did not build.
fn job_container(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let only = match statuses.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    statuses.iter().find(|c| c.name == CONTAINER).or(only)
}

/// Init containers that are not sidecars (`restartPolicy: Always` init containers run
/// beside the job and are stopped when it ends).
fn init_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let sidecars: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|inits| {
            inits.iter().filter(|c| c.restart_policy.as_deref() == Some("Always")).map(|c| c.name.as_str()).collect()
        })
        .unwrap_or_default();
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(move |c| !sidecars.contains(&c.name.as_str()))
}

/// A start time that means the container ran: containerd reports the Unix epoch for
/// a container it could not start.
fn real_start(time: Option<Timestamp>) -> Option<Timestamp> {
    time.filter(|t| t.as_second() > 0)
}

/// The runtime could not start the process (exec format, missing binary, bad working
/// directory): the job's configuration, not its program.
fn is_start_failure(terminated: &ContainerStateTerminated) -> bool {
    matches!(terminated.reason.as_deref(), Some("StartError" | "ContainerCannotRun"))
}

/// Messages of the eviction manager when a pod exceeds its own local-storage limits
/// (`pkg/kubelet/eviction/eviction_manager.go`: `containerEphemeralStorageMessageFmt`,
/// `podEphemeralStorageMessageFmt`, `emptyDirMessageFmt`).
fn is_own_storage_limit(message: &str) -> bool {
    message.contains("exceeded its local ephemeral storage limit")
        || message.contains("Pod ephemeral local storage usage exceeds the total limit of containers")
        || (message.contains("Usage of EmptyDir volume") && message.contains("exceeds the limit"))
}

/// Reasons of the kubelet's admission handlers (`pkg/kubelet/lifecycle/predicate.go`
/// and the other `PodAdmitHandler`s), for refusals seen without the `Pod was rejected`
/// prefix of `rejectPod`.
fn is_admission_reason(reason: &str) -> bool {
    reason.starts_with("OutOf")
        || matches!(
            reason,
            "NodeAffinity"
                | "NodeName"
                | "NodePorts"
                | "NodeShutdown"
                | "UnexpectedAdmissionError"
                | "UnexpectedPredicateFailureType"
                | "UnknownReason"
                | "InvalidNodeInfo"
                | "PodOSNotSupported"
                | "PodOSSelectorNodeLabelDoesNotMatch"
                | "InitContainerRestartPolicyForbidden"
                | "TopologyAffinityError"
                | "SysctlForbidden"
                | "VolumeAttachmentLimitExceeded"
        )
}

/// The pod's status reason and message, and its `DisruptionTarget` condition, read once.
struct PodFacts<'a> {
    pod: &'a Pod,
    reason: String,
    message: String,
    disruption: Option<&'a PodCondition>,
}

/// What the pod itself (not a container) says ended the attempt, if anything does.
fn pod_failure(facts: &PodFacts<'_>) -> Option<(FailureClass, String, String)> {
    let disruption_reason = facts.disruption.and_then(|c| c.reason.clone()).unwrap_or_default();
    let disruption_message = facts.disruption.and_then(|c| c.message.clone()).unwrap_or_default();
    let either = |first: &str, second: &str| if first.is_empty() { second.to_owned() } else { first.to_owned() };
    let (reason, message) = (facts.reason.as_str(), facts.message.as_str());
    // The node went away under the pod: whatever the containers last said, the job is
    // lost with its node.
    if matches!(disruption_reason.as_str(), "DeletionByTaintManager" | "DeletionByPodGC") {
        return Some((FailureClass::NodeLost, disruption_reason, disruption_message));
    }
    if reason == "NodeLost" {
        return Some((FailureClass::NodeLost, reason.to_owned(), message.to_owned()));
    }
    if reason == "DeadlineExceeded" {
        return Some((FailureClass::DeadlineExceeded, reason.to_owned(), message.to_owned()));
    }
    if reason == "Evicted" && is_own_storage_limit(message) {
        return Some((FailureClass::StorageLimit, reason.to_owned(), message.to_owned()));
    }
    let node_shutdown =
        reason == "Shutdown" || (reason == "Terminated" && message.contains("in response to imminent node shutdown"));
    if reason == "Evicted" || node_shutdown || facts.disruption.is_some() {
        return Some((FailureClass::Evicted, either(reason, &disruption_reason), either(message, &disruption_message)));
    }
    None
}

/// The attempt ended with the job's container terminated.
fn ended(facts: &PodFacts<'_>, terminated: &ContainerStateTerminated) -> PodView {
    let code = terminated.exit_code;
    if code == 0 {
        return PodView::Succeeded { finished_at: terminated.finished_at.as_ref().map(|t| t.0) };
    }
    let failed = |class, reason: &str, message: &str| PodView::Failed {
        class,
        exit_code: Some(code),
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    // A pod-level end (node lost, deadline, eviction, deletion) killed the container:
    // its exit code is the kill's, not the job's answer, and is not recorded as one.
    let killed = |class, reason: &str, message: &str| PodView::Failed {
        class,
        exit_code: None,
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    if let Some((class, reason, message)) = pod_failure(facts) {
        return killed(class, &reason, &message);
    }
    if stopped_by_deletion(facts.pod, terminated) {
        return killed(
            FailureClass::PodVanished,
            "PodDeleted",
            &format!(
                "the pod was deleted by something other than podbridge while the job ran; its container stopped with code {code}"
            ),
        );
    }
    // The kubelet lost the container (a node or runtime restart) and wrote its end
    // itself (`pkg/kubelet/kubelet_pods.go`, reason `ContainerStatusUnknown`, exit 137):
    // the job did not end it.
    if terminated.reason.as_deref() == Some("ContainerStatusUnknown") {
        let message = terminated.message.clone().unwrap_or_else(|| "the container could not be located".to_owned());
        return killed(FailureClass::NodeLost, "ContainerStatusUnknown", &message);
    }
    // A pod-level reason podbridge does not know, beside a container that ended: the
    // API's words under a class that says so, never silently an exit code.
    if !facts.reason.is_empty() {
        return failed(FailureClass::Unknown, &facts.reason, &facts.message);
    }
    if is_start_failure(terminated) {
        let reason = terminated.reason.as_deref().unwrap_or("StartError");
        let message = terminated.message.clone().unwrap_or_else(|| "the container could not be started".to_owned());
        return failed(FailureClass::ContainerConfig, reason, &message);
    }
    if terminated.reason.as_deref() == Some(OOM_KILLED) {
        return failed(
            FailureClass::OomKilled,
            OOM_KILLED,
            "the container was killed for using more memory than its limit",
        );
    }
    failed(
        FailureClass::ExitCode,
        terminated.reason.as_deref().unwrap_or("Error"),
        &format!("the container exited with code {code}"),
    )
}

/// Whether the job's container was stopped because its pod was being deleted: a
/// graceful delete sets `deletionTimestamp` to the request's time plus the grace
/// period, and the container ended after the request.
fn stopped_by_deletion(pod: &Pod, terminated: &ContainerStateTerminated) -> bool {
    let Some(deadline) = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0) else {
        return false;
    };
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0);
    // One second of slack for the kubelet's clock and the timestamps' precision.
    let requested = deadline.saturating_sub(SignedDuration::from_secs(grace + 1)).unwrap_or(deadline);
    terminated.finished_at.as_ref().is_none_or(|finished| finished.0 >= requested)
}

/// The attempt failed without the job's container ending (phase `Failed`).
fn failed_before_end(facts: &PodFacts<'_>) -> (PodView, Option<String>) {
    let failed = |class, exit_code, reason: &str, message: &str| PodView::Failed {
        class,
        exit_code,
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    if let Some((class, reason, message)) = pod_failure(facts) {
        return (failed(class, None, &reason, &message), None);
    }
    let init_failure = init_statuses(facts.pod)
        .find_map(|s| s.state.as_ref()?.terminated.as_ref().filter(|t| t.exit_code != 0).map(|t| (s, t)));
    if let Some((status, terminated)) = init_failure {
        let kubelet_reason = terminated.reason.as_deref().unwrap_or("Error");
        let message = format!(
            "init container {:?} failed ({kubelet_reason}) with exit code {}",
            status.name, terminated.exit_code
        );
        let logs = terminated.message.clone().filter(|m| !m.is_empty());
        return (
            failed(
                FailureClass::InitContainer,
                Some(terminated.exit_code),
                &format!("Init:{kubelet_reason}"),
                &message,
            ),
            logs,
        );
    }
    let (reason, message) = (facts.reason.as_str(), facts.message.as_str());
    if message.starts_with("Pod was rejected") || is_admission_reason(reason) {
        let reason = if reason.is_empty() { "Rejected" } else { reason };
        return (failed(FailureClass::NodeRejected, None, reason, message), None);
    }
    if facts.pod.metadata.deletion_timestamp.is_some() {
        return (
            failed(
                FailureClass::PodVanished,
                None,
                "PodDeleted",
                "the pod was deleted by something other than podbridge before the job ran",
            ),
            None,
        );
    }
    let reason = if reason.is_empty() { "PodFailed" } else { reason };
    let message = if message.is_empty() { "the pod failed and the API gave no reason" } else { message };
    (failed(FailureClass::Unknown, None, reason, message), None)
}

/// Why a pod that has not ended is not running, when the kubelet says so: a waiting
/// reason of the job's container or of an init container.
fn waiting(pod: &Pod, job: Option<&ContainerStatus>) -> Option<PodView> {
    let inits = init_statuses(pod);
    job.into_iter().chain(inits).find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        let class = match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => FailureClass::ImagePull,
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                FailureClass::ContainerConfig
            }
            _ => return None,
        };
        Some(PodView::Stuck { class, reason, message })
    })
}

/// Reads a pod podbridge created.
pub fn observe(pod: &Pod) -> Observed {
    let status = pod.status.clone().unwrap_or_default();
    let job = job_container(pod);
    let state = job.and_then(|c| c.state.clone()).unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let facts = PodFacts {
        pod,
        reason: status.reason.clone().unwrap_or_default(),
        message: status.message.clone().unwrap_or_default(),
        disruption: condition(pod, "DisruptionTarget").filter(|c| c.status == "True"),
    };
    let mut termination_message = None;
    let mut started_at = real_start(state.running.as_ref().and_then(|r| r.started_at.as_ref()).map(|t| t.0));

    let node_lost = pod_failure(&facts).filter(|(class, ..)| *class == FailureClass::NodeLost);
    let finished_well = state.terminated.as_ref().is_some_and(|t| t.exit_code == 0);
    let view = if let Some((class, reason, message)) = node_lost.filter(|_| !finished_well) {
        // The node went away under a pod that was still running: its last status is stale.
        PodView::Failed { class, exit_code: None, reason, message }
    } else if let Some(terminated) = &state.terminated {
        if !is_start_failure(terminated) {
            started_at = real_start(terminated.started_at.as_ref().map(|t| t.0));
        }
        termination_message = terminated.message.clone().filter(|m| !m.is_empty());
        ended(&facts, terminated)
    } else if phase == "Failed" {
        let (view, logs) = failed_before_end(&facts);
        termination_message = logs;
        view
    } else if phase == "Succeeded" {
        PodView::Succeeded { finished_at: None }
    } else if state.running.is_some() {
        PodView::Running { started_at: started_at.or(status.start_time.as_ref().map(|t| t.0)) }
    } else if let Some(stuck) = waiting(pod, job) {
        stuck
    } else {
        match condition(pod, "PodScheduled") {
            Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => PodView::Unschedulable {
                since: c.last_transition_time.as_ref().map(|t| t.0),
                message: c.message.clone().unwrap_or_default(),
            },
            _ => PodView::Starting,
        }
    };
    // Sidecars still run beside a job container that has ended (a pod being deleted
    // is stopping them already).
    let outlives_job = state.terminated.is_some() && !terminating && !matches!(phase, "Succeeded" | "Failed");
    let termination_message = termination_message.map(|m| cut(&m, MAX_TERMINATION_MESSAGE));
    Observed { view, node, termination_message, terminating, started_at, outlives_job }
}

/// Event reasons that say why a pod cannot get past `ContainerCreating`: the kubelet's
/// volume manager (`FailedMount`) and the attach/detach controller
/// (`FailedAttachVolume`), in `pkg/kubelet/events/event.go` and
/// `pkg/controller/volume/attachdetach`.
const MOUNT_FAILURES: [&str; 2] = ["FailedMount", "FailedAttachVolume"];

/// Whether a scheduler's Unschedulable message says the cluster is full of what
/// podbridge admits by (CPU, memory, pods) rather than that the pod fits no node. The
/// default scheduler's NodeResourcesFit plugin writes `Insufficient <resource>` and `Too
/// many pods` (kubernetes `pkg/scheduler/framework/plugins/noderesources/fit.go`),
/// joined into "0/3 nodes are available: 3 Insufficient cpu." A node selector, affinity
/// or taint no node matches says something else, and so does a lack of a resource
/// podbridge does not count (`Insufficient nvidia.com/gpu`): no room it admits by will
/// ever fix those.
pub fn is_for_capacity(message: &str) -> bool {
    ["Insufficient cpu", "Insufficient memory", "Too many pods"].iter().any(|reason| message.contains(reason))
}

/// Whether a pod that is not running yet may be explained by its events: only a pod
/// still `Starting` (the status itself says nothing), which is when the kubelet reports
/// volume problems in events alone.
pub fn wants_events(observed: &Observed) -> bool {
    observed.view == PodView::Starting && observed.node.is_some()
}

/// Reads the pod's events into its view: a `Starting` pod whose volumes cannot be
/// mounted is stuck with `container_config`, with the latest such event's message.
pub fn explain_with_events(observed: Observed, events: &[Event]) -> Observed {
    if !wants_events(&observed) {
        return observed;
    }
    let latest = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.reason.as_deref().is_some_and(|r| MOUNT_FAILURES.contains(&r)))
        .max_by_key(|e| {
            e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        });
    match latest {
        Some(event) => Observed {
            view: PodView::Stuck {
                class: FailureClass::ContainerConfig,
                reason: event.reason.clone().unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
            },
            ..observed
        },
        None => observed,
    }
}
