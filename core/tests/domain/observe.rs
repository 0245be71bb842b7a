//! Pod statuses, shaped as the apiserver returns them (`tests/fixtures/pods/`), read
//! into what podbridge acts on. Pure: no service needed.

use k8s_openapi::api::core::v1::Pod;
use podbridge_core::FailureClass;
use podbridge_core::observe::{PodView, explain_with_events, observe};

fn fixture(name: &str) -> Pod {
    let path = format!("{}/tests/fixtures/pods/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn failed(class: FailureClass, exit_code: Option<i32>, reason: &str, message: &str) -> PodView {
    PodView::Failed { class, exit_code, reason: reason.into(), message: message.into() }
}

#[test]
fn pod_statuses_become_views() {
    let check = |name: &str, expected: PodView| assert_eq!(observe(&fixture(name)).view, expected, "{name}");
    check("container-creating", PodView::Starting);
    check(
        "unschedulable",
        PodView::Unschedulable {
            since: Some(ts("2026-11-21T10:00:00Z")),
            message: "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into(),
        },
    );
    check(
        "image-pull-backoff",
        PodView::Stuck {
            class: FailureClass::ImagePull,
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image \"registry.example.com/report:1\"".into(),
        },
    );
    check(
        "err-image-pull",
        PodView::Stuck {
            class: FailureClass::ImagePull,
            reason: "ErrImagePull".into(),
            message: "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example.com/report:1\": not found".into(),
        },
    );
    check(
        "config-error",
        PodView::Stuck {
            class: FailureClass::ContainerConfig,
            reason: "CreateContainerConfigError".into(),
            message: "secret \"db-credentials\" not found".into(),
        },
    );
    check("running", PodView::Running { started_at: Some(ts("2026-11-21T10:00:08Z")) });
    check("terminating", PodView::Running { started_at: Some(ts("2026-11-21T10:00:08Z")) });
    check("succeeded", PodView::Succeeded { finished_at: Some(ts("2026-11-21T10:05:00Z")) });
    check("exit-code", failed(FailureClass::ExitCode, Some(3), "Error", "the container exited with code 3"));
    check(
        "oom-killed",
        failed(
            FailureClass::OomKilled,
            Some(137),
            "OOMKilled",
            "the container was killed for using more memory than its limit",
        ),
    );
    check(
        "deadline-exceeded",
        failed(
            FailureClass::DeadlineExceeded,
            None,
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        ),
    );
    check(
        "evicted",
        failed(
            FailureClass::Evicted,
            None,
            "Evicted",
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container job was using 1Gi, request is 256Mi, has larger consumption of memory. ",
        ),
    );
    check(
        "node-lost",
        failed(
            FailureClass::NodeLost,
            None,
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
        ),
    );
}

#[test]
fn the_rest_of_the_pod_is_kept() {
    let failed = observe(&fixture("exit-code"));
    assert_eq!(failed.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
    assert_eq!(failed.termination_message.as_deref(), Some("loading input\nerror: no such table: sales\n"));
    assert!(!failed.terminating);
    assert!(observe(&fixture("terminating")).terminating);
    assert_eq!(observe(&fixture("unschedulable")).node, None);
    assert_eq!(observe(&fixture("succeeded")).termination_message, None);
}

/// Shapes of failures real clusters report besides a container's own exit, each in
/// `tests/fixtures/pods/` as the kubelet or a controller writes it (the Kubernetes
/// source of each is in `tests/fixtures/pods/SOURCES.md`).
#[test]
fn what_clusters_report_is_classified_by_who_caused_it() {
    let check = |name: &str, class: FailureClass, exit_code: Option<i32>, reason: &str, message: &str| {
        assert_eq!(observe(&fixture(name)).view, failed(class, exit_code, reason, message), "{name}");
    };
    // The node's kubelet refused the pod before anything ran.
    check(
        "node-rejected-out-of-cpu",
        FailureClass::NodeRejected,
        None,
        "OutOfcpu",
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 4000, used: 1850, capacity: 3920",
    );
    check(
        "node-rejected-node-affinity",
        FailureClass::NodeRejected,
        None,
        "NodeAffinity",
        "Pod was rejected: Predicate NodeAffinity failed",
    );
    check(
        "node-rejected-unexpected",
        FailureClass::NodeRejected,
        None,
        "UnexpectedAdmissionError",
        "Pod was rejected: Allocate failed due to no healthy devices present; cannot allocate unhealthy devices nvidia.com/gpu, which is unexpected",
    );
    check(
        "node-rejected-shutdown",
        FailureClass::NodeRejected,
        None,
        "NodeShutdown",
        "Pod was rejected: Pod was rejected as the node is shutting down.",
    );
    // Deleted from outside while it ran: the same class as a pod found gone.
    check(
        "deleted-while-running",
        FailureClass::PodVanished,
        None,
        "PodDeleted",
        "the pod was deleted by something other than podbridge while the job ran; its container stopped with code 143",
    );
    // The job had failed on its own before anyone deleted the pod.
    check("deleted-after-exit", FailureClass::ExitCode, Some(3), "Error", "the container exited with code 3");
    // The job's container, not the first status (sidecars sort before it).
    check("sidecar-job-failed", FailureClass::ExitCode, Some(2), "Error", "the container exited with code 2");
    // The runtime could not start the process: the job's configuration.
    check(
        "start-error",
        FailureClass::ContainerConfig,
        Some(128),
        "StartError",
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/app/run-report\": stat /app/run-report: no such file or directory: unknown",
    );
    check(
        "container-cannot-run",
        FailureClass::ContainerConfig,
        Some(127),
        "ContainerCannotRun",
        "OCI runtime create failed: container_linux.go:380: starting container process caused: exec: \"run-report\": executable file not found in $PATH: unknown",
    );
    check(
        "init-failed",
        FailureClass::InitContainer,
        Some(1),
        "Init:Error",
        "init container \"istio-init\" failed (Error) with exit code 1",
    );
    // Evicted for the job's own storage limit, unlike node pressure.
    check(
        "evicted-storage-limit",
        FailureClass::StorageLimit,
        None,
        "Evicted",
        "Container job exceeded its local ephemeral storage limit \"1Gi\". ",
    );
    // Graceful node shutdown, as 1.21 and as later releases word it.
    check("node-shutdown-1-21", FailureClass::Evicted, None, "Shutdown", "Node is shutting, evicting pods");
    check(
        "node-shutdown",
        FailureClass::Evicted,
        None,
        "Terminated",
        "Pod was terminated in response to imminent node shutdown.",
    );
    check(
        "node-lost-legacy",
        FailureClass::NodeLost,
        None,
        "NodeLost",
        "Node ip-10-0-1-23.ec2.internal which was running pod report-1 is unresponsive",
    );
    // The kubelet lost the container and wrote its end itself: not the job's exit.
    check(
        "container-status-unknown",
        FailureClass::NodeLost,
        None,
        "ContainerStatusUnknown",
        "The container could not be located when the pod was terminated",
    );
    check(
        "unknown-reason-after-exit",
        FailureClass::Unknown,
        Some(137),
        "VendorQuotaExceeded",
        "the node's vendor agent stopped the pod: quota exceeded",
    );
    // What podbridge cannot read keeps the API's words, under a class that says so.
    check(
        "unknown-failure",
        FailureClass::Unknown,
        None,
        "VendorQuotaExceeded",
        "the node's vendor agent stopped the pod: quota exceeded",
    );
}

#[test]
fn the_jobs_container_decides_whatever_the_sidecars_do() {
    let succeeded = observe(&fixture("sidecar-job-succeeded"));
    assert_eq!(succeeded.view, PodView::Succeeded { finished_at: Some(ts("2026-11-21T10:05:00Z")) });
    assert!(succeeded.outlives_job, "the sidecar still runs: the pod must be deleted once the end is recorded");
    assert!(observe(&fixture("sidecar-job-failed")).outlives_job);
    let sidecar_oom = observe(&fixture("sidecar-oom-job-succeeded"));
    assert_eq!(sidecar_oom.view, PodView::Succeeded { finished_at: Some(ts("2026-11-21T10:05:00Z")) });
    assert!(!sidecar_oom.outlives_job, "every container has ended");
    assert!(!observe(&fixture("exit-code")).outlives_job);
}

#[test]
fn the_record_keeps_who_failed_and_their_last_words() {
    let init = observe(&fixture("init-failed"));
    assert_eq!(init.termination_message.as_deref(), Some("iptables-restore: line 3 failed\n"));
    assert_eq!(init.started_at, None, "the job's container never ran");
    let sidecar = observe(&fixture("sidecar-job-failed"));
    assert_eq!(sidecar.termination_message.as_deref(), Some("reading config\nerror: missing key\n"));
    // A container the runtime could not start never ran (containerd reports the epoch).
    assert_eq!(observe(&fixture("start-error")).started_at, None);
    assert_eq!(observe(&fixture("succeeded")).started_at, Some(ts("2026-11-21T10:00:08Z")));
    assert_eq!(observe(&fixture("running")).started_at, Some(ts("2026-11-21T10:00:08Z")));
}

#[test]
fn stuck_init_containers_and_unmountable_volumes_are_stuck() {
    assert_eq!(
        observe(&fixture("init-image-pull")).view,
        PodView::Stuck {
            class: FailureClass::ImagePull,
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image \"registry.example.com/vault-agent:1.18\"".into(),
        }
    );
    let pending = observe(&fixture("mount-pending"));
    assert_eq!(pending.view, PodView::Starting, "the status alone does not say why");
    let path = format!("{}/tests/fixtures/events-failed-mount.json", env!("CARGO_MANIFEST_DIR"));
    let events: k8s_openapi::List<k8s_openapi::api::core::v1::Event> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        explain_with_events(pending.clone(), &events.items).view,
        PodView::Stuck {
            class: FailureClass::ContainerConfig,
            reason: "FailedMount".into(),
            message: "MountVolume.SetUp failed for volume \"credentials\" : secret \"db-credentials\" not found".into(),
        }
    );
    // Events change nothing for a pod whose status already says why, or with no such event.
    assert_eq!(explain_with_events(pending.clone(), &events.items[..1]).view, PodView::Starting);
    let running = observe(&fixture("running"));
    assert_eq!(explain_with_events(running.clone(), &events.items), running);
}
