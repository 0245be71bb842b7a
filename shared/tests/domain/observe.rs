//! Pod statuses, shaped as the apiserver returns them (`tests/fixtures/pods/`), read
//! into what podbridge acts on. Pure: no service needed.

use k8s_openapi::api::core::v1::Pod;
use podbridge::FailureClass;
use podbridge::observe::{PodView, observe};

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
