//! Queues and admission against the local stack: jobs over a limit wait in DynamoDB and
//! are admitted as room frees, a spike larger than the cluster ends with every job
//! succeeded and no limit ever passed (checked on kube-sim's own record of its pods), a
//! full cluster puts attempts back to wait instead of failing them, weights share the
//! limit across queues, and an operator's pause, resume, raised limit and cancel take
//! effect. Crashes between a slot and its pod, or between a pod's end and its release,
//! and a usage that drifted, are put right by the next pass.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube_sim::{Autoscaler, NodeShape, SimConfig, Timings};
use podbridge::services::Outcome;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{ALL_QUEUES, JobStore, QueueStore};
use podbridge_core::admission::{Limits, Queue, Resources, usage_of};
use podbridge_core::reconcile::Thresholds;
use podbridge_core::record::{JobRecord, REQUEUED, Source, StateChange};
use podbridge_core::state::JobState;
use podbridge_core::tenancy::Sender;
use podbridge_core::validate::Guardrails;
use podbridge_tests::{World, eventually, most_at_once, unique_name};
use serde_json::json;

const NAMESPACE: &str = "batch";

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec![NAMESPACE.into()],
        image_prefixes: vec!["registry.example.com/".into()],
        ..Guardrails::default()
    }
}

fn cluster(nodes: usize, cpu_millis: i64, run: Duration) -> SimConfig {
    SimConfig {
        namespaces: vec![NAMESPACE.into()],
        nodes,
        node_shape: NodeShape { cpu_millis, memory_bytes: 8 << 30, max_pods: 110 },
        timings: Timings { run: Some(run), ..Timings::default() },
        ..SimConfig::default()
    }
}

fn job(id: &str, queue: &str, priority: i32, cpu: &str, behavior: Option<&str>) -> String {
    let mut job = json!({ "id": id, "queue": queue, "priority": priority,
        "image": "registry.example.com/batch/work:1", "resources": { "cpu": cpu, "memory": "256Mi" },
        "retry": { "maxAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 2 } });
    if let Some(behavior) = behavior {
        job["env"] = json!([{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior }]);
    }
    json!({ "version": 1, "job": job }).to_string()
}

/// A world on its own `config` cluster with a limit of eight jobs across all queues,
/// whose reconciler follows the pods a second at a time.
async fn eight_at_once(name: &str, config: SimConfig) -> World {
    World::builder()
        .name(name)
        .guardrails(guardrails())
        .own_cluster(config)
        .admission(Limits { jobs: Some(8), ..Limits::NONE }, None)
        .follow_window(Duration::from_secs(1))
        .build()
        .await
}

async fn submit(world: &World, body: &str) -> Outcome {
    world.submitter.handle_message(body.as_bytes(), Source::Direct, &Sender::Operator, &unique_name("m")).await.unwrap()
}

/// Submits every body, ten at a time, as concurrent dispatch invocations would.
async fn submit_all(world: &World, bodies: &[String]) -> Vec<Outcome> {
    futures::stream::iter(bodies).map(|body| submit(world, body)).buffer_unordered(10).collect().await
}

/// Runs the reconciler as its schedule would (a pass, then following the pods for a
/// while) until `done` is set.
async fn reconcile_while(world: &World, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        let _ = world.reconciler.run(&[NAMESPACE.to_owned()], until, async |_| {}).await;
    }
}

/// The records of `ids` once every one has ended; `None` while one is still followed.
async fn ended(store: &DynamoJobStore, ids: &[String]) -> Option<BTreeMap<String, JobRecord>> {
    let mut records = BTreeMap::new();
    for id in ids {
        let record = store.get(id).await.unwrap()?;
        if record.is_followed() {
            return None;
        }
        records.insert(id.clone(), record);
    }
    Some(records)
}

/// Waits until every one of `ids` has ended, the reconciler running meanwhile; the
/// records as they ended.
async fn run_to_the_end(world: &World, ids: &[String], patience: Duration) -> BTreeMap<String, JobRecord> {
    let done = AtomicBool::new(false);
    let store = world.direct_store();
    let (records, ()) = tokio::join!(
        async {
            let records =
                eventually("every job to end", patience, Duration::from_millis(250), || ended(&store, ids)).await;
            done.store(true, Ordering::Release);
            records
        },
        reconcile_while(world, &done),
    );
    records
}

/// The stored usage of `queue` (or of all queues) and what its slots add up to.
async fn usage_and_slots(world: &World, queue: &str) -> (Resources, Resources) {
    let store = world.direct_store();
    let usage = store.usage().await.unwrap();
    let slots = store.slots().await.unwrap();
    let truth = if queue == ALL_QUEUES {
        usage_of(&slots).values().fold(Resources::default(), |sum, held| sum.plus(*held))
    } else {
        usage_of(&slots).remove(queue).unwrap_or_default()
    };
    (usage.get(queue).map(|u| u.held).unwrap_or_default(), truth)
}

fn of_run(run: &str) -> impl Fn(&kube_sim::CreatedPod) -> bool + '_ {
    move |pod| pod.labels.get(podbridge_core::pod::JOB_ID_LABEL).is_some_and(|id| id.starts_with(run))
}

/// GIVEN a cluster of two nodes that runs eight jobs at once, and a limit of eight jobs
/// across all queues
/// WHEN a spike ten times that size arrives at once
/// THEN every job succeeds, none fails unschedulable, each ran one pod, at no moment did
/// the cluster hold more than eight of the spike's pods, and every slot was given back.
#[tokio::test]
async fn a_spike_ten_times_the_cluster_waits_its_turn_and_every_job_succeeds_within_the_limit() {
    let world = eight_at_once("spike", cluster(2, 2_000, Duration::from_millis(300))).await;
    let run = unique_name("s");
    let ids: Vec<String> = (0..80).map(|i| format!("{run}-{i}")).collect();
    let bodies: Vec<String> = ids.iter().map(|id| job(id, "default", 0, "500m", None)).collect();
    let outcomes = submit_all(&world, &bodies).await;
    let waited = outcomes.iter().filter(|o| matches!(o, Outcome::Waiting { .. })).count();
    assert!(waited >= 72, "at most eight admitted at once: {waited} waited");

    let records = run_to_the_end(&world, &ids, Duration::from_secs(180)).await;
    let not_succeeded: Vec<_> = records.values().filter(|r| r.state != JobState::Succeeded).collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:#?}");
    for id in &ids {
        assert_eq!(world.pods_created_for(id).len(), 1, "one pod for {id}");
    }
    let most = most_at_once(world.sim(), of_run(&run));
    assert!(most <= 8, "the cluster held {most} of the spike's pods at once");
    let settled = world.reconciler.pass(jiff::Timestamp::now()).await.unwrap();
    assert_eq!(settled.queues.drift_repaired + settled.queues.leaked_released, 0, "{settled:?}");
    assert_eq!(usage_and_slots(&world, ALL_QUEUES).await, (Resources::default(), Resources::default()));
}

/// GIVEN a cluster with one node and an autoscaler capped at one more, and no limit in
/// podbridge: more jobs than the cluster can ever hold at once
/// WHEN their pods stay unschedulable past `unschedulable_after`
/// THEN each is put back to wait (its pod deleted, a new attempt not counted as failed)
/// and admitted again later, and every job succeeds with `maxAttempts: 1`.
#[tokio::test]
async fn a_full_cluster_puts_attempts_back_to_wait_and_no_job_fails() {
    let mut config = cluster(1, 1_000, Duration::from_secs(3));
    config.autoscaler = Some(Autoscaler {
        scale_up_delay: Duration::from_millis(200),
        scale_down_idle: Duration::from_secs(60),
        max_nodes: 1,
        shape: config.node_shape,
    });
    let thresholds = Thresholds { unschedulable_after: Duration::from_secs(2), ..Thresholds::default() };
    let world = World::builder()
        .name("full")
        .guardrails(guardrails())
        .own_cluster(config)
        .thresholds(thresholds)
        .follow_window(Duration::from_secs(1))
        .build()
        .await;
    let run = unique_name("f");
    let ids: Vec<String> = (0..16).map(|i| format!("{run}-{i}")).collect();
    let bodies: Vec<String> = ids.iter().map(|id| job(id, "default", 0, "500m", None)).collect();
    submit_all(&world, &bodies).await;

    // Passes twice a second (a pending pod changes no more, so it is the pass that
    // finds it past `unschedulable_after`), until every job has ended.
    let store = world.direct_store();
    let records = eventually("every job to end", Duration::from_secs(120), Duration::from_millis(500), || async {
        world.pass().await;
        ended(&store, &ids).await
    })
    .await;
    let not_succeeded: Vec<_> = records.values().filter(|r| r.state != JobState::Succeeded).collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:#?}");
    let requeued: Vec<_> = records.values().filter(|r| r.requeues() > 0).collect();
    assert!(!requeued.is_empty(), "some pods found the cluster full");
    for record in &requeued {
        assert!(record.history.iter().all(|t| t.to != JobState::Failed), "{record:#?}");
        let first = record.history.iter().find(|t| t.reason == REQUEUED).unwrap();
        assert!(first.message.contains("Insufficient cpu"), "{}", first.message);
        assert_eq!(record.counted_attempt(), 1, "a requeue is not a failed attempt");
        // One pod per attempt: the requeued attempt's pod was deleted, the next one ran.
        assert_eq!(world.pods_created_for(&record.job_id).len(), record.attempt as usize);
    }
}

/// GIVEN two queues of weights 1 and 3 sharing a limit of eight jobs across queues
/// WHEN both have more jobs than the limit
/// THEN while both wait (once the first eight, which dispatch admitted in arrival order,
/// have ended), the cluster holds their pods about 1:3 (2 and 6), as the core's weighted
/// dominant share gives: within one job of it at every sample, 0.65 to 0.85 for ml on
/// average.
#[tokio::test]
async fn two_queues_share_the_limit_across_queues_by_weight() {
    let world = eight_at_once("weights", cluster(4, 4_000, Duration::from_millis(1500))).await;
    let store = world.direct_store();
    store.put_queue(&Queue { weight: 1, ..Queue::unlimited("etl") }).await.unwrap();
    store.put_queue(&Queue { weight: 3, ..Queue::unlimited("ml") }).await.unwrap();
    let run = unique_name("w");
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for queue in ["etl", "ml"] {
        for i in 0..32 {
            let id = format!("{run}-{queue}-{i}");
            bodies.push(job(&id, queue, 0, "250m", None));
            ids.push(id);
        }
    }
    submit_all(&world, &bodies).await;

    let done = AtomicBool::new(false);
    let sampling = async {
        let mut samples = Vec::new();
        while !done.load(Ordering::Acquire) {
            let held = |queue: &str| {
                let prefix = format!("{run}-{queue}-");
                world
                    .sim()
                    .created_pods()
                    .iter()
                    .filter(|p| {
                        p.ended_at.is_none()
                            && p.labels.get(podbridge_core::pod::JOB_ID_LABEL).is_some_and(|id| id.starts_with(&prefix))
                    })
                    .count()
            };
            let waiting = |queue: &'static str| {
                let store = &store;
                async move { store.waiting(queue, 10).await.unwrap().len() }
            };
            let (etl, ml) = (held("etl"), held("ml"));
            // Dispatch admitted the first eight in arrival order; shares hold from the
            // reconciler's rounds on, once the first eight have ended.
            let ended = world
                .sim()
                .created_pods()
                .iter()
                .filter(|p| {
                    p.ended_at.is_some()
                        && p.labels.get(podbridge_core::pod::JOB_ID_LABEL).is_some_and(|id| id.starts_with(&run))
                })
                .count();
            // A sample while both wait and the limit is (all but) taken.
            if ended >= 8 && waiting("etl").await > 0 && waiting("ml").await > 0 && etl + ml >= 7 {
                samples.push((etl, ml));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        samples
    };
    let (records, samples) = tokio::join!(
        async {
            let records = run_to_the_end(&world, &ids, Duration::from_secs(180)).await;
            done.store(true, Ordering::Release);
            records
        },
        sampling
    );
    assert!(records.values().all(|r| r.state == JobState::Succeeded));
    assert!(samples.len() >= 3, "{samples:?}");
    for (etl, ml) in &samples {
        assert!(
            etl.abs_diff(2) <= 1 && ml.abs_diff(6) <= 1,
            "etl {etl}, ml {ml}: not 1:3 within one job ({samples:?})"
        );
    }
    let mean = samples.iter().map(|(etl, ml)| *ml as f64 / (etl + ml) as f64).sum::<f64>() / samples.len() as f64;
    assert!((0.65..=0.85).contains(&mean), "ml held {mean:.2} of the limit on average, not about 0.75");
}

/// GIVEN a queue of one job, running
/// WHEN two more wait (the later one of higher priority), one is cancelled, the queue is
/// paused while the first ends, then resumed with its limit raised
/// THEN the higher priority waits first, the cancelled one never gets a pod, nothing
/// starts while paused (and the waiting job says so), and the raise admits at once.
#[tokio::test]
async fn an_operator_orders_pauses_resumes_raises_and_cancels_and_the_queue_follows() {
    let world = World::builder()
        .name("operator")
        .guardrails(guardrails())
        .own_cluster(cluster(1, 4_000, Duration::from_millis(1500)))
        .follow_window(Duration::from_secs(1))
        .build()
        .await;
    let store = world.direct_store();
    let one = Queue { limits: Limits { jobs: Some(1), ..Limits::NONE }, ..Queue::unlimited("etl") };
    store.put_queue(&one).await.unwrap();
    let run = unique_name("o");
    let (first, low, high) = (format!("{run}-first"), format!("{run}-low"), format!("{run}-high"));
    // It runs long enough for the pause below to reach every reader of the queues
    // (they re-read them every QUEUES_REFRESH) before it ends.
    let first_job = job(&first, "etl", 0, "250m", Some("run=5s"));
    assert!(matches!(submit(&world, &first_job).await, Outcome::Dispatched { .. }));
    let low_waits = submit(&world, &job(&low, "etl", 0, "250m", None)).await;
    assert_eq!(low_waits, Outcome::Waiting { job_id: low.clone(), reason: "queue etl: 1 of 1 jobs held".into() });
    assert!(matches!(submit(&world, &job(&high, "etl", 5, "250m", None)).await, Outcome::Waiting { .. }));
    let ahead = |id: String| {
        let store = &store;
        async move { store.ahead_of(&store.get(&id).await.unwrap().unwrap()).await.unwrap() }
    };
    assert_eq!((ahead(high.clone()).await, ahead(low.clone()).await), (Some(0), Some(1)), "priority first");

    let cancelled = world.submitter.cancel(&low, None, "not needed", Source::Direct, &Sender::Operator).await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { job_id: low.clone() });
    store.put_queue(&Queue { paused: true, ..one.clone() }).await.unwrap();
    let done = AtomicBool::new(false);
    let ((), ()) = tokio::join!(
        async {
            let _ = eventually("the first job to end", Duration::from_secs(30), Duration::from_millis(200), || async {
                store.get(&first).await.unwrap().filter(|r| r.state == JobState::Succeeded)
            })
            .await;
            // Rounds of admission run meanwhile; the paused queue holds its job.
            let held = eventually(
                "the waiting job to say its queue is paused",
                Duration::from_secs(15),
                Duration::from_millis(200),
                || async {
                    store.get(&high).await.unwrap().filter(|r| r.message.as_deref() == Some("queue etl is paused"))
                },
            )
            .await;
            assert!(held.is_waiting() && world.pods_created_for(&high).is_empty(), "{held:#?}");

            store.put_queue(&Queue { limits: Limits { jobs: Some(3), ..Limits::NONE }, ..one.clone() }).await.unwrap();
            let admitted = eventually(
                "the raised, resumed queue to admit",
                Duration::from_secs(15),
                Duration::from_millis(100),
                || async { store.get(&high).await.unwrap().filter(|r| r.state != JobState::Queued) },
            )
            .await;
            assert!(
                matches!(admitted.state, JobState::SettingUp | JobState::Executing | JobState::Succeeded),
                "{admitted:#?}"
            );
            done.store(true, Ordering::Release);
        },
        reconcile_while(&world, &done),
    );
    assert!(world.pods_created_for(&low).is_empty(), "a cancelled waiting job never runs");
    assert_eq!(store.get(&low).await.unwrap().unwrap().state, JobState::Cancelled);
}

/// GIVEN a cluster whose largest node has 4 CPU, and a queue limited to 2 CPU
/// WHEN jobs that can never fit arrive
/// THEN each is rejected at once, naming both sizes, and nothing waits for ever.
#[tokio::test]
async fn a_job_that_can_never_fit_is_rejected_naming_both_sizes() {
    let world = World::builder()
        .name("never")
        .guardrails(Guardrails { max_cpu_millis: 16_000, ..guardrails() })
        .own_cluster(cluster(2, 4_000, Duration::from_millis(100)))
        .build()
        .await;
    let store = world.direct_store();
    store
        .put_queue(&Queue { limits: Limits { cpu_millis: Some(2_000), ..Limits::NONE }, ..Queue::unlimited("small") })
        .await
        .unwrap();
    let run = unique_name("n");
    let Outcome::Rejected { reason, .. } = submit(&world, &job(&format!("{run}-node"), "default", 0, "6", None)).await
    else {
        panic!("rejected")
    };
    assert!(reason.contains("it requests 6 CPU and the largest node the cluster has or can add has 4 CPU"), "{reason}");
    let Outcome::Rejected { reason, .. } = submit(&world, &job(&format!("{run}-queue"), "small", 0, "3", None)).await
    else {
        panic!("rejected")
    };
    assert!(reason.contains("it requests 3 CPU and queue small may hold at most 2 CPU"), "{reason}");
    assert!(
        store.waiting("small", 10).await.unwrap().is_empty() && store.waiting("default", 10).await.unwrap().is_empty()
    );
}

/// GIVEN a queue of one job
/// WHEN the dispatcher stops between taking a slot and creating the pod, a reconciler
/// stops between recording a pod's end and giving its slot back, and a usage is set
/// wrong by hand
/// THEN the next passes create the pod, give the slot back and admit the next job, and
/// set the usage to what the slots say, counting each repair.
#[tokio::test]
async fn crashes_between_a_slot_and_its_pod_or_an_end_and_its_release_and_drift_are_healed_by_the_next_pass() {
    let thresholds = Thresholds { redispatch_after: Duration::from_secs(1), ..Thresholds::default() };
    let world = World::builder()
        .name("heal")
        .guardrails(guardrails())
        .own_cluster(cluster(1, 4_000, Duration::from_secs(600)))
        .thresholds(thresholds)
        .build()
        .await;
    let store = world.direct_store();
    store
        .put_queue(&Queue { limits: Limits { jobs: Some(1), ..Limits::NONE }, ..Queue::unlimited("etl") })
        .await
        .unwrap();
    let run = unique_name("h");
    let (a, b) = (format!("{run}-a"), format!("{run}-b"));

    // The pod create fails once, as if the dispatcher had died after its slot.
    let refuse = kube_sim::ErrorFault { verb: "create".into(), rate: 1.0, code: 503 };
    world.sim().set_faults(kube_sim::Faults { errors: vec![refuse], ..kube_sim::Faults::default() }).unwrap();
    let failed = world
        .submitter
        .handle_message(job(&a, "etl", 0, "250m", None).as_bytes(), Source::Direct, &Sender::Operator, "m-a")
        .await;
    assert!(failed.is_err(), "{failed:?}");
    world.sim().set_faults(kube_sim::Faults::default()).unwrap();
    assert_eq!(store.slots().await.unwrap().len(), 1, "the slot is held, no pod yet");
    assert!(matches!(submit(&world, &job(&b, "etl", 0, "250m", None)).await, Outcome::Waiting { .. }));
    // Past `redispatch_after`, a pass creates the pod under the slot it holds.
    world.reconcile_until(&a, JobState::SettingUp).await;
    assert_eq!(world.pods_created_for(&a).len(), 1);
    assert_eq!(usage_and_slots(&world, "etl").await, (Resources::job(250, 256 << 20), Resources::job(250, 256 << 20)));

    // The end is recorded, and the release never happens.
    let end =
        StateChange::new(JobState::SettingUp, 1, JobState::Cancelled, jiff::Timestamp::now(), "Cancelled", "by hand");
    assert!(matches!(store.change(&a, &end).await.unwrap(), podbridge::store::Changed::Applied(_)));
    let report = world.pass().await;
    assert_eq!(report.queues.leaked_released, 1, "{report:?}");
    assert_eq!(report.queues.admitted, 1, "the freed room admitted the next job: {report:?}");
    assert_ne!(world.recorded(&b).await.state, JobState::Queued);

    // A usage written wrong by hand is set back to what the slots say.
    world
        .stack
        .dynamodb()
        .put_item()
        .table_name(&world.queue_table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("usage".into()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("etl".into()))
        .item("jobs", aws_sdk_dynamodb::types::AttributeValue::N("5".into()))
        .item("version", aws_sdk_dynamodb::types::AttributeValue::N("1000".into()))
        .send()
        .await
        .unwrap();
    let report = world.pass().await;
    assert_eq!(report.queues.drift_repaired, 1, "{report:?}");
    let (usage, truth) = usage_and_slots(&world, "etl").await;
    assert_eq!((usage.jobs, truth.jobs), (1, 1));
}

/// GIVEN the queue table on moto
/// WHEN slots are taken past a limit, with a request larger than the limit, released
/// twice, and a repair is tried with a usage read before another change
/// THEN each is refused or counted once, and the usage is the sum of the slots.
#[tokio::test]
async fn the_queue_table_counts_each_slot_once_and_refuses_what_passes_a_limit() {
    let world = World::builder().name("slots").build().await;
    let store = world.direct_store();
    let limits = Limits { jobs: Some(2), cpu_millis: Some(2_000), ..Limits::NONE };
    let slot = |job: &str, cpu| podbridge_core::admission::Slot {
        job_id: job.into(),
        attempt: 1,
        queue: "etl".into(),
        request: Resources::job(cpu, 1 << 20),
    };
    use podbridge::store::Acquired;
    assert_eq!(
        store.acquire(&slot("big", 3_000), &limits, &Limits::NONE).await.unwrap(),
        Acquired::Full,
        "over the limit alone"
    );
    assert_eq!(store.acquire(&slot("a", 500), &limits, &Limits::NONE).await.unwrap(), Acquired::Admitted);
    assert_eq!(store.acquire(&slot("a", 500), &limits, &Limits::NONE).await.unwrap(), Acquired::Held, "a repeat");
    assert_eq!(store.acquire(&slot("b", 1_500), &limits, &Limits::NONE).await.unwrap(), Acquired::Admitted);
    assert_eq!(store.acquire(&slot("c", 100), &limits, &Limits::NONE).await.unwrap(), Acquired::Full, "2 of 2 jobs");
    assert_eq!(usage_and_slots(&world, "etl").await.0, Resources { jobs: 2, cpu_millis: 2_000, memory_bytes: 2 << 20 });
    assert!(store.release("a", 1).await.unwrap());
    assert!(!store.release("a", 1).await.unwrap(), "released once");
    assert!(!store.release("b", 2).await.unwrap(), "another attempt's slot is not this one's");
    let (usage, truth) = usage_and_slots(&world, "etl").await;
    assert_eq!((usage, truth), (Resources::job(1_500, 1 << 20), Resources::job(1_500, 1 << 20)));
    let seen = store.usage().await.unwrap()["etl"];
    assert_eq!(store.acquire(&slot("d", 100), &limits, &Limits::NONE).await.unwrap(), Acquired::Admitted);
    assert!(!store.repair("etl", &seen, Resources::default()).await.unwrap(), "the usage moved since it was read");
}

/// GIVEN the queue table on moto with slots held
/// WHEN their holders give them back as they know them: exactly, with a size that is not
/// the stored one (an attempt sized otherwise when it was adopted), twice, and for a job
/// that holds none
/// THEN each slot leaves once, the usage loses exactly what the stored slot held, and
/// the rest change nothing.
#[tokio::test]
async fn a_slot_given_back_as_its_holder_knows_it_leaves_once_and_exactly() {
    let world = World::builder().name("release").build().await;
    let store = world.direct_store();
    let slot = |job: &str, cpu| podbridge_core::admission::Slot {
        job_id: job.into(),
        attempt: 1,
        queue: "etl".into(),
        request: Resources::job(cpu, 1 << 20),
    };
    use podbridge::store::Acquired;
    for (job, cpu) in [("a", 500), ("b", 700), ("c", 900)] {
        assert_eq!(store.acquire(&slot(job, cpu), &Limits::NONE, &Limits::NONE).await.unwrap(), Acquired::Admitted);
    }
    assert!(store.release_known(&slot("a", 500)).await.unwrap(), "exactly the stored slot");
    assert!(!store.release_known(&slot("a", 500)).await.unwrap(), "given back once");
    // Known with another size: the stored one is read and given back as stored.
    assert!(store.release_known(&slot("b", 1_000)).await.unwrap());
    let mut other_attempt = slot("c", 900);
    other_attempt.attempt = 2;
    assert!(!store.release_known(&other_attempt).await.unwrap(), "attempt 2 does not hold attempt 1's slot");
    assert!(!store.release_known(&slot("none", 100)).await.unwrap(), "a job that holds no slot");
    let (usage, truth) = usage_and_slots(&world, "etl").await;
    assert_eq!((usage, truth), (Resources::job(900, 1 << 20), Resources::job(900, 1 << 20)), "only c's slot is left");
    let all = store.usage().await.unwrap()[podbridge::store::ALL_QUEUES].held;
    assert_eq!(all, Resources::job(900, 1 << 20), "across all queues too");
}

/// GIVEN a queue of 2 CPU holding one job, and a job of 1.5 CPU waiting behind it
/// WHEN the queue's limit is lowered to 1 CPU
/// THEN the next admission round fails the waiting job, naming both sizes, rather than
/// let it hold its line for ever.
#[tokio::test]
async fn a_waiting_job_a_lowered_limit_can_no_longer_hold_fails_naming_both_sizes() {
    let world = World::builder()
        .name("lowered")
        .guardrails(guardrails())
        .own_cluster(cluster(1, 4_000, Duration::from_secs(600)))
        .build()
        .await;
    let store = world.direct_store();
    let two = Queue { limits: Limits { cpu_millis: Some(2_000), ..Limits::NONE }, ..Queue::unlimited("etl") };
    store.put_queue(&two).await.unwrap();
    let run = unique_name("lo");
    let (running, big) = (format!("{run}-running"), format!("{run}-big"));
    assert!(matches!(submit(&world, &job(&running, "etl", 0, "1", None)).await, Outcome::Dispatched { .. }));
    assert!(matches!(submit(&world, &job(&big, "etl", 0, "1500m", None)).await, Outcome::Waiting { .. }));
    store.put_queue(&Queue { limits: Limits { cpu_millis: Some(1_000), ..Limits::NONE }, ..two }).await.unwrap();
    tokio::time::sleep(podbridge::services::QUEUES_REFRESH).await;
    let report = world.reconciler.admit_waiting().await.unwrap();
    assert_eq!(report.refused, 1, "{report:?}");
    let failed = world.recorded(&big).await;
    assert_eq!((failed.state, failed.reason.as_deref()), (JobState::Failed, Some("NeverFits")));
    assert!(failed.message.unwrap_or_default().contains("it requests 1500m CPU and queue etl may hold at most 1 CPU"));
    assert!(world.pods_created_for(&big).is_empty());
}
