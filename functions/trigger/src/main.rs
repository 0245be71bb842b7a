//! The trigger Lambda: wiring only. Invoked by EventBridge (a rule for Submit, Cancel and
//! Retry Job events, and schedules whose input is a tick). The invocation is
//! asynchronous: an error makes Lambda retry it and, when its retries run out, send the
//! event to the function's dead-letter queue.

use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::setup::{init_json_logs, submitter_from_env};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let (_settings, submitter) = submitter_from_env("trigger").await?;

    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let submitter = &submitter;
        async move {
            let handled = trigger::handle(submitter, &event.payload).await;
            // Whatever was recorded is announced, even when the event must come back.
            submitter.store().flush().await;
            submitter.store().metrics().flush();
            Ok::<_, lambda_runtime::Error>(handled?)
        }
    }))
    .await
}
