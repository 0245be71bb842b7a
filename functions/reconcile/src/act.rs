//! Acting on one job: decide about it from what its pod says, then start its attempt,
//! write its changes, or delete its pod. The pass and the watch both come here.

use jiff::Timestamp;
use podbridge::cluster::Cluster;
use podbridge::error::Result;
use podbridge::store::{Changed, Store};
use podbridge_core::observe::{Observed, explain_with_events};
use podbridge_core::pod::attempt_pod_name;
use podbridge_core::reconcile::{Decision, WhenFull, decide, needs_events};
use podbridge_core::record::{JobRecord, StateChange};
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
        // Its queue says whether a pod the full cluster cannot place waits or fails.
        let queues = self.attempts.admission().queues().await?;
        let when_full = match queues.get(&job.queue) {
            Some(queue) if queue.fail_unschedulable => WhenFull::Fail,
            _ => WhenFull::Wait,
        };
        match decide(&record, &job, observed.as_ref(), now, &self.thresholds, self.attempts.record_ttl(), when_full) {
            Decision::Nothing => {}
            Decision::Dispatch => {
                let outcome = self.attempts.start(&record, &job).await?;
                result.dispatched = matches!(outcome, podbridge::services::Outcome::Dispatched { .. });
            }
            Decision::Write { changes, delete_pod } => {
                let mut all_written = true;
                for change in &changes {
                    if !self.write(&record.job_id, change, &mut result).await? {
                        all_written = false;
                        break;
                    }
                    result.retried |= change.new_attempt.is_some() && change.reason != podbridge_core::record::REQUEUED;
                    result.requeued |= change.reason == podbridge_core::record::REQUEUED;
                }
                // Only once the record says the attempt is over: a pod podbridge deletes
                // is then never mistaken for one deleted by someone else.
                if delete_pod && all_written {
                    result.pod_deleted = self.delete_pod(&record).await?;
                }
                // The attempt is over once the record says so (ended, or a new attempt
                // begun): its slot is given back, once, whoever gets here first.
                if changes.iter().any(|c| c.to.is_terminal() || c.new_attempt.is_some()) {
                    result.released = self.attempts.release(&record.job_id, record.attempt).await?;
                }
            }
        }
        Ok(result)
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

/// The namespace and name of the pod of `record`'s current attempt.
fn attempt_pod(record: &JobRecord) -> (String, String) {
    (record.namespace.clone().unwrap_or_default(), attempt_pod_name(record))
}
