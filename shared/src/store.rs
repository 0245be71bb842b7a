//! The job store: where every job and every state change is recorded. One trait, so
//! the core can be tested with plain values; the DynamoDB adapter is the real one.

use std::future::Future;

use crate::error::Result;
use crate::record::{JobRecord, StateChange};

pub mod dynamodb;
pub mod memory;

/// What a create found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The record was written.
    New,
    /// A record with that job id already existed (a redelivery, or a reused id).
    Exists(Box<JobRecord>),
}

/// What a conditional state change found.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// The change was written; the record as it now is.
    Applied(Box<JobRecord>),
    /// The job was not in the expected state and attempt (someone else moved it,
    /// or it is gone): nothing was written. Losing such a race is not an error.
    Conflict(Option<Box<JobRecord>>),
}

/// A page of active jobs (queued, setting up or executing).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivePage {
    pub jobs: Vec<JobRecord>,
    /// Pass back to get the next page; `None` when this was the last.
    pub next: Option<String>,
}

/// Checks, in debug builds, that `change` is a move the state machine allows.
///
/// A forbidden move is a bug in the caller, not something the table can answer, so it
/// is caught in tests rather than turned into a runtime error: nothing in the error
/// type fits it, and retrying it could never help. In release builds the conditional
/// write still guarantees what matters: no writer overwrites a state it did not see.
pub(crate) fn debug_assert_allowed(job_id: &str, change: &StateChange) {
    debug_assert!(
        change.expected.can_become(change.to),
        "job {job_id}: {} -> {} is not an allowed transition",
        change.expected,
        change.to
    );
}

/// The job table.
pub trait JobStore: Send + Sync {
    /// Writes a new record unless one with that job id exists (conditional put).
    fn create(&self, record: &JobRecord) -> impl Future<Output = Result<Created>> + Send;

    /// Reads a job (strongly consistent).
    fn get(&self, job_id: &str) -> impl Future<Output = Result<Option<JobRecord>>> + Send;

    /// Applies `change` only if the job is in `change.expected` at
    /// `change.expected_attempt` (conditional update), appending to its history.
    fn change(&self, job_id: &str, change: &StateChange) -> impl Future<Output = Result<Changed>> + Send;

    /// One page of active jobs from the active-jobs index, never a scan.
    fn active(&self, page_size: u32, from: Option<&str>) -> impl Future<Output = Result<ActivePage>> + Send;
}
