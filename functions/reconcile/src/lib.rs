//! One reconcile pass: read every active job (a `Query` on the active-jobs index, page
//! by page), list the managed pods of their namespaces (one paginated LIST each), join
//! them by job id and attempt, decide about each job with the pure
//! [`podbridge::reconcile::decide`], and carry out the decisions concurrently with
//! conditional writes. Overlapping passes are safe: a lost race is counted, not an
//! error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge::cluster::Cluster;
use podbridge::error::{Result, error_chain};
use podbridge::observe::observe;
use podbridge::pod::{ATTEMPT_LABEL, JOB_ID_LABEL, pod_name};
use podbridge::reconcile::{Cleanup, Decision, Thresholds, cleanup, decide};
use podbridge::record::{JobRecord, StateChange};
use podbridge::store::{Changed, JobStore};
use podbridge::submit::{Submitter, stored_job};
use serde::Serialize;
use tracing::{error, info, warn};

/// What a pass saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub active_jobs: usize,
    pub pods_listed: usize,
    /// Requests to the Kubernetes API for reading (LIST pages).
    pub kube_list_requests: u32,
    /// Pages read from the active-jobs index.
    pub store_pages: u32,
    /// Conditional writes that changed a record.
    pub writes: usize,
    pub dispatched: usize,
    pub retries: usize,
    pub pods_deleted: usize,
    /// Writes that found the job already moved (another pass or function got there first).
    pub lost_races: usize,
    /// Jobs that could not be reconciled this pass (retried on the next).
    pub errors: usize,
    /// New states recorded, by state.
    pub recorded: BTreeMap<String, usize>,
    /// Failed attempts, by failure class.
    pub failed_by_class: BTreeMap<String, usize>,
}

/// What happened to one job.
#[derive(Debug, Default)]
struct JobResult {
    writes: usize,
    dispatched: bool,
    retried: bool,
    pod_deleted: bool,
    lost_race: bool,
    recorded: Option<String>,
    failure_class: Option<String>,
}

/// The reconciler and what it needs.
#[derive(Debug)]
pub struct Reconciler<S, C> {
    submitter: Submitter<S, C>,
    thresholds: Thresholds,
    record_ttl: Duration,
    page_size: u32,
    concurrency: usize,
}

impl<S: JobStore, C: Cluster> Reconciler<S, C> {
    pub fn new(submitter: Submitter<S, C>, thresholds: Thresholds, record_ttl: Duration, concurrency: usize) -> Self {
        Self { submitter, thresholds, record_ttl, page_size: 500, concurrency: concurrency.max(1) }
    }

    /// The submitter underneath (its store and cluster).
    pub fn submitter(&self) -> &Submitter<S, C> {
        &self.submitter
    }

    /// Runs one pass at time `now`.
    pub async fn pass(&self, now: Timestamp) -> Result<PassReport> {
        let mut report = PassReport::default();
        let store = self.submitter.store();
        let mut records = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let page = store.active(self.page_size, from.as_deref()).await?;
            report.store_pages += 1;
            records.extend(page.jobs);
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        report.active_jobs = records.len();

        let namespaces: BTreeSet<String> = records.iter().filter_map(|r| r.namespace.clone()).collect();
        let mut pods: HashMap<(String, String), Pod> = HashMap::new();
        for namespace in namespaces {
            let (listed, requests) = self.submitter.cluster().list_managed_pods(&namespace, self.page_size).await?;
            report.kube_list_requests += requests;
            report.pods_listed += listed.len();
            for pod in listed {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                if let (Some(job), Some(attempt)) = (labels.get(JOB_ID_LABEL), labels.get(ATTEMPT_LABEL)) {
                    pods.insert((job.clone(), attempt.clone()), pod);
                }
            }
        }

        // Pods no active job attempt claims: finished jobs' pods, earlier attempts, orphans.
        let active: BTreeSet<(String, String)> =
            records.iter().map(|r| (r.job_id.clone(), r.attempt.to_string())).collect();
        let unclaimed: Vec<Pod> =
            pods.iter().filter(|(key, _)| !active.contains(*key)).map(|(_, pod)| pod.clone()).collect();

        let results = futures::stream::iter(records)
            .map(|record| {
                let pod = pods.remove(&(record.job_id.clone(), record.attempt.to_string()));
                async move {
                    let job_id = record.job_id.clone();
                    match self.reconcile_job(record, pod, now).await {
                        Ok(result) => Some(result),
                        Err(e) => {
                            let level_error = !e.is_retryable();
                            if level_error {
                                error!(job_id = %job_id, error = %error_chain(&e), "cannot reconcile this job");
                            } else {
                                warn!(job_id = %job_id, error = %error_chain(&e), "will try again next pass");
                            }
                            None
                        }
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await;
        for result in results {
            let Some(result) = result else {
                report.errors += 1;
                continue;
            };
            report.writes += result.writes;
            report.dispatched += usize::from(result.dispatched);
            report.retries += usize::from(result.retried);
            report.pods_deleted += usize::from(result.pod_deleted);
            report.lost_races += usize::from(result.lost_race);
            if let Some(state) = result.recorded {
                *report.recorded.entry(state).or_default() += 1;
            }
            if let Some(class) = result.failure_class {
                *report.failed_by_class.entry(class).or_default() += 1;
            }
        }
        let cleaned = futures::stream::iter(unclaimed)
            .map(|pod| async move { self.clean_up(pod, now).await })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await;
        for outcome in cleaned {
            match outcome {
                Ok(deleted) => report.pods_deleted += usize::from(deleted),
                Err(e) => {
                    warn!(error = %error_chain(&e), "cleaning up a pod failed; next pass tries again");
                    report.errors += 1;
                }
            }
        }
        info!(report = %serde_json::to_string(&report).unwrap_or_default(), "reconcile pass done");
        Ok(report)
    }

    async fn reconcile_job(&self, record: JobRecord, pod: Option<Pod>, now: Timestamp) -> Result<JobResult> {
        let job = stored_job(&record)?;
        let observed = pod.as_ref().map(observe);
        let mut result = JobResult::default();
        match decide(&record, &job, observed.as_ref(), now, &self.thresholds, self.record_ttl) {
            Decision::Nothing => {}
            Decision::Dispatch => {
                self.submitter.start_attempt(&record, &job).await?;
                result.dispatched = true;
            }
            Decision::Record { change, delete_pod } => {
                if delete_pod {
                    result.pod_deleted = self.delete_pod(&record, &job.id).await?;
                }
                self.write(&record.job_id, &change, &mut result).await?;
            }
            Decision::FailAndRetry { failed, retry, delete_pod } => {
                if delete_pod {
                    result.pod_deleted = self.delete_pod(&record, &job.id).await?;
                }
                if self.write(&record.job_id, &failed, &mut result).await? {
                    result.retried = self.write(&record.job_id, &retry, &mut result).await?;
                }
            }
        }
        Ok(result)
    }

    /// Applies one change; true when it was written.
    async fn write(&self, job_id: &str, change: &StateChange, result: &mut JobResult) -> Result<bool> {
        match self.submitter.store().change(job_id, change).await? {
            Changed::Applied(record) => {
                info!(job_id, attempt = record.attempt, state = %record.state, reason = %change.reason, "{}", change.message);
                result.writes += 1;
                result.recorded = Some(record.state.to_string());
                if let Some(class) = &change.failure_class {
                    result.failure_class = Some(class.clone());
                }
                Ok(true)
            }
            Changed::Conflict(_) => {
                result.lost_race = true;
                Ok(false)
            }
        }
    }

    /// Deletes an unclaimed pod when its keep time (or the orphan grace) has passed.
    async fn clean_up(&self, pod: Pod, now: Timestamp) -> Result<bool> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let job_id = labels.get(JOB_ID_LABEL).cloned().unwrap_or_default();
        let attempt = labels.get(ATTEMPT_LABEL).and_then(|a| a.parse().ok()).unwrap_or(0);
        let record = self.submitter.store().get(&job_id).await?;
        let keep = record
            .as_ref()
            .and_then(|r| stored_job(r).ok())
            .map_or(Duration::ZERO, |job| Duration::from_secs(job.keep_pod_seconds));
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        match cleanup(created, attempt, record.as_ref(), keep, now, &self.thresholds) {
            Cleanup::Keep => Ok(false),
            Cleanup::Delete(why) => {
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let deleted =
                    self.submitter.cluster().delete_pod(&namespace, &name, pod.metadata.uid.as_deref()).await?;
                if deleted {
                    info!(job_id = %job_id, pod = %name, "deleted the pod: {why}");
                }
                Ok(deleted)
            }
        }
    }

    async fn delete_pod(&self, record: &JobRecord, job_id: &str) -> Result<bool> {
        let namespace = record.namespace.clone().unwrap_or_default();
        let name = record.pod_name.clone().unwrap_or_else(|| pod_name(job_id, record.attempt));
        self.submitter.cluster().delete_pod(&namespace, &name, None).await
    }
}

/// The pass's figures as CloudWatch metrics (printed as EMF lines by the caller).
pub fn record_metrics(report: &PassReport, duration: Duration, metrics: &podbridge::metrics::Metrics) {
    use podbridge::metrics::{Counter, Timing};
    // Only what happened is counted; CloudWatch treats the rest as missing data.
    let add = |counter: Counter, n: u64| {
        if n > 0 {
            metrics.add(counter, n);
        }
    };
    let recorded = |state: &str| report.recorded.get(state).copied().unwrap_or(0) as u64;
    add(Counter::Started, recorded("executing"));
    add(Counter::Succeeded, recorded("succeeded"));
    for (class, count) in &report.failed_by_class {
        if let Ok(class) = serde_json::from_value(serde_json::Value::String(class.clone())) {
            add(Counter::Failed(class), *count as u64);
        }
    }
    // Jobs a crashed dispatcher left queued, or retries due, started by this pass.
    add(Counter::StaleFound(podbridge::state::JobState::Queued), report.dispatched as u64);
    add(Counter::Retries, report.retries as u64);
    metrics.time(Timing::ReconcileDuration, duration);
}

/// Reconcile thresholds from `PODBRIDGE_*_SECONDS` variables, defaults otherwise.
pub fn thresholds_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Thresholds> {
    let defaults = Thresholds::default();
    let seconds = |name: &str, default: Duration| -> Result<Duration> {
        match lookup(name).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| podbridge::Error::Config(format!("{name}={text:?} is not a whole number of seconds"))),
        }
    };
    Ok(Thresholds {
        redispatch_after: seconds("PODBRIDGE_REDISPATCH_AFTER_SECONDS", defaults.redispatch_after)?,
        stuck_after: seconds("PODBRIDGE_STUCK_AFTER_SECONDS", defaults.stuck_after)?,
        unschedulable_after: seconds("PODBRIDGE_UNSCHEDULABLE_AFTER_SECONDS", defaults.unschedulable_after)?,
        start_limit: seconds("PODBRIDGE_START_LIMIT_SECONDS", defaults.start_limit)?,
        deadline_grace: seconds("PODBRIDGE_DEADLINE_GRACE_SECONDS", defaults.deadline_grace)?,
        orphan_grace: seconds("PODBRIDGE_ORPHAN_GRACE_SECONDS", defaults.orphan_grace)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_report_becomes_metrics_with_failure_classes() {
        let report = PassReport {
            recorded: BTreeMap::from([("succeeded".to_owned(), 2), ("failed".to_owned(), 1)]),
            failed_by_class: BTreeMap::from([("oom_killed".to_owned(), 1)]),
            retries: 1,
            ..PassReport::default()
        };
        let metrics = podbridge::metrics::Metrics::new("podbridge", "reconcile");
        record_metrics(&report, Duration::from_millis(1500), &metrics);
        let lines = metrics.emf_lines(0).join("\n");
        for expected in ["\"Succeeded\":2", "\"FailureClass\":\"oom_killed\"", "\"Retries\":1", "ReconcileDuration"] {
            assert!(lines.contains(expected), "{expected} missing from {lines}");
        }
        assert!(!lines.contains("\"Started\""), "nothing started: no Started metric");
    }
}
