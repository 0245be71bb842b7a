//! What a pass and following the pods report, and the pass's own metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use podbridge_core::failure::FailureClass;
use podbridge_core::state::JobState;
use serde::Serialize;

use crate::Watch;

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
    /// Slots given back by attempts that ended.
    pub released: usize,
    /// Attempts put back to wait because the cluster had no room for their pods.
    pub requeued: usize,
    /// What the pass did about the queues (slots and usage put right, jobs admitted).
    pub queues: QueueReport,
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
    /// starts watching (see [`PassReport::watches`]).
    ///
    /// [`Reconciler::follow`]: crate::Reconciler::follow
    pub resource_versions: BTreeMap<String, String>,
    /// Where the pass's time went: reading the active jobs, listing the pods, and
    /// deciding and acting on every job and unclaimed pod (milliseconds).
    pub read_ms: u64,
    pub list_ms: u64,
    pub act_ms: u64,
}

impl PassReport {
    /// Where [`Reconciler::follow`] starts in each namespace the pass listed: watching
    /// from the resourceVersion of its list.
    ///
    /// [`Reconciler::follow`]: crate::Reconciler::follow
    pub fn watches(&self) -> BTreeMap<String, Watch> {
        self.resource_versions
            .iter()
            .map(|(namespace, version)| (namespace.clone(), Watch::from_version(version)))
            .collect()
    }

    /// Counts what happened to one job.
    pub(crate) fn count(&mut self, result: JobResult) {
        self.writes += result.writes;
        self.dispatched += usize::from(result.dispatched);
        self.retries += usize::from(result.retried);
        self.pods_deleted += usize::from(result.pod_deleted);
        self.lost_races += usize::from(result.lost_race);
        self.released += usize::from(result.released);
        self.requeued += usize::from(result.requeued);
        if let Some(state) = result.recorded {
            *self.recorded.entry(state).or_default() += 1;
        }
        if let Some(class) = result.failure_class {
            *self.failed_by_class.entry(class).or_default() += 1;
        }
        if let Some(state) = result.stale {
            *self.stale.entry(state).or_default() += 1;
        }
    }
}

/// What following the pods for a while saw and did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct FollowReport {
    /// Pod changes seen.
    pub events: usize,
    /// Pod changes that said nothing new (the pod says what it said when last applied,
    /// or its attempt is over): left without reading the record.
    pub unchanged: usize,
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
    /// Slots given back by attempts that ended.
    pub released: usize,
    /// Waiting jobs admitted.
    pub admitted: usize,
    /// From a pod's change (its container's start or finish time) to the record of it.
    #[serde(skip)]
    pub latencies: Vec<Duration>,
}

impl FollowReport {
    /// Adds what another namespace, pod or window saw and did.
    pub(crate) fn add(&mut self, other: FollowReport) {
        self.events += other.events;
        self.unchanged += other.unchanged;
        self.writes += other.writes;
        self.watches += other.watches;
        self.relists += other.relists;
        self.lost_races += other.lost_races;
        self.errors += other.errors;
        self.released += other.released;
        self.admitted += other.admitted;
        self.latencies.extend(other.latencies);
    }
}

/// What a look at the queues found and did: the usage against the slots, the slots
/// against the records, and the waiting jobs admitted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct QueueReport {
    /// Usages (a queue's, or all queues') that differed from the sum of the slots and
    /// were set to it.
    pub drift_repaired: usize,
    /// Slots held by no active attempt (a crash between an attempt's end and its
    /// release), given back.
    pub leaked_released: usize,
    /// Admitted attempts with no slot (admitted before queues existed, or by hand),
    /// given one.
    pub missing_adopted: usize,
    /// Waiting jobs admitted (their pods created).
    pub admitted: usize,
    /// Waiting jobs failed because they no longer fit (a limit lowered under them).
    pub refused: usize,
    /// Jobs still waiting after the look (of those read from the head of each line).
    pub waiting: usize,
    /// Each queue's waiting jobs and how long it has admitted none, from the records the
    /// pass read.
    pub figures: BTreeMap<String, podbridge::metrics::QueueFigures>,
}

/// What happened to one job.
#[derive(Debug, Default)]
pub(crate) struct JobResult {
    pub(crate) writes: usize,
    pub(crate) dispatched: bool,
    pub(crate) retried: bool,
    pub(crate) pod_deleted: bool,
    pub(crate) lost_race: bool,
    pub(crate) recorded: Option<JobState>,
    pub(crate) failure_class: Option<FailureClass>,
    pub(crate) stale: Option<JobState>,
    /// The attempt's slot was given back.
    pub(crate) released: bool,
    /// The attempt was put back to wait for room.
    pub(crate) requeued: bool,
}

/// A step of [`Reconciler::run`], handed to its caller to count and flush.
///
/// [`Reconciler::run`]: crate::Reconciler::run
#[derive(Debug)]
pub enum Step<'a> {
    /// The pass is done; it took this long.
    Passed(&'a PassReport, Duration),
    /// One window of following the pods is done.
    Followed(&'a FollowReport),
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
    for (queue, figures) in &report.queues.figures {
        metrics.queue(queue, *figures);
    }
}

/// The state a job was stuck in when it failed with `class` (and the kubelet's or
/// podbridge's `reason`) because a limit passed. A container the runtime could not
/// start is a `container_config` failure found at once, not a stuck job.
pub(crate) fn stuck_in(class: FailureClass, reason: &str) -> Option<JobState> {
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
