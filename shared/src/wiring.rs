//! The one path from settings to ready clients, used by the three functions, the CLI
//! and `podbridge dev`: the DynamoDB job store journaled to the event bus and metrics,
//! and the Kubernetes cluster (the only place a Kubernetes client is built, through
//! [`crate::eks::client`], with kube's own retries off).

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::cluster::KubeCluster;
use crate::eks::{self, ClientOptions};
use crate::error::Result;
use crate::events::EventBridgeSink;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::services::{Attempts, Submitter};
use crate::settings::Settings;
use crate::store::dynamodb::DynamoJobStore;

/// The job store every function writes through: DynamoDB, with each transition
/// published to the event bus and counted.
pub type FunctionStore = Journal<DynamoJobStore, EventBridgeSink>;

/// A deployment's settings and the handles built from them, once per process.
#[derive(Debug)]
pub struct Deployment {
    /// The settings the clients were built from.
    pub settings: Settings,
    /// The journaled job store (a shared handle).
    pub store: Arc<FunctionStore>,
    /// The Kubernetes cluster (a shared handle).
    pub cluster: Arc<KubeCluster>,
}

impl Deployment {
    /// A function's deployment: settings from the environment, AWS from the SDK's
    /// default chain. `function` names the function in its metrics.
    pub async fn from_env(function: &str) -> Result<Self> {
        let settings = Settings::from_env()?;
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::connect(settings, &sdk, function).await
    }

    /// Builds the clients of `settings` on `sdk` (AWS itself, or a local stack's
    /// endpoint). Fails when the settings name no cluster.
    pub async fn connect(settings: Settings, sdk: &SdkConfig, function: &str) -> Result<Self> {
        let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(sdk), settings.table.clone())
            .with_queue_table(settings.queue_table.clone());
        let events = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(sdk), settings.event_bus.clone());
        let store = Journal::new(store, events, Metrics::new(settings.metrics_namespace.clone(), function));
        let options = ClientOptions {
            read_timeout: settings.kube_timeout,
            write_timeout: settings.kube_timeout,
            ..ClientOptions::default()
        };
        let kube = eks::client(settings.cluster_access()?, sdk, &options).await?;
        let cluster = KubeCluster::new(kube, settings.kube_timeout);
        Ok(Self { settings, store: Arc::new(store), cluster: Arc::new(cluster) })
    }

    /// What starts attempts, over this deployment's handles and guardrails.
    pub fn attempts(&self) -> Attempts<FunctionStore, KubeCluster> {
        let settings = &self.settings;
        Attempts::new(
            Arc::clone(&self.store),
            Arc::clone(&self.cluster),
            settings.guardrails.clone(),
            settings.pods.clone(),
            settings.record_ttl,
        )
        .with_admission(settings.admission.total, settings.admission.largest_node)
    }

    /// What serves senders, scoped as the settings say.
    pub fn submitter(&self) -> Submitter<FunctionStore, KubeCluster> {
        Submitter::over(self.attempts())
            .with_tenancy(self.settings.tenancy.clone())
            .with_max_manual_retries(self.settings.max_manual_retries)
    }

    /// Publishes the state changes recorded since the last flush and prints the
    /// metrics: after every invocation (and, in the reconciler, every watch window).
    pub async fn flush(&self) {
        self.store.flush().await;
        self.store.metrics().flush();
    }
}

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
