//! `podbridge submit FILE|-`: job messages to the job queue, or, with `--direct`,
//! straight through the submission core ([`Submitter::handle_message`]) that dispatch
//! runs for each message, without the queue.
//!
//! Nothing is validated against guardrails before sending: the deployment's dispatch
//! is the one judge (a rejected message is recorded as `rejected`, which `podbridge get`
//! shows). The input is only read as JSON, because it must be split into messages;
//! input that is not JSON sends nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use podbridge::cluster::KubeCluster;
use podbridge::error::error_chain;
use podbridge::services::{Outcome, Submitter};
use podbridge::settings::var;
use podbridge::wiring::{Deployment, FunctionStore};
use podbridge_core::record::Source;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::{id_from_message_id, is_valid_job_id};
use serde_json::Value;

use crate::EXIT_REJECTED;
use crate::connect::{self, Aws, Target};
use crate::settings::{Local, Overrides};

const EXAMPLES: &str = "\
Examples:
  podbridge submit examples/job-minimal.json
  podbridge submit jobs.jsonl                         # one message per line
  echo '{\"version\": 1, \"job\": {\"image\": \"busybox:1.36\"}}' | podbridge submit -
  podbridge watch \"$(podbridge submit job.json)\"
  podbridge submit --direct job.json                  # record it and create its pod from here

Exit codes: 0 every message was sent (--direct: recorded, its pod created or the job waiting
for room in its queue), 1 error (a missing setting, a file that cannot be read, AWS or the
cluster unreachable, --direct: a pod the Kubernetes API refused), 2 rejected (input that is
not JSON messages, nothing sent; --direct: a message recorded as rejected), 64 wrong command
line.";

/// Submit jobs: send job messages to the queue (--direct: record them and create their pods from here).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Submit jobs: send each job message to the job queue, where dispatch validates it \
        against the deployment's guardrails, records the job and creates its pod. Prints each \
        message's job id, one a line: the message's `id`, or `sqs-<message id>` for a job without \
        one (as dispatch names it). Follow a job with `podbridge watch ID`.\n\n\
        A file holds one message, a JSON array of messages, or messages one after the other (JSON \
        Lines). The format is in docs/JOBS.md; `podbridge render FILE` shows the pod a message \
        becomes. Cancel messages are sent like any other.\n\n\
        --direct runs the submission core that dispatch runs, here, without the queue: it records \
        the job in the table, admits it through its queue (the queue table; a job its queue has no \
        room for is recorded waiting, and the reconciler admits it later) and creates its pod in the \
        cluster of KUBECONFIG (or \
        PODBRIDGE_CLUSTER_NAME for EKS), with the guardrails of the PODBRIDGE_* variables or the \
        flags below (local fallbacks where unset, as for render), and publishes the job's state \
        changes to the bus. A job without an id gets `direct-<time>-<n>`.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// Files of job messages; `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Record the jobs and create their pods from here instead of sending them to the queue.
    #[arg(long)]
    direct: bool,
    /// With --direct: the guardrails the messages are checked against.
    #[command(flatten)]
    guardrails: Overrides,
    #[command(flatten)]
    connect: connect::Flags,
}

/// One message of the input and where it came from.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    /// `FILE` when the file holds one message, else `FILE, message N`.
    origin: String,
    body: Value,
}

/// Runs `podbridge submit`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut messages = Vec::new();
    for file in &args.files {
        let (origin, bytes) = read(file)?;
        match split(&origin, &bytes) {
            Ok(found) => messages.extend(found),
            Err(problem) => {
                eprintln!("{problem}");
                eprintln!("rejected: nothing was sent; `podbridge render FILE` checks a message");
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
        }
    }
    let target = Target::from_env(&args.connect);
    if args.direct { direct(args, &target, &messages).await } else { send(&target, &messages).await }
}

fn read(file: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    if file == Path::new("-") {
        let mut body = Vec::new();
        std::io::stdin().lock().read_to_end(&mut body).context("reading messages from stdin")?;
        Ok(("stdin".to_owned(), body))
    } else {
        let body = std::fs::read(file).with_context(|| format!("reading messages from {}", file.display()))?;
        Ok((file.display().to_string(), body))
    }
}

/// The messages of one input: a JSON object, an array of them, or several one after
/// the other. Every message must be an object; anything else names where it is.
fn split(origin: &str, bytes: &[u8]) -> Result<Vec<Message>, String> {
    let mut bodies = Vec::new();
    for value in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
        match value.map_err(|e| format!("{origin}: not JSON: {e}"))? {
            Value::Array(items) => bodies.extend(items),
            other => bodies.push(other),
        }
    }
    if bodies.is_empty() {
        return Err(format!("{origin}: no message in it"));
    }
    let several = bodies.len() > 1;
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let origin = if several { format!("{origin}, message {}", index + 1) } else { origin.to_owned() };
            if body.is_object() {
                Ok(Message { origin, body })
            } else {
                Err(format!("{origin}: a message must be a JSON object with `version` and `job` or `cancel`"))
            }
        })
        .collect()
}

/// The job a message sent with SQS message id `message_id` is about, as dispatch names
/// it, and a note when that is not the id the message asked for.
fn queued_job_id(body: &Value, message_id: &str) -> (String, Option<String>) {
    let own = body["job"]["id"].as_str().or_else(|| body["cancel"]["id"].as_str());
    let derived = id_from_message_id(message_id);
    match own {
        Some(id) if is_valid_job_id(id) => (id.to_owned(), None),
        Some(id) => {
            let note =
                format!("note: {id:?} is not a valid job id: dispatch rejects the message and records it as {derived}");
            (derived, Some(note))
        }
        None => (derived, None),
    }
}

/// Sends every message to the queue, in order, printing each job id once it is sent.
async fn send(target: &Target, messages: &[Message]) -> anyhow::Result<ExitCode> {
    let queue_url = target.queue_url()?;
    let aws = target.connect().await?;
    for (index, message) in messages.iter().enumerate() {
        let message_id = aws.send_message(queue_url, &message.body.to_string()).await.with_context(|| {
            format!(
                "{} was not sent ({index} of {} messages were, their ids are above)",
                message.origin,
                messages.len()
            )
        })?;
        let (job_id, note) = queued_job_id(&message.body, &message_id);
        if let Some(note) = note {
            eprintln!("{note}");
        }
        println!("{job_id}");
    }
    eprintln!(
        "sent {} message{} to the queue; dispatch records each job when it takes its message \
         (`podbridge get ID`, `podbridge watch ID`)",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs every message through the submission core, here.
async fn direct(args: &Args, target: &Target, messages: &[Message]) -> anyhow::Result<ExitCode> {
    let table = target.table()?;
    // Admission takes each job's slot in the queue table, as dispatch does.
    let queue_table = target.queue_table()?;
    let fixed = [
        (var::TABLE, table.to_owned()),
        (var::QUEUE_TABLE, queue_table.to_owned()),
        (var::EVENT_BUS, target.bus().to_owned()),
    ];
    let local = Local::from_env_with(&args.guardrails, &fixed, &[]).context("reading the PODBRIDGE_* settings")?;
    if let Some(note) = local.assumed_note() {
        eprintln!("{note}");
    }
    let aws = target.connect().await?;
    // The functions' own wiring: the journaled store, so that these jobs announce their
    // state changes too, and the cluster of PODBRIDGE_CLUSTER_* or KUBECONFIG.
    let deployment = Deployment::connect(local.settings, aws.sdk(), "cli").await.map_err(|error| {
        anyhow::anyhow!("connecting to the cluster (--direct creates the pods itself): {}", error_chain(&error))
    })?;
    let submitter = deployment.submitter();

    let stamp = Timestamp::now().as_millisecond();
    let mut code = ExitCode::SUCCESS;
    let mut rejected = false;
    for (index, message) in messages.iter().enumerate() {
        let fallback_id = format!("direct-{stamp}-{}", index + 1);
        let handled = submitter
            .handle_message(message.body.to_string().as_bytes(), Source::Direct, &Sender::Operator, &fallback_id)
            .await;
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(error) => {
                announce(&submitter, target.bus()).await;
                return Err(failure(&aws, &error, &message.origin));
            }
        };
        println!("{}", outcome.job_id());
        eprintln!("{}: {}", message.origin, describe(&outcome));
        match outcome {
            Outcome::Rejected { .. } => rejected = true,
            Outcome::Failed { .. } => code = ExitCode::FAILURE,
            _ => {}
        }
    }
    announce(&submitter, target.bus()).await;
    Ok(if rejected { ExitCode::from(EXIT_REJECTED) } else { code })
}

/// The submission core as `--direct` runs it: the functions' journaled store.
type DirectSubmitter = Submitter<FunctionStore, KubeCluster>;

/// Publishes the state changes written so far; a lost event is said, not an error.
async fn announce(submitter: &DirectSubmitter, bus: &str) {
    let report = submitter.store().flush().await;
    if report.failed > 0 {
        eprintln!(
            "warning: {} job state change event{} could not be published to the bus {bus}; the jobs are recorded",
            report.failed,
            if report.failed == 1 { "" } else { "s" }
        );
    }
}

/// An error of the submission core, with where it happened and what to check.
fn failure(aws: &Aws, error: &podbridge::Error, origin: &str) -> anyhow::Error {
    let what = format!("submitting {origin}");
    match error {
        podbridge::Error::Store { .. } => aws.explain(error, &what),
        _ => anyhow::anyhow!("{what} failed: {}", error_chain(error)),
    }
}

/// What became of a message, in words.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Dispatched { job_id, attempt, pod_name } => {
            format!("job {job_id} recorded, pod {pod_name} created (attempt {attempt})")
        }
        Outcome::Waiting { job_id, reason } => format!("job {job_id} recorded; it waits for room: {reason}"),
        Outcome::AlreadyRecorded { job_id, state } => {
            format!("job {job_id} was already recorded ({state}); nothing more was needed")
        }
        Outcome::Rejected { job_id, reason } => format!("rejected, recorded as job {job_id}: {reason}"),
        Outcome::Failed { job_id, reason } => format!("job {job_id} failed: {reason}"),
        Outcome::Cancelled { job_id } => format!("job {job_id} cancelled"),
        Outcome::CancelIgnored { job_id, state } => format!("job {job_id} has already ended ({state}); cancel ignored"),
        Outcome::Skipped { job_id, reason } => format!("job {job_id} skipped: {reason}"),
        Outcome::RetryIgnored { job_id, reason } => format!("retry of job {job_id} ignored: {reason}"),
        Outcome::Refused { job_id, reason } => format!("refused for job {job_id}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_input_is_one_message_an_array_or_one_message_a_line() {
        let one = split("a.json", br#"{"version": 1, "job": {"id": "a"}}"#).unwrap();
        assert_eq!(one, [Message { origin: "a.json".into(), body: json!({"version": 1, "job": {"id": "a"}}) }]);

        let array = split("b.json", br#"[{"version": 1}, {"version": 1, "cancel": {"id": "x"}}]"#).unwrap();
        assert_eq!(array.len(), 2);
        assert_eq!(array[1].origin, "b.json, message 2");

        let lines = split("c.jsonl", b"{\"version\": 1}\n{\"version\": 1}\n\n{\"version\": 1}\n").unwrap();
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn input_that_is_not_messages_says_where() {
        let error = split("d.json", b"{\"version\": 1}\n{\"version\": ").unwrap_err();
        assert!(error.starts_with("d.json: not JSON: ") && error.contains("line 2"), "{error}");
        assert_eq!(split("e.json", b"  \n").unwrap_err(), "e.json: no message in it");
        let error = split("f.json", b"[{\"version\": 1}, 7]").unwrap_err();
        assert!(error.starts_with("f.json, message 2: a message must be a JSON object"), "{error}");
    }

    #[test]
    fn the_printed_id_is_the_one_dispatch_records() {
        let check = |body: Value, expected: &str, noted: bool| {
            let (id, note) = queued_job_id(&body, "0b7c-11");
            assert_eq!((id.as_str(), note.is_some()), (expected, noted), "{body}");
        };
        check(json!({"version": 1, "job": {"id": "report-1"}}), "report-1", false);
        check(json!({"version": 1, "job": {"image": "x"}}), "sqs-0b7c-11", false);
        check(json!({"version": 1, "job": {"id": "-bad id"}}), "sqs-0b7c-11", true);
        check(json!({"version": 1, "cancel": {"id": "report-1"}}), "report-1", false);
    }
}
