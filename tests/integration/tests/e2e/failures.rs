//! Failure shapes of real clusters, produced by kube-sim as the kubelet and the
//! controllers write them (or written through the pod `status` subresource, as a test
//! driver like kwok does), then read by the reconciler: the record's class, reason,
//! message and exit code, and whether another attempt was started, as `podbridge get`
//! shows them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use podbridge_core::state::JobState;
use serde_json::json;

use super::reconcile::{World, message, states, world};

/// Two attempts, no back-off: enough to see whether a class is retried by default.
fn two_attempts() -> serde_json::Value {
    json!({ "retry": { "maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0 } })
}

impl World {
    /// Runs passes until the job has failed for good (its last attempt, or one not retried).
    async fn reconcile_until_final_failure(&self, job_id: &str) -> podbridge_core::JobRecord {
        for _ in 0..300 {
            self.pass().await;
            let record = self.recorded(job_id).await;
            if record.state == JobState::Failed && !record.retry_pending {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{job_id} never failed for good: {:#?}", self.recorded(job_id).await);
    }

    /// Writes the pod's status through the `status` subresource, as a kubelet would.
    async fn set_status(&self, pod: &str, status: serde_json::Value) {
        self.pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await
            .expect("the status subresource takes a merge patch");
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("a pod read")
    }
}

#[tokio::test]
async fn given_a_node_that_refuses_the_pod_when_reconciled_then_node_rejected_and_retried() {
    let world = world().await;
    world.submit(&message("refused", "refuse=OutOfcpu", two_attempts())).await;

    let record = world.reconcile_until_final_failure("refused").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("node_rejected"));
    assert_eq!(record.reason.as_deref(), Some("OutOfcpu"));
    let message = record.message.clone().unwrap_or_default();
    assert!(message.starts_with("Pod was rejected: Node didn't have enough resource: cpu"), "{message}");
    assert_eq!(record.exit_code, None, "nothing ran");
    assert_eq!(world.pods_created_for("refused"), ["refused-1", "refused-2"], "retried by default, one pod each");
    assert!(!states(&record).contains(&JobState::Executing), "never executed: {:?}", states(&record));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_command_the_runtime_cannot_start_when_reconciled_then_container_config_not_retried() {
    let world = world().await;
    world.submit(&message("nostart", "start-error", two_attempts())).await;

    let record = world.reconcile_until_final_failure("nostart").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("container_config"));
    assert_eq!((record.reason.as_deref(), record.exit_code), (Some("StartError"), Some(128)));
    let message = record.message.clone().unwrap_or_default();
    assert!(message.contains("executable file not found in $PATH"), "the runtime's words: {message}");
    assert_eq!(world.pods_created_for("nostart"), ["nostart-1"], "the job's own configuration: not retried");
    assert!(!states(&record).contains(&JobState::Executing), "it never ran: {:?}", states(&record));
}

#[tokio::test]
async fn given_an_injected_init_container_that_fails_when_reconciled_then_it_is_named_in_the_record() {
    let world = world().await;
    world.submit(&message("initfail", "init-fail=3", two_attempts())).await;

    let record = world.reconcile_until_final_failure("initfail").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("init_container"));
    assert_eq!((record.reason.as_deref(), record.exit_code), (Some("Init:Error"), Some(3)));
    assert_eq!(record.message.as_deref(), Some("init container \"istio-init\" failed (Error) with exit code 3"));
    assert_eq!(world.pods_created_for("initfail"), ["initfail-1"]);
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_sidecar_that_keeps_running_when_the_job_ends_then_the_job_succeeds_and_the_pod_is_deleted() {
    let world = world().await;
    world.submit(&message("mesh", "run=200ms,sidecar", json!({}))).await;

    let record = world.reconcile_until("mesh", JobState::Succeeded).await;

    assert_eq!(record.exit_code, Some(0));
    assert!(states(&record).contains(&JobState::Executing), "{:?}", states(&record));
    // Recorded, then deleted so the sidecar stops (the pod may still be terminating).
    let pod = world.pod("mesh-1").await;
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the pod is being deleted");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_sidecar_oom_killed_after_the_job_exited_0_when_reconciled_then_the_job_succeeded() {
    let world = world().await;
    world.submit(&message("meshoom", "run=200ms,sidecar=oom", json!({}))).await;

    let record = world.reconcile_until("meshoom", JobState::Succeeded).await;

    assert_eq!((record.exit_code, record.failure_class.map(|c| c.as_str())), (Some(0), None));
}

#[tokio::test]
async fn given_a_volume_that_cannot_be_mounted_when_stuck_then_container_config_with_the_kubelets_words() {
    let world = world().await;
    world.submit(&message("nomount", "mount-fail", two_attempts())).await;

    let record = world.reconcile_until_final_failure("nomount").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("container_config"));
    assert_eq!(record.reason.as_deref(), Some("FailedMount"));
    let message = record.message.clone().unwrap_or_default();
    assert!(message.starts_with("MountVolume.SetUp failed for volume"), "{message}");
    assert_eq!(world.pods_created_for("nomount"), ["nomount-1"], "not retried");
    let pod = world.pod("nomount-1").await;
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the stuck pod is deleted");
}

#[tokio::test]
async fn given_a_pod_deleted_from_outside_while_it_runs_then_pod_vanished_and_retried_however_it_was_seen() {
    let world = world().await;
    world.submit(&message("outside", "run=forever,delete=300ms", two_attempts())).await;

    // The watch sees the pod while it terminates; a pass may find it gone: the class is
    // the same either way.
    let record = world.reconcile_until_final_failure("outside").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("pod_vanished"));
    assert_eq!(world.pods_created_for("outside"), ["outside-1", "outside-2"], "retried, one pod per attempt");
    assert!(record.history.iter().any(|t| t.reason == "Retrying"));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_pod_stopped_by_a_deletion_seen_while_terminating_then_pod_vanished_not_an_exit_code() {
    let world = world().await;
    world.submit(&message("seen", "run=forever,ignore-term", json!({ "retry": { "maxAttempts": 1 } }))).await;
    world.reconcile_until("seen", JobState::Executing).await;
    // `kubectl delete` with the pod's grace period: the pod terminates for 30 s.
    world.pods().delete("seen-1", &kube::api::DeleteParams::default()).await.unwrap();
    // What the kubelet writes once the signal has stopped the container, before the pod
    // object is removed.
    let now = jiff::Timestamp::now().to_string();
    world
        .set_status(
            "seen-1",
            json!({ "phase": "Failed", "containerStatuses": [{ "name": "job",
                "image": "registry.example.com/batch/work:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 143, "reason": "Error", "finishedAt": now } } }] }),
        )
        .await;

    world.pass().await;
    let record = world.recorded("seen").await;

    let pod = world.pod("seen-1").await.expect("still terminating");
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("pod_vanished"), "the same class as a pod found gone");
    assert_eq!((record.reason.as_deref(), record.exit_code), (Some("PodDeleted"), None), "143 is the deletion's");
}

#[tokio::test]
async fn given_an_eviction_for_the_jobs_own_storage_limit_when_reconciled_then_storage_limit_not_retried() {
    let world = world().await;
    world.submit(&message("disk", "run=forever,evict-storage=100ms", two_attempts())).await;

    let record = world.reconcile_until_final_failure("disk").await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("storage_limit"));
    assert_eq!(record.reason.as_deref(), Some("Evicted"));
    let message = record.message.clone().unwrap_or_default();
    assert!(message.contains("exceeded its local ephemeral storage limit"), "{message}");
    assert_eq!(world.pods_created_for("disk"), ["disk-1"], "the job's own doing: not retried");
}

#[tokio::test]
async fn given_older_clusters_wordings_written_to_the_status_when_reconciled_then_infrastructure_classes() {
    let world = world().await;
    for id in ["shutdown", "nodelost", "vendor"] {
        world.submit(&message(id, "run=forever", json!({ "retry": { "maxAttempts": 1 } }))).await;
    }
    for id in ["shutdown", "nodelost", "vendor"] {
        world.reconcile_until(id, JobState::Executing).await;
    }
    // 1.21's graceful node shutdown: reason `Shutdown`, the container stopped.
    let stopped = json!([{ "name": "job", "image": "registry.example.com/batch/work:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": { "terminated": { "exitCode": 143, "reason": "Error" } } }]);
    world
        .set_status(
            "shutdown-1",
            json!({ "phase": "Failed", "reason": "Shutdown", "message": "Node is shutting, evicting pods",
                    "containerStatuses": stopped }),
        )
        .await;
    // The node lifecycle controller of older releases: only reason and message change.
    let node = world.recorded("nodelost").await.node.unwrap_or_default();
    world
        .set_status(
            "nodelost-1",
            json!({ "reason": "NodeLost", "message": format!("Node {node} which was running pod nodelost-1 is unresponsive") }),
        )
        .await;
    // Something no source here writes.
    world
        .set_status(
            "vendor-1",
            json!({ "phase": "Failed", "reason": "VendorQuotaExceeded", "message": "quota exceeded",
                    "containerStatuses": [] }),
        )
        .await;

    let shutdown = world.reconcile_until("shutdown", JobState::Failed).await;
    let lost = world.reconcile_until("nodelost", JobState::Failed).await;
    let vendor = world.reconcile_until("vendor", JobState::Failed).await;

    assert_eq!(
        (shutdown.failure_class.map(|c| c.as_str()), shutdown.reason.as_deref()),
        (Some("evicted"), Some("Shutdown"))
    );
    assert_eq!((lost.failure_class.map(|c| c.as_str()), lost.reason.as_deref()), (Some("node_lost"), Some("NodeLost")));
    assert_eq!(
        (vendor.failure_class.map(|c| c.as_str()), vendor.reason.as_deref(), vendor.message.as_deref()),
        (Some("unknown"), Some("VendorQuotaExceeded"), Some("quota exceeded")),
        "the API's own words, under a class that says podbridge could not read them"
    );
}

#[tokio::test]
async fn given_a_short_job_first_seen_finished_when_reconciled_then_it_is_recorded_as_having_executed() {
    let world = world().await;
    world.submit(&message("brief", "run=50ms", json!({}))).await;
    // No pass until it has finished.
    for _ in 0..100 {
        let phase = world.pod("brief-1").await.and_then(|p| p.status?.phase);
        if phase.as_deref() == Some("Succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    world.pass().await;
    let record = world.recorded("brief").await;

    assert_eq!(
        states(&record),
        [JobState::Queued, JobState::SettingUp, JobState::Executing, JobState::Succeeded],
        "the executing state is recorded"
    );
    let executing = record.state_times[&JobState::Executing];
    assert!(
        executing >= record.state_times[&JobState::SettingUp] && executing <= record.state_times[&JobState::Succeeded],
        "at the container's start: {:?}",
        record.state_times
    );
    world.assert_announced(&record).await;
}
