//! The reconcile Lambda: wiring only. Triggered by an EventBridge schedule (every
//! minute); each invocation is one pass, then follows the pods until shortly before the
//! next, flushing events and metrics after the pass and after every watch window.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::metrics::Timing;
use podbridge::setup::{init_json_logs, submitter_from_env};
use reconcile::{Reconciler, Step, follow_for_from_lookup, record_metrics, thresholds_from_lookup};

/// Time kept back from the invocation's deadline for the last flush.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_json_logs();
    let lookup = |name: &str| std::env::var(name).ok();
    let thresholds = thresholds_from_lookup(lookup)?;
    let follow_for = follow_for_from_lookup(lookup)?;
    let (settings, submitter) = submitter_from_env("reconcile").await?;
    let namespaces = settings.guardrails.namespaces.clone();
    let reconciler = Reconciler::new(submitter, thresholds, settings.record_ttl, settings.concurrency)
        .with_follow_window(settings.kube_timeout / 2);

    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
        let (reconciler, namespaces) = (&reconciler, &namespaces);
        async move {
            let left = Duration::from_millis(event.context.deadline)
                .saturating_sub(Duration::from_millis(jiff::Timestamp::now().as_millisecond().unsigned_abs()));
            let until = tokio::time::Instant::now() + follow_for.min(left.saturating_sub(DEADLINE_MARGIN));
            let store = reconciler.submitter().store();
            let (pass, followed) = reconciler
                .run(namespaces, until, async |step| {
                    match step {
                        Step::Passed(report, took) => record_metrics(report, took, store.metrics()),
                        Step::Followed(window) => {
                            for latency in &window.latencies {
                                store.metrics().time(Timing::StateLatency, *latency);
                            }
                        }
                    }
                    store.flush().await;
                    store.metrics().flush();
                })
                .await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "pass": pass, "followed": followed }))
        }
    }))
    .await
}
