//! `podbridge list`: the jobs in some states, one line each.
//!
//! Active jobs (queued, setting up, executing) come from the table's active-jobs index
//! through [`JobStore::active`], the query the reconciler makes: its cost grows with
//! the number of active jobs, whatever the size of the table's history. Ended jobs are
//! in no index, so asking for them is a Scan of the table with a filter; `--help` says
//! so, because on a large table that reads every item.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;
use podbridge::store::JobStore;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge_core::FailureClass;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
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
        item, so keep it to small tables or narrow it with --since.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// Only jobs in these states; repeat or comma-separate. A state name (queued,
    /// setting_up, executing, succeeded, failed, cancelled, rejected), `active` (the first
    /// three) or `all`.
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = states, default_value = "active")]
    state: Vec<States>,
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

/// One job as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub job_id: String,
    pub state: JobState,
    pub attempt: u32,
    pub failure_class: Option<FailureClass>,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<JobRecord> for Row {
    fn from(record: JobRecord) -> Self {
        Self {
            job_id: record.job_id,
            state: record.state,
            attempt: record.attempt,
            failure_class: record.failure_class,
            namespace: record.namespace,
            pod_name: record.pod_name,
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
    since: Option<Timestamp>,
}

impl Filter {
    fn matches(&self, row: &Row) -> bool {
        self.states.contains(&row.state)
            && self.namespace.as_ref().is_none_or(|namespace| row.namespace.as_ref() == Some(namespace))
            && self.since.is_none_or(|since| row.updated_at >= since)
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
    let filter = Filter {
        states: args.state.iter().flat_map(|s| s.0.iter().copied()).collect(),
        namespace: args.namespace.clone(),
        since,
    };
    // One row more than shown tells whether the list was cut.
    let wanted = args.limit as usize + 1;
    let mut rows = Vec::new();
    if filter.states.iter().any(|s| s.is_active()) {
        rows.extend(active_rows(&aws, &aws.store(table), &filter, wanted).await?);
    }
    if filter.states.iter().any(|s| s.is_terminal()) {
        rows.extend(scanned_rows(&aws, table, &filter, wanted).await?);
    }
    rows.sort_by(|a, b| (a.updated_at, &a.job_id).cmp(&(b.updated_at, &b.job_id)));
    let cut = rows.len() > args.limit as usize;
    rows.truncate(args.limit as usize);

    if args.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &rows).context("writing JSON")?;
        writeln!(stdout)?;
    } else if rows.is_empty() {
        eprintln!("no jobs match");
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

/// Matching active jobs from the active-jobs index, page by page, until `wanted` or the end.
async fn active_rows(aws: &Aws, store: &DynamoJobStore, filter: &Filter, wanted: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let page = store
            .active(PAGE_SIZE, from.as_deref())
            .await
            .map_err(|error| aws.explain(&error, &format!("reading the active jobs of the table {}", store.table())))?;
        // The index also holds failures whose retry is owed; the scan lists those.
        rows.extend(
            page.jobs.into_iter().filter(|job| job.state.is_active()).map(Row::from).filter(|row| filter.matches(row)),
        );
        from = page.next;
        if rows.len() >= wanted || from.is_none() {
            return Ok(rows);
        }
    }
}

/// The attributes a row needs, as the job table stores them (docs/ARCHITECTURE.md, "The
/// job table"); `#`-names because `state` and `namespace` are reserved words.
const ROW_ATTRIBUTES: [(&str, &str); 8] = [
    ("#id", "job_id"),
    ("#state", "state"),
    ("#attempt", "attempt"),
    ("#class", "failure_class"),
    ("#ns", "namespace"),
    ("#pod", "pod_name"),
    ("#created", "created_at"),
    ("#updated", "updated_at"),
];

/// Matching ended jobs from a Scan of the table, filtered by DynamoDB, until `wanted`
/// or the end of the table. Only the row's attributes are read back.
async fn scanned_rows(aws: &Aws, table: &str, filter: &Filter, wanted: usize) -> anyhow::Result<Vec<Row>> {
    let terminal: Vec<JobState> = filter.states.iter().copied().filter(|s| s.is_terminal()).collect();
    let mut values = HashMap::new();
    let placeholders: Vec<String> = terminal
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let name = format!(":s{index}");
            values.insert(name.clone(), AttributeValue::S(state.as_str().to_owned()));
            name
        })
        .collect();
    let mut conditions = vec![format!("#state IN ({})", placeholders.join(", "))];
    if let Some(namespace) = &filter.namespace {
        conditions.push("#ns = :ns".to_owned());
        values.insert(":ns".to_owned(), AttributeValue::S(namespace.clone()));
    }
    if let Some(since) = filter.since {
        // Stored times have nine fractional digits, so text order is time order.
        conditions.push("#updated >= :since".to_owned());
        values.insert(":since".to_owned(), AttributeValue::S(format!("{since:.9}")));
    }
    let client = aws.dynamodb();
    let mut rows = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let mut scan = client
            .scan()
            .table_name(table)
            .filter_expression(conditions.join(" AND "))
            .projection_expression(ROW_ATTRIBUTES.map(|(name, _)| name).join(", "))
            .set_expression_attribute_values(Some(values.clone()))
            .set_exclusive_start_key(start.take());
        for (name, attribute) in ROW_ATTRIBUTES {
            scan = scan.expression_attribute_names(name, attribute);
        }
        let output = scan
            .send()
            .await
            .map_err(|error| aws.explain_sdk(&error, &format!("scanning the table {table} for ended jobs")))?;
        for item in output.items() {
            let row = row_from_item(item)?;
            // DynamoDB filtered already; the same test keeps one meaning of a match.
            if filter.matches(&row) {
                rows.push(row);
            }
        }
        start = output.last_evaluated_key;
        if rows.len() >= wanted || start.is_none() {
            return Ok(rows);
        }
    }
}

/// A row from a scanned item's attributes.
fn row_from_item(item: &HashMap<String, AttributeValue>) -> anyhow::Result<Row> {
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    let job_id = text("job_id").context("a scanned item has no job_id")?;
    let field = |name: &str| text(name).with_context(|| format!("job {job_id}: no {name} in its item"));
    let time = |name: &str| -> anyhow::Result<Timestamp> {
        field(name)?.parse().with_context(|| format!("job {job_id}: {name} is not a time"))
    };
    let attempt = item
        .get("attempt")
        .and_then(|value| value.as_n().ok())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("job {job_id}: no attempt number in its item"))?;
    Ok(Row {
        state: field("state")?.parse().with_context(|| format!("job {job_id}: its state"))?,
        attempt,
        failure_class: text("failure_class").and_then(|c| c.parse().ok()),
        namespace: text("namespace"),
        pod_name: text("pod_name"),
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        job_id,
    })
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
            since: Some("2026-11-21T02:00:00Z".parse().unwrap()),
        };
        assert!(filter.matches(&row(JobState::Executing, "batch", "2026-11-21T02:00:00Z")));
        assert!(!filter.matches(&row(JobState::Queued, "batch", "2026-11-21T02:30:00Z")));
        assert!(!filter.matches(&row(JobState::Executing, "etl", "2026-11-21T02:30:00Z")));
        assert!(!filter.matches(&row(JobState::Executing, "batch", "2026-11-21T01:59:59Z")));
    }

    #[test]
    fn a_scanned_item_becomes_a_row() {
        let s = |v: &str| AttributeValue::S(v.into());
        let item = HashMap::from([
            ("job_id".to_owned(), s("report-1")),
            ("state".to_owned(), s("failed")),
            ("attempt".to_owned(), AttributeValue::N("2".into())),
            ("failure_class".to_owned(), s("oom_killed")),
            ("namespace".to_owned(), s("batch")),
            ("pod_name".to_owned(), s("report-1-2")),
            ("created_at".to_owned(), s("2026-11-21T02:00:00.000000000Z")),
            ("updated_at".to_owned(), s("2026-11-21T02:03:09.500000000Z")),
        ]);
        let row = row_from_item(&item).unwrap();
        assert_eq!((row.state, row.attempt), (JobState::Failed, 2));
        assert_eq!(row.failure_class, Some(FailureClass::OomKilled));
        assert_eq!(row.pod_name.as_deref(), Some("report-1-2"));
        let mut broken = item.clone();
        broken.remove("state");
        assert!(row_from_item(&broken).unwrap_err().to_string().contains("report-1: no state"));
    }
}
