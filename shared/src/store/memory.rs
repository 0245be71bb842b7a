//! An in-memory job store for pure unit tests of the dispatch and reconcile core.
//!
//! It keeps the DynamoDB store's semantics, not its mechanics: a create is conditional
//! on the job id being new, a change is conditional on the expected state and attempt
//! and means [`JobRecord::apply`], a lost race writes nothing, and active jobs come in
//! pages ordered by `updated_at` (then job id). It never fails, except for a page token
//! it did not make.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::store::{ALL_QUEUES, Acquired, ActivePage, Changed, Created, Definitions, JobStore, QueueStore, Usage};
use podbridge_core::admission::{Limits, Queue, Resources, Slot};
use podbridge_core::record::{JobRecord, StateChange};

/// Job records in a map behind a mutex, and the queue table beside them. Every
/// operation is atomic, as a conditional write or a transaction is in DynamoDB.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    jobs: Mutex<BTreeMap<String, JobRecord>>,
    queues: Mutex<QueueTable>,
}

#[derive(Debug, Default)]
struct QueueTable {
    definitions: Definitions,
    usage: BTreeMap<String, Usage>,
    slots: BTreeMap<String, Slot>,
}

/// Whether `held` plus `more` stays within `limits`.
fn within(limits: &Limits, held: Resources, more: Resources) -> bool {
    let after = held.plus(more);
    limits.jobs.is_none_or(|l| after.jobs <= l)
        && limits.cpu_millis.is_none_or(|l| after.cpu_millis <= l)
        && limits.memory_bytes.is_none_or(|l| after.memory_bytes <= l)
}

fn minus(held: Resources, less: Resources) -> Resources {
    Resources {
        jobs: held.jobs.saturating_sub(less.jobs),
        cpu_millis: held.cpu_millis.saturating_sub(less.cpu_millis),
        memory_bytes: held.memory_bytes.saturating_sub(less.memory_bytes),
    }
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, ordered by job id: what a test asserts on after the code under
    /// test ran.
    pub fn records(&self) -> Vec<JobRecord> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobRecord>> {
        // No operation panics while it holds the lock, so a poisoned map is still
        // consistent; a test that panicked elsewhere should not hide behind this one.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue_table(&self) -> MutexGuard<'_, QueueTable> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl QueueStore for MemoryJobStore {
    async fn definitions(&self) -> Result<Definitions> {
        Ok(self.queue_table().definitions.clone())
    }

    async fn put_queue(&self, queue: &Queue) -> Result<()> {
        let mut table = self.queue_table();
        table.definitions.queues.retain(|q| q.name != queue.name);
        table.definitions.queues.push(queue.clone());
        Ok(())
    }

    async fn put_total(&self, limits: &Limits) -> Result<()> {
        self.queue_table().definitions.total = Some(*limits);
        Ok(())
    }

    async fn usage(&self) -> Result<BTreeMap<String, Usage>> {
        Ok(self.queue_table().usage.clone())
    }

    async fn acquire(&self, slot: &Slot, queue: &Limits, total: &Limits) -> Result<Acquired> {
        let mut table = self.queue_table();
        if let Some(held) = table.slots.get(&slot.job_id) {
            return Ok(if held.attempt == slot.attempt { Acquired::Held } else { Acquired::Other(held.clone()) });
        }
        let usage_of = |table: &QueueTable, key: &str| table.usage.get(key).copied().unwrap_or_default();
        if !within(queue, usage_of(&table, &slot.queue).held, slot.request)
            || !within(total, usage_of(&table, ALL_QUEUES).held, slot.request)
        {
            return Ok(Acquired::Full);
        }
        for key in [slot.queue.as_str(), ALL_QUEUES] {
            let usage = table.usage.entry(key.to_owned()).or_default();
            usage.held = usage.held.plus(slot.request);
            usage.version += 1;
        }
        table.slots.insert(slot.job_id.clone(), slot.clone());
        Ok(Acquired::Admitted)
    }

    async fn release(&self, job_id: &str, attempt: u32) -> Result<bool> {
        let mut table = self.queue_table();
        let Some(slot) = table.slots.get(job_id).filter(|s| s.attempt == attempt).cloned() else {
            return Ok(false);
        };
        table.slots.remove(job_id);
        for key in [slot.queue.as_str(), ALL_QUEUES] {
            let usage = table.usage.entry(key.to_owned()).or_default();
            usage.held = minus(usage.held, slot.request);
            usage.version += 1;
        }
        Ok(true)
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        Ok(self.queue_table().slots.values().cloned().collect())
    }

    async fn slot(&self, job_id: &str) -> Result<Option<Slot>> {
        Ok(self.queue_table().slots.get(job_id).cloned())
    }

    async fn repair(&self, queue: &str, seen: &Usage, truth: Resources) -> Result<bool> {
        let mut table = self.queue_table();
        let usage = table.usage.entry(queue.to_owned()).or_default();
        if usage != seen {
            return Ok(false);
        }
        *usage = Usage { held: truth, version: seen.version + 1, below_zero: false };
        Ok(true)
    }
}

impl JobStore for MemoryJobStore {
    async fn create(&self, record: &JobRecord) -> Result<Created> {
        let mut jobs = self.lock();
        if let Some(existing) = jobs.get(&record.job_id) {
            return Ok(Created::Exists(Box::new(existing.clone())));
        }
        let mut record = record.clone();
        // As in DynamoDB: the TTL must never delete a job that is still followed.
        if record.state.is_active() {
            record.expires_at = None;
        }
        jobs.insert(record.job_id.clone(), record);
        Ok(Created::New)
    }

    async fn replace_tombstone(&self, record: &JobRecord, tombstone: &JobRecord) -> Result<Created> {
        let mut jobs = self.lock();
        match jobs.get(&record.job_id) {
            Some(existing) if existing == tombstone => {
                jobs.insert(record.job_id.clone(), record.clone());
                Ok(Created::New)
            }
            Some(existing) => Ok(Created::Exists(Box::new(existing.clone()))),
            None => {
                jobs.insert(record.job_id.clone(), record.clone());
                Ok(Created::New)
            }
        }
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>> {
        Ok(self.lock().get(job_id).cloned())
    }

    async fn change(&self, job_id: &str, change: &StateChange) -> Result<Changed> {
        super::debug_assert_allowed(job_id, change);
        let mut jobs = self.lock();
        match jobs.get_mut(job_id) {
            Some(record) if record.state == change.expected && record.attempt == change.expected_attempt => {
                record.apply(change);
                Ok(Changed::Applied(Box::new(record.clone())))
            }
            current => Ok(Changed::Conflict(current.map(|record| Box::new(record.clone())))),
        }
    }

    async fn active(&self, page_size: u32, from: Option<&str>) -> Result<ActivePage> {
        let page_size = page_size.max(1) as usize;
        let after = from.map(decode_token).transpose()?;
        let jobs = self.lock();
        let mut active: Vec<&JobRecord> = jobs.values().filter(|record| record.is_followed()).collect();
        active.sort_by(|a, b| (a.updated_at, &a.job_id).cmp(&(b.updated_at, &b.job_id)));
        let mut rest = active
            .into_iter()
            .filter(|record| after.as_ref().is_none_or(|(at, id)| (record.updated_at, &record.job_id) > (*at, id)));
        let page: Vec<JobRecord> = rest.by_ref().take(page_size).cloned().collect();
        let next = match (rest.next(), page.last()) {
            (Some(_), Some(last)) => Some(encode_token(last)),
            _ => None,
        };
        Ok(ActivePage { jobs: page, next })
    }

    async fn waiting(&self, queue: &str, limit: u32) -> Result<Vec<JobRecord>> {
        let jobs = self.lock();
        let mut waiting: Vec<&JobRecord> =
            jobs.values().filter(|r| r.wait.as_ref().is_some_and(|w| w.queue == queue)).collect();
        waiting.sort_by(|a, b| a.wait.as_ref().map(|w| &w.order).cmp(&b.wait.as_ref().map(|w| &w.order)));
        Ok(waiting.into_iter().take(limit as usize).cloned().collect())
    }

    async fn ahead_of(&self, record: &JobRecord) -> Result<Option<u64>> {
        let Some(place) = &record.wait else { return Ok(None) };
        let jobs = self.lock();
        let ahead = jobs
            .values()
            .filter(|r| r.wait.as_ref().is_some_and(|w| w.queue == place.queue && w.order < place.order))
            .count();
        Ok(Some(ahead as u64))
    }
}

/// The position after `record`: its update time (nine digits, so the text is exact)
/// and its job id. Opaque to callers, and only meaningful to this store.
fn encode_token(record: &JobRecord) -> String {
    format!("{:.9} {}", record.updated_at, record.job_id)
}

fn decode_token(token: &str) -> Result<(Timestamp, String)> {
    let parsed =
        token.split_once(' ').and_then(|(at, job_id)| Some((at.parse::<Timestamp>().ok()?, job_id.to_owned())));
    parsed.ok_or_else(|| Error::Store {
        operation: "query active jobs",
        retryable: false,
        source: format!("invalid page token {token:?} (pass back the `next` of the previous page)").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use podbridge_core::record::Source;
    use podbridge_core::state::JobState::{self, *};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn queued(job_id: &str, second: i64) -> JobRecord {
        JobRecord::new(job_id, Queued, Source::Direct, at(second), "Dispatched", "recorded")
    }

    fn change(from: JobState, attempt: u32, to: JobState, second: i64) -> StateChange {
        StateChange::new(from, attempt, to, at(second), "Test", "a test moved it")
    }

    #[tokio::test]
    async fn a_second_create_finds_the_first_record_unchanged() {
        let store = MemoryJobStore::new();
        let first = queued("job-1", 0);
        assert_eq!(store.create(&first).await.unwrap(), Created::New);

        let mut other = queued("job-1", 5);
        other.namespace = Some("elsewhere".into());
        assert_eq!(store.create(&other).await.unwrap(), Created::Exists(Box::new(first.clone())));
        assert_eq!(store.get("job-1").await.unwrap(), Some(first));
        assert_eq!(store.get("job-2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_change_applies_only_from_the_expected_state_and_attempt() {
        let store = MemoryJobStore::new();
        store.create(&queued("job-1", 0)).await.unwrap();

        let mut setting_up = change(Queued, 1, SettingUp, 1);
        setting_up.pod_name = Some("job-1-a1".into());
        let Changed::Applied(applied) = store.change("job-1", &setting_up).await.unwrap() else {
            panic!("the first change applies");
        };
        assert_eq!((applied.state, applied.pod_name.as_deref()), (SettingUp, Some("job-1-a1")));
        assert_eq!(applied.history.len(), 2);

        // A writer that still sees `queued`, and one with an old attempt: both lose.
        let stale_state = store.change("job-1", &change(Queued, 1, Executing, 2)).await.unwrap();
        assert_eq!(stale_state, Changed::Conflict(Some(applied.clone())));
        let stale_attempt = store.change("job-1", &change(SettingUp, 0, Executing, 2)).await.unwrap();
        assert_eq!(stale_attempt, Changed::Conflict(Some(applied.clone())));
        assert_eq!(store.get("job-1").await.unwrap().as_ref(), Some(&*applied), "nothing written");

        let missing = store.change("job-2", &change(Queued, 1, SettingUp, 2)).await.unwrap();
        assert_eq!(missing, Changed::Conflict(None));
        assert_eq!(store.get("job-2").await.unwrap(), None, "a change never creates a job");
    }

    #[tokio::test]
    async fn a_retry_starts_a_new_attempt_and_keeps_the_history() {
        let store = MemoryJobStore::new();
        store.create(&queued("job-1", 0)).await.unwrap();
        let mut failed = change(Queued, 1, Failed, 1);
        failed.exit_code = Some(3);
        failed.pod_name = Some("job-1-a1".into());
        failed.expires_at = Some(42);
        store.change("job-1", &failed).await.unwrap();

        let mut retry = change(Failed, 1, Queued, 2);
        retry.new_attempt = Some(2);
        let Changed::Applied(record) = store.change("job-1", &retry).await.unwrap() else {
            panic!("the retry applies");
        };
        assert_eq!((record.state, record.attempt), (Queued, 2));
        assert_eq!((record.exit_code, record.pod_name, record.expires_at), (None, None, None));
        assert_eq!(record.state_times, BTreeMap::from([(Queued, at(2))]));
        let moves: Vec<_> = record.history.iter().map(|t| (t.from, t.to, t.attempt)).collect();
        assert_eq!(moves, [(None, Queued, 1), (Some(Queued), Failed, 1), (Some(Failed), Queued, 2)]);
    }

    #[tokio::test]
    async fn active_pages_hold_every_active_job_once_oldest_update_first() {
        let store = MemoryJobStore::new();
        // Created in reverse time order, so id order and time order differ.
        for i in 0..7 {
            store.create(&queued(&format!("job-{i}"), 10 - i)).await.unwrap();
        }
        store.create(&queued("same-time", 10)).await.unwrap();
        store.change("job-3", &change(Queued, 1, Succeeded, 20)).await.unwrap();
        store.change("job-4", &change(Queued, 1, Executing, 30)).await.unwrap();

        let mut pages = Vec::new();
        let mut from = None;
        loop {
            let page = store.active(3, from.as_deref()).await.unwrap();
            pages.push(page.jobs.iter().map(|job| job.job_id.clone()).collect::<Vec<_>>());
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        assert_eq!(
            pages,
            [vec!["job-6", "job-5", "job-2"], vec!["job-1", "job-0", "same-time"], vec!["job-4"]],
            "job-3 is terminal; job-4 was updated last; equal times in job id order"
        );
        assert_eq!(store.active(0, None).await.unwrap().jobs.len(), 1, "a page has at least one job");
    }

    #[tokio::test]
    async fn active_pages_read_every_page_in_order_and_stop_when_dropped() {
        use futures::{StreamExt as _, TryStreamExt as _};
        let store = MemoryJobStore::new();
        for i in 0..7 {
            store.create(&queued(&format!("job-{i}"), 10 - i)).await.unwrap();
        }
        let ids = |pages: Vec<ActivePage>| -> Vec<Vec<String>> {
            pages.into_iter().map(|page| page.jobs.into_iter().map(|job| job.job_id).collect()).collect()
        };
        let pages: Vec<ActivePage> = crate::store::active_pages(&store, 3).try_collect().await.unwrap();
        assert_eq!(
            ids(pages),
            [vec!["job-6", "job-5", "job-4"], vec!["job-3", "job-2", "job-1"], vec!["job-0"]],
            "oldest update first, as the index pages them"
        );
        let first: Vec<_> = crate::store::active_pages(&store, 3).take(1).try_collect().await.unwrap();
        assert_eq!(ids(first), [vec!["job-6", "job-5", "job-4"]]);
        let empty = MemoryJobStore::new();
        let pages: Vec<ActivePage> = crate::store::active_pages(&empty, 3).try_collect().await.unwrap();
        assert_eq!(pages.len(), 1, "an empty index is one empty page");
        assert!(pages[0].jobs.is_empty());
    }

    #[tokio::test]
    async fn a_full_last_page_has_no_next_and_a_foreign_token_is_refused() {
        let store = MemoryJobStore::new();
        store.create(&queued("job-1", 0)).await.unwrap();
        store.create(&queued("job-2", 1)).await.unwrap();
        assert_eq!(store.active(2, None).await.unwrap().next, None);

        let err = store.active(2, Some("garbage")).await.unwrap_err();
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn an_active_record_is_created_without_an_expiry() {
        let store = MemoryJobStore::new();
        let mut record = queued("job-1", 0);
        record.expires_at = Some(1);
        store.create(&record).await.unwrap();
        assert_eq!(store.get("job-1").await.unwrap().and_then(|r| r.expires_at), None);

        let mut rejected = JobRecord::new("job-2", Rejected, Source::Direct, at(0), "Invalid", "no image");
        rejected.expires_at = Some(1);
        store.create(&rejected).await.unwrap();
        assert_eq!(store.get("job-2").await.unwrap().and_then(|r| r.expires_at), Some(1));
        assert!(store.active(10, None).await.unwrap().jobs.iter().all(|job| job.job_id == "job-1"));
    }
}
