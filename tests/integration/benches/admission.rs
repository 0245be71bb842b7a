//! Admission against the local stack (`tests/stack.sh run -- cargo bench -p podbridge-tests
//! --bench admission`): moto for DynamoDB, kube-sim for the cluster. Prints `BENCH <name>
//! <value> <unit>` lines:
//!
//! - `admission_ddb_requests_per_job_unlimited` and `_limited`: DynamoDB requests of one
//!   submission (recorded, admitted, pod created, recorded as dispatched), counted at a
//!   proxy in front of moto, into a queue with no limit and into one with a limit and
//!   room; `admission_extra_ddb_requests_per_job` is their difference;
//! - `admission_cpu_per_job_ms_unlimited` and `_limited`: this process's CPU per
//!   submission (the handler and the AWS SDK; the cluster is the stack's own process);
//! - `admission_latency_p50_s`, `admission_latency_p95_s`: with the reconciler following
//!   the pods, from a pod's end (kube-sim's record) to the creation of the pod of the
//!   waiting job admitted into its slot, slots and admissions paired in order;
//! - `admission_latency_steady_p50_s`, `admission_latency_steady_p95_s` (over
//!   `admission_latency_steady_jobs`): the same for the slots freed once every job was
//!   submitted, when the store no longer serves the burst of submissions too;
//! - `admission_latency_ddb_wait_ms`: meanwhile, the mean time DynamoDB (moto) took to
//!   begin an answer, queueing included, at a proxy in front of it: what each of the
//!   chain's sequential requests costs here;
//! - `admission_spike_jobs`, `admission_spike_s`, `admission_spike_ideal_s` and
//!   `admission_spike_vs_ideal`: a spike of short jobs into a cluster that runs 50 at
//!   once (a limit of 50 across queues), submitted ten at a time while the reconciler
//!   runs; total time from the first submission to the last job's end, against the
//!   ideal (total run time / 50). A spike still running at five times the ideal is
//!   stopped there: `admission_spike_ended_jobs` says how many had ended, and the ratio
//!   is projected from their rate (unit `ratio_projected`);
//! - `admission_spike_ddb_requests_per_job` and `admission_spike_ddb_requests_per_s`:
//!   DynamoDB requests the spike took per job, and how many moto answered per second;
//!   the spike's ideal needs 10 jobs/s, so requests per job × 10 against the second
//!   figure says whether the store here can serve it at all.
//!
//! Under `cargo test` (no `--bench` argument) it runs small, as a smoke test.
//! `ADMISSION_SPIKE_JOBS=N` changes the spike's size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube_sim::{NodeShape, SimConfig, Timings};
use podbridge::services::Outcome;
use podbridge::store::{QueueStore, active_pages};
use podbridge_core::admission::{Limits, Queue};
use podbridge_core::record::Source;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::Guardrails;
use podbridge_tests::{World, cpu_time, unique_name};
use serde_json::json;

const NAMESPACE: &str = "bench";

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec![NAMESPACE.into()],
        image_prefixes: vec!["registry.example.com/".into()],
        default_cpu_millis: 100,
        ..Guardrails::default()
    }
}

fn body(id: &str, queue: &str, run: &str) -> String {
    json!({ "version": 1, "job": { "id": id, "queue": queue, "image": "registry.example.com/bench:1",
        "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": format!("run={run}") }] } })
    .to_string()
}

async fn submit(world: &World, body: &str) -> Outcome {
    world
        .submitter
        .handle_message(body.as_bytes(), Source::Direct, &Sender::Operator, &unique_name("m"))
        .await
        .expect("recorded")
}

fn cluster(nodes: usize, pods_per_node: i64) -> SimConfig {
    SimConfig {
        namespaces: vec![NAMESPACE.into()],
        nodes,
        node_shape: NodeShape { cpu_millis: 100 * pods_per_node, memory_bytes: 64 << 30, max_pods: 110 },
        timings: Timings {
            schedule: Duration::from_millis(20),
            start: Duration::from_millis(50),
            ..Timings::default()
        },
        ..SimConfig::default()
    }
}

fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1]
}

/// Requests and CPU per submission into `queue`, `jobs` of them one after another.
async fn per_job(world: &World, queue: &str, jobs: usize) -> (f64, f64) {
    let run = unique_name(queue);
    let proxy = world.proxy();
    // One submission first, so the queues are read and cached as in a warm function.
    submit(world, &body(&format!("{run}-warm"), queue, "100ms")).await;
    let (answers, cpu) = (proxy.stats().answers, cpu_time());
    for i in 0..jobs {
        let outcome = submit(world, &body(&format!("{run}-{i}"), queue, "100ms")).await;
        assert!(matches!(outcome, Outcome::Dispatched { .. }), "{outcome:?}");
    }
    let requests = (proxy.stats().answers - answers) as f64 / jobs as f64;
    let cpu_ms = (cpu_time() - cpu).as_secs_f64() * 1000.0 / jobs as f64;
    (requests, cpu_ms)
}

/// Runs the reconciler as its schedule would until `done`.
async fn reconcile_while(world: &World, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        let _ = world.reconciler.run(&[NAMESPACE.to_owned()], until, async |_| {}).await;
    }
}

/// What a spike took.
struct Spike {
    /// From the first submission to the last job's end (or the limit).
    took: Duration,
    /// Jobs that had ended.
    ended: usize,
    /// When the last submission was recorded.
    submitted_at: jiff::Timestamp,
}

/// Submits every body, ten at a time, and waits until every job has ended or `limit`
/// has passed, the reconciler running all along.
async fn spike(world: &World, bodies: &[String], ids: &[String], limit: Duration) -> Spike {
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let store = world.direct_store();
    let mut ended = 0;
    let mut submitted_at = jiff::Timestamp::now();
    let ((), ()) = tokio::join!(
        async {
            futures::stream::iter(bodies)
                .for_each_concurrent(10, |body| async move {
                    submit(world, body).await;
                })
                .await;
            submitted_at = jiff::Timestamp::now();
            // Ended when every job's pod has ended (kube-sim's own record: watching it
            // loads nothing the spike needs), then when none of the jobs is in the
            // active-jobs index any more (a Query a page, which in moto reads the whole
            // table: made only once the pods are done).
            let ours: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            let job_of = |pod: &str| pod.rsplit_once('-').map_or(pod.to_owned(), |(job, _)| job.to_owned());
            loop {
                let pods: Vec<_> = world.sim().created_pods();
                let mine: Vec<_> = pods.iter().filter(|p| ours.contains(job_of(&p.name).as_str())).collect();
                let finished: std::collections::BTreeSet<String> =
                    mine.iter().filter(|p| p.ended_at.is_some()).map(|p| job_of(&p.name)).collect();
                ended = finished.len();
                let running = mine.iter().any(|p| p.ended_at.is_none());
                if (ended == ids.len() && !running) || started.elapsed() >= limit {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            loop {
                let pages: Vec<_> = active_pages(&store, 500).try_collect().await.unwrap();
                let active = pages.iter().flat_map(|p| &p.jobs).filter(|r| ours.contains(r.job_id.as_str())).count();
                if active == 0 || started.elapsed() >= limit {
                    if active > 0 {
                        ended = ended.min(ids.len() - active);
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done.store(true, Ordering::Release);
        },
        reconcile_while(world, &done),
    );
    Spike { took: started.elapsed(), ended, submitted_at }
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let tag = if benchmarking { "BENCH" } else { "smoke:" };

    // Requests and CPU per job, on the stack's own kube-sim (another process).
    let world = World::builder()
        .name("admission-cost")
        .guardrails(guardrails())
        .fresh_namespace()
        .latency_proxy(1)
        .build()
        .await;
    let limited = Queue { limits: Limits { jobs: Some(100_000), ..Limits::NONE }, ..Queue::unlimited("limited") };
    world.direct_store().put_queue(&limited).await.unwrap();
    let jobs = if benchmarking { 100 } else { 5 };
    let (unlimited_requests, unlimited_cpu) = per_job(&world, "default", jobs).await;
    let (limited_requests, limited_cpu) = per_job(&world, "limited", jobs).await;
    println!("{tag} admission_ddb_requests_per_job_unlimited {unlimited_requests:.2} requests");
    println!("{tag} admission_ddb_requests_per_job_limited {limited_requests:.2} requests");
    println!("{tag} admission_extra_ddb_requests_per_job {:.2} requests", limited_requests - unlimited_requests);
    println!("{tag} admission_cpu_per_job_ms_unlimited {unlimited_cpu:.2} ms");
    println!("{tag} admission_cpu_per_job_ms_limited {limited_cpu:.2} ms");
    drop(world);

    // Admission latency: a queue of 10, three times as many jobs of a second each.
    let world = World::builder()
        .name("admission-latency")
        .guardrails(guardrails())
        .own_cluster(cluster(2, 10))
        .follow_window(Duration::from_secs(5))
        .reconcile_concurrency(16)
        .latency_proxy(2)
        .build()
        .await;
    let ten = Queue { limits: Limits { jobs: Some(10), ..Limits::NONE }, ..Queue::unlimited("ten") };
    world.direct_store().put_queue(&ten).await.unwrap();
    let run = unique_name("l");
    let count = if benchmarking { 60 } else { 15 };
    let ids: Vec<String> = (0..count).map(|i| format!("{run}-{i}")).collect();
    let bodies: Vec<String> = ids.iter().map(|id| body(id, "ten", "1s")).collect();
    let before = world.proxy().stats();
    let submitted_at = spike(&world, &bodies, &ids, Duration::MAX).await.submitted_at;
    let ddb_wait = world.proxy().stats().mean_wait_since(&before);
    let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
    let pods: Vec<_> = world.sim().created_pods().into_iter().filter(|p| p.name.starts_with(&run)).collect();
    let mut created: Vec<jiff::Timestamp> = pods.iter().map(|p| at(&p.created_at)).collect();
    let mut ended: Vec<jiff::Timestamp> = pods.iter().filter_map(|p| p.ended_at.as_deref().map(at)).collect();
    created.sort();
    ended.sort();
    // The first ten were admitted at submission; each later one took the slot of the
    // n-th pod to end.
    let pairs: Vec<(jiff::Timestamp, f64)> = created
        .iter()
        .skip(10)
        .zip(&ended)
        .map(|(admitted, freed)| (*freed, admitted.duration_since(*freed).as_secs_f64().max(0.0)))
        .collect();
    let latencies: Vec<f64> = pairs.iter().map(|(_, latency)| *latency).collect();
    println!("{tag} admission_latency_jobs {} jobs", latencies.len());
    println!("{tag} admission_latency_p50_s {:.3} s", percentile(latencies.clone(), 0.50));
    println!("{tag} admission_latency_p95_s {:.3} s", percentile(latencies, 0.95));
    // The same once every job is submitted: the store no longer busy with the burst of
    // submissions that the spike's first slots free into.
    let steady: Vec<f64> =
        pairs.iter().filter(|(freed, _)| *freed >= submitted_at).map(|(_, latency)| *latency).collect();
    println!("{tag} admission_latency_steady_jobs {} jobs", steady.len());
    if !steady.is_empty() {
        println!("{tag} admission_latency_steady_p50_s {:.3} s", percentile(steady.clone(), 0.50));
        println!("{tag} admission_latency_steady_p95_s {:.3} s", percentile(steady, 0.95));
    }
    println!("{tag} admission_latency_ddb_wait_ms {:.1} ms", ddb_wait.as_secs_f64() * 1000.0);
    drop(world);

    // The spike: a cluster of five nodes that run ten pods each, a limit of 50.
    let (count, run_s) = if benchmarking { (2_000, 5) } else { (60, 1) };
    // ADMISSION_SPIKE_JOBS sizes the spike for a quicker look (the figures in
    // docs/PERFORMANCE.md are of the default).
    let count: usize = std::env::var("ADMISSION_SPIKE_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(count);
    let world = World::builder()
        .name("admission-spike")
        .guardrails(guardrails())
        .own_cluster(cluster(5, 10))
        .admission(Limits { jobs: Some(50), ..Limits::NONE }, None)
        .follow_window(Duration::from_secs(5))
        .reconcile_concurrency(16)
        .latency_proxy(3)
        .build()
        .await;
    let run = unique_name("s");
    let ids: Vec<String> = (0..count).map(|i| format!("{run}-{i}")).collect();
    let bodies: Vec<String> = ids.iter().map(|id| body(id, "default", &format!("{run_s}s"))).collect();
    let ideal = (count * run_s) as f64 / 50.0;
    let before = world.proxy().stats();
    // The smoke test runs its small spike to the end (and fails if it cannot within
    // ten minutes).
    let limit = if benchmarking { Duration::from_secs_f64(ideal * 5.0) } else { Duration::from_secs(600) };
    let Spike { took, ended, .. } = spike(&world, &bodies, &ids, limit).await;
    let took = took.as_secs_f64();
    let requests = world.proxy().stats().answers - before.answers;
    assert!(benchmarking || ended == count, "the smoke spike ended {ended} of its {count} jobs in ten minutes");
    let most = podbridge_tests::most_at_once(world.sim(), |p| p.name.starts_with(&run));
    assert!(most <= 50, "the cluster held {most} of the spike's pods at once");
    println!("{tag} admission_spike_jobs {count} jobs");
    println!("{tag} admission_spike_s {took:.1} s");
    println!("{tag} admission_spike_ideal_s {ideal:.1} s");
    if ended == count {
        println!("{tag} admission_spike_vs_ideal {:.2} ratio", took / ideal);
    } else {
        println!("{tag} admission_spike_ended_jobs {ended} jobs");
        let projected = took * count as f64 / ended.max(1) as f64;
        println!("{tag} admission_spike_vs_ideal {:.2} ratio_projected", projected / ideal);
    }
    println!("{tag} admission_spike_ddb_requests_per_job {:.1} requests", requests as f64 / ended.max(1) as f64);
    println!("{tag} admission_spike_ddb_requests_per_s {:.1} requests/s", requests as f64 / took);
}
