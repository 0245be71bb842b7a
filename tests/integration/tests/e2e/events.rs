//! Job state change events on EventBridge against moto server: what a consumer sees when
//! a rule for podbridge's events sends them to its SQS queue
//! ([`podbridge_tests::events::Subscription`]).
//!
//! Run through `make test` or
//! `tests/stack.sh run -- cargo test -p podbridge-tests --test e2e events::`.

use anyhow::Context as _;
use jiff::{SignedDuration, Timestamp};
use podbridge::events::{EventBridgeSink, EventSink, JobStateChange, PublishReport};
use podbridge_core::{JobRecord, JobState, Source, StateChange};
use podbridge_tests::events::Subscription;
use podbridge_tests::{Stack, unique_name};
use serde_json::{Value, json};

/// Now, to the second: EventBridge's `time` has no fractions.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap()
}

/// The event after each transition of a job that was recorded, got its pod, ran, and
/// exited with code 3.
fn failed_job_events(job_id: &str, t0: Timestamp) -> Vec<JobStateChange> {
    let t = |seconds: i64| t0 + SignedDuration::from_secs(seconds);
    let mut record = JobRecord::new(job_id, JobState::Queued, Source::Direct, t(0), "Dispatched", "job recorded");
    record.namespace = Some("batch".into());
    let mut events = vec![JobStateChange::from_record(&record)];

    let mut created = StateChange::new(JobState::Queued, 1, JobState::SettingUp, t(1), "PodCreated", "pod created");
    created.pod_name = Some(format!("{job_id}-1"));
    let mut started = StateChange::new(JobState::SettingUp, 1, JobState::Executing, t(4), "Started", "running");
    started.node = Some("node-1".into());
    let mut failed =
        StateChange::new(JobState::Executing, 1, JobState::Failed, t(9), "ExitCode", "the container exited with 3");
    failed.exit_code = Some(3);
    failed.failure_class = Some(podbridge_core::FailureClass::ExitCode);
    for change in [created, started, failed] {
        record.apply(&change);
        events.push(JobStateChange::from_record(&record));
    }
    events
}

#[tokio::test]
async fn given_a_rule_for_job_state_changes_when_a_job_runs_and_fails_then_its_queue_gets_each_transition_as_published()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let subscription = Subscription::new(&stack).await?;
    let sink = subscription.sink();
    let t0 = now();
    let events = failed_job_events("report-7", t0);

    // As the functions do: each transition is published when it is recorded.
    for event in &events {
        assert_eq!(sink.publish(std::slice::from_ref(event)).await, PublishReport { published: 1, failed: 0 });
    }

    let mut received = subscription.receive(events.len()).await?;
    received.sort_by_key(|body| body["detail"]["at"].as_str().map(|at| at.parse::<Timestamp>().unwrap()));
    assert_eq!(received.len(), events.len(), "one event per transition: {received:#?}");
    for (body, event) in received.iter().zip(&events) {
        assert_eq!(body["source"], "podbridge");
        assert_eq!(body["detail-type"], "Job State Change");
        assert_eq!(body["time"], event.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "the transition's time");
        assert_eq!(body["resources"], json!([]));
        assert_eq!(body["detail"], serde_json::to_value(event)?);
    }
    let states: Vec<_> =
        received.iter().map(|b| (b["detail"]["previousState"].clone(), b["detail"]["state"].clone())).collect();
    assert_eq!(
        states,
        [
            (Value::Null, json!("queued")),
            (json!("queued"), json!("setting_up")),
            (json!("setting_up"), json!("executing")),
            (json!("executing"), json!("failed")),
        ]
    );
    let last = &received[3]["detail"];
    assert_eq!(
        [&last["jobId"], &last["attempt"], &last["failureClass"], &last["exitCode"], &last["podName"], &last["node"]],
        [&json!("report-7"), &json!(1), &json!("exit_code"), &json!(3), &json!("report-7-1"), &json!("node-1")]
    );
    assert_eq!(last["namespace"], "batch");
    assert_eq!(last["reason"], "ExitCode");
    assert_eq!(last["createdAt"], t0.to_string());
    let states_timed: Vec<&String> = last["stateTimes"].as_object().context("stateTimes")?.keys().collect();
    assert_eq!(states_timed.len(), 4, "{last}");
    assert_eq!(last["stateTimes"]["executing"], (t0 + SignedDuration::from_secs(4)).to_string());

    subscription.delete().await
}

#[tokio::test]
async fn given_more_events_than_one_put_events_call_takes_when_they_are_published_then_each_arrives_once()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let subscription = Subscription::new(&stack).await?;
    let t0 = now();
    // 23 events: three PutEvents calls of 10, 10 and 3.
    let events: Vec<_> = (0..23).map(|i| failed_job_events(&format!("batch-{i}"), t0).remove(0)).collect();

    let report = subscription.sink().publish(&events).await;

    assert_eq!(report, PublishReport { published: 23, failed: 0 });
    let mut job_ids: Vec<String> = subscription
        .receive(events.len())
        .await?
        .iter()
        .map(|body| body["detail"]["jobId"].as_str().unwrap_or_default().to_owned())
        .collect();
    job_ids.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e.job_id.clone()).collect();
    expected.sort();
    assert_eq!(job_ids, expected);
    let sqs = &subscription.sqs;
    let left = sqs.receive_message().queue_url(&subscription.queue_url).send().await?.messages.unwrap_or_default();
    assert!(left.is_empty(), "no event twice: {left:?}");

    subscription.delete().await
}

#[tokio::test]
async fn given_a_bus_that_does_not_exist_when_events_are_published_then_they_are_reported_failed_not_raised()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&stack.aws), unique_name("no-such-bus"));
    let events = failed_job_events("lost-1", now());

    // The caller's transitions are recorded already; publishing only reports (and logs)
    // that the bus did not take the events, after one retry.
    let report = sink.publish(&events).await;

    assert_eq!(report, PublishReport { published: 0, failed: events.len() });
    Ok(())
}
