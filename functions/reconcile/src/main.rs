//! The reconcile Lambda: wiring only. Triggered by an EventBridge schedule; each
//! invocation is one pass, and its report is the invocation's result.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::metrics::Metrics;
use podbridge::setup::{init_json_logs, submitter_from_env};
use reconcile::{Reconciler, record_metrics, thresholds_from_lookup};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let thresholds = thresholds_from_lookup(|name| std::env::var(name).ok())?;
    let (settings, submitter) = submitter_from_env().await?;
    let reconciler = Reconciler::new(submitter, thresholds, settings.record_ttl, settings.concurrency);
    let metrics = Metrics::new("podbridge", "reconcile");

    lambda_runtime::run(service_fn(|_: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
        let (reconciler, metrics) = (&reconciler, &metrics);
        async move {
            let started = std::time::Instant::now();
            let report = reconciler.pass(jiff::Timestamp::now()).await?;
            record_metrics(&report, started.elapsed(), metrics);
            metrics.flush();
            Ok::<_, lambda_runtime::Error>(report)
        }
    }))
    .await
}
