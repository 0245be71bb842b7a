//! `podbridge queues`: the queues jobs wait in for admission, what each holds and what
//! waits in it; and the operator's changes to them (limits, weight, pause).
//!
//! The definitions and what admitted jobs hold (the usage) come from the queue table
//! ([`QueueStore`]); how many of a queue's jobs run, start or wait comes from one pass
//! over the job table's active-jobs index, the query `podbridge list` makes; the waiting
//! jobs of one queue, in admission order, from the waiting-jobs index
//! ([`JobStore::waiting`]). A change is a put of the queue's whole definition, read
//! just before: only the fields given change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::pin::pin;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt as _;
use jiff::Timestamp;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{ALL_QUEUES, Definitions, JobStore, QueueStore, Usage, active_pages};
use podbridge_core::admission::{Limits, MAX_WEIGHT, Queue, Queues, Resources};
use podbridge_core::job::DEFAULT_QUEUE;
use podbridge_core::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use serde::Serialize;

use crate::connect::{self, Aws, Target};
use crate::list::queue_name;
use crate::output::{self, age};
use crate::settings::{Local, Overrides};

/// Active jobs read per index query.
const PAGE_SIZE: u32 = 200;

const EXAMPLES: &str = "\
Examples:
  podbridge queues                                  # every queue: limits, weight, what it holds and what waits
  podbridge queues get etl                          # one queue, and its first waiting jobs in admission order
  podbridge queues set etl --jobs 20 --cpu 8 --memory 32Gi --weight 2
  podbridge queues set etl --cpu none               # no CPU limit any more; the rest unchanged
  podbridge queues pause etl                        # admit nothing new from etl; what runs goes on
  podbridge queues resume etl
  podbridge queues limits --jobs 200 --cpu 400      # what all queues together may hold

Exit codes: 0 done, 1 error (a missing setting, AWS unreachable, no such queue),
64 wrong command line (a bad queue name, weight or quantity).";

/// What `set` and `limits` say about when a change applies.
const TAKES_EFFECT: &str = "A change takes effect within seconds: admission re-reads the queues every 2 s. \
    Lowering a limit never stops running jobs: it only holds new admissions until what the queue holds is \
    below the new limit.";

/// See the queues jobs wait in, and change their limits, weight and pause.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    long_about = "See the queues jobs wait in, and change their limits, weight and pause.\n\n\
        A job names a queue (`default` unless it says otherwise) and a priority. Its pod is created \
        only while its queue, and all queues together, have room for it under their limits (jobs, CPU, \
        memory held by admitted, unfinished jobs); otherwise it is recorded `queued` with reason \
        `Waiting`, and admitted later in its queue's order: higher priority first, then the oldest. \
        Queues compete for the limit across all queues by weight. The `default` queue always exists, \
        without limits, until it is changed.\n\n\
        Without a subcommand, lists the queues. Reads the queue table (PODBRIDGE_QUEUE_TABLE) and the \
        job table's active-jobs and waiting-jobs indexes (PODBRIDGE_TABLE).",
    after_help = EXAMPLES
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    List(ListArgs),
    Get(GetArgs),
    Set(SetArgs),
    Pause(PauseArgs),
    Resume(ResumeArgs),
    Limits(LimitsArgs),
}

/// List the queues: limits, weight, pause, and what each holds, runs and keeps waiting.
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = "List the queues, one a line: NAME; LIMITS (what its admitted, unfinished jobs may \
        hold); WEIGHT (its share of the limit across all queues against the others'); PAUSED; ADMITTED \
        (what its admitted jobs hold now: jobs, CPU, memory); RUNNING (its jobs executing); NOT RUNNING \
        (its jobs admitted or being admitted that do not run yet: setting up, or queued and not \
        waiting); WAITING (its jobs waiting for room) and OLDEST WAITING (how long the oldest of them \
        has been recorded). Then the limit across all queues, where it comes from (stored with \
        `podbridge queues limits`, else the deployment's PODBRIDGE_MAX_ADMITTED_* as set here), and \
        what all queues hold together.\n\n\
        A queue with jobs or holdings that is not defined shows as `not defined`.")]
struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Show one queue: its definition, what it holds, and its first waiting jobs in admission order.
#[derive(Debug, Clone, clap::Args)]
struct GetArgs {
    /// The queue.
    #[arg(value_name = "QUEUE", value_parser = queue_name)]
    name: String,
    /// How many of its waiting jobs to show, the next first.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
    waiting: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Create a queue, or change the given fields of one (limits, weight, fail-unschedulable).
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Create a queue, or change the given fields of one; the others keep their values. \
        A new queue has no limits, weight 1 and is not paused, unless the flags say otherwise. \
        Prints the queue as stored.",
    after_help = TAKES_EFFECT
)]
struct SetArgs {
    /// The queue.
    #[arg(value_name = "QUEUE", value_parser = queue_name)]
    name: String,
    /// The most admitted, unfinished jobs it may hold at once, or `none` (no limit).
    #[arg(long, value_name = "N|none", value_parser = jobs_limit)]
    jobs: Option<Limit<u32>>,
    /// The most CPU its admitted jobs may request together (`500m`, `8`), or `none`.
    #[arg(long, value_name = "QTY|none", value_parser = cpu_limit)]
    cpu: Option<Limit<u64>>,
    /// The most memory its admitted jobs may request together (`512Mi`, `32Gi`), or `none`.
    #[arg(long, value_name = "QTY|none", value_parser = memory_limit)]
    memory: Option<Limit<u64>>,
    /// Its share of the limit across all queues, against the other queues' weights (1 to 1000).
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WEIGHT)))]
    weight: Option<u32>,
    /// Fail an attempt that stays unschedulable (as before queues existed) instead of putting
    /// it back to wait for room.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    fail_unschedulable: Option<bool>,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Pause a queue: it admits no new jobs; the jobs it holds run on.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "A paused queue's jobs keep their place; `podbridge queues resume QUEUE` admits them again.")]
struct PauseArgs {
    /// The queue.
    #[arg(value_name = "QUEUE", value_parser = queue_name)]
    name: String,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Resume a paused queue: admission starts its waiting jobs as it has room.
#[derive(Debug, Clone, clap::Args)]
struct ResumeArgs {
    /// The queue.
    #[arg(value_name = "QUEUE", value_parser = queue_name)]
    name: String,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Show or set the limit across all queues: what their admitted jobs may hold together.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Show or set the limit across all queues: what all queues' admitted, unfinished jobs \
        may hold together (what the cluster can grow to). Without flags, prints it and where it comes \
        from. With flags, changes the given limits of the stored one and keeps the others; once a limit \
        is stored it replaces the deployment's default (PODBRIDGE_MAX_ADMITTED_JOBS, _CPU, _MEMORY) \
        entirely.",
    after_help = TAKES_EFFECT
)]
struct LimitsArgs {
    /// The most admitted, unfinished jobs of all queues together, or `none` (no limit).
    #[arg(long, value_name = "N|none", value_parser = jobs_limit)]
    jobs: Option<Limit<u32>>,
    /// The most CPU all admitted jobs may request together (`64`, `96500m`), or `none`.
    #[arg(long, value_name = "QTY|none", value_parser = cpu_limit)]
    cpu: Option<Limit<u64>>,
    /// The most memory all admitted jobs may request together (`256Gi`), or `none`.
    #[arg(long, value_name = "QTY|none", value_parser = memory_limit)]
    memory: Option<Limit<u64>>,
    #[command(flatten)]
    connect: connect::Flags,
}

/// One limit as given on the command line: a value, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit<T> {
    At(T),
    Unlimited,
}

impl<T: Copy> Limit<T> {
    /// `current`, changed by `given` when it is.
    fn apply(given: Option<Self>, current: Option<T>) -> Option<T> {
        match given {
            None => current,
            Some(Limit::At(value)) => Some(value),
            Some(Limit::Unlimited) => None,
        }
    }
}

/// Why a limit of zero is refused.
const NO_ZERO: &str = "a limit of 0 would refuse every job at submission (it could never fit); to hold new \
    jobs back, pause the queue (`podbridge queues pause QUEUE`)";

/// Parses `--jobs` (clap value parser).
fn jobs_limit(text: &str) -> Result<Limit<u32>, String> {
    if text == "none" {
        return Ok(Limit::Unlimited);
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!("{NO_ZERO}; allowed: a whole number of jobs from 1, or none (no limit)")),
        Ok(jobs) => Ok(Limit::At(jobs)),
        Err(_) => Err(format!("{text:?} is not a number of jobs; allowed: a whole number from 1, or none (no limit)")),
    }
}

/// Parses `--cpu` (clap value parser).
fn cpu_limit(text: &str) -> Result<Limit<u64>, String> {
    quantity(text, parse_cpu, "a CPU quantity such as 500m, 2 or 0.5")
}

/// Parses `--memory` (clap value parser).
fn memory_limit(text: &str) -> Result<Limit<u64>, String> {
    quantity(text, parse_memory, "a memory quantity such as 512Mi, 32Gi or 1G")
}

fn quantity(text: &str, parse: fn(&str) -> Result<u64, String>, allowed: &str) -> Result<Limit<u64>, String> {
    if text == "none" {
        return Ok(Limit::Unlimited);
    }
    match parse(text) {
        Ok(0) => Err(format!("{NO_ZERO}; allowed: {allowed}, or none (no limit)")),
        Ok(value) => Ok(Limit::At(value)),
        Err(why) => Err(format!("{why}; allowed: {allowed}, or none (no limit)")),
    }
}

/// Runs `podbridge queues`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        None => list(&args.list).await,
        Some(Sub::List(list_args)) => list(list_args).await,
        Some(Sub::Get(get_args)) => get(get_args).await,
        Some(Sub::Set(set_args)) => set(set_args).await,
        Some(Sub::Pause(pause_args)) => pause(&pause_args.name, &pause_args.connect, true).await,
        Some(Sub::Resume(resume_args)) => pause(&resume_args.name, &resume_args.connect, false).await,
        Some(Sub::Limits(limits_args)) => limits(limits_args).await,
    }
}

/// The store and where it is, for the commands that need only the queue table.
struct Connected {
    aws: Aws,
    store: DynamoJobStore,
    queue_table: String,
    /// The job table, when the command needs (and was given) one.
    table: Option<String>,
}

/// Connects with the queue table (required first: it is what every queue command reads)
/// and, when `needs_jobs`, the job table.
async fn connect(flags: &connect::Flags, needs_jobs: bool) -> anyhow::Result<Connected> {
    let target = Target::from_env(flags);
    let queue_table = target.queue_table()?.to_owned();
    let table = if needs_jobs { Some(target.table()?.to_owned()) } else { target.table_if_set().map(str::to_owned) };
    let aws = target.connect().await?;
    // A store needs a job table's name; commands that read only queues never use it.
    let store = aws.store(table.as_deref().unwrap_or("-"), Some(&queue_table));
    Ok(Connected { aws, store, queue_table, table })
}

impl Connected {
    async fn definitions(&self) -> anyhow::Result<Definitions> {
        self.store.definitions().await.map_err(|error| {
            self.aws.explain(&error, &format!("reading the queues from the queue table {}", self.queue_table))
        })
    }

    async fn usage(&self) -> anyhow::Result<BTreeMap<String, Usage>> {
        self.store.usage().await.map_err(|error| {
            self.aws.explain(&error, &format!("reading what the queues hold from the queue table {}", self.queue_table))
        })
    }

    async fn put_queue(&self, queue: &Queue) -> anyhow::Result<()> {
        self.store.put_queue(queue).await.map_err(|error| {
            self.aws.explain(&error, &format!("writing queue {} to the queue table {}", queue.name, self.queue_table))
        })
    }

    /// The queue `name` as stored now.
    async fn stored(&self, name: &str) -> anyhow::Result<Queue> {
        let definitions = self.definitions().await?;
        definitions.queues.into_iter().find(|queue| queue.name == name).with_context(|| {
            format!("queue {name} was written but is not in the queue table {} when read back", self.queue_table)
        })
    }
}

/// Where the limit across all queues comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TotalFrom {
    /// Stored in the queue table (`podbridge queues limits`).
    Stored,
    /// The deployment's default, PODBRIDGE_MAX_ADMITTED_* as set in this environment.
    Deployment,
    /// Neither: no limit.
    Unset,
}

impl TotalFrom {
    fn explain(self) -> &'static str {
        match self {
            TotalFrom::Stored => "stored; `podbridge queues limits` changes it",
            TotalFrom::Deployment => {
                "the deployment's default, from PODBRIDGE_MAX_ADMITTED_* as set here: none is stored \
                 (`podbridge queues limits` stores one)"
            }
            TotalFrom::Unset => "none is stored, and PODBRIDGE_MAX_ADMITTED_* are not set here",
        }
    }
}

/// The limit across all queues and where it comes from: the stored one, else the
/// deployment's default as this environment's PODBRIDGE_MAX_ADMITTED_* say.
fn total(stored: Option<Limits>) -> anyhow::Result<(Limits, TotalFrom)> {
    if let Some(stored) = stored {
        return Ok((stored, TotalFrom::Stored));
    }
    let default = deployment_total()?;
    Ok(if default == Limits::NONE { (default, TotalFrom::Unset) } else { (default, TotalFrom::Deployment) })
}

/// The deployment's default limit across all queues, read as the functions read it.
fn deployment_total() -> anyhow::Result<Limits> {
    let local = Local::from_env(&Overrides::default())
        .context("reading PODBRIDGE_MAX_ADMITTED_* (the deployment's default limit across all queues)")?;
    Ok(local.settings.admission.total)
}

/// What one queue's jobs are doing, from the active-jobs index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) running: u64,
    pub(crate) not_running: u64,
    pub(crate) waiting: u64,
    /// When the longest-waiting job was recorded.
    pub(crate) oldest_waiting: Option<Timestamp>,
}

/// The queue a record counts in: where it waits, else its stored job's.
pub(crate) fn queue_of(record: &JobRecord) -> Option<String> {
    record.wait.as_ref().map(|place| place.queue.clone()).or_else(|| record.stored_job().ok().map(|job| job.queue))
}

/// Counts `records` by queue; returns the counts and how many active records could
/// not be put in a queue (no readable spec).
pub(crate) fn count<'a>(records: impl IntoIterator<Item = &'a JobRecord>) -> (BTreeMap<String, Counts>, u64) {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut unplaced = 0;
    for record in records.into_iter().filter(|record| record.state.is_active()) {
        let Some(queue) = queue_of(record) else {
            unplaced += 1;
            continue;
        };
        let counted = counts.entry(queue).or_default();
        match record.state {
            JobState::Executing => counted.running += 1,
            JobState::Queued if record.is_waiting() => {
                counted.waiting += 1;
                counted.oldest_waiting =
                    Some(counted.oldest_waiting.map_or(record.created_at, |oldest| oldest.min(record.created_at)));
            }
            _ => counted.not_running += 1,
        }
    }
    (counts, unplaced)
}

/// Everything `list` and `get` show, read once.
struct Snapshot {
    queues: Queues,
    /// The names of the queues stored (the others are shown as they would be).
    defined: BTreeSet<String>,
    total_from: TotalFrom,
    usage: BTreeMap<String, Usage>,
    counts: BTreeMap<String, Counts>,
    unplaced: u64,
}

impl Snapshot {
    async fn read(connected: &Connected) -> anyhow::Result<Snapshot> {
        let store = &connected.store;
        let mut records = Vec::new();
        let mut pages = pin!(active_pages(store, PAGE_SIZE));
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| {
                connected.aws.explain(&error, &format!("reading the active jobs of the table {}", store.table()))
            })?;
            records.extend(page.jobs);
        }
        Self::of(connected, &records).await
    }

    /// The snapshot with `records` the active jobs, read already.
    async fn of(connected: &Connected, records: &[JobRecord]) -> anyhow::Result<Snapshot> {
        let definitions = connected.definitions().await?;
        let usage = connected.usage().await?;
        let (total, total_from) = total(definitions.total)?;
        let defined = definitions.queues.iter().map(|queue| queue.name.clone()).collect();
        let queues = Queues::new(definitions.queues, total);
        let (counts, unplaced) = count(records);
        Ok(Snapshot { queues, defined, total_from, usage, counts, unplaced })
    }

    /// Every queue to show: the defined ones, `default`, and any other that holds or
    /// keeps jobs.
    fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.queues.queues.keys().cloned().collect();
        names.extend(self.usage.keys().filter(|name| *name != ALL_QUEUES).cloned());
        names.extend(self.counts.keys().cloned());
        names
    }

    fn held(&self, name: &str) -> Resources {
        self.usage.get(name).map(|usage| usage.held).unwrap_or_default()
    }

    fn view(&self, name: &str) -> QueueView {
        let queue = self.queues.get(name);
        let counts = self.counts.get(name).copied().unwrap_or_default();
        QueueView {
            name: name.to_owned(),
            defined: queue.is_some(),
            stored: self.defined.contains(name),
            limits: queue.map(|queue| LimitsView::from(&queue.limits)),
            weight: queue.map(|queue| queue.weight),
            paused: queue.map(|queue| queue.paused),
            fail_unschedulable: queue.map(|queue| queue.fail_unschedulable),
            admitted: HeldView::from(self.held(name)),
            running: counts.running,
            not_running: counts.not_running,
            waiting: counts.waiting,
            oldest_waiting_since: counts.oldest_waiting,
        }
    }

    fn all_queues(&self) -> AllQueuesView {
        AllQueuesView {
            limits: LimitsView::from(&self.queues.total),
            limits_from: self.total_from,
            admitted: HeldView::from(self.held(ALL_QUEUES)),
        }
    }

    fn note_unplaced(&self) {
        if self.unplaced > 0 {
            eprintln!(
                "note: {} active job{} without a readable job spec {} counted in no queue",
                self.unplaced,
                if self.unplaced == 1 { "" } else { "s" },
                if self.unplaced == 1 { "is" } else { "are" }
            );
        }
    }
}

/// Limits as shown: each in its unit, and in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LimitsView {
    pub(crate) jobs: Option<u32>,
    pub(crate) cpu_millis: Option<u64>,
    pub(crate) memory_bytes: Option<u64>,
    /// `20 jobs, 8 CPU`, or `none`.
    pub(crate) text: String,
}

impl From<&Limits> for LimitsView {
    fn from(limits: &Limits) -> Self {
        Self {
            jobs: limits.jobs,
            cpu_millis: limits.cpu_millis,
            memory_bytes: limits.memory_bytes,
            text: limits.describe(),
        }
    }
}

/// What admitted jobs hold, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct HeldView {
    pub(crate) jobs: u32,
    pub(crate) cpu_millis: u64,
    pub(crate) memory_bytes: u64,
    /// `3 jobs, 1500m CPU, 3Gi memory`, or `nothing`.
    pub(crate) text: String,
}

impl From<Resources> for HeldView {
    fn from(held: Resources) -> Self {
        Self { jobs: held.jobs, cpu_millis: held.cpu_millis, memory_bytes: held.memory_bytes, text: held_text(held) }
    }
}

/// What `held` holds, in words.
fn held_text(held: Resources) -> String {
    if held == Resources::default() {
        return "nothing".to_owned();
    }
    format!(
        "{} job{}, {} CPU, {} memory",
        held.jobs,
        if held.jobs == 1 { "" } else { "s" },
        format_cpu(held.cpu_millis),
        format_memory(held.memory_bytes)
    )
}

/// One queue as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QueueView {
    pub(crate) name: String,
    /// Whether admission knows the queue (stored, or `default`).
    pub(crate) defined: bool,
    /// Whether the queue table holds its definition (`default` needs none).
    pub(crate) stored: bool,
    pub(crate) limits: Option<LimitsView>,
    pub(crate) weight: Option<u32>,
    pub(crate) paused: Option<bool>,
    pub(crate) fail_unschedulable: Option<bool>,
    pub(crate) admitted: HeldView,
    pub(crate) running: u64,
    pub(crate) not_running: u64,
    pub(crate) waiting: u64,
    pub(crate) oldest_waiting_since: Option<Timestamp>,
}

/// All queues together, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AllQueuesView {
    pub(crate) limits: LimitsView,
    pub(crate) limits_from: TotalFrom,
    pub(crate) admitted: HeldView,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListView {
    pub(crate) queues: Vec<QueueView>,
    pub(crate) all_queues: AllQueuesView,
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The queues as a table, then the two lines for all queues.
fn list_text(view: &ListView, now: Timestamp) -> String {
    let header =
        ["NAME", "LIMITS", "WEIGHT", "PAUSED", "ADMITTED", "RUNNING", "NOT RUNNING", "WAITING", "OLDEST WAITING"];
    let mut table = output::table(&header, false);
    let dash = || "-".to_owned();
    for queue in &view.queues {
        table.add_row(vec![
            queue.name.clone(),
            queue.limits.as_ref().map_or_else(|| "not defined".to_owned(), |limits| limits.text.clone()),
            queue.weight.map_or_else(dash, |weight| weight.to_string()),
            queue.paused.map_or_else(dash, |paused| yes_no(paused).to_owned()),
            queue.admitted.text.clone(),
            queue.running.to_string(),
            queue.not_running.to_string(),
            queue.waiting.to_string(),
            queue.oldest_waiting_since.map_or_else(dash, |since| age(now.duration_since(since))),
        ]);
    }
    let all = &view.all_queues;
    let mut totals = output::table(&[], false);
    totals.add_row(vec![
        "Limit across all queues:".to_owned(),
        format!("{} ({})", all.limits.text, all.limits_from.explain()),
    ]);
    totals.add_row(vec!["Admitted across all queues:".to_owned(), all.admitted.text.clone()]);
    format!("{}\n\n{}\n", output::render(&mut table), output::render(&mut totals))
}

/// Every queue as `podbridge queues` shows it, and all queues together, with `active`
/// the active jobs already read: for the console.
pub(crate) async fn read_list(
    aws: &Aws,
    store: &DynamoJobStore,
    queue_table: &str,
    active: &[JobRecord],
) -> anyhow::Result<ListView> {
    let connected = Connected {
        aws: aws.clone(),
        store: store.clone(),
        queue_table: queue_table.to_owned(),
        table: Some(store.table().to_owned()),
    };
    let snapshot = Snapshot::of(&connected, active).await?;
    Ok(ListView {
        queues: snapshot.names().iter().map(|name| snapshot.view(name)).collect(),
        all_queues: snapshot.all_queues(),
    })
}

/// `podbridge queues list`.
async fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let connected = connect(&args.connect, true).await?;
    let snapshot = Snapshot::read(&connected).await?;
    let view = ListView {
        queues: snapshot.names().iter().map(|name| snapshot.view(name)).collect(),
        all_queues: snapshot.all_queues(),
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &view).context("writing JSON")?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", list_text(&view, Timestamp::now()))?;
    }
    snapshot.note_unplaced();
    Ok(ExitCode::SUCCESS)
}

/// One waiting job as `get` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct WaitingView {
    /// Its place in the queue's order (1 is next).
    position: usize,
    job_id: String,
    priority: Option<i32>,
    created_at: Timestamp,
    /// What holds it (the record's message).
    reason: String,
}

impl WaitingView {
    fn new(position: usize, record: &JobRecord) -> Self {
        Self {
            position,
            job_id: record.job_id.clone(),
            priority: record.stored_job().ok().map(|job| job.priority),
            created_at: record.created_at,
            reason: record.message.as_deref().map(crate::get::without_place).unwrap_or_default().to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
struct GetView {
    #[serde(flatten)]
    queue: QueueView,
    waiting_jobs: Vec<WaitingView>,
}

/// One queue as text: its fields, then its waiting jobs.
fn get_text(view: &GetView, now: Timestamp) -> String {
    let queue = &view.queue;
    let mut fields = output::table(&[], true);
    let mut field = |name: &str, value: String| {
        fields.add_row(vec![name.to_owned(), value]);
    };
    field("Queue", queue.name.clone());
    match &queue.limits {
        Some(limits) => field("Limits", limits.text.clone()),
        None => field("Limits", "not defined: admission refuses new jobs for it".to_owned()),
    }
    if let Some(weight) = queue.weight {
        field("Weight", weight.to_string());
    }
    if let Some(paused) = queue.paused {
        let text = if paused { "yes: it admits no new jobs; what it holds runs on" } else { "no" };
        field("Paused", text.to_owned());
    }
    if let Some(fail) = queue.fail_unschedulable {
        let text = if fail {
            "yes: an attempt that stays unschedulable fails"
        } else {
            "no: an attempt unschedulable for lack of room goes back to wait (when a node could hold it)"
        };
        field("Fail unschedulable", text.to_owned());
    }
    field("Admitted", queue.admitted.text.clone());
    field("Running", queue.running.to_string());
    field("Not running", format!("{} (setting up, or queued and not waiting)", queue.not_running));
    let oldest = queue
        .oldest_waiting_since
        .map(|since| format!(" (the oldest recorded {} ago)", age(now.duration_since(since))))
        .unwrap_or_default();
    field("Waiting", format!("{}{oldest}", queue.waiting));

    let mut text = format!("{}\n", output::render(&mut fields));
    if !view.waiting_jobs.is_empty() {
        let shown = view.waiting_jobs.len();
        let of = if (shown as u64) < queue.waiting {
            format!("the first {shown} of {}", queue.waiting)
        } else {
            "all".to_owned()
        };
        text.push_str(&format!("\nWaiting jobs ({of}, in admission order):\n"));
        let mut table = output::table(&["POSITION", "JOB", "PRIORITY", "WAITING FOR", "REASON"], true);
        for job in &view.waiting_jobs {
            table.add_row(vec![
                job.position.to_string(),
                job.job_id.clone(),
                job.priority.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                age(now.duration_since(job.created_at)),
                job.reason.clone(),
            ]);
        }
        text.push_str(&output::render(&mut table));
        text.push('\n');
    }
    text
}

/// `podbridge queues get`.
async fn get(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let connected = connect(&args.connect, true).await?;
    let snapshot = Snapshot::read(&connected).await?;
    if !snapshot.names().contains(&args.name) {
        anyhow::bail!(
            "there is no queue {:?}; the queues are: {} (`podbridge queues set {}` creates it)",
            args.name,
            snapshot.queues.names(),
            args.name
        );
    }
    let waiting = if args.waiting == 0 {
        Vec::new()
    } else {
        connected.store.waiting(&args.name, args.waiting).await.map_err(|error| {
            let table = connected.table.as_deref().unwrap_or_default();
            connected
                .aws
                .explain(&error, &format!("reading the jobs waiting in queue {} from the table {table}", args.name))
        })?
    };
    let view = GetView {
        queue: snapshot.view(&args.name),
        waiting_jobs: waiting.iter().enumerate().map(|(index, record)| WaitingView::new(index + 1, record)).collect(),
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &view).context("writing JSON")?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", get_text(&view, Timestamp::now()))?;
    }
    if !view.queue.defined {
        eprintln!(
            "note: queue {} is not defined, yet jobs are counted in it; `podbridge queues set {}` defines it",
            args.name, args.name
        );
    }
    snapshot.note_unplaced();
    Ok(ExitCode::SUCCESS)
}

/// A queue's definition as text, as `set`, `pause` and `resume` print it.
fn definition_text(queue: &Queue) -> String {
    let mut fields = output::table(&[], false);
    for (name, value) in [
        ("Queue", queue.name.clone()),
        ("Limits", queue.limits.describe()),
        ("Weight", queue.weight.to_string()),
        ("Paused", yes_no(queue.paused).to_owned()),
        ("Fail unschedulable", yes_no(queue.fail_unschedulable).to_owned()),
    ] {
        fields.add_row(vec![name.to_owned(), value]);
    }
    format!("{}\n", output::render(&mut fields))
}

/// What `held` has above `limits`, in words, if anything: a lowered limit's effect.
fn over(held: Resources, limits: &Limits) -> Vec<String> {
    let mut over = Vec::new();
    if let Some(limit) = limits.jobs.filter(|limit| held.jobs > *limit) {
        over.push(format!("{} jobs (limit {limit})", held.jobs));
    }
    if let Some(limit) = limits.cpu_millis.filter(|limit| held.cpu_millis > *limit) {
        over.push(format!("{} CPU (limit {})", format_cpu(held.cpu_millis), format_cpu(limit)));
    }
    if let Some(limit) = limits.memory_bytes.filter(|limit| held.memory_bytes > *limit) {
        over.push(format!("{} memory (limit {})", format_memory(held.memory_bytes), format_memory(limit)));
    }
    over
}

/// `podbridge queues set`.
async fn set(args: &SetArgs) -> anyhow::Result<ExitCode> {
    let connected = connect(&args.connect, false).await?;
    let definitions = connected.definitions().await?;
    let existing = definitions.queues.into_iter().find(|queue| queue.name == args.name);
    let created = existing.is_none();
    let mut queue = existing.unwrap_or_else(|| Queue::unlimited(args.name.clone()));
    queue.limits = Limits {
        jobs: Limit::apply(args.jobs, queue.limits.jobs),
        cpu_millis: Limit::apply(args.cpu, queue.limits.cpu_millis),
        memory_bytes: Limit::apply(args.memory, queue.limits.memory_bytes),
    };
    if let Some(weight) = args.weight {
        queue.weight = weight;
    }
    if let Some(fail) = args.fail_unschedulable {
        queue.fail_unschedulable = fail;
    }
    connected.put_queue(&queue).await?;
    let stored = connected.stored(&args.name).await?;
    print!("{}", definition_text(&stored));
    let what = if created && args.name != DEFAULT_QUEUE { "created" } else { "stored" };
    eprintln!("queue {} {what}; admission applies it within seconds (it re-reads the queues every 2 s)", args.name);
    let usage = connected.usage().await?;
    let held = usage.get(&args.name).map(|usage| usage.held).unwrap_or_default();
    let over = over(held, &stored.limits);
    if !over.is_empty() {
        eprintln!(
            "note: queue {} holds {}: its admitted jobs run on; new ones wait until it holds less",
            args.name,
            over.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `podbridge queues pause` (`paused`) and `resume`.
async fn pause(name: &str, flags: &connect::Flags, paused: bool) -> anyhow::Result<ExitCode> {
    let connected = connect(flags, false).await?;
    let definitions = connected.definitions().await?;
    let defined: Vec<String> = definitions.queues.iter().map(|queue| queue.name.clone()).collect();
    let existing = definitions.queues.into_iter().find(|queue| queue.name == name);
    let mut queue = match existing {
        Some(queue) => queue,
        // `default` exists without being stored; its first change stores it.
        None if name == DEFAULT_QUEUE => Queue::unlimited(DEFAULT_QUEUE),
        None => {
            let known = Queues::new(defined.into_iter().map(Queue::unlimited), Limits::NONE).names();
            anyhow::bail!(
                "there is no queue {name:?}; the queues are: {known} (`podbridge queues set {name}` creates it)"
            );
        }
    };
    let was = queue.paused;
    queue.paused = paused;
    connected.put_queue(&queue).await?;
    let stored = connected.stored(name).await?;
    print!("{}", definition_text(&stored));
    let usage = connected.usage().await?;
    let held = held_text(usage.get(name).map(|usage| usage.held).unwrap_or_default());
    let already = if was == paused { " (it already was)" } else { "" };
    if paused {
        eprintln!(
            "queue {name} paused{already}: within seconds it admits no new jobs; what it holds ({held}) runs on; \
             `podbridge queues resume {name}` resumes it"
        );
    } else {
        eprintln!(
            "queue {name} resumed{already}: within seconds admission starts its waiting jobs as it has room \
             (it holds {held})"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `podbridge queues limits`.
async fn limits(args: &LimitsArgs) -> anyhow::Result<ExitCode> {
    let connected = connect(&args.connect, false).await?;
    let definitions = connected.definitions().await?;
    let (current, from) = total(definitions.total)?;
    let usage = connected.usage().await?;
    let held = usage.get(ALL_QUEUES).map(|usage| usage.held).unwrap_or_default();
    let changes = args.jobs.is_some() || args.cpu.is_some() || args.memory.is_some();
    if !changes {
        println!("Limit across all queues: {} ({})", current.describe(), from.explain());
        println!("Admitted across all queues: {}", held_text(held));
        return Ok(ExitCode::SUCCESS);
    }
    // The stored limit, changed where the flags say; a default from the environment is
    // never stored by accident.
    let base = definitions.total.unwrap_or(Limits::NONE);
    let limits = Limits {
        jobs: Limit::apply(args.jobs, base.jobs),
        cpu_millis: Limit::apply(args.cpu, base.cpu_millis),
        memory_bytes: Limit::apply(args.memory, base.memory_bytes),
    };
    connected.store.put_total(&limits).await.map_err(|error| {
        connected.aws.explain(
            &error,
            &format!("writing the limit across all queues to the queue table {}", connected.queue_table),
        )
    })?;
    let stored = connected
        .definitions()
        .await?
        .total
        .context("the limit across all queues was written but is not there when read back")?;
    println!("Limit across all queues: {} ({})", stored.describe(), TotalFrom::Stored.explain());
    println!("Admitted across all queues: {}", held_text(held));
    eprintln!("stored; admission applies it within seconds (it re-reads the queues every 2 s)");
    if from == TotalFrom::Deployment {
        eprintln!(
            "note: the stored limit replaces the deployment's default ({}) entirely; a limit not given here is \
             no limit",
            current.describe()
        );
    }
    let over = over(held, &stored);
    if !over.is_empty() {
        eprintln!(
            "note: all queues hold {}: admitted jobs run on; new ones wait until they hold less",
            over.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use podbridge_core::record::{Source, StateChange, WAITING, WaitPlace};

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn limits_parse_with_none_and_refuse_zero_and_nonsense_saying_what_is_allowed() {
        assert_eq!(jobs_limit("20"), Ok(Limit::At(20)));
        assert_eq!(jobs_limit("none"), Ok(Limit::Unlimited));
        assert_eq!(cpu_limit("500m"), Ok(Limit::At(500)));
        assert_eq!(cpu_limit("8"), Ok(Limit::At(8000)));
        assert_eq!(memory_limit("32Gi"), Ok(Limit::At(32 << 30)));
        assert_eq!(memory_limit("none"), Ok(Limit::Unlimited));
        let error = cpu_limit("banana").unwrap_err();
        assert!(error.contains("\"banana\" is not a quantity") && error.contains("or none (no limit)"), "{error}");
        let error = jobs_limit("0").unwrap_err();
        assert!(error.contains("pause the queue") && error.contains("from 1"), "{error}");
        assert!(jobs_limit("-3").unwrap_err().contains("not a number of jobs"));
        assert!(memory_limit("0Gi").unwrap_err().contains("limit of 0"));
    }

    #[test]
    fn a_given_limit_replaces_none_clears_and_absent_keeps() {
        assert_eq!(Limit::apply(Some(Limit::At(5)), Some(3)), Some(5));
        assert_eq!(Limit::apply(Some(Limit::Unlimited), Some(3)), None);
        assert_eq!(Limit::apply(None, Some(3)), Some(3));
        assert_eq!(Limit::<u32>::apply(None, None), None);
    }

    #[test]
    fn the_help_says_what_admission_rereads() {
        assert_eq!(podbridge::services::QUEUES_REFRESH.as_secs(), 2, "TAKES_EFFECT says every 2 s");
        assert!(TAKES_EFFECT.contains("every 2 s") && TAKES_EFFECT.contains("never stops running jobs"));
    }

    fn record(id: &str, queue: &str, state: JobState, created: &str) -> JobRecord {
        let guardrails = podbridge_core::validate::Guardrails {
            namespaces: vec!["batch".into()],
            image_prefixes: vec!["*".into()],
            ..Default::default()
        };
        let body = serde_json::json!({ "version": 1, "job": { "id": id, "image": "x/y:1", "queue": queue } });
        let Ok(podbridge_core::validate::Parsed::Job(job)) =
            podbridge_core::validate::parse_message(body.to_string().as_bytes(), "unused", &guardrails)
        else {
            panic!("a valid job")
        };
        let mut record = JobRecord::new(id, JobState::Queued, Source::Direct, at(created), "Submitted", "queued");
        record.spec = Some(serde_json::to_value(&job).unwrap());
        record.state = state;
        record
    }

    fn waiting(id: &str, queue: &str, created: &str) -> JobRecord {
        let mut record = record(id, queue, JobState::Queued, created);
        let mut change = StateChange::new(JobState::Queued, 1, JobState::Queued, at(created), WAITING, "held");
        change.wait = Some(WaitPlace::new(queue, 0, at(created), id));
        record.apply(&change);
        record
    }

    #[test]
    fn jobs_are_counted_in_their_queue_by_what_they_do() {
        let records = [
            waiting("w1", "etl", "2026-11-21T02:00:00Z"),
            waiting("w2", "etl", "2026-11-21T01:00:00Z"),
            record("q1", "etl", JobState::Queued, "2026-11-21T02:00:00Z"),
            record("s1", "etl", JobState::SettingUp, "2026-11-21T02:00:00Z"),
            record("r1", "ml", JobState::Executing, "2026-11-21T02:00:00Z"),
            record("done", "ml", JobState::Succeeded, "2026-11-21T02:00:00Z"),
            JobRecord::new("nospec", JobState::Queued, Source::Direct, at("2026-11-21T02:00:00Z"), "S", "m"),
        ];
        let (counts, unplaced) = count(&records);
        assert_eq!(unplaced, 1, "a record without a spec is in no queue");
        let etl = Counts { running: 0, not_running: 2, waiting: 2, oldest_waiting: Some(at("2026-11-21T01:00:00Z")) };
        assert_eq!(counts["etl"], etl, "setting up, or queued and not waiting, is not running");
        let ml = Counts { running: 1, ..Counts::default() };
        assert_eq!(counts["ml"], ml, "an ended job counts nowhere");
        assert_eq!(counts.len(), 2);
    }

    fn view() -> ListView {
        let queue = |name: &str, limits: Limits, held: Resources, waiting: u64| QueueView {
            name: name.into(),
            defined: true,
            stored: true,
            limits: Some(LimitsView::from(&limits)),
            weight: Some(1),
            paused: Some(false),
            fail_unschedulable: Some(false),
            admitted: HeldView::from(held),
            running: held.jobs.into(),
            not_running: 0,
            waiting,
            oldest_waiting_since: (waiting > 0).then(|| at("2026-11-21T01:48:00Z")),
        };
        let etl = Limits { jobs: Some(2), cpu_millis: Some(4000), memory_bytes: None };
        ListView {
            queues: vec![
                queue("default", Limits::NONE, Resources::default(), 0),
                queue("etl", etl, Resources { jobs: 2, cpu_millis: 1500, memory_bytes: 3 << 30 }, 3),
            ],
            all_queues: AllQueuesView {
                limits: LimitsView::from(&Limits { jobs: Some(40), cpu_millis: None, memory_bytes: None }),
                limits_from: TotalFrom::Deployment,
                admitted: HeldView::from(Resources { jobs: 2, cpu_millis: 1500, memory_bytes: 3 << 30 }),
            },
        }
    }

    #[test]
    fn the_list_is_a_table_then_all_queues() {
        let text = list_text(&view(), at("2026-11-21T02:00:00Z"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].ends_with("OLDEST WAITING"), "{text}");
        assert!(lines[1].starts_with("default") && lines[1].contains("none") && lines[1].contains("nothing"), "{text}");
        assert!(lines[2].starts_with("etl") && lines[2].contains("2 jobs, 4 CPU"), "{text}");
        assert!(lines[2].contains("2 jobs, 1500m CPU, 3Gi memory") && lines[2].ends_with("12m"), "{text}");
        assert_eq!(lines[3], "");
        assert!(
            lines[4].starts_with("Limit across all queues:") && lines[4].contains("40 jobs (the deployment's default")
        );
        assert!(
            lines[5].starts_with("Admitted across all queues:") && lines[5].ends_with("2 jobs, 1500m CPU, 3Gi memory")
        );
        let json = serde_json::to_value(view()).unwrap();
        assert_eq!(json["queues"][1]["limits"]["cpu_millis"], 4000);
        assert_eq!(json["all_queues"]["limits_from"], "deployment");
    }

    #[test]
    fn a_queue_shows_its_waiting_jobs_with_their_positions() {
        let mut queue = view().queues.remove(1);
        queue.waiting = 3;
        let jobs = vec![
            WaitingView {
                position: 1,
                job_id: "etl-9".into(),
                priority: Some(10),
                created_at: at("2026-11-21T01:58:00Z"),
                reason: "queue etl: 2 of 2 jobs held".into(),
            },
            WaitingView {
                position: 2,
                job_id: "etl-3".into(),
                priority: Some(0),
                created_at: at("2026-11-21T01:48:00Z"),
                reason: "queue etl: 2 of 2 jobs held".into(),
            },
        ];
        let text = get_text(&GetView { queue, waiting_jobs: jobs }, at("2026-11-21T02:00:00Z"));
        assert!(text.contains("\nWaiting jobs (the first 2 of 3, in admission order):\n"), "{text}");
        let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("POSITION")).collect();
        assert!(rows[0].contains("WAITING FOR") && rows[0].ends_with("REASON"), "{text}");
        assert!(rows[1].starts_with("1 ") && rows[1].contains("etl-9") && rows[1].contains(" 2m "), "{text}");
        assert!(rows[2].starts_with("2 ") && rows[2].contains("etl-3") && rows[2].contains(" 12m "), "{text}");
    }

    #[test]
    fn a_lowered_limit_says_what_is_over_it() {
        let held = Resources { jobs: 5, cpu_millis: 2500, memory_bytes: 1 << 30 };
        assert_eq!(over(held, &Limits::NONE), Vec::<String>::new());
        let limits = Limits { jobs: Some(3), cpu_millis: Some(4000), memory_bytes: Some(512 << 20) };
        assert_eq!(over(held, &limits), ["5 jobs (limit 3)", "1Gi memory (limit 512Mi)"]);
    }
}
