//! The dispatch function's cold start and memory, on the release binary run as Lambda
//! runs it: started with Lambda's environment against a local Lambda Runtime API
//! (`podbridge_tests::runtime_api`), with DynamoDB on the stack's moto server and the
//! cluster an in-process kube-sim. Prints one `BENCH <name> <value> <unit>` line per figure:
//!
//! - `dispatch_cold_start_ms`: from just before the process is spawned to its first `GET
//!   /2018-06-01/runtime/invocation/next`, the median of the runs. That is everything
//!   `main` does before it can take work (logging, configuration, the AWS SDK config and
//!   the Kubernetes client) plus `exec` and the dynamic loader: the part of Lambda's
//!   "Init Duration" the code controls. Init makes no network call (the SDK reads
//!   credentials and region from the environment, kube reads the kubeconfig, and DynamoDB
//!   is first called by the first job), so neither moto nor kube-sim is in this figure.
//! - `dispatch_peak_rss_mb`: the process's peak resident set (`VmHWM` in
//!   `/proc/PID/status`) once its first invocation, the two-record SQS fixture (one job
//!   dispatched to a pod, one rejected, both recorded in DynamoDB), has completed; the
//!   largest over the runs, in Lambda's MB (2^20 bytes). Read from `/proc` while the
//!   function still runs, as Lambda's "Max Memory Used" is: `getrusage(RUSAGE_CHILDREN)`
//!   would need the process to exit first, and reports the maximum over every child this
//!   process has reaped, not this one's.
//!
//! `tests/stack.sh run -- cargo bench -p dispatch --bench cold_start [-- RUNS]` (default 11
//! runs). Under `cargo test` (no `--bench` argument) it runs twice on the debug binary as a
//! smoke test and prints its figures as `smoke:` lines, not `BENCH` lines.
//!
//! The binary is cargo's build for this benchmark: the release profile's code (thin LTO,
//! one codegen unit) with the bench profile's symbols and line tables, which are not
//! loaded at run time. `PODBRIDGE_DISPATCH_BIN=PATH` measures another build instead, such
//! as the stripped `cargo lambda build --release` artifact.
//!
//! Targets (docs/PERFORMANCE.md): cold start ≤ 20 ms, peak RSS ≤ 30 MB. Never asserted.

use std::path::PathBuf;
use std::time::Duration;

use kube_sim::SimConfig;
use podbridge_tests::World;
use podbridge_tests::runtime_api::{FunctionProcess, RuntimeApi, fixture, unique_job_ids};

/// The binary to measure: `PODBRIDGE_DISPATCH_BIN`, or the one cargo built for this
/// benchmark (with the benchmark's profile, so optimised under `cargo bench`).
fn dispatch_binary() -> PathBuf {
    std::env::var_os("PODBRIDGE_DISPATCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dispatch")), PathBuf::from)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let runs: usize =
        std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if benchmarking { 11 } else { 2 });

    // A fresh table on the stack's moto, for the invocation's DynamoDB calls (fails with
    // how to start the stack when it is absent), and a kube-sim of its own in this
    // process, so this benchmark's pods touch no one else's cluster. The function runs
    // with the world's environment: its table, namespace `podbridge-jobs`, images from
    // `registry.example.com/`, the kube-sim's kubeconfig and moto's endpoint.
    let world = World::builder().name("bench-jobs").own_cluster(SimConfig::default()).build().await;
    let env = world.function_env();

    let binary = dispatch_binary();
    let mut cold_starts = Vec::new();
    let mut peak_rss = 0u64;
    for _ in 0..runs {
        // A new Runtime API each run, so its first poll is this process's.
        let api = RuntimeApi::start("dispatch").await.expect("runtime API");
        let mut function = FunctionProcess::spawn(&binary, &api, &env).expect("start dispatch");
        let first_poll = function.first_poll(&api, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
        cold_starts.push(first_poll.duration_since(function.started()).as_secs_f64() * 1e3);

        let mut event = fixture("sqs-event.json");
        unique_job_ids(&mut event);
        let outcome = function.invoke(&api, &event, Duration::from_secs(30)).await.expect("invoke");
        let response = outcome.json().unwrap_or_else(|e| panic!("{e:#}; output:\n{}", function.output()));
        // A failed record would mean the measured work was not the work of a good batch.
        assert_eq!(response, fixture("sqs-response.json"), "output:\n{}", function.output());
        let rss = function.peak_rss_bytes().expect("VmHWM of the running function");
        peak_rss = peak_rss.max(rss);
        function.stop();
    }

    let prefix = if benchmarking { "BENCH" } else { "smoke:" };
    let mb = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!("{prefix} dispatch_cold_start_ms {:.1} ms", median(cold_starts.clone()));
    println!("{prefix} dispatch_peak_rss_mb {:.1} MB", mb(peak_rss));
    let all: Vec<String> = cold_starts.iter().map(|ms| format!("{ms:.1}")).collect();
    eprintln!("cold starts of {runs} runs (ms): {}; binary {}", all.join(" "), binary.display());
}
