//! Admission: order within a queue, each queue's limits and pause, the limit across all
//! queues shared by weight, and the reason and position of every job that waits.

use std::collections::BTreeMap;

use jiff::Timestamp;
use podbridge_core::admission::{Held, Limits, Queue, Resources, Waiting, admit};

const GI: u64 = 1 << 30;

fn queue(name: &str, limits: Limits, weight: u32) -> (String, Queue) {
    (name.to_owned(), Queue { name: name.to_owned(), limits, max_pending: None, weight, paused: false })
}

fn jobs(limit: u32) -> Limits {
    Limits { jobs: Some(limit), ..Limits::default() }
}

fn waiting(id: &str, queue: &str, priority: i32, second: i64, cpu_millis: u64) -> Waiting {
    Waiting {
        job_id: id.to_owned(),
        queue: queue.to_owned(),
        priority,
        queued_at: Timestamp::from_second(1_800_000_000 + second).unwrap(),
        request: Resources::job(cpu_millis, GI),
    }
}

#[test]
fn an_idle_system_admits_everything_that_fits_highest_priority_then_oldest_first() {
    let queues = BTreeMap::from([queue("etl", jobs(3), 1)]);
    let line = [
        waiting("late", "etl", 0, 30, 100),
        waiting("urgent", "etl", 5, 40, 100),
        waiting("early", "etl", 0, 10, 100),
        waiting("last", "etl", 0, 50, 100),
    ];
    let plan = admit(&queues, &BTreeMap::new(), &Limits::default(), &line);
    assert_eq!(plan.admit, ["urgent", "early", "late"]);
    let held = &plan.wait["last"];
    assert_eq!((held.position, held.reason.as_str()), (1, "queue etl: 3 of 3 jobs held"));
}

#[test]
fn what_a_queue_already_holds_counts_and_every_waiting_job_knows_its_place() {
    let queues = BTreeMap::from([queue("etl", jobs(20), 1)]);
    let held = BTreeMap::from([(
        "etl".to_owned(),
        Held { admitted: Resources { jobs: 20, cpu_millis: 20_000, memory_bytes: 20 * GI }, pending: 0 },
    )]);
    let line: Vec<_> = (0..3).map(|i| waiting(&format!("j{i}"), "etl", 0, i, 100)).collect();
    let plan = admit(&queues, &held, &Limits::default(), &line);
    assert!(plan.admit.is_empty());
    let places: Vec<_> = (0..3).map(|i| plan.wait[&format!("j{i}")].position).collect();
    assert_eq!(places, [1, 2, 3]);
    assert_eq!(plan.wait["j0"].reason, "queue etl: 20 of 20 jobs held");
    assert_eq!(plan.wait["j2"].reason, "2 ahead of it in queue etl; queue etl: 20 of 20 jobs held");
}

#[test]
fn a_large_job_at_the_head_is_not_overtaken_by_small_ones_of_its_queue() {
    let cpu = Limits { cpu_millis: Some(4_000), ..Limits::default() };
    let queues = BTreeMap::from([queue("ml", cpu, 1)]);
    let held = BTreeMap::from([(
        "ml".to_owned(),
        Held { admitted: Resources { jobs: 1, cpu_millis: 2_000, memory_bytes: GI }, pending: 0 },
    )]);
    let line = [waiting("big", "ml", 0, 0, 3_000), waiting("small", "ml", 0, 1, 500)];
    let plan = admit(&queues, &held, &Limits::default(), &line);
    assert!(plan.admit.is_empty(), "{plan:?}");
    assert_eq!(plan.wait["big"].reason, "queue ml: 2 of 4 CPU held");
    assert_eq!(plan.wait["small"].position, 2);
}

#[test]
fn a_paused_queue_admits_nothing_and_a_missing_one_says_so() {
    let (name, mut paused) = queue("etl", Limits::default(), 1);
    paused.paused = true;
    let queues = BTreeMap::from([(name, paused)]);
    let line = [waiting("a", "etl", 0, 0, 100), waiting("b", "gone", 0, 0, 100)];
    let plan = admit(&queues, &BTreeMap::new(), &Limits::default(), &line);
    assert!(plan.admit.is_empty());
    assert_eq!(plan.wait["a"].reason, "queue etl is paused");
    assert_eq!(plan.wait["b"].reason, "queue gone does not exist");
}

#[test]
fn admitted_jobs_whose_pods_are_not_running_are_bounded_per_queue() {
    let (name, mut etl) = queue("etl", Limits::default(), 1);
    etl.max_pending = Some(2);
    let queues = BTreeMap::from([(name, etl)]);
    let line: Vec<_> = (0..4).map(|i| waiting(&format!("j{i}"), "etl", 0, i, 100)).collect();
    let plan = admit(&queues, &BTreeMap::new(), &Limits::default(), &line);
    assert_eq!(plan.admit, ["j0", "j1"]);
    assert_eq!(plan.wait["j2"].reason, "queue etl: 2 of 2 admitted jobs not yet running");
}

#[test]
fn the_limit_across_queues_is_shared_by_weight_on_the_dominant_resource() {
    let queues = BTreeMap::from([queue("etl", Limits::default(), 1), queue("ml", Limits::default(), 3)]);
    let mut line: Vec<_> = (0..50).map(|i| waiting(&format!("etl-{i}"), "etl", 0, i, 1_000)).collect();
    line.extend((0..50).map(|i| waiting(&format!("ml-{i}"), "ml", 0, i, 1_000)));
    let total = Limits { cpu_millis: Some(40_000), ..Limits::default() };
    let plan = admit(&queues, &BTreeMap::new(), &total, &line);
    let count = |queue: &str| plan.admit.iter().filter(|id| id.starts_with(queue)).count();
    assert_eq!((count("etl"), count("ml")), (10, 30), "weights 1 and 3 of 40 CPUs");
    assert_eq!(plan.wait["etl-10"].reason, "all queues: 40 of 40 CPU held");
    assert_eq!(plan.wait["ml-30"].position, 1);
}

#[test]
fn a_queue_that_holds_more_than_its_share_waits_while_another_catches_up() {
    let queues = BTreeMap::from([queue("etl", Limits::default(), 1), queue("ml", Limits::default(), 1)]);
    let held = BTreeMap::from([(
        "etl".to_owned(),
        Held { admitted: Resources { jobs: 6, cpu_millis: 6_000, memory_bytes: 6 * GI }, pending: 0 },
    )]);
    let line = [waiting("etl-next", "etl", 9, 0, 1_000), waiting("ml-next", "ml", 0, 5, 1_000)];
    let plan = admit(&queues, &held, &jobs(7), &line);
    assert_eq!(plan.admit, ["ml-next"], "the queue with the smaller share is offered the one free slot");
    assert_eq!(plan.wait["etl-next"].reason, "all queues: 7 of 7 jobs held");
}
