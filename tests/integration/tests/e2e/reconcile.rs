//! Message → dispatch → kube-sim drives the pod to an outcome → reconcile passes (or the
//! reconciler's watch) → the record, and the job state change events a subscriber gets
//! through an EventBridge rule and an SQS queue, are what a user would expect. moto (the
//! stack's) for DynamoDB, EventBridge and SQS, a kube-sim per test, pods choosing their
//! fate through the `KUBE_SIM_BEHAVIOR` env var of the job.

use std::ops::Deref;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube_sim::{SimConfig, Timings};
use podbridge::store::JobStore;
use podbridge_core::reconcile::Thresholds;
use podbridge_core::record::{JobRecord, Source};
use podbridge_core::state::JobState;
use podbridge_core::validate::Guardrails;
use podbridge_tests::Journaled;
use serde_json::{Value, json};

pub(crate) const NAMESPACE: &str = "podbridge-jobs";

/// The shared world with a journaled store, as the functions', and what this file and
/// `failures` add to it.
pub(crate) struct World(podbridge_tests::World<Journaled>);

impl Deref for World {
    type Target = podbridge_tests::World<Journaled>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub(crate) async fn world() -> World {
    let config = SimConfig {
        namespaces: vec![NAMESPACE.into()],
        timings: Timings {
            schedule: Duration::from_millis(5),
            start: Duration::from_millis(5),
            pull: Duration::from_millis(10),
            pull_backoff: Duration::from_millis(50),
            run: Some(Duration::from_millis(200)),
            termination: Duration::from_millis(20),
            pod_gc: Duration::from_millis(100),
        },
        ..SimConfig::default()
    };
    let guardrails = Guardrails {
        image_prefixes: vec!["registry.example.com/".into()],
        max_cpu_millis: 64_000,
        node_selector_keys: vec!["kubernetes.io/hostname".into()],
        ..Guardrails::default()
    };
    let thresholds = Thresholds {
        redispatch_after: Duration::ZERO,
        stuck_after: Duration::from_millis(300),
        unschedulable_after: Duration::from_millis(300),
        start_limit: Duration::from_secs(10),
        deadline_grace: Duration::from_secs(1),
        orphan_grace: Duration::from_millis(500),
    };
    let world = podbridge_tests::World::builder()
        .own_cluster(config)
        .guardrails(guardrails)
        .thresholds(thresholds)
        .journaled()
        .build()
        .await;
    World(world)
}

/// A job whose pod behaves as `behavior` says (kube-sim's terms), with `extra` fields.
pub(crate) fn message(id: &str, behavior: &str, extra: Value) -> String {
    let mut job = json!({
        "id": id,
        "image": "registry.example.com/batch/work:1",
        "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior }],
        "retry": { "backoffSeconds": 0, "maxBackoffSeconds": 0 }
    });
    for (key, value) in extra.as_object().unwrap() {
        job[key] = value.clone();
    }
    json!({ "version": 1, "job": job }).to_string()
}

impl World {
    /// Asserts that a subscriber got one event per transition in the record's history,
    /// the last one carrying what the record says about the outcome.
    pub(crate) async fn assert_announced(&self, record: &JobRecord) {
        let events = self.events_of(&record.job_id).await;
        let transitions: Vec<(Value, Value)> =
            events.iter().map(|e| (e["previousState"].clone(), e["state"].clone())).collect();
        let history: Vec<(Value, Value)> = record.history.iter().map(|t| (json!(t.from), json!(t.to))).collect();
        assert_eq!(transitions, history, "one event per transition of {}", record.job_id);
        let last = events.last().expect("at least one event");
        assert_eq!(last["attempt"], json!(record.attempt));
        assert_eq!(last["failureClass"], json!(record.failure_class));
        assert_eq!(last["exitCode"], json!(record.exit_code));
        assert_eq!(last["podName"], json!(record.pod_name));
        assert_eq!(last["namespace"], json!(NAMESPACE));
    }
}

pub(crate) fn states(record: &JobRecord) -> Vec<JobState> {
    record.history.iter().map(|t| t.to).collect()
}

#[tokio::test]
async fn given_a_job_that_succeeds_when_reconciled_then_the_record_follows_it_to_succeeded() {
    let world = world().await;
    world.submit(&message("ok", "run=300ms", json!({}))).await;

    let record = world.reconcile_until("ok", JobState::Succeeded).await;

    assert_eq!(record.exit_code, Some(0));
    assert!(record.node.as_deref().is_some_and(|n| n.starts_with("kube-sim-node-")), "{:?}", record.node);
    assert_eq!(states(&record).first(), Some(&JobState::Queued));
    assert!(states(&record).contains(&JobState::Executing), "the running state was seen: {:?}", states(&record));
    assert!(record.expires_at.is_some());
    assert!(record.state_times.contains_key(&JobState::Succeeded));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_non_zero_exit_when_reconciled_then_failed_with_the_code_and_the_last_log_lines() {
    let world = world().await;
    world.submit(&message("exit3", "run=100ms,exit=3,lines=2", json!({}))).await;

    let record = world.reconcile_until("exit3", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("exit_code"));
    assert_eq!(record.exit_code, Some(3));
    let tail = record.termination_message.clone().unwrap_or_default();
    assert!(tail.ends_with("kube-sim: line 2 of 2\nkube-sim: exiting with code 3"), "{tail:?}");
    assert_eq!(world.pods_created_for("exit3"), ["exit3-1"], "an application failure is not retried by default");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_an_oom_when_reconciled_then_failed_as_oom_killed() {
    let world = world().await;
    world.submit(&message("oom", "run=50ms,oom", json!({}))).await;
    let record = world.reconcile_until("oom", JobState::Failed).await;
    assert_eq!((record.failure_class.map(|c| c.as_str()), record.exit_code), (Some("oom_killed"), Some(137)));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_an_image_that_cannot_be_pulled_when_reconciled_then_failed_and_the_pod_deleted() {
    let world = world().await;
    world.submit(&message("nopull", "pull=fail", json!({}))).await;

    let record = world.reconcile_until("nopull", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("image_pull"));
    let message = record.message.clone().unwrap_or_default();
    assert!(message.contains("busybox") || message.contains("registry.example.com/batch/work:1"), "{message}");
    let pod = world.pods().get_opt("nopull-1").await.unwrap();
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the stuck pod is deleted");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_an_eviction_when_reconciled_then_the_job_is_retried_until_its_attempts_run_out() {
    let world = world().await;
    world
        .submit(&message(
            "evicted",
            "run=forever,evict=100ms",
            json!({ "retry": { "maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0 } }),
        ))
        .await;

    let record = world.reconcile_until("evicted", JobState::Failed).await;
    let record = if record.attempt < 2 { world.reconcile_until_attempt("evicted", 2).await } else { record };

    assert_eq!(record.attempt, 2);
    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("evicted"));
    assert_eq!(world.pods_created_for("evicted"), ["evicted-1", "evicted-2"], "one pod per attempt");
    let attempts: Vec<u32> = record.history.iter().map(|t| t.attempt).collect();
    assert!(attempts.contains(&1) && attempts.contains(&2), "history keeps both attempts: {attempts:?}");
    assert!(record.history.iter().any(|t| t.reason == "Retrying"));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_pod_deleted_behind_podbridges_back_when_reconciled_then_failed_as_vanished() {
    let world = world().await;
    world.submit(&message("gone", "run=forever", json!({ "retry": { "maxAttempts": 1 } }))).await;
    world.reconcile_until("gone", JobState::Executing).await;
    world.pods().delete("gone-1", &DeleteParams::default().grace_period(0)).await.unwrap();

    let record = world.reconcile_until("gone", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("pod_vanished"));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_job_recorded_but_never_dispatched_when_reconciled_then_its_pod_is_created_once() {
    let world = world().await;
    // What a dispatcher that died right after recording the job left behind.
    let body = message("stale", "run=forever", json!({}));
    let guardrails = world.submitter.guardrails().clone();
    let podbridge_core::validate::Parsed::Job(job) =
        podbridge_core::validate::parse_message(body.as_bytes(), "x", &guardrails).unwrap()
    else {
        unreachable!()
    };
    let mut record =
        JobRecord::new("stale", JobState::Queued, Source::Direct, jiff::Timestamp::now(), "Submitted", "queued");
    record.spec = Some(serde_json::to_value(&*job).unwrap());
    record.namespace = Some(NAMESPACE.into());
    world.store.create(&record).await.unwrap();

    let record = world.reconcile_until("stale", JobState::Executing).await;

    assert_eq!(record.pod_name.as_deref(), Some("stale-1"));
    for _ in 0..3 {
        world.pass().await;
    }
    assert_eq!(world.pods_created_for("stale"), ["stale-1"]);
}

#[tokio::test]
async fn given_nothing_changed_when_a_pass_runs_then_it_writes_nothing() {
    let world = world().await;
    world.submit(&message("steady", "run=forever", json!({}))).await;
    world.reconcile_until("steady", JobState::Executing).await;

    let report = world.pass().await;

    assert_eq!((report.active_jobs, report.writes, report.errors), (1, 0, 0));
    assert_eq!(report.kube_list_requests, 1, "one LIST for the namespace");
}

impl World {
    /// Runs passes until the job's attempt reaches `attempt` and it is failed again.
    pub(crate) async fn reconcile_until_attempt(&self, job_id: &str, attempt: u32) -> JobRecord {
        for _ in 0..300 {
            self.pass().await;
            let record = self.recorded(job_id).await;
            if record.attempt == attempt && record.state == JobState::Failed {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{job_id} never ended attempt {attempt}: {:#?}", self.recorded(job_id).await);
    }
}

#[tokio::test]
async fn given_finished_and_orphan_pods_when_their_time_passes_then_they_are_deleted_and_the_record_stays() {
    let world = world().await;
    world.submit(&message("brief", "run=50ms", json!({ "keepPodSeconds": 0 }))).await;
    world.submit(&message("kept", "run=50ms", json!({ "keepPodSeconds": 3600 }))).await;
    world.reconcile_until("brief", JobState::Succeeded).await;
    world.reconcile_until("kept", JobState::Succeeded).await;
    // A pod with podbridge's labels that no record knows (a dispatcher died before recording).
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": { "name": "orphan-1", "labels": {
            "app.kubernetes.io/managed-by": "podbridge", "podbridge.dev/job-id": "orphan", "podbridge.dev/attempt": "1" } },
        "spec": { "containers": [{ "name": "job", "image": "registry.example.com/x", "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=forever" }] }] }
    }))
    .unwrap();
    world.pods().create(&Default::default(), &orphan).await.unwrap();
    // One more active job, so passes list the namespace.
    world.submit(&message("anchor", "run=forever", json!({}))).await;

    let mut gone = false;
    for _ in 0..100 {
        world.pass().await;
        let brief = world.pods().get_opt("brief-1").await.unwrap();
        let orphan = world.pods().get_opt("orphan-1").await.unwrap();
        if brief.is_none() && orphan.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the finished pod past its keep time and the orphan are deleted");
    assert!(world.pods().get_opt("kept-1").await.unwrap().is_some(), "a pod within its keep time stays");
    let record = world.recorded("brief").await;
    assert_eq!(
        (record.state, record.exit_code),
        (JobState::Succeeded, Some(0)),
        "the record keeps what was worth knowing"
    );
}

#[tokio::test]
async fn given_a_pod_no_node_can_hold_when_submitted_then_rejected_naming_both_sizes() {
    let world = world().await;
    let body = message("huge", "run=forever", json!({ "resources": { "cpu": "32" }, "retry": { "maxAttempts": 1 } }));
    world.submit(&body).await;

    let record = world.recorded("huge").await;
    assert_eq!(record.state, JobState::Rejected, "never left to wait for room that cannot come");
    let message = record.message.clone().unwrap_or_default();
    assert!(
        message.contains("it requests 32 CPU and the largest node the cluster has or can add has 4 CPU"),
        "{message}"
    );
    assert!(world.pods_created_for("huge").is_empty());
}

#[tokio::test]
async fn given_a_pod_no_node_matches_when_reconciled_then_failed_as_unschedulable_with_the_schedulers_words() {
    let world = world().await;
    let selector =
        json!({ "nodeSelector": { "kubernetes.io/hostname": "no-such-node" }, "retry": { "maxAttempts": 1 } });
    world.submit(&message("nowhere", "run=forever", selector)).await;

    let record = world.reconcile_until("nowhere", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("unschedulable"));
    let message = record.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        "{message}"
    );
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_job_past_its_timeout_when_reconciled_then_failed_as_deadline_exceeded() {
    let world = world().await;
    world.submit(&message("slow", "run=forever", json!({ "timeoutSeconds": 1, "retry": { "maxAttempts": 1 } }))).await;

    let record = world.reconcile_until("slow", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("deadline_exceeded"));
    assert_eq!(record.message.as_deref(), Some("Pod was active on the node longer than the specified deadline"));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_container_that_cannot_be_created_when_reconciled_then_failed_as_container_config() {
    let world = world().await;
    world.submit(&message("noconfig", "config-error", json!({ "retry": { "maxAttempts": 1 } }))).await;

    let record = world.reconcile_until("noconfig", JobState::Failed).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("container_config"));
    assert_eq!(record.reason.as_deref(), Some("CreateContainerConfigError"));
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_an_oom_kill_and_a_memory_factor_when_retried_then_the_next_attempt_gets_more_memory() {
    let world = world().await;
    let retry = json!({ "maxAttempts": 2, "on": ["oom_killed"], "oomMemoryFactor": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0 });
    world
        .submit(&message("hungry", "run=50ms,oom", json!({ "resources": { "memory": "512Mi" }, "retry": retry })))
        .await;

    let record = world.reconcile_until_attempt("hungry", 2).await;

    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("oom_killed"), "the last attempt's cause is kept");
    assert_eq!(world.pods_created_for("hungry"), ["hungry-1", "hungry-2"]);
    let memory = |pod: Pod| {
        let resources = pod.spec.unwrap().containers[0].resources.clone().unwrap();
        let get = |map: Option<
            std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| { map.unwrap()["memory"].0.clone() };
        (get(resources.requests), get(resources.limits))
    };
    let first = world.pods().get("hungry-1").await.unwrap();
    let second = world.pods().get("hungry-2").await.unwrap();
    assert_eq!(memory(first), ("512Mi".to_owned(), "512Mi".to_owned()));
    assert_eq!(memory(second), ("1Gi".to_owned(), "1Gi".to_owned()), "twice the memory after the OOM kill");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_pass_done_when_the_reconciler_follows_the_pods_then_the_end_reaches_the_record_without_another_pass() {
    let world = world().await;
    // Long enough that the pass, made just after the job is seen running, still finds
    // it running on a loaded machine.
    world.submit(&message("followed", "run=2s", json!({}))).await;
    world.reconcile_until("followed", JobState::Executing).await;

    // One pass, then only the watch: its windows flush events as the function does.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let (pass, followed) = world
        .reconciler
        .run(&[NAMESPACE.to_owned()], until, async |_| {
            world.store.flush().await;
        })
        .await
        .unwrap();

    let record = world.recorded("followed").await;
    assert_eq!(record.state, JobState::Succeeded, "{followed:?}");
    assert_eq!(pass.recorded.get(&JobState::Succeeded), None, "the pass saw the job still running");
    assert!(followed.writes >= 1 && followed.watches >= 1, "the watch recorded the end: {followed:?}");
    assert_eq!(followed.relists, 0, "the watch started from the pass's list");
    assert_eq!(followed.latencies.len(), 1, "one state latency measured: {followed:?}");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_watch_history_compacted_when_the_reconciler_follows_then_it_lists_again_and_misses_nothing() {
    let world = world().await;
    world.submit(&message("compacted", "run=300ms", json!({}))).await;
    let pass = world.pass().await;
    let mut watches = pass.watches();
    assert!(watches.contains_key(NAMESPACE), "the pass listed the job's namespace: {watches:?}");
    // The job ends, and the API server forgets the changes since the pass's list.
    podbridge_tests::eventually("the pod to succeed", Duration::from_secs(10), Duration::from_millis(50), || async {
        let pod = world.pods().get("compacted-1").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    world.sim().compact();

    let followed = world.reconciler.follow(&mut watches, Duration::from_secs(2)).await;
    world.store.flush().await;

    assert_eq!(followed.relists, 1, "410 Expired, then one list: {followed:?}");
    let record = world.recorded("compacted").await;
    assert_eq!(record.state, JobState::Succeeded, "the change the lost watch missed was applied");
    world.assert_announced(&record).await;
}

#[tokio::test]
async fn given_a_node_lost_under_a_running_job_when_followed_then_failed_as_node_lost() {
    let world = world().await;
    world.submit(&message("stranded", "run=forever", json!({ "retry": { "maxAttempts": 1 } }))).await;
    let record = world.reconcile_until("stranded", JobState::Executing).await;
    let mut watches = world.pass().await.watches();

    assert!(world.sim().lose_node(record.node.as_deref().expect("the pod's node")));
    let mut record = record;
    for _ in 0..10 {
        world.reconciler.follow(&mut watches, Duration::from_secs(1)).await;
        world.store.flush().await;
        record = world.recorded("stranded").await;
        if record.state.is_terminal() {
            break;
        }
    }

    assert_eq!(
        (record.state, record.failure_class.map(|c| c.as_str())),
        (JobState::Failed, Some("node_lost")),
        "{record:#?}"
    );
    assert_eq!(record.reason.as_deref(), Some("DeletionByTaintManager"));
    world.assert_announced(&record).await;
}

impl World {
    /// A running job whose pod vanished, and a reconciler that recorded the failure (a
    /// retry owed) but stopped before writing the retry, as a function timing out
    /// between its two writes would. Returns the failed record.
    async fn owe_retry(&self, job_id: &str) -> JobRecord {
        use podbridge_core::record::StateChange;
        let retry = json!({ "maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0 });
        self.submit(&message(job_id, "run=forever", json!({ "retry": retry }))).await;
        let running = self.reconcile_until(job_id, JobState::Executing).await;
        self.pods().delete(&format!("{job_id}-1"), &DeleteParams::default().grace_period(0)).await.unwrap();
        let mut failed = StateChange::new(
            JobState::Executing,
            1,
            JobState::Failed,
            jiff::Timestamp::now(),
            "PodVanished",
            "the pod was deleted by something other than podbridge",
        );
        failed.failure_class = Some(podbridge_core::FailureClass::PodVanished);
        failed.retry_pending = true;
        self.store.change(&running.job_id, &failed).await.expect("the failure is recorded");
        self.recorded(job_id).await
    }
}

/// GIVEN a job whose failure is recorded with its retry owed (the reconciler stopped
/// between its two writes)
/// WHEN the next pass runs
/// THEN the failed record was still in the active index, without an expiry, and the
/// pass starts attempt 2 as the policy says: one pod per attempt, the history whole.
#[tokio::test]
async fn given_a_reconciler_stopped_between_a_failure_and_its_retry_when_the_next_pass_runs_then_the_retry_is_written()
{
    let world = world().await;
    let owed = world.owe_retry("halfway").await;
    let active = world.store.active(100, None).await.expect("the active index").jobs;

    assert!(active.iter().any(|job| job.job_id == "halfway" && job.state == JobState::Failed), "{active:?}");
    assert_eq!((owed.retry_pending, owed.expires_at), (true, None), "followed, and never expired");
    world.pass().await;
    let record = world.recorded("halfway").await;
    assert_eq!(record.attempt, 2, "the owed retry was written: {record:#?}");
    assert!(!record.retry_pending);
    let moves: Vec<(JobState, u32, &str)> =
        record.history.iter().map(|t| (t.to, t.attempt, t.reason.as_str())).collect();
    assert!(
        moves.contains(&(JobState::Failed, 1, "PodVanished")) && moves.contains(&(JobState::Queued, 2, "Retrying")),
        "{moves:?}"
    );
    let record = world.reconcile_until("halfway", JobState::Executing).await;
    assert_eq!(record.attempt, 2);
    assert_eq!(world.pods_created_for("halfway"), ["halfway-1", "halfway-2"], "one pod per attempt");
}

/// GIVEN a job whose failure is recorded with its retry owed
/// WHEN it is cancelled before the next pass
/// THEN it is cancelled, leaves the active index, and the pass starts no attempt 2.
#[tokio::test]
async fn given_a_failure_whose_retry_is_owed_when_the_job_is_cancelled_then_no_retry_runs() {
    let world = world().await;
    world.owe_retry("called-off").await;

    let outcome = world
        .submitter
        .cancel("called-off", None, "not needed", Source::Direct, &podbridge_core::tenancy::Sender::Operator)
        .await
        .unwrap();
    world.pass().await;

    assert_eq!(outcome, podbridge::services::Outcome::Cancelled { job_id: "called-off".into() });
    let record = world.recorded("called-off").await;
    assert_eq!((record.state, record.attempt, record.retry_pending), (JobState::Cancelled, 1, false));
    assert!(record.expires_at.is_some(), "an ended job expires");
    let active = world.store.active(100, None).await.expect("the active index").jobs;
    assert!(active.iter().all(|job| job.job_id != "called-off"), "{active:?}");
    assert_eq!(world.pods_created_for("called-off"), ["called-off-1"], "no second attempt");
}
