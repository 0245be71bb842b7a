//! `podbridge render`: the pod a job message would create, validated exactly as the
//! dispatch function validates it and built by the same pod builder, without touching
//! a queue, a table or a cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use podbridge_core::pod::build_pod;
use podbridge_core::validate::{Parsed, Rejection, id_from_message_id, parse_message};

use crate::EXIT_REJECTED;
use crate::settings::{Local, Overrides};

const EXAMPLES: &str = "\
Examples:
  podbridge render examples/job-minimal.json
  podbridge render job.json --attempt 2 --json
  podbridge render job.json | kubectl apply --dry-run=server -f -
  PODBRIDGE_NAMESPACES=batch PODBRIDGE_IMAGE_PREFIXES=registry.example.com/ podbridge render job.json

Exit codes: 0 the pod was printed (or the message is a valid cancel: nothing is printed),
1 the file or a PODBRIDGE_* variable could not be read, 2 the message is rejected
(each problem on stderr as `field: message`), 64 wrong command line.";

/// Print the Kubernetes pod a job message would create.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print the Kubernetes pod a job message would create.\n\n\
        The message is validated as the dispatch function validates it, against the \
        guardrails in the PODBRIDGE_* environment variables (see docs/JOBS.md), and \
        the pod is printed as YAML (or JSON), ready for `kubectl apply --dry-run=server -f -`. \
        Nothing is sent anywhere.\n\n\
        When PODBRIDGE_NAMESPACES or PODBRIDGE_IMAGE_PREFIXES is not set, render assumes \
        `podbridge-jobs` and `*` (any image) and says so on stderr; all other guardrails \
        keep the deployment's defaults.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The job message, a JSON file; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The attempt whose pod to print: each retry gets a pod of its own
    /// (`<job id>-<attempt>`, label podbridge.dev/attempt).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    attempt: u32,
    /// Print JSON instead of YAML.
    #[arg(long)]
    json: bool,
    /// The SQS message id to assume. A job without an `id` is named `sqs-<message id>`
    /// by dispatch, so its pod name depends on it.
    #[arg(long, value_name = "ID", default_value = "local")]
    message_id: String,
    #[command(flatten)]
    guardrails: Overrides,
}

/// Runs `podbridge render`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let local = Local::from_env(&args.guardrails).context("reading the PODBRIDGE_* guardrails")?;
    let body = read_message(&args.file)?;
    let fallback_id = id_from_message_id(&args.message_id);
    let parsed = parse_message(&body, &fallback_id, &local.settings.guardrails);
    // Guardrails play no part in a cancel, so the note would only be noise there.
    let is_cancel = matches!(parsed, Ok(Parsed::Cancel(_)));
    if let Some(note) = local.assumed_note().filter(|_| !is_cancel) {
        eprintln!("{note}");
    }
    let job = match parsed {
        Ok(Parsed::Job(job)) => job,
        Ok(Parsed::Cancel(cancel)) => {
            eprintln!(
                "cancel message for job {:?}: it creates no pod (a queued job never gets one, \
                 a running job's pod is deleted); nothing to print",
                cancel.id
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(rejection) => {
            report_rejection(&rejection, &fallback_id);
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
    };
    if !has_own_id(&body) {
        eprintln!(
            "note: the job has no id; dispatch names it sqs-<SQS message id>, here {fallback_id} \
             (choose with --message-id)"
        );
    }
    if args.attempt > job.retry.max_attempts {
        bail!(
            "--attempt {} is past the job's last attempt: retry.maxAttempts is {}, so that pod is never created",
            args.attempt,
            job.retry.max_attempts
        );
    }
    let pod = build_pod(&job, args.attempt, &local.settings.pods);
    let text = if args.json { to_json(&pod)? } else { serde_norway::to_string(&pod).context("writing YAML")? };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn read_message(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut body = Vec::new();
        std::io::stdin().lock().read_to_end(&mut body).context("reading the message from stdin")?;
        Ok(body)
    } else {
        std::fs::read(file).with_context(|| format!("reading the message from {}", file.display()))
    }
}

/// Prints every problem as `field: message`, one a line, then where dispatch would
/// record the rejection, because a rejected job id is used up.
fn report_rejection(rejection: &Rejection, fallback_id: &str) {
    for problem in &rejection.problems {
        eprintln!("{problem}");
    }
    match rejection.job_id.as_deref() {
        Some(id) if id != fallback_id => eprintln!(
            "rejected: dispatch would record job {id:?} as rejected and never run it; \
             a rejected id stays rejected, so submit the fixed message under a new id"
        ),
        _ => eprintln!(
            "rejected: the message has no usable job id, so dispatch would record the rejection as \
             sqs-<SQS message id> (here {fallback_id:?}); fix the message and send it again"
        ),
    }
}

/// Whether the message names its job; without an id the pod name comes from the
/// message id, which the user should know.
fn has_own_id(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["job"]["id"].is_string())
}

fn to_json(pod: &Pod) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(pod).context("writing JSON")?;
    text.push('\n');
    Ok(text)
}
