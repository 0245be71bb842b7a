//! Queues for the tests, and the SQS event source mapping driven until a queue is empty:
//! receive a batch, invoke the handler with it as an `SqsEvent`, delete the records the
//! handler did not report as failures, leave the rest to come back after their
//! visibility timeout (and to move to the dead-letter queue after `maxReceiveCount`).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use sqs_esm::{Mapping, poll_once};

/// A queue with its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queues {
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
}

/// Creates `name` and `name-dlq`, with a redrive after `max_receives` receives and a
/// visibility timeout of `visibility` seconds (short, so failures come back quickly).
pub async fn create_queues(sqs: &aws_sdk_sqs::Client, name: &str, max_receives: u32, visibility: u32) -> Queues {
    let dlq_url =
        sqs.create_queue().queue_name(format!("{name}-dlq")).send().await.expect("create DLQ").queue_url.unwrap();
    let dlq_arn = queue_arn(sqs, &dlq_url).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string())
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    let arn = queue_arn(sqs, &url).await;
    Queues { url, arn, dlq_url }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    attributes.attributes.unwrap()[&QueueAttributeName::QueueArn].clone()
}

/// Sends each body as a message; returns their message ids in order.
pub async fn send_all(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for body in bodies {
        let sent = sqs.send_message().queue_url(url).message_body(body).send().await.expect("send");
        ids.push(sent.message_id.unwrap());
    }
    ids
}

/// Every body in the queue right now. Each receive hides what it got, so the next one
/// returns other messages, until one comes back empty; then every message is made
/// visible again. Receiving raises the messages' receive counts.
pub async fn peek_bodies(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies: HashMap<String, String> = HashMap::new();
    let mut handles = Vec::new();
    // At most 10,000 messages: far more than any test leaves in a queue.
    for _ in 0..1_000 {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            handles.extend(message.receipt_handle);
            bodies.insert(message.message_id.unwrap_or_default(), message.body.unwrap_or_default());
        }
    }
    for handle in handles {
        sqs.change_message_visibility()
            .queue_url(url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .expect("make the message visible again");
    }
    bodies.into_values().collect()
}

/// How many messages the queue holds, visible or in flight.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let count = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

/// What a run of the event source mapping did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Batches the handler was invoked with.
    pub invocations: usize,
    /// Records handed to the handler, redeliveries included.
    pub records: usize,
    /// Records the handler reported as failures.
    pub failures: usize,
    /// Receives or deletes the queue failed (moto answers 500 when two receives race
    /// to move the same message to the dead-letter queue); polling goes on, as Lambda's
    /// does, and undeleted messages come back.
    pub queue_errors: usize,
}

/// Polls `queues` and invokes `handler` as Lambda would (through [`sqs_esm`], the
/// emulator `podbridge dev` uses too), until the queue is empty or `timeout` passes
/// (then returns anyway: the caller asserts on what is left).
pub async fn deliver<F, Fut>(sqs: &aws_sdk_sqs::Client, queues: &Queues, timeout: Duration, mut handler: F) -> Delivery
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let deadline = Instant::now() + timeout;
    let mapping = Mapping {
        queue_arn: Some(queues.arn.clone()),
        region: Some(crate::REGION.to_owned()),
        ..Mapping::new(&queues.url)
    };
    let mut delivery = Delivery::default();
    while Instant::now() < deadline {
        let polled = match poll_once(sqs, &mapping, &mut handler).await {
            Ok(polled) => polled,
            Err(error) => {
                delivery.queue_errors += 1;
                let sqs_esm::Error::Delete { polled, .. } = error else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                polled
            }
        };
        if polled.received == 0 {
            if depth(sqs, &queues.url).await == 0 {
                break;
            }
            // Only in-flight messages are left: wait for their visibility timeout.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        delivery.invocations += 1;
        delivery.records += polled.received;
        delivery.failures += polled.failed;
    }
    delivery
}
