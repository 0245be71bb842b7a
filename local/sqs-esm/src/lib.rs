//! What Lambda's SQS event source mapping does, against a real (or moto) queue: receive
//! a batch, hand it to the function's handler as an `SqsEvent`, delete the records the
//! handler did not report in `batchItemFailures`, and leave the rest to come back after
//! the visibility timeout (and to move to the dead-letter queue after `maxReceiveCount`
//! receives, which SQS itself enforces).
//!
//! One receive and one invocation per [`poll_once`]; the loop around it belongs to the
//! caller, because that is where the local stack (`podbridge dev`, which polls forever)
//! and the tests (which poll until the queue is empty) differ.

use std::collections::HashMap;
use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

/// A queue as an event source mapping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub queue_url: String,
    /// The queue's ARN, given to the handler as each record's `eventSourceARN` (Lambda
    /// always sets it; leave it `None` when the caller does not know it).
    pub queue_arn: Option<String>,
    /// The region, as each record's `awsRegion`.
    pub region: Option<String>,
    /// Messages per invocation, at most 10 (the mapping's `BatchSize`).
    pub batch_size: i32,
    /// How long one receive waits for messages (long polling), 0 to 20 seconds.
    pub wait_seconds: i32,
}

impl Mapping {
    /// A mapping of `queue_url` with batches of ten and no long polling.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self { queue_url: queue_url.into(), queue_arn: None, region: None, batch_size: 10, wait_seconds: 0 }
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// Messages received and handed to the handler (0: the handler was not invoked).
    pub received: usize,
    /// Records the handler reported as failures: left to come back.
    pub failed: usize,
    /// Handled records whose delete SQS refused: they come back, as they would from
    /// Lambda, and the handler's idempotence has to absorb them.
    pub undeleted: usize,
}

/// A receive or a delete that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("receiving from {queue}")]
    Receive {
        queue: String,
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
    /// The handler was invoked (`polled` says with what); its messages come back.
    #[error("deleting handled messages from {queue}")]
    Delete {
        queue: String,
        polled: Polled,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One receive and, if anything came, one invocation of `handler` with it; then the
/// records the handler did not report as failed are deleted.
///
/// # Errors
///
/// When the receive or the delete fails. A failed delete leaves the handled messages to
/// come back after their visibility timeout.
pub async fn poll_once<F, Fut>(sqs: &Client, mapping: &Mapping, handler: F) -> Result<Polled, Error>
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let queue = || mapping.queue_url.clone();
    let received = sqs
        .receive_message()
        .queue_url(&mapping.queue_url)
        .max_number_of_messages(mapping.batch_size.clamp(1, 10))
        .wait_time_seconds(mapping.wait_seconds.clamp(0, 20))
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| Error::Receive { queue: queue(), source: Box::new(e.into()) })?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(Polled::default());
    }
    let mut handles = HashMap::new();
    let mut event = SqsEvent::default();
    for message in messages {
        if let (Some(id), Some(handle)) = (&message.message_id, &message.receipt_handle) {
            handles.insert(id.clone(), handle.clone());
        }
        let mut record = SqsMessage::default();
        record.message_id = message.message_id;
        record.receipt_handle = message.receipt_handle;
        record.body = message.body;
        record.md5_of_body = message.md5_of_body;
        record.event_source = Some("aws:sqs".to_owned());
        record.event_source_arn.clone_from(&mapping.queue_arn);
        record.aws_region.clone_from(&mapping.region);
        record.attributes = message
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key.as_str().to_owned(), value))
            .collect();
        event.records.push(record);
    }
    let mut polled = Polled { received: event.records.len(), ..Polled::default() };
    let response = handler(event).await;
    polled.failed = response.batch_item_failures.len();
    for failure in &response.batch_item_failures {
        handles.remove(&failure.item_identifier);
    }
    if handles.is_empty() {
        return Ok(polled);
    }
    let entries = handles
        .into_values()
        .enumerate()
        .map(|(i, handle)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Delete { queue: queue(), polled, source: Box::new(e) })?;
    let deleted = sqs
        .delete_message_batch()
        .queue_url(&mapping.queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| Error::Delete { queue: queue(), polled, source: Box::new(aws_sdk_sqs::Error::from(e)) })?;
    polled.undeleted = deleted.failed.len();
    Ok(polled)
}
