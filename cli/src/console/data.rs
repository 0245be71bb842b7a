//! What the console shows, read from the deployment and computed without IO where it
//! can be: the active jobs from the active-jobs index (never a Scan), the jobs that
//! ended within a window from a filtered Scan (the only way to them: they are in no
//! index), both kept for a few seconds so that pages and their live updates share one
//! read.

use std::collections::{BTreeMap, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{JobStore as _, active_pages};
use podbridge_core::FailureClass;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use tokio::sync::Mutex;

/// How long the active jobs read once serve every page and the live updates.
const ACTIVE_FRESH: Duration = Duration::from_secs(2);
/// How long a Scan for ended jobs serves: it reads the whole table, so it is made at
/// most this often per window. Meanwhile the jobs that leave the active set are read
/// one by one and put in it, so the pages stay true between Scans.
const ENDED_FRESH: Duration = Duration::from_secs(60);
/// The most jobs that left the active set one look reads one by one; past it the ended
/// reads are dropped and the next page Scans again.
const FOLLOW_ENDED_MAX: usize = 100;
/// Active jobs read per index query.
const PAGE_SIZE: u32 = 500;
/// The most ended jobs one Scan keeps (the newest are not favoured: DynamoDB returns
/// them in key order); past it, the page says the figures are partial.
pub const ENDED_MAX: usize = 20_000;

/// The windows the overview and the job list offer, in the words they are shown in.
pub const WINDOWS: [(&str, SignedDuration); 5] = [
    ("15m", SignedDuration::from_mins(15)),
    ("1h", SignedDuration::from_hours(1)),
    ("6h", SignedDuration::from_hours(6)),
    ("24h", SignedDuration::from_hours(24)),
    ("7d", SignedDuration::from_hours(24 * 7)),
];

/// The window named `text`, else the default (`1h`).
pub fn window(text: Option<&str>) -> (&'static str, SignedDuration) {
    WINDOWS.iter().copied().find(|(name, _)| Some(*name) == text).unwrap_or(WINDOWS[1])
}

/// Records read at one moment.
#[derive(Debug, Clone)]
pub struct Read {
    pub records: Arc<Vec<JobRecord>>,
    pub at: Instant,
    /// The Scan stopped at [`ENDED_MAX`].
    pub partial: bool,
}

/// The deployment's job table, read through short-lived caches.
#[derive(Debug)]
pub struct Jobs {
    pub store: DynamoJobStore,
    active: Mutex<Option<Read>>,
    ended: Mutex<BTreeMap<&'static str, Read>>,
}

impl Jobs {
    pub fn new(store: DynamoJobStore) -> Self {
        Self { store, active: Mutex::new(None), ended: Mutex::new(BTreeMap::new()) }
    }

    /// Every active job (queued, setting up, executing), from the active-jobs index.
    pub async fn active(&self) -> Result<Read, podbridge::error::Error> {
        let mut cached = self.active.lock().await;
        if let Some(read) = cached.as_ref().filter(|read| read.at.elapsed() < ACTIVE_FRESH) {
            return Ok(read.clone());
        }
        let mut records = Vec::new();
        let mut pages = pin!(active_pages(&self.store, PAGE_SIZE));
        while let Some(page) = pages.next().await {
            // The index also holds failures whose retry is owed: they show as ended.
            records.extend(page?.jobs.into_iter().filter(|job| job.state.is_active()));
        }
        if let Some(previous) = cached.as_ref() {
            let now: HashSet<&str> = records.iter().map(|r| r.job_id.as_str()).collect();
            let left: Vec<String> = previous
                .records
                .iter()
                .filter(|r| !now.contains(r.job_id.as_str()))
                .map(|r| r.job_id.clone())
                .collect();
            if !left.is_empty() {
                self.follow_ended(&left).await;
            }
        }
        let read = Read { records: Arc::new(records), at: Instant::now(), partial: false };
        *cached = Some(read.clone());
        Ok(read)
    }

    /// Puts the jobs that left the active set (`left`) in the ended reads as they are
    /// now, so a job that ended shows as ended at once, not at the next Scan.
    async fn follow_ended(&self, left: &[String]) {
        let mut ended = self.ended.lock().await;
        if ended.is_empty() {
            return;
        }
        if left.len() > FOLLOW_ENDED_MAX {
            ended.clear();
            return;
        }
        let mut found = Vec::new();
        for id in left {
            match self.store.get(id).await {
                Ok(Some(record)) if record.state.is_terminal() => found.push(record),
                Ok(_) => {}
                // Not known now: the next page Scans again.
                Err(_) => {
                    ended.clear();
                    return;
                }
            }
        }
        for read in ended.values_mut() {
            let mut records: Vec<JobRecord> =
                read.records.iter().filter(|r| !left.contains(&r.job_id)).cloned().collect();
            records.extend(found.iter().cloned());
            read.records = Arc::new(records);
        }
    }

    /// The jobs that ended (or were rejected) within `window` before now: a Scan with a
    /// filter, made at most every [`ENDED_FRESH`] per window.
    pub async fn ended(&self, window: (&'static str, SignedDuration)) -> Result<Read, podbridge::error::Error> {
        let mut cached = self.ended.lock().await;
        cached.retain(|_, read| read.at.elapsed() < ENDED_FRESH);
        if let Some(read) = cached.get(window.0) {
            return Ok(read.clone());
        }
        let since = Timestamp::now().checked_sub(window.1).unwrap_or(Timestamp::MIN);
        let states: Vec<JobState> = JobState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        let mut records = self.store.ended(&states, None, Some(since), ENDED_MAX + 1).await?;
        let partial = records.len() > ENDED_MAX;
        records.truncate(ENDED_MAX);
        let read = Read { records: Arc::new(records), at: Instant::now(), partial };
        cached.insert(window.0, read.clone());
        Ok(read)
    }

    /// Forgets the active jobs read, so the next page reads them again (after an
    /// action); the ended reads stay: the jobs that leave the active set are put in them.
    pub async fn forget(&self) {
        *self.active.lock().await = None;
    }
}

/// The ended records that are not active again (retried since the Scan): each job is
/// counted once, as it is now.
pub fn only_ended<'a>(ended: &'a [JobRecord], active: &[JobRecord]) -> Vec<&'a JobRecord> {
    let active: HashSet<&str> = active.iter().map(|r| r.job_id.as_str()).collect();
    ended.iter().filter(|r| !active.contains(r.job_id.as_str())).collect()
}

pub(crate) use crate::queues::queue_of;

/// When the record entered its current state.
pub fn in_state_since(record: &JobRecord) -> Timestamp {
    record.state_times.get(&record.state).copied().unwrap_or(record.updated_at)
}

/// Jobs by state: the active ones now, the ended ones within the window.
pub fn counts(active: &[JobRecord], ended: &[&JobRecord]) -> BTreeMap<JobState, usize> {
    let mut counts: BTreeMap<JobState, usize> = JobState::ALL.into_iter().map(|state| (state, 0)).collect();
    for record in active.iter().chain(ended.iter().copied()) {
        *counts.entry(record.state).or_default() += 1;
    }
    counts
}

/// Failed jobs by failure class, most frequent first.
pub fn failures(ended: &[&JobRecord]) -> Vec<(FailureClass, usize)> {
    let mut by_class: BTreeMap<FailureClass, usize> = BTreeMap::new();
    for record in ended.iter().filter(|record| record.state == JobState::Failed) {
        if let Some(class) = record.failure_class {
            *by_class.entry(class).or_default() += 1;
        }
    }
    let mut classes: Vec<(FailureClass, usize)> = by_class.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    classes
}

/// An active job that has been in its state longer than it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub job_id: String,
    pub state: JobState,
    pub since: Timestamp,
    /// Why it counts as stuck, in words.
    pub why: String,
}

/// Active jobs stuck in their state: queued (and not waiting for room: that is the
/// queues' business) or setting up for longer than `after`, or executing past their
/// own timeout. Longest first.
pub fn stuck(active: &[JobRecord], after: Duration, now: Timestamp) -> Vec<Stuck> {
    let after = SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX);
    let mut found: Vec<Stuck> = active
        .iter()
        .filter_map(|record| {
            let since = in_state_since(record);
            let dwelt = now.duration_since(since);
            let why = match record.state {
                JobState::Queued if record.is_waiting() => return None,
                JobState::Queued | JobState::SettingUp if dwelt > after => {
                    format!("{} for longer than {}", record.state, crate::output::age(after))
                }
                JobState::Executing => {
                    let timeout = record.stored_job().ok()?.timeout_seconds;
                    let timeout = SignedDuration::from_secs(i64::try_from(timeout).ok()?);
                    if dwelt <= timeout {
                        return None;
                    }
                    format!("executing past its timeout of {}", crate::output::age(timeout))
                }
                _ => return None,
            };
            Some(Stuck { job_id: record.job_id.clone(), state: record.state, since, why })
        })
        .collect();
    found.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.job_id.cmp(&b.job_id)));
    found
}

/// Waiting jobs per queue, and when the longest-waiting one was recorded (as
/// `podbridge queues` counts them).
pub fn waiting_by_queue(active: &[JobRecord]) -> BTreeMap<String, (u64, Timestamp)> {
    crate::queues::count(active)
        .0
        .into_iter()
        .filter_map(|(queue, counts)| Some((queue, (counts.waiting, counts.oldest_waiting?))))
        .collect()
}

/// The chart of the overview: for each of `buckets` instants across the window, how
/// many jobs were queued, setting up and executing then (from each job's history), and
/// how many succeeded and failed in the bucket before it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Chart {
    /// Seconds since the epoch (uPlot's x values).
    pub at: Vec<i64>,
    pub queued: Vec<u32>,
    pub setting_up: Vec<u32>,
    pub executing: Vec<u32>,
    pub succeeded: Vec<u32>,
    pub failed: Vec<u32>,
}

/// The state `record` was in at `t`, from its history (`None`: not recorded yet).
fn state_at(record: &JobRecord, t: Timestamp) -> Option<JobState> {
    if record.created_at > t {
        return None;
    }
    record.history.iter().take_while(|change| change.at <= t).last().map(|change| change.to).or(Some(record.state))
}

/// [`Chart`] over the window ending at `now`. Every job active at some moment of the
/// window is either active now or ended within it, so `active` and `ended` hold all.
pub fn chart(
    active: &[JobRecord],
    ended: &[&JobRecord],
    window: SignedDuration,
    now: Timestamp,
    buckets: u32,
) -> Chart {
    let buckets = buckets.max(1);
    let step = window / i32::try_from(buckets).unwrap_or(i32::MAX);
    let mut chart = Chart {
        at: Vec::new(),
        queued: Vec::new(),
        setting_up: Vec::new(),
        executing: Vec::new(),
        succeeded: Vec::new(),
        failed: Vec::new(),
    };
    for i in 1..=buckets {
        let behind = step * i32::try_from(buckets - i).unwrap_or(0);
        let t = now.checked_sub(behind).unwrap_or(now);
        let from = t.checked_sub(step).unwrap_or(t);
        let (mut queued, mut setting_up, mut executing, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
        for record in active.iter().chain(ended.iter().copied()) {
            match state_at(record, t) {
                Some(JobState::Queued) => queued += 1,
                Some(JobState::SettingUp) => setting_up += 1,
                Some(JobState::Executing) => executing += 1,
                _ => {}
            }
            if let Some(at) = record.state_times.get(&record.state)
                && *at > from
                && *at <= t
            {
                match record.state {
                    JobState::Succeeded => succeeded += 1,
                    JobState::Failed => failed += 1,
                    _ => {}
                }
            }
        }
        chart.at.push(t.as_second());
        chart.queued.push(queued);
        chart.setting_up.push(setting_up);
        chart.executing.push(executing);
        chart.succeeded.push(succeeded);
        chart.failed.push(failed);
    }
    chart
}

/// What the job list keeps: each field a filter when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Filter {
    /// A state name, `active` (the default) or `all`.
    pub state: Option<String>,
    pub queue: Option<String>,
    pub namespace: Option<String>,
    /// A failure class (snake_case, as the records say).
    pub class: Option<String>,
    /// A window of [`WINDOWS`]: jobs whose state changed within it (ended jobs are
    /// read for this window; without it, for the last 24 hours).
    pub since: Option<String>,
    /// Part of a job id.
    pub q: Option<String>,
    /// `updated` (default), `created`, `id` or `state`.
    pub sort: Option<String>,
    /// `desc` (default for times) or `asc`.
    pub dir: Option<String>,
    /// 1-based (anything else is page 1).
    pub page: Option<String>,
}

/// A field of a form: blank counts as not given.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Filter {
    /// The page asked for (1-based; anything unreadable is the first).
    pub fn page(&self) -> usize {
        given(&self.page).and_then(|p| p.parse().ok()).unwrap_or(1)
    }

    /// What is wrong with the filters, in words: a value no state, class or window has.
    pub fn problem(&self) -> Option<String> {
        let mut problems = Vec::new();
        if let Some(state) = given(&self.state)
            && !matches!(state, "active" | "all")
            && state.parse::<JobState>().is_err()
        {
            problems.push(format!("state {state:?} is not a state (active, all, or one of queued, setting_up, executing, succeeded, failed, cancelled, rejected)"));
        }
        if let Some(class) = given(&self.class)
            && !FailureClass::ALL.iter().any(|c| c.as_str() == class)
        {
            problems.push(format!("failure class {class:?} is not one podbridge records"));
        }
        if let Some(since) = given(&self.since)
            && !WINDOWS.iter().any(|(name, _)| *name == since)
        {
            let names: Vec<&str> = WINDOWS.iter().map(|(name, _)| *name).collect();
            problems.push(format!("since {since:?} is not one of {}", names.join(", ")));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// The states asked for.
    pub fn states(&self) -> Vec<JobState> {
        match given(&self.state) {
            None | Some("active") => JobState::ALL.into_iter().filter(|s| s.is_active()).collect(),
            Some("all") => JobState::ALL.to_vec(),
            Some(name) => name.parse().map(|state| vec![state]).unwrap_or_default(),
        }
    }

    /// Whether ended jobs are asked for (which takes a Scan).
    pub fn wants_ended(&self) -> bool {
        self.states().iter().any(|s| s.is_terminal())
    }

    /// The window ended jobs are read for.
    pub fn window(&self) -> (&'static str, SignedDuration) {
        match given(&self.since) {
            Some(text) => window(Some(text)),
            None => WINDOWS[3],
        }
    }

    /// Whether `record` passes every filter given.
    pub fn matches(&self, record: &JobRecord, now: Timestamp) -> bool {
        let states = self.states();
        if !states.contains(&record.state) {
            return false;
        }
        if let Some(queue) = given(&self.queue)
            && queue_of(record).as_deref() != Some(queue)
        {
            return false;
        }
        if let Some(namespace) = given(&self.namespace)
            && record.namespace.as_deref() != Some(namespace)
        {
            return false;
        }
        if let Some(class) = given(&self.class)
            && record.failure_class.map(FailureClass::as_str) != Some(class)
        {
            return false;
        }
        if given(&self.since).is_some() {
            let since = now.checked_sub(self.window().1).unwrap_or(Timestamp::MIN);
            if record.updated_at < since {
                return false;
            }
        }
        if let Some(q) = given(&self.q)
            && !record.job_id.contains(q)
        {
            return false;
        }
        true
    }

    /// Sorts `records` as asked.
    pub fn sort(&self, records: &mut [&JobRecord]) {
        let ascending = given(&self.dir) == Some("asc");
        match given(&self.sort) {
            Some("created") => records.sort_by_key(|r| (r.created_at, r.job_id.clone())),
            Some("id") => records.sort_by(|a, b| a.job_id.cmp(&b.job_id)),
            Some("state") => records.sort_by(|a, b| (a.state, &a.job_id).cmp(&(b.state, &b.job_id))),
            _ => records.sort_by_key(|r| (r.updated_at, r.job_id.clone())),
        }
        let by_name = matches!(given(&self.sort), Some("id" | "state"));
        // Times newest first unless asked otherwise; names in order unless asked otherwise.
        if (by_name && given(&self.dir) == Some("desc")) || (!by_name && !ascending) {
            records.reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use podbridge_core::record::{Source, StateChange};
    use podbridge_core::validate::{Guardrails, Parsed, parse_message};

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn record(id: &str, moves: &[(JobState, &str)]) -> JobRecord {
        let mut record = JobRecord::new(id, JobState::Queued, Source::Direct, at(moves[0].1), "Submitted", "");
        let body = serde_json::json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/a:1",
            "queue": "etl", "namespace": "batch", "timeoutSeconds": 600 } });
        let guardrails = Guardrails {
            namespaces: vec!["batch".into()],
            image_prefixes: vec!["registry.example.com/".into()],
            ..Guardrails::default()
        };
        let parsed = parse_message(body.to_string().as_bytes(), "m", &guardrails);
        let Ok(Parsed::Job(job)) = parsed else { panic!("a valid job: {parsed:?}") };
        record.spec = Some(serde_json::to_value(&job).unwrap());
        record.namespace = Some("batch".into());
        for window in moves.windows(2) {
            let change = StateChange::new(window[0].0, 1, window[1].0, at(window[1].1), "R", "m");
            record.apply(&change);
        }
        record
    }

    #[test]
    fn the_chart_counts_each_job_in_the_state_its_history_gives_at_each_instant() {
        let now = at("2026-11-30T12:00:00Z");
        let ran = record(
            "a",
            &[
                (JobState::Queued, "2026-11-30T11:05:00Z"),
                (JobState::SettingUp, "2026-11-30T11:10:00Z"),
                (JobState::Executing, "2026-11-30T11:12:00Z"),
                (JobState::Failed, "2026-11-30T11:40:00Z"),
            ],
        );
        let runs =
            record("b", &[(JobState::Queued, "2026-11-30T11:35:00Z"), (JobState::Executing, "2026-11-30T11:50:00Z")]);
        let chart = chart(&[runs], &[&ran], SignedDuration::from_hours(1), now, 6);
        // Instants 11:10, 11:20, ..., 12:00.
        assert_eq!(chart.at.first(), Some(&at("2026-11-30T11:10:00Z").as_second()));
        assert_eq!(chart.queued, [0, 0, 0, 1, 0, 0]);
        assert_eq!(chart.setting_up, [1, 0, 0, 0, 0, 0]);
        assert_eq!(chart.executing, [0, 1, 1, 0, 1, 1]);
        assert_eq!(chart.failed, [0, 0, 0, 1, 0, 0]);
        assert_eq!(chart.succeeded, [0; 6]);
    }

    #[test]
    fn stuck_jobs_are_those_past_the_threshold_or_their_timeout_and_never_the_waiting() {
        let now = at("2026-11-30T12:00:00Z");
        let long_setup = record(
            "setup",
            &[(JobState::Queued, "2026-11-30T11:00:00Z"), (JobState::SettingUp, "2026-11-30T11:30:00Z")],
        );
        let fresh = record("fresh", &[(JobState::Queued, "2026-11-30T11:59:00Z")]);
        let past_timeout = record(
            "late",
            &[(JobState::Queued, "2026-11-30T11:00:00Z"), (JobState::Executing, "2026-11-30T11:45:00Z")],
        );
        let in_time =
            record("ok", &[(JobState::Queued, "2026-11-30T11:50:00Z"), (JobState::Executing, "2026-11-30T11:55:00Z")]);
        let mut waiting = record("waits", &[(JobState::Queued, "2026-11-30T10:00:00Z")]);
        waiting.reason = Some(podbridge_core::record::WAITING.to_owned());
        waiting.wait = Some(podbridge_core::record::WaitPlace::new("etl", 0, waiting.created_at, "waits"));
        let found = stuck(&[long_setup, fresh, past_timeout, in_time, waiting], Duration::from_secs(600), now);
        let ids: Vec<&str> = found.iter().map(|s| s.job_id.as_str()).collect();
        assert_eq!(ids, ["setup", "late"]);
        assert!(found[0].why.contains("setting_up for longer than 10m"), "{}", found[0].why);
        assert!(found[1].why.contains("past its timeout of 10m"), "{}", found[1].why);
    }

    #[test]
    fn the_filter_keeps_what_each_field_says_and_sorts_newest_first() {
        let now = at("2026-11-30T12:00:00Z");
        let mut failed =
            record("f-1", &[(JobState::Queued, "2026-11-30T11:00:00Z"), (JobState::Failed, "2026-11-30T11:10:00Z")]);
        failed.failure_class = Some(FailureClass::OomKilled);
        let running =
            record("r-1", &[(JobState::Queued, "2026-11-30T11:20:00Z"), (JobState::Executing, "2026-11-30T11:30:00Z")]);
        let filter = |text: &str| -> Filter { serde_json::from_str(text).unwrap() };
        assert!(filter("{}").matches(&running, now) && !filter("{}").matches(&failed, now));
        let oom = filter(r#"{"state": "failed", "class": "oom_killed"}"#);
        assert!(oom.matches(&failed, now) && oom.wants_ended());
        assert!(!filter(r#"{"state": "failed", "class": "image_pull"}"#).matches(&failed, now));
        assert!(filter(r#"{"state": "all", "q": "r-"}"#).matches(&running, now));
        assert!(!filter(r#"{"state": "all", "queue": "other"}"#).matches(&running, now));
        assert!(!filter(r#"{"state": "all", "since": "15m"}"#).matches(&failed, now));
        let mut records = vec![&failed, &running];
        filter("{}").sort(&mut records);
        assert_eq!(records[0].job_id, "r-1");
        filter(r#"{"sort": "id"}"#).sort(&mut records);
        assert_eq!(records[0].job_id, "f-1");
    }
}
