//! How fast a pod's phase change reaches its job record while the reconciler follows the
//! pods (`tests/stack.sh run -- cargo bench -p podbridge-tests --bench state_latency`):
//! moto for DynamoDB, a kube-sim in this process. Jobs are dispatched with run times
//! spread over a few seconds, one reconcile invocation runs (a pass, then the watch),
//! and an observer watching the same pods notes when each one's phase turns
//! `Succeeded`. The latency of a job is from that moment to the time its record gives
//! for `succeeded` (taken just before the conditional write). Prints:
//!
//! - `state_latency_p50_s`, `state_latency_p95_s`, `state_latency_max_s`;
//! - `state_latency_jobs`: how many jobs the figures cover.
//!
//! Under `cargo test` (no `--bench` argument) it runs once with 4 jobs as a smoke test.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::api::{WatchEvent, WatchParams};
use kube_sim::{SimConfig, Timings};
use podbridge::store::JobStore;
use podbridge_core::pod::attempt_of;
use podbridge_core::record::Source;
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, Parsed, parse_message};
use podbridge_tests::{World, unique_name};
use serde_json::json;

const NAMESPACE: &str = "podbridge-jobs";

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let tag = if benchmarking { "BENCH" } else { "smoke:" };
    let jobs = if benchmarking { 60 } else { 4 };
    let config = SimConfig {
        namespaces: vec![NAMESPACE.into()],
        timings: Timings {
            schedule: Duration::from_millis(20),
            start: Duration::from_millis(50),
            ..Timings::default()
        },
        ..SimConfig::default()
    };
    let guardrails = Guardrails {
        namespaces: vec![NAMESPACE.into()],
        image_prefixes: vec!["registry.example.com/".into()],
        default_cpu_millis: 10,
        ..Guardrails::default()
    };
    let world = World::builder()
        .name("latency")
        .own_cluster(config)
        .guardrails(guardrails)
        .kube_timeout(Duration::from_secs(10))
        .reconcile_concurrency(16)
        .build()
        .await;
    let (submitter, guardrails) = (&world.submitter, world.submitter.guardrails());
    let run = unique_name("l");

    // Jobs that end one after another over the following seconds, while the watch runs.
    let ids: Vec<String> = (0..jobs).map(|i| format!("{run}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let run_ms = 1_500 + i * 4_000 / jobs;
        let body = json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/bench:1",
            "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": format!("run={run_ms}ms") }] } });
        let Ok(Parsed::Job(job)) = parse_message(body.to_string().as_bytes(), "x", guardrails) else { panic!("valid") };
        submitter
            .submit(*job, Source::Direct, &podbridge_core::tenancy::Sender::Operator, "x")
            .await
            .expect("dispatched");
    }
    let reconciler = &world.reconciler;

    // The observer: when each pod was first seen `Succeeded`.
    let seen: Mutex<HashMap<String, Timestamp>> = Mutex::default();
    let observe = async {
        let pods = world.pods_in(NAMESPACE);
        let mut events = pods.watch(&WatchParams::default().timeout(15), "0").await.expect("watch").boxed();
        while let Ok(Some(event)) = events.try_next().await {
            if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = event
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
                && let Some((job, _)) = attempt_of(&pod)
            {
                seen.lock().unwrap().entry(job.to_owned()).or_insert_with(Timestamp::now);
            }
            if seen.lock().unwrap().len() == jobs {
                break;
            }
        }
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    let namespaces = [NAMESPACE.to_owned()];
    let follow = reconciler.run(&namespaces, until, async |_| {});
    let ((_, followed), ()) = tokio::join!(async { follow.await.expect("reconcile") }, observe);

    let seen = seen.into_inner().unwrap();
    let mut latencies = Vec::new();
    for id in &ids {
        let record = world.store.get(id).await.expect("read").expect("recorded");
        assert_eq!(record.state, JobState::Succeeded, "{id} did not succeed within the window: {followed:?}");
        let (Some(seen), Some(recorded)) = (seen.get(id), record.state_times.get(&JobState::Succeeded)) else {
            panic!("{id}: no observation or no succeeded time")
        };
        latencies.push(recorded.duration_since(*seen).as_secs_f64().max(0.0));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!("{tag} state_latency_jobs {} jobs", latencies.len());
    println!("{tag} state_latency_p50_s {:.3} s", at(0.50));
    println!("{tag} state_latency_p95_s {:.3} s", at(0.95));
    println!("{tag} state_latency_max_s {:.3} s", at(1.0));
}
