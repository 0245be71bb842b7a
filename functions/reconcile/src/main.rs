//! The reconcile Lambda: wiring only. Triggered by an EventBridge schedule; each
//! invocation is one pass, and its report is the invocation's result.

use aws_config::BehaviorVersion;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::cluster::KubeCluster;
use podbridge::config::Settings;
use podbridge::eks::{ClientOptions, ClusterAccess};
use podbridge::metrics::Metrics;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::submit::Submitter;
use reconcile::{Reconciler, record_metrics, thresholds_from_lookup};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time()
        .with_target(false)
        .init();

    let settings = Settings::from_env()?;
    let thresholds = thresholds_from_lookup(|name| std::env::var(name).ok())?;
    let access = ClusterAccess::from_env()?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&sdk), settings.table.clone());
    let options = ClientOptions {
        read_timeout: settings.kube_timeout,
        write_timeout: settings.kube_timeout,
        ..Default::default()
    };
    let kube = podbridge::eks::client(&access, &sdk, &options).await?;
    let cluster = KubeCluster::new(kube, settings.kube_timeout);
    let submitter =
        Submitter::new(store, cluster, settings.guardrails.clone(), settings.pods.clone(), settings.record_ttl);
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
