//! What every function builds once per container: JSON logs, the settings, and a
//! [`Submitter`] over the journaled DynamoDB job store and the Kubernetes cluster.

use aws_config::BehaviorVersion;

use crate::cluster::KubeCluster;
use crate::config::Settings;
use crate::eks::{ClientOptions, ClusterAccess};
use crate::error::Result;
use crate::events::EventBridgeSink;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::store::dynamodb::DynamoJobStore;
use crate::submit::Submitter;

/// The job store every function writes through: DynamoDB, with each transition
/// published to the event bus and counted.
pub type FunctionStore = Journal<DynamoJobStore, EventBridgeSink>;

/// JSON logs on stdout, filtered by `RUST_LOG` (default `info`), without timestamps:
/// CloudWatch stamps every line itself.
pub fn init_json_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time()
        .with_target(false)
        .init();
}

/// Reads the settings and cluster access from the environment and builds the clients.
/// `function` names the function in its metrics.
pub async fn submitter_from_env(function: &str) -> Result<(Settings, Submitter<FunctionStore, KubeCluster>)> {
    let settings = Settings::from_env()?;
    let access = ClusterAccess::from_env()?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&sdk), settings.table.clone());
    let events = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&sdk), settings.event_bus.clone());
    let store = Journal::new(store, events, Metrics::new(settings.metrics_namespace.clone(), function));
    let options = ClientOptions {
        read_timeout: settings.kube_timeout,
        write_timeout: settings.kube_timeout,
        ..Default::default()
    };
    let kube = crate::eks::client(&access, &sdk, &options).await?;
    let cluster = KubeCluster::new(kube, settings.kube_timeout);
    let submitter =
        Submitter::new(store, cluster, settings.guardrails.clone(), settings.pods.clone(), settings.record_ttl)
            .with_tenancy(settings.tenancy.clone())
            .with_max_manual_retries(settings.max_manual_retries);
    Ok((settings, submitter))
}
