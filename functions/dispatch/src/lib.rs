//! The dispatch function: an SQS batch in, a partial batch response out.
//!
//! Each record is handled on its own, up to `concurrency` at once, by the shared
//! [`Submitter`]. A record whose job is durably recorded (dispatched, already recorded,
//! rejected, failed for good, cancelled) succeeds and SQS deletes it; any error puts the
//! record in `batchItemFailures`, so it comes back after its visibility timeout and ends
//! in the dead-letter queue after `maxReceiveCount` receives. Nothing is deleted before
//! it is recorded, and nothing invalid is retried forever.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use podbridge::cluster::Cluster;
use podbridge::error::error_chain;
use podbridge::services::{Outcome, Submitter};
use podbridge::store::Store;
use podbridge_core::record::Source;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::id_from_message_id;
use tracing::{Instrument, error, info, info_span, warn};

/// Handles one SQS batch; the response lists the records to be delivered again.
pub async fn handle<S: Store, C: Cluster>(
    submitter: &Submitter<S, C>,
    event: SqsEvent,
    concurrency: usize,
) -> SqsBatchResponse {
    let results = futures::stream::iter(event.records)
        .map(|record| async move {
            let message_id = record.message_id.clone().unwrap_or_default();
            let span = info_span!("record", message_id = %message_id, job_id = tracing::field::Empty);
            let ok = handle_record(submitter, record).instrument(span).await;
            (message_id, ok)
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, ok) in results {
        if !ok {
            response.add_failure(message_id);
        }
    }
    response
}

/// Handles one record; true when it may be deleted.
async fn handle_record<S: Store, C: Cluster>(submitter: &Submitter<S, C>, record: SqsMessage) -> bool {
    let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
        // SQS always sets it; without one the record cannot be reported, so it must
        // not count as done either.
        error!("an SQS record without a message id");
        return false;
    };
    // Who sent it, as SQS recorded it (not as the message claims): the sending IAM
    // principal and the queue it came through.
    let sender = Sender::Queue {
        sender_id: record.attributes.get("SenderId").cloned(),
        queue_arn: record.event_source_arn.clone(),
    };
    let body = record.body.unwrap_or_default();
    let fallback_id = id_from_message_id(&message_id);
    let source = Source::Sqs { message_id };
    match submitter.handle_message(body.as_bytes(), source, &sender, &fallback_id).await {
        Ok(outcome) => {
            tracing::Span::current().record("job_id", outcome.job_id());
            log_outcome(&outcome);
            true
        }
        Err(e) if e.is_retryable() => {
            warn!(error = %error_chain(&e), "will be retried: the message returns to the queue");
            false
        }
        Err(e) => {
            error!(error = %error_chain(&e), "cannot succeed until the deployment is fixed: the message returns to the queue and ends in its dead-letter queue");
            false
        }
    }
}

fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Dispatched { attempt, pod_name, .. } => info!(attempt, pod = %pod_name, "dispatched"),
        Outcome::Waiting { reason, .. } => info!(%reason, "recorded; waits for room in its queue"),
        Outcome::AlreadyRecorded { state, .. } => info!(%state, "already recorded; nothing to do"),
        Outcome::Rejected { reason, .. } => warn!(%reason, "rejected"),
        Outcome::Failed { reason, .. } => warn!(%reason, "failed"),
        Outcome::Cancelled { .. } => info!("cancelled"),
        Outcome::CancelIgnored { state, .. } => info!(%state, "cancel ignored: the job has already ended"),
        Outcome::RetryIgnored { reason, .. } => info!(%reason, "retry ignored"),
        Outcome::Skipped { reason, .. } => info!(%reason, "skipped"),
        Outcome::Refused { reason, .. } => warn!(%reason, "refused"),
    }
}
