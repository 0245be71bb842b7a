//! `kube-sim`: runs a simulated Kubernetes API server in the foreground until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_sim::units::{parse_duration, parse_quantity};
use kube_sim::{Autoscaler, ErrorFault, Faults, KubeSim, NodeShape, SimConfig, Timings};

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// A run time, or `forever`.
#[derive(Debug, Clone, Copy)]
struct RunTime(Option<Duration>);

fn run_time(text: &str) -> Result<RunTime, String> {
    if text == "forever" { Ok(RunTime(None)) } else { parse_duration(text).map(|d| RunTime(Some(d))) }
}

fn cpu(text: &str) -> Result<i64, String> {
    parse_quantity(text).map(|v| (v * 1000.0).round() as i64)
}

fn memory(text: &str) -> Result<i64, String> {
    parse_quantity(text).map(|v| v.round() as i64)
}

/// A simulated Kubernetes API server over HTTPS.
///
/// Pods choose their fate with the annotation `kube-sim/behavior` (or the env var
/// KUBE_SIM_BEHAVIOR of their first container), e.g. `run=2s,exit=3`, `pull=fail`,
/// `oom`, `run=forever`. Faults change at runtime through PUT /kube-sim/faults.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig, once the server accepts connections.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Bearer token clients must present (generated when absent).
    #[arg(long, env = "KUBE_SIM_TOKEN")]
    token: Option<String>,
    /// Namespaces that exist at start (repeatable); `default`, `kube-system` and
    /// `podbridge-jobs` always do.
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Restrict the token to these namespaces (repeatable): 403 anywhere else.
    #[arg(long = "allow-namespace")]
    allowed_namespaces: Vec<String>,
    /// Nodes at start.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Allocatable CPU per node.
    #[arg(long, default_value = "4", value_parser = cpu)]
    node_cpu: i64,
    /// Allocatable memory per node.
    #[arg(long, default_value = "16Gi", value_parser = memory)]
    node_memory: i64,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    node_max_pods: i64,
    /// Add nodes (of the same size) for unschedulable pods after this delay, and
    /// remove them once idle.
    #[arg(long, value_parser = duration)]
    autoscaler_delay: Option<Duration>,
    /// How long an added node stays idle before it is removed.
    #[arg(long, default_value = "30s", value_parser = duration)]
    scale_down_idle: Duration,
    /// Most nodes the autoscaler adds.
    #[arg(long, default_value_t = 10)]
    autoscaler_max_nodes: usize,
    #[arg(long, default_value = "10ms", value_parser = duration)]
    schedule_delay: Duration,
    #[arg(long, default_value = "20ms", value_parser = duration)]
    start_delay: Duration,
    #[arg(long, default_value = "50ms", value_parser = duration)]
    pull_delay: Duration,
    #[arg(long, default_value = "500ms", value_parser = duration)]
    pull_backoff: Duration,
    /// How long containers run unless they say otherwise (`forever` for until killed).
    #[arg(long, default_value = "1s", value_parser = run_time)]
    default_run: RunTime,
    /// How long a container takes to exit after SIGTERM.
    #[arg(long, default_value = "100ms", value_parser = duration)]
    termination_delay: Duration,
    /// How long the pod garbage collector and the taint manager wait.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pod_gc_delay: Duration,
    /// Latency added to every resource request.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    latency: Duration,
    /// Extra random latency, up to this much.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    jitter: Duration,
    /// Error responses to inject: VERB=RATE:CODE, e.g. create=0.1:503 (repeatable).
    #[arg(long = "error")]
    errors: Vec<ErrorFault>,
    /// Share of requests whose connection is dropped with no response.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Retry-After of injected 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after: u32,
    /// Changes a watch can resume from before it gets 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Events kept.
    #[arg(long, default_value_t = 100_000)]
    max_events: usize,
}

impl Args {
    fn config(self) -> SimConfig {
        let defaults = SimConfig::default();
        let mut namespaces = defaults.namespaces;
        for namespace in self.namespaces {
            if !namespaces.contains(&namespace) {
                namespaces.push(namespace);
            }
        }
        let shape =
            NodeShape { cpu_millis: self.node_cpu, memory_bytes: self.node_memory, max_pods: self.node_max_pods };
        SimConfig {
            namespaces,
            token: self.token,
            user: defaults.user,
            allowed_namespaces: (!self.allowed_namespaces.is_empty()).then_some(self.allowed_namespaces),
            nodes: self.nodes,
            node_shape: shape,
            autoscaler: self.autoscaler_delay.map(|delay| Autoscaler {
                scale_up_delay: delay,
                scale_down_idle: self.scale_down_idle,
                max_nodes: self.autoscaler_max_nodes,
                shape,
            }),
            timings: Timings {
                schedule: self.schedule_delay,
                start: self.start_delay,
                pull: self.pull_delay,
                pull_backoff: self.pull_backoff,
                run: self.default_run.0,
                termination: self.termination_delay,
                pod_gc: self.pod_gc_delay,
            },
            faults: Faults {
                latency_ms: self.latency.as_millis() as u64,
                jitter_ms: self.jitter.as_millis() as u64,
                drop_rate: self.drop_rate,
                errors: self.errors,
                retry_after_seconds: self.retry_after,
            },
            watch_history: self.watch_history,
            max_events: self.max_events,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kubeconfig = args.kubeconfig.clone();
    let sim = KubeSim::start(args.listen, args.config()).await.context("starting kube-sim")?;
    sim.write_kubeconfig(&kubeconfig).with_context(|| format!("writing the kubeconfig to {}", kubeconfig.display()))?;
    tracing::info!(url = %sim.url(), kubeconfig = %kubeconfig.display(), "kube-sim is serving");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
