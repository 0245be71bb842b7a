//! Starting an attempt: under the guardrails in force now, one pod per attempt (a
//! deterministic name, and a 409 recognised as podbridge's own pod), and the record
//! moved to `setting_up` only from `queued`; or the attempt recorded as failed for a
//! reason retrying cannot fix.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge_core::admission::{Limits, NodeSize};
use podbridge_core::failure::FailureClass;
use podbridge_core::observe::OOM_KILLED;
use podbridge_core::pod::{PodSettings, attempt_of, build_pod, pod_name};
use podbridge_core::record::{JobRecord, StateChange, WAITING, WaitPlace, expires_at};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, Job, recheck};
use tracing::warn;

use super::Outcome;
use super::admission::{Admission, Admit};
use crate::cluster::{Cluster, PodCreated};
use crate::error::{Error, Result, error_chain};
use crate::store::{Changed, Store};

/// How long the largest node the cluster lists is remembered.
const NODES_REFRESH: Duration = Duration::from_secs(60);

/// The largest node the cluster listed (none, if it lists none), and when it was read.
type ListedNodes = Arc<Mutex<Option<(Instant, Option<NodeSize>)>>>;

/// Starts and ends job attempts. Cheap to clone: the store and the cluster are shared
/// handles, so the submitter and the reconciler of one process use the same clients.
#[derive(Debug)]
pub struct Attempts<S, C> {
    store: Arc<S>,
    cluster: Arc<C>,
    guardrails: Guardrails,
    pods: PodSettings,
    /// How long terminal records stay in the table before its TTL removes them.
    record_ttl: Duration,
    /// Slots and queues.
    admission: Arc<Admission<S>>,
    /// The largest node the cluster listed, and when.
    nodes: ListedNodes,
}

impl<S, C> Clone for Attempts<S, C> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            cluster: Arc::clone(&self.cluster),
            guardrails: self.guardrails.clone(),
            pods: self.pods.clone(),
            record_ttl: self.record_ttl,
            admission: Arc::clone(&self.admission),
            nodes: Arc::clone(&self.nodes),
        }
    }
}

impl<S, C> Attempts<S, C> {
    pub fn new(
        store: Arc<S>,
        cluster: Arc<C>,
        guardrails: Guardrails,
        pods: PodSettings,
        record_ttl: Duration,
    ) -> Self {
        let admission = Arc::new(Admission::new(Arc::clone(&store), Limits::NONE, None));
        Self { store, cluster, guardrails, pods, record_ttl, admission, nodes: Arc::default() }
    }

    /// Admits under `total` across all queues when the queue table sets none, and
    /// counts `largest_node` (the shape an autoscaler adds) among the nodes a job may
    /// get.
    pub fn with_admission(mut self, total: Limits, largest_node: Option<NodeSize>) -> Self {
        self.admission = Arc::new(Admission::new(Arc::clone(&self.store), total, largest_node));
        self
    }

    /// Slots and queues.
    pub fn admission(&self) -> &Admission<S> {
        &self.admission
    }

    /// The job store (a shared handle).
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The cluster (a shared handle).
    pub fn cluster(&self) -> &Arc<C> {
        &self.cluster
    }

    /// The guardrails every attempt is held to.
    pub fn guardrails(&self) -> &Guardrails {
        &self.guardrails
    }

    /// How long terminal records are kept.
    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }

    /// When a record that ends at `now` expires (DynamoDB's TTL, in epoch seconds).
    pub fn expires_at(&self, now: Timestamp) -> Option<i64> {
        Some(expires_at(now, self.record_ttl))
    }
}

impl<S: Store, C: Cluster> Attempts<S, C> {
    /// The largest node a pod may get: of those the cluster lists (read at most a
    /// minute ago) and the configured shape an autoscaler adds, the most of each. A
    /// cluster that does not let podbridge list nodes counts the configured shape only.
    pub async fn largest_node(&self) -> Option<NodeSize> {
        let cached = *self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let listed = match cached {
            Some((read, listed)) if read.elapsed() < NODES_REFRESH => listed,
            _ => {
                let listed = match self.cluster.largest_node().await {
                    Ok(listed) => listed,
                    // Reading nodes is optional (infra/rbac-nodes.yaml grants it).
                    Err(Error::KubeApi { code: 403, .. }) => None,
                    Err(e) => {
                        warn!(error = %error_chain(&e), "cannot list nodes; only the configured largest node counts");
                        None
                    }
                };
                *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), listed));
                listed
            }
        };
        match (listed, self.admission.configured_largest_node()) {
            (Some(a), Some(b)) => Some(NodeSize {
                cpu_millis: a.cpu_millis.max(b.cpu_millis),
                memory_bytes: a.memory_bytes.max(b.memory_bytes),
            }),
            (a, b) => a.or(b),
        }
    }

    /// Gives back the slot of `job_id`'s `attempt` (an ended attempt); false when it
    /// held none.
    pub async fn release(&self, job_id: &str, attempt: u32) -> Result<bool> {
        self.admission.release(job_id, attempt).await
    }

    /// Gives back the slot of `record`'s current attempt (an ended attempt), as it was
    /// taken; false when it held none.
    pub async fn release_attempt(&self, record: &JobRecord) -> Result<bool> {
        match record.stored_job() {
            // A waiting attempt was never admitted: it most likely holds nothing, which
            // one read says more cheaply than a transaction that fails.
            Ok(job) if !record.is_waiting() => self.admission.release_attempt(record, &job).await,
            _ => self.release(&record.job_id, record.attempt).await,
        }
    }

    /// Takes the slot of the record's current attempt, creates its pod and records it
    /// (`queued` → `setting_up`); with no room, records why the job waits (`queued`,
    /// reason `Waiting`). Safe to repeat: the slot and the pod name are fixed per
    /// attempt.
    pub async fn start(&self, record: &JobRecord, job: &Job) -> Result<Outcome> {
        let oom_kills = record.history.iter().filter(|t| t.to == JobState::Failed && t.reason == OOM_KILLED).count();
        let attempt_job = job.with_memory_after(oom_kills);
        // Every attempt runs under the guardrails in force now, not those of the day the
        // job was accepted: an operator who narrows them stops retries too.
        let pod = build_pod(&attempt_job, record.attempt, &self.pods);
        let name = pod_name(&job.id, record.attempt);
        let adopted = match recheck(&attempt_job, &self.guardrails) {
            Ok(()) => None,
            // An attempt whose pod already runs (a redelivery after a crash) is followed,
            // not refused: only a pod not yet created is held to today's rules.
            Err(rejection) => match self.cluster.get_pod(&job.namespace, &name).await? {
                Some(running) if attempt_of(&running) == Some((job.id.as_str(), record.attempt)) => Some(running),
                _ => {
                    let message = format!("attempt {} was not started: {rejection}", record.attempt);
                    return self.fail(record, FailureClass::NoLongerAllowed, "NoLongerAllowed", &message).await;
                }
            },
        };
        if let Admit::Wait(reason) = self.admission.acquire(record, job).await? {
            return self.wait(record, job, &reason).await;
        }
        let created = match adopted {
            Some(running) => Ok(PodCreated::Exists(Box::new(running))),
            None => self.cluster.create_pod(&pod).await,
        };
        let created = match created {
            Ok(PodCreated::New(pod)) => *pod,
            Ok(PodCreated::Exists(existing)) if attempt_of(&existing) == Some((job.id.as_str(), record.attempt)) => {
                *existing
            }
            Ok(PodCreated::Exists(_)) => {
                let reason = format!(
                    "a pod named {name} that podbridge did not create for this job already exists in {}",
                    job.namespace
                );
                return self.fail(record, FailureClass::ApiRejected, "PodNameTaken", &reason).await;
            }
            // Refused by admission for what the pod is (Pod Security, a policy): the job,
            // not the deployment, so it is recorded rather than retried into the
            // dead-letter queue. Other 403s are RBAC: the deployment must be fixed.
            Err(Error::KubeApi { code: 403, message, .. }) if message.contains("violates PodSecurity") => {
                let reason = format!("the Kubernetes API refused the pod: {message}");
                return self.fail(record, FailureClass::ApiRejected, "PodRejected", &reason).await;
            }
            Err(Error::KubeApi { code: 400 | 422, message, .. }) => {
                let reason = format!("the Kubernetes API refused the pod: {message}");
                return self.fail(record, FailureClass::ApiRejected, "PodRejected", &reason).await;
            }
            Err(error) => return Err(error),
        };
        let now = Timestamp::now();
        let mut change = StateChange::new(
            JobState::Queued,
            record.attempt,
            JobState::SettingUp,
            now,
            "PodCreated",
            &format!("pod {name} created in {}", job.namespace),
        );
        change.pod_name = Some(name.clone());
        match self.store.change(&record.job_id, &change).await? {
            Changed::Applied(_) => {
                Ok(Outcome::Dispatched { job_id: record.job_id.clone(), attempt: record.attempt, pod_name: name })
            }
            Changed::Conflict(current) => self.after_lost_race(record, current.map(|c| *c), &created).await,
        }
    }

    /// The record moved while the pod was being created. If the job was cancelled (or
    /// ended) meanwhile, the pod just created must not run.
    async fn after_lost_race(&self, record: &JobRecord, current: Option<JobRecord>, created: &Pod) -> Result<Outcome> {
        let Some(current) = current else {
            return Err(Error::Config(format!(
                "job {} disappeared from the table while it was dispatched",
                record.job_id
            )));
        };
        if current.attempt == record.attempt && current.state.is_terminal() {
            let namespace = created.metadata.namespace.clone().unwrap_or_default();
            let name = created.metadata.name.clone().unwrap_or_default();
            warn!(job_id = %record.job_id, state = %current.state, pod = %name, "the job ended while its pod was created; deleting the pod");
            self.cluster.delete_pod(&namespace, &name, created.metadata.uid.as_deref()).await?;
            self.release_attempt(record).await?;
        }
        Ok(Outcome::AlreadyRecorded { job_id: current.job_id, state: current.state })
    }

    /// Fails a waiting job that can no longer be admitted (`message` names both sizes):
    /// its queue's limit, or all queues', was lowered below its request.
    pub async fn refuse_waiting(&self, record: &JobRecord, message: &str) -> Result<Outcome> {
        self.fail(record, FailureClass::Unschedulable, "NeverFits", message).await
    }

    /// Records that the job waits for room, and why; nothing is written when the
    /// record already says so.
    async fn wait(&self, record: &JobRecord, job: &Job, reason: &str) -> Result<Outcome> {
        let outcome = Outcome::Waiting { job_id: record.job_id.clone(), reason: reason.to_owned() };
        if record.is_waiting() && record.message.as_deref() == Some(reason) {
            return Ok(outcome);
        }
        let mut change =
            StateChange::new(JobState::Queued, record.attempt, JobState::Queued, Timestamp::now(), WAITING, reason);
        change.wait = Some(WaitPlace::new(&job.queue, job.priority, record.created_at, &record.job_id));
        match self.store.change(&record.job_id, &change).await? {
            Changed::Applied(_) => Ok(outcome),
            Changed::Conflict(current) => Ok(Outcome::AlreadyRecorded {
                job_id: record.job_id.clone(),
                state: current.map_or(record.state, |c| c.state),
            }),
        }
    }

    /// Records the attempt as failed for a reason retrying cannot fix.
    async fn fail(&self, record: &JobRecord, class: FailureClass, reason: &str, message: &str) -> Result<Outcome> {
        let now = Timestamp::now();
        let mut change = StateChange::new(JobState::Queued, record.attempt, JobState::Failed, now, reason, message);
        change.failure_class = Some(class);
        change.expires_at = self.expires_at(now);
        let changed = self.store.change(&record.job_id, &change).await?;
        // The slot goes back once the record says the attempt is over: this write, or
        // another writer's that ended it or moved the job on. A starter that won the
        // race runs the attempt, and keeps its slot.
        let over = match &changed {
            Changed::Applied(_) => true,
            Changed::Conflict(current) => {
                current.as_ref().is_none_or(|c| c.attempt != record.attempt || c.state.is_terminal())
            }
        };
        if over {
            self.release_attempt(record).await?;
        }
        match changed {
            Changed::Applied(_) => Ok(Outcome::Failed { job_id: record.job_id.clone(), reason: message.to_owned() }),
            Changed::Conflict(current) => Ok(Outcome::AlreadyRecorded {
                job_id: record.job_id.clone(),
                state: current.map_or(record.state, |c| c.state),
            }),
        }
    }

    /// Deletes the pod recorded for the record's current attempt, if it has one
    /// (deleting a pod that is gone is not an error).
    pub async fn delete_pod(&self, record: &JobRecord) -> Result<()> {
        if let (Some(namespace), Some(pod)) = (&record.namespace, &record.pod_name) {
            self.cluster.delete_pod(namespace, pod, None).await?;
        }
        Ok(())
    }
}
