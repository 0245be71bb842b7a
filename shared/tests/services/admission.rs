//! Admission on the in-memory store and cluster: a queue's limits hold under
//! concurrent deliveries, a slot is taken once per attempt and given back once, a crash
//! between the slot and the pod is healed by the next delivery, and a job that can
//! never be admitted is refused at once, naming the sizes. Each asserts what a user
//! sees: the records, the pods, and the queue's usage against its slots.

use std::sync::Arc;
use std::time::Duration;

use podbridge::Error;
use podbridge::cluster::{MemoryCluster, NodeSize};
use podbridge::services::{Attempts, Outcome, Submitter};
use podbridge::store::memory::MemoryJobStore;
use podbridge::store::{ALL_QUEUES, JobStore, QueueStore};
use podbridge_core::admission::{Limits, Queue, Resources, usage_of};
use podbridge_core::record::Source;
use podbridge_core::state::JobState;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::Guardrails;

const GI: u64 = 1 << 30;

fn job(id: &str, queue: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"version": 1, "job": {{"id": "{id}", "queue": "{queue}", "image": "registry.example.com/batch/report:1.0"{extra}}}}}"#
    )
    .into_bytes()
}

fn world(total: Limits) -> (Submitter<MemoryJobStore, MemoryCluster>, Arc<MemoryJobStore>, Arc<MemoryCluster>) {
    let (store, cluster) = (Arc::new(MemoryJobStore::new()), Arc::new(MemoryCluster::new()));
    let guardrails = Guardrails {
        namespaces: vec!["batch".into()],
        image_prefixes: vec!["registry.example.com/".into()],
        ..Guardrails::default()
    };
    let attempts = Attempts::new(
        Arc::clone(&store),
        Arc::clone(&cluster),
        guardrails,
        Default::default(),
        Duration::from_secs(3600),
    )
    .with_admission(total, Some(NodeSize { cpu_millis: 4_000, memory_bytes: 8 * GI }));
    (Submitter::over(attempts), store, cluster)
}

async fn send(submitter: &Submitter<MemoryJobStore, MemoryCluster>, body: &[u8]) -> podbridge::Result<Outcome> {
    submitter.handle_message(body, Source::Direct, &Sender::Operator, "fallback").await
}

async fn etl(store: &MemoryJobStore, jobs: u32) {
    let limits = Limits { jobs: Some(jobs), ..Limits::NONE };
    store.put_queue(&Queue { limits, ..Queue::unlimited("etl") }).await.unwrap();
}

/// The queue's stored usage, and what its slots add up to.
async fn usage_and_truth(store: &MemoryJobStore, queue: &str) -> (Resources, Resources) {
    let usage = store.usage().await.unwrap();
    let slots = store.slots().await.unwrap();
    (usage.get(queue).map(|u| u.held).unwrap_or_default(), usage_of(&slots).remove(queue).unwrap_or_default())
}

#[tokio::test]
async fn ten_jobs_delivered_at_once_into_a_queue_of_three_start_three_and_the_rest_wait_saying_why() {
    let (submitter, store, cluster) = world(Limits::NONE);
    etl(&store, 3).await;
    let sends = (0..10).map(|i| {
        let submitter = submitter.clone();
        async move { send(&submitter, &job(&format!("j{i}"), "etl", "")).await.unwrap() }
    });
    let outcomes = futures::future::join_all(sends).await;
    let dispatched = outcomes.iter().filter(|o| matches!(o, Outcome::Dispatched { .. })).count();
    assert_eq!((dispatched, cluster.pods().len()), (3, 3), "{outcomes:?}");
    let waiting: Vec<_> = store.records().into_iter().filter(|r| r.is_waiting()).collect();
    assert_eq!(waiting.len(), 7);
    for record in &waiting {
        assert_eq!(record.message.as_deref(), Some("queue etl: 3 of 3 jobs held"), "{record:?}");
        assert_eq!(record.wait.as_ref().map(|w| w.queue.as_str()), Some("etl"));
    }
    assert_eq!(store.waiting("etl", 100).await.unwrap().len(), 7);
    let (usage, truth) = usage_and_truth(&store, "etl").await;
    assert_eq!((usage.jobs, truth.jobs), (3, 3));
}

#[tokio::test]
async fn a_cancel_gives_the_slot_back_once_however_often_it_comes() {
    let (submitter, store, _cluster) = world(Limits::NONE);
    etl(&store, 3).await;
    for i in 0..3 {
        send(&submitter, &job(&format!("j{i}"), "etl", "")).await.unwrap();
    }
    for _ in 0..3 {
        submitter.cancel("j0", None, "no longer needed", Source::Direct, &Sender::Operator).await.unwrap();
    }
    let (usage, truth) = usage_and_truth(&store, "etl").await;
    assert_eq!((usage.jobs, truth.jobs), (2, 2), "released once, not three times");
    let all = store.usage().await.unwrap()[ALL_QUEUES].held;
    assert_eq!(all.jobs, 2);
}

#[tokio::test]
async fn a_crash_between_the_slot_and_the_pod_is_healed_by_the_next_delivery_without_a_second_slot() {
    let (submitter, store, cluster) = world(Limits::NONE);
    etl(&store, 1).await;
    cluster.fail_next_create(|| Error::KubeApi {
        operation: "create pod",
        code: 503,
        reason: "ServiceUnavailable".into(),
        message: "etcdserver: leader changed".into(),
    });
    let body = job("j0", "etl", "");
    assert!(send(&submitter, &body).await.is_err(), "the message comes back");
    assert_eq!(store.slots().await.unwrap().len(), 1, "the slot was taken before the pod");
    let outcome = send(&submitter, &body).await.unwrap();
    assert!(matches!(outcome, Outcome::Dispatched { .. }), "{outcome:?}: its own slot admits it");
    assert_eq!(cluster.pods().len(), 1);
    let (usage, truth) = usage_and_truth(&store, "etl").await;
    assert_eq!((usage.jobs, truth.jobs), (1, 1));
}

#[tokio::test]
async fn a_paused_queue_holds_new_jobs_and_the_limit_across_queues_holds_every_queue() {
    let (submitter, store, cluster) = world(Limits { jobs: Some(2), ..Limits::NONE });
    store.put_queue(&Queue { paused: true, ..Queue::unlimited("etl") }).await.unwrap();
    let held = send(&submitter, &job("p0", "etl", "")).await.unwrap();
    assert_eq!(held, Outcome::Waiting { job_id: "p0".into(), reason: "queue etl is paused".into() });
    for i in 0..3 {
        send(&submitter, &job(&format!("d{i}"), "default", "")).await.unwrap();
    }
    assert_eq!(cluster.pods().len(), 2);
    let third = store.get("d2").await.unwrap().unwrap();
    assert_eq!(third.message.as_deref(), Some("all queues: 2 of 2 jobs held"));
}

#[tokio::test]
async fn a_job_no_queue_or_node_could_ever_hold_is_rejected_at_once_naming_both_sizes() {
    let (submitter, store, cluster) = world(Limits::NONE);
    store
        .put_queue(&Queue { limits: Limits { cpu_millis: Some(2_000), ..Limits::NONE }, ..Queue::unlimited("etl") })
        .await
        .unwrap();
    let too_big = r#", "resources": {"cpu": "3"}"#;
    let Outcome::Rejected { reason, .. } = send(&submitter, &job("big", "etl", too_big)).await.unwrap() else {
        panic!("rejected")
    };
    assert!(reason.contains("it requests 3 CPU and queue etl may hold at most 2 CPU"), "{reason}");
    let huge = r#", "resources": {"memory": "12Gi"}"#;
    let Outcome::Rejected { reason, .. } = send(&submitter, &job("huge", "default", huge)).await.unwrap() else {
        panic!("rejected")
    };
    assert!(reason.contains("12Gi of memory and the largest node the cluster has or can add has 8Gi"), "{reason}");
    let Outcome::Rejected { reason, .. } = send(&submitter, &job("lost", "nope", "")).await.unwrap() else {
        panic!("rejected")
    };
    assert!(reason.contains(r#"job.queue: there is no queue "nope"; the queues are: default, etl"#), "{reason}");
    assert!(cluster.pods().is_empty());
    assert_eq!(store.get("big").await.unwrap().map(|r| r.state), Some(JobState::Rejected));
}
