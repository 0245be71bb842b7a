//! The cost of a reconcile pass as active jobs grow, against the local stack
//! (`tests/stack.sh run -- cargo bench -p podbridge-tests --bench reconcile_pass`):
//! moto for DynamoDB, a release kube-sim in this process with room for every pod. N
//! jobs are dispatched and running, then a steady pass (nothing changed) is measured.
//! Prints, for N = 1,000 and 10,000 (or the sizes in `RECONCILE_JOBS`, e.g.
//! `RECONCILE_JOBS=50000`; moto answers each index page in time growing with the table,
//! so 50,000 takes most of an hour):
//!
//! - `reconcile_<N>_k8s_requests`: LIST pages read from the Kubernetes API;
//! - `reconcile_<N>_ddb_requests`: pages read from the active-jobs index;
//! - `reconcile_<N>_writes_unchanged`: writes when nothing changed (must be 0);
//! - `reconcile_<N>_wall_s`: the pass's wall time, and where it went:
//!   `reconcile_<N>_read_s` (the active-jobs index), `reconcile_<N>_list_s` (the pod
//!   LISTs) and `reconcile_<N>_act_s` (deciding about every job).
//!
//! Under `cargo test` (no `--bench` argument) it runs once with 20 jobs as a smoke test.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube_sim::{NodeShape, SimConfig};
use podbridge::store::JobStore;
use podbridge_core::record::{JobRecord, Source};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Parsed, parse_message};
use podbridge_tests::{World, unique_name};
use serde_json::json;

async fn measure(jobs: usize, tag: &str) {
    // A cluster big enough to run every job at once (the stack's has three small nodes),
    // in this process: its CPU shares the two cores with the reconciler's.
    let sim_config = SimConfig {
        nodes: 10,
        node_shape: NodeShape { cpu_millis: 1_000_000, memory_bytes: 1 << 44, max_pods: 1_000_000 },
        ..SimConfig::default()
    };
    // A namespace of its own, so pods of other runs in the cluster are not this run's
    // unclaimed pods (each of which a pass would look up).
    let world = World::builder()
        .name("reconcile")
        .own_cluster(sim_config)
        .fresh_namespace()
        .kube_timeout(Duration::from_secs(30))
        .reconcile_concurrency(16)
        .build()
        .await;
    let (submitter, guardrails) = (&world.submitter, world.submitter.guardrails());
    let run = unique_name("r");

    // N jobs recorded and dispatched, their pods running for good.
    futures::stream::iter(0..jobs)
        .for_each_concurrent(16, |i| {
            let run = &run;
            async move {
                let id = format!("{run}-{i}");
                let body = json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/bench:1",
                    "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=forever" }] } });
                let Ok(Parsed::Job(job)) = parse_message(body.to_string().as_bytes(), "x", guardrails) else {
                    panic!("valid")
                };
                submitter
                    .submit(*job, Source::Direct, &podbridge_core::tenancy::Sender::Operator, "x")
                    .await
                    .expect("dispatched");
            }
        })
        .await;
    let reconciler = &world.reconciler;
    // The first pass records every pod as running; the next is the steady state.
    for _ in 0..30 {
        let report = reconciler.pass(jiff::Timestamp::now()).await.expect("pass");
        if report.recorded.is_empty() && report.active_jobs == jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let report = reconciler.pass(jiff::Timestamp::now()).await.expect("pass");
    let wall = started.elapsed();
    assert_eq!(report.active_jobs, jobs);
    let executing = world.store.get(&format!("{run}-0")).await.unwrap().map(|r: JobRecord| r.state);
    assert_eq!(executing, Some(JobState::Executing));
    println!("{tag} reconcile_{jobs}_k8s_requests {} requests", report.kube_list_requests);
    println!("{tag} reconcile_{jobs}_ddb_requests {} requests", report.store_pages);
    println!("{tag} reconcile_{jobs}_writes_unchanged {} writes", report.writes);
    println!("{tag} reconcile_{jobs}_wall_s {:.2} s", wall.as_secs_f64());
    println!("{tag} reconcile_{jobs}_read_s {:.2} s", report.read_ms as f64 / 1000.0);
    println!("{tag} reconcile_{jobs}_list_s {:.2} s", report.list_ms as f64 / 1000.0);
    println!("{tag} reconcile_{jobs}_act_s {:.2} s", report.act_ms as f64 / 1000.0);
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let tag = if benchmarking { "BENCH" } else { "smoke:" };
    let asked: Option<Vec<usize>> = std::env::var("RECONCILE_JOBS").ok().map(|sizes| {
        sizes.split(',').map(|n| n.trim().parse().expect("RECONCILE_JOBS: numbers, comma-separated")).collect()
    });
    let sizes = match (benchmarking, asked) {
        (true, Some(sizes)) => sizes,
        (true, None) => vec![1_000, 10_000],
        (false, _) => vec![20],
    };
    for jobs in sizes {
        measure(jobs, tag).await;
    }
}
