//! `podbridge get JOB`: everything the table knows about one job, and its history; for
//! a job that waits for room in its queue, its place in the queue's order.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use podbridge::store::JobStore;
use podbridge_core::record::{JobRecord, Source};

use crate::EXIT_NOT_FOUND;
use crate::connect::{self, Target};
use crate::output::{self, ago, time};

const EXAMPLES: &str = "\
Examples:
  podbridge get nightly-report-2026-11-21
  podbridge get nightly-report-2026-11-21 --json | jq -r .state

Exit codes: 0 the job was shown, 1 error (a missing setting, AWS unreachable),
3 no such job in the table, 64 wrong command line.";

/// Show one job: its state, pod, failure and history.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Show one job: its state, attempt, pod, failure class, exit code, the container's \
        termination message, and every state change with its time, reason and message; its queue \
        and priority; and, for a job that waits for room in its queue, its position in the \
        queue's admission order (1 is next) and what holds it.\n\n\
        Reads the job's record from the job table (one strongly consistent GetItem); the position \
        of a waiting job is counted on the table's waiting-jobs index, which may lag a change by \
        a moment.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The job's id.
    #[arg(value_name = "JOB", value_parser = output::job_id)]
    job: String,
    /// Print the record as JSON (the fields of the table's item), for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Runs `podbridge get`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let table = target.table()?;
    let aws = target.connect().await?;
    let store = aws.store(table, target.queue_table_if_set());
    let record = store
        .get(&args.job)
        .await
        .map_err(|error| aws.explain(&error, &format!("reading job {} from the table {table}", args.job)))?;
    let Some(record) = record else {
        eprintln!("{}", output::not_found(&args.job, table));
        return Ok(ExitCode::from(EXIT_NOT_FOUND));
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &record).context("writing JSON")?;
        writeln!(stdout)?;
    } else {
        // The place is only said, never needed: a failed count still shows the job.
        let ahead = if record.is_waiting() {
            Some(match store.ahead_of(&record).await {
                Ok(Some(ahead)) => Ok(ahead),
                Ok(None) => Err("the record names no place in a queue".to_owned()),
                Err(error) => Err(error.to_string()),
            })
        } else {
            None
        };
        write!(stdout, "{}", describe(&record, ahead, Timestamp::now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The record as a person reads it: the fields that are set, then the termination
/// message, then the history. `ahead` is, for a waiting job, how many jobs wait ahead of
/// it in its queue (or why that could not be read).
pub fn describe(record: &JobRecord, ahead: Option<Result<u64, String>>, now: Timestamp) -> String {
    let mut fields = output::table(&[], true);
    let mut field = |name: &str, value: String| {
        fields.add_row(vec![name.to_owned(), value]);
    };
    field("Job", record.job_id.clone());
    let mut state = record.state.to_string();
    if let Some(class) = &record.failure_class {
        state.push_str(&format!(" ({class}"));
        if let Some(code) = record.exit_code {
            state.push_str(&format!(", exit code {code}"));
        }
        state.push(')');
    } else if let Some(code) = record.exit_code {
        state.push_str(&format!(" (exit code {code})"));
    }
    field("State", state);
    if let Some(ahead) = ahead {
        field("Waiting", waiting(record, ahead));
    }
    field("Attempt", record.attempt.to_string());
    if let Some(namespace) = &record.namespace {
        field("Namespace", namespace.clone());
    }
    if let Some(pod) = &record.pod_name {
        let node = record.node.as_ref().map(|node| format!(" on {node}")).unwrap_or_default();
        field("Pod", format!("{pod}{node}"));
    }
    if let Ok(job) = record.stored_job() {
        field("Queue", job.queue.clone());
        field("Priority", job.priority.to_string());
        field("Image", job.image.clone());
        let command: Vec<&str> = job.command.iter().chain(&job.args).map(String::as_str).collect();
        if !command.is_empty() {
            field("Command", command.join(" "));
        }
        field("Resources", format!("cpu {}, memory {}", job.cpu(), job.memory()));
        field("Retry", format!("up to {} attempts", job.retry.max_attempts));
    }
    field("Source", source(&record.source));
    field("Created", format!("{}  ({})", time(record.created_at), ago(record.created_at, now)));
    field("Updated", format!("{}  ({})", time(record.updated_at), ago(record.updated_at, now)));
    if let Some(reason) = &record.reason {
        field("Reason", reason.clone());
    }
    if let Some(message) = &record.message {
        field("Message", message.clone());
    }
    if let Some(expires) = record.expires_at.and_then(|seconds| Timestamp::from_second(seconds).ok()) {
        field("Expires", format!("{}  (the table's TTL removes the record then)", time(expires)));
    }

    let mut text = String::new();
    let mut section = |title: &str, body: &str| {
        if !text.is_empty() {
            text.push('\n');
        }
        if !title.is_empty() {
            text.push_str(title);
            text.push('\n');
        }
        text.push_str(body);
        text.push('\n');
    };
    section("", &output::render(&mut fields));
    if let Some(message) = record.termination_message.as_deref().filter(|m| !m.trim().is_empty()) {
        let indented: Vec<String> = message.trim_end().lines().map(|line| format!("  {line}")).collect();
        section("Termination message (the container's last words):", &indented.join("\n"));
    }
    let mut history = output::table(&["AT", "ATTEMPT", "CHANGE", "REASON", "MESSAGE"], true);
    for transition in &record.history {
        history.add_row(vec![
            time(transition.at),
            transition.attempt.to_string(),
            output::change(transition),
            transition.reason.clone(),
            transition.message.clone(),
        ]);
    }
    section("History:", &output::render(&mut history));
    text
}

/// Where a waiting job stands, in words: `position 3 in queue etl (2 ahead): queue etl:
/// 20 of 20 jobs held`.
pub(crate) fn waiting(record: &JobRecord, ahead: Result<u64, String>) -> String {
    let queue = match (&record.wait, record.stored_job()) {
        (Some(place), _) => place.queue.clone(),
        (None, Ok(job)) => job.queue,
        (None, Err(_)) => "?".to_owned(),
    };
    let why = record.message.as_deref().map(without_place).unwrap_or_default();
    let why = if why.is_empty() { "it waits for room".to_owned() } else { why.to_owned() };
    match ahead {
        Ok(0) => format!("position 1 in queue {queue} (none ahead): {why}"),
        Ok(ahead) => format!("position {} in queue {queue} ({ahead} ahead): {why}", ahead + 1),
        Err(error) => format!("in queue {queue}, position unknown ({error}): {why}"),
    }
}

/// A waiting job's message without the place it had when the message was written
/// (`2 ahead of it in queue etl; `): the place counted now replaces it.
pub(crate) fn without_place(message: &str) -> &str {
    let Some((place, rest)) = message.split_once("; ") else { return message };
    let stale = place.split_once(" ahead of it in queue ").is_some_and(|(count, queue)| {
        !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) && !queue.contains(' ')
    });
    if stale { rest } else { message }
}

/// Where a job came from, in words.
pub(crate) fn source(source: &Source) -> String {
    match source {
        Source::Sqs { message_id } => format!("SQS message {message_id}"),
        Source::EventBridge { event_id } => format!("EventBridge event {event_id}"),
        Source::Schedule { schedule, scheduled_time } => format!("schedule {schedule}, tick of {scheduled_time}"),
        Source::Direct => "submitted directly (podbridge submit --direct)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use podbridge_core::record::StateChange;
    use podbridge_core::state::JobState;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_failed_job_shows_its_class_pod_termination_message_and_every_change() {
        let mut record = JobRecord::new(
            "report-1",
            JobState::Queued,
            Source::Sqs { message_id: "m-1".into() },
            at("2026-11-21T02:00:00Z"),
            "Submitted",
            "the job was accepted and queued",
        );
        let mut created = StateChange::new(
            JobState::Queued,
            1,
            JobState::SettingUp,
            at("2026-11-21T02:00:01Z"),
            "PodCreated",
            "pod report-1-1 created in batch",
        );
        created.pod_name = Some("report-1-1".into());
        record.apply(&created);
        let mut failed = StateChange::new(
            JobState::SettingUp,
            1,
            JobState::Failed,
            at("2026-11-21T02:03:09Z"),
            "Error",
            "the container exited with code 3",
        );
        failed.failure_class = Some(podbridge_core::FailureClass::ExitCode);
        failed.exit_code = Some(3);
        failed.node = Some("node-1".into());
        failed.termination_message = Some("step 2 of 3\nno such table: sales\n".into());
        record.apply(&failed);

        let text = describe(&record, None, at("2026-11-21T02:08:09Z"));
        let line = |start: &str| {
            text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no {start} line:\n{text}")).to_owned()
        };
        assert!(line("State").ends_with("failed (exit_code, exit code 3)"), "{text}");
        assert!(line("Attempt").ends_with(" 1"), "{text}");
        assert!(line("Pod").ends_with("report-1-1 on node-1"), "{text}");
        assert!(line("Source").ends_with("SQS message m-1"), "{text}");
        assert!(line("Updated").ends_with("2026-11-21T02:03:09Z  (5m ago)"), "{text}");
        assert!(
            text.contains("Termination message (the container's last words):\n  step 2 of 3\n  no such table: sales\n")
        );
        let history: Vec<&str> = text.lines().skip_while(|l| *l != "History:").skip(1).collect();
        assert_eq!(history.len(), 4, "a header and three changes:\n{text}");
        assert!(history[0].starts_with("AT") && history[0].ends_with("MESSAGE"), "{text}");
        assert!(history[1].contains("new → queued") && history[1].contains("Submitted"), "{text}");
        assert!(history[2].contains("queued → setting_up") && history[2].contains("PodCreated"), "{text}");
        assert!(history[3].starts_with("2026-11-21T02:03:09Z") && history[3].contains("setting_up → failed"), "{text}");
        assert!(!text.contains("Waiting"), "only a waiting job has a place:\n{text}");
    }

    #[test]
    fn a_waiting_job_shows_its_queue_priority_and_place_counted_now() {
        let guardrails = podbridge_core::validate::Guardrails {
            namespaces: vec!["batch".into()],
            image_prefixes: vec!["*".into()],
            ..Default::default()
        };
        let body = br#"{"version": 1, "job": {"id": "etl-7", "image": "x/y:1", "queue": "etl", "priority": 5}}"#;
        let Ok(podbridge_core::validate::Parsed::Job(job)) =
            podbridge_core::validate::parse_message(body, "unused", &guardrails)
        else {
            panic!("a valid job")
        };
        let created = at("2026-11-21T02:00:00Z");
        let mut record = JobRecord::new("etl-7", JobState::Queued, Source::Direct, created, "Submitted", "queued");
        record.spec = Some(serde_json::to_value(&job).unwrap());
        let mut wait = StateChange::new(
            JobState::Queued,
            1,
            JobState::Queued,
            at("2026-11-21T02:00:01Z"),
            podbridge_core::record::WAITING,
            "4 ahead of it in queue etl; queue etl: 20 of 20 jobs held",
        );
        wait.wait = Some(podbridge_core::record::WaitPlace::new("etl", 5, created, "etl-7"));
        record.apply(&wait);

        let text = describe(&record, Some(Ok(2)), at("2026-11-21T02:05:00Z"));
        let line = |start: &str| {
            text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no {start} line:\n{text}")).to_owned()
        };
        assert!(
            line("Waiting").ends_with("position 3 in queue etl (2 ahead): queue etl: 20 of 20 jobs held"),
            "the place counted now, not the one in the message:\n{text}"
        );
        assert!(line("Queue").ends_with(" etl") && line("Priority").ends_with(" 5"), "{text}");
        let first = describe(&record, Some(Ok(0)), at("2026-11-21T02:05:00Z"));
        assert!(first.contains("position 1 in queue etl (none ahead): queue etl: 20 of 20 jobs held"), "{first}");
        let unknown = describe(&record, Some(Err("throttled".into())), at("2026-11-21T02:05:00Z"));
        assert!(unknown.contains("in queue etl, position unknown (throttled): queue etl"), "{unknown}");
        assert_eq!(without_place("queue etl is paused"), "queue etl is paused");
        assert_eq!(without_place("limits; more"), "limits; more");
    }
}
