//! Reconcile decisions: what to do about one active job, given its record, its pod as
//! observed (or its absence) and the time. A pure function, so every rule is tested
//! with plain values; the reconcile function only gathers inputs and carries out the
//! decision with conditional writes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

use crate::failure::FailureClass;
use crate::observe::{Observed, PodView};
use crate::record::{JobRecord, StateChange, expires_at};
use crate::state::JobState;
use crate::validate::Job;

/// How long podbridge waits before it calls a job stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// A first attempt still `queued` with no pod this long after it was recorded: the
    /// dispatcher died between two steps, so the reconciler dispatches it.
    pub redispatch_after: Duration,
    /// Image pull failures and container configuration errors this long after the pod
    /// was created fail the attempt (the kubelet would retry them forever).
    pub stuck_after: Duration,
    /// Unschedulable this long (long enough for the autoscaler to add a node).
    pub unschedulable_after: Duration,
    /// `setting_up` this long, for any other reason.
    pub start_limit: Duration,
    /// How far past its timeout a running job may go (by podbridge's clock) before it is
    /// failed even if the kubelet has not enforced `activeDeadlineSeconds`.
    pub deadline_grace: Duration,
    /// A managed pod with no job record this long after its creation is an orphan
    /// (created by a dispatcher that died before recording, or left from a deleted
    /// record) and is deleted.
    pub orphan_grace: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            redispatch_after: Duration::from_secs(120),
            stuck_after: Duration::from_secs(300),
            unschedulable_after: Duration::from_secs(900),
            start_limit: Duration::from_secs(1800),
            deadline_grace: Duration::from_secs(120),
            orphan_grace: Duration::from_secs(300),
        }
    }
}

/// What to do with an attempt whose pod the scheduler cannot place for lack of room,
/// once `unschedulable_after` has passed (its queue's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the pod and put the job back to wait for room, as a new attempt that is
    /// not counted as failed.
    Wait,
    /// Fail the attempt as `unschedulable` (and retry it if its rules say so).
    Fail,
}

/// What to do about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The record is true to the pod; nothing to write.
    Nothing,
    /// Create the pod of the current attempt (idempotent: the name is fixed).
    Dispatch,
    /// Apply `changes` in order, each a conditional write that expects the state the
    /// one before it wrote (so the first that finds the job moved stops the rest); then,
    /// when `delete_pod`, delete the attempt's pod. The record is written first: a pod
    /// podbridge deletes is never seen by it as deleted by someone else, and a pod left
    /// running by a failed delete belongs to no active attempt, so the next pass's
    /// clean-up deletes it.
    Write { changes: Vec<StateChange>, delete_pod: bool },
}

impl Decision {
    fn write(changes: Vec<StateChange>, delete_pod: bool) -> Self {
        Self::Write { changes, delete_pod }
    }
}

/// The wait before `attempt` (2 or more): `backoff × 2^(attempt − 2)`, capped.
pub fn backoff(job: &Job, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(2).min(32);
    let seconds = job.retry.backoff_seconds.saturating_mul(1u64 << doublings).min(job.retry.max_backoff_seconds);
    Duration::from_secs(seconds)
}

/// Whether the job's rules give a failed attempt another try.
pub fn should_retry(job: &Job, attempt: u32, class: FailureClass, exit_code: Option<i32>) -> bool {
    if attempt >= job.retry.max_attempts {
        return false;
    }
    job.retry.on.contains(&class)
        || (class == FailureClass::ExitCode && exit_code.is_some_and(|code| job.retry.exit_codes.contains(&code)))
}

fn since(now: Timestamp, then: Option<Timestamp>) -> Duration {
    then.map_or(Duration::ZERO, |t| now.duration_since(t).unsigned_abs())
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// When the current attempt may start: at once for the first, after the back-off for
/// a retry (counted from when it was queued).
pub fn not_before(record: &JobRecord, job: &Job) -> Timestamp {
    let queued = record.state_times.get(&JobState::Queued).copied().unwrap_or(record.updated_at);
    if record.attempt <= 1 {
        queued
    } else {
        queued.saturating_add(signed(backoff(job, record.attempt))).unwrap_or(queued)
    }
}

/// The change that starts the attempt after `attempt`, which failed with `class`.
fn retry_change(attempt: u32, job: &Job, class: &str, now: Timestamp) -> StateChange {
    let next = attempt + 1;
    let wait = backoff(job, next);
    let message = format!("attempt {attempt} failed ({class}); attempt {next} starts in {}s", wait.as_secs());
    let mut retry = StateChange::new(JobState::Failed, attempt, JobState::Queued, now, "Retrying", &message);
    retry.new_attempt = Some(next);
    retry
}

/// The changes of one decision, each expecting the state the one before it wrote.
struct Steps {
    from: JobState,
    attempt: u32,
    expires_at: i64,
    changes: Vec<StateChange>,
}

impl Steps {
    fn new(record: &JobRecord, now: Timestamp, record_ttl: Duration) -> Self {
        Self {
            from: record.state,
            attempt: record.attempt,
            expires_at: expires_at(now, record_ttl),
            changes: Vec::new(),
        }
    }

    fn push(&mut self, to: JobState, at: Timestamp, reason: &str, message: &str) -> &mut StateChange {
        let mut change = StateChange::new(self.from, self.attempt, to, at, reason, message);
        if to.is_terminal() {
            change.expires_at = Some(self.expires_at);
        }
        self.from = to;
        self.changes.push(change);
        self.changes.last_mut().unwrap_or_else(|| unreachable!("a change was just pushed"))
    }

    fn into_decision(self, delete_pod: bool) -> Decision {
        Decision::write(self.changes, delete_pod)
    }
}

/// When the job's container started, as the record should say: its real start time,
/// but never before the attempt was set up nor after `now`.
fn start_time(record: &JobRecord, started_at: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let setting_up = record.state_times.get(&JobState::SettingUp).copied().unwrap_or(record.updated_at);
    started_at.unwrap_or(now).max(setting_up).min(now)
}

/// Decides about one job the reconciler follows: an active one, or a failed one whose
/// retry is owed ([`JobRecord::retry_pending`]).
pub fn decide(
    record: &JobRecord,
    job: &Job,
    pod: Option<&Observed>,
    now: Timestamp,
    thresholds: &Thresholds,
    record_ttl: Duration,
    when_full: WhenFull,
) -> Decision {
    let mut steps = Steps::new(record, now, record_ttl);
    let node = pod.and_then(|p| p.node.clone());
    // A job whose container ran but was first seen by podbridge after it ended (a short
    // job between two looks) still executed: record when, before its end.
    let ran = |steps: &mut Steps| {
        if let Some(started_at) = pod.and_then(|p| p.started_at)
            && steps.from == JobState::SettingUp
        {
            let started = steps.push(
                JobState::Executing,
                start_time(record, Some(started_at), now),
                "Started",
                "the container is running",
            );
            started.node.clone_from(&node);
        }
    };
    let fail = |mut steps: Steps,
                class: FailureClass,
                exit_code: Option<i32>,
                reason: &str,
                message: &str,
                delete_pod: bool| {
        let retry = should_retry(job, record.counted_attempt(), class, exit_code);
        let failed = steps.push(JobState::Failed, now, reason, message);
        failed.failure_class = Some(class);
        failed.exit_code = exit_code;
        failed.node.clone_from(&node);
        failed.termination_message = pod.and_then(|p| p.termination_message.clone());
        if retry {
            // No expiry, and the job stays followed until its retry is written.
            failed.expires_at = None;
            failed.retry_pending = true;
            steps.changes.push(retry_change(record.attempt, job, class.as_str(), now));
        }
        steps.into_decision(delete_pod)
    };
    // The failure was recorded and its retry decided, but not written (the reconciler
    // stopped between the two writes): write it now, whatever the pod says.
    if record.retry_pending && record.state == JobState::Failed {
        let class = record.failure_class.map_or("failed", FailureClass::as_str);
        return Decision::write(vec![retry_change(record.attempt, job, class, now)], false);
    }
    let setting_up_since = record.state_times.get(&JobState::SettingUp).copied();

    match (record.state, pod) {
        // Admission starts it when its queue has room (`admission::admit`).
        (JobState::Queued, None) if record.is_waiting() => Decision::Nothing,
        (JobState::Queued, None) => {
            let due = if record.attempt <= 1 {
                since(now, Some(not_before(record, job))) >= thresholds.redispatch_after
            } else {
                now >= not_before(record, job)
            };
            if due { Decision::Dispatch } else { Decision::Nothing }
        }
        // The pod exists but the record never moved on (a dispatcher stopped in between).
        (JobState::Queued, Some(_)) => {
            let found =
                steps.push(JobState::SettingUp, now, "PodFound", "the attempt's pod exists; the record caught up");
            found.pod_name = Some(crate::pod::pod_name(&job.id, record.attempt));
            steps.into_decision(false)
        }
        (_, None) => fail(
            steps,
            FailureClass::PodVanished,
            None,
            "PodVanished",
            "the pod was deleted by something other than podbridge",
            false,
        ),
        (state, Some(observed)) => match &observed.view {
            PodView::Succeeded { .. } => {
                ran(&mut steps);
                let done = steps.push(JobState::Succeeded, now, "Completed", "the container exited with code 0");
                done.exit_code = Some(0);
                done.node.clone_from(&node);
                steps.into_decision(observed.outlives_job)
            }
            PodView::Failed { class, exit_code, reason, message } => {
                ran(&mut steps);
                fail(steps, *class, *exit_code, reason, message, observed.outlives_job)
            }
            PodView::Running { started_at } => {
                let timeout = Duration::from_secs(job.timeout_seconds) + thresholds.deadline_grace;
                if since(now, *started_at) > timeout {
                    ran(&mut steps);
                    let message = format!("ran past its timeout of {}s (by podbridge's clock)", job.timeout_seconds);
                    fail(steps, FailureClass::DeadlineExceeded, None, "DeadlineExceeded", &message, true)
                } else if state == JobState::SettingUp {
                    let at = start_time(record, *started_at, now);
                    let started = steps.push(JobState::Executing, at, "Started", "the container is running");
                    started.node.clone_from(&node);
                    steps.into_decision(false)
                } else {
                    Decision::Nothing
                }
            }
            PodView::Stuck { class, reason, message } if since(now, setting_up_since) >= thresholds.stuck_after => {
                fail(steps, *class, None, reason, message, true)
            }
            PodView::Unschedulable { since: unschedulable_since, message }
                if since(now, unschedulable_since.or(setting_up_since)) >= thresholds.unschedulable_after =>
            {
                if when_full == WhenFull::Wait && crate::observe::is_for_capacity(message) {
                    let next = record.attempt + 1;
                    let waited = since(now, unschedulable_since.or(setting_up_since)).as_secs();
                    let text = format!(
                        "the cluster had no room for the pod for {waited}s ({message}); attempt {next} waits for room"
                    );
                    let requeue = steps.push(JobState::Queued, now, crate::record::REQUEUED, &text);
                    requeue.new_attempt = Some(next);
                    steps.into_decision(true)
                } else {
                    fail(steps, FailureClass::Unschedulable, None, "Unschedulable", message, true)
                }
            }
            _ if since(now, setting_up_since) >= thresholds.start_limit => {
                let message = format!("the pod did not start within {}s", thresholds.start_limit.as_secs());
                fail(steps, FailureClass::StartTimeout, None, "StartTimeout", &message, true)
            }
            _ => Decision::Nothing,
        },
    }
}

/// Whether the reconciler should read the pod's events before deciding: the pod says
/// only that it is starting, and has done so for as long as a stuck pod may
/// (`stuck_after`), so the kubelet's events (a volume that cannot be mounted) may say
/// why. Few pods ever qualify, so events are read only for them.
pub fn needs_events(record: &JobRecord, observed: &Observed, now: Timestamp, thresholds: &Thresholds) -> bool {
    record.state == JobState::SettingUp
        && crate::observe::wants_events(observed)
        && since(now, record.state_times.get(&JobState::SettingUp).copied()) >= thresholds.stuck_after
}

/// What to do with a managed pod that belongs to no active job attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Keep,
    /// Delete it; the reason, for the log.
    Delete(&'static str),
}

/// Whether an ended pod is still within its keep time by what the pod itself says: its
/// `keep-pod-seconds` annotation ([`crate::pod::KEEP_SECONDS`]) and when its containers
/// finished. A pod that ends by itself is recorded after it ended, and a next attempt
/// is queued after that, so [`cleanup`] would keep it for as long too: the pass keeps it
/// without reading the record. (An attempt whose record ended first, a cancel or a
/// timeout, deletes its pod, and a pod being deleted is not kept here; an orphan is kept
/// for its annotation's time before the orphan rule applies.) Anything else (a pod still
/// running, or that does not say) is `false`: read its record.
pub fn kept_by_its_own_word(pod: &Pod, now: Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if !matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let keep = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::pod::KEEP_SECONDS))
        .and_then(|v| v.parse::<u64>().ok());
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    match (keep, finished) {
        (Some(keep), Some(finished)) => since(now, Some(finished)) < Duration::from_secs(keep),
        _ => false,
    }
}

/// Decides about a pod that no active job attempt claims: the pod of a finished job is
/// kept for the job's keep time (for `kubectl logs`), a pod of an earlier attempt
/// likewise from when the next attempt was queued, and a pod without any record is
/// deleted after the orphan grace period. A pod that still runs (`pod_ended` false)
/// though its attempt is over is deleted at once: its containers (the job's, or
/// sidecars the job's end left running) must not hold the node, and a delete that
/// failed after its record was written is carried out here.
pub fn cleanup(
    pod_created: Option<Timestamp>,
    pod_attempt: u32,
    pod_ended: bool,
    record: Option<&JobRecord>,
    keep: Duration,
    now: Timestamp,
    thresholds: &Thresholds,
) -> Cleanup {
    let over = |since_then: Option<Timestamp>, why: &'static str| {
        if !pod_ended {
            Cleanup::Delete("its attempt is over but the pod still runs")
        } else if since(now, since_then) >= keep {
            Cleanup::Delete(why)
        } else {
            Cleanup::Keep
        }
    };
    match record {
        None if since(now, pod_created) >= thresholds.orphan_grace => Cleanup::Delete("orphan: no job record"),
        None => Cleanup::Keep,
        Some(record) if record.state.is_terminal() && !record.retry_pending => {
            let ended = record.state_times.get(&record.state).copied().unwrap_or(record.updated_at);
            over(Some(ended), "the job has ended and its keep time passed")
        }
        Some(record) if pod_attempt < record.attempt => {
            let next = record.state_times.get(&JobState::Queued).copied().unwrap_or(record.updated_at);
            over(Some(next), "an earlier attempt, past its keep time")
        }
        Some(_) => Cleanup::Keep,
    }
}
