//! A short chaos run inside `make test`: a hundred jobs through the queue, dispatch and
//! a cluster failing 10 % of pod creates with 503, 5 % with 429, 10 % of lists with 500
//! and dropping 2 % of connections, with one message in ten delivered twice and one
//! invocation in ten killed part-way through its batch. When the
//! faults stop and the reconciler settles things: every job is recorded and ended,
//! exactly one pod was ever created per job attempt (kube-sim's creation log), every
//! message is a job record (those whose receives ran out are also in the dead-letter
//! queue, visibly), and no record ever made a move the state machine forbids. And an
//! outage of the Kubernetes API: nothing lost, no healthy job failed because of it.

use std::collections::BTreeMap;
use std::time::Duration;

use kube_sim::{ErrorFault, Faults, SimConfig, Timings};
use podbridge::cluster::KubeCluster;
use podbridge::pod::PodSettings;
use podbridge::reconcile::Thresholds;
use podbridge::state::JobState;
use podbridge::store::JobStore;
use podbridge::store::dynamodb::{DynamoJobStore, create_table};
use podbridge::submit::Submitter;
use podbridge::validate::Guardrails;
use podbridge_tests::sqs::{create_queues, deliver, depth, send_all};
use podbridge_tests::{Stack, own_cluster, unique_name};
use reconcile::Reconciler;
use serde_json::json;

/// Jobs in the run: 100 in `make test`; `make chaos` sets `CHAOS_JOBS=2000`.
fn jobs() -> usize {
    std::env::var("CHAOS_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(100)
}

fn faults() -> Faults {
    let error = |verb: &str, rate, code| ErrorFault { verb: verb.into(), rate, code };
    Faults {
        drop_rate: 0.02,
        errors: vec![error("create", 0.10, 503), error("create", 0.05, 429), error("list", 0.10, 500)],
        ..Faults::default()
    }
}

/// A job table, a cluster of the test's own (started with `config`) and a reconciler
/// with `thresholds` over a submitter for them.
async fn world(
    stack: &Stack,
    config: SimConfig,
    thresholds: Thresholds,
) -> (kube_sim::KubeSim, Reconciler<DynamoJobStore, KubeCluster>) {
    let table = unique_name("chaos");
    create_table(&stack.dynamodb(), &table).await.expect("job table");
    let (sim, kube) = own_cluster(config).await;
    let guardrails = Guardrails {
        image_prefixes: vec!["registry.example.com/".into()],
        default_cpu_millis: 10,
        ..Guardrails::default()
    };
    let ttl = Duration::from_secs(3600);
    let submitter = Submitter::new(
        DynamoJobStore::new(stack.dynamodb(), table),
        KubeCluster::new(kube, Duration::from_secs(5)),
        guardrails,
        PodSettings::default(),
        ttl,
    );
    (sim, Reconciler::new(submitter, thresholds, ttl, 10))
}

/// How many times each pod name was ever created, from kube-sim's creation log.
fn creations(sim: &kube_sim::KubeSim) -> BTreeMap<String, usize> {
    let mut created = BTreeMap::new();
    for pod in sim.created_pods() {
        *created.entry(pod.name).or_default() += 1;
    }
    created
}

#[tokio::test]
async fn given_faults_and_duplicate_deliveries_when_the_system_settles_then_nothing_is_lost_or_doubled() {
    let stack = Stack::from_env().await;
    let config = SimConfig {
        namespaces: vec!["podbridge-jobs".into()],
        timings: Timings { run: Some(Duration::from_millis(100)), ..Timings::default() },
        faults: faults(),
        ..SimConfig::default()
    };
    let thresholds = Thresholds { redispatch_after: Duration::from_secs(1), ..Thresholds::default() };
    let (sim, reconciler) = world(&stack, config, thresholds).await;
    let sqs = stack.sqs();
    let queues = create_queues(&sqs, &unique_name("chaos"), 3, 1).await;

    let jobs = jobs();
    let run = unique_name("c");
    let ids: Vec<String> = (0..jobs).map(|i| format!("{run}-{i}")).collect();
    let mut bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let behavior = if i.is_multiple_of(7) { "run=100ms,exit=1" } else { "run=100ms" };
            json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/chaos:1",
                "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior }], "retry": { "maxAttempts": 2 } } })
            .to_string()
        })
        .collect();
    // One message in ten delivered twice.
    let duplicates: Vec<String> = bodies.iter().step_by(10).cloned().collect();
    bodies.extend(duplicates);
    send_all(&sqs, &queues.url, &bodies).await;

    let patience = Duration::from_secs(60) + Duration::from_millis(100) * u32::try_from(jobs).unwrap();
    // One invocation in ten dies part-way through, as a Lambda that runs out of time or
    // memory does: its work stops wherever it was, and nothing of its batch is deleted.
    let invocations = std::sync::atomic::AtomicUsize::new(0);
    let crashes = std::sync::atomic::AtomicUsize::new(0);
    let delivery = deliver(&sqs, &queues, patience, |event| {
        let n = invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let crashes = &crashes;
        let submitter = reconciler.submitter();
        async move {
            let ids: Vec<String> = event.records.iter().filter_map(|r| r.message_id.clone()).collect();
            let handled = dispatch::handle(submitter, event, 10);
            if n % 10 != 9 {
                return handled.await;
            }
            // Dies after 0 to 24 ms: between any two of a job's steps.
            let after = Duration::from_millis((n as u64 * 7) % 25);
            match tokio::time::timeout(after, handled).await {
                Ok(response) => response,
                Err(_) => {
                    crashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
                    for id in ids {
                        response.add_failure(id);
                    }
                    response
                }
            }
        }
    })
    .await;
    assert_eq!(depth(&sqs, &queues.url).await, 0, "the queue drained: {delivery:?}");

    // The faults stop; the reconciler settles what they left half-done.
    sim.set_faults(Faults::default()).unwrap();
    let store = reconciler.submitter().store();
    let mut records = Vec::new();
    let settle = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < settle {
        reconciler.pass(jiff::Timestamp::now()).await.expect("a pass");
        records.clear();
        for id in &ids {
            records.push((id.clone(), store.get(id).await.unwrap()));
        }
        if records.iter().all(|(_, r)| r.as_ref().is_some_and(|r| r.state.is_terminal())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let created = creations(&sim);
    let lost: Vec<&String> = records.iter().filter(|(_, r)| r.is_none()).map(|(id, _)| id).collect();
    let unended: Vec<&String> =
        records.iter().filter(|(_, r)| r.as_ref().is_some_and(|r| !r.state.is_terminal())).map(|(id, _)| id).collect();
    let doubled: Vec<(&String, &usize)> = created.iter().filter(|(_, n)| **n > 1).collect();
    let mut missing_pods = Vec::new();
    let mut impossible = Vec::new();
    let mut wrong_end = Vec::new();
    for (id, record) in &records {
        let Some(record) = record else { continue };
        for attempt in 1..=record.attempt {
            let name = podbridge::pod::pod_name(id, attempt);
            if !created.contains_key(&name) {
                missing_pods.push(name);
            }
        }
        for transition in &record.history {
            if !transition.from.is_none_or(|from| from.can_become(transition.to)) {
                impossible.push(format!("{id}: {:?} -> {}", transition.from, transition.to));
            }
        }
        // Every seventh job exits 1, which is not retried by default.
        let index: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let expected = if index.is_multiple_of(7) { JobState::Failed } else { JobState::Succeeded };
        if record.state.is_terminal() && record.state != expected {
            wrong_end.push(format!("{id}: {} (expected {expected})", record.state));
        }
    }
    let in_dlq = depth(&sqs, &queues.dlq_url).await;
    println!("BENCH chaos_jobs {jobs} jobs");
    println!("BENCH chaos_deliveries {} messages", delivery.records);
    println!("BENCH chaos_deliveries_failed {} messages", delivery.failures);
    println!("BENCH chaos_in_dlq {in_dlq} messages");
    println!("BENCH chaos_invocations_killed {} invocations", crashes.load(std::sync::atomic::Ordering::Relaxed));
    println!("BENCH chaos_lost {} jobs", lost.len());
    println!("BENCH chaos_unended {} jobs", unended.len());
    println!("BENCH chaos_duplicate_pods {} pods", doubled.len());
    println!("BENCH chaos_impossible_moves {} transitions", impossible.len());
    assert!(lost.is_empty(), "jobs lost: {lost:?}");
    assert!(unended.is_empty(), "jobs that never ended: {unended:?}");
    assert!(doubled.is_empty(), "pods created twice: {doubled:?}");
    assert!(missing_pods.is_empty(), "attempts without their pod: {missing_pods:?}");
    assert!(impossible.is_empty(), "moves the state machine forbids: {impossible:?}");
    assert!(wrong_end.is_empty(), "jobs that ended otherwise than their pods: {wrong_end:?}");
}

#[tokio::test]
async fn given_the_kubernetes_api_down_for_a_while_when_it_recovers_then_no_job_is_lost_and_no_healthy_job_failed() {
    let stack = Stack::from_env().await;
    // Limits short enough that an outage would trip them if it were mistaken for silence.
    let thresholds = Thresholds {
        redispatch_after: Duration::from_secs(1),
        stuck_after: Duration::from_secs(1),
        unschedulable_after: Duration::from_secs(1),
        start_limit: Duration::from_secs(2),
        ..Thresholds::default()
    };
    let config = SimConfig { namespaces: vec!["podbridge-jobs".into()], ..SimConfig::default() };
    let (sim, reconciler) = world(&stack, config, thresholds).await;
    let store = reconciler.submitter().store();
    let sqs = stack.sqs();
    // Enough receives to outlast the outage: a message ends in the DLQ only when they run out.
    let queues = create_queues(&sqs, &unique_name("outage"), 20, 1).await;
    let message = |id: &str| {
        json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/long:1",
            "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=forever" }] } })
        .to_string()
    };
    let run = unique_name("o");
    let before: Vec<String> = (0..10).map(|i| format!("{run}-before-{i}")).collect();
    send_all(&sqs, &queues.url, &before.iter().map(|id| message(id)).collect::<Vec<_>>()).await;
    deliver(&sqs, &queues, Duration::from_secs(30), |event| dispatch::handle(reconciler.submitter(), event, 10)).await;
    for _ in 0..100 {
        reconciler.pass(jiff::Timestamp::now()).await.expect("a pass");
        let mut executing = 0;
        for id in &before {
            executing += usize::from(store.get(id).await.unwrap().is_some_and(|r| r.state == JobState::Executing));
        }
        if executing == before.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The API answers 503 to everything; jobs keep arriving and passes keep running.
    let down = Faults { errors: vec![ErrorFault { verb: "*".into(), rate: 1.0, code: 503 }], ..Faults::default() };
    sim.set_faults(down).unwrap();
    let during: Vec<String> = (0..10).map(|i| format!("{run}-during-{i}")).collect();
    send_all(&sqs, &queues.url, &during.iter().map(|id| message(id)).collect::<Vec<_>>()).await;
    let outage = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < outage {
        deliver(&sqs, &queues, Duration::from_millis(500), |event| dispatch::handle(reconciler.submitter(), event, 10))
            .await;
        assert!(reconciler.pass(jiff::Timestamp::now()).await.is_err(), "a pass that cannot list fails as a whole");
    }
    for id in &before {
        assert_eq!(store.get(id).await.unwrap().unwrap().state, JobState::Executing, "{id} is not failed by an outage");
    }

    // The API recovers.
    sim.set_faults(Faults::default()).unwrap();
    deliver(&sqs, &queues, Duration::from_secs(60), |event| dispatch::handle(reconciler.submitter(), event, 10)).await;
    let mut states = BTreeMap::new();
    for _ in 0..100 {
        reconciler.pass(jiff::Timestamp::now()).await.expect("a pass after the outage");
        states.clear();
        for id in before.iter().chain(&during) {
            let state = store.get(id).await.unwrap().map(|r| r.state);
            *states.entry(format!("{state:?}")).or_insert(0) += 1;
        }
        if states.get("Some(Executing)") == Some(&20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(states.get("Some(Executing)"), Some(&20), "every job runs after the outage: {states:?}");
    assert_eq!(depth(&sqs, &queues.dlq_url).await, 0, "no message ran out of receives");
    let created = creations(&sim);
    assert!(created.values().all(|n| *n == 1), "one pod per job: {created:?}");
    assert_eq!(created.len(), 20);
}
