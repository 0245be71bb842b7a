//! The store port: where every job and every state change is recorded ([`JobStore`]),
//! and where queues, their usage and the slots of admitted jobs are kept
//! ([`QueueStore`]). [`dynamodb::DynamoJobStore`] is the real adapter (with
//! [`queue_table`], the only modules that know the two tables' layouts),
//! [`memory::MemoryJobStore`] the in-memory one for tests.

use std::future::Future;

use std::collections::BTreeMap;

use futures::Stream;
use podbridge_core::admission::{Limits, Queue, Resources, Slot};
use podbridge_core::record::{JobRecord, StateChange};

use crate::error::Result;

pub mod dynamodb;
pub mod memory;
pub mod queue_table;

/// The key under which the usage of all queues together is kept (no queue can be
/// named so: queue names are DNS labels).
pub const ALL_QUEUES: &str = "*";

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

/// A page of the jobs the reconciler follows: active ones (queued, setting up or
/// executing), and failed ones whose retry is owed.
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

/// Whether `existing`, which a create found in its place, is the record that create
/// wrote. A client repeats a request whose answer it lost (a timeout, a broken
/// connection, a 500 after the commit); the repeat of a conditional put that had been
/// applied then fails its condition on its own write, which must count as written, not
/// as a job recorded before.
pub(crate) fn is_own_create(existing: &JobRecord, record: &JobRecord) -> bool {
    existing.state == record.state
        && existing.created_at == record.created_at
        && existing.source == record.source
        && existing.history == record.history
}

/// Whether `current`, which a change found instead of its expected state, is that
/// change already applied (a repeated request, as for [`is_own_create`]): the state
/// and attempt it moves to, and its transition last in the history. A transition's
/// time is taken per call to the nanosecond, so another writer's move cannot pass for
/// this one. A lost race must not be taken for a write (the reconciler would skip the
/// retry a failed attempt asks for, the journal would announce nothing).
pub(crate) fn is_own_change(current: &JobRecord, change: &StateChange) -> bool {
    current.state == change.to
        && current.attempt == change.new_attempt.unwrap_or(change.expected_attempt)
        && current.history.last().is_some_and(|last| {
            last.at == change.at
                && last.from == Some(change.expected)
                && last.to == change.to
                && last.reason == change.reason
                && last.message == change.message
        })
}

/// The job table.
pub trait JobStore: Send + Sync {
    /// Writes a new record unless one with that job id exists (conditional put).
    fn create(&self, record: &JobRecord) -> impl Future<Output = Result<Created>> + Send;

    /// Writes `record` in place of `tombstone` (a cancel recorded before any job of that
    /// id, for another namespace), only if the tombstone is still what is there.
    /// `Exists` carries what was found instead.
    fn replace_tombstone(
        &self,
        record: &JobRecord,
        tombstone: &JobRecord,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Reads a job (strongly consistent).
    fn get(&self, job_id: &str) -> impl Future<Output = Result<Option<JobRecord>>> + Send;

    /// Applies `change` only if the job is in `change.expected` at
    /// `change.expected_attempt` (conditional update), appending to its history.
    fn change(&self, job_id: &str, change: &StateChange) -> impl Future<Output = Result<Changed>> + Send;

    /// One page of active jobs from the active-jobs index, never a scan.
    fn active(&self, page_size: u32, from: Option<&str>) -> impl Future<Output = Result<ActivePage>> + Send;

    /// The first `limit` jobs waiting in `queue`, in admission order (from the
    /// waiting-jobs index, which may lag a write by a moment).
    fn waiting(&self, queue: &str, limit: u32) -> impl Future<Output = Result<Vec<JobRecord>>> + Send;

    /// How many jobs wait ahead of `record` in its queue; `None` if it does not wait.
    fn ahead_of(&self, record: &JobRecord) -> impl Future<Output = Result<Option<u64>>> + Send;
}

/// The queues as stored: every defined queue, and the limit across all queues if one
/// was set (else the deployment's default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    pub queues: Vec<Queue>,
    pub total: Option<Limits>,
}

/// What a queue's usage (or that of all queues, [`ALL_QUEUES`]) says it holds, and how
/// many times it was changed: every acquire and release counts one, so a repair that
/// read it can tell whether it moved since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub held: Resources,
    pub version: u64,
    /// A stored figure was below zero (read as zero in `held`): never right, always
    /// repaired.
    pub below_zero: bool,
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The slot is written and the usage counts it.
    Admitted,
    /// The job already holds a slot for this attempt (a repeat): it is admitted.
    Held,
    /// The job holds a slot for another attempt, which must be released first.
    Other(Slot),
    /// The queue, or all queues together, have no room: nothing was written.
    Full,
}

/// The queue table: definitions, usage and slots. Every acquire and release writes a
/// slot and the usage it changes in one transaction, so the usage is always the sum of
/// the slots (see docs/ARCHITECTURE.md, "Admission").
pub trait QueueStore: Send + Sync {
    /// The queues as defined (strongly consistent).
    fn definitions(&self) -> impl Future<Output = Result<Definitions>> + Send;

    /// Creates or replaces a queue's definition.
    fn put_queue(&self, queue: &Queue) -> impl Future<Output = Result<()>> + Send;

    /// Sets the limit across all queues.
    fn put_total(&self, limits: &Limits) -> impl Future<Output = Result<()>> + Send;

    /// Every stored usage, by queue (and [`ALL_QUEUES`]); a queue that never held a
    /// job has none.
    fn usage(&self) -> impl Future<Output = Result<BTreeMap<String, Usage>>> + Send;

    /// Writes `slot` and adds it to its queue's usage and to that of all queues, in one
    /// transaction, only if the slot is not there and neither usage would pass its
    /// limit (`queue` for the queue's, `total` for all queues'). A request larger than
    /// a limit is `Full` without a write.
    fn acquire(&self, slot: &Slot, queue: &Limits, total: &Limits) -> impl Future<Output = Result<Acquired>> + Send;

    /// Removes the slot of `job_id` at `attempt` and takes it from the usages, in one
    /// transaction; false (nothing written) when the job holds no slot for that attempt.
    fn release(&self, job_id: &str, attempt: u32) -> impl Future<Output = Result<bool>> + Send;

    /// Gives back `slot` as its holder knows it (job, attempt, queue and request): in
    /// one transaction with no read first when the stored slot is exactly that one,
    /// else as [`QueueStore::release`] does; false when the job holds no slot for that
    /// attempt.
    fn release_known(&self, slot: &Slot) -> impl Future<Output = Result<bool>> + Send {
        self.release(&slot.job_id, slot.attempt)
    }

    /// Every slot (strongly consistent).
    fn slots(&self) -> impl Future<Output = Result<Vec<Slot>>> + Send;

    /// The slot `job_id` holds, if any (strongly consistent).
    fn slot(&self, job_id: &str) -> impl Future<Output = Result<Option<Slot>>> + Send;

    /// Sets the usage of `queue` (or [`ALL_QUEUES`]) to `truth`, only if it is still
    /// `seen` (its version unchanged); false when it moved meanwhile.
    fn repair(&self, queue: &str, seen: &Usage, truth: Resources) -> impl Future<Output = Result<bool>> + Send;
}

/// Both tables: what the services need.
pub trait Store: JobStore + QueueStore {}

impl<T: JobStore + QueueStore> Store for T {}

/// Every page of the active-jobs index, in order: the one loop over its pages. A caller
/// that has what it needs stops reading by dropping the stream.
pub fn active_pages<S: JobStore>(store: &S, page_size: u32) -> impl Stream<Item = Result<ActivePage>> + Send + '_ {
    /// Where the reading stands.
    enum Next {
        First,
        After(String),
        Done,
    }
    futures::stream::try_unfold(Next::First, move |next| async move {
        let from = match next {
            Next::First => None,
            Next::After(token) => Some(token),
            Next::Done => return Ok(None),
        };
        let page = store.active(page_size, from.as_deref()).await?;
        let next = page.next.clone().map_or(Next::Done, Next::After);
        Ok(Some((page, next)))
    })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use podbridge_core::record::Source;
    use podbridge_core::state::JobState::*;

    fn at(nanos: i32) -> Timestamp {
        Timestamp::new(1_800_000_000, nanos).unwrap()
    }

    fn queued(nanos: i32) -> JobRecord {
        JobRecord::new("job", Queued, Source::Direct, at(nanos), "Submitted", "queued")
    }

    #[test]
    fn a_create_finds_its_own_write_but_not_a_redelivery() {
        let written = queued(1);
        assert!(is_own_create(&written, &written), "the repeat of the same put");
        assert!(!is_own_create(&written, &queued(2)), "a redelivery, a moment later");
        let mut other_source = queued(1);
        other_source.source = Source::Sqs { message_id: "m".into() };
        assert!(!is_own_create(&written, &other_source), "another message at the same instant");
    }

    #[test]
    fn a_change_finds_its_own_transition_last_and_nothing_else() {
        let change = StateChange::new(Queued, 1, SettingUp, at(5), "PodCreated", "pod created");
        let mut current = queued(1);
        current.apply(&change);
        assert!(is_own_change(&current, &change), "applied, and nothing since");

        let same_move_later = StateChange::new(Queued, 1, SettingUp, at(6), "PodCreated", "pod created");
        assert!(!is_own_change(&current, &same_move_later), "another writer's identical move, another instant");

        let mut moved_on = current.clone();
        moved_on.apply(&StateChange::new(SettingUp, 1, Executing, at(7), "Started", "running"));
        assert!(!is_own_change(&moved_on, &change), "moved on since: not this change's state");

        let mut retry = StateChange::new(Failed, 1, Queued, at(9), "RetryRequested", "again");
        retry.new_attempt = Some(2);
        let mut failed = current.clone();
        failed.apply(&StateChange::new(SettingUp, 1, Failed, at(8), "Error", "exit 1"));
        let mut retried = failed.clone();
        retried.apply(&retry);
        assert!(is_own_change(&retried, &retry), "a retry is found at its new attempt");
        assert!(!is_own_change(&failed, &retry), "not applied");
    }
}
