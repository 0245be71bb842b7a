//! The dispatch Lambda: wiring only. Configuration and clients are built once per
//! container; every invocation reuses them.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::wiring::{Deployment, init_json_logs};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let deployment = Deployment::from_env("dispatch").await?;
    let submitter = deployment.submitter();
    let concurrency = deployment.settings.concurrency;

    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (submitter, deployment) = (&submitter, &deployment);
        async move {
            let response = dispatch::handle(submitter, event.payload, concurrency).await;
            // The batch's transitions are recorded; now announce them, once per batch.
            deployment.flush().await;
            Ok::<_, lambda_runtime::Error>(response)
        }
    }))
    .await
}
