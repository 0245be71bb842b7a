//! `podbridge cancel JOB`: a cancel message on the job queue, which dispatch handles
//! like any other message (docs/JOBS.md, "Cancel messages").
//!
//! The cancel goes through the queue rather than straight to the table and the cluster
//! so that it is ordered with the job's own messages and handled by the one code path
//! that cancels: a cancel that overtakes its job on the queue still keeps the job from
//! running. When the table is configured, the job's record is read first, only to say
//! what the cancel will do.

use std::process::ExitCode;

use podbridge::store::JobStore;
use podbridge_core::record::JobRecord;
use serde_json::{Value, json};

use crate::connect::{self, Aws, Target};
use crate::output;

const EXAMPLES: &str = "\
Examples:
  podbridge cancel nightly-report-2026-11-21 --reason \"superseded by a rerun\"
  podbridge cancel nightly-report-2026-11-21 && podbridge watch nightly-report-2026-11-21

Exit codes: 0 the cancel message was sent, 1 error (a missing setting, the queue
unreachable), 64 wrong command line.";

/// Cancel a job: send a cancel message to the job queue.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Cancel a job: send {\"version\": 1, \"cancel\": {\"id\": JOB, \"reason\": ...}} to the \
        job queue. Dispatch deletes the pod of a queued or running job (SIGTERM, then its grace \
        period) and records it as cancelled; a job that is not recorded yet is recorded as \
        cancelled and never runs; a job that has ended is left as it is.\n\n\
        Needs the queue (PODBRIDGE_QUEUE_URL). With the table configured too, the job's state is \
        read first to say what the cancel will do.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The job's id.
    #[arg(value_name = "JOB", value_parser = output::job_id)]
    job: String,
    /// Why, for the job's history [default: cancelled on request].
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The job's namespace: a cancel that reaches the queue before its job then holds
    /// for that namespace only [default: the sender's first namespace].
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    #[command(flatten)]
    connect: connect::Flags,
}

/// The cancel message for `job_id`, as docs/JOBS.md describes it.
pub fn message(job_id: &str, reason: Option<&str>, namespace: Option<&str>) -> Value {
    let mut cancel = json!({ "id": job_id });
    if let Some(reason) = reason {
        cancel["reason"] = json!(reason);
    }
    if let Some(namespace) = namespace {
        cancel["namespace"] = json!(namespace);
    }
    json!({ "version": 1, "cancel": cancel })
}

/// Runs `podbridge cancel`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let queue_url = target.queue_url()?;
    let aws = target.connect().await?;
    if let Some(table) = target.table_if_set() {
        eprintln!("{}", foresight(&aws, table, target.queue_table_if_set(), &args.job).await);
    }
    let body = message(&args.job, args.reason.as_deref(), args.namespace.as_deref()).to_string();
    let message_id = aws.send_message(queue_url, &body).await?;
    println!(
        "cancel of job {} sent to the queue (message {message_id}); dispatch cancels the job when it takes \
         the message; `podbridge watch {}` follows it",
        args.job, args.job
    );
    Ok(ExitCode::SUCCESS)
}

/// What the cancel will do to the job as it is recorded now.
async fn foresight(aws: &Aws, table: &str, queue_table: Option<&str>, job_id: &str) -> String {
    match aws.store(table, queue_table).get(job_id).await {
        Ok(record) => expect(job_id, record.as_ref()),
        Err(error) => format!("note: the job's state could not be read ({error}); sending the cancel anyway"),
    }
}

fn expect(job_id: &str, record: Option<&JobRecord>) -> String {
    match record {
        None => {
            format!("note: job {job_id} is not recorded (yet): the cancel records it as cancelled, so it never runs")
        }
        Some(record) if record.state.is_terminal() => {
            format!("note: job {job_id} has already ended ({}): the cancel will change nothing", record.state)
        }
        Some(record) if record.is_waiting() => {
            let queue = record.wait.as_ref().map(|place| format!(" in queue {}", place.queue)).unwrap_or_default();
            format!("note: job {job_id} waits for room{queue}: the cancel takes it out before it ever runs")
        }
        Some(record) => {
            let pod =
                record.pod_name.as_ref().map(|pod| format!(": its pod {pod} will be deleted")).unwrap_or_default();
            format!("note: job {job_id} is {} at attempt {}{pod}", record.state, record.attempt)
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use podbridge_core::record::Source;
    use podbridge_core::state::JobState;
    use podbridge_core::validate::{Guardrails, Parsed, parse_message};

    use super::*;

    #[test]
    fn the_message_is_a_cancel_dispatch_reads() {
        let body = message("report-1", Some("superseded"), Some("batch")).to_string();
        let Ok(Parsed::Cancel(cancel)) = parse_message(body.as_bytes(), "unused", &Guardrails::default()) else {
            panic!("not a cancel: {body}");
        };
        assert_eq!(
            (cancel.id.as_str(), cancel.reason.as_deref(), cancel.namespace.as_deref()),
            ("report-1", Some("superseded"), Some("batch"))
        );
        assert_eq!(message("report-1", None, None), json!({ "version": 1, "cancel": { "id": "report-1" } }));
    }

    #[test]
    fn the_note_says_what_the_cancel_will_do() {
        assert!(expect("j", None).contains("never runs"));
        let mut record = JobRecord::new("j", JobState::Executing, Source::Direct, Timestamp::now(), "R", "m");
        record.pod_name = Some("j-1".into());
        assert!(expect("j", Some(&record)).ends_with("executing at attempt 1: its pod j-1 will be deleted"));
        record.state = JobState::Succeeded;
        assert!(expect("j", Some(&record)).contains("will change nothing"));
        let mut waiting = JobRecord::new("w", JobState::Queued, Source::Direct, Timestamp::now(), "Submitted", "m");
        let mut wait = podbridge_core::record::StateChange::new(
            JobState::Queued,
            1,
            JobState::Queued,
            Timestamp::now(),
            podbridge_core::record::WAITING,
            "queue etl is paused",
        );
        wait.wait = Some(podbridge_core::record::WaitPlace::new("etl", 0, waiting.created_at, "w"));
        waiting.apply(&wait);
        assert!(
            expect("w", Some(&waiting))
                .ends_with("waits for room in queue etl: the cancel takes it out before it ever runs")
        );
    }
}
