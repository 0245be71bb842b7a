//! The EventBridge adapter of the event port: PutEvents, ten events per call, each
//! entry retried once before it is given up and logged.

use std::time::Duration;

use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::{DETAIL_TYPE, EventSink, JobStateChange, PublishReport, SOURCE};

/// PutEvents takes at most 10 entries per call.
pub const MAX_BATCH: usize = 10;

/// How often an entry is offered to EventBridge before it is given up (and logged).
const TRIES: usize = 2;

/// The pause before the retry: long enough for a throttled bus to recover, short enough
/// not to matter to a Lambda's deadline.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Publishes to an EventBridge bus with PutEvents, ten events per call.
#[derive(Debug, Clone)]
pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeSink {
    /// A sink for the bus named `bus_name` (a name or an ARN).
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        Self { client, bus_name: bus_name.into() }
    }

    async fn publish_batch(&self, events: &[JobStateChange]) -> PublishReport {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            match self.entry(event) {
                Ok(entry) => pending.push((event, entry)),
                Err(error) => log_lost(event, &error),
            }
        }
        let offered = pending.len();
        let mut lost = 0;
        for try_number in 1..=TRIES {
            if try_number > 1 {
                tokio::time::sleep(RETRY_DELAY).await;
            }
            let rejected = self.put(pending.iter().map(|(_, entry)| entry.clone()).collect()).await;
            let mut rejected = rejected.into_iter().peekable();
            let mut retry = Vec::new();
            for (position, item) in pending.into_iter().enumerate() {
                let Some((_, error)) = rejected.next_if(|(i, _)| *i == position) else { continue };
                if try_number < TRIES {
                    retry.push(item);
                } else {
                    lost += 1;
                    log_lost(item.0, &error);
                }
            }
            pending = retry;
            if pending.is_empty() {
                break;
            }
        }
        PublishReport { published: offered - lost, failed: events.len() - offered + lost }
    }

    fn entry(&self, event: &JobStateChange) -> Result<PutEventsRequestEntry, String> {
        let detail = serde_json::to_string(event).map_err(|err| format!("the detail does not serialize: {err}"))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(SOURCE)
            .detail_type(DETAIL_TYPE)
            .detail(detail)
            .time(DateTime::from_millis(event.at.as_millisecond()))
            .build())
    }

    /// One PutEvents call: the positions of the entries the bus did not take, with why,
    /// in ascending order. A failed call rejects them all.
    async fn put(&self, entries: Vec<PutEventsRequestEntry>) -> Vec<(usize, String)> {
        let count = entries.len();
        match self.client.put_events().set_entries(Some(entries)).send().await {
            // Results come in the order of the entries; an accepted one has an event id.
            Ok(output) => (0..count)
                .filter_map(|i| match output.entries().get(i) {
                    Some(result) if result.event_id().is_some() && result.error_code().is_none() => None,
                    Some(result) => Some((
                        i,
                        format!(
                            "{}: {}",
                            result.error_code().unwrap_or("no event id"),
                            result.error_message().unwrap_or_default()
                        ),
                    )),
                    None => Some((i, "PutEvents returned no result for the entry".to_owned())),
                })
                .collect(),
            Err(err) => {
                let error = format!("PutEvents failed: {}", DisplayErrorContext(&err));
                (0..count).map(|i| (i, error.clone())).collect()
            }
        }
    }
}

fn log_lost(event: &JobStateChange, error: &str) {
    tracing::error!(
        job_id = %event.job_id,
        attempt = event.attempt,
        state = %event.state,
        error,
        "job state change event not published; the job record holds the transition"
    );
}

impl EventSink for EventBridgeSink {
    async fn publish(&self, events: &[JobStateChange]) -> PublishReport {
        // One batch after another: a function usually publishes a single event, and a
        // reconcile pass's few dozen are not worth concurrent calls against the bus's
        // throttle. EventBridge does not keep order anyway; consumers order by `at`.
        let mut report = PublishReport::default();
        for batch in events.chunks(MAX_BATCH) {
            let batch_report = self.publish_batch(batch).await;
            report.published += batch_report.published;
            report.failed += batch_report.failed;
        }
        report
    }
}
