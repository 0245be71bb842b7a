//! Reconcile decisions over pod statuses shaped as the API returns them: every rule of
//! the lifecycle, stale jobs and retries, with plain values.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use podbridge_core::FailureClass;
use podbridge_core::observe::{Observed, observe};
use podbridge_core::reconcile::{Decision, Thresholds, WhenFull, backoff, decide};
use podbridge_core::record::{JobRecord, Source, StateChange};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, Job, Parsed, parse_message};

const TTL: Duration = Duration::from_secs(86_400);

fn job(retry: serde_json::Value) -> Job {
    let message = serde_json::json!({ "version": 1, "job": {
        "id": "report", "image": "registry.example.com/report:1", "timeoutSeconds": 3600, "retry": retry
    }});
    let guardrails = Guardrails { image_prefixes: vec!["registry.example.com/".into()], ..Guardrails::default() };
    match parse_message(message.to_string().as_bytes(), "x", &guardrails).unwrap() {
        Parsed::Job(job) => *job,
        Parsed::Cancel(_) => unreachable!(),
    }
}

fn default_job() -> Job {
    job(serde_json::json!({}))
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// A record that entered `state` at 10:00:00, pod created at 10:00:00.
fn record(state: JobState, attempt: u32) -> JobRecord {
    let t = at("2026-11-21T10:00:00Z");
    let mut record = JobRecord::new("report", JobState::Queued, Source::Direct, t, "Submitted", "queued");
    record.attempt = attempt;
    if state != JobState::Queued {
        let mut change = StateChange::new(JobState::Queued, attempt, JobState::SettingUp, t, "PodCreated", "created");
        change.pod_name = Some(format!("report-{attempt}"));
        record.apply(&change);
    }
    if state == JobState::Executing {
        record.apply(&StateChange::new(JobState::SettingUp, attempt, JobState::Executing, t, "Started", "running"));
    }
    record
}

fn pod(name: &str) -> Observed {
    let path = format!("{}/tests/fixtures/pods/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let pod: Pod = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    observe(&pod)
}

fn minutes_later(minutes: i64) -> Timestamp {
    at("2026-11-21T10:00:00Z") + SignedDuration::from_mins(minutes)
}

/// The writes of a decision (none for `Nothing` and `Dispatch`).
fn writes(decision: &Decision) -> &[StateChange] {
    match decision {
        Decision::Nothing | Decision::Dispatch => &[],
        Decision::Write { changes, .. } => changes,
    }
}

/// The change a decision is about: its first to an ended state, else its last.
fn main_change(decision: &Decision) -> Option<&StateChange> {
    let changes = writes(decision);
    changes.iter().find(|c| c.to.is_terminal()).or(changes.last())
}

/// The (to, class, delete_pod, retried) of a decision, for compact tables.
fn summary(decision: &Decision) -> (Option<JobState>, Option<String>, bool, bool) {
    let delete_pod = matches!(decision, Decision::Write { delete_pod: true, .. });
    let retried = writes(decision).iter().any(|c| c.new_attempt.is_some());
    let main = main_change(decision);
    (main.map(|c| c.to), main.and_then(|c| c.failure_class).map(|c| c.as_str().to_owned()), delete_pod, retried)
}

#[test]
fn pods_move_their_jobs_through_the_lifecycle() {
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 1 }));
    let check = |state: JobState, fixture: &str, minutes: i64, expected: (Option<JobState>, Option<&str>, bool)| {
        let decision =
            decide(&record(state, 1), &job, Some(&pod(fixture)), minutes_later(minutes), &t, TTL, WhenFull::Fail);
        let (to, class, delete, _) = summary(&decision);
        assert_eq!((to, class.as_deref(), delete), expected, "{state} + {fixture} at +{minutes}m: {decision:?}");
    };
    use JobState::*;
    check(SettingUp, "container-creating", 1, (None, None, false));
    check(SettingUp, "running", 1, (Some(Executing), None, false));
    check(Executing, "running", 1, (None, None, false));
    check(Executing, "running", 63, (Some(Failed), Some("deadline_exceeded"), true));
    check(SettingUp, "succeeded", 6, (Some(Succeeded), None, false));
    check(Executing, "succeeded", 6, (Some(Succeeded), None, false));
    check(Executing, "exit-code", 2, (Some(Failed), Some("exit_code"), false));
    check(Executing, "oom-killed", 2, (Some(Failed), Some("oom_killed"), false));
    check(Executing, "deadline-exceeded", 61, (Some(Failed), Some("deadline_exceeded"), false));
    check(Executing, "evicted", 30, (Some(Failed), Some("evicted"), false));
    check(Executing, "node-lost", 26, (Some(Failed), Some("node_lost"), false));
    check(Executing, "terminating", 26, (None, None, false));
    // Stuck pods get a grace period, then fail with the kubelet's words.
    check(SettingUp, "image-pull-backoff", 2, (None, None, false));
    check(SettingUp, "image-pull-backoff", 5, (Some(Failed), Some("image_pull"), true));
    check(SettingUp, "err-image-pull", 6, (Some(Failed), Some("image_pull"), true));
    check(SettingUp, "config-error", 6, (Some(Failed), Some("container_config"), true));
    check(SettingUp, "unschedulable", 10, (None, None, false));
    check(SettingUp, "unschedulable", 16, (Some(Failed), Some("unschedulable"), true));
    check(SettingUp, "container-creating", 31, (Some(Failed), Some("start_timeout"), true));
}

#[test]
fn a_failure_keeps_what_the_pod_said() {
    let decision = decide(
        &record(JobState::Executing, 1),
        &job(serde_json::json!({ "maxAttempts": 1 })),
        Some(&pod("exit-code")),
        minutes_later(2),
        &Thresholds::default(),
        TTL,
        WhenFull::Fail,
    );
    let [change] = writes(&decision) else { panic!("{decision:?}") };
    assert_eq!(change.exit_code, Some(3));
    assert_eq!(change.message, "the container exited with code 3");
    assert_eq!(change.termination_message.as_deref(), Some("loading input\nerror: no such table: sales\n"));
    assert_eq!(change.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
    assert!(change.expires_at.is_some(), "a final failure expires");
}

#[test]
fn stale_queued_jobs_are_dispatched_and_vanished_pods_fail() {
    let t = Thresholds::default();
    let job = default_job();
    assert_eq!(
        decide(&record(JobState::Queued, 1), &job, None, minutes_later(1), &t, TTL, WhenFull::Fail),
        Decision::Nothing
    );
    assert_eq!(
        decide(&record(JobState::Queued, 1), &job, None, minutes_later(3), &t, TTL, WhenFull::Fail),
        Decision::Dispatch
    );
    // The dispatcher created the pod but stopped before recording it.
    let found = decide(
        &record(JobState::Queued, 1),
        &job,
        Some(&pod("container-creating")),
        minutes_later(1),
        &t,
        TTL,
        WhenFull::Fail,
    );
    let [change] = writes(&found) else { panic!("{found:?}") };
    assert_eq!((change.to, change.pod_name.as_deref()), (JobState::SettingUp, Some("report-1")));
    // A pod deleted behind podbridge's back: retried by default.
    let vanished = decide(&record(JobState::Executing, 1), &job, None, minutes_later(1), &t, TTL, WhenFull::Fail);
    assert_eq!(summary(&vanished), (Some(JobState::Failed), Some("pod_vanished".into()), false, true));
}

#[test]
fn retries_follow_the_jobs_rules_and_stop_at_max_attempts() {
    let t = Thresholds::default();
    let check = |job: &Job, attempt: u32, fixture: &str, retried: bool| {
        let decision = decide(
            &record(JobState::Executing, attempt),
            job,
            Some(&pod(fixture)),
            minutes_later(30),
            &t,
            TTL,
            WhenFull::Fail,
        );
        assert_eq!(summary(&decision).3, retried, "attempt {attempt} + {fixture}: {decision:?}");
    };
    let defaults = default_job();
    check(&defaults, 1, "evicted", true);
    check(&defaults, 1, "node-lost", true);
    check(&defaults, 1, "exit-code", false);
    check(&defaults, 1, "oom-killed", false);
    check(&defaults, 3, "evicted", false);
    let custom = job(serde_json::json!({ "maxAttempts": 5, "on": ["oom_killed"], "exitCodes": [3] }));
    check(&custom, 1, "oom-killed", true);
    check(&custom, 1, "exit-code", true);
    check(&custom, 1, "evicted", false);
    check(&custom, 5, "exit-code", false);

    let decision = decide(
        &record(JobState::Executing, 1),
        &defaults,
        Some(&pod("evicted")),
        minutes_later(30),
        &t,
        TTL,
        WhenFull::Fail,
    );
    let [failed, retry] = writes(&decision) else { panic!("{decision:?}") };
    assert_eq!(failed.expires_at, None, "a failure that will be retried does not expire");
    assert!(failed.retry_pending, "and stays followed until its retry is written");
    assert_eq!((retry.expected, retry.to, retry.new_attempt), (JobState::Failed, JobState::Queued, Some(2)));
    assert_eq!(retry.message, "attempt 1 failed (evicted); attempt 2 starts in 30s");
    assert!(!retry.retry_pending);
}

#[test]
fn a_retry_owed_by_a_pass_that_stopped_after_the_failure_is_written_by_the_next() {
    let t = Thresholds::default();
    let defaults = default_job();
    let decision = decide(
        &record(JobState::Executing, 1),
        &defaults,
        Some(&pod("evicted")),
        minutes_later(30),
        &t,
        TTL,
        WhenFull::Fail,
    );
    let [failed, retry] = writes(&decision) else { panic!("an eviction is retried: {decision:?}") };
    let mut stopped = record(JobState::Executing, 1);
    stopped.apply(failed);
    assert!(stopped.retry_pending && stopped.is_followed(), "the failed record is still followed");

    // Whatever the old attempt's pod shows by then (still failed, or gone).
    for observed in [Some(pod("evicted")), None] {
        let decision = decide(&stopped, &defaults, observed.as_ref(), minutes_later(31), &t, TTL, WhenFull::Fail);
        let Decision::Write { changes, delete_pod: false } = &decision else { panic!("{decision:?}") };
        let [change] = changes.as_slice() else { panic!("{decision:?}") };
        assert_eq!((change.expected, change.to, change.new_attempt), (retry.expected, retry.to, retry.new_attempt));
        assert_eq!(change.message, retry.message);
    }
    let mut retried = stopped.clone();
    retried.apply(retry);
    assert!(!retried.retry_pending, "written: nothing more is owed");
}

#[test]
fn a_retry_waits_for_its_backoff() {
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 5, "backoffSeconds": 60, "maxBackoffSeconds": 200 }));
    assert_eq!([2, 3, 4, 5].map(|a| backoff(&job, a).as_secs()), [60, 120, 200, 200]);
    let mut queued = record(JobState::Queued, 2);
    queued.state_times.insert(JobState::Queued, at("2026-11-21T10:00:00Z"));
    assert_eq!(decide(&queued, &job, None, minutes_later(0), &t, TTL, WhenFull::Fail), Decision::Nothing);
    assert_eq!(decide(&queued, &job, None, minutes_later(1), &t, TTL, WhenFull::Fail), Decision::Dispatch);
}

#[test]
fn unclaimed_pods_are_kept_for_their_keep_time_and_orphans_for_the_grace() {
    use podbridge_core::reconcile::{Cleanup, cleanup};
    let t = Thresholds::default();
    let created = Some(at("2026-11-21T10:00:00Z"));
    let keep = Duration::from_secs(600);
    assert_eq!(cleanup(created, 1, true, None, keep, minutes_later(4), &t), Cleanup::Keep);
    assert!(matches!(cleanup(created, 1, true, None, keep, minutes_later(5), &t), Cleanup::Delete(_)));

    let mut done = record(JobState::Executing, 1);
    done.apply(&StateChange::new(
        JobState::Executing,
        1,
        JobState::Succeeded,
        at("2026-11-21T10:05:00Z"),
        "Completed",
        "ok",
    ));
    assert_eq!(cleanup(created, 1, true, Some(&done), keep, minutes_later(14), &t), Cleanup::Keep);
    assert!(matches!(cleanup(created, 1, true, Some(&done), keep, minutes_later(15), &t), Cleanup::Delete(_)));

    // The pod of attempt 1 while attempt 2 runs: kept for the keep time from the retry.
    let mut retried = record(JobState::Executing, 1);
    retried.apply(&StateChange::new(
        JobState::Executing,
        1,
        JobState::Failed,
        at("2026-11-21T10:01:00Z"),
        "Evicted",
        "x",
    ));
    let mut retry =
        StateChange::new(JobState::Failed, 1, JobState::Queued, at("2026-11-21T10:01:00Z"), "Retrying", "y");
    retry.new_attempt = Some(2);
    retried.apply(&retry);
    assert_eq!(cleanup(created, 1, true, Some(&retried), keep, minutes_later(10), &t), Cleanup::Keep);
    assert!(matches!(cleanup(created, 1, true, Some(&retried), keep, minutes_later(11), &t), Cleanup::Delete(_)));
    assert_eq!(
        cleanup(created, 2, true, Some(&retried), keep, minutes_later(60), &t),
        Cleanup::Keep,
        "the current attempt's pod"
    );
}

#[test]
fn an_ended_pod_within_the_keep_time_it_carries_is_kept_without_its_record() {
    use podbridge_core::pod::KEEP_SECONDS;
    use podbridge_core::reconcile::kept_by_its_own_word;
    let read = |name: &str| -> Pod {
        let path = format!("{}/tests/fixtures/pods/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // succeeded.json: its container finished at 10:05.
    let mut done = read("succeeded");
    let annotations = done.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(KEEP_SECONDS.to_owned(), "600".to_owned());
    assert!(kept_by_its_own_word(&done, minutes_later(14)), "finished 9 minutes ago, kept 10");
    assert!(!kept_by_its_own_word(&done, minutes_later(15)), "its keep time is up: the record decides");
    // Failed pods too (exit-code.json finished at 10:01).
    let mut failed = read("exit-code");
    failed.metadata.annotations.get_or_insert_with(Default::default).insert(KEEP_SECONDS.to_owned(), "600".to_owned());
    assert!(kept_by_its_own_word(&failed, minutes_later(10)));
    // What the pod does not say, the record must: no annotation (a pod of an earlier
    // release), a running pod, one being deleted, one whose containers never ended.
    assert!(!kept_by_its_own_word(&read("succeeded"), minutes_later(6)));
    assert!(!kept_by_its_own_word(&read("running"), minutes_later(1)));
    let mut deleting = done.clone();
    deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(minutes_later(6)));
    assert!(!kept_by_its_own_word(&deleting, minutes_later(6)));
    let mut no_end = done;
    no_end.status.as_mut().unwrap().container_statuses = None;
    assert!(!kept_by_its_own_word(&no_end, minutes_later(6)));
}

#[test]
fn infrastructure_failures_are_retried_by_default_and_the_jobs_own_are_not() {
    let t = Thresholds::default();
    let defaults = default_job();
    let check = |fixture: &str, class: &str, retried: bool| {
        let decision = decide(
            &record(JobState::Executing, 1),
            &defaults,
            Some(&pod(fixture)),
            minutes_later(30),
            &t,
            TTL,
            WhenFull::Fail,
        );
        let (_, decided_class, _, decided_retry) = summary(&decision);
        assert_eq!((decided_class.as_deref(), decided_retry), (Some(class), retried), "{fixture}: {decision:?}");
    };
    // Not the job's doing: another attempt has every chance.
    check("node-rejected-out-of-cpu", "node_rejected", true);
    check("node-rejected-node-affinity", "node_rejected", true);
    check("node-rejected-unexpected", "node_rejected", true);
    check("node-rejected-shutdown", "node_rejected", true);
    check("deleted-while-running", "pod_vanished", true);
    check("node-shutdown", "evicted", true);
    check("node-shutdown-1-21", "evicted", true);
    check("node-lost-legacy", "node_lost", true);
    check("unknown-failure", "unknown", true);
    // The job's own: the same pod would fail the same way.
    check("deleted-after-exit", "exit_code", false);
    check("sidecar-job-failed", "exit_code", false);
    check("start-error", "container_config", false);
    check("container-cannot-run", "container_config", false);
    check("init-failed", "init_container", false);
    check("evicted-storage-limit", "storage_limit", false);
}

#[test]
fn a_pod_that_outlives_its_jobs_container_is_deleted_once_the_end_is_recorded() {
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 1 }));
    let check = |fixture: &str, expected: (Option<JobState>, Option<&str>, bool)| {
        let decision = decide(
            &record(JobState::Executing, 1),
            &job,
            Some(&pod(fixture)),
            minutes_later(6),
            &t,
            TTL,
            WhenFull::Fail,
        );
        let (to, class, delete, _) = summary(&decision);
        assert_eq!((to, class.as_deref(), delete), expected, "{fixture}: {decision:?}");
    };
    check("sidecar-job-succeeded", (Some(JobState::Succeeded), None, true));
    check("sidecar-job-failed", (Some(JobState::Failed), Some("exit_code"), true));
    // Every container has ended; a sidecar's OOM kill is not the job's failure.
    check("sidecar-oom-job-succeeded", (Some(JobState::Succeeded), None, false));
}

#[test]
fn a_short_job_first_seen_finished_is_recorded_as_having_executed() {
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 1 }));
    for (fixture, end) in [("succeeded", JobState::Succeeded), ("exit-code", JobState::Failed)] {
        let decision = decide(
            &record(JobState::SettingUp, 1),
            &job,
            Some(&pod(fixture)),
            minutes_later(6),
            &t,
            TTL,
            WhenFull::Fail,
        );
        let [started, ended] = writes(&decision) else { panic!("{fixture}: {decision:?}") };
        assert_eq!((started.expected, started.to), (JobState::SettingUp, JobState::Executing), "{fixture}");
        assert_eq!(started.at, at("2026-11-21T10:00:08Z"), "{fixture}: when the container started");
        assert_eq!(started.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
        assert_eq!((ended.expected, ended.to), (JobState::Executing, end), "{fixture}");
        let mut record = record(JobState::SettingUp, 1);
        record.apply(started);
        record.apply(ended);
        assert_eq!(record.state_times.get(&JobState::Executing), Some(&at("2026-11-21T10:00:08Z")));
    }
    // A container that never started has not executed.
    for fixture in ["start-error", "init-failed", "node-rejected-out-of-cpu"] {
        let decision = decide(
            &record(JobState::SettingUp, 1),
            &job,
            Some(&pod(fixture)),
            minutes_later(6),
            &t,
            TTL,
            WhenFull::Fail,
        );
        let [failed] = writes(&decision) else { panic!("{fixture}: {decision:?}") };
        assert_eq!((failed.expected, failed.to), (JobState::SettingUp, JobState::Failed), "{fixture}");
    }
    // The start is recorded at the container's start time too when the pod is seen running.
    let decision =
        decide(&record(JobState::SettingUp, 1), &job, Some(&pod("running")), minutes_later(1), &t, TTL, WhenFull::Fail);
    let [started] = writes(&decision) else { panic!("{decision:?}") };
    assert_eq!(started.at, at("2026-11-21T10:00:08Z"));
}

#[test]
fn a_pod_that_cannot_mount_its_volumes_reads_its_events_after_stuck_after_and_fails() {
    use podbridge_core::observe::explain_with_events;
    use podbridge_core::reconcile::needs_events;
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 1 }));
    let setting_up = record(JobState::SettingUp, 1);
    let pending = pod("mount-pending");
    assert!(!needs_events(&setting_up, &pending, minutes_later(4), &t), "not before stuck_after");
    assert!(needs_events(&setting_up, &pending, minutes_later(5), &t));
    assert!(!needs_events(&setting_up, &pod("running"), minutes_later(5), &t), "a pod that says why needs none");
    assert!(!needs_events(&setting_up, &pod("unschedulable"), minutes_later(5), &t), "nor one not on a node");

    let path = format!("{}/tests/fixtures/events-failed-mount.json", env!("CARGO_MANIFEST_DIR"));
    let events: k8s_openapi::List<k8s_openapi::api::core::v1::Event> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let explained = explain_with_events(pending, &events.items);
    let decision = decide(&setting_up, &job, Some(&explained), minutes_later(5), &t, TTL, WhenFull::Fail);
    let [failed] = writes(&decision) else { panic!("{decision:?}") };
    assert_eq!(
        (failed.failure_class.map(FailureClass::as_str), failed.reason.as_str(), failed.message.as_str()),
        (
            Some("container_config"),
            "FailedMount",
            "MountVolume.SetUp failed for volume \"credentials\" : secret \"db-credentials\" not found"
        )
    );
    assert!(matches!(decision, Decision::Write { delete_pod: true, .. }));
}

#[test]
fn a_pod_still_running_after_its_attempt_ended_is_deleted_at_once() {
    use podbridge_core::reconcile::{Cleanup, cleanup};
    let t = Thresholds::default();
    let created = Some(at("2026-11-21T10:00:00Z"));
    let keep = Duration::from_secs(600);
    let mut cancelled = record(JobState::Executing, 1);
    cancelled.apply(&StateChange::new(JobState::Executing, 1, JobState::Cancelled, minutes_later(1), "Cancelled", "x"));
    // Still running (its delete failed, or sidecars outlive the job): deleted now.
    assert!(matches!(cleanup(created, 1, false, Some(&cancelled), keep, minutes_later(1), &t), Cleanup::Delete(_)));
    // Ended: kept for its keep time, for `kubectl logs`.
    assert_eq!(cleanup(created, 1, true, Some(&cancelled), keep, minutes_later(1), &t), Cleanup::Keep);
    // The current attempt of an active job is never the clean-up's.
    let running = record(JobState::Executing, 1);
    assert_eq!(cleanup(created, 1, false, Some(&running), keep, minutes_later(1), &t), Cleanup::Keep);
}

#[test]
fn a_pod_the_full_cluster_cannot_place_goes_back_to_wait_as_an_attempt_not_counted_as_failed() {
    let t = Thresholds::default();
    let job = job(serde_json::json!({ "maxAttempts": 1 }));
    let setting_up = record(JobState::SettingUp, 1);
    let decision = decide(&setting_up, &job, Some(&pod("unschedulable")), minutes_later(16), &t, TTL, WhenFull::Wait);
    let Decision::Write { changes, delete_pod: true } = &decision else { panic!("{decision:?}") };
    let [requeue] = changes.as_slice() else { panic!("{decision:?}") };
    assert_eq!(
        (requeue.to, requeue.reason.as_str(), requeue.new_attempt),
        (JobState::Queued, "RequeuedForCapacity", Some(2))
    );
    assert!(requeue.message.contains("Insufficient memory"), "{}", requeue.message);
    assert_eq!(requeue.failure_class, None, "not a failure");

    // Its next attempt is the first that counts: a failure of it is retried no more
    // than maxAttempts allows, and a second full cluster puts it back again.
    let mut requeued = setting_up.clone();
    requeued.apply(requeue);
    assert_eq!((requeued.attempt, requeued.counted_attempt()), (2, 1));
    let mut second = requeued.clone();
    let mut created =
        StateChange::new(JobState::Queued, 2, JobState::SettingUp, minutes_later(17), "PodCreated", "created");
    created.pod_name = Some("report-2".into());
    second.apply(&created);
    let again = decide(&second, &job, Some(&pod("unschedulable")), minutes_later(40), &t, TTL, WhenFull::Wait);
    assert_eq!(summary(&again), (Some(JobState::Queued), None, true, true));

    // A pod that fits no node is no matter of room: it fails as before.
    let never =
        decide(&setting_up, &job, Some(&pod("unschedulable-selector")), minutes_later(16), &t, TTL, WhenFull::Wait);
    assert_eq!(summary(&never), (Some(JobState::Failed), Some("unschedulable".into()), true, false));
    // And a queue that asked to fail fast fails.
    let fast = decide(&setting_up, &job, Some(&pod("unschedulable")), minutes_later(16), &t, TTL, WhenFull::Fail);
    assert_eq!(summary(&fast), (Some(JobState::Failed), Some("unschedulable".into()), true, false));
}

#[test]
fn a_waiting_job_is_left_to_admission() {
    let t = Thresholds::default();
    let mut waiting = record(JobState::Queued, 1);
    waiting.reason = Some("Waiting".into());
    assert!(waiting.is_waiting());
    let decision = decide(&waiting, &default_job(), None, minutes_later(30), &t, TTL, WhenFull::Wait);
    assert_eq!(decision, Decision::Nothing, "never dispatched past its queue's limits");
}
