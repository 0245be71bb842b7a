//! Job state change events: every transition, from any function, is published to an
//! EventBridge bus so that others can react to it.
//!
//! The job record is the truth and an event only announces it. So publishing can never
//! undo or fail a transition: [`EventSink::publish`] has no error to return. It retries
//! what was not accepted once, logs what still was not (with the job ids, at error
//! level), and reports counts a caller can turn into a metric.
//!
//! Delivery is at least once (a redelivered message or a retried call may publish a
//! transition twice); `(jobId, attempt, state)` identifies a transition, because an
//! attempt enters each state at most once, but for a job waiting for room: each new
//! reason to wait (`queued`, reason `Waiting`) is announced again, told apart by its
//! time.

use std::collections::BTreeMap;
use std::future::Future;

use jiff::Timestamp;
use podbridge_core::FailureClass;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use serde::{Deserialize, Serialize};

mod eventbridge;
mod memory;

pub use eventbridge::EventBridgeSink;
pub use memory::MemorySink;

/// The `source` of every event podbridge publishes.
pub const SOURCE: &str = "podbridge";

/// The `detail-type` of a job state change.
pub const DETAIL_TYPE: &str = "Job State Change";

/// The longest `message` an event carries, in bytes. PutEvents refuses a call over
/// 256 KB; ten events of at most this much always fit. The record keeps the whole text.
pub(crate) const MESSAGE_LIMIT: usize = 8 * 1024;

/// The `detail` of a "Job State Change" event: the job after the transition.
///
/// ```json
/// {
///   "jobId": "nightly-report-2024-06-01", "attempt": 1, "state": "failed", "previousState": "executing",
///   "failureClass": "exit_code", "reason": "Error", "message": "the container exited with code 3",
///   "exitCode": 3, "podName": "nightly-report-2024-06-01-1", "namespace": "batch", "node": "node-1",
///   "at": "2024-06-01T02:03:09Z", "createdAt": "2024-06-01T02:00:00Z",
///   "stateTimes": { "queued": "2024-06-01T02:00:00Z", "setting_up": "2024-06-01T02:00:01Z",
///                   "executing": "2024-06-01T02:00:05Z", "failed": "2024-06-01T02:03:09Z" }
/// }
/// ```
///
/// Every member is always present (`null` when unknown), so consumers and rules see one
/// shape. State and failure class values are the record's (`setting_up`, `oom_killed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStateChange {
    pub job_id: String,
    /// The attempt the job is in after the transition (a retry's `queued` has the new one).
    pub attempt: u32,
    pub state: JobState,
    /// `None` when the job was just recorded (its first state).
    pub previous_state: Option<JobState>,
    /// Why the attempt failed (`failed` only).
    pub failure_class: Option<FailureClass>,
    /// The transition's machine-readable reason (`PodCreated`, `ImagePullBackOff`, ...).
    pub reason: String,
    /// What a person should read, cut to 8 KiB.
    pub message: String,
    pub exit_code: Option<i32>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    /// When the transition happened (also the event's `time`).
    pub at: Timestamp,
    /// When the job was first recorded.
    pub created_at: Timestamp,
    /// When the current attempt entered each of its states.
    pub state_times: BTreeMap<JobState, Timestamp>,
}

impl JobStateChange {
    /// The event for the transition `record` just went through (its last history entry).
    pub fn from_record(record: &JobRecord) -> Self {
        let last = record.history.last();
        let message = last.map(|t| t.message.as_str()).or(record.message.as_deref()).unwrap_or_default();
        Self {
            job_id: record.job_id.clone(),
            attempt: record.attempt,
            state: record.state,
            previous_state: last.and_then(|t| t.from),
            failure_class: record.failure_class,
            reason: last.map(|t| t.reason.clone()).or_else(|| record.reason.clone()).unwrap_or_default(),
            message: truncate(message, MESSAGE_LIMIT).to_owned(),
            exit_code: record.exit_code,
            pod_name: record.pod_name.clone(),
            namespace: record.namespace.clone(),
            node: record.node.clone(),
            at: last.map_or(record.updated_at, |t| t.at),
            created_at: record.created_at,
            state_times: record.state_times.clone(),
        }
    }
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn truncate(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What became of the events of one [`EventSink::publish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Events the bus accepted.
    pub published: usize,
    /// Events given up after the retry; each was logged at error level with its job id.
    pub failed: usize,
}

/// Where job state changes go. One trait for every function that moves jobs.
pub trait EventSink: Send + Sync {
    /// Publishes `events`, in order, batched as the sink allows. Never fails: the
    /// transitions are already recorded, so a lost event is reported and logged, not
    /// returned as an error that a caller could mistake for a failed transition.
    fn publish(&self, events: &[JobStateChange]) -> impl Future<Output = PublishReport> + Send;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use podbridge_core::record::{Source, StateChange};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A job recorded, started and failed with exit code 3, as the store would hold it.
    fn failed_job() -> JobRecord {
        let mut record =
            JobRecord::new("report-1", JobState::Queued, Source::Direct, at("2024-06-01T02:00:00Z"), "Dispatched", "");
        record.namespace = Some("batch".into());
        let mut change = StateChange::new(
            JobState::Queued,
            1,
            JobState::SettingUp,
            at("2024-06-01T02:00:01Z"),
            "PodCreated",
            "pod created",
        );
        change.pod_name = Some("report-1-1".into());
        record.apply(&change);
        let mut change = StateChange::new(
            JobState::SettingUp,
            1,
            JobState::Executing,
            at("2024-06-01T02:00:05.5Z"),
            "Started",
            "running",
        );
        change.node = Some("node-1".into());
        record.apply(&change);
        let mut change = StateChange::new(
            JobState::Executing,
            1,
            JobState::Failed,
            at("2024-06-01T02:03:09Z"),
            "ExitCode",
            "the container exited with 3",
        );
        change.exit_code = Some(3);
        change.failure_class = Some(FailureClass::ExitCode);
        record.apply(&change);
        record
    }

    #[test]
    fn the_detail_of_a_failed_job_has_every_member_in_camel_case() {
        let event = JobStateChange::from_record(&failed_job());
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "jobId": "report-1",
                "attempt": 1,
                "state": "failed",
                "previousState": "executing",
                "failureClass": "exit_code",
                "reason": "ExitCode",
                "message": "the container exited with 3",
                "exitCode": 3,
                "podName": "report-1-1",
                "namespace": "batch",
                "node": "node-1",
                "at": "2024-06-01T02:03:09Z",
                "createdAt": "2024-06-01T02:00:00Z",
                "stateTimes": {
                    "queued": "2024-06-01T02:00:00Z",
                    "setting_up": "2024-06-01T02:00:01Z",
                    "executing": "2024-06-01T02:00:05.5Z",
                    "failed": "2024-06-01T02:03:09Z"
                }
            })
        );
        let back: JobStateChange = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_new_job_has_no_previous_state_and_a_retry_carries_the_new_attempt() {
        let record =
            JobRecord::new("j", JobState::Queued, Source::Direct, at("2024-06-01T00:00:00Z"), "Dispatched", "ok");
        let event = JobStateChange::from_record(&record);
        assert_eq!((event.state, event.previous_state, event.attempt), (JobState::Queued, None, 1));
        assert_eq!(event.reason, "Dispatched");

        let mut record = failed_job();
        let mut retry =
            StateChange::new(JobState::Failed, 1, JobState::Queued, at("2024-06-01T02:04:00Z"), "Retry", "again");
        retry.new_attempt = Some(2);
        record.apply(&retry);
        let event = JobStateChange::from_record(&record);
        assert_eq!((event.state, event.previous_state, event.attempt), (JobState::Queued, Some(JobState::Failed), 2));
        assert_eq!((event.failure_class, event.exit_code, event.pod_name), (None, None, None));
        assert_eq!(event.state_times.keys().copied().collect::<Vec<_>>(), [JobState::Queued]);
        assert_eq!(event.at, at("2024-06-01T02:04:00Z"));
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let mut record = failed_job();
        let long = "é".repeat(MESSAGE_LIMIT);
        record.history.last_mut().unwrap().message = long.clone();
        let event = JobStateChange::from_record(&record);
        assert_eq!(event.message.len(), MESSAGE_LIMIT);
        assert!(long.starts_with(&event.message));
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("é", 1), "");
    }

    #[tokio::test]
    async fn the_memory_sink_keeps_events_and_can_play_a_bus_that_is_down() {
        let sink = MemorySink::new();
        let event = JobStateChange::from_record(&failed_job());
        assert_eq!(sink.publish(std::slice::from_ref(&event)).await, PublishReport { published: 1, failed: 0 });
        sink.set_failing(true);
        assert_eq!(sink.publish(&[event.clone(), event.clone()]).await, PublishReport { published: 0, failed: 2 });
        assert_eq!(sink.events(), std::slice::from_ref(&event));
    }
}
