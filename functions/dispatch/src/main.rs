//! The dispatch Lambda: wiring only. Configuration and clients are built once per
//! container; every invocation reuses them.

use aws_config::BehaviorVersion;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use podbridge::cluster::KubeCluster;
use podbridge::config::Settings;
use podbridge::eks::{ClientOptions, ClusterAccess};
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::submit::Submitter;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // JSON logs; CloudWatch stamps the time itself.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time()
        .with_target(false)
        .init();

    let settings = Settings::from_env()?;
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
    let concurrency = settings.concurrency;

    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let submitter = &submitter;
        async move { Ok::<_, lambda_runtime::Error>(dispatch::handle(submitter, event.payload, concurrency).await) }
    }))
    .await
}
