//! Acting on one job: decide about it from what its pod says, then start its attempt,
//! write its changes, or delete its pod. The pass and the watch both come here.

use jiff::Timestamp;
use podbridge::cluster::Cluster;
use podbridge::error::Result;
use podbridge::store::{Changed, Store};
use podbridge_core::admission::attempt_request;
use podbridge_core::observe::{Observed, explain_with_events};
use podbridge_core::pod::attempt_pod_name;
use podbridge_core::reconcile::{Decision, WhenFull, decide, needs_events};
use podbridge_core::record::{JobRecord, REQUEUED, StateChange};
use tracing::info;

use crate::Reconciler;
use crate::report::{JobResult, stuck_in};

impl<S: Store, C: Cluster> Reconciler<S, C> {
    /// Decides about one job from what its pod says (`None`: no pod) and carries it out.
    pub(crate) async fn reconcile_job(
        &self,
        record: JobRecord,
        observed: Option<Observed>,
        now: Timestamp,
    ) -> Result<JobResult> {
        let job = record.stored_job()?;
        let mut result = JobResult::default();
        let observed = match observed {
            Some(observed) if needs_events(&record, &observed, now, &self.thresholds) => {
                Some(self.explain(&record, observed).await?)
            }
            other => other,
        };
        let ttl = self.attempts.record_ttl();
        let mut decision = decide(&record, &job, observed.as_ref(), now, &self.thresholds, ttl, WhenFull::Wait);
        // Only a pod the full cluster cannot place asks what its queue and the node sizes
        // say; a queue table that cannot be read then fails it as before queues.
        if is_requeue(&decision) && self.when_full(&record, &job).await == WhenFull::Fail {
            decision = decide(&record, &job, observed.as_ref(), now, &self.thresholds, ttl, WhenFull::Fail);
        }
        match decision {
            Decision::Nothing => {}
            Decision::Dispatch => {
                let outcome = self.attempts.start(&record, &job).await?;
                result.dispatched = matches!(outcome, podbridge::services::Outcome::Dispatched { .. });
            }
            Decision::Write { changes, delete_pod } => {
                let mut all_written = true;
                let mut ended = false;
                for change in &changes {
                    if !self.write(&record.job_id, change, &mut result).await? {
                        all_written = false;
                        break;
                    }
                    ended |= change.to.is_terminal() || change.new_attempt.is_some();
                    result.retried |= change.new_attempt.is_some() && change.reason != REQUEUED;
                    result.requeued |= change.reason == REQUEUED;
                }
                // Only once the record says the attempt is over: a pod podbridge deletes
                // is then never mistaken for one deleted by someone else.
                if delete_pod && all_written {
                    result.pod_deleted = self.delete_pod(&record).await?;
                }
                // The attempt is over once this record write said so (ended, or a new
                // attempt begun): its slot goes back, once. A write that lost its race
                // gives nothing back (the winner may run the attempt on); whatever the
                // winner ended, the next pass's settle gives back.
                if ended {
                    result.released = self.attempts.release_attempt(&record).await?;
                }
            }
        }
        Ok(result)
    }

    /// What a pod of `job` that the full cluster cannot place comes to: it waits for room
    /// only when podbridge knows a node could hold it (the largest node listed or
    /// configured is at least its size) and its queue did not ask to fail fast. With no
    /// node size known, "no room" and "never fits" look the same to the scheduler, so it
    /// fails as before rather than wait for ever.
    async fn when_full(&self, record: &JobRecord, job: &podbridge_core::validate::Job) -> WhenFull {
        match self.attempts.admission().queues().await {
            Ok(queues) if queues.get(&job.queue).is_some_and(|queue| !queue.fail_unschedulable) => {}
            _ => return WhenFull::Fail,
        }
        let request = attempt_request(record, job);
        let fits = self
            .attempts
            .largest_node()
            .await
            .is_some_and(|node| request.cpu_millis <= node.cpu_millis && request.memory_bytes <= node.memory_bytes);
        if fits { WhenFull::Wait } else { WhenFull::Fail }
    }

    /// Reads a starting pod's events into what it says (a volume that cannot be mounted).
    async fn explain(&self, record: &JobRecord, observed: Observed) -> Result<Observed> {
        let (namespace, name) = attempt_pod(record);
        let events = self.cluster().pod_events(&namespace, &name).await?;
        Ok(explain_with_events(observed, &events))
    }

    /// Applies one change; true when it was written.
    async fn write(&self, job_id: &str, change: &StateChange, result: &mut JobResult) -> Result<bool> {
        match self.store().change(job_id, change).await? {
            Changed::Applied(record) => {
                info!(job_id, attempt = record.attempt, state = %record.state, reason = %change.reason, "{}", change.message);
                result.writes += 1;
                result.recorded = Some(record.state);
                if let Some(class) = change.failure_class {
                    result.failure_class = Some(class);
                    result.stale = stuck_in(class, &change.reason);
                }
                Ok(true)
            }
            Changed::Conflict(_) => {
                result.lost_race = true;
                Ok(false)
            }
        }
    }

    /// Deletes the pod of the record's current attempt; false when it was not there.
    async fn delete_pod(&self, record: &JobRecord) -> Result<bool> {
        let (namespace, name) = attempt_pod(record);
        self.cluster().delete_pod(&namespace, &name, None).await
    }
}

/// Whether `decision` puts an attempt back to wait for room.
fn is_requeue(decision: &Decision) -> bool {
    matches!(decision, Decision::Write { changes, .. } if changes.iter().any(|c| c.reason == REQUEUED))
}

/// The namespace and name of the pod of `record`'s current attempt.
fn attempt_pod(record: &JobRecord) -> (String, String) {
    (record.namespace.clone().unwrap_or_default(), attempt_pod_name(record))
}
