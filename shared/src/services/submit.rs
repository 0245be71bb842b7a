//! What senders ask of podbridge, whichever trigger brought it: submit a job (or have
//! an invalid message recorded as `rejected`), cancel one, retry one, or record a
//! schedule's tick as skipped. Each request is checked against the sender's
//! namespaces; starting an attempt is [`Attempts`]'s.
//!
//! Every step is idempotent, so any redelivery, and any crash between two steps, ends
//! in the same place: the job recorded once (a conditional put), one pod for the
//! attempt, and the record moved on only from where it was (a conditional update).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use podbridge_core::pod::PodSettings;
use podbridge_core::record::{JobRecord, Source, StateChange};
use podbridge_core::state::JobState;
use podbridge_core::tenancy::{Sender, Tenancy, is_tick_id};
use podbridge_core::validate::{Guardrails, Job, Parsed, Problem, Rejection, parse_message};

use super::{Attempts, Outcome};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::store::{Changed, Created, Store};

/// The largest record a job may start with (its JSON size, close to its DynamoDB size).
pub const MAX_NEW_RECORD_BYTES: usize = 200_000;

/// How many retries on request a job gets unless the deployment says otherwise
/// (`PODBRIDGE_MAX_MANUAL_RETRIES`).
pub const DEFAULT_MAX_MANUAL_RETRIES: u32 = 3;

/// Carries out what senders ask: records jobs and starts their first attempt, cancels
/// and retries them, within the namespaces each sender may use. Cheap to clone: its
/// store and cluster are shared handles.
#[derive(Debug)]
pub struct Submitter<S, C> {
    /// What starts attempts, and holds the store and the cluster.
    attempts: Attempts<S, C>,
    /// Which namespaces each sender may use.
    tenancy: Tenancy,
    /// How many retries on request one job may get.
    max_manual_retries: u32,
}

impl<S, C> Clone for Submitter<S, C> {
    fn clone(&self) -> Self {
        Self {
            attempts: self.attempts.clone(),
            tenancy: self.tenancy.clone(),
            max_manual_retries: self.max_manual_retries,
        }
    }
}

impl<S: Store, C: Cluster> Submitter<S, C> {
    /// A submitter for one team (every sender may use every namespace) over its own
    /// store and cluster; see [`Submitter::with_tenancy`].
    pub fn new(store: S, cluster: C, guardrails: Guardrails, pods: PodSettings, record_ttl: Duration) -> Self {
        Self::over(Attempts::new(Arc::new(store), Arc::new(cluster), guardrails, pods, record_ttl))
    }

    /// A submitter for one team that starts attempts with `attempts` (and writes to
    /// its store), so that it shares its handles with a reconciler.
    pub fn over(attempts: Attempts<S, C>) -> Self {
        Self { attempts, tenancy: Tenancy::open(), max_manual_retries: DEFAULT_MAX_MANUAL_RETRIES }
    }

    /// Scopes senders to their namespaces.
    pub fn with_tenancy(mut self, tenancy: Tenancy) -> Self {
        self.tenancy = tenancy;
        self
    }

    /// Bounds the retries on request of one job.
    pub fn with_max_manual_retries(mut self, max: u32) -> Self {
        self.max_manual_retries = max;
        self
    }

    /// The namespaces `sender` may use, the deployment's default first.
    pub fn namespaces_for(&self, sender: &Sender) -> Vec<String> {
        self.tenancy.namespaces_for(sender, &self.guardrails().namespaces)
    }

    /// The job store it writes to.
    pub fn store(&self) -> &S {
        self.attempts.store()
    }

    /// The deployment's guardrails (before any sender's scoping).
    pub fn guardrails(&self) -> &Guardrails {
        self.attempts.guardrails()
    }

    fn expires_at(&self, now: Timestamp) -> Option<i64> {
        self.attempts.expires_at(now)
    }

    /// Handles one message body from `sender`. `fallback_id` is the id of a job that
    /// carries none, and where a rejection is recorded when the message's own id cannot
    /// be used.
    ///
    /// `Ok` means the message may be deleted; `Err` means it must come back (the error
    /// says whether trying again can help).
    pub async fn handle_message(
        &self,
        body: &[u8],
        source: Source,
        sender: &Sender,
        fallback_id: &str,
    ) -> Result<Outcome> {
        // The sender's namespaces, so a job without one gets the sender's default and a
        // job in another team's namespace is rejected naming the ones it may use.
        let allowed = self.namespaces_for(sender);
        let scoped;
        let guardrails = if allowed == self.guardrails().namespaces {
            self.guardrails()
        } else {
            scoped = Guardrails { namespaces: allowed.clone(), ..self.guardrails().clone() };
            &scoped
        };
        match parse_message(body, fallback_id, guardrails) {
            Ok(Parsed::Job(job)) => self.submit(*job, source, sender, fallback_id).await,
            Ok(Parsed::Cancel(cancel)) => {
                let reason = cancel.reason.unwrap_or_else(|| "cancelled on request".to_owned());
                self.cancel(&cancel.id, cancel.namespace.as_deref(), &reason, source, sender).await
            }
            // A sender allowed no namespace: say so rather than what the parse says
            // about an empty list.
            Err(rejection) if allowed.is_empty() => {
                let problem = self.no_namespace(sender);
                self.reject(Rejection { job_id: rejection.job_id, problems: vec![problem] }, source, fallback_id).await
            }
            Err(rejection) => self.reject(rejection, source, fallback_id).await,
        }
    }

    fn no_namespace(&self, sender: &Sender) -> Problem {
        Problem {
            field: "job.namespace".to_owned(),
            message: format!("{sender} may not use any namespace of this deployment (see PODBRIDGE_SENDERS)"),
        }
    }

    /// What `sender` may not do with a job in `namespace`, if anything.
    fn forbidden(&self, sender: &Sender, namespace: Option<&str>) -> Option<String> {
        let allowed = self.namespaces_for(sender);
        match namespace {
            Some(namespace) if allowed.iter().any(|a| a == namespace) => None,
            Some(namespace) => Some(format!(
                "{sender} may not act on jobs in namespace {namespace:?}; it may use: {}",
                if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
            )),
            None => None,
        }
    }

    /// Records a valid job from `sender` as `queued`, creates its pod, and moves it to
    /// `setting_up`. A job the sender may not submit is recorded as `rejected` under
    /// `fallback_id` (the id derived from its message), never under its own id.
    pub async fn submit(&self, job: Job, source: Source, sender: &Sender, fallback_id: &str) -> Result<Outcome> {
        if let Some(why) = self.forbidden(sender, Some(&job.namespace)) {
            let problem = Problem { field: "job.namespace".to_owned(), message: why };
            return self.reject(Rejection { job_id: None, problems: vec![problem] }, source, fallback_id).await;
        }
        if is_tick_id(&job.id) && !matches!(source, Source::Schedule { .. }) {
            let problem = Problem {
                field: "job.id".to_owned(),
                message: format!(
                    "{:?} is reserved: ids ending in -YYYYMMDD-HHMMSS belong to schedule ticks; choose another id",
                    job.id
                ),
            };
            return self.reject(Rejection { job_id: None, problems: vec![problem] }, source, fallback_id).await;
        }
        // A queue that does not exist, or a job no queue or node could ever hold, is
        // refused now rather than left waiting for ever.
        let largest = self.attempts.largest_node().await;
        if let Some(problem) = self.attempts.admission().refuse(&job, largest).await?
            // A job recorded before (a redelivery, maybe after a limit changed) is not
            // refused now: it goes where its record says, below.
            && self.store().get(&job.id).await?.is_none()
        {
            return self
                .reject(Rejection { job_id: Some(job.id.clone()), problems: vec![problem] }, source, fallback_id)
                .await;
        }
        let now = Timestamp::now();
        let mut record =
            JobRecord::new(&job.id, JobState::Queued, source, now, "Submitted", "the job was accepted and queued");
        record.spec = Some(serde_json::to_value(&job).map_err(|e| Error::Config(format!("job spec: {e}")))?);
        record.namespace = Some(job.namespace.clone());
        // The message format's caps keep every legal job far below this; a record that
        // would start this large could never be written again as its history grows.
        let size = serde_json::to_vec(&record).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_NEW_RECORD_BYTES {
            let problem = Problem {
                field: "job".to_owned(),
                message: format!(
                    "the job's record would be {size} bytes; a new record may be at most {MAX_NEW_RECORD_BYTES} \
                     (DynamoDB's item limit is 400 KB and the history needs room)"
                ),
            };
            return self.reject(Rejection { job_id: None, problems: vec![problem] }, record.source, fallback_id).await;
        }
        match self.store().create(&record).await? {
            Created::New => self.attempts.start(&record, &job).await,
            // The same id again: redelivery (maybe after a crash mid-way), or a client
            // reusing its idempotency key. The stored job is the one that runs.
            Created::Exists(existing) if existing.state == JobState::Queued => {
                let stored = existing.stored_job()?;
                self.attempts.start(&existing, &stored).await
            }
            // A cancel that came before its job, from a sender of another namespace:
            // it does not apply to this job, which takes the id.
            Created::Exists(existing)
                if is_tombstone(&existing)
                    && existing.namespace.is_some()
                    && existing.namespace != record.namespace =>
            {
                match self.store().replace_tombstone(&record, &existing).await? {
                    Created::New => self.attempts.start(&record, &job).await,
                    Created::Exists(now) => {
                        Ok(Outcome::AlreadyRecorded { job_id: now.job_id.clone(), state: now.state })
                    }
                }
            }
            // Another namespace's job has this id (ids are one space for the whole
            // deployment): say so, under the message's own id, rather than drop the job.
            Created::Exists(existing)
                if existing.namespace.is_some()
                    && existing.namespace != record.namespace
                    && existing.spec.is_some() =>
            {
                let problem = Problem {
                    field: "job.id".to_owned(),
                    message: format!(
                        "{:?} is already the id of a job in another namespace; ids are unique across the \
                         deployment, choose another",
                        job.id
                    ),
                };
                self.reject(Rejection { job_id: None, problems: vec![problem] }, record.source, fallback_id).await
            }
            Created::Exists(existing) => {
                Ok(Outcome::AlreadyRecorded { job_id: existing.job_id.clone(), state: existing.state })
            }
        }
    }

    /// Records an invalid message as a `rejected` job, under its own id when it has a
    /// usable one that is free, else under `fallback_id` (derived from the message id).
    pub async fn reject(&self, rejection: Rejection, source: Source, fallback_id: &str) -> Result<Outcome> {
        let now = Timestamp::now();
        // A rejection never takes an id a schedule's tick will use, and with senders
        // told apart never the id a message claims: a team could otherwise keep another
        // team's job from ever running by sending a bad message under its id first.
        let tick = matches!(source, Source::Schedule { .. });
        let scoped = self.tenancy.is_scoped() && !tick;
        let own = rejection.job_id.clone().filter(|id| (tick || !is_tick_id(id)) && !scoped);
        let reason = match (&rejection.job_id, &own) {
            (Some(claimed), None) => format!("job {claimed}: {rejection}"),
            _ => rejection.to_string(),
        };
        let mut ids = vec![own.unwrap_or_else(|| fallback_id.to_owned())];
        if ids[0] != fallback_id {
            ids.push(fallback_id.to_owned());
        }
        for id in ids {
            let mut record = JobRecord::new(&id, JobState::Rejected, source.clone(), now, "InvalidMessage", &reason);
            record.expires_at = self.expires_at(now);
            match self.store().create(&record).await? {
                Created::New => return Ok(Outcome::Rejected { job_id: id, reason }),
                // A redelivery of the same rejected message.
                Created::Exists(existing) if existing.state == JobState::Rejected && existing.source == source => {
                    return Ok(Outcome::Rejected { job_id: id, reason });
                }
                // The id belongs to another job: record the rejection under the fallback.
                Created::Exists(_) => continue,
            }
        }
        Ok(Outcome::AlreadyRecorded { job_id: fallback_id.to_owned(), state: JobState::Rejected })
    }

    /// Cancels a job on behalf of `sender`: a queued job never gets a pod, a running one
    /// has its pod deleted (with its grace period), an ended one is left as it is. A
    /// cancel that arrives before its job records the job as cancelled in `namespace`
    /// (the sender's default when not given), so that job never runs, while a job of
    /// another namespace may still take the id. A job outside the sender's namespaces is
    /// refused, never cancelled.
    pub async fn cancel(
        &self,
        job_id: &str,
        namespace: Option<&str>,
        reason: &str,
        source: Source,
        sender: &Sender,
    ) -> Result<Outcome> {
        let refused = |reason: String| Ok(Outcome::Refused { job_id: job_id.to_owned(), reason });
        if let Some(why) = self.forbidden(sender, namespace) {
            return refused(why);
        }
        // A few rounds: each lost race means the job moved, and is looked at again.
        for _ in 0..3 {
            let now = Timestamp::now();
            let Some(record) = self.store().get(job_id).await? else {
                if is_tick_id(job_id) && !matches!(source, Source::Schedule { .. }) {
                    return refused(format!(
                        "there is no job {job_id}, and ids ending in -YYYYMMDD-HHMMSS belong to schedule ticks: \
                         a cancel cannot reserve one"
                    ));
                }
                // With one team, a cancel that names no namespace holds for the id in
                // every namespace, as it always has.
                let namespace = match namespace {
                    Some(namespace) => Some(namespace.to_owned()),
                    None if !self.tenancy.is_scoped() => None,
                    None => match self.namespaces_for(sender).first() {
                        Some(first) => Some(first.clone()),
                        None => return refused(self.no_namespace(sender).message),
                    },
                };
                let mut tombstone =
                    JobRecord::new(job_id, JobState::Cancelled, source.clone(), now, "Cancelled", reason);
                tombstone.namespace = namespace;
                tombstone.expires_at = self.expires_at(now);
                match self.store().create(&tombstone).await? {
                    Created::New => return Ok(Outcome::Cancelled { job_id: job_id.to_owned() }),
                    Created::Exists(_) => continue,
                }
            };
            if let Some(why) = self.forbidden(sender, record.namespace.as_deref()) {
                return refused(why);
            }
            // A cancel delivered again after its record was written, whose pod delete
            // failed: delete it now (deleting a pod that is gone is not an error).
            if record.state == JobState::Cancelled {
                self.attempts.delete_pod(&record).await?;
                self.attempts.release_attempt(&record).await?;
            }
            // A failed attempt whose retry is still owed has not ended the job.
            if record.state.is_terminal() && !record.retry_pending {
                return Ok(Outcome::CancelIgnored { job_id: job_id.to_owned(), state: record.state });
            }
            // The record first, then the pod: the reconciler never sees the pod stopped by
            // this delete as deleted by someone else, and if the delete fails the pod
            // belongs to no active attempt, so the next pass deletes it.
            let mut change =
                StateChange::new(record.state, record.attempt, JobState::Cancelled, now, "Cancelled", reason);
            change.expires_at = self.expires_at(now);
            if let Changed::Applied(cancelled) = self.store().change(job_id, &change).await? {
                self.attempts.delete_pod(&cancelled).await?;
                // The record says the attempt is over: its slot is free for the next job.
                self.attempts.release_attempt(&record).await?;
                return Ok(Outcome::Cancelled { job_id: job_id.to_owned() });
            }
        }
        Err(Error::Store {
            operation: "cancel",
            retryable: true,
            source: format!("job {job_id} kept changing while it was cancelled").into(),
        })
    }

    /// Records a job that will not run as `cancelled` with `reason` (`Skipped`) and
    /// `message`, so that the decision is visible. Nothing changes if the job exists.
    pub async fn skip(&self, job_id: &str, source: Source, message: &str) -> Result<Outcome> {
        let now = Timestamp::now();
        let mut record = JobRecord::new(job_id, JobState::Cancelled, source, now, "Skipped", message);
        record.expires_at = self.expires_at(now);
        match self.store().create(&record).await? {
            Created::New => Ok(Outcome::Skipped { job_id: job_id.to_owned(), reason: message.to_owned() }),
            Created::Exists(existing) => {
                Ok(Outcome::AlreadyRecorded { job_id: job_id.to_owned(), state: existing.state })
            }
        }
    }

    /// Starts a new attempt of a failed or cancelled job on request of `sender`, keeping
    /// its history. With `attempt`, only if that is still the job's current attempt, so a
    /// request delivered twice starts one attempt, not two. The job's `maxAttempts` does
    /// not apply (a person asked), but the deployment's bound on retries on request does,
    /// and the transition says who asked. A job outside the sender's namespaces is
    /// refused.
    pub async fn retry(&self, job_id: &str, attempt: Option<u32>, reason: &str, sender: &Sender) -> Result<Outcome> {
        let ignored = |reason: String| Ok(Outcome::RetryIgnored { job_id: job_id.to_owned(), reason });
        let refused = |reason: String| Ok(Outcome::Refused { job_id: job_id.to_owned(), reason });
        let Some(record) = self.store().get(job_id).await? else {
            return ignored(format!("there is no job {job_id}"));
        };
        if let Some(why) = self.forbidden(sender, record.namespace.as_deref()) {
            return refused(why);
        }
        if !matches!(record.state, JobState::Failed | JobState::Cancelled) {
            return ignored(format!("the job is {}; only failed or cancelled jobs are retried", record.state));
        }
        if let Some(asked) = attempt.filter(|asked| *asked != record.attempt) {
            return ignored(format!("attempt {asked} is not the job's last; it is at attempt {}", record.attempt));
        }
        if record.spec.is_none() {
            return ignored("the job was cancelled before it was ever submitted; there is nothing to run".to_owned());
        }
        let asked_before = record.history.iter().filter(|t| t.reason == RETRY_REQUESTED).count();
        if asked_before >= self.max_manual_retries as usize {
            return refused(format!(
                "the job was retried on request {asked_before} times already, the most this deployment allows \
                 (PODBRIDGE_MAX_MANUAL_RETRIES={}); submit it again under a new id",
                self.max_manual_retries
            ));
        }
        let reason = format!("asked by {sender}: {reason}");
        let reason = reason.as_str();
        let job = record.stored_job()?;
        let next = record.attempt + 1;
        let mut change =
            StateChange::new(record.state, record.attempt, JobState::Queued, Timestamp::now(), RETRY_REQUESTED, reason);
        change.new_attempt = Some(next);
        match self.store().change(job_id, &change).await? {
            Changed::Applied(queued) => self.attempts.start(&queued, &job).await,
            Changed::Conflict(current) => ignored(format!(
                "the job moved meanwhile (now {})",
                current.map_or_else(|| "gone".to_owned(), |c| format!("{} at attempt {}", c.state, c.attempt))
            )),
        }
    }
}

/// The reason of a transition that starts an attempt someone asked for.
pub const RETRY_REQUESTED: &str = "RetryRequested";

/// Whether `record` is what a cancel left for a job that had not arrived yet.
fn is_tombstone(record: &JobRecord) -> bool {
    record.state == JobState::Cancelled
        && record.spec.is_none()
        && record.history.len() == 1
        && record.reason.as_deref() == Some("Cancelled")
        && !matches!(record.source, Source::Schedule { .. })
}
