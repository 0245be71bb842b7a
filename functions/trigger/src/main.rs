//! The trigger Lambda: wiring only. Invoked by EventBridge (a rule for Submit, Cancel and
//! Retry Job events, and schedules whose input is a tick). The invocation is
//! asynchronous: an error makes Lambda retry it and, when its retries run out, send the
//! event to the function's dead-letter queue.

use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::wiring::{Deployment, init_json_logs};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let deployment = Deployment::from_env("trigger").await?;
    let submitter = deployment.submitter();

    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (submitter, deployment) = (&submitter, &deployment);
        async move {
            let handled = trigger::handle(submitter, &event.payload).await;
            // Whatever was recorded is announced, even when the event must come back.
            deployment.flush().await;
            Ok::<_, lambda_runtime::Error>(handled?)
        }
    }))
    .await
}
