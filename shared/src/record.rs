//! The job record: what podbridge knows about a job, as stored in the job table.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::state::JobState;

/// Where a job came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// An SQS message.
    Sqs { message_id: String },
    /// An EventBridge event.
    EventBridge { event_id: String },
    /// A schedule's tick: the schedule's name and the tick's time (RFC 3339).
    Schedule { schedule: String, scheduled_time: String },
    /// Submitted directly (CLI, tests).
    Direct,
}

/// One entry of a job's history: every state change, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    /// `None` for the first entry (the job was recorded).
    pub from: Option<JobState>,
    pub to: JobState,
    pub attempt: u32,
    /// A short machine-readable reason (`Dispatched`, `PodCreated`, `ImagePullBackOff`...).
    pub reason: String,
    /// What a person should read.
    pub message: String,
}

/// Everything podbridge records about a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The client's idempotency key (or one derived from the message id).
    pub job_id: String,
    /// 1 for the first attempt; a retry increments it.
    pub attempt: u32,
    pub state: JobState,
    /// The validated job as it will run (absent for rejected submissions).
    pub spec: Option<serde_json::Value>,
    pub namespace: Option<String>,
    /// The pod of the current attempt, once created.
    pub pod_name: Option<String>,
    pub node: Option<String>,
    pub source: Source,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the job entered each state (of the current attempt).
    pub state_times: BTreeMap<JobState, Timestamp>,
    pub exit_code: Option<i32>,
    /// The failure class of a failed attempt (`image_pull`, `oom_killed`, ...).
    pub failure_class: Option<String>,
    /// Why the job is in its state (the last transition's reason).
    pub reason: Option<String>,
    /// What a person should read about the current state.
    pub message: Option<String>,
    /// The container's termination message (its last log lines on failure).
    pub termination_message: Option<String>,
    pub history: Vec<Transition>,
    /// When the table may delete a terminal record (seconds since the epoch).
    pub expires_at: Option<i64>,
    /// A failed attempt whose policy gives the job another: the reconciler owes the
    /// retry, and the job stays in the active index until it is written (so a
    /// reconciler stopped between the two writes leaves the retry to the next pass).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_pending: bool,
}

impl JobRecord {
    /// A new record in `state` (normally `queued`, or `rejected`).
    pub fn new(job_id: &str, state: JobState, source: Source, now: Timestamp, reason: &str, message: &str) -> Self {
        Self {
            job_id: job_id.to_owned(),
            attempt: 1,
            state,
            spec: None,
            namespace: None,
            pod_name: None,
            node: None,
            source,
            created_at: now,
            updated_at: now,
            state_times: BTreeMap::from([(state, now)]),
            exit_code: None,
            failure_class: None,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            termination_message: None,
            history: vec![Transition {
                at: now,
                from: None,
                to: state,
                attempt: 1,
                reason: reason.to_owned(),
                message: message.to_owned(),
            }],
            expires_at: None,
            retry_pending: false,
        }
    }

    /// Whether the reconciler follows the job: it is active, or a retry is owed.
    pub fn is_followed(&self) -> bool {
        self.state.is_active() || self.retry_pending
    }

    /// Applies `change` as the store does after its conditional write succeeded.
    pub fn apply(&mut self, change: &StateChange) {
        let attempt = change.new_attempt.unwrap_or(self.attempt);
        if change.new_attempt.is_some() {
            self.state_times.clear();
            self.pod_name = None;
            self.node = None;
            self.exit_code = None;
            self.failure_class = None;
            self.termination_message = None;
        }
        self.history.push(Transition {
            at: change.at,
            from: Some(self.state),
            to: change.to,
            attempt,
            reason: change.reason.clone(),
            message: change.message.clone(),
        });
        self.attempt = attempt;
        self.state = change.to;
        self.updated_at = change.at;
        self.state_times.insert(change.to, change.at);
        self.reason = Some(change.reason.clone());
        self.message = Some(change.message.clone());
        if let Some(pod_name) = &change.pod_name {
            self.pod_name = Some(pod_name.clone());
        }
        if let Some(node) = &change.node {
            self.node = Some(node.clone());
        }
        if change.exit_code.is_some() {
            self.exit_code = change.exit_code;
        }
        if let Some(class) = &change.failure_class {
            self.failure_class = Some(class.clone());
        }
        if let Some(text) = &change.termination_message {
            self.termination_message = Some(text.clone());
        }
        self.expires_at = if change.to.is_terminal() && !change.retry_pending { change.expires_at } else { None };
        self.retry_pending = change.retry_pending;
    }
}

/// A state change to apply only if the job is still where the writer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The state and attempt the writer expects the job to be in.
    pub expected: JobState,
    pub expected_attempt: u32,
    pub to: JobState,
    /// Set for a retry: the attempt the job moves to (and its per-attempt fields reset).
    pub new_attempt: Option<u32>,
    pub at: Timestamp,
    pub reason: String,
    pub message: String,
    pub pod_name: Option<String>,
    pub node: Option<String>,
    pub exit_code: Option<i32>,
    pub failure_class: Option<String>,
    pub termination_message: Option<String>,
    /// For terminal states: when the record may expire (seconds since the epoch).
    pub expires_at: Option<i64>,
    /// For a failed attempt that will be retried: see [`JobRecord::retry_pending`].
    pub retry_pending: bool,
}

impl StateChange {
    /// A change from `expected` (at `attempt`) to `to`, with nothing else set.
    pub fn new(expected: JobState, attempt: u32, to: JobState, at: Timestamp, reason: &str, message: &str) -> Self {
        Self {
            expected,
            expected_attempt: attempt,
            to,
            new_attempt: None,
            at,
            reason: reason.to_owned(),
            message: message.to_owned(),
            pod_name: None,
            node: None,
            exit_code: None,
            failure_class: None,
            termination_message: None,
            expires_at: None,
            retry_pending: false,
        }
    }
}
