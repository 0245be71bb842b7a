//! `podbridge list`: the jobs in some states, one line each.
//!
//! Active jobs (queued, setting up, executing) come from the table's active-jobs index
//! through [`JobStore::active`], the query the reconciler makes: its cost grows with
//! the number of active jobs, whatever the size of the table's history. Ended jobs are
//! in no index, so asking for them is a Scan of the table with a filter; `--help` says
//! so, because on a large table that reads every item.
//!
//! `--queue Q` keeps the jobs of one queue. Listing its active or queued jobs starts with
//! the jobs waiting for room in it, in admission order, from the table's waiting-jobs
//! index ([`JobStore::waiting`]), each with its position (1 is admitted next).

use std::collections::BTreeSet;
use std::io::Write;
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt as _;
use jiff::Timestamp;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{JobStore, active_pages};
use podbridge_core::FailureClass;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use podbridge_core::validate::{QUEUE_NAME_RULE, is_queue_name};
use serde::Serialize;

use crate::connect::{self, Aws, Target};
use crate::output;

/// Active jobs read per index query.
const PAGE_SIZE: u32 = 200;

const EXAMPLES: &str = "\
Examples:
  podbridge list                                   # every active job, oldest change first
  podbridge list --state executing --namespace batch
  podbridge list --state failed --since 1h         # a Scan: failed jobs that changed in the last hour
  podbridge list --state all --limit 20 --json
  podbridge list --queue etl                       # its waiting jobs in admission order, then the rest
  podbridge list --queue etl --state queued        # only its queued jobs, the waiting ones first

Exit codes: 0 the jobs were listed (also when none matched), 1 error (a missing setting,
AWS unreachable), 64 wrong command line.";

/// List jobs: id, state, attempt, failure class, age and pod.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "List jobs, one line each: id, state, attempt, failure class, age (since the job was \
        recorded) and pod, oldest change first.\n\n\
        Active states (queued, setting_up, executing; the default) are read from the table's \
        active-jobs index, a Query whose cost grows with the number of active jobs only. \
        Ended states (succeeded, failed, cancelled, rejected) are in no index: asking for any of \
        them makes a Scan of the whole table with a filter, which reads (and is billed for) every \
        item, so keep it to small tables or narrow it with --since.\n\n\
        --queue keeps the jobs of one queue. When the states asked for are active ones and \
        include queued (as without --state), the jobs waiting for room in the queue come first, \
        in the order they will be admitted, with their POSITION (1 is next) and PRIORITY, read \
        from the table's waiting-jobs index; the queue's other jobs follow.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// Only jobs in these states; repeat or comma-separate. A state name (queued,
    /// setting_up, executing, succeeded, failed, cancelled, rejected), `active` (the first
    /// three) or `all`. [default: active]
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = states)]
    state: Vec<States>,
    /// Only jobs of this queue; its waiting jobs first, in admission order (see above).
    #[arg(long, value_name = "QUEUE", value_parser = queue_name)]
    queue: Option<String>,
    /// Only jobs of this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Only jobs whose state changed within this long (`30m`, `2h`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = output::duration)]
    since: Option<Duration>,
    /// Show at most this many jobs.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Print a JSON array of the jobs instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: connect::Flags,
}

/// The states one `--state` value stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct States(Vec<JobState>);

/// Parses one `--state` value.
fn states(text: &str) -> Result<States, String> {
    match text {
        "active" => Ok(States(JobState::ALL.into_iter().filter(|s| s.is_active()).collect())),
        "all" => Ok(States(JobState::ALL.to_vec())),
        name => name.parse().map(|state| States(vec![state])).map_err(|e| format!("{e}, active or all")),
    }
}

/// Parses `--queue` (clap value parser): a name no queue can have is a wrong command line.
pub fn queue_name(text: &str) -> Result<String, String> {
    if is_queue_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a queue name: {QUEUE_NAME_RULE}"))
    }
}

/// One job as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub job_id: String,
    pub state: JobState,
    pub attempt: u32,
    pub failure_class: Option<FailureClass>,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    /// The queue the job waits or waited in (none for a record without a readable spec).
    pub queue: Option<String>,
    pub priority: Option<i32>,
    /// With `--queue`: the place of a waiting job in its queue's order (1 is next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<JobRecord> for Row {
    fn from(record: JobRecord) -> Self {
        let job = record.stored_job().ok();
        let queue =
            record.wait.as_ref().map(|place| place.queue.clone()).or_else(|| job.as_ref().map(|j| j.queue.clone()));
        Self {
            job_id: record.job_id,
            state: record.state,
            attempt: record.attempt,
            failure_class: record.failure_class,
            namespace: record.namespace,
            pod_name: record.pod_name,
            queue,
            priority: job.map(|job| job.priority),
            position: None,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// What the rows must match.
#[derive(Debug, Clone)]
struct Filter {
    states: BTreeSet<JobState>,
    namespace: Option<String>,
    queue: Option<String>,
    since: Option<Timestamp>,
}

impl Filter {
    fn matches(&self, row: &Row) -> bool {
        self.states.contains(&row.state)
            && self.namespace.as_ref().is_none_or(|namespace| row.namespace.as_ref() == Some(namespace))
            && self.queue.as_ref().is_none_or(|queue| row.queue.as_ref() == Some(queue))
            && self.since.is_none_or(|since| row.updated_at >= since)
    }

    /// The queue whose waiting jobs come first, in admission order: the one asked for,
    /// when the states asked for are active ones and include queued.
    fn waiting_queue(&self) -> Option<&str> {
        let active = self.states.iter().all(|state| state.is_active());
        self.queue.as_deref().filter(|_| active && self.states.contains(&JobState::Queued))
    }
}

/// Runs `podbridge list`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let table = target.table()?;
    let aws = target.connect().await?;
    let now = Timestamp::now();
    // A --since longer than all of time means every job.
    let since = args.since.map(|since| {
        jiff::SignedDuration::try_from(since).ok().and_then(|d| now.checked_sub(d).ok()).unwrap_or(Timestamp::MIN)
    });
    let mut states: BTreeSet<JobState> = args.state.iter().flat_map(|s| s.0.iter().copied()).collect();
    if states.is_empty() {
        states = JobState::ALL.into_iter().filter(|s| s.is_active()).collect();
    }
    let filter = Filter { states, namespace: args.namespace.clone(), queue: args.queue.clone(), since };
    // One row more than shown tells whether the list was cut.
    let wanted = args.limit as usize + 1;
    let store = aws.store(table, target.queue_table_if_set());
    // The waiting jobs of the queue, in admission order, numbered in it before any
    // other filter applies, so that a position is the job's place in its queue.
    let mut waiting = Vec::new();
    if let Some(queue) = filter.waiting_queue() {
        let records = store.waiting(queue, u32::try_from(wanted).unwrap_or(u32::MAX)).await.map_err(|error| {
            aws.explain(&error, &format!("reading the jobs waiting in queue {queue} from the table {table}"))
        })?;
        for (index, record) in records.into_iter().enumerate() {
            let mut row = Row::from(record);
            row.position = Some(index + 1);
            if filter.matches(&row) {
                waiting.push(row);
            }
        }
    }
    let mut rows = Vec::new();
    if filter.states.iter().any(|s| s.is_active()) {
        let listed_apart = filter.waiting_queue().is_some();
        rows.extend(active_rows(&aws, &store, &filter, listed_apart, wanted).await?);
    }
    if filter.states.iter().any(|s| s.is_terminal()) {
        rows.extend(ended_rows(&aws, &store, &filter, wanted).await?);
    }
    rows.sort_by(|a, b| (a.updated_at, &a.job_id).cmp(&(b.updated_at, &b.job_id)));
    let mut rows: Vec<Row> = waiting.into_iter().chain(rows).collect();
    let cut = rows.len() > args.limit as usize;
    rows.truncate(args.limit as usize);

    if args.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &rows).context("writing JSON")?;
        writeln!(stdout)?;
    } else if rows.is_empty() {
        eprintln!("no jobs match");
    } else if filter.waiting_queue().is_some() {
        let header = ["POSITION", "ID", "STATE", "PRIORITY", "ATTEMPT", "AGE", "POD"];
        let mut table = output::table(&header, false);
        let dash = || "-".to_owned();
        for row in &rows {
            table.add_row(vec![
                row.position.map_or_else(dash, |p| p.to_string()),
                row.job_id.clone(),
                row.state.to_string(),
                row.priority.map_or_else(dash, |p| p.to_string()),
                row.attempt.to_string(),
                output::age(now.duration_since(row.created_at)),
                row.pod_name.clone().unwrap_or_else(dash),
            ]);
        }
        output::print_table(&mut table)?;
    } else {
        let mut table = output::table(&["ID", "STATE", "ATTEMPT", "CLASS", "AGE", "POD"], false);
        for row in &rows {
            table.add_row(vec![
                row.job_id.clone(),
                row.state.to_string(),
                row.attempt.to_string(),
                row.failure_class.map_or("-", FailureClass::as_str).to_owned(),
                output::age(now.duration_since(row.created_at)),
                row.pod_name.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        output::print_table(&mut table)?;
    }
    if cut {
        eprintln!("more jobs match: only the first {} are shown (raise --limit to see more)", args.limit);
    }
    Ok(ExitCode::SUCCESS)
}

/// Matching active jobs from the active-jobs index, page by page, until `wanted` or the
/// end; without the waiting ones when they are `listed_apart`.
async fn active_rows(
    aws: &Aws,
    store: &DynamoJobStore,
    filter: &Filter,
    listed_apart: bool,
    wanted: usize,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut pages = pin!(active_pages(store, PAGE_SIZE));
    while rows.len() < wanted
        && let Some(page) = pages.next().await
    {
        let page = page
            .map_err(|error| aws.explain(&error, &format!("reading the active jobs of the table {}", store.table())))?;
        // The index also holds failures whose retry is owed; the scan lists those.
        rows.extend(
            page.jobs
                .into_iter()
                .filter(|job| job.state.is_active() && !(listed_apart && job.is_waiting()))
                .map(Row::from)
                .filter(|row| filter.matches(row)),
        );
    }
    Ok(rows)
}

/// Matching ended jobs from a Scan of the table ([`DynamoJobStore::ended`]), until
/// `wanted` or the end of the table.
async fn ended_rows(aws: &Aws, store: &DynamoJobStore, filter: &Filter, wanted: usize) -> anyhow::Result<Vec<Row>> {
    let states: Vec<JobState> = filter.states.iter().copied().collect();
    let jobs = store
        .ended(&states, filter.namespace.as_deref(), filter.since, wanted)
        .await
        .map_err(|error| aws.explain(&error, &format!("scanning the table {} for ended jobs", store.table())))?;
    // DynamoDB filtered already; the same test keeps one meaning of a match.
    Ok(jobs.into_iter().map(Row::from).filter(|row| filter.matches(row)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: JobState, namespace: &str, updated: &str) -> Row {
        Row {
            job_id: "j".into(),
            state,
            attempt: 1,
            failure_class: None,
            namespace: Some(namespace.into()),
            pod_name: None,
            queue: Some("default".into()),
            priority: Some(0),
            position: None,
            created_at: "2026-11-21T01:00:00Z".parse().unwrap(),
            updated_at: updated.parse().unwrap(),
        }
    }

    #[test]
    fn state_words_stand_for_their_states() {
        assert_eq!(states("active").unwrap().0, [JobState::Queued, JobState::SettingUp, JobState::Executing]);
        assert_eq!(states("all").unwrap().0.len(), 7);
        assert_eq!(states("failed").unwrap().0, [JobState::Failed]);
        let error = states("running").unwrap_err();
        assert!(error.contains("\"running\"") && error.contains("active or all"), "{error}");
    }

    #[test]
    fn a_row_matches_every_filter_given() {
        let filter = Filter {
            states: BTreeSet::from([JobState::Executing]),
            namespace: Some("batch".into()),
            queue: None,
            since: Some("2026-11-21T02:00:00Z".parse().unwrap()),
        };
        assert!(filter.matches(&row(JobState::Executing, "batch", "2026-11-21T02:00:00Z")));
        assert!(!filter.matches(&row(JobState::Queued, "batch", "2026-11-21T02:30:00Z")));
        assert!(!filter.matches(&row(JobState::Executing, "etl", "2026-11-21T02:30:00Z")));
        assert!(!filter.matches(&row(JobState::Executing, "batch", "2026-11-21T01:59:59Z")));
        assert_eq!(filter.waiting_queue(), None);
    }

    #[test]
    fn a_queue_filter_keeps_its_jobs_and_lists_its_waiting_ones_first_for_active_states() {
        let with = |states: &[JobState], queue: &str| Filter {
            states: states.iter().copied().collect(),
            namespace: None,
            queue: Some(queue.into()),
            since: None,
        };
        let active = [JobState::Queued, JobState::SettingUp, JobState::Executing];
        let filter = with(&active, "default");
        assert!(filter.matches(&row(JobState::Queued, "batch", "2026-11-21T02:00:00Z")));
        assert!(!with(&active, "etl").matches(&row(JobState::Queued, "batch", "2026-11-21T02:00:00Z")));
        assert_eq!(filter.waiting_queue(), Some("default"));
        assert_eq!(with(&[JobState::Queued], "etl").waiting_queue(), Some("etl"));
        assert_eq!(with(&[JobState::Executing], "etl").waiting_queue(), None, "no queued jobs asked for");
        assert_eq!(with(&[JobState::Queued, JobState::Failed], "etl").waiting_queue(), None, "ended ones too");
        assert_eq!(queue_name("etl"), Ok("etl".to_owned()));
        let error = queue_name("ETL").unwrap_err();
        assert!(error.contains("\"ETL\" is not a queue name") && error.contains("lowercase letters"), "{error}");
    }

    #[test]
    fn a_record_becomes_the_row_list_shows() {
        let created: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        let mut record = JobRecord::new(
            "report-1",
            JobState::Failed,
            podbridge_core::record::Source::Direct,
            created,
            "OOMKilled",
            "over its memory limit",
        );
        record.attempt = 2;
        record.failure_class = Some(FailureClass::OomKilled);
        record.namespace = Some("batch".into());
        record.pod_name = Some("report-1-2".into());
        record.updated_at = "2026-11-21T02:03:09.5Z".parse().unwrap();
        let row = Row::from(record);
        assert_eq!((row.job_id.as_str(), row.state, row.attempt), ("report-1", JobState::Failed, 2));
        assert_eq!(row.failure_class, Some(FailureClass::OomKilled));
        assert_eq!((row.namespace.as_deref(), row.pod_name.as_deref()), (Some("batch"), Some("report-1-2")));
        assert_eq!((row.queue, row.priority, row.position), (None, None, None), "no spec: no queue");
        assert_eq!((row.created_at, row.updated_at.to_string()), (created, "2026-11-21T02:03:09.5Z".to_owned()));
    }
}
