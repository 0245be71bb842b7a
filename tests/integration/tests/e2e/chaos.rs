//! A short chaos run inside `make test`: a hundred jobs through the queue, dispatch and
//! a cluster failing 10 % of pod creates with 503, 5 % with 429, 10 % of lists with 500
//! and dropping 2 % of connections, with one message in ten delivered twice, one
//! invocation in ten killed part-way through its batch, DynamoDB answers held back by
//! latency spikes (some past the client's attempt timeout, after the write was applied),
//! the reconciler passing and watching all along, and two nodes lost under running jobs.
//! When the faults stop and the reconciler settles things: every job is recorded and
//! ended, exactly one pod was ever created per job attempt (kube-sim's creation log),
//! every message is a job record (those whose receives ran out are also in the
//! dead-letter queue, visibly), no record ever made a move the state machine forbids,
//! and every failure has a cause the run put there. And an outage of the Kubernetes API
//! (a few seconds in `make test`, five minutes in `make chaos`): nothing lost, messages
//! dispatched once it is over, no healthy job failed because of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_sim::{ErrorFault, Faults, NodeShape, SimConfig, Timings};
use podbridge::store::{Changed, Created, JobStore, QueueStore};
use podbridge_core::admission::Limits;
use podbridge_core::pod::pod_name;
use podbridge_core::reconcile::Thresholds;
use podbridge_core::record::{JobRecord, Source, StateChange};
use podbridge_core::state::JobState;
use podbridge_core::validate::Guardrails;
use podbridge_tests::latency_proxy::Spikes;
use podbridge_tests::sqs::{deliver, depth, peek_bodies, send_all};
use podbridge_tests::{World, WorldBuilder, unique_name};
use serde_json::json;

const NAMESPACE: &str = "podbridge-jobs";

/// Jobs in the run: 100 in `make test`; `make chaos` sets `CHAOS_JOBS=2000`.
/// The limit across all queues in the main chaos run: a quarter of its jobs at once.
const CHAOS_LIMIT: u32 = 25;

fn jobs() -> usize {
    std::env::var("CHAOS_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(100)
}

/// How long the Kubernetes API is down: a few seconds in `make test`; `make chaos` sets
/// `CHAOS_OUTAGE_SECONDS=300`.
fn outage() -> Duration {
    Duration::from_secs(std::env::var("CHAOS_OUTAGE_SECONDS").ok().and_then(|n| n.parse().ok()).unwrap_or(4))
}

fn faults() -> Faults {
    let error = |verb: &str, rate, code| ErrorFault { verb: verb.into(), rate, code };
    Faults {
        drop_rate: 0.02,
        errors: vec![error("create", 0.10, 503), error("create", 0.05, 429), error("list", 0.10, 500)],
        ..Faults::default()
    }
}

/// 5 % of DynamoDB's answers held back 200 ms to 2.5 s.
const SPIKES: Spikes = Spikes { rate: 0.05, min: Duration::from_millis(200), max: Duration::from_millis(2500) };

/// The chaos run's DynamoDB client gives up on an attempt after this long (the SDK then
/// tries again, up to three attempts in all). Most spikes outlast it: moto has applied
/// the write, the caller sees a timeout, and its retry meets its own write. (Long enough
/// that moto's own answers, slower as the table grows, stay inside it.) The
/// functions' clients set no attempt timeout (only the SDK's 3.1 s connect timeout), so
/// there a spike is a slow success; the same "applied, but the caller saw an error"
/// happens to them when a connection breaks after the request went out.
const DYNAMODB_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Nodes lost during the chaos run, each replaced by a new one (as an autoscaling group
/// replaces a dead instance).
const NODES_LOST: usize = 2;

/// What a job of the chaos run is asked to do, by its index.
fn behavior(index: usize) -> &'static str {
    if index.is_multiple_of(7) {
        // Exits 1, which is not retried by default.
        "run=100ms,exit=1"
    } else if index % 10 == 3 {
        // Long enough to be running on a node when it is lost.
        "run=2s"
    } else {
        "run=100ms"
    }
}

/// The chaos runs' world: a job table, a cluster of the test's own (started with
/// `config`), and a reconciler with `thresholds` following the pods a second at a time.
fn chaos_world(config: SimConfig, thresholds: Thresholds) -> WorldBuilder {
    let guardrails = Guardrails {
        image_prefixes: vec!["registry.example.com/".into()],
        default_cpu_millis: 10,
        ..Guardrails::default()
    };
    World::builder()
        .name("chaos")
        .own_cluster(config)
        .guardrails(guardrails)
        .thresholds(thresholds)
        .follow_window(Duration::from_secs(1))
}

/// How many times each pod name was ever created, from kube-sim's creation log.
fn creations(sim: &kube_sim::KubeSim) -> BTreeMap<String, usize> {
    let mut created = BTreeMap::new();
    for pod in sim.created_pods() {
        *created.entry(pod.name).or_default() += 1;
    }
    created
}

/// A node lost during the run and the pods bound to it then.
#[derive(Debug)]
struct LostNode {
    name: String,
    pods: BTreeSet<String>,
}

/// Lists pods with `params`, trying again through the injected faults.
async fn list_pods(pods: &Api<Pod>, params: &ListParams) -> Vec<Pod> {
    loop {
        if let Ok(list) = pods.list(params).await {
            return list.items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loses `count` nodes, each once the run is that far along (by pods created) and
/// a long job is running on the node, and replaces each with a new node. Gives up at
/// `deadline` (the caller's assertions then say which losses never happened).
async fn lose_nodes(
    sim: &kube_sim::KubeSim,
    pods: &Api<Pod>,
    jobs: usize,
    count: usize,
    deadline: tokio::time::Instant,
) -> Vec<LostNode> {
    let mut lost = Vec::new();
    for k in 1..=count {
        while sim.created_pods().len() < jobs * k / (count + 1) {
            if tokio::time::Instant::now() > deadline {
                return lost;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = loop {
            if tokio::time::Instant::now() > deadline {
                return lost;
            }
            let mut running: BTreeMap<String, usize> = BTreeMap::new();
            for pod in list_pods(pods, &ListParams::default()).await {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                let long = pod.spec.as_ref().is_some_and(|s| {
                    s.containers
                        .iter()
                        .flat_map(|c| c.env.iter().flatten())
                        .any(|e| e.value.as_deref() == Some("run=2s"))
                });
                if let (true, true, Some(node)) = (phase, long, pod.spec.as_ref().and_then(|s| s.node_name.clone())) {
                    *running.entry(node).or_default() += 1;
                }
            }
            // A lost node's pods still read Running (its kubelet reports nothing more):
            // only the nodes still in service are candidates.
            let in_service = sim.node_names();
            running.retain(|node, _| in_service.contains(node) && !lost.iter().any(|l: &LostNode| &l.name == node));
            if let Some((node, _)) = running.into_iter().max_by_key(|(_, n)| *n) {
                break node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The pods bound to it just before and just after (no pod is bound to a lost
        // node, and its pods stay until the taint manager's eviction timeout).
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let mut bound: BTreeSet<String> =
            list_pods(pods, &on_node).await.into_iter().filter_map(|p| p.metadata.name).collect();
        assert!(sim.lose_node(&node), "{node} exists");
        bound.extend(list_pods(pods, &on_node).await.into_iter().filter_map(|p| p.metadata.name));
        sim.add_node(NodeShape::default());
        lost.push(LostNode { name: node, pods: bound });
    }
    lost
}

/// Failure reasons the run causes: a job's own exit code, and a node lost under a pod
/// (seen by the taint manager or the pod garbage collector, or the pod gone unseen).
const EXIT_REASON: &str = "Error";
const NODE_LOSS_REASONS: [&str; 3] = ["DeletionByTaintManager", "DeletionByPodGC", "PodVanished"];

/// GIVEN a queue of jobs (one in ten sent twice), a cluster failing creates and lists
/// and dropping connections, DynamoDB answers delayed past the client's timeout, one
/// invocation in ten killed mid-batch, and the reconciler passing and watching all along
/// WHEN two nodes are lost under running jobs, then the faults stop and the system settles
/// THEN every job is recorded and ended as its pods did (or as a lost node left it, after
/// the retry its policy allows), one pod was created per attempt, and every move and
/// every failure is one the run can explain.
#[tokio::test]
async fn given_faults_and_duplicate_deliveries_when_the_system_settles_then_nothing_is_lost_or_doubled() {
    let config = SimConfig {
        namespaces: vec![NAMESPACE.into()],
        timings: Timings { run: Some(Duration::from_millis(100)), ..Timings::default() },
        faults: faults(),
        ..SimConfig::default()
    };
    let thresholds = Thresholds { redispatch_after: Duration::from_secs(1), ..Thresholds::default() };
    // The store writes through a proxy that holds DynamoDB's answers back, with a client
    // that gives up on an attempt after DYNAMODB_ATTEMPT_TIMEOUT.
    let world = chaos_world(config, thresholds)
        .admission(Limits { jobs: Some(CHAOS_LIMIT), ..Limits::NONE }, None)
        .latency_proxy(20_251_122)
        .dynamodb_attempt_timeout(DYNAMODB_ATTEMPT_TIMEOUT)
        .queue(3, 1)
        .build()
        .await;
    let (sim, reconciler, proxy) = (world.sim(), &world.reconciler, world.proxy());
    let sqs = world.sqs.clone();
    let queues = world.queues().clone();

    let jobs = jobs();
    let run = unique_name("c");
    let ids: Vec<String> = (0..jobs).map(|i| format!("{run}-{i}")).collect();
    let mut bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/chaos:1",
                "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior(i) }],
                "retry": { "maxAttempts": 2, "backoffSeconds": 1 } } })
            .to_string()
        })
        .collect();
    // One message in ten delivered twice.
    let duplicates: Vec<String> = bodies.iter().step_by(10).cloned().collect();
    bodies.extend(duplicates);
    send_all(&sqs, &queues.url, &bodies).await;
    proxy.set_spikes(Some(SPIKES));

    let patience = Duration::from_secs(60) + Duration::from_millis(250) * u32::try_from(jobs).unwrap();
    // One invocation in ten dies part-way through, as a Lambda that runs out of time or
    // memory does: its work stops wherever it was, and nothing of its batch is deleted.
    let invocations = AtomicUsize::new(0);
    let crashes = AtomicUsize::new(0);
    let invoke = |event: aws_lambda_events::event::sqs::SqsEvent| {
        let n = invocations.fetch_add(1, Ordering::Relaxed);
        let crashes = &crashes;
        let submitter = &world.submitter;
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
                    crashes.fetch_add(1, Ordering::Relaxed);
                    let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
                    for id in ids {
                        response.add_failure(id);
                    }
                    response
                }
            }
        }
    };
    // One batch at a time: moto's SQS is not safe for concurrent receives (two of them
    // moving the same message to the dead-letter queue fail with a 500).
    let delivering = deliver(&sqs, &queues, patience, invoke);
    // Meanwhile the reconciler runs as its schedule would (a pass, then following the
    // pods), and nodes are lost under running jobs.
    let pods = world.pods_in(NAMESPACE);
    let delivered = AtomicBool::new(false);
    let losses_done = AtomicBool::new(false);
    let (delivery, lost, (passes, failed_passes)) = tokio::join!(
        async {
            let delivery = delivering.await;
            delivered.store(true, Ordering::Release);
            delivery
        },
        async {
            let deadline = tokio::time::Instant::now() + patience;
            let lost = lose_nodes(sim, &pods, jobs, NODES_LOST, deadline).await;
            losses_done.store(true, Ordering::Release);
            lost
        },
        async {
            let (mut passes, mut failed) = (0usize, 0usize);
            while !(delivered.load(Ordering::Acquire) && losses_done.load(Ordering::Acquire)) {
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                match reconciler.run(&[NAMESPACE.to_owned()], until, async |_| {}).await {
                    Ok(_) => passes += 1,
                    Err(_) => failed += 1,
                }
                tokio::time::sleep_until(until).await;
            }
            (passes, failed)
        },
    );
    let undelivered = depth(&sqs, &queues.url).await;

    // The faults stop; the reconciler settles what they left half-done.
    sim.set_faults(Faults::default()).unwrap();
    proxy.set_spikes(None);
    // The records are read directly, not through the run's impatient client.
    let store = world.direct_store();
    let mut records = Vec::new();
    let mut settling_passes_failed = 0;
    let settle = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < settle {
        // moto's answers to a pass over thousands of jobs can outlast the run's client
        // timeout; such a pass fails as a whole and the next one tries again.
        settling_passes_failed += usize::from(reconciler.pass(jiff::Timestamp::now()).await.is_err());
        records.clear();
        for id in &ids {
            records.push((id.clone(), store.get(id).await.unwrap()));
        }
        if records.iter().all(|(_, r)| r.as_ref().is_some_and(|r| !r.is_followed())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let created = creations(sim);
    let lost_nodes: BTreeSet<&str> = lost.iter().map(|n| n.name.as_str()).collect();
    let lost_pods: BTreeSet<&str> = lost.iter().flat_map(|n| n.pods.iter().map(String::as_str)).collect();
    let lost_jobs: Vec<&String> = records.iter().filter(|(_, r)| r.is_none()).map(|(id, _)| id).collect();
    let unended: Vec<&String> =
        records.iter().filter(|(_, r)| r.as_ref().is_some_and(|r| r.is_followed())).map(|(id, _)| id).collect();
    let doubled: Vec<(&String, &usize)> = created.iter().filter(|(_, n)| **n > 1).collect();
    let mut missing_pods = Vec::new();
    let mut impossible = Vec::new();
    let mut wrong_end = Vec::new();
    let mut not_retried = Vec::new();
    let mut unexplained_failures = Vec::new();
    let mut node_loss_failures = 0;
    let mut retried = 0;
    for (id, record) in &records {
        let Some(record) = record else { continue };
        retried += usize::from(record.attempt > 1);
        for attempt in 1..=record.attempt {
            let name = pod_name(id, attempt);
            if !created.contains_key(&name) {
                missing_pods.push(name);
            }
        }
        for transition in &record.history {
            if !transition.from.is_none_or(|from| from.can_become(transition.to)) {
                impossible.push(format!("{id}: {:?} -> {}", transition.from, transition.to));
            }
            if transition.to != JobState::Failed {
                continue;
            }
            // A failure is either the job's own exit code, or a node lost under its pod.
            let pod = pod_name(id, transition.attempt);
            if NODE_LOSS_REASONS.contains(&transition.reason.as_str()) && lost_pods.contains(pod.as_str()) {
                node_loss_failures += 1;
            } else if transition.reason != EXIT_REASON {
                unexplained_failures.push(format!(
                    "{id} attempt {}: {} ({})",
                    transition.attempt, transition.reason, transition.message
                ));
            }
        }
        let index: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let expected = if index.is_multiple_of(7) { JobState::Failed } else { JobState::Succeeded };
        // A node lost under the last attempt fails the job, once its two attempts are spent.
        let lost_with_node = record.state == JobState::Failed
            && record.attempt == 2
            && (record.node.as_deref().is_some_and(|n| lost_nodes.contains(n))
                || lost_pods.contains(pod_name(id, record.attempt).as_str()))
            && matches!(record.failure_class.map(|c| c.as_str()), Some("node_lost" | "pod_vanished"));
        // A node lost under the first attempt is retried (`maxAttempts: 2`, and
        // `node_lost` and `pod_vanished` are retried by default).
        if record.state == JobState::Failed
            && record.attempt < 2
            && matches!(record.failure_class.map(|c| c.as_str()), Some("node_lost" | "pod_vanished"))
        {
            not_retried.push(format!("{id}: {:?} at attempt {}", record.failure_class, record.attempt));
            continue;
        }
        if record.state.is_terminal() && record.state != expected && !lost_with_node {
            let history: Vec<String> = record
                .history
                .iter()
                .map(|t| format!("{} {:?}->{} #{} {}", t.at, t.from, t.to, t.attempt, t.reason))
                .collect();
            wrong_end.push(format!(
                "{id}: {} at attempt {} ({:?}: {:?}; expected {expected}); history: {history:?}",
                record.state, record.attempt, record.failure_class, record.reason
            ));
        }
    }
    // Messages whose receives ran out: each one's job must be recorded all the same.
    let dead = peek_bodies(&sqs, &queues.dlq_url).await;
    let dead_unrecorded: Vec<String> = dead
        .iter()
        .filter_map(|body| {
            serde_json::from_str::<serde_json::Value>(body).ok()?["job"]["id"].as_str().map(str::to_owned)
        })
        .filter(|id| !records.iter().any(|(known, record)| known == id && record.is_some()))
        .collect();
    let spikes = proxy.stats();
    println!("BENCH chaos_jobs {jobs} jobs");
    println!("BENCH chaos_deliveries {} messages", delivery.records);
    println!("BENCH chaos_deliveries_failed {} messages", delivery.failures);
    println!("BENCH chaos_queue_errors {} requests", delivery.queue_errors);
    println!("BENCH chaos_undelivered {undelivered} messages");
    println!("BENCH chaos_in_dlq {} messages", dead.len());
    println!("BENCH chaos_invocations_killed {} invocations", crashes.load(Ordering::Relaxed));
    println!("BENCH chaos_reconcile_runs {passes} runs");
    println!("BENCH chaos_reconcile_runs_failed {failed_passes} runs");
    println!("BENCH chaos_settling_passes_failed {settling_passes_failed} passes");
    println!("BENCH chaos_ddb_requests {} requests", spikes.answers);
    println!("BENCH chaos_ddb_delayed {} requests", spikes.delayed);
    println!("BENCH chaos_ddb_timed_out_after_answer {} requests", spikes.abandoned);
    println!("BENCH chaos_nodes_lost {} nodes", lost.len());
    println!("BENCH chaos_pods_on_lost_nodes {} pods", lost_pods.len());
    println!("BENCH chaos_node_loss_failures {node_loss_failures} attempts");
    println!("BENCH chaos_retried {retried} jobs");
    println!("BENCH chaos_lost {} jobs", lost_jobs.len());
    println!("BENCH chaos_unended {} jobs", unended.len());
    println!("BENCH chaos_duplicate_pods {} pods", doubled.len());
    println!("BENCH chaos_impossible_moves {} transitions", impossible.len());
    println!("BENCH chaos_unexplained_failures {} attempts", unexplained_failures.len());
    println!("BENCH chaos_not_retried {} jobs", not_retried.len());
    println!("BENCH chaos_wrong_end {} jobs", wrong_end.len());
    // The limit, from kube-sim's own record: pods on a lost node are left out (they
    // stopped holding capacity when their node went, which the log records only when
    // the pod garbage collector removes them).
    let most = podbridge_tests::most_at_once(sim, |pod| !lost_pods.contains(pod.name.as_str()));
    println!("BENCH chaos_most_pods_at_once {most} pods (limit {CHAOS_LIMIT})");
    // Every slot given back once: after the settle, no slot is held and every usage is
    // exactly zero (a double release would show below zero).
    let last = world.reconciler.pass(jiff::Timestamp::now()).await.expect("a settling pass");
    println!("BENCH chaos_last_pass_drift_repaired {} usages", last.queues.drift_repaired);
    println!("BENCH chaos_last_pass_leaks_released {} slots", last.queues.leaked_released);
    let slots = store.slots().await.expect("the slots");
    let usages = world
        .stack
        .dynamodb()
        .query()
        .table_name(&world.queue_table)
        .key_condition_expression("pk = :usage")
        .expression_attribute_values(":usage", aws_sdk_dynamodb::types::AttributeValue::S("usage".into()))
        .send()
        .await
        .expect("the usages")
        .items
        .unwrap_or_default();
    let not_zero: Vec<_> = usages
        .iter()
        .filter(|item| {
            ["jobs", "cpu", "memory"].iter().any(|a| item.get(*a).and_then(|v| v.as_n().ok()).is_some_and(|n| n != "0"))
        })
        .collect();
    println!("BENCH chaos_slots_left {} slots", slots.len());
    assert_eq!(undelivered, 0, "the queue drained: {delivery:?}");
    assert!(lost_jobs.is_empty(), "jobs lost: {lost_jobs:?}");
    assert!(unended.is_empty(), "jobs that never ended: {unended:?}");
    assert!(doubled.is_empty(), "pods created twice: {doubled:?}");
    assert!(missing_pods.is_empty(), "attempts without their pod: {missing_pods:?}");
    assert!(impossible.is_empty(), "moves the state machine forbids: {impossible:?}");
    assert!(unexplained_failures.is_empty(), "failures the run did not cause: {unexplained_failures:?}");
    assert!(
        not_retried.is_empty(),
        "jobs failed although their retry policy gives them another attempt: {not_retried:?}"
    );
    assert!(wrong_end.is_empty(), "jobs that ended otherwise than their pods: {wrong_end:?}");
    assert!(most <= CHAOS_LIMIT as usize, "the cluster held {most} admitted pods at once, over the limit");
    assert!(slots.is_empty(), "slots held after every job ended: {slots:?}");
    // The passes that settled the run gave back what crashes left; the last one, after
    // every job had ended, found nothing to put right: no drift ever, no slot left.
    assert_eq!((last.queues.drift_repaired, last.queues.leaked_released), (0, 0), "{:?}", last.queues);
    assert!(not_zero.is_empty(), "usage not back to zero (leaked or released twice): {not_zero:?}");
    assert!(dead_unrecorded.is_empty(), "dead-lettered messages without a job record: {dead_unrecorded:?}");
    assert_eq!(lost.len(), NODES_LOST, "the nodes were lost");
    assert!(node_loss_failures > 0, "the lost nodes took running attempts with them: {lost:?}");
    assert!(spikes.delayed > 0 && spikes.abandoned > 0, "DynamoDB spikes happened, some past the timeout: {spikes:?}");
}

/// GIVEN a DynamoDB client that gives up on an attempt after a second and tries again
/// WHEN the answers to a job's create and to its first state change are each held past
/// that, after DynamoDB applied the write
/// THEN the store reports both writes as done by the caller (`New`, `Applied`), not as
/// a record that was already there or a race lost to someone else: a reconciler that
/// failed an attempt goes on to queue the retry its policy asks for, and the journal
/// announces the transition. The record holds each transition once.
#[tokio::test]
async fn given_a_write_whose_answer_is_lost_when_the_sdk_tries_it_again_then_it_counts_as_done() {
    let world = World::builder()
        .name("lost-answer")
        .latency_proxy(1)
        .dynamodb_attempt_timeout(DYNAMODB_ATTEMPT_TIMEOUT)
        .build()
        .await;
    let (store, proxy) = (&world.store, world.proxy());
    let held = DYNAMODB_ATTEMPT_TIMEOUT * 3;
    let now = jiff::Timestamp::now();

    proxy.hold_next(1, held);
    let record = JobRecord::new("lost-answer", JobState::Queued, Source::Direct, now, "Submitted", "queued");
    let created = store.create(&record).await.expect("the create succeeds on the SDK's second attempt");

    proxy.hold_next(1, held);
    let change = StateChange::new(JobState::Queued, 1, JobState::SettingUp, now, "PodCreated", "pod created");
    let changed = store.change("lost-answer", &change).await.expect("the change succeeds on the SDK's second attempt");

    assert_eq!(proxy.stats().abandoned, 2, "both answers came after the client gave up");
    let stored = store.get("lost-answer").await.unwrap().expect("the record");
    let moves: Vec<(Option<JobState>, JobState)> = stored.history.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(moves, [(None, JobState::Queued), (Some(JobState::Queued), JobState::SettingUp)]);
    assert!(matches!(changed, Changed::Applied(_)), "the change was this caller's: {changed:?}");
    assert!(matches!(created, Created::New), "the create was this caller's: {created:?}");
}

/// GIVEN ten jobs running, a queue whose receives outlast an outage (five receives, a
/// visibility timeout of a third of the outage) and a second queue whose receives do not
/// (two receives)
/// WHEN the Kubernetes API answers 503 to everything for a while (`CHAOS_OUTAGE_SECONDS`;
/// ten more jobs arrive on each queue, dispatch and reconcile keep running), then recovers
/// THEN no running job was failed by the outage; the messages that arrived during it came
/// back and were dispatched once it was over, none in the first queue's DLQ; the second
/// queue's messages ran out of receives and are in its DLQ, their jobs recorded and
/// dispatched by the reconciler all the same; one pod per job.
#[tokio::test]
async fn given_the_kubernetes_api_down_for_a_while_when_it_recovers_then_no_job_is_lost_and_no_healthy_job_failed() {
    // Limits short enough that an outage would trip them if it were mistaken for silence.
    let thresholds = Thresholds {
        redispatch_after: Duration::from_secs(1),
        stuck_after: Duration::from_secs(1),
        unschedulable_after: Duration::from_secs(1),
        start_limit: Duration::from_secs(2),
        ..Thresholds::default()
    };
    let config = SimConfig { namespaces: vec![NAMESPACE.into()], ..SimConfig::default() };
    let world = chaos_world(config, thresholds).build().await;
    let (sim, reconciler, store) = (world.sim(), &world.reconciler, &world.store);
    let sqs = world.sqs.clone();
    let outage = outage();
    // A message that arrives as the outage starts is received at most three times before
    // it ends (at 0, V and 2V; the next receive is at 3V, after it): the deployment's
    // five receives outlast it, two do not.
    let visibility = u32::try_from(outage.as_secs().div_ceil(3)).unwrap().max(1);
    let queues = world.new_queues("outage", 5, visibility).await;
    let short = world.new_queues("outage-short", 2, visibility).await;
    let message = |id: &str| {
        json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/long:1",
            "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=forever" }] } })
        .to_string()
    };
    let run = unique_name("o");
    let before: Vec<String> = (0..10).map(|i| format!("{run}-before-{i}")).collect();
    send_all(&sqs, &queues.url, &before.iter().map(|id| message(id)).collect::<Vec<_>>()).await;
    world.deliver(&queues, Duration::from_secs(30)).await;
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
    let exhausted: Vec<String> = (0..10).map(|i| format!("{run}-exhausted-{i}")).collect();
    send_all(&sqs, &queues.url, &during.iter().map(|id| message(id)).collect::<Vec<_>>()).await;
    send_all(&sqs, &short.url, &exhausted.iter().map(|id| message(id)).collect::<Vec<_>>()).await;
    let recovery = tokio::time::Instant::now() + outage;
    let mut failed_passes = 0;
    let mut outage_deliveries = 0;
    while tokio::time::Instant::now() < recovery {
        for queues in [&queues, &short] {
            let delivery = world.deliver(queues, Duration::from_millis(250)).await;
            outage_deliveries += delivery.records;
        }
        assert!(reconciler.pass(jiff::Timestamp::now()).await.is_err(), "a pass that cannot list fails as a whole");
        failed_passes += 1;
    }
    for id in &before {
        assert_eq!(store.get(id).await.unwrap().unwrap().state, JobState::Executing, "{id} is not failed by an outage");
    }

    // The API recovers: the messages come back after their visibility timeout.
    sim.set_faults(Faults::default()).unwrap();
    let patience = Duration::from_secs(u64::from(visibility) + 60);
    let mut after = world.deliver(&queues, patience).await;
    let short_after = world.deliver(&short, patience).await;
    after.records += short_after.records;
    let all: Vec<&String> = before.iter().chain(&during).chain(&exhausted).collect();
    let mut states = BTreeMap::new();
    for _ in 0..100 {
        reconciler.pass(jiff::Timestamp::now()).await.expect("a pass after the outage");
        states.clear();
        for id in &all {
            let state = store.get(id).await.unwrap().map(|r| r.state);
            *states.entry(format!("{state:?}")).or_insert(0) += 1;
        }
        if states.get("Some(Executing)") == Some(&all.len()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = peek_bodies(&sqs, &short.dlq_url).await;
    println!("BENCH chaos_outage {} seconds", outage.as_secs());
    println!("BENCH chaos_outage_visibility_timeout {visibility} seconds");
    println!("BENCH chaos_outage_deliveries_during {outage_deliveries} messages");
    println!("BENCH chaos_outage_failed_passes {failed_passes} passes");
    println!("BENCH chaos_outage_deliveries_after {} messages", after.records);
    println!("BENCH chaos_outage_in_dlq {} messages", dead.len());
    assert_eq!(states.get("Some(Executing)"), Some(&all.len()), "every job runs after the outage: {states:?}");
    assert_eq!(depth(&sqs, &queues.dlq_url).await, 0, "no message with receives to spare reached the DLQ");
    let mut dead_ids: Vec<String> = dead
        .iter()
        .filter_map(|body| {
            serde_json::from_str::<serde_json::Value>(body).ok()?["job"]["id"].as_str().map(str::to_owned)
        })
        .collect();
    dead_ids.sort();
    assert_eq!(dead_ids, exhausted, "the messages whose receives ran out are in the DLQ, each one's job running");
    let created = creations(sim);
    assert!(created.values().all(|n| *n == 1), "one pod per job: {created:?}");
    assert_eq!(created.len(), all.len());
}
