//! The services: what podbridge does, carried out against the ports.
//!
//! [`Submitter`] serves what senders ask (submit, cancel, retry, skip);
//! [`Attempts`] starts and ends attempts, for the submitter and for the reconciler
//! (functions/reconcile), which both hold the same store and cluster handles. The
//! decisions themselves are the core's ([`podbridge_core`]); these run them.

mod admission;
mod attempts;
mod submit;

pub use admission::{Admission, Admit, QUEUES_REFRESH};
pub use attempts::Attempts;
pub use submit::{DEFAULT_MAX_MANUAL_RETRIES, MAX_NEW_RECORD_BYTES, RETRY_REQUESTED, Submitter};

use podbridge_core::state::JobState;

/// What became of a message. Every outcome means the message may be deleted: the job
/// is durably recorded (or was already). The caller logs outcomes; this module logs
/// only what an outcome does not show (a pod deleted after a lost race).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job is recorded and its pod created.
    Dispatched { job_id: String, attempt: u32, pod_name: String },
    /// The job is recorded and waits for room in its queue, for `reason`.
    Waiting { job_id: String, reason: String },
    /// The job was recorded before (a redelivery); nothing more was needed.
    AlreadyRecorded { job_id: String, state: JobState },
    /// The message was invalid; it is recorded as `rejected` with the reasons.
    Rejected { job_id: String, reason: String },
    /// The Kubernetes API refused the pod for good; the job is recorded as `failed`.
    Failed { job_id: String, reason: String },
    /// The job is recorded as `cancelled` (its pod, if any, deleted).
    Cancelled { job_id: String },
    /// A cancel for a job that had already ended: nothing changed.
    CancelIgnored { job_id: String, state: JobState },
    /// The job was recorded as `cancelled` without ever running (a schedule's tick
    /// skipped by its concurrency policy).
    Skipped { job_id: String, reason: String },
    /// A retry that could not start a new attempt (the job is not failed or cancelled,
    /// does not exist, or already moved past the attempt named): nothing changed.
    RetryIgnored { job_id: String, reason: String },
    /// A cancel or retry the sender may not make (the job's namespace is not one of
    /// theirs, an id reserved for schedule ticks, no retries left on request): nothing
    /// changed.
    Refused { job_id: String, reason: String },
}

impl Outcome {
    /// The job the outcome is about.
    pub fn job_id(&self) -> &str {
        match self {
            Self::Dispatched { job_id, .. }
            | Self::Waiting { job_id, .. }
            | Self::AlreadyRecorded { job_id, .. }
            | Self::Rejected { job_id, .. }
            | Self::Failed { job_id, .. }
            | Self::Cancelled { job_id }
            | Self::CancelIgnored { job_id, .. }
            | Self::Skipped { job_id, .. }
            | Self::RetryIgnored { job_id, .. }
            | Self::Refused { job_id, .. } => job_id,
        }
    }
}
