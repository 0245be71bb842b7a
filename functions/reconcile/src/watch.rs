//! Following the pods between passes: a watch per namespace from where the pass (or the
//! last window) stopped, each change applied to its job as it comes. Where a namespace's
//! watch stands is a [`Watch`], as kube-runtime's watcher keeps its state in an enum.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podbridge::cluster::{Cluster, PodEvent};
use podbridge::error::{Result, error_chain};
use podbridge::store::JobStore;
use podbridge_core::observe::{PodView, observe};
use podbridge_core::pod::{attempt_of, is_pod_of};
use tracing::{info, warn};

use crate::{FollowReport, Reconciler};

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

impl<S: JobStore, C: Cluster> Reconciler<S, C> {
    /// Watches the managed pods of every namespace in `watches` (namespace → where its
    /// watch stands) until `window` has passed, applying each change to its job as it
    /// comes. `watches` moves on, so the next window starts where this one stopped.
    ///
    /// Keep `window` under the deadline of every Kubernetes call: a watch that sees no
    /// change for that long would otherwise be cut by the client's read timeout.
    pub async fn follow(&self, watches: &mut BTreeMap<String, Watch>, window: Duration) -> FollowReport {
        let deadline = tokio::time::Instant::now() + window;
        let followed = watches.iter_mut().map(|(namespace, watch)| self.follow_namespace(namespace, watch, deadline));
        let mut report = FollowReport::default();
        for namespace in futures::future::join_all(followed).await {
            report.add(namespace);
        }
        report
    }

    async fn follow_namespace(
        &self,
        namespace: &str,
        watch: &mut Watch,
        deadline: tokio::time::Instant,
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
            // Until the window closes or the server ends the watch.
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
                match event {
                    Ok(PodEvent::Changed(pod) | PodEvent::Deleted(pod)) => {
                        if let Some(seen) = &pod.metadata.resource_version {
                            *watch = Watch::from_version(seen);
                        }
                        report.events += 1;
                        self.follow_pod(*pod, &mut report).await;
                    }
                    Ok(PodEvent::Bookmark(seen)) => *watch = Watch::from_version(seen),
                    Ok(PodEvent::Expired) => {
                        info!(namespace, "the watch's resourceVersion expired; listing again");
                        *watch = Watch::Relist;
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

    /// Applies what `pod` says to its job, if the pod is the job's current attempt.
    async fn follow_pod(&self, pod: Pod, report: &mut FollowReport) {
        let Some((job_id, _)) = attempt_of(&pod) else { return };
        let job_id = job_id.to_owned();
        let record = match self.store().get(&job_id).await {
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
}
