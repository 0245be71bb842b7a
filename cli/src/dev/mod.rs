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
//! When everything is ready it writes `<dir>/env` (`export` lines for the CLI and any AWS
//! client: the AWS endpoint, region and credentials, the job and queue tables, the SQS
//! queues, the bus, and
//! `KUBECONFIG`), prints the same lines, and runs until Ctrl-C (or SIGTERM), then stops
//! what it started and removes `<dir>/env`.
//!
//! The reconciler runs with [`LOCAL_THRESHOLDS`] where their variables are not set.

mod moto;
mod poll;
mod resources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use podbridge::cluster::KubeCluster;
use podbridge::services::Submitter;
use podbridge::settings::var;
use podbridge::wiring::{Deployment, FunctionStore};
use podbridge_core::reconcile::Thresholds;
use reconcile::Reconciler;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::connect;
use crate::settings::{Local, Overrides};

/// One reconcile threshold `podbridge dev` shortens.
struct LocalThreshold {
    variable: &'static str,
    /// The local default, as the variable would hold it.
    seconds: &'static str,
    /// What it limits, for `--help`.
    meaning: &'static str,
    /// The field of [`Thresholds`] it sets, for the deployment's default in `--help`.
    field: fn(&Thresholds) -> Duration,
}

/// The reconcile thresholds `podbridge dev` uses unless their variables are set: short,
/// so that on a laptop a stuck job fails in seconds rather than the deployment's minutes.
/// The one place they are written down; `--help` lists them from here.
const LOCAL_THRESHOLDS: [LocalThreshold; 6] = [
    LocalThreshold {
        variable: var::STUCK_AFTER_SECONDS,
        seconds: "20",
        meaning: "how long an image that cannot be pulled, or a container that cannot be created, waits \
                  before its attempt fails",
        field: |t| t.stuck_after,
    },
    LocalThreshold {
        variable: var::UNSCHEDULABLE_AFTER_SECONDS,
        seconds: "30",
        meaning: "how long a pod the scheduler cannot place waits before its attempt fails",
        field: |t| t.unschedulable_after,
    },
    LocalThreshold {
        variable: var::START_LIMIT_SECONDS,
        seconds: "60",
        meaning: "how long a pod may take to start, whatever holds it up, before its attempt fails",
        field: |t| t.start_limit,
    },
    LocalThreshold {
        variable: var::DEADLINE_GRACE_SECONDS,
        seconds: "5",
        meaning: "how far past its timeoutSeconds a running job may go, if the kubelet has not stopped it, \
                  before it fails",
        field: |t| t.deadline_grace,
    },
    LocalThreshold {
        variable: var::REDISPATCH_AFTER_SECONDS,
        seconds: "15",
        meaning: "how long a first attempt may stay queued without a pod (its dispatcher died) before the \
                  reconciler dispatches it",
        field: |t| t.redispatch_after,
    },
    LocalThreshold {
        variable: var::ORPHAN_GRACE_SECONDS,
        seconds: "30",
        meaning: "how long a podbridge pod without a job record (an orphan) is left before it is deleted",
        field: |t| t.orphan_grace,
    },
];

/// The local thresholds as defaults for [`Local::from_env_with`]: each applies only
/// where its variable is not set.
fn local_threshold_defaults() -> Vec<(&'static str, &'static str)> {
    LOCAL_THRESHOLDS.iter().map(|t| (t.variable, t.seconds)).collect()
}

/// The part of `--help` that lists the local thresholds, with the deployment's defaults.
fn thresholds_help() -> String {
    let deployed = Thresholds::default();
    let mut help = String::from(
        "Reconcile thresholds: podbridge dev shortens the deployment's, so that a stuck job fails in seconds \
         rather than minutes. Each local default applies only when its variable is not set; a variable set in \
         the environment wins.\n",
    );
    for threshold in &LOCAL_THRESHOLDS {
        help.push_str(&format!(
            "  {}={} (deployment default: {})\n      {}\n",
            threshold.variable,
            threshold.seconds,
            (threshold.field)(&deployed).as_secs(),
            threshold.meaning
        ));
    }
    help
}

/// The region of the local stack's clients when the environment names none (moto
/// serves any).
const DEFAULT_REGION: &str = "us-east-1";

/// How long each watch window of the local reconciler lasts at most.
const FOLLOW_WINDOW: Duration = Duration::from_secs(2);

/// Runs the local stack until Ctrl-C.
#[derive(Debug, clap::Args)]
#[command(after_help = thresholds_help())]
pub struct Args {
    /// The kubeconfig of a cluster to run jobs on (kind, minikube, EKS). Without it, a
    /// simulated cluster is started, whose kubeconfig is written to <DIR>/kubeconfig
    /// (pods choose their fate with the env var KUBE_SIM_BEHAVIOR, see examples/demo/).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// An AWS endpoint to use (a running moto server) instead of starting moto.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// The moto_server of a Python venv holding the moto release tests/requirements.txt
    /// pins (checked; the launcher needs that release). Without it, the current directory's .venv
    /// when `make test` or `make demo` installed the same requirements there, else a
    /// venv of its own under $XDG_CACHE_HOME/podbridge (or ~/.cache/podbridge), installed
    /// on first use with python3 (a minute or so). A moto_server on PATH is never used.
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
    /// The port of the console (`podbridge console`) the stack serves on 127.0.0.1
    /// (0: any free port); its URL is printed and written to the env file.
    #[arg(long, value_name = "PORT", default_value_t = crate::console::DEFAULT_PORT)]
    pub console_port: u16,
    /// Serve no console.
    #[arg(long)]
    pub no_console: bool,
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
    // The functions' own settings, read once: the cluster is the kubeconfig's (given, or
    // the simulated cluster's), never an EKS cluster of the environment; the tables and
    // the bus are the ones created below.
    let kubeconfig = args.kubeconfig.clone().unwrap_or_else(|| args.dir.join("kubeconfig"));
    let fixed = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        (var::CLUSTER_NAME, String::new()),
        (var::CLUSTER_ENDPOINT, String::new()),
        (var::CLUSTER_CA, String::new()),
    ];
    let local = Local::from_env_with(&args.guardrails, &fixed, &local_threshold_defaults())?;
    if let Some(note) = local.assumed_note() {
        info!("{note}");
    }
    let mut settings = local.settings;

    let (_moto, endpoint) = match &args.endpoint_url {
        Some(endpoint) => (None, endpoint.clone()),
        None => {
            let python = moto::python(args.moto.as_deref()).await?;
            let moto = moto::start(&python, &args.dir.join("moto.log")).await?;
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
        loader = loader.region(Region::new(DEFAULT_REGION));
    }
    let sdk = loader.load().await;
    let queues = resources::QueueSettings {
        visibility_timeout: args.visibility_timeout,
        max_receive_count: args.max_receive_count,
    };
    let created = resources::create(&sdk, &args.name, queues).await?;
    info!(
        table = %created.table,
        queue_table = %created.queue_table,
        queue = %created.queue_url,
        bus = %created.bus,
        "AWS resources ready"
    );

    let _sim = match &args.kubeconfig {
        Some(_) => None,
        None => {
            let mut namespaces = settings.guardrails.namespaces.clone();
            namespaces.push("default".into());
            let config = kube_sim::SimConfig { namespaces, ..kube_sim::SimConfig::default() };
            let sim = kube_sim::KubeSim::start("127.0.0.1:0".parse()?, config).await?;
            sim.write_kubeconfig(&kubeconfig)?;
            info!(url = %sim.url(), kubeconfig = %kubeconfig.display(), "simulated cluster started");
            Some(sim)
        }
    };
    // The functions' own wiring, on the resources just created.
    settings.table.clone_from(&created.table);
    settings.queue_table.clone_from(&created.queue_table);
    settings.event_bus.clone_from(&created.bus);
    let deployment = Deployment::connect(settings, &sdk, "dev").await?;
    let settings = &deployment.settings;
    let submitter = deployment.submitter();
    // Short watch windows, so each change is shown within a couple of seconds; never
    // longer than half a Kubernetes call's deadline, or a quiet watch would be cut.
    let window = FOLLOW_WINDOW.min(settings.kube_timeout / 2);
    let reconciler =
        Reconciler::new(deployment.attempts(), settings.reconcile.thresholds.clone(), settings.concurrency)
            .with_follow_window(window);

    // The console, on the same resources, as `podbridge console` would serve it from a
    // shell that sourced the env file.
    let console = if args.no_console {
        None
    } else {
        let flags = connect::Flags {
            table: Some(created.table.clone()),
            queue_table: Some(created.queue_table.clone()),
            queue_url: Some(created.queue_url.clone()),
            bus: Some(created.bus.clone()),
            endpoint_url: Some(endpoint.clone()),
        };
        let target = connect::Target::from_lookup(&flags, |_| None);
        let aws = connect::Aws::new(sdk.clone(), format!("{endpoint} (local stack)"));
        let options = crate::console::Options { read_only: false, stuck_after: Duration::from_secs(600) };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.console_port)).await.with_context(|| {
            format!(
                "the console cannot listen on 127.0.0.1:{} (choose another with --console-port, or --no-console)",
                args.console_port
            )
        })?;
        let url = format!("http://{}", listener.local_addr()?);
        Some((listener, crate::console::Console::new(&target, aws, options)?, url))
    };
    let console_url = console.as_ref().map(|(_, _, url)| url.clone());

    let env_file = args.dir.join("env");
    let region = sdk.region().map_or_else(|| DEFAULT_REGION.to_owned(), ToString::to_string);
    let exports = exports(&endpoint, &created, &kubeconfig, &region, console_url.as_deref());
    write_atomically(&env_file, &exports)?;
    println!("{exports}");
    info!(env = %env_file.display(), "the local stack is ready; `source {}` in another shell to use the CLI", env_file.display());
    if let Some(url) = &console_url {
        info!(url = %url, "the console is served at {url}");
    }
    let console = async {
        match console {
            Some((listener, console, _)) => {
                if let Err(e) = crate::console::serve(listener, console, &[], std::future::pending()).await {
                    error!(error = %format!("{e:#}"), "the console stopped");
                }
                std::future::pending::<()>().await;
            }
            None => std::future::pending::<()>().await,
        }
    };

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let namespaces = &settings.guardrails.namespaces;
    let every = Duration::from_secs(args.reconcile_every.max(1));
    let store = &deployment.store;
    tokio::select! {
        () = dispatch_loop(&submitter, &sqs, &created.queue_url, args.batch_size, settings.concurrency) => {}
        () = trigger_loop(&submitter, &sqs, &created.trigger_queue_url) => {}
        () = reconcile_loop(&reconciler, store, namespaces, every) => {}
        () = show_changes(&sqs, &created.changes_queue_url) => {}
        () = console => {}
        () = shutdown_signal() => info!("stopping"),
    }
    // What was recorded since the last flush is announced (and shown) before leaving.
    // The changes queue's short visibility timeout brings back a batch whose receive
    // was cut off by the signal.
    flush(store).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), show_changes(&sqs, &created.changes_queue_url)).await;
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

/// The env file's `export` lines: what the CLI reads, and what any AWS client reads
/// (the AWS CLI and boto3 take the region from `AWS_DEFAULT_REGION`, the SDKs from
/// `AWS_REGION`, and all of them `AWS_ENDPOINT_URL`), so each works in a shell that
/// sourced it.
fn exports(
    endpoint: &str,
    created: &resources::Resources,
    kubeconfig: &Path,
    region: &str,
    console_url: Option<&str>,
) -> String {
    let kubeconfig = std::fs::canonicalize(kubeconfig).unwrap_or_else(|_| kubeconfig.to_path_buf());
    [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "dev".into())),
        ("AWS_SECRET_ACCESS_KEY", std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "dev".into())),
        (var::TABLE, created.table.clone()),
        (var::QUEUE_TABLE, created.queue_table.clone()),
        (connect::QUEUE_URL_VAR, created.queue_url.clone()),
        (connect::DLQ_URL_VAR, created.dlq_url.clone()),
        (var::EVENT_BUS, created.bus.clone()),
        // Where the trigger's rule delivers, and what `dev` feeds the trigger from: a
        // schedule's tick sent here is what a schedule would invoke the trigger with.
        (connect::TRIGGER_QUEUE_URL_VAR, created.trigger_queue_url.clone()),
        (connect::TRIGGER_DLQ_URL_VAR, created.trigger_dlq_url.clone()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ]
    .into_iter()
    .chain(console_url.map(|url| (connect::CONSOLE_URL_VAR, url.to_owned())))
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
    submitter: &Submitter<FunctionStore, KubeCluster>,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch: i32,
    concurrency: usize,
) {
    poll::forever(sqs, queue_url, batch, async |event: SqsEvent| {
        let response = dispatch::handle(submitter, event, concurrency).await;
        flush(submitter.store()).await;
        response
    })
    .await;
}

/// The trigger's rule delivers into a queue; each event is one invocation, as
/// EventBridge invokes the function once per event. A failed invocation leaves the event
/// to come back (EventBridge's retries), and to the dead-letter queue in the end.
async fn trigger_loop(submitter: &Submitter<FunctionStore, KubeCluster>, sqs: &aws_sdk_sqs::Client, queue_url: &str) {
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
async fn reconcile_loop(
    reconciler: &Reconciler<FunctionStore, KubeCluster>,
    store: &FunctionStore,
    namespaces: &[String],
    every: Duration,
) {
    loop {
        let until = tokio::time::Instant::now() + every;
        if let Err(e) = reconciler.run(namespaces, until, async |_| flush(store).await).await {
            error!(error = %podbridge::error::error_chain(&e), "the reconcile pass failed; the next one tries again");
        }
        tokio::time::sleep_until(until).await;
    }
}

async fn flush(store: &FunctionStore) {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The settings `podbridge dev` reads from `env`, with its local thresholds.
    fn thresholds(env: &[(&str, &str)]) -> Thresholds {
        let map: HashMap<&str, &str> = env.iter().copied().collect();
        let local = Local::from_lookup(
            |name| map.get(name).map(|v| (*v).to_owned()),
            &Overrides::default(),
            &[],
            &local_threshold_defaults(),
        )
        .unwrap();
        local.settings.reconcile.thresholds
    }

    #[test]
    fn each_local_threshold_applies_unless_its_variable_is_set() {
        let local = thresholds(&[]);
        let deployed = Thresholds::default();
        for threshold in &LOCAL_THRESHOLDS {
            let seconds: u64 = threshold.seconds.parse().unwrap();
            assert_eq!((threshold.field)(&local), Duration::from_secs(seconds), "{}", threshold.variable);
            assert!((threshold.field)(&local) < (threshold.field)(&deployed), "{} is shorter", threshold.variable);
            // The variable wins, and a blank one counts as unset.
            let set = thresholds(&[(threshold.variable, "7")]);
            assert_eq!((threshold.field)(&set), Duration::from_secs(7), "{}", threshold.variable);
            let blank = thresholds(&[(threshold.variable, " ")]);
            assert_eq!((threshold.field)(&blank), Duration::from_secs(seconds), "{}", threshold.variable);
        }
    }

    #[test]
    fn the_help_states_each_local_threshold_and_the_deployments() {
        let help = thresholds_help();
        for threshold in &LOCAL_THRESHOLDS {
            let deployed = (threshold.field)(&Thresholds::default()).as_secs();
            let line = format!("  {}={} (deployment default: {deployed})\n", threshold.variable, threshold.seconds);
            assert!(help.contains(&line), "{line:?} in\n{help}");
        }
    }

    #[test]
    fn the_readme_states_each_local_threshold_as_it_is() {
        let readme = include_str!("../../../README.md");
        for threshold in &LOCAL_THRESHOLDS {
            let deployed = (threshold.field)(&Thresholds::default()).as_secs();
            let row = format!("| `{}` | {} | {deployed} |", threshold.variable, threshold.seconds);
            assert!(readme.contains(&row), "README.md has no row starting {row:?}");
        }
    }

    #[test]
    fn the_env_file_serves_any_aws_client_and_names_the_trigger_queue() {
        let created = resources::Resources {
            table: "t".into(),
            queue_table: "t-queues".into(),
            queue_url: "http://q/jobs".into(),
            dlq_url: "http://q/jobs-dlq".into(),
            bus: "bus".into(),
            trigger_queue_url: "http://q/trigger".into(),
            trigger_dlq_url: "http://q/trigger-dlq".into(),
            changes_queue_url: "http://q/changes".into(),
        };
        let text = exports(
            "http://127.0.0.1:5000",
            &created,
            Path::new("/nowhere/kubeconfig"),
            "eu-west-1",
            Some("http://127.0.0.1:8077"),
        );
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "export AWS_ENDPOINT_URL='http://127.0.0.1:5000'",
            "export AWS_REGION='eu-west-1'",
            "export AWS_DEFAULT_REGION='eu-west-1'",
            "export PODBRIDGE_TABLE='t'",
            "export PODBRIDGE_QUEUE_TABLE='t-queues'",
            "export PODBRIDGE_QUEUE_URL='http://q/jobs'",
            "export PODBRIDGE_TRIGGER_QUEUE_URL='http://q/trigger'",
            "export PODBRIDGE_TRIGGER_DLQ_URL='http://q/trigger-dlq'",
            "export KUBECONFIG='/nowhere/kubeconfig'",
            "export PODBRIDGE_CONSOLE_URL='http://127.0.0.1:8077'",
        ] {
            assert!(lines.contains(&line), "{line} in\n{text}");
        }
    }
}
