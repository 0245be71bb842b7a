//! `podbridge watch JOB`: follows a job until it ends, printing each state change as it
//! is recorded, and exits with a code that says how it ended.
//!
//! The record is polled (one strongly consistent GetItem per interval) rather than
//! followed through the Job State Change events: reading needs nothing but the table,
//! and the record's history holds every transition, so a change between two polls is
//! printed all the same. A failed attempt that the job's retry rules retry is not the
//! end: the reconciler records `failed` and, in the next write, the new attempt; watch
//! decides with the reconciler's own rule ([`should_retry`]) and keeps following.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use podbridge::store::JobStore;
use podbridge_core::failure::FailureClass;
use podbridge_core::reconcile::should_retry;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;

use crate::connect::{self, Target};
use crate::output::{self, age};
use crate::{EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_REJECTED, EXIT_TIMEOUT};

/// How long a failed attempt that the retry rules retry may stay `failed` before watch
/// believes it, when the record does not say the retry is owed: the reconciler writes
/// the next attempt right after the failure (and marks the failure `retry_pending` until
/// then), so such a job still failed after this will not be retried.
const RETRY_GRACE: Duration = Duration::from_secs(15);
/// Polls in a row that may fail (throttling, a dropped connection) before watch gives up.
const POLL_FAILURES: u32 = 5;
/// How often the progress line moves on a terminal.
const SPINNER_TICK: Duration = Duration::from_millis(200);
/// How often a still-running job is mentioned when stderr is not a terminal (CI logs).
const HEARTBEAT: Duration = Duration::from_secs(60);

const EXAMPLES: &str = "\
Examples:
  podbridge watch nightly-report-2026-11-21
  podbridge watch \"$(podbridge submit job.json)\" --timeout 2h
  podbridge watch nightly-report-2026-11-21 && echo done

Exit codes: 0 the job succeeded, 1 error (a missing setting, AWS unreachable),
2 the job was rejected (its message was invalid), 3 no such job (not recorded within
--wait-for-record), 4 the job failed (after its last attempt), 5 the job was cancelled,
6 --timeout passed while the job was still active, 64 wrong command line,
130 interrupted (Ctrl-C; the job goes on).";

/// Follow a job until it ends; the exit code says how it ended.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Follow a job until it ends: print its history so far, then each state change as \
        it is recorded, with its time, attempt, reason and message, and finally the outcome. \
        While waiting, a progress line on stderr shows the current state and for how long.\n\n\
        The job's record is read every --interval (one GetItem). A failed attempt that the \
        job's retry rules retry is followed into the next attempt; the outcome is the job's \
        end. A job sent with `podbridge submit` is recorded once dispatch takes its message, \
        so watch waits --wait-for-record for it to appear.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The job's id.
    #[arg(value_name = "JOB", value_parser = output::job_id)]
    job: String,
    /// How often to read the record.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = interval)]
    interval: Duration,
    /// Give up (exit code 6) when the job is still active after this long; by default
    /// watch waits as long as the job takes.
    #[arg(long, value_name = "DURATION", value_parser = output::duration)]
    timeout: Option<Duration>,
    /// How long to wait for a job that is not recorded yet before exit code 3.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = output::duration)]
    wait_for_record: Duration,
    #[command(flatten)]
    connect: connect::Flags,
}

fn interval(text: &str) -> Result<Duration, String> {
    let interval = output::duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{text:?} is too short: read the record at most every 100ms"));
    }
    Ok(interval)
}

/// Where the job is, as far as watch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Still active, or a failed attempt that is about to be retried.
    Going,
    /// Ended in this state.
    Ended(JobState),
}

/// Whether `record` is the job's end. `failed_since` is when watch first saw this
/// failed attempt, for the grace it gives a retry.
fn verdict(record: &JobRecord, failed_since: Option<Instant>, now: Instant) -> Verdict {
    // A failure whose retry is owed: the next reconcile pass writes it.
    if record.is_followed() {
        return Verdict::Going;
    }
    if record.state == JobState::Failed
        && retry_follows(record)
        && failed_since.is_none_or(|since| now.duration_since(since) < RETRY_GRACE)
    {
        return Verdict::Going;
    }
    Verdict::Ended(record.state)
}

/// Whether the job's retry rules give this failed attempt another: the reconciler's
/// own decision, on the record's spec, attempt, class and exit code.
fn retry_follows(record: &JobRecord) -> bool {
    let (Ok(job), Some(class)) = (record.stored_job(), record.failure_class) else {
        return false;
    };
    should_retry(&job, record.attempt, class, record.exit_code)
}

/// The exit code of a job that ended in `state`.
fn exit_code(state: JobState) -> ExitCode {
    match state {
        JobState::Succeeded => ExitCode::SUCCESS,
        JobState::Rejected => ExitCode::from(EXIT_REJECTED),
        JobState::Cancelled => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

/// What a person should read about how the job ended.
fn outcome(record: &JobRecord) -> String {
    let id = &record.job_id;
    let message = record.message.as_deref().unwrap_or("");
    let took = age(record.updated_at.duration_since(record.created_at));
    let mut text = match record.state {
        JobState::Succeeded => {
            format!("job {id} succeeded at attempt {} ({took} after it was recorded)", record.attempt)
        }
        JobState::Failed => {
            let class = record.failure_class.map_or("unknown class", FailureClass::as_str);
            let code = record.exit_code.map(|code| format!(", exit code {code}")).unwrap_or_default();
            format!("job {id} failed at attempt {} ({class}{code}): {message}", record.attempt)
        }
        JobState::Cancelled => format!("job {id} was cancelled: {message}"),
        JobState::Rejected => format!("job {id} was rejected: {message}"),
        active => format!("job {id} is still {active}: {message}"),
    };
    if let Some(last_words) = record.termination_message.as_deref().filter(|m| !m.trim().is_empty()) {
        text.push_str("\ntermination message:");
        for line in last_words.trim_end().lines() {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}

/// The progress line: the state, for how long, the attempt, the pod and the message.
fn progress_text(record: &JobRecord, now: Timestamp) -> String {
    let since = record.state_times.get(&record.state).copied().unwrap_or(record.updated_at);
    let mut text = format!("{} for {}, attempt {}", record.state, age(now.duration_since(since)), record.attempt);
    // The message often names the pod already (`pod x created in ns`).
    if let Some(pod) = record.pod_name.as_ref().filter(|pod| !record.message.as_ref().is_some_and(|m| m.contains(*pod)))
    {
        text.push_str(&format!(", pod {pod}"));
    }
    if let Some(message) = &record.message {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

/// The progress line on stderr: redrawn in place on a terminal, an occasional line
/// elsewhere, so a CI log shows the job is still going without filling up.
struct Progress {
    terminal: bool,
    frame: usize,
    drawn: bool,
    last_heartbeat: Instant,
}

impl Progress {
    fn new() -> Self {
        Self { terminal: std::io::stderr().is_terminal(), frame: 0, drawn: false, last_heartbeat: Instant::now() }
    }

    fn show(&mut self, text: &str) {
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            self.frame = (self.frame + 1) % FRAMES.len();
            let line: String = text.chars().take(110).collect();
            let _ = write!(stderr, "\r\x1b[2K{} {line}", FRAMES[self.frame]);
            let _ = stderr.flush();
            self.drawn = true;
        } else if self.last_heartbeat.elapsed() >= HEARTBEAT {
            let _ = writeln!(stderr, "still waiting: {text}");
            self.last_heartbeat = Instant::now();
        }
    }

    /// Clears the line before anything else is printed.
    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// Runs `podbridge watch`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let table = target.table()?;
    let aws = target.connect().await?;
    let store = aws.store(table, target.queue_table_if_set());
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut printed = 0;
    let mut failures = 0;
    let mut failed_since: Option<(u32, Instant)> = None;
    let mut status =
        format!("waiting for job {} to be recorded (dispatch records it when it takes its message)", args.job);
    // One listener for the whole watch, so a Ctrl-C during a read is not lost.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        match store.get(&args.job).await {
            Err(error) if error.is_retryable() && failures + 1 < POLL_FAILURES => {
                failures += 1;
                status = format!("reading the record failed ({error}); trying again");
            }
            Err(error) => {
                progress.clear();
                return Err(aws.explain(&error, &format!("reading job {} from the table {table}", args.job)));
            }
            Ok(None) if printed > 0 => {
                progress.clear();
                anyhow::bail!("job {} is no longer in the table {table} (its record was deleted)", args.job);
            }
            Ok(None) if started.elapsed() >= args.wait_for_record => {
                progress.clear();
                eprintln!(
                    "{} (waited {})",
                    output::not_found(&args.job, table),
                    age(jiff::SignedDuration::try_from(args.wait_for_record).unwrap_or_default())
                );
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            }
            Ok(None) => failures = 0,
            Ok(Some(record)) => {
                failures = 0;
                // The history only grows; a shorter one would be another record.
                let new = record.history.get(printed..).unwrap_or_default();
                if !new.is_empty() {
                    progress.clear();
                    let mut stdout = std::io::stdout().lock();
                    for transition in new {
                        writeln!(stdout, "{}", output::transition_line(transition))?;
                    }
                    stdout.flush()?;
                }
                printed = record.history.len();
                let now = Instant::now();
                if record.state == JobState::Failed {
                    if failed_since.is_none_or(|(attempt, _)| attempt != record.attempt) {
                        failed_since = Some((record.attempt, now));
                    }
                } else {
                    failed_since = None;
                }
                if let Verdict::Ended(state) = verdict(&record, failed_since.map(|(_, at)| at), now) {
                    progress.clear();
                    println!("{}", outcome(&record));
                    return Ok(exit_code(state));
                }
                status = progress_text(&record, Timestamp::now());
            }
        }
        if let Some(timeout) = args.timeout.filter(|timeout| started.elapsed() >= *timeout) {
            progress.clear();
            eprintln!(
                "gave up after {} (--timeout): {}",
                age(jiff::SignedDuration::try_from(timeout).unwrap_or_default()),
                status
            );
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        // Until the next read, keep the progress line moving; Ctrl-C stops watching.
        let next = tokio::time::Instant::now() + args.interval;
        while tokio::time::Instant::now() < next {
            progress.show(&status);
            let tick = (tokio::time::Instant::now() + SPINNER_TICK).min(next);
            tokio::select! {
                _ = tokio::time::sleep_until(tick) => {}
                _ = &mut interrupted => {
                    progress.clear();
                    eprintln!("stopped watching job {}; the job itself goes on", args.job);
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use podbridge_core::record::{Source, StateChange};
    use podbridge_core::validate::{Guardrails, Parsed, parse_message};

    use super::*;

    /// A recorded job whose retry rules retry `exit_code` failures up to 2 attempts.
    fn record() -> JobRecord {
        let body = br#"{"version": 1, "job": {"id": "j-1", "image": "registry.example.com/x:1",
            "retry": {"maxAttempts": 2, "on": ["exit_code"]}}}"#;
        let guardrails = Guardrails { image_prefixes: vec!["registry.example.com/".into()], ..Guardrails::default() };
        let Ok(Parsed::Job(job)) = parse_message(body, "unused", &guardrails) else { panic!("a valid job") };
        let now = Timestamp::now();
        let mut record = JobRecord::new("j-1", JobState::Queued, Source::Direct, now, "Submitted", "queued");
        record.spec = Some(serde_json::to_value(&job).unwrap());
        record
    }

    fn fail(record: &mut JobRecord, class: &str) {
        let mut change = StateChange::new(record.state, record.attempt, JobState::Failed, Timestamp::now(), "E", "m");
        change.failure_class = Some(class.parse().unwrap());
        change.exit_code = Some(3);
        record.apply(&change);
    }

    #[test]
    fn active_jobs_go_on_and_ended_jobs_end() {
        let now = Instant::now();
        let mut job = record();
        assert_eq!(verdict(&job, None, now), Verdict::Going);
        job.apply(&StateChange::new(JobState::Queued, 1, JobState::Succeeded, Timestamp::now(), "Completed", "ok"));
        assert_eq!(verdict(&job, None, now), Verdict::Ended(JobState::Succeeded));
        assert_eq!(exit_code(JobState::Succeeded), ExitCode::SUCCESS);
        assert_eq!(exit_code(JobState::Failed), ExitCode::from(EXIT_FAILED));
        assert_eq!(exit_code(JobState::Cancelled), ExitCode::from(EXIT_CANCELLED));
        assert_eq!(exit_code(JobState::Rejected), ExitCode::from(EXIT_REJECTED));
    }

    #[test]
    fn a_failure_the_rules_retry_is_followed_for_a_while_and_a_last_failure_ends() {
        let now = Instant::now();
        let mut job = record();
        fail(&mut job, "exit_code");
        assert_eq!(verdict(&job, Some(now), now), Verdict::Going, "attempt 1 of 2 is retried");
        assert_eq!(verdict(&job, Some(now), now + RETRY_GRACE), Verdict::Ended(JobState::Failed), "no retry came");

        let mut other_class = record();
        fail(&mut other_class, "oom_killed");
        assert_eq!(
            verdict(&other_class, Some(now), now),
            Verdict::Ended(JobState::Failed),
            "oom_killed is not retried"
        );

        let mut last = record();
        let mut retry = StateChange::new(JobState::Queued, 1, JobState::Failed, Timestamp::now(), "E", "m");
        retry.failure_class = Some(FailureClass::ExitCode);
        last.apply(&retry);
        let mut again = StateChange::new(JobState::Failed, 1, JobState::Queued, Timestamp::now(), "Retrying", "m");
        again.new_attempt = Some(2);
        last.apply(&again);
        fail(&mut last, "exit_code");
        assert_eq!(last.attempt, 2);
        assert_eq!(verdict(&last, Some(now), now), Verdict::Ended(JobState::Failed), "attempt 2 of 2 is the last");
    }

    #[test]
    fn the_outcome_of_a_failure_names_class_code_and_last_words() {
        let mut job = record();
        fail(&mut job, "exit_code");
        job.termination_message = Some("line 1\nline 2\n".into());
        let text = outcome(&job);
        assert!(text.starts_with("job j-1 failed at attempt 1 (exit_code, exit code 3): m\n"), "{text}");
        assert!(text.ends_with("termination message:\n  line 1\n  line 2"), "{text}");
    }
}
