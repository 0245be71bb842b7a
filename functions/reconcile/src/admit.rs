//! The queues: admitting waiting jobs when room frees, and keeping every usage equal to
//! the slots it counts and every slot held by an attempt that runs. The pass does both
//! ([`Reconciler::settle_queues`]); the watch admits as pods end
//! ([`Reconciler::admit_waiting`]), and every few seconds so that a limit raised or a
//! queue resumed takes effect without waiting for the next pass.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use podbridge::error::{Result, error_chain};
use podbridge::metrics::QueueFigures;
use podbridge::services::Outcome;
use podbridge::store::{ALL_QUEUES, Acquired, Store};
use podbridge_core::admission::{
    Limits, Resources, Slot, Waiting, admit, attempt_request, hold_kind, never_fits, usage_of,
};
use podbridge_core::reconcile::not_before;
use podbridge_core::record::{JobRecord, StateChange, WAITING};
use podbridge_core::state::JobState;
use tracing::{info, warn};

use crate::Reconciler;
use crate::report::QueueReport;

/// How many jobs of each queue one admission round reads from the head of the line:
/// more than a round admits in practice, and a queue whose head is larger than the room
/// holds the rest anyway.
const HEADS_PER_QUEUE: u32 = 20;

impl<S: Store, C: podbridge::cluster::Cluster> Reconciler<S, C> {
    /// Admits the waiting jobs that fit now, in the order [`admit`] gives: reads the
    /// queues, their usage and the head of each line, then starts each admitted job
    /// (its slot is taken in one transaction with the usage, so two rounds racing
    /// never pass a limit: the loser's job waits on).
    pub async fn admit_waiting(&self) -> Result<QueueReport> {
        let mut report = QueueReport::default();
        let queues = self.attempts.admission().queues().await?;
        let usage = self.store().usage().await?;
        let held: BTreeMap<String, Resources> =
            usage.into_iter().filter(|(queue, _)| queue != ALL_QUEUES).map(|(queue, u)| (queue, u.held)).collect();
        let all_held = held.values().fold(Resources::default(), |sum, h| sum.plus(*h));
        let total_room = queues.total.jobs.map(|limit| limit.saturating_sub(all_held.jobs));
        let mut records: BTreeMap<String, JobRecord> = BTreeMap::new();
        for (name, queue) in &queues.queues {
            // Only as many of the line as could be admitted now, and one more to say
            // what holds the rest: a full queue costs one small read.
            let queue_room = queue.limits.jobs.map(|limit| limit.saturating_sub(held.get(name).map_or(0, |h| h.jobs)));
            let room =
                if queue.paused { 0 } else { queue_room.into_iter().chain(total_room).min().unwrap_or(u32::MAX) };
            let heads = room.saturating_add(1).min(HEADS_PER_QUEUE);
            for record in self.store().waiting(name, heads).await? {
                records.insert(record.job_id.clone(), record);
            }
        }
        if records.is_empty() {
            return Ok(report);
        }
        let now = Timestamp::now();
        let mut waiting = Vec::new();
        for record in records.values() {
            let Ok(job) = record.stored_job() else { continue };
            let request = attempt_request(record, &job);
            // A limit lowered since it was accepted: it would hold its line for ever, so
            // it fails now, naming both sizes. (Not the nodes: an autoscaled pool scaled
            // in lists smaller nodes than it can add.)
            if let Some(queue) = queues.get(&job.queue)
                && let Some(why) = never_fits(request, queue, &queues.total, None)
            {
                let message = format!("the job can no longer be admitted: {why}");
                match self.attempts.refuse_waiting(record, &message).await {
                    Ok(_) => report.refused += 1,
                    Err(e) => {
                        warn!(job_id = %record.job_id, error = %error_chain(&e), "cannot fail a job that no longer fits")
                    }
                }
                continue;
            }
            // A job put back for lack of room waits its back-off before it is offered again.
            if record.attempt > 1 && now < not_before(record, &job) {
                continue;
            }
            waiting.push(Waiting {
                job_id: record.job_id.clone(),
                queue: job.queue.clone(),
                priority: job.priority,
                queued_at: record.created_at,
                request,
            });
        }
        let plan = admit(&queues, &held, &waiting);
        report.waiting = records.len().saturating_sub(plan.admit.len());
        // The first job of each line says what holds it now (a queue paused, a limit
        // lowered); the ones behind it say so through their position.
        for (job_id, hold) in plan.wait.iter().filter(|(_, hold)| hold.position == 1) {
            let Some(record) = records.get(job_id) else { continue };
            // Only a new kind of hold is worth a write (and an event), not new figures.
            let said = record.message.as_deref().map(hold_kind);
            if said.as_deref() == Some(hold_kind(&hold.reason).as_str()) || hold.reason.is_empty() {
                continue;
            }
            let mut change =
                StateChange::new(JobState::Queued, record.attempt, JobState::Queued, now, WAITING, &hold.reason);
            change.wait.clone_from(&record.wait);
            if let Err(e) = self.store().change(job_id, &change).await {
                warn!(job_id, error = %error_chain(&e), "cannot say why a job waits; the next round will");
            }
        }
        // Every admitted job starts at once: the plan left room for all of them, and
        // each takes its slot in its own transaction (a round racing another loses
        // nothing but the race: its job waits on).
        let starts = self
            .concurrently(plan.admit.iter().filter_map(|id| records.get(id)), |seen| async move {
                // The index may lag a write: only the record as it is now (still waiting,
                // at the same attempt; not cancelled meanwhile) is started.
                let Some(record) = self.store().get(&seen.job_id).await? else { return Ok(None) };
                if !(record.is_waiting() && record.attempt == seen.attempt) {
                    return Ok(None);
                }
                let job = record.stored_job()?;
                self.attempts.start(&record, &job).await.map(Some)
            })
            .await;
        for started in starts {
            match started {
                Ok(Some(Outcome::Dispatched { .. })) => report.admitted += 1,
                Ok(_) => {}
                Err(e) => warn!(error = %error_chain(&e), "cannot admit a waiting job; the next round will"),
            }
        }
        if report.admitted > 0 {
            info!(admitted = report.admitted, waiting = report.waiting, "admitted waiting jobs");
        }
        Ok(report)
    }

    /// Puts the queues right against `records` (every active job, as the pass read
    /// them): each usage equal to the sum of its slots, each slot held by an attempt
    /// that is admitted and not over, each admitted attempt holding one. Then admits
    /// what fits.
    pub(crate) async fn settle_queues(&self, records: &[JobRecord]) -> Result<QueueReport> {
        let mut report = QueueReport::default();
        // The usage before and after the slots are read: a usage whose version did not
        // move in between was not touched by any acquire or release, so the slots read
        // are exactly what it counts.
        let before = self.store().usage().await?;
        let slots = self.store().slots().await?;
        let after = self.store().usage().await?;
        let mut truth = usage_of(&slots);
        let everything = truth.values().fold(Resources::default(), |sum, held| sum.plus(*held));
        truth.insert(ALL_QUEUES.to_owned(), everything);
        let keys: BTreeSet<&String> = after.keys().chain(truth.keys()).collect();
        for key in keys {
            let seen = after.get(key).copied().unwrap_or_default();
            if before.get(key).copied().unwrap_or_default() != seen {
                continue;
            }
            let true_held = truth.get(key).copied().unwrap_or_default();
            if (seen.held != true_held || seen.below_zero) && self.store().repair(key, &seen, true_held).await? {
                warn!(queue = %key, stored = ?seen.held, slots = ?true_held, "a queue's usage differed from its slots; repaired");
                report.drift_repaired += 1;
            }
        }

        // Slots against the records.
        let active: BTreeMap<&str, &JobRecord> = records.iter().map(|r| (r.job_id.as_str(), r)).collect();
        for slot in &slots {
            match active.get(slot.job_id.as_str()) {
                Some(record) if record.attempt == slot.attempt && holds_slot(record) => continue,
                Some(record) if record.attempt == slot.attempt && record.is_waiting() => {
                    // Admitted, then stopped before its pod (a crash): start it now.
                    let started = match record.stored_job() {
                        Ok(job) => self.attempts.start(record, &job).await,
                        Err(e) => Err(e.into()),
                    };
                    match started {
                        Ok(Outcome::Dispatched { .. }) => report.admitted += 1,
                        Ok(_) => {}
                        Err(e) => {
                            warn!(job_id = %record.job_id, error = %error_chain(&e), "cannot start an admitted job")
                        }
                    }
                    continue;
                }
                _ => {}
            }
            // The index may lag: only the record itself, read consistently, says the
            // slot is free.
            let current = self.store().get(&slot.job_id).await?;
            let held = current.as_ref().is_some_and(|r| r.attempt == slot.attempt && (holds_slot(r) || r.is_waiting()));
            if !held && self.attempts.release(&slot.job_id, slot.attempt).await? {
                info!(job_id = %slot.job_id, attempt = slot.attempt, "released a slot no running attempt held");
                report.leaked_released += 1;
            }
        }
        let slotted: BTreeSet<(&str, u32)> = slots.iter().map(|s| (s.job_id.as_str(), s.attempt)).collect();
        for record in records.iter().filter(|r| holds_slot(r) && r.state != JobState::Queued) {
            if slotted.contains(&(record.job_id.as_str(), record.attempt)) {
                continue;
            }
            // The pass read the records before it acted: one it just ended must not
            // be given a slot again. Only the record as it is now says it runs.
            let Some(record) = self.store().get(&record.job_id).await? else { continue };
            if !(holds_slot(&record) && record.state != JobState::Queued) {
                continue;
            }
            let Ok(job) = record.stored_job() else { continue };
            let slot = Slot::of(&record, &job);
            // Its pod exists: it is counted whatever the limits say.
            if self.store().acquire(&slot, &Limits::NONE, &Limits::NONE).await? == Acquired::Admitted {
                info!(job_id = %record.job_id, attempt = record.attempt, "gave an admitted attempt the slot it lacked");
                report.missing_adopted += 1;
            }
        }

        let admitted = self.admit_waiting().await?;
        report.admitted += admitted.admitted;
        report.waiting = admitted.waiting;
        report.figures = self.figures(records).await?;
        Ok(report)
    }

    /// Each queue's waiting jobs, and how long it has had some and admitted none: since
    /// the later of its last admission and its oldest waiting job's wait began. A paused
    /// queue is not stalled: its operator holds it.
    async fn figures(&self, records: &[JobRecord]) -> Result<BTreeMap<String, QueueFigures>> {
        let queues = self.attempts.admission().queues().await?;
        let now = Timestamp::now();
        let mut figures: BTreeMap<String, QueueFigures> = BTreeMap::new();
        let mut waiting_since: BTreeMap<String, Timestamp> = BTreeMap::new();
        let mut admitted_at: BTreeMap<String, Timestamp> = BTreeMap::new();
        for record in records {
            let Ok(job) = record.stored_job() else { continue };
            let entry = figures.entry(job.queue.clone()).or_default();
            if record.is_waiting() {
                entry.waiting += 1;
                let since = record.state_times.get(&JobState::Queued).copied().unwrap_or(record.updated_at);
                let oldest = waiting_since.entry(job.queue.clone()).or_insert(since);
                *oldest = (*oldest).min(since);
            } else if let Some(admitted) = record.state_times.get(&JobState::SettingUp) {
                let latest = admitted_at.entry(job.queue.clone()).or_insert(*admitted);
                *latest = (*latest).max(*admitted);
            }
        }
        for name in queues.queues.keys() {
            figures.entry(name.clone()).or_default();
        }
        for (name, entry) in &mut figures {
            let paused = queues.get(name).is_some_and(|q| q.paused);
            if let (false, Some(since)) = (paused, waiting_since.get(name)) {
                let moved = admitted_at.get(name).map_or(*since, |at| (*at).max(*since));
                entry.stalled_seconds = now.duration_since(moved).as_secs().max(0).unsigned_abs();
            }
        }
        Ok(figures)
    }
}

/// Whether the record's current attempt is admitted and not over: its pod may exist.
fn holds_slot(record: &JobRecord) -> bool {
    matches!(record.state, JobState::SettingUp | JobState::Executing)
        || (record.state == JobState::Queued && !record.is_waiting())
}
