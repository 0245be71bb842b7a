//! The trigger function: what EventBridge delivers, turned into jobs through the same
//! [`Submitter`] as dispatch (one path from "a valid job" to "recorded + pod").
//!
//! It takes two shapes of input:
//!
//! - **Events** (an EventBridge envelope) with detail-type [`SUBMIT_JOB`] (the detail is a
//!   job message, as on the queue), [`CANCEL_JOB`] or [`RETRY_JOB`] (the detail is a
//!   [`JobRequest`]).
//! - **Schedule ticks**: a [`Tick`] as the target's input, from EventBridge Scheduler
//!   (`"scheduledTime": "<aws.scheduler.scheduled-time>"`) or a scheduled rule with an
//!   input transformer (`<time>` from `$.time`). Each tick is one job, whose id is the
//!   schedule's name and the scheduled time, so a tick delivered twice is still one job;
//!   the schedule's concurrency policy decides what happens while an earlier job of it
//!   is active. A missed tick is just a tick that never came: nothing stops a schedule.
//!
//! An input that cannot succeed is recorded where it names a job (a `rejected` job) and
//! acknowledged either way; only failures worth retrying (DynamoDB, the Kubernetes API)
//! fail the invocation. EventBridge invokes the function asynchronously, so Lambda
//! retries a failed invocation (up to twice) and then sends the event to the function's
//! dead-letter queue.

use futures::TryStreamExt as _;
use jiff::Timestamp;
use podbridge::cluster::Cluster;
use podbridge::error::Result;
use podbridge::services::{Outcome, Submitter};
use podbridge::store::{JobStore, Store, active_pages};
use podbridge_core::record::Source;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::{Problem, Rejection, check_reason, id_from_event_id, is_valid_job_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};

/// The detail-type of an event that submits a job; its detail is a job message.
pub const SUBMIT_JOB: &str = "Submit Job";
/// The detail-type of an event that cancels a job; its detail is a [`JobRequest`].
pub const CANCEL_JOB: &str = "Cancel Job";
/// The detail-type of an event that retries a failed or cancelled job; its detail is a
/// [`JobRequest`].
pub const RETRY_JOB: &str = "Retry Job";

/// The longest schedule name: the tick's job id adds `-YYYYMMDD-HHMMSS` (16 characters)
/// and must stay a valid job id (63).
pub const MAX_SCHEDULE_NAME: usize = 47;

/// What a schedule does with a tick while an earlier job of the schedule is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Start the new job anyway.
    #[default]
    Allow,
    /// Skip the tick; the skipped job is recorded as `cancelled` (reason `Skipped`).
    Forbid,
    /// Cancel the active job, then start the new one.
    Replace,
}

/// A schedule's tick: the input of a schedule's target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tick {
    /// The schedule's name (1 to 47 of `A-Z a-z 0-9 - _ .`).
    pub schedule: String,
    /// When the tick was due (RFC 3339), which makes the job id.
    pub scheduled_time: String,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A suspended schedule's ticks start nothing.
    #[serde(default)]
    pub suspend: bool,
    /// The job to run: the `job` object of a job message, without `id`.
    pub job: Value,
}

/// The detail of a Cancel Job or Retry Job event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRequest {
    pub job_id: String,
    /// Retry only: the attempt to retry, so that a request delivered twice starts one
    /// attempt. Without it, the job's last attempt.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// Why, for the job's history.
    #[serde(default)]
    pub reason: Option<String>,
    /// Cancel only: the job's namespace, for a cancel that may arrive before its job
    /// (the sender's default namespace when absent).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// An input the function understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Submit {
        event_id: String,
        sender: Sender,
        detail: Value,
    },
    Cancel {
        event_id: String,
        sender: Sender,
        request: JobRequest,
    },
    Retry {
        event_id: String,
        sender: Sender,
        request: JobRequest,
    },
    /// A tick, with the id of its job.
    Tick {
        tick: Tick,
        job_id: String,
    },
}

/// An input that can never succeed: what is wrong, and the job it names if any.
#[derive(Debug, Clone, PartialEq)]
pub struct BadInput {
    pub job_id: Option<String>,
    pub problem: Problem,
}

impl BadInput {
    fn new(job_id: Option<String>, field: &str, message: impl Into<String>) -> Self {
        Self { job_id, problem: Problem { field: field.to_owned(), message: message.into() } }
    }
}

/// What became of an input: the invocation's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handled {
    /// `dispatched`, `waiting`, `already_recorded`, `rejected`, `failed`, `cancelled`,
    /// `cancel_ignored`, `retry_ignored`, `refused`, `skipped`, `suspended` or `ignored`.
    pub outcome: &'static str,
    pub job_id: Option<String>,
    pub detail: String,
}

impl From<Outcome> for Handled {
    fn from(outcome: Outcome) -> Self {
        let job_id = Some(outcome.job_id().to_owned());
        let (outcome, detail) = match outcome {
            Outcome::Dispatched { attempt, pod_name, .. } => {
                ("dispatched", format!("attempt {attempt}: pod {pod_name}"))
            }
            Outcome::Waiting { reason, .. } => ("waiting", reason),
            Outcome::AlreadyRecorded { state, .. } => ("already_recorded", format!("the job is {state}")),
            Outcome::Rejected { reason, .. } => ("rejected", reason),
            Outcome::Failed { reason, .. } => ("failed", reason),
            Outcome::Cancelled { .. } => ("cancelled", String::new()),
            Outcome::CancelIgnored { state, .. } => ("cancel_ignored", format!("the job has already ended: {state}")),
            Outcome::RetryIgnored { reason, .. } => ("retry_ignored", reason),
            Outcome::Skipped { reason, .. } => ("skipped", reason),
            Outcome::Refused { reason, .. } => ("refused", reason),
        };
        Self { outcome, job_id, detail }
    }
}

/// Reads an input: an EventBridge event of one of podbridge's detail-types, or a tick.
pub fn parse(input: &Value) -> std::result::Result<Input, BadInput> {
    if let Some(detail_type) = input.get("detail-type") {
        let event_id = input.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let Some(event_id) = event_id.map(str::to_owned) else {
            return Err(BadInput::new(None, "id", "an EventBridge event must have an id"));
        };
        let detail = input.get("detail").cloned().unwrap_or(Value::Null);
        // Who put the event: its source and account, which the bus policy restricts
        // (the detail is the sender's own words and proves nothing).
        let sender = Sender::Event {
            source: input.get("source").and_then(Value::as_str).unwrap_or_default().to_owned(),
            account: input.get("account").and_then(Value::as_str).map(str::to_owned),
        };
        let request = |detail: Value| {
            let request = serde_json::from_value::<JobRequest>(detail).map_err(|e| {
                BadInput::new(
                    None,
                    "detail",
                    format!("{e}; expected {{\"jobId\": ..., \"attempt\"?: N, \"reason\"?: ...}}"),
                )
            })?;
            // Checked as ids from messages are, so an id the table cannot hold is refused
            // at once rather than failing every retry of the event.
            if !is_valid_job_id(&request.job_id) {
                return Err(BadInput::new(
                    None,
                    "detail.jobId",
                    format!(
                        "{:?} is not a job id; allowed: 1 to 63 of A-Z a-z 0-9 - _ ., starting and ending with a \
                         letter or digit",
                        request.job_id.chars().take(80).collect::<String>()
                    ),
                ));
            }
            if let Some(why) = request.reason.as_deref().and_then(check_reason) {
                return Err(BadInput::new(None, "detail.reason", why));
            }
            Ok(request)
        };
        return match detail_type.as_str() {
            Some(SUBMIT_JOB) => Ok(Input::Submit { event_id, sender, detail }),
            Some(CANCEL_JOB) => Ok(Input::Cancel { event_id, request: request(detail)?, sender }),
            Some(RETRY_JOB) => Ok(Input::Retry { event_id, request: request(detail)?, sender }),
            Some("Scheduled Event") => Err(BadInput::new(
                None,
                "detail",
                "a scheduled rule must send a tick as its target's input (an input transformer with \
                 `<time>` from `$.time`), not the bare Scheduled Event",
            )),
            other => Err(BadInput::new(
                None,
                "detail-type",
                format!("{other:?} is not one of {SUBMIT_JOB:?}, {CANCEL_JOB:?}, {RETRY_JOB:?}"),
            )),
        };
    }
    if input.get("schedule").is_some() {
        // The job id, if the tick says enough to make one, so a bad tick is recorded.
        let job_id = tick_job_id(
            input.get("schedule").and_then(Value::as_str).unwrap_or_default(),
            input.get("scheduledTime").and_then(Value::as_str).unwrap_or_default(),
        )
        .ok();
        let tick: Tick = serde_path_to_error::deserialize(input)
            .map_err(|e| BadInput::new(job_id.clone(), &e.path().to_string(), e.inner().to_string()))?;
        let job_id = tick_job_id(&tick.schedule, &tick.scheduled_time)?;
        if tick.job.get("id").is_some() {
            let why = "must not have an id: each tick's job id is the schedule's name and the scheduled time";
            return Err(BadInput::new(Some(job_id), "job.id", why));
        }
        return Ok(Input::Tick { tick, job_id });
    }
    Err(BadInput::new(
        None,
        "input",
        "is neither an EventBridge event (Submit Job, Cancel Job, Retry Job) nor a schedule tick ({\"schedule\": ...})",
    ))
}

/// The job id of a schedule's tick: `<schedule>-YYYYMMDD-HHMMSS` (UTC).
pub fn tick_job_id(schedule: &str, scheduled_time: &str) -> std::result::Result<String, BadInput> {
    let valid_name = schedule.len() <= MAX_SCHEDULE_NAME && is_valid_job_id(schedule);
    if !valid_name {
        return Err(BadInput::new(
            None,
            "schedule",
            format!(
                "{schedule:?} is not allowed; allowed: 1 to {MAX_SCHEDULE_NAME} of A-Z a-z 0-9 - _ ., starting and \
                 ending with a letter or digit"
            ),
        ));
    }
    let at: Timestamp = scheduled_time.parse().map_err(|e| {
        BadInput::new(None, "scheduledTime", format!("{scheduled_time:?} is not an RFC 3339 time: {e}"))
    })?;
    Ok(format!("{schedule}-{}", at.strftime("%Y%m%d-%H%M%S")))
}

/// Handles one input. `Err` only for failures worth retrying (or a deployment that is
/// not right), so that EventBridge retries the event.
pub async fn handle<S: Store, C: Cluster>(submitter: &Submitter<S, C>, input: &Value) -> Result<Handled> {
    let parsed = match parse(input) {
        Ok(parsed) => parsed,
        Err(bad) => return reject(submitter, bad, input).await,
    };
    let handled: Handled = match parsed {
        Input::Submit { event_id, sender, detail } => {
            let body = serde_json::to_vec(&detail).unwrap_or_default();
            let fallback = id_from_event_id(&event_id);
            submitter.handle_message(&body, Source::EventBridge { event_id }, &sender, &fallback).await?.into()
        }
        Input::Cancel { event_id, sender, request } => {
            let reason = request.reason.unwrap_or_else(|| "cancelled on request".to_owned());
            let namespace = request.namespace.as_deref();
            submitter
                .cancel(&request.job_id, namespace, &reason, Source::EventBridge { event_id }, &sender)
                .await?
                .into()
        }
        Input::Retry { event_id, sender, request } => {
            let reason = request.reason.unwrap_or_else(|| format!("retried on request (event {event_id})"));
            submitter.retry(&request.job_id, request.attempt, &reason, &sender).await?.into()
        }
        Input::Tick { tick, job_id } => self::tick(submitter, tick, job_id).await?,
    };
    info!(outcome = handled.outcome, job_id = handled.job_id.as_deref().unwrap_or_default(), detail = %handled.detail, "handled");
    Ok(handled)
}

/// Records a bad input as a `rejected` job where it names one; logs it either way.
async fn reject<S: Store, C: Cluster>(submitter: &Submitter<S, C>, bad: BadInput, input: &Value) -> Result<Handled> {
    let event_id = input.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    warn!(event_id = %event_id, problem = %bad.problem, "an input that cannot succeed");
    match bad.job_id {
        Some(job_id) => {
            let source = tick_source(input).unwrap_or(Source::EventBridge { event_id });
            let rejection = Rejection { job_id: Some(job_id.clone()), problems: vec![bad.problem] };
            Ok(submitter.reject(rejection, source, &job_id).await?.into())
        }
        None => Ok(Handled { outcome: "ignored", job_id: None, detail: bad.problem.to_string() }),
    }
}

fn tick_source(input: &Value) -> Option<Source> {
    Some(Source::Schedule {
        schedule: input.get("schedule")?.as_str()?.to_owned(),
        scheduled_time: input.get("scheduledTime")?.as_str()?.to_owned(),
    })
}

async fn tick<S: Store, C: Cluster>(submitter: &Submitter<S, C>, tick: Tick, job_id: String) -> Result<Handled> {
    let source = Source::Schedule { schedule: tick.schedule.clone(), scheduled_time: tick.scheduled_time.clone() };
    if tick.suspend {
        return Ok(Handled {
            outcome: "suspended",
            job_id: None,
            detail: format!(
                "schedule {} is suspended; the tick of {} starts nothing",
                tick.schedule, tick.scheduled_time
            ),
        });
    }
    // A tick delivered again finds its job: exactly one job per tick.
    if let Some(existing) = submitter.store().get(&job_id).await? {
        return Ok(Outcome::AlreadyRecorded { job_id, state: existing.state }.into());
    }
    if tick.concurrency_policy != ConcurrencyPolicy::Allow {
        let active = active_jobs_of(submitter.store(), &tick.schedule).await?;
        match tick.concurrency_policy {
            ConcurrencyPolicy::Forbid if !active.is_empty() => {
                let message = format!(
                    "skipped: job {} of schedule {} is still active and its concurrency policy is forbid",
                    active.join(", "),
                    tick.schedule
                );
                return Ok(submitter.skip(&job_id, source, &message).await?.into());
            }
            ConcurrencyPolicy::Replace => {
                for earlier in &active {
                    let reason = format!("replaced by {job_id}, the next job of schedule {}", tick.schedule);
                    submitter.cancel(earlier, None, &reason, source.clone(), &Sender::Schedule).await?;
                }
            }
            _ => {}
        }
    }
    let mut job = tick.job;
    if let Some(object) = job.as_object_mut() {
        object.insert("id".to_owned(), json!(job_id));
    }
    let body =
        serde_json::to_vec(&json!({ "version": podbridge_core::job::MESSAGE_VERSION, "job": job })).unwrap_or_default();
    Ok(submitter.handle_message(&body, source, &Sender::Schedule, &job_id).await?.into())
}

/// The ids of the schedule's active jobs, read from the active-jobs index.
async fn active_jobs_of(store: &impl JobStore, schedule: &str) -> Result<Vec<String>> {
    // Page by page, keeping only the ids: the index may hold thousands of whole records.
    active_pages(store, 500)
        .map_ok(|page| {
            page.jobs
                .into_iter()
                .filter(|r| matches!(&r.source, Source::Schedule { schedule: s, .. } if s == schedule))
                .map(|r| r.job_id)
                .collect::<Vec<_>>()
        })
        .try_concat()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(extra: Value) -> Value {
        let mut tick = json!({ "schedule": "nightly", "scheduledTime": "2026-11-21T02:00:00Z",
            "job": { "image": "registry.example.com/report:1" } });
        for (key, value) in extra.as_object().unwrap() {
            tick[key] = value.clone();
        }
        tick
    }

    #[test]
    fn a_tick_is_one_job_named_for_its_schedule_and_time() {
        let Ok(Input::Tick { tick: parsed, job_id }) = parse(&tick(json!({ "concurrencyPolicy": "forbid" }))) else {
            panic!()
        };
        assert_eq!(parsed.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(job_id, "nightly-20261121-020000");
        // The same instant written another way is the same tick.
        assert_eq!(tick_job_id("nightly", "2026-11-21T03:00:00+01:00").unwrap(), "nightly-20261121-020000");
    }

    #[test]
    fn bad_ticks_name_the_field_and_keep_the_job_id_when_there_is_one() {
        let bad = parse(&tick(json!({ "concurrencyPolicy": "sometimes" }))).unwrap_err();
        assert_eq!(bad.problem.field, "concurrencyPolicy");
        assert!(bad.problem.message.contains("allow"), "{}", bad.problem);
        assert_eq!(bad.job_id.as_deref(), Some("nightly-20261121-020000"));
        let bad = parse(&tick(json!({ "scheduledTime": "yesterday" }))).unwrap_err();
        assert_eq!((bad.problem.field.as_str(), bad.job_id), ("scheduledTime", None));
        let bad = parse(&tick(json!({ "schedule": "a".repeat(48) }))).unwrap_err();
        assert_eq!(bad.problem.field, "schedule");
        let bad = parse(&tick(json!({ "job": { "id": "mine", "image": "x" } }))).unwrap_err();
        assert_eq!(bad.problem.field, "job.id");
    }

    /// The samples in `examples/events/` are what the documentation shows; each must parse.
    #[test]
    fn the_documented_samples_parse() {
        let sample = |name: &str| -> Value {
            let path = format!("{}/../../examples/events/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        assert!(matches!(parse(&sample("submit-job.json")), Ok(Input::Submit { .. })));
        assert!(matches!(parse(&sample("cancel-job.json")), Ok(Input::Cancel { .. })));
        assert!(matches!(parse(&sample("retry-job.json")), Ok(Input::Retry { .. })));
        let Ok(Input::Tick { tick, .. }) = parse(&sample("schedule-tick.json")) else { panic!("the tick sample") };
        assert_eq!(tick.concurrency_policy, ConcurrencyPolicy::Forbid);
    }

    #[test]
    fn events_are_told_apart_by_detail_type() {
        let event =
            |detail_type: &str, detail: Value| json!({ "id": "e-1", "detail-type": detail_type, "detail": detail });
        assert!(matches!(parse(&event(SUBMIT_JOB, json!({}))), Ok(Input::Submit { .. })));
        let Ok(Input::Retry { request, .. }) = parse(&event(RETRY_JOB, json!({ "jobId": "j", "attempt": 2 }))) else {
            panic!()
        };
        assert_eq!((request.job_id.as_str(), request.attempt), ("j", Some(2)));
        assert_eq!(parse(&event(CANCEL_JOB, json!({ "id": "j" }))).unwrap_err().problem.field, "detail");
        assert_eq!(parse(&event("Job State Change", json!({}))).unwrap_err().problem.field, "detail-type");
        assert_eq!(parse(&json!({ "hello": 1 })).unwrap_err().problem.field, "input");
    }
}
