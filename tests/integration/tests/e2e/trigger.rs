//! The trigger function's handler against the stack: schedule ticks with each
//! concurrency policy, and Submit, Cancel and Retry Job events as EventBridge delivers
//! them (put on a moto bus, routed by a rule to a queue, and handed over exactly as they
//! arrive). The records, the pods (kube-sim's creation log) and the handler's answer are
//! what a user would observe.

use std::ops::Deref;
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use kube_sim::{ErrorFault, Faults, SimConfig, Timings};
use podbridge::store::JobStore;
use podbridge_core::record::{JobRecord, Source};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Parsed, parse_message};
use podbridge_tests::unique_name;
use serde_json::{Value, json};
use trigger::{CANCEL_JOB, Handled, RETRY_JOB, SUBMIT_JOB};

const NAMESPACE: &str = "podbridge-jobs";

/// The shared world, whose bus is where a client's Submit, Cancel and Retry Job events
/// arrive (its rule delivers them as the trigger's rule would), and a schedule name of
/// this test's own.
struct World {
    world: podbridge_tests::World,
    schedule: String,
}

impl Deref for World {
    type Target = podbridge_tests::World;

    fn deref(&self) -> &podbridge_tests::World {
        &self.world
    }
}

async fn world(faults: Faults) -> World {
    let config = SimConfig {
        namespaces: vec![NAMESPACE.into()],
        timings: Timings { run: Some(Duration::from_millis(200)), ..Timings::default() },
        faults,
        ..SimConfig::default()
    };
    let world = podbridge_tests::World::builder()
        .own_cluster(config)
        .events_matching(json!({ "detail-type": [SUBMIT_JOB, CANCEL_JOB, RETRY_JOB] }))
        .build()
        .await;
    World { world, schedule: unique_name("nightly") }
}

/// A job object whose pod behaves as `behavior` says.
fn job(behavior: &str) -> Value {
    json!({ "image": "registry.example.com/report:1", "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior }],
            "retry": { "maxAttempts": 1 } })
}

impl World {
    async fn handle(&self, input: &Value) -> Handled {
        trigger::handle(&self.submitter, input).await.expect("handled")
    }

    /// The tick of this world's schedule at `time`.
    fn tick(&self, time: &str, policy: &str, job: Value) -> Value {
        json!({ "schedule": self.schedule, "scheduledTime": time, "concurrencyPolicy": policy, "job": job })
    }

    /// Puts an event on the bus as a client would, and returns it as the rule delivers it.
    async fn event(&self, detail_type: &str, detail: Value) -> Value {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.events().bus)
            .source("example.client")
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let put = self.events().events.put_events().entries(entry).send().await.expect("put events");
        assert_eq!(put.failed_entry_count, 0);
        let mut delivered = self.events().drain().await.expect("the rule's queue");
        assert_eq!(delivered.len(), 1, "one event delivered: {delivered:?}");
        delivered.remove(0)
    }
}

#[tokio::test]
async fn given_a_tick_delivered_twice_when_handled_then_one_job_and_one_pod() {
    let world = world(Faults::default()).await;
    let tick = world.tick("2026-11-21T02:00:00Z", "allow", job("run=forever"));

    let first = world.handle(&tick).await;
    let again = world.handle(&tick).await;

    let job_id = format!("{}-20261121-020000", world.schedule);
    assert_eq!((first.outcome, first.job_id.as_deref()), ("dispatched", Some(job_id.as_str())));
    assert_eq!(again.outcome, "already_recorded");
    let record = world.record(&job_id).await.expect("recorded");
    assert_eq!(
        record.source,
        Source::Schedule { schedule: world.schedule.clone(), scheduled_time: "2026-11-21T02:00:00Z".into() }
    );
    assert_eq!(world.pods_created_for(&job_id), [format!("{job_id}-1")]);
}

#[tokio::test]
async fn given_forbid_and_an_active_job_when_the_next_tick_comes_then_it_is_skipped_and_recorded() {
    let world = world(Faults::default()).await;
    world.handle(&world.tick("2026-11-21T02:00:00Z", "forbid", job("run=forever"))).await;

    let next = world.handle(&world.tick("2026-11-21T02:01:00Z", "forbid", job("run=forever"))).await;

    let skipped_id = format!("{}-20261121-020100", world.schedule);
    assert_eq!(next.outcome, "skipped");
    let skipped = world.record(&skipped_id).await.expect("the skipped tick is recorded");
    assert_eq!((skipped.state, skipped.reason.as_deref()), (JobState::Cancelled, Some("Skipped")));
    let message = skipped.message.unwrap_or_default();
    assert!(
        message.contains(&format!("{}-20261121-020000", world.schedule)) && message.contains("forbid"),
        "{message}"
    );
    assert!(world.pods_created_for(&skipped_id).is_empty());
}

#[tokio::test]
async fn given_replace_and_an_active_job_when_the_next_tick_comes_then_the_old_is_cancelled_and_the_new_runs() {
    let world = world(Faults::default()).await;
    world.handle(&world.tick("2026-11-21T02:00:00Z", "replace", job("run=forever"))).await;
    let old_id = format!("{}-20261121-020000", world.schedule);

    let next = world.handle(&world.tick("2026-11-21T02:01:00Z", "replace", job("run=forever"))).await;

    assert_eq!(next.outcome, "dispatched");
    let old = world.record(&old_id).await.unwrap();
    assert_eq!(old.state, JobState::Cancelled);
    assert!(old.message.unwrap_or_default().contains("replaced by"), "the history says why");
    let old_pod = world.pods().get_opt(&format!("{old_id}-1")).await.unwrap();
    assert!(old_pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the old pod is being deleted");
    let new_id = format!("{}-20261121-020100", world.schedule);
    assert_eq!(world.record(&new_id).await.unwrap().state, JobState::SettingUp);
}

#[tokio::test]
async fn given_a_suspended_schedule_when_it_ticks_then_no_job_is_recorded() {
    let world = world(Faults::default()).await;
    let mut tick = world.tick("2026-11-21T02:00:00Z", "allow", job("run=forever"));
    tick["suspend"] = json!(true);

    let handled = world.handle(&tick).await;

    assert_eq!(handled.outcome, "suspended");
    assert!(world.record(&format!("{}-20261121-020000", world.schedule)).await.is_none());
    assert!(world.sim().created_pods().is_empty());
}

#[tokio::test]
async fn given_a_submit_job_event_when_handled_then_the_job_runs_to_the_end() {
    let world = world(Faults::default()).await;
    let job_id = unique_name("submitted");
    let mut spec = job("run=100ms");
    spec["id"] = json!(job_id);
    let event = world.event(SUBMIT_JOB, json!({ "version": 1, "job": spec })).await;

    let handled = world.handle(&event).await;

    assert_eq!(handled.outcome, "dispatched");
    let record = world.reconcile_until(&job_id, JobState::Succeeded).await;
    assert_eq!(record.source, Source::EventBridge { event_id: event["id"].as_str().unwrap().to_owned() });
    assert_eq!(world.pods_created_for(&job_id).len(), 1);
}

#[tokio::test]
async fn given_jobs_in_each_state_when_cancel_job_events_arrive_then_each_ends_as_a_user_expects() {
    let world = world(Faults::default()).await;
    let cancel = async |job_id: &str| {
        let event = world.event(CANCEL_JOB, json!({ "jobId": job_id, "reason": "not needed today" })).await;
        world.handle(&event).await
    };
    let submit = async |job_id: &str, behavior: &str| {
        let mut spec = job(behavior);
        spec["id"] = json!(job_id);
        world.handle(&world.event(SUBMIT_JOB, json!({ "version": 1, "job": spec })).await).await
    };
    let running = unique_name("running");
    submit(&running, "run=forever").await;
    let done = unique_name("done");
    submit(&done, "run=50ms").await;
    world.reconcile_until(&done, JobState::Succeeded).await;

    let stopped = cancel(&running).await;
    let ignored = cancel(&done).await;
    let early = unique_name("early");
    let before = cancel(&early).await;
    let after = submit(&early, "run=forever").await;

    assert_eq!((stopped.outcome, ignored.outcome, before.outcome), ("cancelled", "cancel_ignored", "cancelled"));
    let record = world.record(&running).await.unwrap();
    assert_eq!((record.state, record.message.as_deref()), (JobState::Cancelled, Some("not needed today")));
    let pod = world.pods().get_opt(&format!("{running}-1")).await.unwrap();
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the running pod is being deleted");
    assert_eq!(world.record(&done).await.unwrap().state, JobState::Succeeded, "an ended job stays as it ended");
    assert_eq!(after.outcome, "already_recorded", "a job cancelled before it came never runs");
    assert!(world.pods_created_for(&early).is_empty());
}

#[tokio::test]
async fn given_a_cancel_that_races_a_dispatch_when_the_dispatcher_creates_the_pod_then_the_pod_is_removed() {
    let world = world(Faults::default()).await;
    let job_id = unique_name("raced");
    // The dispatcher has recorded the job and is about to create its pod.
    let mut spec = job("run=forever");
    spec["id"] = json!(job_id);
    let body = json!({ "version": 1, "job": spec }).to_string();
    let Ok(Parsed::Job(parsed)) = parse_message(body.as_bytes(), "x", world.submitter.guardrails()) else {
        panic!("a valid job")
    };
    let mut queued = JobRecord::new(&job_id, JobState::Queued, Source::Direct, jiff::Timestamp::now(), "Submitted", "");
    queued.spec = Some(serde_json::to_value(&*parsed).unwrap());
    queued.namespace = Some(NAMESPACE.into());
    world.store.create(&queued).await.unwrap();

    // The cancel lands first; then the dispatcher, which read the record before it, goes on.
    world.handle(&world.event(CANCEL_JOB, json!({ "jobId": job_id })).await).await;
    world.attempts.start(&queued, &parsed).await.unwrap();

    assert_eq!(world.record(&job_id).await.unwrap().state, JobState::Cancelled);
    let pod = world.pods().get_opt(&format!("{job_id}-1")).await.unwrap();
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the pod created after the cancel is deleted");
}

#[tokio::test]
async fn given_a_failed_job_when_a_retry_job_event_arrives_then_attempt_two_runs_with_the_history_kept() {
    let world = world(Faults::default()).await;
    let job_id = unique_name("flaky");
    let mut spec = job("run=50ms,exit=3");
    spec["id"] = json!(job_id);
    world.handle(&world.event(SUBMIT_JOB, json!({ "version": 1, "job": spec })).await).await;
    world.reconcile_until(&job_id, JobState::Failed).await;

    let retry = world.event(RETRY_JOB, json!({ "jobId": job_id, "attempt": 1, "reason": "fixed the input" })).await;
    let retried = world.handle(&retry).await;
    let twice = world.handle(&retry).await;

    assert_eq!(retried.outcome, "dispatched");
    assert_eq!(twice.outcome, "retry_ignored", "the same request again starts nothing: {}", twice.detail);
    let record = world.record(&job_id).await.unwrap();
    assert_eq!((record.attempt, record.state), (2, JobState::SettingUp));
    let attempts: Vec<(u32, JobState)> = record.history.iter().map(|t| (t.attempt, t.to)).collect();
    assert!(attempts.contains(&(1, JobState::Failed)) && attempts.contains(&(2, JobState::Queued)), "{attempts:?}");
    let asked = record.history.iter().find(|t| t.reason == "RetryRequested").expect("the retry is in the history");
    assert!(
        asked.message.starts_with("asked by event source") && asked.message.ends_with(": fixed the input"),
        "the reason and who asked: {}",
        asked.message
    );
    assert_eq!(world.pods_created_for(&job_id), [format!("{job_id}-1"), format!("{job_id}-2")]);
}

#[tokio::test]
async fn given_bad_inputs_when_handled_then_each_is_rejected_with_a_reason_or_ignored_and_none_is_retried() {
    let world = world(Faults::default()).await;
    let job_id = unique_name("outsider");
    let outside = json!({ "version": 1, "job": { "id": job_id, "image": "docker.io/library/busybox" } });
    let mut bad_tick = world.tick("2026-11-21T02:00:00Z", "sometimes", job("run=forever"));

    let submitted = world.handle(&world.event(SUBMIT_JOB, outside).await).await;
    let ticked = world.handle(&bad_tick).await;
    bad_tick["concurrencyPolicy"] = json!("allow");
    bad_tick["scheduledTime"] = json!("not a time");
    let unnamed = world.handle(&bad_tick).await;
    let unknown = world.handle(&json!({ "hello": "world" })).await;

    assert_eq!(submitted.outcome, "rejected");
    let record = world.record(&job_id).await.unwrap();
    assert_eq!(record.state, JobState::Rejected);
    assert!(record.message.unwrap_or_default().starts_with("job.image: "), "the reason names the field");
    assert_eq!(ticked.outcome, "rejected");
    let tick_record = world.record(&format!("{}-20261121-020000", world.schedule)).await.unwrap();
    assert!(tick_record.message.unwrap_or_default().starts_with("concurrencyPolicy: "));
    assert_eq!((unnamed.outcome, unknown.outcome), ("ignored", "ignored"));
    assert!(unnamed.detail.starts_with("scheduledTime: "), "{}", unnamed.detail);
    assert!(world.sim().created_pods().is_empty());
}

#[tokio::test]
async fn given_the_cluster_failing_when_a_submit_job_event_is_handled_then_the_invocation_fails_for_eventbridge_to_retry()
 {
    let faults =
        Faults { errors: vec![ErrorFault { verb: "create".into(), rate: 1.0, code: 503 }], ..Faults::default() };
    let world = world(faults).await;
    let job_id = unique_name("unlucky");
    let mut spec = job("run=forever");
    spec["id"] = json!(job_id);
    let event = world.event(SUBMIT_JOB, json!({ "version": 1, "job": spec })).await;

    let error = trigger::handle(&world.submitter, &event).await.unwrap_err();

    assert!(error.is_retryable(), "{error}");
    assert_eq!(
        world.record(&job_id).await.unwrap().state,
        JobState::Queued,
        "recorded for the retry or the reconciler"
    );
    world.sim().set_faults(Faults::default()).unwrap();
    assert_eq!(world.handle(&event).await.outcome, "dispatched", "EventBridge's retry completes it");
}
