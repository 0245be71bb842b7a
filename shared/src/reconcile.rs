//! Reconcile decisions: what to do about one active job, given its record, its pod as
//! observed (or its absence) and the time. A pure function, so every rule is tested
//! with plain values; the reconcile function only gathers inputs and carries out the
//! decision with conditional writes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::failure::FailureClass;
use crate::observe::{Observed, PodView};
use crate::record::{JobRecord, StateChange};
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

/// What to do about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The record is true to the pod; nothing to write.
    Nothing,
    /// Create the pod of the current attempt (idempotent: the name is fixed).
    Dispatch,
    /// Record a change; delete the attempt's pod first when `delete_pod`.
    Record { change: Box<StateChange>, delete_pod: bool },
    /// Record the attempt as failed, then start the next attempt (a second conditional
    /// write, from `failed` back to `queued`).
    FailAndRetry { failed: Box<StateChange>, retry: Box<StateChange>, delete_pod: bool },
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

/// Decides about one job the reconciler follows: an active one, or a failed one whose
/// retry is owed ([`JobRecord::retry_pending`]).
pub fn decide(
    record: &JobRecord,
    job: &Job,
    pod: Option<&Observed>,
    now: Timestamp,
    thresholds: &Thresholds,
    record_ttl: Duration,
) -> Decision {
    let change = |to: JobState, reason: &str, message: &str| {
        let mut change = StateChange::new(record.state, record.attempt, to, now, reason, message);
        if to.is_terminal() {
            change.expires_at = Some(now.as_second().saturating_add(record_ttl.as_secs() as i64));
        }
        change
    };
    let fail = |class: FailureClass, exit_code: Option<i32>, reason: &str, message: &str, delete_pod: bool| {
        let mut failed = change(JobState::Failed, reason, message);
        failed.failure_class = Some(class.as_str().to_owned());
        failed.exit_code = exit_code;
        failed.node = pod.and_then(|p| p.node.clone());
        failed.termination_message = pod.and_then(|p| p.termination_message.clone());
        if !should_retry(job, record.attempt, class, exit_code) {
            return Decision::Record { change: Box::new(failed), delete_pod };
        }
        // No expiry, and the job stays followed until its retry is written.
        failed.expires_at = None;
        failed.retry_pending = true;
        let retry = retry_change(record.attempt, job, class.as_str(), now);
        Decision::FailAndRetry { failed: Box::new(failed), retry: Box::new(retry), delete_pod }
    };
    // The failure was recorded and its retry decided, but not written (the reconciler
    // stopped between the two writes): write it now, whatever the pod says.
    if record.retry_pending && record.state == JobState::Failed {
        let class = record.failure_class.as_deref().unwrap_or("failed");
        let retry = retry_change(record.attempt, job, class, now);
        return Decision::Record { change: Box::new(retry), delete_pod: false };
    }
    let setting_up_since = record.state_times.get(&JobState::SettingUp).copied();

    match (record.state, pod.map(|p| &p.view)) {
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
            let mut found = change(JobState::SettingUp, "PodFound", "the attempt's pod exists; the record caught up");
            found.pod_name = Some(crate::pod::pod_name(&job.id, record.attempt));
            Decision::Record { change: Box::new(found), delete_pod: false }
        }
        (_, None) => fail(
            FailureClass::PodVanished,
            None,
            "PodVanished",
            "the pod was deleted by something other than podbridge",
            false,
        ),
        (state, Some(view)) => match view {
            PodView::Succeeded { .. } => {
                let mut done = change(JobState::Succeeded, "Completed", "the container exited with code 0");
                done.exit_code = Some(0);
                done.node = pod.and_then(|p| p.node.clone());
                Decision::Record { change: Box::new(done), delete_pod: false }
            }
            PodView::Failed { class, exit_code, reason, message } => fail(*class, *exit_code, reason, message, false),
            PodView::Running { started_at } => {
                let timeout = Duration::from_secs(job.timeout_seconds) + thresholds.deadline_grace;
                if since(now, *started_at) > timeout {
                    let message = format!("ran past its timeout of {}s (by podbridge's clock)", job.timeout_seconds);
                    fail(FailureClass::DeadlineExceeded, None, "DeadlineExceeded", &message, true)
                } else if state == JobState::SettingUp {
                    let mut started = change(JobState::Executing, "Started", "the container is running");
                    started.node = pod.and_then(|p| p.node.clone());
                    Decision::Record { change: Box::new(started), delete_pod: false }
                } else {
                    Decision::Nothing
                }
            }
            PodView::Stuck { class, reason, message } if since(now, setting_up_since) >= thresholds.stuck_after => {
                fail(*class, None, reason, message, true)
            }
            PodView::Unschedulable { since: unschedulable_since, message }
                if since(now, unschedulable_since.or(setting_up_since)) >= thresholds.unschedulable_after =>
            {
                fail(FailureClass::Unschedulable, None, "Unschedulable", message, true)
            }
            _ if since(now, setting_up_since) >= thresholds.start_limit => {
                let message = format!("the pod did not start within {}s", thresholds.start_limit.as_secs());
                fail(FailureClass::StartTimeout, None, "StartTimeout", &message, true)
            }
            _ => Decision::Nothing,
        },
    }
}

/// What to do with a managed pod that belongs to no active job attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Keep,
    /// Delete it; the reason, for the log.
    Delete(&'static str),
}

/// Decides about a pod that no active job attempt claims: the pod of a finished job is
/// kept for the job's keep time (for `kubectl logs`), a pod of an earlier attempt
/// likewise from when the next attempt was queued, and a pod without any record is
/// deleted after the orphan grace period.
pub fn cleanup(
    pod_created: Option<Timestamp>,
    pod_attempt: u32,
    record: Option<&JobRecord>,
    keep: Duration,
    now: Timestamp,
    thresholds: &Thresholds,
) -> Cleanup {
    match record {
        None if since(now, pod_created) >= thresholds.orphan_grace => Cleanup::Delete("orphan: no job record"),
        None => Cleanup::Keep,
        Some(record) if record.state.is_terminal() => {
            let ended = record.state_times.get(&record.state).copied().unwrap_or(record.updated_at);
            if since(now, Some(ended)) >= keep {
                Cleanup::Delete("the job has ended and its keep time passed")
            } else {
                Cleanup::Keep
            }
        }
        Some(record) if pod_attempt < record.attempt => {
            let next = record.state_times.get(&JobState::Queued).copied().unwrap_or(record.updated_at);
            if since(now, Some(next)) >= keep {
                Cleanup::Delete("an earlier attempt, past its keep time")
            } else {
                Cleanup::Keep
            }
        }
        Some(_) => Cleanup::Keep,
    }
}
