//! Admission, carried out: the queues read (and kept a moment), a job checked against
//! them before it is recorded, and an attempt's slot taken before its pod is created
//! and given back when the attempt ends. What to admit is the core's
//! ([`podbridge_core::admission`]); the slot and the usage it changes are written in one
//! transaction by the [`QueueStore`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use podbridge_core::admission::{Limits, NodeSize, Queues, Resources, Slot, Waiting, admit, never_fits};
use podbridge_core::record::JobRecord;
use podbridge_core::validate::{Job, Problem};
use tracing::info;

use crate::error::Result;
use crate::store::{ALL_QUEUES, Acquired, QueueStore};

/// How long queue definitions read from the table are used before they are read
/// again: a change made with `podbridge queues` takes effect within this.
pub const QUEUES_REFRESH: Duration = Duration::from_secs(2);

/// What an acquire decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// The attempt holds its slot: create its pod.
    Go,
    /// No room: the job waits, for this reason ("queue etl: 20 of 20 jobs held").
    Wait(String),
}

/// Takes and gives back slots for one deployment, with its queues cached.
#[derive(Debug)]
pub struct Admission<S> {
    store: Arc<S>,
    /// The limit across all queues when none is stored (the deployment's parameter).
    default_total: Limits,
    /// The shape of the largest node an autoscaler may add (the deployment's
    /// parameter), beside the nodes the cluster lists.
    largest_node: Option<NodeSize>,
    cache: Mutex<Option<(Instant, Arc<Queues>)>>,
}

impl<S> Admission<S> {
    pub fn new(store: Arc<S>, default_total: Limits, largest_node: Option<NodeSize>) -> Self {
        Self { store, default_total, largest_node, cache: Mutex::new(None) }
    }

    /// The configured shape of the largest node the cluster can add.
    pub fn configured_largest_node(&self) -> Option<NodeSize> {
        self.largest_node
    }
}

impl<S: QueueStore> Admission<S> {
    /// The queues, read at most [`QUEUES_REFRESH`] ago.
    pub async fn queues(&self) -> Result<Arc<Queues>> {
        if let Some((read, queues)) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && read.elapsed() < QUEUES_REFRESH
        {
            return Ok(Arc::clone(queues));
        }
        self.fresh_queues().await
    }

    /// The queues as stored now.
    pub async fn fresh_queues(&self) -> Result<Arc<Queues>> {
        let stored = self.store.definitions().await?;
        let queues = Arc::new(Queues::new(stored.queues, stored.total.unwrap_or(self.default_total)));
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), Arc::clone(&queues)));
        Ok(queues)
    }

    /// Why `job` can never be admitted, if it cannot: its queue does not exist, or it
    /// is larger than its queue's limits, all queues' limit, or `largest` (the largest
    /// node the cluster has or can add).
    pub async fn refuse(&self, job: &Job, largest: Option<NodeSize>) -> Result<Option<Problem>> {
        let mut queues = self.queues().await?;
        // A queue made a moment ago may be missing from the queues read before it.
        if queues.get(&job.queue).is_none() {
            queues = self.fresh_queues().await?;
        }
        let Some(queue) = queues.get(&job.queue) else {
            return Ok(Some(Problem {
                field: "job.queue".to_owned(),
                message: format!("there is no queue {:?}; the queues are: {}", job.queue, queues.names()),
            }));
        };
        let request = Resources::job(job.cpu_millis, job.memory_bytes);
        Ok(never_fits(request, queue, &queues.total, largest).map(|why| Problem {
            field: "job.resources".to_owned(),
            message: format!("the job can never be admitted: {why}"),
        }))
    }

    /// Takes the slot of `record`'s current attempt of `job` (sized as the attempt runs:
    /// `attempt_request`), or says why it must wait. Safe to repeat: a slot held for the attempt admits it.
    pub async fn acquire(&self, record: &JobRecord, job: &Job) -> Result<Admit> {
        let queues = self.queues().await?;
        let Some(queue) = queues.get(&job.queue) else {
            return Ok(Admit::Wait(format!("queue {} does not exist", job.queue)));
        };
        let slot = Slot::of(record, job);
        if queue.paused {
            // A paused queue admits nothing new, but an attempt already admitted (a
            // redelivery after a crash) goes on.
            if self.store.slot(&slot.job_id).await?.is_some_and(|held| held.attempt == slot.attempt) {
                return Ok(Admit::Go);
            }
            return Ok(Admit::Wait(format!("queue {} is paused", queue.name)));
        }
        for _ in 0..3 {
            match self.store.acquire(&slot, &queue.limits, &queues.total).await? {
                Acquired::Admitted | Acquired::Held => return Ok(Admit::Go),
                // An earlier attempt's slot, not given back (a crash between the end of
                // that attempt and its release): this attempt replaces it.
                Acquired::Other(stale) if stale.attempt < slot.attempt => {
                    info!(job_id = %slot.job_id, attempt = stale.attempt, "releasing an earlier attempt's slot");
                    self.store.release(&stale.job_id, stale.attempt).await?;
                }
                Acquired::Other(newer) => {
                    return Ok(Admit::Wait(format!("attempt {} of this job holds its slot", newer.attempt)));
                }
                Acquired::Full => return Ok(Admit::Wait(self.why_full(&queues, &slot).await?)),
            }
        }
        Ok(Admit::Wait("its slot kept changing; the reconciler admits it".to_owned()))
    }

    /// In words, what holds `slot` back: the core's reason for the first job of a
    /// queue holding what the usage says.
    async fn why_full(&self, queues: &Queues, slot: &Slot) -> Result<String> {
        let usage = self.store.usage().await?;
        let held: BTreeMap<String, Resources> =
            usage.into_iter().filter(|(queue, _)| queue != ALL_QUEUES).map(|(queue, u)| (queue, u.held)).collect();
        let waiting = Waiting {
            job_id: slot.job_id.clone(),
            queue: slot.queue.clone(),
            priority: 0,
            queued_at: jiff::Timestamp::UNIX_EPOCH,
            request: slot.request,
        };
        let plan = admit(queues, &held, std::slice::from_ref(&waiting));
        Ok(plan
            .wait
            .get(&slot.job_id)
            .map(|hold| hold.reason.clone())
            .filter(|reason| !reason.is_empty())
            .unwrap_or_else(|| format!("queue {}: no room at the moment it asked", slot.queue)))
    }

    /// Gives back the slot of `job_id`'s `attempt`; false when it held none (already
    /// given back, or never taken).
    pub async fn release(&self, job_id: &str, attempt: u32) -> Result<bool> {
        self.store.release(job_id, attempt).await
    }

    /// Gives back the slot of `record`'s current attempt of `job`, sized as `acquire`
    /// took it (one request when it is exactly that); false when it held none.
    pub async fn release_attempt(&self, record: &JobRecord, job: &Job) -> Result<bool> {
        self.store.release_known(&Slot::of(record, job)).await
    }
}
