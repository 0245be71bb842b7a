//! The dispatch Lambda: wiring only. Configuration and clients are built once per
//! container; every invocation reuses them.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::setup::{init_json_logs, submitter_from_env};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let (settings, submitter) = submitter_from_env("dispatch").await?;
    let concurrency = settings.concurrency;

    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let submitter = &submitter;
        async move {
            let response = dispatch::handle(submitter, event.payload, concurrency).await;
            // The batch's transitions are recorded; now announce them, once per batch.
            submitter.store().flush().await;
            submitter.store().metrics().flush();
            Ok::<_, lambda_runtime::Error>(response)
        }
    }))
    .await
}
