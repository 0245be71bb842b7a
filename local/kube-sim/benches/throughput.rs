//! kube-sim at scale: pod creation rate, GET and LIST rates, and memory, with 100k
//! pods stored. Prints one `BENCH <name> <value> <unit>` line per figure.
//!
//! `cargo bench -p kube-sim --bench throughput [-- PODS]` (default 100000). Under
//! `cargo test` (no `--bench` argument) it runs as a smoke test with 500 pods.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, NodeShape, SimConfig};
use serde_json::json;

const CONCURRENCY: usize = 32;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn job_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("job-{i:06}-attempt-1"),
            "labels": { "app.kubernetes.io/managed-by": "podbridge", "podbridge.dev/job-id": format!("job-{i:06}"), "shard": format!("s{}", i % 100) },
            "annotations": { "kube-sim/behavior": "run=forever" }
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "registry.example.com/batch/worker:1.4.2", "command": ["/bin/worker"], "args": ["--job", format!("job-{i:06}")],
                "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "cpu": "10m", "memory": "16Mi" } } }]
        }
    }))
    .unwrap()
}

/// Runs `count` calls of `op` with `CONCURRENCY` in flight; returns calls per second.
async fn rate<F, Fut>(count: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    futures::stream::iter(0..count).for_each_concurrent(CONCURRENCY, op).await;
    count as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // Debug-build smoke figures must never read like benchmark results.
    let tag = if benchmarking { "BENCH" } else { "smoke:" };
    let default_pods = if benchmarking { 100_000 } else { 500 };
    let pods_wanted: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default_pods);
    let config = SimConfig {
        nodes: 10,
        node_shape: NodeShape { cpu_millis: 1_000_000, memory_bytes: 1 << 44, max_pods: 1_000_000 },
        ..SimConfig::default()
    };
    let baseline = rss_bytes();
    let sim = KubeSim::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "podbridge-jobs");

    let created = rate(pods_wanted, |i| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &job_pod(i)).await.expect("create");
        }
    })
    .await;
    println!("{tag} kube_sim_create_rate {created:.0} req/s");
    assert_eq!(sim.created_pods().len(), pods_wanted);

    // Let every pod reach Running, so the stored objects carry full statuses.
    let mut all_running = false;
    for _ in 0..600 {
        let not_running = pods.list(&ListParams::default().fields("status.phase!=Running").limit(1)).await.unwrap();
        if not_running.items.is_empty() {
            all_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all_running, "every pod reaches Running within a minute");
    let rss = rss_bytes().saturating_sub(baseline);
    println!("{tag} kube_sim_memory_per_pod {} bytes", rss / pods_wanted.max(1) as u64);
    println!("{tag} kube_sim_rss_with_pods {:.0} MiB", rss as f64 / (1 << 20) as f64);

    let gets = rate(20_000, |i| {
        let pods = pods.clone();
        async move {
            pods.get(&format!("job-{:06}-attempt-1", i % pods_wanted)).await.expect("get");
        }
    })
    .await;
    println!("{tag} kube_sim_get_rate {gets:.0} req/s");

    let selected = rate(200, |i| {
        let pods = pods.clone();
        async move {
            let selector = format!("podbridge.dev/job-id=job-{:06}", i % pods_wanted);
            let list = pods.list(&ListParams::default().labels(&selector)).await.expect("list");
            assert_eq!(list.items.len(), 1);
        }
    })
    .await;
    println!("{tag} kube_sim_selective_list_rate {selected:.0} req/s");

    // A reconciler's pass: every managed pod, 500 per page.
    let started = Instant::now();
    let mut params = ListParams::default().labels("app.kubernetes.io/managed-by=podbridge").limit(500);
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = pods.list(&params).await.unwrap();
        seen += page.items.len();
        pages += 1;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, pods_wanted);
    println!("{tag} kube_sim_full_list_pages {pages} pages");
    println!("{tag} kube_sim_full_list_time {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
}
