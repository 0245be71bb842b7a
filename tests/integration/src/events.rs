//! A consumer of podbridge's job state change events, as a user would set one up: a bus,
//! a rule matching podbridge's events, and an SQS queue as the rule's target. Each test
//! makes its own, so tests run in parallel without seeing each other's events.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use podbridge::events::{DETAIL_TYPE, EventBridgeSink, SOURCE};
use serde_json::{Value, json};

use crate::{Stack, unique_name};

const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// The event pattern of a rule for podbridge's job state changes.
pub fn job_state_changes() -> Value {
    json!({ "source": [SOURCE], "detail-type": [DETAIL_TYPE] })
}

/// A bus with a rule that sends podbridge's job state changes to a queue, as a
/// consumer would set it up.
#[derive(Debug)]
pub struct Subscription {
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The bus podbridge publishes to.
    pub bus: String,
    pub rule: String,
    /// The queue the rule sends podbridge's events to.
    pub queue_url: String,
}

impl Subscription {
    /// A new bus, and a rule sending podbridge's job state changes to a new queue.
    pub async fn new(stack: &Stack) -> anyhow::Result<Subscription> {
        Self::matching(stack, job_state_changes()).await
    }

    /// A new bus, and a rule sending the events that match `pattern` to a new queue.
    pub async fn matching(stack: &Stack, pattern: Value) -> anyhow::Result<Subscription> {
        let events = aws_sdk_eventbridge::Client::new(&stack.aws);
        let sqs = stack.sqs();
        let bus = unique_name("bus");
        events.create_event_bus().name(&bus).send().await.context("creating the bus")?;

        let queue_url = sqs.create_queue().queue_name(unique_name("events")).send().await?.queue_url.context("url")?;
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?;
        let queue_arn = attributes.attributes.unwrap_or_default()[&QueueAttributeName::QueueArn].clone();

        let rule = unique_name("rule");
        let rule_arn = events
            .put_rule()
            .name(&rule)
            .event_bus_name(&bus)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .context("creating the rule")?
            .rule_arn
            .context("rule ARN")?;
        // EventBridge may only send to a queue whose policy lets it; moto does not check,
        // AWS does, so the test sets it up as a real subscriber must.
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "Service": "events.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } }
            }]
        });
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await?;
        let target = Target::builder().id("queue").arn(queue_arn).build()?;
        let put = events.put_targets().rule(&rule).event_bus_name(&bus).targets(target).send().await?;
        anyhow::ensure!(put.failed_entry_count == 0, "put_targets failed: {:?}", put.failed_entries);
        Ok(Subscription { events, sqs, bus, rule, queue_url })
    }

    /// A sink publishing to the bus.
    pub fn sink(&self) -> EventBridgeSink {
        EventBridgeSink::new(self.events.clone(), &self.bus)
    }

    /// Receives (and deletes) messages until `count` arrived; each body is an event.
    pub async fn receive(&self, count: usize) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + TIMEOUT;
        let mut bodies = Vec::new();
        while bodies.len() < count {
            anyhow::ensure!(Instant::now() < deadline, "{count} events expected in the queue, got {bodies:#?}");
            let received =
                self.sqs.receive_message().queue_url(&self.queue_url).max_number_of_messages(10).send().await?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                tokio::time::sleep(POLL).await;
            }
            for message in messages {
                bodies.push(serde_json::from_str(message.body().context("a message body")?)?);
                let handle = message.receipt_handle().context("a receipt handle")?;
                self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await?;
            }
        }
        Ok(bodies)
    }

    /// Receives (and deletes) every event the queue holds now, waiting up to a second
    /// for the first.
    pub async fn drain(&self) -> anyhow::Result<Vec<Value>> {
        let mut bodies = Vec::new();
        let mut wait = 1;
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .send()
                .await?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(bodies);
            }
            wait = 0;
            for message in messages {
                bodies.push(serde_json::from_str(message.body().context("a message body")?)?);
                let handle = message.receipt_handle().context("a receipt handle")?;
                self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await?;
            }
        }
    }

    /// Removes the rule, the bus and the queue.
    pub async fn delete(&self) -> anyhow::Result<()> {
        self.events.remove_targets().rule(&self.rule).event_bus_name(&self.bus).ids("queue").send().await?;
        self.events.delete_rule().name(&self.rule).event_bus_name(&self.bus).send().await?;
        self.events.delete_event_bus().name(&self.bus).send().await?;
        self.sqs.delete_queue().queue_url(&self.queue_url).send().await?;
        Ok(())
    }
}
