//! One reconcile pass: read every active job (a `Query` on the active-jobs index, page
//! by page), list the managed pods of their namespaces (one paginated LIST each), join
//! them by job id and attempt, decide about each job with the pure
//! [`podbridge_core::reconcile::decide`], and carry out the decisions concurrently with
//! conditional writes. Overlapping passes are safe: a lost race is counted, not an
//! error.
//!
//! After the pass, [`Reconciler::follow`] watches the same pods from the resourceVersion
//! of the pass's lists and applies each change as it happens, so a pod's phase change
//! reaches its record in seconds rather than at the next pass. The pass stays the source
//! of truth: the watch decides with the same [`decide`] and writes the same conditional
//! changes, and anything it misses the next pass finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge::cluster::{Cluster, PodEvent};
use podbridge::error::{Result, error_chain};
use podbridge::store::{Changed, JobStore};
use podbridge::submit::Submitter;
use podbridge_core::failure::FailureClass;
use podbridge_core::observe::{Observed, PodView, explain_with_events, observe};
use podbridge_core::pod::{attempt_of, attempt_pod_name, is_pod_of};
use podbridge_core::reconcile::{Cleanup, Decision, Thresholds, cleanup, decide, needs_events};
use podbridge_core::record::{JobRecord, StateChange};
use podbridge_core::state::JobState;
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
    pub recorded: BTreeMap<JobState, usize>,
    /// Failed attempts, by failure class.
    pub failed_by_class: BTreeMap<FailureClass, usize>,
    /// Attempts failed because they stayed stuck past a limit, by the state they were
    /// stuck in.
    pub stale: BTreeMap<JobState, usize>,
    /// The resourceVersion each namespace was listed at: where [`Reconciler::follow`]
    /// starts watching.
    pub resource_versions: BTreeMap<String, String>,
    /// Where the pass's time went: reading the active jobs, listing the pods, and
    /// deciding and acting on every job and unclaimed pod (milliseconds).
    pub read_ms: u64,
    pub list_ms: u64,
    pub act_ms: u64,
}

/// What following the pods for a while saw and did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct FollowReport {
    /// Pod changes seen.
    pub events: usize,
    /// Conditional writes that changed a record.
    pub writes: usize,
    /// Watch requests made.
    pub watches: u32,
    /// Lists made because a watch's resourceVersion had expired (410) or was unknown.
    pub relists: u32,
    /// Writes that found the job already moved.
    pub lost_races: usize,
    /// Watches or jobs that failed (the next window or pass tries again).
    pub errors: usize,
    /// From a pod's change (its container's start or finish time) to the record of it.
    #[serde(skip)]
    pub latencies: Vec<Duration>,
}

impl FollowReport {
    fn add(&mut self, other: FollowReport) {
        self.events += other.events;
        self.writes += other.writes;
        self.watches += other.watches;
        self.relists += other.relists;
        self.lost_races += other.lost_races;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

/// What happened to one job.
#[derive(Debug, Default)]
struct JobResult {
    writes: usize,
    dispatched: bool,
    retried: bool,
    pod_deleted: bool,
    lost_race: bool,
    recorded: Option<JobState>,
    failure_class: Option<FailureClass>,
    stale: Option<JobState>,
}

/// A step of [`Reconciler::run`], handed to its caller to count and flush.
#[derive(Debug)]
pub enum Step<'a> {
    /// The pass is done; it took this long.
    Passed(&'a PassReport, Duration),
    /// One window of following the pods is done.
    Followed(&'a FollowReport),
}

/// The reconciler and what it needs.
#[derive(Debug)]
pub struct Reconciler<S, C> {
    submitter: Submitter<S, C>,
    thresholds: Thresholds,
    record_ttl: Duration,
    page_size: u32,
    concurrency: usize,
    follow_window: Duration,
}

impl<S: JobStore, C: Cluster> Reconciler<S, C> {
    pub fn new(submitter: Submitter<S, C>, thresholds: Thresholds, record_ttl: Duration, concurrency: usize) -> Self {
        Self {
            submitter,
            thresholds,
            record_ttl,
            page_size: 500,
            concurrency: concurrency.max(1),
            follow_window: Duration::from_secs(5),
        }
    }

    /// How long each watch of [`Reconciler::run`] lasts before its changes are flushed
    /// and it is renewed (default 5 s). Keep it under the deadline of Kubernetes calls.
    pub fn with_follow_window(mut self, window: Duration) -> Self {
        self.follow_window = window.max(Duration::from_secs(1));
        self
    }

    /// One invocation: a pass, then following the pods of the pass's namespaces and of
    /// `namespaces` (those jobs may run in) until `until`, window by window. `after` is
    /// called after the pass and after each window, to count and publish what they did.
    pub async fn run(
        &self,
        namespaces: &[String],
        until: tokio::time::Instant,
        mut after: impl AsyncFnMut(Step<'_>),
    ) -> Result<(PassReport, FollowReport)> {
        let started = std::time::Instant::now();
        let pass = self.pass(Timestamp::now()).await?;
        after(Step::Passed(&pass, started.elapsed())).await;
        let mut versions = pass.resource_versions.clone();
        for namespace in namespaces {
            versions.entry(namespace.clone()).or_default();
        }
        let mut followed = FollowReport::default();
        loop {
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            if remaining < Duration::from_secs(1) {
                break;
            }
            let window = self.follow(&mut versions, remaining.min(self.follow_window)).await;
            after(Step::Followed(&window)).await;
            followed.add(window);
        }
        if followed.watches > 0 {
            info!(report = %serde_json::to_string(&followed).unwrap_or_default(), "followed the pods");
        }
        Ok((pass, followed))
    }

    /// The submitter underneath (its store and cluster).
    pub fn submitter(&self) -> &Submitter<S, C> {
        &self.submitter
    }

    /// Runs one pass at time `now`.
    pub async fn pass(&self, now: Timestamp) -> Result<PassReport> {
        let mut report = PassReport::default();
        let mut phase = std::time::Instant::now();
        let mut lap = || {
            let ms = u64::try_from(phase.elapsed().as_millis()).unwrap_or(u64::MAX);
            phase = std::time::Instant::now();
            ms
        };
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
        report.read_ms = lap();

        let namespaces: BTreeSet<String> = records.iter().filter_map(|r| r.namespace.clone()).collect();
        // Keyed by namespace too: a pod only speaks for a job in the job's own namespace
        // (anyone who may create pods elsewhere can copy podbridge's labels).
        let mut pods: HashMap<(String, String, u32), Pod> = HashMap::new();
        for namespace in namespaces {
            let listed = self.submitter.cluster().list_managed_pods(&namespace, self.page_size).await?;
            report.kube_list_requests += listed.requests;
            report.pods_listed += listed.pods.len();
            for pod in listed.pods {
                if let Some((job, attempt)) = attempt_of(&pod) {
                    pods.insert((namespace.clone(), job.to_owned(), attempt), pod);
                }
            }
            report.resource_versions.insert(namespace, listed.resource_version);
        }

        report.list_ms = lap();

        // Pods no active job attempt claims: finished jobs' pods, earlier attempts, orphans.
        let active: BTreeSet<(String, String, u32)> =
            records.iter().map(|r| (r.namespace.clone().unwrap_or_default(), r.job_id.clone(), r.attempt)).collect();
        let unclaimed: Vec<Pod> =
            pods.iter().filter(|(key, _)| !active.contains(*key)).map(|(_, pod)| pod.clone()).collect();

        let results = futures::stream::iter(records)
            .map(|record| {
                let key = (record.namespace.clone().unwrap_or_default(), record.job_id.clone(), record.attempt);
                let pod = pods.remove(&key).filter(|pod| is_pod_of(pod, &record));
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
            if let Some(state) = result.stale {
                *report.stale.entry(state).or_default() += 1;
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
        report.act_ms = lap();
        info!(report = %serde_json::to_string(&report).unwrap_or_default(), "reconcile pass done");
        Ok(report)
    }

    /// Watches the managed pods of every namespace in `versions` (namespace → the
    /// resourceVersion to watch from; empty means list first) until `window` has passed,
    /// applying each change to its job as it comes. `versions` moves on, so the next
    /// window starts where this one stopped.
    ///
    /// Keep `window` under the deadline of every Kubernetes call: a watch that sees no
    /// change for that long would otherwise be cut by the client's read timeout.
    pub async fn follow(&self, versions: &mut BTreeMap<String, String>, window: Duration) -> FollowReport {
        let deadline = tokio::time::Instant::now() + window;
        let followed =
            versions.iter_mut().map(|(namespace, version)| self.follow_namespace(namespace, version, deadline));
        let mut report = FollowReport::default();
        for namespace in futures::future::join_all(followed).await {
            report.add(namespace);
        }
        report
    }

    async fn follow_namespace(
        &self,
        namespace: &str,
        version: &mut String,
        deadline: tokio::time::Instant,
    ) -> FollowReport {
        let mut report = FollowReport::default();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return report;
            }
            if version.is_empty() {
                match self.relist(namespace, &mut report).await {
                    Ok(listed) => *version = listed,
                    Err(e) => {
                        warn!(namespace, error = %error_chain(&e), "cannot list pods to follow them; the next pass will");
                        report.errors += 1;
                        return report;
                    }
                }
                continue;
            }
            report.watches += 1;
            let mut events = match self.submitter.cluster().watch_managed_pods(namespace, version, remaining).await {
                Ok(events) => events,
                Err(e) => {
                    warn!(namespace, error = %error_chain(&e), "cannot watch pods; trying again shortly");
                    report.errors += 1;
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
                    continue;
                }
            };
            // Until the window closes or the server ends the watch.
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
                match event {
                    Ok(PodEvent::Changed(pod) | PodEvent::Deleted(pod)) => {
                        if let Some(seen) = &pod.metadata.resource_version {
                            version.clone_from(seen);
                        }
                        report.events += 1;
                        self.follow_pod(*pod, &mut report).await;
                    }
                    Ok(PodEvent::Bookmark(seen)) => *version = seen,
                    Ok(PodEvent::Expired) => {
                        info!(namespace, "the watch's resourceVersion expired; listing again");
                        version.clear();
                        break;
                    }
                    Err(e) => {
                        warn!(namespace, error = %error_chain(&e), "the watch broke; watching again");
                        report.errors += 1;
                        break;
                    }
                }
            }
        }
    }

    /// Lists the namespace's managed pods and follows each (the changes a lost watch
    /// missed); returns the resourceVersion to watch from.
    async fn relist(&self, namespace: &str, report: &mut FollowReport) -> Result<String> {
        let listed = self.submitter.cluster().list_managed_pods(namespace, self.page_size).await?;
        report.relists += 1;
        let followed = futures::stream::iter(listed.pods)
            .map(|pod| async move {
                let mut report = FollowReport::default();
                self.follow_pod(pod, &mut report).await;
                report
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await;
        for pod in followed {
            report.add(pod);
        }
        Ok(listed.resource_version)
    }

    /// Applies what `pod` says to its job, if the pod is the job's current attempt.
    async fn follow_pod(&self, pod: Pod, report: &mut FollowReport) {
        let Some((job_id, _)) = attempt_of(&pod) else { return };
        let job_id = job_id.to_owned();
        let record = match self.submitter.store().get(&job_id).await {
            Ok(Some(record)) if record.state.is_active() && is_pod_of(&pod, &record) => record,
            Ok(_) => return,
            Err(e) => {
                warn!(job_id = %job_id, error = %error_chain(&e), "cannot read the job of a changed pod; the next pass will");
                report.errors += 1;
                return;
            }
        };
        let now = Timestamp::now();
        let observed = observe(&pod);
        let since = match observed.view {
            PodView::Running { started_at } => started_at,
            PodView::Succeeded { finished_at } => finished_at,
            _ => None,
        };
        match self.reconcile_job(record, Some(observed), now).await {
            Ok(result) => {
                report.writes += result.writes;
                report.lost_races += usize::from(result.lost_race);
                if result.recorded.is_some()
                    && let Some(since) = since
                {
                    report.latencies.push(now.duration_since(since).unsigned_abs());
                }
            }
            Err(e) => {
                warn!(job_id = %job_id, error = %error_chain(&e), "cannot apply a pod change; the next pass will");
                report.errors += 1;
            }
        }
    }

    /// Decides about one job from what its pod says (`None`: no pod) and carries it out.
    async fn reconcile_job(&self, record: JobRecord, observed: Option<Observed>, now: Timestamp) -> Result<JobResult> {
        let job = record.stored_job()?;
        let mut result = JobResult::default();
        let observed = match observed {
            Some(observed) if needs_events(&record, &observed, now, &self.thresholds) => {
                Some(self.explain(&record, observed).await?)
            }
            other => other,
        };
        match decide(&record, &job, observed.as_ref(), now, &self.thresholds, self.record_ttl) {
            Decision::Nothing => {}
            Decision::Dispatch => {
                self.submitter.start_attempt(&record, &job).await?;
                result.dispatched = true;
            }
            Decision::Write { changes, delete_pod } => {
                let mut all_written = true;
                for change in &changes {
                    if !self.write(&record.job_id, change, &mut result).await? {
                        all_written = false;
                        break;
                    }
                    result.retried |= change.new_attempt.is_some();
                }
                // Only once the record says the attempt is over: a pod podbridge deletes
                // is then never mistaken for one deleted by someone else.
                if delete_pod && all_written {
                    result.pod_deleted = self.delete_pod(&record).await?;
                }
            }
        }
        Ok(result)
    }

    /// Reads a starting pod's events into what it says (a volume that cannot be mounted).
    async fn explain(&self, record: &JobRecord, observed: Observed) -> Result<Observed> {
        let namespace = record.namespace.clone().unwrap_or_default();
        let name = attempt_pod_name(record);
        let events = self.submitter.cluster().pod_events(&namespace, &name).await?;
        Ok(explain_with_events(observed, &events))
    }

    /// Applies one change; true when it was written.
    async fn write(&self, job_id: &str, change: &StateChange, result: &mut JobResult) -> Result<bool> {
        match self.submitter.store().change(job_id, change).await? {
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

    /// Deletes an unclaimed pod when its keep time (or the orphan grace) has passed.
    async fn clean_up(&self, pod: Pod, now: Timestamp) -> Result<bool> {
        // A managed pod without readable labels is nobody's: an orphan.
        let (job_id, attempt) = attempt_of(&pod).map_or((String::new(), 0), |(job, attempt)| (job.to_owned(), attempt));
        let record = self.submitter.store().get(&job_id).await?;
        let keep = record
            .as_ref()
            .and_then(|r| r.stored_job().ok())
            .map_or(Duration::ZERO, |job| Duration::from_secs(job.keep_pod_seconds));
        // Already being deleted: deleting it again every pass would change nothing.
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Succeeded" | "Failed"));
        match cleanup(created, attempt, ended, record.as_ref(), keep, now, &self.thresholds) {
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

    async fn delete_pod(&self, record: &JobRecord) -> Result<bool> {
        let namespace = record.namespace.clone().unwrap_or_default();
        let name = attempt_pod_name(record);
        self.submitter.cluster().delete_pod(&namespace, &name, None).await
    }
}

/// The pass's own figures as CloudWatch metrics (printed as EMF lines by the caller):
/// stale jobs found, by the state they were stuck in, and the pass's duration. Every
/// transition is counted where it is written (the journal), not here.
pub fn record_metrics(report: &PassReport, duration: Duration, metrics: &podbridge::metrics::Metrics) {
    use podbridge::metrics::{Counter, Timing};
    let mut stale: BTreeMap<JobState, u64> = BTreeMap::new();
    // Jobs a crashed dispatcher left queued, started by this pass.
    *stale.entry(JobState::Queued).or_default() += report.dispatched as u64;
    for (state, count) in &report.stale {
        *stale.entry(*state).or_default() += *count as u64;
    }
    // Only what happened is counted; CloudWatch treats the rest as missing data.
    for (state, count) in stale.into_iter().filter(|(_, n)| *n > 0) {
        metrics.add(Counter::StaleFound(state), count);
    }
    metrics.time(Timing::ReconcileDuration, duration);
}

/// The state a job was stuck in when it failed with `class` (and the kubelet's or
/// podbridge's `reason`) because a limit passed. A container the runtime could not
/// start is a `container_config` failure found at once, not a stuck job.
fn stuck_in(class: FailureClass, reason: &str) -> Option<JobState> {
    match class {
        FailureClass::ContainerConfig if matches!(reason, "StartError" | "ContainerCannotRun") => None,
        FailureClass::ImagePull
        | FailureClass::ContainerConfig
        | FailureClass::Unschedulable
        | FailureClass::StartTimeout => Some(JobState::SettingUp),
        FailureClass::DeadlineExceeded => Some(JobState::Executing),
        _ => None,
    }
}

/// A whole number of seconds from the variable `name`, `default` when unset.
pub fn seconds_setting(lookup: impl Fn(&str) -> Option<String>, name: &str, default: Duration) -> Result<Duration> {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| podbridge::Error::Config(format!("{name}={text:?} is not a whole number of seconds"))),
    }
}

/// How long an invocation follows the pods after its pass (`PODBRIDGE_FOLLOW_SECONDS`,
/// default 50: until shortly before the next one-minute schedule; 0 turns it off).
pub fn follow_for_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    seconds_setting(lookup, "PODBRIDGE_FOLLOW_SECONDS", Duration::from_secs(50))
}

/// Reconcile thresholds from `PODBRIDGE_*_SECONDS` variables, defaults otherwise.
pub fn thresholds_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Thresholds> {
    let defaults = Thresholds::default();
    let seconds = |name: &str, default: Duration| seconds_setting(&lookup, name, default);
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
    fn a_pass_report_counts_stale_jobs_by_the_state_they_were_stuck_in() {
        let report = PassReport {
            recorded: BTreeMap::from([(JobState::Succeeded, 2), (JobState::Failed, 3)]),
            failed_by_class: BTreeMap::from([
                (FailureClass::OomKilled, 1),
                (FailureClass::ImagePull, 1),
                (FailureClass::DeadlineExceeded, 1),
            ]),
            stale: BTreeMap::from([(JobState::SettingUp, 1), (JobState::Executing, 1)]),
            dispatched: 2,
            ..PassReport::default()
        };
        let metrics = podbridge::metrics::Metrics::new("podbridge", "reconcile");
        record_metrics(&report, Duration::from_millis(1500), &metrics);
        let lines = metrics.emf_lines(0).join("\n");
        for expected in
            ["\"State\":\"queued\"", "\"State\":\"setting_up\"", "\"State\":\"executing\"", "ReconcileDuration"]
        {
            assert!(lines.contains(expected), "{expected} missing from {lines}");
        }
        // Transitions are the journal's to count, not the pass report's.
        assert_eq!(stuck_in(FailureClass::ContainerConfig, "CreateContainerConfigError"), Some(JobState::SettingUp));
        assert_eq!(stuck_in(FailureClass::ContainerConfig, "StartError"), None, "found at once, not stuck");
        assert_eq!(stuck_in(FailureClass::ExitCode, "Error"), None);
        assert!(!lines.contains("\"Succeeded\"") && !lines.contains("\"Failed\""), "{lines}");
    }
}
