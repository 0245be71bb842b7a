//! One pass: every active record against the pods of its namespace, then the pods no
//! active attempt claims. This is the one place in the crate that reads every active
//! record.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::TryStreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge::cluster::Cluster;
use podbridge::error::{Result, error_chain};
use podbridge::store::{ActivePage, Store, active_pages};
use podbridge_core::observe::observe;
use podbridge_core::pod::{attempt_of, is_pod_of};
use podbridge_core::reconcile::{Cleanup, cleanup, kept_by_its_own_word};
use podbridge_core::record::JobRecord;
use tracing::{error, info, warn};

use crate::{PassReport, Reconciler};

/// A job attempt where podbridge puts its pod: namespace, job id, attempt.
type AttemptKey = (String, String, u32);

/// The attempt `record` is on, in its namespace.
fn attempt_key(record: &JobRecord) -> AttemptKey {
    (record.namespace.clone().unwrap_or_default(), record.job_id.clone(), record.attempt)
}

impl<S: Store, C: Cluster> Reconciler<S, C> {
    /// Runs one pass at time `now`.
    pub async fn pass(&self, now: Timestamp) -> Result<PassReport> {
        let mut report = PassReport::default();
        let mut phase = std::time::Instant::now();
        let mut lap = || {
            let ms = u64::try_from(phase.elapsed().as_millis()).unwrap_or(u64::MAX);
            phase = std::time::Instant::now();
            ms
        };
        let pages: Vec<ActivePage> = active_pages(self.store(), self.page_size).try_collect().await?;
        report.store_pages = u32::try_from(pages.len()).unwrap_or(u32::MAX);
        let records: Vec<JobRecord> = pages.into_iter().flat_map(|page| page.jobs).collect();
        report.active_jobs = records.len();
        report.read_ms = lap();

        let namespaces: BTreeSet<String> = records.iter().filter_map(|r| r.namespace.clone()).collect();
        // Keyed by namespace too: a pod only speaks for a job in the job's own namespace
        // (anyone who may create pods elsewhere can copy podbridge's labels).
        let mut pods: HashMap<AttemptKey, Pod> = HashMap::new();
        for namespace in namespaces {
            let listed = self.cluster().list_managed_pods(&namespace, self.page_size).await?;
            report.kube_list_requests += listed.requests;
            report.pods_listed += listed.pods.len();
            // A pod whose job and attempt cannot be read was not made by podbridge (it
            // always writes both), whatever its managed-by label says: it is left alone.
            for pod in listed.pods {
                if let Some((job, attempt)) = attempt_of(&pod) {
                    pods.insert((namespace.clone(), job.to_owned(), attempt), pod);
                }
            }
            report.resource_versions.insert(namespace, listed.resource_version);
        }

        report.list_ms = lap();

        // Pods no active job attempt claims: finished jobs' pods, earlier attempts, orphans.
        let active: BTreeSet<AttemptKey> = records.iter().map(attempt_key).collect();
        let unclaimed: Vec<Pod> =
            pods.iter().filter(|(key, _)| !active.contains(*key)).map(|(_, pod)| pod.clone()).collect();

        let records_seen = records.clone();
        let results = self
            .concurrently(records, |record| {
                let pod = pods.remove(&attempt_key(&record)).filter(|pod| is_pod_of(pod, &record));
                async move {
                    let job_id = record.job_id.clone();
                    match self.reconcile_job(record, pod.as_ref().map(observe), now).await {
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
            .await;
        for result in results {
            match result {
                Some(result) => report.count(result),
                None => report.errors += 1,
            }
        }
        // The queues after the jobs: slots released by the attempts that just ended
        // are room for the jobs that wait.
        match self.settle_queues(&records_seen).await {
            Ok(queues) => report.queues = queues,
            Err(e) => {
                error!(error = %error_chain(&e), "cannot settle the queues; the next pass will");
                report.errors += 1;
            }
        }
        let cleaned = self.concurrently(unclaimed, |pod| async move { self.clean_up(pod, now).await }).await;
        for outcome in cleaned {
            match outcome {
                Ok(deleted) => report.pods_deleted += usize::from(deleted),
                Err(e) => {
                    warn!(error = %error_chain(&e), "cleaning up a pod failed; next pass tries again");
                    report.errors += 1;
                }
            }
        }
        report.act_ms = lap();
        info!(report = %serde_json::to_string(&report).unwrap_or_default(), "reconcile pass done");
        Ok(report)
    }

    /// Deletes an unclaimed pod when its keep time (or the orphan grace) has passed.
    async fn clean_up(&self, pod: Pod, now: Timestamp) -> Result<bool> {
        // The pass only gathers pods whose job and attempt it could read.
        let Some((job_id, attempt)) = attempt_of(&pod).map(|(job, attempt)| (job.to_owned(), attempt)) else {
            return Ok(false);
        };
        // Already being deleted: deleting it again every pass would change nothing. Still
        // within the keep time it carries: kept, whatever the record says (no read, so a
        // finished job's pod costs nothing until its keep time is up).
        if pod.metadata.deletion_timestamp.is_some() || kept_by_its_own_word(&pod, now) {
            return Ok(false);
        }
        let record = self.store().get(&job_id).await?;
        let keep = record
            .as_ref()
            .and_then(|r| r.stored_job().ok())
            .map_or(Duration::ZERO, |job| Duration::from_secs(job.keep_pod_seconds));
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Succeeded" | "Failed"));
        match cleanup(created, attempt, ended, record.as_ref(), keep, now, &self.thresholds) {
            Cleanup::Keep => Ok(false),
            Cleanup::Delete(why) => {
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let deleted = self.cluster().delete_pod(&namespace, &name, pod.metadata.uid.as_deref()).await?;
                if deleted {
                    info!(job_id = %job_id, pod = %name, "deleted the pod: {why}");
                }
                Ok(deleted)
            }
        }
    }
}
