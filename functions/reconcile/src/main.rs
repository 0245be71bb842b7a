//! The reconcile Lambda: wiring only. Triggered by an EventBridge schedule (every
//! minute); each invocation is one pass, then follows the pods until shortly before the
//! next, flushing events and metrics after the pass and after every watch window.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::metrics::Timing;
use podbridge::wiring::{Deployment, init_json_logs};
use reconcile::{Reconciler, Step, record_metrics};

/// Time kept back from the invocation's deadline for the last flush.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let deployment = Deployment::from_env("reconcile").await?;
    let settings = &deployment.settings;
    let reconciler =
        Reconciler::new(deployment.attempts(), settings.reconcile.thresholds.clone(), settings.concurrency)
            .with_follow_window(settings.kube_timeout / 2);
    let (namespaces, follow_for) = (&settings.guardrails.namespaces, settings.reconcile.follow_for);

    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
        let (reconciler, deployment) = (&reconciler, &deployment);
        async move {
            let left = Duration::from_millis(event.context.deadline)
                .saturating_sub(Duration::from_millis(jiff::Timestamp::now().as_millisecond().unsigned_abs()));
            let until = tokio::time::Instant::now() + follow_for.min(left.saturating_sub(DEADLINE_MARGIN));
            let metrics = deployment.store.metrics();
            let (pass, followed) = reconciler
                .run(namespaces, until, async |step| {
                    match step {
                        Step::Passed(report, took) => record_metrics(report, took, metrics),
                        Step::Followed(window) => {
                            for latency in &window.latencies {
                                metrics.time(Timing::StateLatency, *latency);
                            }
                        }
                    }
                    deployment.flush().await;
                })
                .await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "pass": pass, "followed": followed }))
        }
    }))
    .await
}
