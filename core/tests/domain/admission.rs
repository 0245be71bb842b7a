//! Admission: order within a queue, each queue's limits and pause, the limit across all
//! queues shared by weight, and the reason and position of every job that waits.

use std::collections::BTreeMap;

use jiff::Timestamp;
use podbridge_core::admission::{
    Limits, NodeSize, Queue, Queues, Resources, Slot, Waiting, admit, never_fits, usage_of,
};

const GI: u64 = 1 << 30;

fn queue(name: &str, limits: Limits, weight: u32) -> Queue {
    Queue { limits, weight, ..Queue::unlimited(name) }
}

fn queues(defined: impl IntoIterator<Item = Queue>, total: Limits) -> Queues {
    Queues::new(defined, total)
}

fn holding(queue: &str, jobs: u32, cpu_millis: u64, memory_bytes: u64) -> BTreeMap<String, Resources> {
    BTreeMap::from([(queue.to_owned(), Resources { jobs, cpu_millis, memory_bytes })])
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
    let queues = queues([queue("etl", jobs(3), 1)], Limits::NONE);
    let line = [
        waiting("late", "etl", 0, 30, 100),
        waiting("urgent", "etl", 5, 40, 100),
        waiting("early", "etl", 0, 10, 100),
        waiting("last", "etl", 0, 50, 100),
    ];
    let plan = admit(&queues, &BTreeMap::new(), &line);
    assert_eq!(plan.admit, ["urgent", "early", "late"]);
    let held = &plan.wait["last"];
    assert_eq!((held.position, held.reason.as_str()), (1, "queue etl: 3 of 3 jobs held"));
}

#[test]
fn what_a_queue_already_holds_counts_and_every_waiting_job_knows_its_place() {
    let queues = queues([queue("etl", jobs(20), 1)], Limits::NONE);
    let held = holding("etl", 20, 20_000, 20 * GI);
    let line: Vec<_> = (0..3).map(|i| waiting(&format!("j{i}"), "etl", 0, i, 100)).collect();
    let plan = admit(&queues, &held, &line);
    assert!(plan.admit.is_empty());
    let places: Vec<_> = (0..3).map(|i| plan.wait[&format!("j{i}")].position).collect();
    assert_eq!(places, [1, 2, 3]);
    assert_eq!(plan.wait["j0"].reason, "queue etl: 20 of 20 jobs held");
    assert_eq!(plan.wait["j2"].reason, "2 ahead of it in queue etl; queue etl: 20 of 20 jobs held");
}

#[test]
fn a_large_job_at_the_head_is_not_overtaken_by_small_ones_of_its_queue() {
    let cpu = Limits { cpu_millis: Some(4_000), ..Limits::default() };
    let queues = queues([queue("ml", cpu, 1)], Limits::NONE);
    let held = holding("ml", 1, 2_000, GI);
    let line = [waiting("big", "ml", 0, 0, 3_000), waiting("small", "ml", 0, 1, 500)];
    let plan = admit(&queues, &held, &line);
    assert!(plan.admit.is_empty(), "{plan:?}");
    assert_eq!(plan.wait["big"].reason, "queue ml: 2 of 4 CPU held");
    assert_eq!(plan.wait["small"].position, 2);
}

#[test]
fn a_paused_queue_admits_nothing_and_a_missing_one_says_so() {
    let paused = Queue { paused: true, ..queue("etl", Limits::NONE, 1) };
    let queues = queues([paused], Limits::NONE);
    let line = [waiting("a", "etl", 0, 0, 100), waiting("b", "gone", 0, 0, 100)];
    let plan = admit(&queues, &BTreeMap::new(), &line);
    assert!(plan.admit.is_empty());
    assert_eq!(plan.wait["a"].reason, "queue etl is paused");
    assert_eq!(plan.wait["b"].reason, "queue gone does not exist");
}

#[test]
fn the_limit_across_queues_is_shared_by_weight_on_the_dominant_resource() {
    let total = Limits { cpu_millis: Some(40_000), ..Limits::default() };
    let queues = queues([queue("etl", Limits::NONE, 1), queue("ml", Limits::NONE, 3)], total);
    let mut line: Vec<_> = (0..50).map(|i| waiting(&format!("etl-{i}"), "etl", 0, i, 1_000)).collect();
    line.extend((0..50).map(|i| waiting(&format!("ml-{i}"), "ml", 0, i, 1_000)));
    let plan = admit(&queues, &BTreeMap::new(), &line);
    let count = |queue: &str| plan.admit.iter().filter(|id| id.starts_with(queue)).count();
    assert_eq!((count("etl"), count("ml")), (10, 30), "weights 1 and 3 of 40 CPUs");
    assert_eq!(plan.wait["etl-10"].reason, "all queues: 40 of 40 CPU held");
    assert_eq!(plan.wait["ml-30"].position, 1);
}

#[test]
fn a_queue_that_holds_more_than_its_share_waits_while_another_catches_up() {
    let queues = queues([queue("etl", Limits::NONE, 1), queue("ml", Limits::NONE, 1)], jobs(7));
    let held = holding("etl", 6, 6_000, 6 * GI);
    let line = [waiting("etl-next", "etl", 9, 0, 1_000), waiting("ml-next", "ml", 0, 5, 1_000)];
    let plan = admit(&queues, &held, &line);
    assert_eq!(plan.admit, ["ml-next"], "the queue with the smaller share is offered the one free slot");
    assert_eq!(plan.wait["etl-next"].reason, "all queues: 7 of 7 jobs held");
}

#[test]
fn what_queues_without_waiting_jobs_hold_still_counts_against_the_limit_across_queues() {
    let queues = queues([queue("etl", Limits::NONE, 1), queue("ml", Limits::NONE, 1)], jobs(5));
    let held = holding("etl", 5, 5_000, 5 * GI);
    let plan = admit(&queues, &held, &[waiting("ml-1", "ml", 0, 0, 100)]);
    assert!(plan.admit.is_empty(), "{plan:?}");
    assert_eq!(plan.wait["ml-1"].reason, "all queues: 5 of 5 jobs held");
}

#[test]
fn the_default_queue_always_exists_without_limits() {
    let queues = queues([], Limits::NONE);
    assert_eq!(queues.names(), "default");
    let plan = admit(&queues, &BTreeMap::new(), &[waiting("a", "default", 0, 0, 100)]);
    assert_eq!(plan.admit, ["a"]);
}

#[test]
fn a_job_larger_than_its_queue_all_queues_or_any_node_never_fits_and_is_told_both_sizes() {
    let etl = queue("etl", Limits { cpu_millis: Some(4_000), memory_bytes: Some(8 * GI), jobs: Some(10) }, 1);
    let total = Limits { cpu_millis: Some(16_000), ..Limits::NONE };
    let node = Some(NodeSize { cpu_millis: 8_000, memory_bytes: 4 * GI });
    let fits = Resources::job(2_000, 2 * GI);
    assert_eq!(never_fits(fits, &etl, &total, node), None);
    assert_eq!(
        never_fits(Resources::job(6_000, GI), &etl, &total, node).as_deref(),
        Some("it requests 6 CPU and queue etl may hold at most 4 CPU")
    );
    let open = queue("open", Limits::NONE, 1);
    assert_eq!(
        never_fits(Resources::job(20_000, GI), &open, &total, node).as_deref(),
        Some("it requests 20 CPU and all queues together may hold at most 16 CPU")
    );
    assert_eq!(
        never_fits(Resources::job(1_000, 6 * GI), &open, &total, node).as_deref(),
        Some("it requests 6Gi of memory and the largest node the cluster has or can add has 4Gi")
    );
    assert_eq!(never_fits(Resources::job(1_000, 6 * GI), &open, &total, None), None, "no node known: no verdict");
    let closed = queue("closed", jobs(0), 1);
    assert!(never_fits(fits, &closed, &total, node).unwrap().contains("a limit of 0"));
}

#[test]
fn usage_is_the_sum_of_the_slots_per_queue() {
    let slot = |job: &str, queue: &str, cpu| Slot {
        job_id: job.to_owned(),
        attempt: 1,
        queue: queue.to_owned(),
        request: Resources::job(cpu, GI),
    };
    let slots = [slot("a", "etl", 1_000), slot("b", "etl", 500), slot("c", "ml", 250)];
    let usage = usage_of(&slots);
    assert_eq!(usage["etl"], Resources { jobs: 2, cpu_millis: 1_500, memory_bytes: 2 * GI });
    assert_eq!(usage["ml"], Resources { jobs: 1, cpu_millis: 250, memory_bytes: GI });
}

#[test]
fn the_text_order_of_wait_places_is_the_admission_order() {
    use podbridge_core::admission::in_order;
    use podbridge_core::record::WaitPlace;
    let mut line = vec![
        waiting("low-old", "etl", -1000, 0, 100),
        waiting("top", "etl", 1000, 50, 100),
        waiting("mid-new", "etl", 3, 40, 100),
        waiting("mid-old", "etl", 3, 10, 100),
        waiting("mid-old-b", "etl", 3, 10, 100),
        waiting("zero", "etl", 0, 0, 100),
        waiting("minus", "etl", -3, 0, 100),
    ];
    let mut by_text: Vec<_> = line
        .iter()
        .map(|w| (WaitPlace::new(&w.queue, w.priority, w.queued_at, &w.job_id).order, w.job_id.clone()))
        .collect();
    by_text.sort();
    in_order(&mut line);
    let ordered: Vec<_> = line.iter().map(|w| w.job_id.clone()).collect();
    assert_eq!(by_text.into_iter().map(|(_, id)| id).collect::<Vec<_>>(), ordered);
    assert_eq!(ordered[..3], ["top", "mid-old", "mid-old-b"]);
}
