//! One deployment, two teams, and a hostile sender: someone who may write to a queue or
//! put events on the bus, but is not the operator. Each attack is tried through the real
//! paths (SQS through the event source mapping emulator, EventBridge events and ticks
//! through the trigger's handler) against moto and kube-sim, and each test asserts the
//! refusal, its reason, and that the victim's record and pod are untouched and nothing
//! is lost (queue and dead-letter queue empty).

use std::ops::Deref;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube_sim::{SimConfig, Timings};
use podbridge::services::Outcome;
use podbridge_core::JobRecord;
use podbridge_core::Source;
use podbridge_core::state::JobState;
use podbridge_core::tenancy::{Sender, Tenancy};
use podbridge_core::validate::Guardrails;
use podbridge_tests::sqs::{Queues, depth, send_all};
use podbridge_tests::unique_name;
use reconcile::Watch;
use serde_json::{Value, json};

const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";

/// The shared world, scoped to two teams, with what the attacks go through.
struct World {
    world: podbridge_tests::World,
    /// Each team's own queue: the queue a message came through says whose it is.
    team_a: Queues,
    team_b: Queues,
    /// The event source team B's events carry (the bus policy lets only team B use it).
    team_b_source: String,
}

impl Deref for World {
    type Target = podbridge_tests::World;

    fn deref(&self) -> &podbridge_tests::World {
        &self.world
    }
}

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec![TEAM_A.into(), TEAM_B.into()],
        image_prefixes: vec!["registry.example.com/".into()],
        ..Guardrails::default()
    }
}

async fn world(max_manual_retries: u32) -> World {
    let config = SimConfig {
        namespaces: vec![TEAM_A.into(), TEAM_B.into()],
        timings: Timings { run: None, ..Timings::default() },
        ..SimConfig::default()
    };
    let world = podbridge_tests::World::builder()
        .guardrails(guardrails())
        .own_cluster(config)
        .max_manual_retries(max_manual_retries)
        .build()
        .await;
    let team_a = world.new_queues("team-a", 2, 1).await;
    let team_b = world.new_queues("team-b", 2, 1).await;
    let team_b_source = unique_name("team-b.batch");
    let rules = json!([
        { "queue": team_a.arn, "namespaces": [TEAM_A] },
        { "queue": team_b.arn, "namespaces": [TEAM_B] },
        { "eventSource": team_b_source, "namespaces": [TEAM_B] },
    ]);
    let tenancy = Tenancy::parse(&rules.to_string(), &guardrails().namespaces).expect("valid rules");
    World { world: world.with_tenancy(tenancy), team_a, team_b, team_b_source }
}

fn job(id: &str, namespace: Option<&str>) -> String {
    let mut job = json!({ "id": id, "image": "registry.example.com/batch/work:1" });
    if let Some(namespace) = namespace {
        job["namespace"] = json!(namespace);
    }
    json!({ "version": 1, "job": job }).to_string()
}

fn cancel(id: &str) -> String {
    json!({ "version": 1, "cancel": { "id": id, "reason": "hostile" } }).to_string()
}

impl World {
    /// Sends `bodies` on `queue` and lets dispatch handle them until the queue is empty;
    /// asserts nothing was left behind or dead-lettered.
    async fn send(&self, queue: &Queues, bodies: &[String]) -> Vec<String> {
        let ids = send_all(&self.sqs, &queue.url, bodies).await;
        let delivery = self.deliver(queue, Duration::from_secs(20)).await;
        assert_eq!(delivery.failures, 0, "every message handled at once: {delivery:?}");
        assert_eq!(depth(&self.sqs, &queue.url).await, 0, "the queue is empty");
        assert_eq!(depth(&self.sqs, &queue.dlq_url).await, 0, "nothing dead-lettered");
        ids
    }

    async fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods_in(namespace).get_opt(name).await.unwrap()
    }

    /// An event as EventBridge delivers it to the trigger.
    async fn event(&self, source: &str, detail_type: &str, detail: Value) -> trigger::Handled {
        let event = json!({ "id": unique_name("e"), "detail-type": detail_type, "source": source,
            "account": "111122223333", "time": "2026-11-21T02:00:00Z", "region": "us-east-1", "detail": detail });
        trigger::handle(&self.submitter, &event).await.expect("handled")
    }

    /// Team B's job, running in team B's namespace.
    async fn victim(&self, id: &str) -> JobRecord {
        self.send(&self.team_b, &[job(id, None)]).await;
        let record = self.record(id).await.expect("the victim is recorded");
        assert_eq!((record.state, record.namespace.as_deref()), (JobState::SettingUp, Some(TEAM_B)));
        record
    }

    async fn assert_untouched(&self, before: &JobRecord) {
        let after = self.record(&before.job_id).await.expect("still recorded");
        assert_eq!(
            (after.state, after.attempt, after.history.len()),
            (before.state, before.attempt, before.history.len())
        );
        let pod = self.pod(TEAM_B, before.pod_name.as_deref().unwrap()).await.expect("the victim's pod");
        assert!(pod.metadata.deletion_timestamp.is_none(), "the victim's pod is not being deleted");
    }
}

#[tokio::test]
async fn given_another_teams_job_when_a_cancel_comes_through_my_queue_then_it_is_refused_and_the_job_runs_on() {
    let world = world(3).await;
    let victim = world.victim("payroll").await;
    let team_a = Sender::Queue { sender_id: None, queue_arn: Some(world.team_a.arn.clone()) };

    let outcome =
        world.submitter.handle_message(cancel("payroll").as_bytes(), Source::Direct, &team_a, "m-1").await.unwrap();
    world.send(&world.team_a, &[cancel("payroll")]).await;

    let Outcome::Refused { reason, .. } = outcome else { panic!("refused: {outcome:?}") };
    assert!(reason.contains("may not act on jobs in namespace \"team-b\"; it may use: team-a"), "{reason}");
    world.assert_untouched(&victim).await;
}

#[tokio::test]
async fn given_a_bad_message_claiming_another_teams_id_when_it_comes_first_then_that_teams_job_still_runs() {
    let world = world(3).await;
    let squat = json!({ "version": 1, "job": { "id": "quarterly", "image": "docker.io/evil/x:1" } }).to_string();

    let ids = world.send(&world.team_a, &[squat]).await;
    world.victim("quarterly").await;

    let fallback = podbridge_core::validate::id_from_message_id(&ids[0]);
    let rejected = world.record(&fallback).await.expect("the rejection is recorded under its message's id");
    assert_eq!(rejected.state, JobState::Rejected);
    assert!(rejected.message.as_deref().unwrap_or_default().starts_with("job quarterly: "), "{:?}", rejected.message);
    assert_eq!(world.pods_created_for("quarterly"), ["quarterly-1"]);
}

#[tokio::test]
async fn given_two_teams_choosing_one_id_when_both_submit_then_the_second_is_told_not_dropped() {
    let world = world(3).await;
    world.send(&world.team_a, &[job("nightly-report", None)]).await;

    let ids = world.send(&world.team_b, &[job("nightly-report", None)]).await;

    let first = world.record("nightly-report").await.unwrap();
    assert_eq!(first.namespace.as_deref(), Some(TEAM_A), "the first job keeps its id");
    let told =
        world.record(&podbridge_core::validate::id_from_message_id(&ids[0])).await.expect("recorded, not dropped");
    assert_eq!(told.state, JobState::Rejected);
    assert!(told.message.as_deref().unwrap_or_default().contains("already the id of a job in another namespace"));
}

#[tokio::test]
async fn given_a_pod_that_copies_a_jobs_labels_in_another_namespace_when_reconciled_then_the_job_ignores_it() {
    let world = world(3).await;
    let victim = world.victim("salaries").await;
    // Team A, allowed to create pods in its own namespace, imitates the victim's pod.
    let mut fake: Pod = serde_json::from_value(json!({
        "metadata": { "name": "salaries-1", "labels": {
            "app.kubernetes.io/managed-by": "podbridge", "podbridge.dev/job-id": "salaries", "podbridge.dev/attempt": "1" },
            "annotations": { "kube-sim/behavior": "run=10ms,exit=1" } },
        "spec": { "restartPolicy": "Never", "containers": [{ "name": "job", "image": "registry.example.com/x:1" }] }
    }))
    .unwrap();
    fake.metadata.namespace = Some(TEAM_A.into());
    world.pods_in(TEAM_A).create(&Default::default(), &fake).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reconciler = &world.reconciler;

    for _ in 0..3 {
        reconciler.pass(jiff::Timestamp::now()).await.unwrap();
    }
    let mut watches =
        std::collections::BTreeMap::from([(TEAM_A.to_owned(), Watch::Relist), (TEAM_B.to_owned(), Watch::Relist)]);
    reconciler.follow(&mut watches, Duration::from_secs(1)).await;

    let after = world.record("salaries").await.unwrap();
    assert_eq!(after.state, JobState::Executing, "followed from its own pod only: {:?}", after.history);
    assert_eq!(after.failure_class, None);
    let pod = world.pod(TEAM_B, victim.pod_name.as_deref().unwrap()).await.expect("the real pod");
    assert!(pod.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn given_another_teams_job_when_cancel_and_retry_events_come_from_a_foreign_source_then_refused() {
    let world = world(3).await;
    let victim = world.victim("ledger").await;

    let cancelled = world.event("team-a.batch", "Cancel Job", json!({ "jobId": "ledger" })).await;
    let retried = world.event("team-a.batch", "Retry Job", json!({ "jobId": "ledger" })).await;

    assert_eq!(cancelled.outcome, "refused", "{cancelled:?}");
    assert!(cancelled.detail.contains("may not act on jobs in namespace \"team-b\""), "{}", cancelled.detail);
    assert_eq!(retried.outcome, "refused", "{retried:?}");
    world.assert_untouched(&victim).await;
    // The owner's own source may.
    let own = world.event(&world.team_b_source, "Cancel Job", json!({ "jobId": "ledger" })).await;
    assert_eq!(own.outcome, "cancelled", "{own:?}");
}

#[tokio::test]
async fn given_my_queue_when_i_submit_into_another_teams_namespace_then_rejected_and_no_pod_there() {
    let world = world(3).await;

    let ids = world.send(&world.team_a, &[job("intruder", Some(TEAM_B)), job("mine", None)]).await;

    assert!(world.record("intruder").await.is_none(), "a rejection never takes the id it claims");
    let fallback = podbridge_core::validate::id_from_message_id(&ids[0]);
    let intruder = world.record(&fallback).await.expect("the rejection is recorded under its message's id");
    assert_eq!(intruder.state, JobState::Rejected);
    let message = intruder.message.clone().unwrap_or_default();
    assert!(
        message.contains("job.namespace") && message.contains(TEAM_A),
        "names the field and what is allowed: {message}"
    );
    assert!(world.pods_created_for("intruder").is_empty(), "no pod anywhere");
    // A job without a namespace gets the sender's own default.
    let mine = world.record("mine").await.unwrap();
    assert_eq!((mine.state, mine.namespace.as_deref()), (JobState::SettingUp, Some(TEAM_A)));
}

#[tokio::test]
async fn given_a_cancel_for_an_id_with_no_record_when_another_team_submits_that_id_then_its_job_runs() {
    let world = world(3).await;
    // Team A cancels an id before any job has it: a tombstone in team A's namespace.
    world.send(&world.team_a, &[cancel("shared-name")]).await;
    assert_eq!(
        world.record("shared-name").await.map(|r| (r.state, r.namespace)),
        Some((JobState::Cancelled, Some(TEAM_A.into())))
    );

    // Team B's job of that id is not blocked by it.
    world.send(&world.team_b, &[job("shared-name", None)]).await;

    let record = world.record("shared-name").await.unwrap();
    assert_eq!((record.state, record.namespace.as_deref()), (JobState::SettingUp, Some(TEAM_B)));
    assert_eq!(world.pods_created_for("shared-name"), ["shared-name-1"]);
    // While team A's own job of a cancelled id still never runs.
    world.send(&world.team_a, &[cancel("early")]).await;
    world.send(&world.team_a, &[job("early", None)]).await;
    assert_eq!(world.record("early").await.unwrap().state, JobState::Cancelled);
    assert!(world.pods_created_for("early").is_empty());
}

#[tokio::test]
async fn given_a_schedule_when_clients_try_to_take_its_next_ticks_id_then_refused_and_the_tick_runs() {
    let world = world(3).await;
    let tick_id = "nightly-20261121-020000";

    world.send(&world.team_b, &[job(tick_id, None), cancel(tick_id)]).await;
    let bad_event = world
        .event(
            &world.team_b_source,
            "Submit Job",
            json!({ "version": 1, "job": { "id": tick_id, "image": "registry.example.com/x:1" } }),
        )
        .await;

    assert!(world.record(tick_id).await.is_none(), "no job, rejection or cancel under the tick's id");
    assert_eq!(bad_event.outcome, "rejected", "{bad_event:?}");
    let tick = json!({ "schedule": "nightly", "scheduledTime": "2026-11-21T02:00:00Z",
        "job": { "image": "registry.example.com/report:1", "namespace": TEAM_B } });
    let handled = trigger::handle(&world.submitter, &tick).await.unwrap();
    assert_eq!(handled.outcome, "dispatched", "{handled:?}");
    assert_eq!(world.pods_created_for(tick_id), [format!("{tick_id}-1")]);
}

#[tokio::test]
async fn given_event_job_ids_the_table_cannot_hold_when_they_arrive_then_ignored_at_once() {
    let world = world(3).await;
    for id in [String::new(), "../../etc".into(), "x".repeat(2000), "bad id".into()] {
        let handled = world.event(&world.team_b_source, "Cancel Job", json!({ "jobId": id })).await;
        assert_eq!(handled.outcome, "ignored", "{id:?}: {handled:?}");
        assert!(handled.detail.starts_with("detail.jobId"), "names the field: {}", handled.detail);
    }
}

#[tokio::test]
async fn given_retries_on_request_when_they_pass_the_deployments_bound_then_refused_and_each_names_who_asked() {
    let world = world(1).await;
    world.victim("flaky").await;
    let owner = world.team_b_source.clone();
    assert_eq!(world.event(&owner, "Cancel Job", json!({ "jobId": "flaky" })).await.outcome, "cancelled");

    let first = world.event(&owner, "Retry Job", json!({ "jobId": "flaky" })).await;
    assert_eq!(first.outcome, "dispatched", "{first:?}");
    assert_eq!(world.event(&owner, "Cancel Job", json!({ "jobId": "flaky" })).await.outcome, "cancelled");
    let second = world.event(&owner, "Retry Job", json!({ "jobId": "flaky" })).await;

    assert_eq!(second.outcome, "refused", "{second:?}");
    assert!(second.detail.contains("PODBRIDGE_MAX_MANUAL_RETRIES=1"), "{}", second.detail);
    let record = world.record("flaky").await.unwrap();
    assert_eq!((record.state, record.attempt), (JobState::Cancelled, 2));
    let asked = record.history.iter().find(|t| t.reason == "RetryRequested").expect("the retry is in the history");
    assert!(asked.message.contains(&format!("asked by event source {owner:?}")), "{}", asked.message);
    assert_eq!(world.pods_created_for("flaky"), ["flaky-1", "flaky-2"]);
}

#[tokio::test]
async fn given_the_largest_message_and_the_longest_reasons_when_cancelled_and_retried_many_times_then_it_stays_writable()
 {
    let world = world(60).await;
    let operator = podbridge_core::tenancy::Sender::Operator;
    // As large as the message format's caps allow for what this deployment permits:
    // command and arguments, and the environment, each at their total's cap.
    let args: Vec<String> = (0..8).map(|i| format!("{i}{}", "a".repeat(1_023))).collect();
    let env: Vec<Value> = (0..64).map(|i| json!({ "name": format!("VAR_{i:02}"), "value": "v".repeat(120) })).collect();
    let body = json!({ "version": 1, "job": { "id": "huge", "image": "registry.example.com/batch/work:1",
        "namespace": TEAM_B, "args": args, "env": env } })
    .to_string();
    assert!(body.len() > 16_000, "{}", body.len());
    let outcome = world
        .submitter
        .handle_message(body.as_bytes(), podbridge_core::Source::Direct, &operator, "huge-fallback")
        .await
        .unwrap();
    assert!(matches!(outcome, podbridge::services::Outcome::Dispatched { .. }), "{outcome:?}");
    let longest = "r".repeat(100_000);

    for _ in 0..50 {
        let cancelled = world.submitter.cancel("huge", None, &longest, podbridge_core::Source::Direct, &operator).await;
        assert!(matches!(cancelled, Ok(podbridge::services::Outcome::Cancelled { .. })), "{cancelled:?}");
        let retried = world.submitter.retry("huge", None, &longest, &operator).await;
        assert!(matches!(retried, Ok(podbridge::services::Outcome::Dispatched { .. })), "{retried:?}");
    }

    let record = world.record("huge").await.unwrap();
    assert_eq!((record.state, record.attempt), (JobState::SettingUp, 51), "every change was written");
    assert!(record.history.iter().any(|t| t.reason == "HistoryTrimmed"), "the history was compacted to fit");
    let asked = record.history.iter().filter(|t| t.reason == "RetryRequested").count();
    assert_eq!(asked, 50, "every retry on request is still counted against the bound");
    assert_eq!(record.history.first().map(|t| t.to), Some(JobState::Queued), "its start is kept");
    assert!(record.message.as_deref().unwrap_or_default().len() <= podbridge_core::record::MAX_MESSAGE);
}

#[tokio::test]
async fn given_a_job_accepted_yesterday_when_the_operator_narrows_the_guardrails_then_its_retry_runs_no_pod() {
    let world = world(3).await;
    let operator = podbridge_core::tenancy::Sender::Operator;
    world.victim("old-image").await;
    world.submitter.cancel("old-image", None, "stop", podbridge_core::Source::Direct, &operator).await.unwrap();
    // Today the deployment admits only another registry, and less CPU than the job asked.
    let today = Guardrails {
        image_prefixes: vec!["registry.example.com/approved/".into()],
        max_cpu_millis: 100,
        default_cpu_millis: 100,
        ..guardrails()
    };
    let submitter = world.submitter_with(today);

    let outcome = submitter.retry("old-image", None, "try again", &operator).await.unwrap();

    assert!(matches!(outcome, podbridge::services::Outcome::Failed { .. }), "{outcome:?}");
    let record = world.record("old-image").await.unwrap();
    assert_eq!((record.state, record.attempt), (JobState::Failed, 2));
    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("no_longer_allowed"));
    let message = record.message.clone().unwrap_or_default();
    assert!(
        message.contains("job.image") && message.contains("job.resources.cpu"),
        "names what is no longer allowed: {message}"
    );
    assert_eq!(world.pods_created_for("old-image"), ["old-image-1"], "no pod for the refused attempt");
}
