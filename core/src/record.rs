//! The job record: what podbridge knows about a job, as stored in the job table.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::failure::FailureClass;
use crate::state::JobState;
use crate::validate::Job;

/// The longest `reason` a record keeps (in bytes); longer ones are cut.
pub const MAX_REASON: usize = 128;
/// The longest `message` a record keeps, of the record and of each history entry.
pub const MAX_MESSAGE: usize = 4096;
/// The longest termination message a record keeps (the kubelet's own cap is 4096 bytes
/// from the file, 2048 from the logs).
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// When a record must be made smaller to be written ([`JobRecord::compacted`]), the
/// history entries kept from its start and from its end.
pub const HISTORY_KEPT_FIRST: usize = 2;
pub const HISTORY_KEPT_LAST: usize = 24;
/// Reasons of history entries that are counted (`RetryRequested`: retries on request,
/// bounded per job; `OOMKilled`: each gives the next attempt more memory), so that
/// compacting a history never drops one.
pub const COUNTED_REASONS: [&str; 3] = ["RetryRequested", "OOMKilled", REQUEUED];
/// The reason of a transition that puts a job back to wait for room: its pod could not
/// be scheduled for lack of capacity. It starts a new attempt that does not count as a
/// failed one.
pub const REQUEUED: &str = "RequeuedForCapacity";
/// The reason of a queued job that waits for room in its queue.
pub const WAITING: &str = "Waiting";
/// The longest message a counted entry keeps once its history is compacted.
const KEPT_MESSAGE: usize = 256;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let marker = "…";
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

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
    pub failure_class: Option<FailureClass>,
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
    /// While the job waits for room ([`JobRecord::is_waiting`]): its queue and its
    /// place in the queue's order (the waiting-jobs index's keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitPlace>,
}

/// Where a waiting job stands: its queue, and a key whose text order is the queue's
/// admission order (higher priority first, then the oldest, then the job id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitPlace {
    pub queue: String,
    pub order: String,
}

impl WaitPlace {
    /// The place of a job of `priority` (within the message format's range) first
    /// recorded at `since`.
    pub fn new(queue: &str, priority: i32, since: Timestamp, job_id: &str) -> Self {
        // Priorities -1000..=1000 become 0000..=2000, highest first.
        let rank = 1000_i64 - i64::from(priority.clamp(crate::job::MIN_PRIORITY, crate::job::MAX_PRIORITY));
        Self { queue: queue.to_owned(), order: format!("{rank:04}#{since:.9}#{job_id}") }
    }
}

/// When a record that ends at `now` expires, kept for `ttl`: DynamoDB's TTL attribute,
/// in epoch seconds.
pub fn expires_at(now: Timestamp, ttl: std::time::Duration) -> i64 {
    now.as_second().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// A record whose stored job cannot be read back: written by hand, or by a version
/// of podbridge that stored a spec this one cannot read. Retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the record of job {job_id:?} is unreadable: {message}")]
pub struct CorruptRecord {
    pub job_id: String,
    pub message: String,
}

impl JobRecord {
    /// Whether the job waits for room in its queue (`queued`, reason `Waiting`).
    pub fn is_waiting(&self) -> bool {
        self.state == JobState::Queued && self.reason.as_deref() == Some(WAITING)
    }

    /// How many of its attempts were put back for lack of room: new attempts that do
    /// not count as failed ones.
    pub fn requeues(&self) -> u32 {
        let count = self.history.iter().filter(|t| t.reason == REQUEUED).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Its attempts that count against `retry.maxAttempts`: the current one and every
    /// failed one, not those put back for lack of room.
    pub fn counted_attempt(&self) -> u32 {
        self.attempt.saturating_sub(self.requeues()).max(1)
    }

    /// The job this record was created from (its stored spec).
    pub fn stored_job(&self) -> Result<Job, CorruptRecord> {
        let corrupt = |message: String| CorruptRecord { job_id: self.job_id.clone(), message };
        let spec = self.spec.clone().ok_or_else(|| corrupt("an active job has no spec".to_owned()))?;
        serde_json::from_value(spec).map_err(|e| corrupt(format!("spec: {e}")))
    }

    /// A new record in `state` (normally `queued`, or `rejected`).
    pub fn new(job_id: &str, state: JobState, source: Source, now: Timestamp, reason: &str, message: &str) -> Self {
        let (reason, message) = (&cut(reason, MAX_REASON), &cut(message, MAX_MESSAGE));
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
            wait: None,
        }
    }

    /// The record made smaller to fit the table's item size: its history keeps the
    /// first [`HISTORY_KEPT_FIRST`] and the last [`HISTORY_KEPT_LAST`] entries, the ones
    /// between summed up in one entry that says how many were dropped (its `from` the
    /// first dropped entry's, its `to` the last's, so the states still chain).
    pub fn compacted(&self) -> JobRecord {
        let mut record = self.clone();
        let len = record.history.len();
        if len > HISTORY_KEPT_FIRST + HISTORY_KEPT_LAST + 1 {
            let middle: Vec<Transition> = record.history.drain(HISTORY_KEPT_FIRST..len - HISTORY_KEPT_LAST).collect();
            // Entries that are counted (retries on request against their bound, OOM kills
            // for the next attempt's memory) are kept wherever they are.
            // Their messages are cut short, so however many there are, they stay small.
            let (mut counted, dropped): (Vec<Transition>, Vec<Transition>) =
                middle.into_iter().partition(|t| COUNTED_REASONS.contains(&t.reason.as_str()));
            for entry in &mut counted {
                entry.message = cut(&entry.message, KEPT_MESSAGE);
            }
            if dropped.is_empty() {
                record.history.splice(HISTORY_KEPT_FIRST..HISTORY_KEPT_FIRST, counted);
                return record;
            }
            let (first, last) = (&dropped[0], &dropped[dropped.len() - 1]);
            let summary = Transition {
                at: first.at,
                from: first.from,
                to: last.to,
                attempt: last.attempt,
                reason: "HistoryTrimmed".to_owned(),
                message: format!(
                    "{} entries from {} to {} were dropped to keep the record within the table's item size",
                    dropped.len(),
                    first.at,
                    last.at
                ),
            };
            let kept = std::iter::once(summary).chain(counted);
            record.history.splice(HISTORY_KEPT_FIRST..HISTORY_KEPT_FIRST, kept);
        }
        record
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
        // A waiting job told anew why it waits has been queued since it was queued.
        if change.expected != change.to || change.new_attempt.is_some() {
            self.state_times.insert(change.to, change.at);
        }
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
            self.failure_class = Some(*class);
        }
        if let Some(text) = &change.termination_message {
            self.termination_message = Some(text.clone());
        }
        self.expires_at = if change.to.is_terminal() && !change.retry_pending { change.expires_at } else { None };
        self.retry_pending = change.retry_pending;
        self.wait.clone_from(&change.wait);
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
    pub failure_class: Option<FailureClass>,
    pub termination_message: Option<String>,
    /// For terminal states: when the record may expire (seconds since the epoch).
    pub expires_at: Option<i64>,
    /// For a failed attempt that will be retried: see [`JobRecord::retry_pending`].
    pub retry_pending: bool,
    /// For a job that waits for room: its place (every other change clears it).
    pub wait: Option<WaitPlace>,
}

impl StateChange {
    /// A change from `expected` (at `attempt`) to `to`, with nothing else set. The
    /// reason and message are cut to [`MAX_REASON`] and [`MAX_MESSAGE`].
    pub fn new(expected: JobState, attempt: u32, to: JobState, at: Timestamp, reason: &str, message: &str) -> Self {
        Self {
            expected,
            expected_attempt: attempt,
            to,
            new_attempt: None,
            at,
            reason: cut(reason, MAX_REASON),
            message: cut(message, MAX_MESSAGE),
            pod_name: None,
            node: None,
            exit_code: None,
            failure_class: None,
            termination_message: None,
            expires_at: None,
            retry_pending: false,
            wait: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary_and_marked() {
        assert_eq!(cut("short", 10), "short");
        let cut_text = cut(&"é".repeat(100), 11);
        assert!(cut_text.len() <= 11 && cut_text.ends_with('…'), "{cut_text:?}");
        let change = StateChange::new(
            JobState::Queued,
            1,
            JobState::Cancelled,
            Timestamp::UNIX_EPOCH,
            &"r".repeat(999),
            &"m".repeat(99_999),
        );
        assert!(change.reason.len() <= MAX_REASON && change.message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn a_compacted_record_keeps_its_first_and_last_entries_and_says_what_it_dropped() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let history = |counted_every: u32| {
            let mut record = JobRecord::new("j", JobState::Queued, Source::Direct, t(0), "Submitted", "queued");
            for attempt in 1..=20 {
                let mut cancel = StateChange::new(
                    JobState::Queued,
                    attempt,
                    JobState::Cancelled,
                    t(attempt.into()),
                    "Cancelled",
                    "x",
                );
                cancel.expires_at = Some(1);
                record.apply(&cancel);
                let reason = if attempt % counted_every == 0 { "RetryRequested" } else { "Retrying" };
                let mut retry =
                    StateChange::new(JobState::Cancelled, attempt, JobState::Queued, t(attempt.into()), reason, "y");
                retry.new_attempt = Some(attempt + 1);
                record.apply(&retry);
            }
            record
        };
        let record = history(100);
        assert_eq!(record.history.len(), 41);
        let compacted = record.compacted();
        assert_eq!(compacted.history.len(), HISTORY_KEPT_FIRST + 1 + HISTORY_KEPT_LAST);
        assert_eq!(compacted.history[..HISTORY_KEPT_FIRST], record.history[..HISTORY_KEPT_FIRST]);
        assert_eq!(compacted.history[HISTORY_KEPT_FIRST + 1..], record.history[41 - HISTORY_KEPT_LAST..]);
        let summary = &compacted.history[HISTORY_KEPT_FIRST];
        assert_eq!(summary.reason, "HistoryTrimmed");
        assert!(summary.message.starts_with("15 entries"), "{}", summary.message);
        // The states still chain through the summary.
        for pair in compacted.history.windows(2) {
            assert_eq!(pair[1].from, Some(pair[0].to), "{pair:?}");
        }
        assert_eq!((compacted.state, compacted.attempt), (record.state, record.attempt));
        // Counted entries survive, so bounds and memory increases still see them.
        let counted = history(5);
        let count = |r: &JobRecord| r.history.iter().filter(|t| t.reason == "RetryRequested").count();
        assert_eq!(count(&counted.compacted()), count(&counted));
        assert_eq!(count(&counted), 4);
        let short = JobRecord::new("s", JobState::Queued, Source::Direct, t(0), "Submitted", "queued");
        assert_eq!(short.compacted(), short);
    }
}
