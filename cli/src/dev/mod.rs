//! `podbridge dev`: the whole product on a laptop. DynamoDB, SQS and EventBridge on moto
//! (started here, or any endpoint given), the Kubernetes API of a real cluster from a
//! kubeconfig or a simulated cluster started here, and the functions' own handlers
//! driven as Lambda would drive them: the job queue polled like the SQS event source
//! mapping (batches, partial batch responses, the dead-letter queue after
//! `maxReceiveCount`), the trigger's rule delivering into a queue polled the same way,
//! and the reconciler run on a schedule. Nothing here is a second implementation of a
//! function: `dispatch::handle`, `trigger::handle` and `reconcile::Reconciler` are the
//! code the Lambdas run.
//!
//! When everything is ready it writes `<dir>/env` (`export` lines for the CLI, the AWS
//! endpoint and `KUBECONFIG`), prints the same lines, and runs until Ctrl-C (or
//! SIGTERM), then stops what it started and removes `<dir>/env`.

mod moto;
mod poll;
mod resources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use podbridge::cluster::KubeCluster;
use podbridge::events::EventBridgeSink;
use podbridge::journal::Journal;
use podbridge::metrics::Metrics;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::submit::Submitter;
use reconcile::Reconciler;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::settings::{Local, Overrides};

type Store = Journal<DynamoJobStore, EventBridgeSink>;

/// Runs the local stack until Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kubeconfig of a cluster to run jobs on (kind, minikube, EKS). Without it, a
    /// simulated cluster is started, whose kubeconfig is written to <DIR>/kubeconfig
    /// (pods choose their fate with the env var KUBE_SIM_BEHAVIOR, see examples/demo/).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// An AWS endpoint to use (a running moto server) instead of starting moto.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// The moto server program [default: .venv/bin/moto_server if present, else moto_server on PATH].
    #[arg(long, value_name = "PATH")]
    pub moto: Option<PathBuf>,
    /// Where the stack writes its env file, kubeconfig and moto's log.
    #[arg(long, value_name = "DIR", default_value = ".podbridge-dev")]
    pub dir: PathBuf,
    /// The prefix of every table, queue, bus and rule.
    #[arg(long, default_value = "podbridge-dev")]
    pub name: String,
    /// Messages per batch, as the SQS event source mapping's BatchSize (at most 10).
    #[arg(long, default_value_t = 10)]
    pub batch_size: i32,
    /// The job queue's visibility timeout, seconds: how long a failed message waits
    /// before it is delivered again.
    #[arg(long, default_value_t = 10)]
    pub visibility_timeout: u32,
    /// Receives before a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    pub max_receive_count: u32,
    /// Seconds between reconcile invocations (the deployment's schedule is 60); each one
    /// passes over every active job, then follows the pods until the next.
    #[arg(long, default_value_t = 10)]
    pub reconcile_every: u64,
    /// Log JSON lines, as the functions do in Lambda, instead of readable text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub guardrails: Overrides,
}

pub fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    init_logs(args.json);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Logs on stderr (stdout carries the `export` lines). Readable text by default: the
/// job state changes, and warnings; `RUST_LOG` shows more (`RUST_LOG=info` shows every
/// pass and every handled message).
fn init_logs(json: bool) {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,podbridge::dev=info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.compact().with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let local = Local::from_env(&args.guardrails)?;
    if let Some(note) = local.assumed_note() {
        info!("{note}");
    }

    let (_moto, endpoint) = match &args.endpoint_url {
        Some(endpoint) => (None, endpoint.clone()),
        None => {
            let program = args.moto.clone().unwrap_or_else(moto::default_program);
            let moto = moto::start(&program, &args.dir.join("moto.log")).await?;
            let endpoint = moto.endpoint.clone();
            info!(endpoint = %endpoint, "moto server started");
            (Some(moto), endpoint)
        }
    };
    // Dummy credentials unless the environment has some: moto takes any.
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(&endpoint);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "dev",
            "dev",
            None,
            None,
            "podbridge-dev",
        ));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    let sdk = loader.load().await;
    let queues = resources::QueueSettings {
        visibility_timeout: args.visibility_timeout,
        max_receive_count: args.max_receive_count,
    };
    let created = resources::create(&sdk, &args.name, queues).await?;
    info!(table = %created.table, queue = %created.queue_url, bus = %created.bus, "AWS resources ready");

    let (_sim, kubeconfig) = match &args.kubeconfig {
        Some(path) => (None, path.clone()),
        None => {
            let mut namespaces = local.guardrails.namespaces.clone();
            namespaces.push("default".into());
            let config = kube_sim::SimConfig { namespaces, ..kube_sim::SimConfig::default() };
            let sim = kube_sim::KubeSim::start("127.0.0.1:0".parse()?, config).await?;
            let path = args.dir.join("kubeconfig");
            sim.write_kubeconfig(&path)?;
            info!(url = %sim.url(), kubeconfig = %path.display(), "simulated cluster started");
            (Some(sim), path)
        }
    };
    let kube = kube_client(&kubeconfig).await?;

    let store = Journal::new(
        DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&sdk), created.table.clone()),
        EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&sdk), created.bus.clone()),
        Metrics::new("podbridge/dev", "dev"),
    );
    let ttl = Duration::from_secs(30 * 86_400);
    let submitter = Submitter::new(
        store,
        KubeCluster::new(kube, Duration::from_secs(10)),
        local.guardrails.clone(),
        local.pods.clone(),
        ttl,
    );
    let thresholds = reconcile::thresholds_from_lookup(|name| std::env::var(name).ok())?;
    let reconciler = Reconciler::new(submitter, thresholds, ttl, 10).with_follow_window(Duration::from_secs(2));

    let env_file = args.dir.join("env");
    let exports = exports(&endpoint, &created, &kubeconfig, &sdk);
    write_atomically(&env_file, &exports)?;
    println!("{exports}");
    info!(env = %env_file.display(), "the local stack is ready; `source {}` in another shell to use the CLI", env_file.display());

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let namespaces = local.guardrails.namespaces.clone();
    let every = Duration::from_secs(args.reconcile_every.max(1));
    tokio::select! {
        () = dispatch_loop(&reconciler, &sqs, &created.queue_url, args.batch_size) => {}
        () = trigger_loop(&reconciler, &sqs, &created.trigger_queue_url) => {}
        () = reconcile_loop(&reconciler, &namespaces, every) => {}
        () = show_changes(&sqs, &created.changes_queue_url) => {}
        () = shutdown_signal() => info!("stopping"),
    }
    // What was recorded since the last flush is announced (and shown) before leaving.
    // The changes queue's short visibility timeout brings back a batch whose receive
    // was cut off by the signal.
    flush(reconciler.submitter().store()).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), show_changes(&sqs, &created.changes_queue_url)).await;
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

async fn kube_client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    // Retries happen through the queue and the reconciler, visibly, as in the functions.
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

fn exports(endpoint: &str, created: &resources::Resources, kubeconfig: &Path, sdk: &aws_config::SdkConfig) -> String {
    let kubeconfig = std::fs::canonicalize(kubeconfig).unwrap_or_else(|_| kubeconfig.to_path_buf());
    let region = sdk.region().map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", region),
        ("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "dev".into())),
        ("AWS_SECRET_ACCESS_KEY", std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "dev".into())),
        ("PODBRIDGE_TABLE", created.table.clone()),
        ("PODBRIDGE_QUEUE_URL", created.queue_url.clone()),
        ("PODBRIDGE_DLQ_URL", created.dlq_url.clone()),
        ("PODBRIDGE_EVENT_BUS", created.bus.clone()),
        ("PODBRIDGE_TRIGGER_DLQ_URL", created.trigger_dlq_url.clone()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ]
    .iter()
    .map(|(name, value)| format!("export {name}='{value}'"))
    .collect::<Vec<_>>()
    .join("\n")
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{text}\n"))?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// The job queue, as the dispatch function's event source mapping.
async fn dispatch_loop(
    reconciler: &Reconciler<Store, KubeCluster>,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch: i32,
) {
    let submitter = reconciler.submitter();
    poll::forever(sqs, queue_url, batch, async |event: SqsEvent| {
        let response = dispatch::handle(submitter, event, 10).await;
        flush(submitter.store()).await;
        response
    })
    .await;
}

/// The trigger's rule delivers into a queue; each event is one invocation, as
/// EventBridge invokes the function once per event. A failed invocation leaves the event
/// to come back (EventBridge's retries), and to the dead-letter queue in the end.
async fn trigger_loop(reconciler: &Reconciler<Store, KubeCluster>, sqs: &aws_sdk_sqs::Client, queue_url: &str) {
    let submitter = reconciler.submitter();
    poll::forever(sqs, queue_url, 1, async |event: SqsEvent| {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let input: Value = serde_json::from_str(record.body.as_deref().unwrap_or_default()).unwrap_or(Value::Null);
            if let Err(e) = trigger::handle(submitter, &input).await {
                warn!(error = %podbridge::error::error_chain(&e), "the trigger failed; the event will be retried");
                response.add_failure(record.message_id.unwrap_or_default());
            }
        }
        flush(submitter.store()).await;
        response
    })
    .await;
}

/// The reconcile schedule: each invocation passes over every active job, then follows
/// the pods until the next.
async fn reconcile_loop(reconciler: &Reconciler<Store, KubeCluster>, namespaces: &[String], every: Duration) {
    let store = reconciler.submitter().store();
    loop {
        let until = tokio::time::Instant::now() + every;
        if let Err(e) = reconciler.run(namespaces, until, async |_| flush(store).await).await {
            error!(error = %podbridge::error::error_chain(&e), "the reconcile pass failed; the next one tries again");
        }
        tokio::time::sleep_until(until).await;
    }
}

async fn flush(store: &Store) {
    store.flush().await;
    // The metrics are for CloudWatch; locally they would only drown the log.
    let _ = store.metrics().flush_to(&mut std::io::sink());
}

/// One readable line per job state change, from the bus (as any subscriber gets them).
async fn show_changes(sqs: &aws_sdk_sqs::Client, queue_url: &str) {
    poll::forever(sqs, queue_url, 10, async |event: SqsEvent| print_changes(event)).await;
}

fn print_changes(event: SqsEvent) -> SqsBatchResponse {
    for record in event.records {
        let Ok(event) = serde_json::from_str::<Value>(record.body.as_deref().unwrap_or_default()) else { continue };
        let detail = &event["detail"];
        let text = |key: &str| detail[key].as_str().unwrap_or("-").to_owned();
        info!(
            job = %text("jobId"),
            attempt = detail["attempt"].as_u64().unwrap_or(0),
            from = %text("previousState"),
            to = %text("state"),
            class = %text("failureClass"),
            "{}: {}",
            text("reason"),
            text("message")
        );
    }
    SqsBatchResponse::default()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
