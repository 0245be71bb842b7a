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
//!
//! The pass is in `pass`, following the pods (and the [`Watch`] state of each
//! namespace) in `watch`, deciding and acting on one job, which both do, in `act`, and
//! what they report in `report`.
//!
//! [`decide`]: podbridge_core::reconcile::decide

mod act;
mod admit;
mod pass;
mod report;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use podbridge::cluster::Cluster;
use podbridge::error::Result;
use podbridge::services::Attempts;
use podbridge::store::Store;
use podbridge_core::reconcile::Thresholds;
use tracing::info;

pub use report::{FollowReport, PassReport, QueueReport, Step, record_metrics};
pub use watch::Watch;

/// The reconciler and what it needs: [`Attempts`], whose store and cluster it reads
/// and writes and with which it starts the attempts it owes.
#[derive(Debug)]
pub struct Reconciler<S, C> {
    attempts: Attempts<S, C>,
    thresholds: Thresholds,
    page_size: u32,
    concurrency: usize,
    follow_window: Duration,
    /// What the watch last applied of each pod (by uid), so that a change that says
    /// nothing new costs no read.
    followed: Mutex<HashMap<String, Followed>>,
}

/// What the watch knows of a pod it followed.
#[derive(Debug, Clone, PartialEq)]
enum Followed {
    /// What the pod said when it was last applied to its job, without error.
    Applied(podbridge_core::observe::Observed),
    /// The pod's attempt is over or is not its job's current one: nothing it says
    /// matters to the watch any more (the pass still looks at it).
    Over,
}

/// The most pods [`Followed`] remembers; past it, it forgets them all (each then costs
/// one read again).
const FOLLOWED_MAX: usize = 50_000;

impl<S: Store, C: Cluster> Reconciler<S, C> {
    /// A reconciler that starts attempts with `attempts`, on its store and cluster,
    /// and keeps records for `attempts`' record TTL.
    pub fn new(attempts: Attempts<S, C>, thresholds: Thresholds, concurrency: usize) -> Self {
        Self {
            attempts,
            thresholds,
            page_size: 500,
            concurrency: concurrency.max(1),
            follow_window: Duration::from_secs(5),
            followed: Mutex::new(HashMap::new()),
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
        // A namespace the pass did not list (no active job in it) is listed before it
        // is watched.
        let mut watches: BTreeMap<String, Watch> = pass.watches();
        for namespace in namespaces {
            watches.entry(namespace.clone()).or_insert(Watch::Relist);
        }
        let mut followed = FollowReport::default();
        loop {
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            if remaining < Duration::from_secs(1) {
                break;
            }
            let window = self.follow(&mut watches, remaining.min(self.follow_window)).await;
            after(Step::Followed(&window)).await;
            followed.add(window);
        }
        if followed.watches > 0 {
            info!(report = %serde_json::to_string(&followed).unwrap_or_default(), "followed the pods");
        }
        Ok((pass, followed))
    }

    /// The job store it reads and writes.
    pub fn store(&self) -> &S {
        self.attempts.store()
    }

    /// The cluster it follows.
    pub fn cluster(&self) -> &C {
        self.attempts.cluster()
    }

    /// Runs `act` on every item, at most `concurrency` at a time, and collects the
    /// outcomes in the order they finish.
    async fn concurrently<T, F, Fut>(&self, items: impl IntoIterator<Item = T>, act: F) -> Vec<Fut::Output>
    where
        F: FnMut(T) -> Fut,
        Fut: Future,
    {
        futures::stream::iter(items).map(act).buffer_unordered(self.concurrency).collect().await
    }
}
