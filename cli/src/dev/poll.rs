//! The SQS event source mapping for the local stack: [`sqs_esm`] (the emulator the tests
//! use too) polled forever, long-polling a second per receive.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use sqs_esm::{Mapping, poll_once};
use tracing::warn;

/// Polls forever, pausing briefly after an error.
pub async fn forever<F, Fut>(sqs: &aws_sdk_sqs::Client, queue_url: &str, batch_size: i32, mut handler: F)
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let mapping = Mapping { batch_size, wait_seconds: 1, ..Mapping::new(queue_url) };
    loop {
        match poll_once(sqs, &mapping, &mut handler).await {
            Ok(polled) if polled.undeleted > 0 => {
                warn!(failed = polled.undeleted, "some handled messages could not be deleted; they will come back");
            }
            Ok(_) => {}
            Err(error) => {
                warn!(queue = queue_url, error = %podbridge::error::error_chain(&error), "polling the queue failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
