//! What Lambda's SQS event source mapping does, for the local stack: receive a batch,
//! hand it to the function's handler as an `SqsEvent`, delete what the handler did not
//! report as failed, and leave the rest to come back after the visibility timeout (and
//! move to the dead-letter queue after `maxReceiveCount` receives, which SQS enforces).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use tracing::warn;

/// One receive (long-polling up to a second) and, if anything came, one invocation of
/// `handler`. Returns how many messages were received.
pub async fn once<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch_size: i32,
    handler: F,
) -> anyhow::Result<usize>
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(batch_size.clamp(1, 10))
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let mut handles = HashMap::new();
    let mut event = SqsEvent::default();
    for message in &messages {
        let mut record = SqsMessage::default();
        record.message_id = message.message_id.clone();
        record.receipt_handle = message.receipt_handle.clone();
        record.body = message.body.clone();
        record.md5_of_body = message.md5_of_body.clone();
        record.event_source = Some("aws:sqs".to_owned());
        record.attributes = message
            .attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key.as_str().to_owned(), value))
            .collect();
        if let (Some(id), Some(handle)) = (&message.message_id, &message.receipt_handle) {
            handles.insert(id.clone(), handle.clone());
        }
        event.records.push(record);
    }
    let response = handler(event).await;
    for failure in &response.batch_item_failures {
        handles.remove(&failure.item_identifier);
    }
    let entries: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, (_, handle))| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()
        })
        .collect::<Result<_, _>>()?;
    if !entries.is_empty() {
        let deleted = sqs.delete_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await?;
        if !deleted.failed.is_empty() {
            warn!(failed = deleted.failed.len(), "some handled messages could not be deleted; they will come back");
        }
    }
    Ok(messages.len())
}

/// Polls forever, pausing briefly after an error.
pub async fn forever<F, Fut>(sqs: &aws_sdk_sqs::Client, queue_url: &str, batch_size: i32, mut handler: F)
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    loop {
        if let Err(error) = once(sqs, queue_url, batch_size, &mut handler).await {
            warn!(queue = queue_url, error = %format!("{error:#}"), "receiving failed; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
