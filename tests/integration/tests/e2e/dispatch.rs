//! SQS → dispatch → DynamoDB + pods, through real services: moto server for SQS and
//! DynamoDB (the stack's), and a kube-sim per test (so each can inject its own faults)
//! reached over HTTPS by the real `kube` client. The event source mapping is emulated
//! against the real queue: what the handler does not report as failed is deleted,
//! the rest comes back and ends in the dead-letter queue after `maxReceiveCount`.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use k8s_openapi::api::core::v1::Pod;
use kube_sim::{ErrorFault, Faults, SimConfig, Timings};
use podbridge::cluster::Cluster;
use podbridge::store::JobStore;
use podbridge_core::pod::{PodSettings, build_pod};
use podbridge_core::record::{JobRecord, Source};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, Parsed, parse_message};
use podbridge_tests::World;
use podbridge_tests::sqs::{depth, peek_bodies, send_all};
use serde_json::{Value, json};

const NAMESPACE: &str = "podbridge-jobs";

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec![NAMESPACE.into(), "etl".into()],
        image_prefixes: vec!["registry.example.com/".into()],
        max_memory_bytes: 8 << 30,
        ..Guardrails::default()
    }
}

/// A cluster of the test's own failing as `faults` says, where pods run until stopped,
/// and a queue whose messages go to the DLQ after `max_receives` receives.
async fn world(faults: Faults, max_receives: u32) -> World {
    let config = SimConfig {
        namespaces: vec!["default".into(), NAMESPACE.into(), "etl".into()],
        timings: Timings { run: None, ..Timings::default() },
        faults,
        ..SimConfig::default()
    };
    World::builder().guardrails(guardrails()).own_cluster(config).queue(max_receives, 1).build().await
}

fn job_message(id: &str) -> String {
    json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/batch/work:1", "command": ["work"] } })
        .to_string()
}

fn sqs_event(records: &[(&str, &str)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records
        .iter()
        .map(|(id, body)| {
            let mut record = SqsMessage::default();
            record.message_id = Some((*id).to_owned());
            record.body = Some((*body).to_owned());
            record
        })
        .collect();
    event
}

#[tokio::test]
async fn given_a_job_message_when_it_is_dispatched_then_the_record_is_setting_up_with_its_pod() {
    let world = world(Faults::default(), 3).await;
    send_all(&world.sqs, &world.queues().url, &[job_message("report-1")]).await;

    let delivery = world.deliver(world.queues(), Duration::from_secs(20)).await;

    assert_eq!((delivery.records, delivery.failures), (1, 0));
    let record = world.recorded("report-1").await;
    assert_eq!(record.state, JobState::SettingUp);
    assert_eq!(record.pod_name.as_deref(), Some("report-1-1"));
    assert_eq!(record.namespace.as_deref(), Some(NAMESPACE));
    let states: Vec<JobState> = record.history.iter().map(|t| t.to).collect();
    assert_eq!(states, [JobState::Queued, JobState::SettingUp]);
    assert!(matches!(record.source, Source::Sqs { .. }));
    let pod = world.pods().get("report-1-1").await.expect("the pod exists");
    assert_eq!(pod.metadata.labels.unwrap()["podbridge.dev/attempt"], "1");
    assert_eq!(depth(&world.sqs, &world.queues().url).await, 0, "the message is deleted");
    assert_eq!(depth(&world.sqs, &world.queues().dlq_url).await, 0);
}

#[tokio::test]
async fn given_the_same_job_three_times_when_dispatched_then_one_record_and_one_pod() {
    let world = world(Faults::default(), 3).await;
    // Three messages with the same idempotency key (a client retrying its send)...
    send_all(&world.sqs, &world.queues().url, &vec![job_message("dup-1"); 3]).await;
    world.deliver(world.queues(), Duration::from_secs(20)).await;
    // ...and one SQS message delivered three times (at-least-once delivery).
    let body = json!({ "version": 1, "job": { "image": "registry.example.com/batch/work:1" } }).to_string();
    for _ in 0..3 {
        let response = dispatch::handle(&world.submitter, sqs_event(&[("msg-42", &body)]), 10).await;
        assert!(response.batch_item_failures.is_empty());
    }

    assert_eq!(world.pods_created_for("dup-1"), ["dup-1-1"]);
    assert_eq!(world.recorded("dup-1").await.history.len(), 2, "queued and setting_up, once each");
    assert_eq!(world.pods_created_for("sqs-msg-42"), ["sqs-msg-42-1"], "no id: the message id is the key");
    assert_eq!(world.recorded("sqs-msg-42").await.state, JobState::SettingUp);
}

#[tokio::test]
async fn given_invalid_messages_when_dispatched_then_each_is_rejected_with_its_reason_and_acknowledged() {
    let world = world(Faults::default(), 3).await;
    let job = |fields: Value| json!({ "version": 1, "job": fields }).to_string();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".to_owned(), "message: is not valid JSON"),
        (job(json!({ "id": "no-image" })), "job: missing field `image`"),
        (
            job(json!({ "id": "foreign", "image": "docker.io/library/busybox" })),
            "job.image: \"docker.io/library/busybox\" is not from an allowed registry",
        ),
        (
            job(json!({ "id": "greedy", "image": "registry.example.com/x", "resources": { "memory": "64Gi" } })),
            "job.resources.memory: \"64Gi\" is over the ceiling of 8Gi",
        ),
        (
            job(json!({ "id": "intruder", "image": "registry.example.com/x", "namespace": "kube-system" })),
            "job.namespace: \"kube-system\" is not allowed",
        ),
        (
            job(json!({ "id": "huge", "image": "registry.example.com/x", "args": ["x".repeat(70_000)] })),
            "message: is 70",
        ),
    ];
    let bodies: Vec<String> = cases.iter().map(|(body, _)| body.clone()).collect();
    let ids = send_all(&world.sqs, &world.queues().url, &bodies).await;

    let delivery = world.deliver(world.queues(), Duration::from_secs(20)).await;

    assert_eq!(delivery.failures, 0, "invalid input is never retried");
    assert_eq!(depth(&world.sqs, &world.queues().url).await, 0);
    assert_eq!(depth(&world.sqs, &world.queues().dlq_url).await, 0);
    for ((body, expected), message_id) in cases.iter().zip(&ids) {
        // A usable id keys the rejection; otherwise (no JSON, or too big to read) the
        // message id does.
        let body_id = serde_json::from_str::<Value>(body).ok().and_then(|v| v["job"]["id"].as_str().map(str::to_owned));
        let key = match body_id {
            Some(id) if body.len() <= podbridge_core::job::MAX_MESSAGE_BYTES => id,
            _ => podbridge_core::validate::id_from_message_id(message_id),
        };
        let record = world.recorded(&key).await;
        assert_eq!(record.state, JobState::Rejected, "{key}");
        let reason = record.message.unwrap_or_default();
        assert!(reason.starts_with(expected), "{key}: {reason:?} should start with {expected:?}");
        assert!(record.expires_at.is_some(), "rejections expire like any terminal record");
    }
    assert!(world.sim().created_pods().is_empty(), "no pod for an invalid job");
}

#[tokio::test]
async fn given_ten_percent_api_errors_when_jobs_are_dispatched_then_all_run_once_after_redelivery() {
    let faults = Faults {
        errors: vec![
            ErrorFault { verb: "create".into(), rate: 0.1, code: 503 },
            ErrorFault { verb: "create".into(), rate: 0.05, code: 429 },
            ErrorFault { verb: "create".into(), rate: 0.05, code: 500 },
        ],
        ..Faults::default()
    };
    let world = world(faults, 10).await;
    let bodies: Vec<String> = (0..30).map(|i| job_message(&format!("flaky-{i}"))).collect();
    send_all(&world.sqs, &world.queues().url, &bodies).await;

    let delivery = world.deliver(world.queues(), Duration::from_secs(60)).await;

    assert_eq!(depth(&world.sqs, &world.queues().url).await, 0, "every message was eventually deleted");
    assert_eq!(depth(&world.sqs, &world.queues().dlq_url).await, 0);
    for i in 0..30 {
        let id = format!("flaky-{i}");
        assert_eq!(world.recorded(&id).await.state, JobState::SettingUp, "{id}");
        assert_eq!(world.pods_created_for(&id), [format!("{id}-1")], "exactly one pod for {id}");
    }
    let injected = world.sim().verb_stats()["create"].injected_errors;
    assert_eq!(delivery.failures as u64, injected, "every injected error, and only those, sent a message back");
}

#[tokio::test]
async fn given_the_api_is_down_when_jobs_arrive_then_nothing_is_lost_and_they_end_in_the_dlq() {
    let faults = Faults { errors: vec![ErrorFault { verb: "*".into(), rate: 1.0, code: 503 }], ..Faults::default() };
    let world = world(faults, 2).await;
    let bodies: Vec<String> = (0..3).map(|i| job_message(&format!("down-{i}"))).collect();
    send_all(&world.sqs, &world.queues().url, &bodies).await;

    let delivery = world.deliver(world.queues(), Duration::from_secs(30)).await;

    assert_eq!(delivery.failures, delivery.records, "every delivery was reported as failed");
    assert_eq!(depth(&world.sqs, &world.queues().url).await, 0);
    let mut in_dlq = peek_bodies(&world.sqs, &world.queues().dlq_url).await;
    in_dlq.sort();
    assert_eq!(in_dlq, bodies, "each message is in the dead-letter queue, as sent");
    for i in 0..3 {
        // Recorded as queued: the reconciler will dispatch them when the API is back.
        assert_eq!(world.recorded(&format!("down-{i}")).await.state, JobState::Queued);
    }
    assert!(world.sim().created_pods().is_empty());
}

#[tokio::test]
async fn given_a_crash_after_the_pod_was_created_when_the_message_comes_back_then_no_second_pod() {
    let world = world(Faults::default(), 3).await;
    let body = job_message("crashy");
    // What a dispatcher that died between "pod created" and "record updated" left.
    let Parsed::Job(job) = parse_message(body.as_bytes(), "sqs-x", &guardrails()).unwrap() else { unreachable!() };
    let mut record =
        JobRecord::new("crashy", JobState::Queued, Source::Direct, jiff::Timestamp::now(), "Submitted", "queued");
    record.spec = Some(serde_json::to_value(&*job).unwrap());
    record.namespace = Some(NAMESPACE.into());
    world.store.create(&record).await.unwrap();
    world.cluster.create_pod(&build_pod(&job, 1, &PodSettings::default())).await.unwrap();

    let response = dispatch::handle(&world.submitter, sqs_event(&[("m-1", &body)]), 10).await;

    assert!(response.batch_item_failures.is_empty());
    let record = world.recorded("crashy").await;
    assert_eq!(record.state, JobState::SettingUp);
    assert_eq!(record.pod_name.as_deref(), Some("crashy-1"));
    assert_eq!(world.pods_created_for("crashy"), ["crashy-1"], "the existing pod was recognised, not duplicated");
}

#[tokio::test]
async fn given_a_pod_name_taken_by_someone_else_when_dispatched_then_the_job_fails_visibly() {
    let world = world(Faults::default(), 3).await;
    let squatter: Pod = serde_json::from_value(json!({
        "metadata": { "name": "taken-1", "namespace": NAMESPACE },
        "spec": { "containers": [{ "name": "x", "image": "registry.example.com/other" }] }
    }))
    .unwrap();
    world.cluster.create_pod(&squatter).await.unwrap();

    let response = dispatch::handle(&world.submitter, sqs_event(&[("m-2", &job_message("taken"))]), 10).await;

    assert!(response.batch_item_failures.is_empty(), "retrying cannot free the name");
    let record = world.recorded("taken").await;
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("api_rejected"));
    assert!(record.message.unwrap().contains("a pod named taken-1 that podbridge did not create"));
}

#[tokio::test]
async fn given_jobs_in_each_state_when_cancelled_then_queued_and_running_stop_and_ended_ones_stay() {
    let world = world(Faults::default(), 3).await;
    let cancel = |id: &str| json!({ "version": 1, "cancel": { "id": id, "reason": "not needed" } }).to_string();
    dispatch::handle(&world.submitter, sqs_event(&[("m-run", &job_message("running-job"))]), 10).await;
    assert_eq!(world.recorded("running-job").await.state, JobState::SettingUp);

    // A cancel that arrives before its job: the job never runs.
    let early = dispatch::handle(&world.submitter, sqs_event(&[("m-c1", &cancel("early-job"))]), 10).await;
    let late = dispatch::handle(&world.submitter, sqs_event(&[("m-late", &job_message("early-job"))]), 10).await;
    let running = dispatch::handle(&world.submitter, sqs_event(&[("m-c2", &cancel("running-job"))]), 10).await;
    let again = dispatch::handle(&world.submitter, sqs_event(&[("m-c3", &cancel("running-job"))]), 10).await;

    for response in [early, late, running, again] {
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(world.recorded("early-job").await.state, JobState::Cancelled);
    assert!(world.pods_created_for("early-job").is_empty());
    let record = world.recorded("running-job").await;
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.message.as_deref(), Some("not needed"));
    let pod = world.pods().get_opt("running-job-1").await.unwrap();
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the pod is being deleted");
    let states: Vec<JobState> = record.history.iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        [JobState::Queued, JobState::SettingUp, JobState::Cancelled],
        "the second cancel changed nothing"
    );
}
