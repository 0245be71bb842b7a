//! Following the pods between passes: a watch per namespace from where the pass (or the
//! last window) stopped, each change applied to its job as it comes. Where a namespace's
//! watch stands is a [`Watch`], as kube-runtime's watcher keeps its state in an enum.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge::cluster::{Cluster, PodEvent};
use podbridge::error::{Result, error_chain};
use podbridge::store::Store;
use podbridge_core::observe::{PodView, observe};
use podbridge_core::pod::{attempt_of, is_pod_of};
use podbridge_core::state::JobState;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{FOLLOWED_MAX, FollowReport, Followed, Reconciler};

/// How often the watch offers room to waiting jobs when no pod's end prompts it.
pub const ADMIT_EVERY: Duration = Duration::from_secs(2);
/// The most pod changes taken in one batch.
const MAX_BATCH: usize = 256;

/// Where following one namespace's pods stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// List the pods before watching: nothing was listed yet, or the last watch's
    /// resourceVersion expired (410) and the changes since are lost.
    Relist,
    /// Watch for the changes after this resourceVersion (of a list, a change or a
    /// bookmark).
    From(String),
}

impl Watch {
    /// Watching from `resource_version`. An empty one (the API gave none) leaves
    /// nothing to watch from, so the pods are listed first.
    pub fn from_version(resource_version: impl Into<String>) -> Self {
        let resource_version = resource_version.into();
        if resource_version.is_empty() { Self::Relist } else { Self::From(resource_version) }
    }
}

impl<S: Store, C: Cluster> Reconciler<S, C> {
    /// Watches the managed pods of every namespace in `watches` (namespace → where its
    /// watch stands) until `window` has passed, applying each change to its job as it
    /// comes. `watches` moves on, so the next window starts where this one stopped.
    ///
    /// Keep `window` under the deadline of every Kubernetes call: a watch that sees no
    /// change for that long would otherwise be cut by the client's read timeout.
    pub async fn follow(&self, watches: &mut BTreeMap<String, Watch>, window: Duration) -> FollowReport {
        let deadline = tokio::time::Instant::now() + window;
        // Pods that ended gave back their slots: the waiting jobs are offered the room
        // at once, and every few seconds whatever happens (a limit raised, a queue
        // resumed).
        let freed = Notify::new();
        let followed =
            watches.iter_mut().map(|(namespace, watch)| self.follow_namespace(namespace, watch, deadline, &freed));
        let (namespaces, admitted) =
            futures::future::join(futures::future::join_all(followed), self.admit_while(&freed, deadline)).await;
        let mut report = admitted;
        for namespace in namespaces {
            report.add(namespace);
        }
        report
    }

    /// Admits waiting jobs at the start of the window, when `freed` is notified, and
    /// every [`ADMIT_EVERY`], until `deadline`.
    async fn admit_while(&self, freed: &Notify, deadline: tokio::time::Instant) -> FollowReport {
        let mut report = FollowReport::default();
        loop {
            match self.admit_waiting().await {
                Ok(round) => report.admitted += round.admitted,
                Err(e) => {
                    warn!(error = %error_chain(&e), "cannot admit waiting jobs; trying again shortly");
                    report.errors += 1;
                }
            }
            let next = deadline.min(tokio::time::Instant::now() + ADMIT_EVERY);
            let _ = tokio::time::timeout_at(next, freed.notified()).await;
            if tokio::time::Instant::now() >= deadline {
                return report;
            }
        }
    }

    async fn follow_namespace(
        &self,
        namespace: &str,
        watch: &mut Watch,
        deadline: tokio::time::Instant,
        freed: &Notify,
    ) -> FollowReport {
        let mut report = FollowReport::default();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return report;
            }
            let version = match watch {
                Watch::Relist => {
                    match self.relist(namespace, &mut report).await {
                        Ok(listed) => *watch = listed,
                        Err(e) => {
                            warn!(namespace, error = %error_chain(&e), "cannot list pods to follow them; the next pass will");
                            report.errors += 1;
                            return report;
                        }
                    }
                    continue;
                }
                Watch::From(version) => version.as_str(),
            };
            report.watches += 1;
            let mut events = match self.cluster().watch_managed_pods(namespace, version, remaining).await {
                Ok(events) => events,
                Err(e) => {
                    warn!(namespace, error = %error_chain(&e), "cannot watch pods; trying again shortly");
                    report.errors += 1;
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
                    continue;
                }
            };
            // Until the window closes or the server ends the watch: every change that
            // has arrived is taken at once, the latest of each pod kept (each pod's
            // changes in order; its latest status says all the earlier ones did), and
            // the pods are followed concurrently.
            let mut open = true;
            while open {
                let Ok(Some(first)) = tokio::time::timeout_at(deadline, events.next()).await else { break };
                let mut batch: Vec<Result<PodEvent>> = vec![first];
                while batch.len() < MAX_BATCH {
                    match events.next().now_or_never() {
                        Some(Some(event)) => batch.push(event),
                        Some(None) => {
                            open = false;
                            break;
                        }
                        None => break,
                    }
                }
                let mut latest: HashMap<(String, String), Pod> = HashMap::new();
                let mut restart = false;
                for event in batch {
                    match event {
                        Ok(PodEvent::Changed(pod) | PodEvent::Deleted(pod)) => {
                            if let Some(seen) = &pod.metadata.resource_version {
                                *watch = Watch::from_version(seen);
                            }
                            report.events += 1;
                            let key = (
                                pod.metadata.name.clone().unwrap_or_default(),
                                pod.metadata.uid.clone().unwrap_or_default(),
                            );
                            latest.insert(key, *pod);
                        }
                        Ok(PodEvent::Bookmark(seen)) => *watch = Watch::from_version(seen),
                        Ok(PodEvent::Expired) => {
                            info!(namespace, "the watch's resourceVersion expired; listing again");
                            *watch = Watch::Relist;
                            restart = true;
                            break;
                        }
                        Err(e) => {
                            warn!(namespace, error = %error_chain(&e), "the watch broke; watching again");
                            report.errors += 1;
                            restart = true;
                            break;
                        }
                    }
                }
                // A pod that gave back its slot offers it at once, not when the
                // slowest pod of its batch is done.
                let followed = self
                    .concurrently(latest.into_values(), |pod| async move {
                        let mut report = FollowReport::default();
                        self.follow_pod(pod, &mut report).await;
                        if report.released > 0 {
                            freed.notify_one();
                        }
                        report
                    })
                    .await;
                for pod in followed {
                    report.add(pod);
                }
                if restart {
                    break;
                }
            }
        }
    }

    /// Lists the namespace's managed pods and follows each (the changes a lost watch
    /// missed); returns where to watch from.
    async fn relist(&self, namespace: &str, report: &mut FollowReport) -> Result<Watch> {
        let listed = self.cluster().list_managed_pods(namespace, self.page_size).await?;
        report.relists += 1;
        let followed = self
            .concurrently(listed.pods, |pod| async move {
                let mut report = FollowReport::default();
                self.follow_pod(pod, &mut report).await;
                report
            })
            .await;
        for pod in followed {
            report.add(pod);
        }
        Ok(Watch::from_version(listed.resource_version))
    }

    /// Applies what `pod` says to its job, if the pod is the job's current attempt and
    /// says something it did not say when last applied.
    async fn follow_pod(&self, pod: Pod, report: &mut FollowReport) {
        let Some((job_id, _)) = attempt_of(&pod) else { return };
        let job_id = job_id.to_owned();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let observed = observe(&pod);
        // A pod still starting says nothing its record does not (whoever created it
        // recorded `setting_up`), and a view already applied would be applied again:
        // only a pod whose view moved on is worth a read of its record. What changes
        // with time alone (a start or a run past its limit, an unschedulable pod past
        // its threshold) is the pass's: it decides about every active job each minute.
        if observed.view == PodView::Starting && !observed.terminating {
            report.unchanged += 1;
            return;
        }
        match self.followed().get(&uid) {
            Some(Followed::Over) => {
                report.unchanged += 1;
                return;
            }
            Some(Followed::Applied(applied)) if *applied == observed => {
                report.unchanged += 1;
                return;
            }
            _ => {}
        }
        let record = match self.store().get(&job_id).await {
            Ok(Some(record)) if record.state.is_active() && is_pod_of(&pod, &record) => record,
            Ok(_) => {
                self.remember(uid, Followed::Over);
                return;
            }
            Err(e) => {
                warn!(job_id = %job_id, error = %error_chain(&e), "cannot read the job of a changed pod; the next pass will");
                report.errors += 1;
                return;
            }
        };
        let now = Timestamp::now();
        let since = match observed.view {
            PodView::Running { started_at } => started_at,
            PodView::Succeeded { finished_at } => finished_at,
            _ => None,
        };
        match self.reconcile_job(record, Some(observed.clone()), now).await {
            Ok(result) => {
                // An attempt this change ended (or replaced) says nothing more. A view is
                // remembered only once the record says what it says (nothing to write, or
                // written to the state it shows); a lost race, or a catch-up that wrote
                // less (a running pod found for a record still `queued`), is read again
                // at the pod's next change.
                let over = result.recorded.is_some_and(JobState::is_terminal) || result.retried || result.requeued;
                let settled = !result.lost_race
                    && matches!(
                        (result.recorded, &observed.view),
                        (None, _) | (Some(JobState::Executing), PodView::Running { .. })
                    );
                if over {
                    self.remember(uid, Followed::Over);
                } else if settled {
                    self.remember(uid, Followed::Applied(observed));
                } else {
                    self.forget(&uid);
                }
                report.writes += result.writes;
                report.released += usize::from(result.released);
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

    /// What the watch knows of the pods it followed (a panic elsewhere left it whole:
    /// each change is one insert or remove).
    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Followed>> {
        self.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what the watch knew of the pod `uid`: its next change is read.
    fn forget(&self, uid: &str) {
        self.followed().remove(uid);
    }

    /// Remembers what the watch knows of the pod `uid`.
    fn remember(&self, uid: String, followed: Followed) {
        if uid.is_empty() {
            return;
        }
        let mut known = self.followed();
        if known.len() >= FOLLOWED_MAX {
            known.clear();
        }
        known.insert(uid, followed);
    }
}
