//! The submission path's races and half-done work, on the in-memory store and cluster:
//! a redelivery after a crash between the pod and its record, a cancel that lands while
//! the pod is being created, a pod of the attempt's name that podbridge did not create,
//! an API that refuses the pod or fails, and the same message handled ten times at
//! once. Each asserts what a user would see: the record, the pods, and whether the
//! message may be deleted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use podbridge::Error;
use podbridge::cluster::{Cluster, MemoryCluster};
use podbridge::services::{Attempts, Outcome, Submitter};
use podbridge::store::JobStore;
use podbridge::store::memory::MemoryJobStore;
use podbridge_core::FailureClass;
use podbridge_core::pod::{PodSettings, attempt_of, build_pod, pod_name};
use podbridge_core::record::Source;
use podbridge_core::state::JobState;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::{Guardrails, Parsed, parse_message};

const JOB: &str = "nightly-report";

fn message(id: &str) -> Vec<u8> {
    format!(r#"{{"version": 1, "job": {{"id": "{id}", "image": "registry.example.com/batch/report:1.0"}}}}"#)
        .into_bytes()
}

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec!["batch".into()],
        image_prefixes: vec!["registry.example.com/".into()],
        ..Guardrails::default()
    }
}

/// A submitter over a fresh store and cluster, and the handles to look at them.
fn world() -> (Submitter<MemoryJobStore, MemoryCluster>, Arc<MemoryJobStore>, Arc<MemoryCluster>) {
    let (store, cluster) = (Arc::new(MemoryJobStore::new()), Arc::new(MemoryCluster::new()));
    let attempts = Attempts::new(
        Arc::clone(&store),
        Arc::clone(&cluster),
        guardrails(),
        PodSettings::default(),
        Duration::from_secs(3600),
    );
    (Submitter::over(attempts), store, cluster)
}

async fn send(submitter: &Submitter<MemoryJobStore, MemoryCluster>, id: &str) -> podbridge::Result<Outcome> {
    submitter.handle_message(&message(id), Source::Direct, &Sender::Operator, "fallback-1").await
}

/// The pod podbridge builds for attempt 1 of `id`.
fn attempt_pod(id: &str) -> Pod {
    let Ok(Parsed::Job(job)) = parse_message(&message(id), "unused", &guardrails()) else { panic!("a valid job") };
    build_pod(&job, 1, &PodSettings::default())
}

#[tokio::test]
async fn given_a_crash_after_the_pod_was_created_when_the_message_comes_back_then_the_pod_is_adopted() {
    let (submitter, store, cluster) = world();
    // GIVEN the job recorded as queued and its pod created, but the record never moved
    // on (the dispatcher died between the two): the memory store has the record, and
    // the cluster the pod.
    let gate = cluster.hold_creates();
    let first = tokio::spawn({
        let submitter = submitter.clone();
        async move { send(&submitter, JOB).await }
    });
    gate.reached().await;
    first.abort();
    gate.release();
    let queued = store.get(JOB).await.unwrap().unwrap();
    assert_eq!(queued.state, JobState::Queued, "the crash left the record queued");
    assert_eq!(cluster.pods().len(), 1);

    // WHEN SQS delivers the message again
    let outcome = send(&submitter, JOB).await.unwrap();

    // THEN the same pod is the attempt's, no second one is created, and the record says so
    let name = pod_name(JOB, 1);
    assert_eq!(outcome, Outcome::Dispatched { job_id: JOB.into(), attempt: 1, pod_name: name.clone() });
    assert_eq!(cluster.created(), 1, "one pod per attempt");
    let record = store.get(JOB).await.unwrap().unwrap();
    assert_eq!((record.state, record.pod_name.as_deref()), (JobState::SettingUp, Some(name.as_str())));
}

#[tokio::test]
async fn given_a_cancel_while_the_pod_is_created_when_the_create_returns_then_the_pod_is_deleted() {
    let (submitter, store, cluster) = world();
    let gate = cluster.hold_creates();
    let submitting = tokio::spawn({
        let submitter = submitter.clone();
        async move { send(&submitter, JOB).await }
    });
    gate.reached().await;

    // WHEN a cancel is recorded while the pod's create is in flight
    let cancel = br#"{"version": 1, "cancel": {"id": "nightly-report", "reason": "superseded"}}"#;
    let cancelled = submitter.handle_message(cancel, Source::Direct, &Sender::Operator, "fallback-2").await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { job_id: JOB.into() });
    gate.release();
    let outcome = submitting.await.unwrap().unwrap();

    // THEN the submission loses the race, says the job is cancelled, and its pod is gone
    assert_eq!(outcome, Outcome::AlreadyRecorded { job_id: JOB.into(), state: JobState::Cancelled });
    assert!(cluster.pods().is_empty(), "the pod created for a cancelled job must not run: {:?}", cluster.pods());
    let record = store.get(JOB).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Cancelled);
}

#[tokio::test]
async fn given_a_foreign_pod_under_the_attempts_name_then_the_attempt_fails_and_the_pod_is_left_alone() {
    let (submitter, store, cluster) = world();
    let mut foreign = attempt_pod(JOB);
    foreign.metadata.labels = Some([("app".to_owned(), "someone-else".to_owned())].into());
    cluster.insert(foreign);

    let outcome = send(&submitter, JOB).await.unwrap();

    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let record = store.get(JOB).await.unwrap().unwrap();
    assert_eq!((record.state, record.failure_class), (JobState::Failed, Some(FailureClass::ApiRejected)));
    assert_eq!(record.reason.as_deref(), Some("PodNameTaken"));
    let pods = cluster.pods();
    assert_eq!(pods.len(), 1);
    assert_eq!(attempt_of(&pods[0]), None, "the other pod is still there, untouched");
}

#[tokio::test]
async fn given_the_api_refuses_the_pod_then_the_job_fails_and_the_message_may_go() {
    let (submitter, store, cluster) = world();
    cluster.fail_next_create(|| Error::KubeApi {
        operation: "create pod",
        code: 422,
        reason: "Invalid".into(),
        message: "Pod \"x\" is invalid: spec.containers[0].image: Required value".into(),
    });

    let outcome = send(&submitter, JOB).await.expect("a refusal is recorded, not retried");

    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let record = store.get(JOB).await.unwrap().unwrap();
    assert_eq!((record.state, record.failure_class), (JobState::Failed, Some(FailureClass::ApiRejected)));
    assert!(record.message.unwrap_or_default().contains("spec.containers[0].image"));
    assert!(cluster.pods().is_empty());
}

#[tokio::test]
async fn given_the_api_fails_for_a_while_then_the_message_comes_back_and_the_next_delivery_runs_the_job() {
    let (submitter, store, cluster) = world();
    cluster.fail_next_create(|| Error::KubeApi {
        operation: "create pod",
        code: 503,
        reason: "ServiceUnavailable".into(),
        message: "etcdserver: leader changed".into(),
    });

    let error = send(&submitter, JOB).await.expect_err("the message must come back");
    assert!(error.is_retryable(), "{error}");
    assert_eq!(store.get(JOB).await.unwrap().unwrap().state, JobState::Queued, "recorded, waiting for its pod");

    let outcome = send(&submitter, JOB).await.unwrap();
    assert!(matches!(outcome, Outcome::Dispatched { attempt: 1, .. }), "{outcome:?}");
    assert_eq!(store.get(JOB).await.unwrap().unwrap().state, JobState::SettingUp);
    assert_eq!(cluster.created(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_one_message_handled_ten_times_at_once_then_one_record_and_one_pod() {
    let (submitter, store, cluster) = world();
    // The first create is held between the pod and its record, so the other nine
    // deliveries run into it: they find the record queued and the pod there.
    let gate = cluster.hold_creates();
    let deliveries: Vec<_> = (0..10)
        .map(|_| {
            let submitter = submitter.clone();
            tokio::spawn(async move { send(&submitter, JOB).await })
        })
        .collect();
    gate.reached().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.release();

    for delivery in deliveries {
        let outcome = delivery.await.unwrap().expect("every delivery may be deleted");
        assert_eq!(outcome.job_id(), JOB);
        assert!(matches!(outcome, Outcome::Dispatched { .. } | Outcome::AlreadyRecorded { .. }), "{outcome:?}");
    }
    assert_eq!(cluster.created(), 1, "exactly one pod per attempt");
    assert_eq!(store.records().len(), 1);
    assert_eq!(store.get(JOB).await.unwrap().unwrap().state, JobState::SettingUp);
    assert!(cluster.get_pod("batch", &pod_name(JOB, 1)).await.unwrap().is_some());
}
