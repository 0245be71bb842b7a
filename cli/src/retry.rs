//! `podbridge retry JOB`: a `Retry Job` event on the event bus, which the trigger
//! function turns into a new attempt of a failed or cancelled job (docs/JOBS.md,
//! "EventBridge: Submit, Cancel and Retry Job events").
//!
//! EventBridge delivers at least once, and the trigger starts a new attempt only if the
//! attempt named is still the job's last, so an event delivered twice starts one
//! attempt. The command therefore names the attempt: `--attempt`, or, when the table
//! is configured, the job's current attempt, read together with a check that the job
//! can be retried at all (the trigger would otherwise ignore the event, silently for
//! the person who sent it).

use std::process::ExitCode;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use podbridge::store::JobStore;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use serde_json::{Value, json};
use trigger::RETRY_JOB;

use crate::connect::{self, Aws, Target};
use crate::{EXIT_NOT_FOUND, output};

/// The `source` of the events the CLI puts: any source reaches the trigger, whose rule
/// matches the detail-type; this one says who asked.
pub const SOURCE: &str = "podbridge.cli";

const EXAMPLES: &str = "\
Examples:
  podbridge retry nightly-report-2026-11-21 --reason \"the upstream table is back\"
  podbridge retry nightly-report-2026-11-21 --attempt 2

Exit codes: 0 the event was put on the bus, 1 error (a missing setting, the bus
unreachable, or, with the table configured, a job that cannot be retried), 3 no such
job (only checked with the table configured), 64 wrong command line.";

/// Retry a failed or cancelled job: put a Retry Job event on the bus.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Retry a failed or cancelled job: put a `Retry Job` event (source podbridge.cli, detail \
        {\"jobId\", \"attempt\", \"reason\"}) on the event bus. The trigger function starts the next \
        attempt (a new pod), keeping the job's history; the job's retry.maxAttempts does not limit \
        a retry someone asked for.\n\n\
        Needs the bus (PODBRIDGE_EVENT_BUS, default `default`). With the table configured \
        (PODBRIDGE_TABLE), the job is read first: a job that is not failed or cancelled is not \
        retried, and the event names the job's current attempt, so that an event delivered twice \
        starts one attempt. Without the table, name the attempt with --attempt for the same safety.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The job's id.
    #[arg(value_name = "JOB", value_parser = output::job_id)]
    job: String,
    /// Retry only if this is still the job's last attempt [default: the job's current
    /// attempt when the table is configured, else any].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    attempt: Option<u32>,
    /// Why, for the job's history.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    #[command(flatten)]
    connect: connect::Flags,
}

/// The detail of a Retry Job event.
pub fn detail(job_id: &str, attempt: Option<u32>, reason: Option<&str>) -> Value {
    let mut detail = json!({ "jobId": job_id });
    if let Some(attempt) = attempt {
        detail["attempt"] = json!(attempt);
    }
    if let Some(reason) = reason {
        detail["reason"] = json!(reason);
    }
    detail
}

/// Runs `podbridge retry`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let aws = target.connect().await?;
    let mut attempt = args.attempt;
    match target.table_if_set() {
        Some(table) => {
            let record =
                aws.store(table, target.queue_table_if_set()).get(&args.job).await.map_err(|error| {
                    aws.explain(&error, &format!("reading job {} from the table {table}", args.job))
                })?;
            let Some(record) = record else {
                eprintln!("{}", output::not_found(&args.job, table));
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            };
            attempt = Some(retryable_attempt(&record, args.attempt)?);
        }
        None => eprintln!(
            "note: {} is not set, so the job's state was not checked; the trigger ignores a retry of a job \
             that is not failed or cancelled{}",
            connect::TABLE.variable,
            if attempt.is_none() { ", and without --attempt an event delivered twice retries twice" } else { "" }
        ),
    }
    let event_id = put(&aws, target.bus(), &detail(&args.job, attempt, args.reason.as_deref())).await?;
    let next = attempt.map(|a| format!("attempt {}", a + 1)).unwrap_or_else(|| "the next attempt".to_owned());
    println!(
        "Retry Job event for job {} put on the bus {} (event {event_id}); the trigger function starts {next}; \
         `podbridge watch {}` follows it",
        args.job,
        target.bus(),
        args.job
    );
    Ok(ExitCode::SUCCESS)
}

/// The attempt to name in the event, if `record` can be retried.
pub(crate) fn retryable_attempt(record: &JobRecord, asked: Option<u32>) -> anyhow::Result<u32> {
    let id = &record.job_id;
    if !matches!(record.state, JobState::Failed | JobState::Cancelled) {
        anyhow::bail!(
            "job {id} is {} (attempt {}): only failed or cancelled jobs are retried; nothing was sent",
            record.state,
            record.attempt
        );
    }
    if record.spec.is_none() {
        anyhow::bail!("job {id} was cancelled before it was ever submitted: there is nothing to run; nothing was sent");
    }
    if let Some(asked) = asked.filter(|asked| *asked != record.attempt) {
        anyhow::bail!(
            "job {id} is at attempt {}, not {asked}: the trigger would ignore the retry; nothing was sent",
            record.attempt
        );
    }
    Ok(record.attempt)
}

/// Puts one Retry Job event on `bus`; returns the event's id.
pub(crate) async fn put(aws: &Aws, bus: &str, detail: &Value) -> anyhow::Result<String> {
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(SOURCE)
        .detail_type(RETRY_JOB)
        .detail(detail.to_string())
        .build();
    let output = aws
        .events()
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|error| aws.explain_sdk(&error, &format!("putting a Retry Job event on the bus {bus}")))?;
    let entry = output.entries().first();
    match entry.and_then(|entry| entry.event_id()) {
        Some(event_id) if output.failed_entry_count() == 0 => Ok(event_id.to_owned()),
        _ => anyhow::bail!(
            "the bus {bus} refused the Retry Job event: {} {}",
            entry.and_then(|e| e.error_code()).unwrap_or("(no error code)"),
            entry.and_then(|e| e.error_message()).unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use podbridge_core::record::Source;

    use super::*;

    #[test]
    fn the_detail_has_only_what_was_given() {
        assert_eq!(detail("j", None, None), json!({ "jobId": "j" }));
        assert_eq!(detail("j", Some(2), Some("why")), json!({ "jobId": "j", "attempt": 2, "reason": "why" }));
    }

    #[test]
    fn only_a_failed_or_cancelled_job_at_the_named_attempt_is_retried() {
        let mut record = JobRecord::new("j", JobState::Failed, Source::Direct, Timestamp::now(), "E", "m");
        record.spec = Some(json!({}));
        record.attempt = 2;
        assert_eq!(retryable_attempt(&record, None).unwrap(), 2);
        assert_eq!(retryable_attempt(&record, Some(2)).unwrap(), 2);
        let error = retryable_attempt(&record, Some(1)).unwrap_err().to_string();
        assert!(error.contains("at attempt 2, not 1"), "{error}");
        record.state = JobState::Executing;
        let error = retryable_attempt(&record, None).unwrap_err().to_string();
        assert!(error.contains("is executing") && error.contains("nothing was sent"), "{error}");
        record.state = JobState::Cancelled;
        record.spec = None;
        assert!(retryable_attempt(&record, None).unwrap_err().to_string().contains("before it was ever submitted"));
    }
}
