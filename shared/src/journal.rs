//! The journal: a [`JobStore`] that announces every transition it writes.
//!
//! Every function moves jobs through one store, so wrapping that store is the one place
//! where "every transition, from any function, becomes an event and a metric" can be
//! made true: a transition is announced exactly when its conditional write succeeds, and
//! a lost race (nothing written) announces nothing. Code that moves jobs cannot forget.
//!
//! Events are kept until [`Journal::flush`], which a function calls once per invocation
//! (and the reconciler's watch every few seconds), so a batch of ten jobs costs two
//! PutEvents calls rather than twenty. Metrics are counted at once and printed by the
//! function with the rest of its metrics. If the process dies between a write and the
//! flush, that write's event is lost; its record is not, and the record is the truth.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::Result;
use crate::events::{EventSink, JobStateChange, PublishReport};
use crate::metrics::{Counter, Metrics};
use std::collections::BTreeMap;

use crate::metrics::Timing;
use crate::store::{Acquired, ActivePage, Changed, Created, Definitions, JobStore, QueueStore, Usage};
use podbridge_core::admission::{Limits, Queue, Resources, Slot};
use podbridge_core::record::{JobRecord, REQUEUED, StateChange, WAITING};
use podbridge_core::state::JobState;

/// A job store whose writes are announced as events on `sink` and counted in `metrics`.
#[derive(Debug)]
pub struct Journal<S, E> {
    store: S,
    sink: E,
    metrics: Metrics,
    pending: Mutex<Vec<JobStateChange>>,
}

impl<S: JobStore, E: EventSink> Journal<S, E> {
    pub fn new(store: S, sink: E, metrics: Metrics) -> Self {
        Self { store, sink, metrics, pending: Mutex::default() }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// The metrics the journal counts into; the function prints them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Events written but not yet published.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Publishes the events of every transition written since the last flush. Events
    /// that could not be published were logged by the sink; they are counted as
    /// `EventsFailed` so an alarm can see them.
    pub async fn flush(&self) -> PublishReport {
        let events = std::mem::take(&mut *self.lock());
        if events.is_empty() {
            return PublishReport::default();
        }
        let report = self.sink.publish(&events).await;
        if report.failed > 0 {
            self.metrics.add(Counter::EventsFailed, report.failed as u64);
        }
        report
    }

    /// Announces the transition `record` just went through.
    fn announce(&self, record: &JobRecord) {
        if let Some(counter) = counter_for(record) {
            self.metrics.count(counter);
        }
        // From recorded (or queued again) to admitted: how long the job waited.
        if record.state == JobState::SettingUp
            && let Some(queued) = record.state_times.get(&JobState::Queued)
        {
            self.metrics.time(Timing::AdmissionWait, record.updated_at.duration_since(*queued).unsigned_abs());
        }
        self.lock().push(JobStateChange::from_record(record));
    }

    fn lock(&self) -> MutexGuard<'_, Vec<JobStateChange>> {
        // Nothing panics while holding the lock, so a poisoned list is still whole.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The metric a transition into the record's state counts, if any. A job recorded as
/// `queued` counts nothing yet: `Dispatched` follows once its pod exists.
fn counter_for(record: &JobRecord) -> Option<Counter> {
    let from = record.history.last().and_then(|t| t.from);
    match record.state {
        JobState::SettingUp => Some(Counter::Dispatched),
        JobState::Executing => Some(Counter::Started),
        JobState::Succeeded => Some(Counter::Succeeded),
        JobState::Failed => record.failure_class.map(Counter::Failed),
        JobState::Rejected => Some(Counter::Rejected),
        JobState::Cancelled => Some(Counter::Cancelled),
        JobState::Queued if from.is_some_and(|f| f.is_terminal()) => Some(Counter::Retries),
        JobState::Queued if record.reason.as_deref() == Some(REQUEUED) => Some(Counter::RequeuedForCapacity),
        // Only the change that makes a job wait counts, not one that says why anew.
        JobState::Queued if record.reason.as_deref() == Some(WAITING) && !waited_before(record) => {
            Some(Counter::Waiting)
        }
        JobState::Queued => None,
    }
}

/// Whether the transition before the record's last one was a wait too.
fn waited_before(record: &JobRecord) -> bool {
    record.history.len() >= 2 && record.history[record.history.len() - 2].reason == WAITING
}

impl<S: JobStore, E: EventSink> JobStore for Journal<S, E> {
    async fn create(&self, record: &JobRecord) -> Result<Created> {
        let created = self.store.create(record).await?;
        if created == Created::New {
            self.announce(record);
        }
        Ok(created)
    }

    async fn replace_tombstone(&self, record: &JobRecord, tombstone: &JobRecord) -> Result<Created> {
        let created = self.store.replace_tombstone(record, tombstone).await?;
        if created == Created::New {
            self.announce(record);
        }
        Ok(created)
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>> {
        self.store.get(job_id).await
    }

    async fn change(&self, job_id: &str, change: &StateChange) -> Result<Changed> {
        let changed = self.store.change(job_id, change).await?;
        if let Changed::Applied(record) = &changed {
            self.announce(record);
        }
        Ok(changed)
    }

    async fn active(&self, page_size: u32, from: Option<&str>) -> Result<ActivePage> {
        self.store.active(page_size, from).await
    }

    async fn waiting(&self, queue: &str, limit: u32) -> Result<Vec<JobRecord>> {
        self.store.waiting(queue, limit).await
    }

    async fn ahead_of(&self, record: &JobRecord) -> Result<Option<u64>> {
        self.store.ahead_of(record).await
    }
}

/// The queue table passes through: slots and usage are no job's transitions.
impl<S: QueueStore, E: EventSink> QueueStore for Journal<S, E> {
    async fn definitions(&self) -> Result<Definitions> {
        self.store.definitions().await
    }

    async fn put_queue(&self, queue: &Queue) -> Result<()> {
        self.store.put_queue(queue).await
    }

    async fn put_total(&self, limits: &Limits) -> Result<()> {
        self.store.put_total(limits).await
    }

    async fn usage(&self) -> Result<BTreeMap<String, Usage>> {
        self.store.usage().await
    }

    async fn acquire(&self, slot: &Slot, queue: &Limits, total: &Limits) -> Result<Acquired> {
        self.store.acquire(slot, queue, total).await
    }

    async fn release(&self, job_id: &str, attempt: u32) -> Result<bool> {
        self.store.release(job_id, attempt).await
    }

    async fn release_known(&self, slot: &Slot) -> Result<bool> {
        self.store.release_known(slot).await
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        self.store.slots().await
    }

    async fn slot(&self, job_id: &str) -> Result<Option<Slot>> {
        self.store.slot(job_id).await
    }

    async fn repair(&self, queue: &str, seen: &Usage, truth: Resources) -> Result<bool> {
        let repaired = self.store.repair(queue, seen, truth).await?;
        if repaired {
            self.metrics.count(Counter::DriftRepaired);
        }
        Ok(repaired)
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::events::MemorySink;
    use crate::store::memory::MemoryJobStore;
    use podbridge_core::FailureClass;
    use podbridge_core::record::Source;

    fn journal() -> Journal<MemoryJobStore, MemorySink> {
        Journal::new(MemoryJobStore::default(), MemorySink::new(), Metrics::new("podbridge", "test"))
    }

    fn queued(id: &str) -> JobRecord {
        JobRecord::new(id, JobState::Queued, Source::Direct, Timestamp::now(), "Submitted", "queued")
    }

    #[tokio::test]
    async fn written_transitions_are_published_on_flush_and_counted() {
        let journal = journal();
        journal.create(&queued("a")).await.unwrap();
        let change = StateChange::new(JobState::Queued, 1, JobState::SettingUp, Timestamp::now(), "PodCreated", "");
        journal.change("a", &change).await.unwrap();
        assert_eq!(journal.pending(), 2);
        assert!(journal.sink.events().is_empty(), "nothing is published before the flush");

        let report = journal.flush().await;
        assert_eq!(report, PublishReport { published: 2, failed: 0 });
        let states: Vec<_> = journal.sink.events().iter().map(|e| (e.state, e.previous_state)).collect();
        assert_eq!(states, [(JobState::Queued, None), (JobState::SettingUp, Some(JobState::Queued))]);
        assert_eq!(journal.pending(), 0);
        let metrics = journal.metrics().emf_lines(0).join("\n");
        assert!(metrics.contains("\"Dispatched\":1"), "{metrics}");
    }

    #[tokio::test]
    async fn lost_races_and_repeated_creates_announce_nothing() {
        let journal = journal();
        journal.create(&queued("a")).await.unwrap();
        journal.flush().await;
        assert_eq!(
            journal.create(&queued("a")).await.unwrap(),
            Created::Exists(Box::new(journal.get("a").await.unwrap().unwrap()))
        );
        // The job is queued, not executing: the conditional write loses.
        let stale = StateChange::new(JobState::Executing, 1, JobState::Succeeded, Timestamp::now(), "Completed", "");
        assert!(matches!(journal.change("a", &stale).await.unwrap(), Changed::Conflict(_)));
        assert_eq!(journal.pending(), 0);
        assert_eq!(journal.flush().await, PublishReport::default());
        assert_eq!(journal.sink.events().len(), 1);
    }

    #[tokio::test]
    async fn a_job_that_begins_to_wait_counts_once_and_keeps_the_time_it_was_queued() {
        let journal = journal();
        let record = queued("a");
        journal.create(&record).await.unwrap();
        for reason in ["queue etl: 2 of 2 jobs held", "queue etl is paused"] {
            let mut wait = StateChange::new(JobState::Queued, 1, JobState::Queued, Timestamp::now(), WAITING, reason);
            wait.wait = Some(podbridge_core::record::WaitPlace::new("etl", 0, record.created_at, "a"));
            journal.change("a", &wait).await.unwrap();
        }
        let metrics = journal.metrics().emf_lines(0).join("\n");
        assert!(metrics.contains("\"Waiting\":1"), "{metrics}");
        let waiting = journal.get("a").await.unwrap().unwrap();
        assert_eq!(waiting.state_times[&JobState::Queued], record.created_at, "queued since it was recorded");
        assert_eq!(waiting.message.as_deref(), Some("queue etl is paused"));
    }

    #[tokio::test]
    async fn a_bus_that_is_down_loses_events_not_transitions_and_is_counted() {
        let journal = journal();
        journal.sink.set_failing(true);
        journal.create(&queued("a")).await.unwrap();
        assert_eq!(journal.flush().await, PublishReport { published: 0, failed: 1 });
        assert_eq!(journal.get("a").await.unwrap().unwrap().state, JobState::Queued);
        let metrics = journal.metrics().emf_lines(0).join("\n");
        assert!(metrics.contains("\"EventsFailed\":1"), "{metrics}");
    }

    #[test]
    fn each_transition_counts_its_metric() {
        let at = Timestamp::now();
        let mut record = queued("a");
        assert_eq!(counter_for(&record), None);
        let mut step = |from, to, class: Option<FailureClass>| {
            let mut change = StateChange::new(from, record.attempt, to, at, "Test", "");
            change.failure_class = class;
            record.apply(&change);
            counter_for(&record)
        };
        assert_eq!(step(JobState::Queued, JobState::SettingUp, None), Some(Counter::Dispatched));
        assert_eq!(step(JobState::SettingUp, JobState::Executing, None), Some(Counter::Started));
        assert_eq!(
            step(JobState::Executing, JobState::Failed, Some(FailureClass::OomKilled)),
            Some(Counter::Failed(FailureClass::OomKilled))
        );
        assert_eq!(step(JobState::Failed, JobState::Queued, None), Some(Counter::Retries));
    }
}
