//! Dispatch speed against the local stack (`tests/stack.sh run -- cargo bench -p
//! podbridge-tests --bench dispatch_batch`): moto for DynamoDB, the stack's kube-sim
//! (a separate process) for Kubernetes, with 20 ms of latency injected on every
//! Kubernetes request. Prints `BENCH <name> <value> <unit>` lines:
//!
//! - `dispatch_floor_ms`: one job alone, the unavoidable round trips (DynamoDB put,
//!   pod create, DynamoDB update), median of several runs;
//! - `dispatch_batch10_ms` and `dispatch_batch10_vs_floor`: a batch of 10 handled
//!   concurrently, against that floor (target ≤ 1.3);
//! - `dispatch_cpu_per_job_ms`: CPU time of this process (the handler, the AWS SDK and
//!   the kube client, TLS included) per dispatched job, latency off (target ≤ 0.5);
//! - `dispatch_spike_<N>_jobs_per_s` and `dispatch_spike_<N>_cpu_per_job_ms`: a spike of
//!   N messages (`SPIKE_MESSAGES`, default 2,000: with 10,000 queued, moto's SQS answers
//!   about one request a second) on a real (moto) queue, drained by the SQS event source mapping
//!   emulator into the handler, ten batches of ten at a time as ten concurrent Lambda
//!   invocations would; CPU here includes the emulator's receives and deletes.
//!
//! Under `cargo test` (no `--bench` argument) it runs once, small, as a smoke test.

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use podbridge_tests::{World, cpu_time, unique_name};
use serde_json::json;

fn event(prefix: &str, count: usize) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = (0..count)
        .map(|i| {
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("{prefix}-m{i}"));
            record.body = Some(
                json!({ "version": 1, "job": { "id": format!("{prefix}-{i}"), "image": "registry.example.com/bench:1", "command": ["run"] } })
                    .to_string(),
            );
            record
        })
        .collect();
    event
}

/// Sets kube-sim's injected latency through its admin endpoint.
async fn set_latency(client: &kube::Client, millis: u64) {
    let body = serde_json::to_vec(&json!({ "latencyMs": millis })).unwrap();
    let request = http::Request::put("/kube-sim/faults").header("content-type", "application/json").body(body).unwrap();
    client.request_text(request).await.expect("the stack's kube-sim takes faults");
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // Debug-build smoke figures must never read like benchmark results.
    let tag = if benchmarking { "BENCH" } else { "smoke:" };
    let (runs, cpu_batches) = if benchmarking { (7, 100) } else { (1, 2) };
    // The stack's kube-sim: a separate process, as a real API server is.
    let world = World::builder().name("bench").kube_timeout(Duration::from_secs(10)).build().await;
    let submitter = &world.submitter;
    let run = unique_name("b");

    // Warm the connections (TLS, DNS, pools) as a warm Lambda container has them.
    dispatch::handle(submitter, event(&format!("{run}-warm"), 10), 10).await;

    set_latency(&world.kube, 20).await;
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    for r in 0..runs {
        let started = Instant::now();
        let response = dispatch::handle(submitter, event(&format!("{run}-one{r}"), 1), 10).await;
        singles.push(started.elapsed());
        assert!(response.batch_item_failures.is_empty());
        let started = Instant::now();
        let response = dispatch::handle(submitter, event(&format!("{run}-ten{r}"), 10), 10).await;
        batches.push(started.elapsed());
        assert!(response.batch_item_failures.is_empty());
    }
    set_latency(&world.kube, 0).await;
    let floor = median(singles);
    let batch = median(batches);
    println!("{tag} dispatch_floor_ms {:.1} ms", floor.as_secs_f64() * 1000.0);
    println!("{tag} dispatch_batch10_ms {:.1} ms", batch.as_secs_f64() * 1000.0);
    println!("{tag} dispatch_batch10_vs_floor {:.2} ratio", batch.as_secs_f64() / floor.as_secs_f64());

    // What bounds the batch: the two services alone, 10 calls at once, with the same
    // 20 ms on Kubernetes requests.
    set_latency(&world.kube, 20).await;
    let dynamodb = world.stack.dynamodb();
    let table_name = world.table.clone();
    let puts = |tag: &str| {
        let dynamodb = dynamodb.clone();
        let table_name = table_name.clone();
        let tag = tag.to_owned();
        futures::future::join_all((0..10).map(move |i| {
            let request = dynamodb
                .put_item()
                .table_name(&table_name)
                .item("job_id", aws_sdk_dynamodb::types::AttributeValue::S(format!("{tag}-{i}")));
            async move { request.send().await.expect("put") }
        }))
    };
    let started = Instant::now();
    puts(&format!("{run}-probe")).await;
    println!("{tag} moto_10_concurrent_puts_ms {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    let pods = world.pods();
    let started = Instant::now();
    futures::future::join_all((0..10).map(|i| {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": { "name": format!("{run}-probe-{i}") },
            "spec": { "containers": [{ "name": "c", "image": "registry.example.com/bench:1" }] }
        }))
        .unwrap();
        let pods = pods.clone();
        async move { pods.create(&Default::default(), &pod).await.expect("create") }
    }))
    .await;
    println!("{tag} kube_sim_10_concurrent_creates_ms {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    set_latency(&world.kube, 0).await;

    let before = cpu_time();
    for b in 0..cpu_batches {
        let response = dispatch::handle(submitter, event(&format!("{run}-cpu{b}"), 10), 10).await;
        assert!(response.batch_item_failures.is_empty());
    }
    let jobs = cpu_batches * 10;
    let cpu = cpu_time().saturating_sub(before);
    println!("{tag} dispatch_cpu_per_job_ms {:.3} ms", cpu.as_secs_f64() * 1000.0 / jobs as f64);

    let spike_messages = std::env::var("SPIKE_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    spike(&world, if benchmarking { spike_messages } else { 50 }, tag).await;
}

/// A spike of `count` messages through the queue, drained by ten concurrent pollers.
async fn spike(world: &World, count: usize, tag: &str) {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let sqs = &world.sqs;
    let queues = world.new_queues("spike", 5, 30).await;
    let run = unique_name("s");
    let bodies: Vec<String> = (0..count)
        .map(|i| {
            json!({ "version": 1, "job": { "id": format!("{run}-{i}"), "image": "registry.example.com/bench:1" } })
                .to_string()
        })
        .collect();
    for (b, chunk) in bodies.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| SendMessageBatchRequestEntry::builder().id(format!("{b}-{i}")).message_body(body).build())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        sqs.send_message_batch().queue_url(&queues.url).set_entries(Some(entries)).send().await.expect("send");
    }
    let before = cpu_time();
    let started = Instant::now();
    let pollers = (0..10).map(|_| world.deliver(&queues, Duration::from_secs(1800)));
    let deliveries = futures::future::join_all(pollers).await;
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(before);
    let failures: usize = deliveries.iter().map(|d| d.failures).sum();
    assert_eq!(failures, 0, "every message dispatched at the first try");
    println!("{tag} dispatch_spike_{count}_jobs_per_s {:.0} jobs/s", count as f64 / wall.as_secs_f64());
    println!("{tag} dispatch_spike_{count}_cpu_per_job_ms {:.3} ms", cpu.as_secs_f64() * 1000.0 / count as f64);
}
