//! The queue commands as an operator runs them: `podbridge queues` and its subcommands
//! against the world's queue table and job table, `list --queue` and `get` of a job that
//! waits for room. Waiting jobs are written as admission writes them (a `queued` record
//! moved to `queued` with reason `Waiting` and its place in the queue's order), and
//! what admitted jobs hold as admission takes it (a slot acquired in the queue table).

use jiff::Timestamp;
use podbridge::store::{Changed, Definitions, JobStore, QueueStore};
use podbridge_core::admission::{Limits, Queue, Resources, Slot};
use podbridge_core::record::{JobRecord, StateChange, WAITING, WaitPlace};
use podbridge_core::state::JobState;
use podbridge_tests::unique_name;
use serde_json::{Value, json};

use super::{World, exits, podbridge, rows, text, world};

impl World {
    /// Records `id` in `queue` with `priority`, waiting for room because of `why`.
    async fn waiting(&self, id: &str, queue: &str, priority: i32, why: &str) -> JobRecord {
        let record = self.record_in(id, "batch", json!({ "queue": queue, "priority": priority })).await;
        let mut change = StateChange::new(JobState::Queued, 1, JobState::Queued, Timestamp::now(), WAITING, why);
        change.wait = Some(WaitPlace::new(queue, priority, record.created_at, id));
        match self.store.change(id, &change).await.unwrap() {
            Changed::Applied(record) => *record,
            Changed::Conflict(current) => panic!("{id}: waiting conflicted with {current:?}"),
        }
    }

    /// The queues as stored.
    async fn definitions(&self) -> Definitions {
        self.store.definitions().await.unwrap()
    }

    async fn stored_queue(&self, name: &str) -> Queue {
        let definitions = self.definitions().await;
        definitions.queues.into_iter().find(|q| q.name == name).unwrap_or_else(|| panic!("queue {name} is stored"))
    }

    /// `podbridge queues ARGS` with the world's settings and `extra`; its stdout, stderr.
    fn queues(&self, args: &[&str], extra: &[(&'static str, String)], code: i32) -> (String, String) {
        let env = [self.env(), extra.to_vec()].concat();
        let output = podbridge(&[&["queues"], args].concat(), &env, b"");
        (exits(&output, code), text(&output.stderr))
    }
}

/// The line of `text` that starts with `start`.
fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
}

/// The cells of a line of a table whose columns are three or more blanks apart.
fn cells(line: &str) -> Vec<String> {
    line.split("   ").map(str::trim).filter(|cell| !cell.is_empty()).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn given_queues_when_set_paused_resumed_and_limited_then_each_command_prints_and_stores_what_it_says() {
    let world = world().await;

    // A fresh deployment has the default queue, stored or not, and no limit across queues.
    let (stdout, _) = world.queues(&[], &[], 0);
    let header = cells(line(&stdout, "NAME"));
    let columns =
        ["NAME", "LIMITS", "WEIGHT", "PAUSED", "ADMITTED", "RUNNING", "NOT RUNNING", "WAITING", "OLDEST WAITING"];
    assert_eq!(header, columns, "{stdout}");
    assert_eq!(cells(line(&stdout, "default")), ["default", "none", "1", "no", "nothing", "0", "0", "0", "-"]);
    assert!(
        line(&stdout, "Limit across all queues:")
            .ends_with("none (none is stored, and PODBRIDGE_MAX_ADMITTED_* are not set here)"),
        "{stdout}"
    );
    // Without a stored limit, the deployment's default is the one that applies.
    let deployment =
        [("PODBRIDGE_MAX_ADMITTED_JOBS", "40".to_owned()), ("PODBRIDGE_MAX_ADMITTED_CPU", "64".to_owned())];
    let (stdout, _) = world.queues(&["list"], &deployment, 0);
    assert!(
        line(&stdout, "Limit across all queues:").contains("40 jobs, 64 CPU (the deployment's default"),
        "{stdout}"
    );
    assert_eq!(world.definitions().await, Definitions::default(), "reading stores nothing");

    // set creates a queue with what is given, and prints it as stored.
    let (stdout, stderr) =
        world.queues(&["set", "etl", "--jobs", "2", "--cpu", "4", "--memory", "8Gi", "--weight", "3"], &[], 0);
    assert_eq!(cells(line(&stdout, "Limits")), ["Limits", "2 jobs, 4 CPU, 8Gi memory"], "{stdout}");
    assert_eq!(cells(line(&stdout, "Weight")), ["Weight", "3"]);
    assert_eq!(cells(line(&stdout, "Paused")), ["Paused", "no"]);
    assert!(stderr.contains("queue etl created") && stderr.contains("every 2 s"), "{stderr}");
    let etl = Queue {
        name: "etl".into(),
        limits: Limits { jobs: Some(2), cpu_millis: Some(4000), memory_bytes: Some(8 << 30) },
        weight: 3,
        paused: false,
        fail_unschedulable: false,
    };
    assert_eq!(world.stored_queue("etl").await, etl);

    // ... and changes only the fields given.
    let (stdout, _) = world.queues(&["set", "etl", "--cpu", "none", "--fail-unschedulable", "true"], &[], 0);
    assert_eq!(cells(line(&stdout, "Limits")), ["Limits", "2 jobs, 8Gi memory"], "{stdout}");
    let etl = Queue { limits: Limits { cpu_millis: None, ..etl.limits }, fail_unschedulable: true, ..etl };
    assert_eq!(world.stored_queue("etl").await, etl);

    // pause and resume flip `paused` and nothing else.
    let (stdout, stderr) = world.queues(&["pause", "etl"], &[], 0);
    assert_eq!(cells(line(&stdout, "Paused")), ["Paused", "yes"]);
    assert!(stderr.contains("queue etl paused") && stderr.contains("runs on"), "{stderr}");
    assert_eq!(world.stored_queue("etl").await, Queue { paused: true, ..etl.clone() });
    let (_, stderr) = world.queues(&["resume", "etl"], &[], 0);
    assert!(stderr.contains("queue etl resumed"), "{stderr}");
    assert_eq!(world.stored_queue("etl").await, etl);
    // A queue that does not exist is not created by a pause; `default` always exists.
    let (_, stderr) = world.queues(&["pause", "nope"], &[], 1);
    assert!(stderr.contains("there is no queue \"nope\"; the queues are: default, etl"), "{stderr}");
    world.queues(&["pause", "default"], &[], 0);
    assert!(world.stored_queue("default").await.paused);
    world.queues(&["resume", "default"], &[], 0);
    assert_eq!(world.stored_queue("default").await, Queue::unlimited("default"));

    // limits: shown without flags, stored and merged with flags.
    let (stdout, _) = world.queues(&["limits"], &deployment, 0);
    assert!(stdout.starts_with("Limit across all queues: 40 jobs, 64 CPU (the deployment's default"), "{stdout}");
    let (stdout, stderr) = world.queues(&["limits", "--jobs", "10", "--memory", "64Gi"], &deployment, 0);
    assert!(stdout.starts_with("Limit across all queues: 10 jobs, 64Gi memory (stored"), "{stdout}");
    assert!(stderr.contains("replaces the deployment's default (40 jobs, 64 CPU) entirely"), "{stderr}");
    let (stdout, _) = world.queues(&["limits", "--memory", "none", "--cpu", "16"], &[], 0);
    assert!(stdout.starts_with("Limit across all queues: 10 jobs, 16 CPU (stored"), "{stdout}");
    let total = Limits { jobs: Some(10), cpu_millis: Some(16_000), memory_bytes: None };
    assert_eq!(world.definitions().await.total, Some(total));

    // What admitted jobs hold, what runs and what waits, per queue and in all.
    let run = unique_name("etl-run");
    world.record_in(&run, "batch", json!({ "queue": "etl", "resources": { "cpu": "1", "memory": "1Gi" } })).await;
    world.change(&run, JobState::Queued, JobState::SettingUp, |c| c.pod_name = Some(format!("{run}-1"))).await;
    world.change(&run, JobState::SettingUp, JobState::Executing, |_| {}).await;
    let slot = Slot {
        job_id: run.clone(),
        attempt: 1,
        queue: "etl".into(),
        request: Resources { jobs: 1, cpu_millis: 1000, memory_bytes: 1 << 30 },
    };
    let acquired = world.store.acquire(&slot, &etl.limits, &total).await.unwrap();
    assert_eq!(acquired, podbridge::store::Acquired::Admitted);
    let why = "queue etl: 2 of 2 jobs held";
    let waiting = [unique_name("etl-a"), unique_name("etl-b"), unique_name("etl-c")];
    world.waiting(&waiting[0], "etl", 0, why).await;
    world.waiting(&waiting[1], "etl", 7, why).await;
    world.waiting(&waiting[2], "etl", 0, why).await;

    let (stdout, _) = world.queues(&[], &[], 0);
    let row = cells(line(&stdout, "etl"));
    assert_eq!(
        &row[..8],
        ["etl", "2 jobs, 8Gi memory", "3", "no", "1 job, 1 CPU, 1Gi memory", "1", "0", "3"],
        "{stdout}"
    );
    assert!(row[8].ends_with('s'), "the oldest waits some seconds: {stdout}");
    assert!(
        line(&stdout, "Limit across all queues:")
            .ends_with("10 jobs, 16 CPU (stored; `podbridge queues limits` changes it)")
    );
    assert!(line(&stdout, "Admitted across all queues:").ends_with("1 job, 1 CPU, 1Gi memory"), "{stdout}");

    let (json, _) = world.queues(&["list", "--json"], &[], 0);
    let json: Value = serde_json::from_str(&json).expect("--json prints JSON");
    let etl_json = json["queues"].as_array().unwrap().iter().find(|q| q["name"] == "etl").expect("etl in the JSON");
    assert_eq!(etl_json["limits"]["jobs"], 2);
    assert_eq!(etl_json["limits"]["memory_bytes"], 8_u64 << 30);
    assert_eq!(etl_json["limits"]["cpu_millis"], Value::Null);
    assert_eq!((etl_json["weight"].as_u64(), etl_json["paused"].as_bool()), (Some(3), Some(false)));
    assert_eq!(
        (etl_json["admitted"]["jobs"].as_u64(), etl_json["admitted"]["cpu_millis"].as_u64()),
        (Some(1), Some(1000))
    );
    assert_eq!((etl_json["running"].as_u64(), etl_json["waiting"].as_u64()), (Some(1), Some(3)));
    assert_eq!(json["all_queues"]["limits_from"], "stored");
    assert_eq!(json["all_queues"]["limits"]["cpu_millis"], 16_000);

    // get: the queue, then its waiting jobs in admission order (higher priority first,
    // then the oldest).
    let (stdout, _) = world.queues(&["get", "etl"], &[], 0);
    assert_eq!(cells(line(&stdout, "Limits")), ["Limits", "2 jobs, 8Gi memory"], "{stdout}");
    assert_eq!(cells(line(&stdout, "Admitted")), ["Admitted", "1 job, 1 CPU, 1Gi memory"], "{stdout}");
    assert_eq!(cells(line(&stdout, "Running")), ["Running", "1"], "{stdout}");
    assert!(line(&stdout, "Waiting ").contains(" 3 (the oldest recorded "), "{stdout}");
    assert!(stdout.contains("\nWaiting jobs (all, in admission order):\n"), "{stdout}");
    let table: Vec<Vec<String>> = stdout.lines().skip_while(|l| !l.starts_with("POSITION")).map(cells).collect();
    assert_eq!(table[0], ["POSITION", "JOB", "PRIORITY", "WAITING FOR", "REASON"], "{stdout}");
    let order: Vec<(&str, &str, &str)> =
        table[1..].iter().map(|row| (row[0].as_str(), row[1].as_str(), row[2].as_str())).collect();
    assert_eq!(order, [("1", &*waiting[1], "7"), ("2", &*waiting[0], "0"), ("3", &*waiting[2], "0")], "{stdout}");
    assert!(table[1..].iter().all(|row| row[4] == why), "{stdout}");
    let (stdout, _) = world.queues(&["get", "etl", "--waiting", "1"], &[], 0);
    assert!(stdout.contains("\nWaiting jobs (the first 1 of 3, in admission order):\n"), "{stdout}");
    let (json, _) = world.queues(&["get", "etl", "--json"], &[], 0);
    let json: Value = serde_json::from_str(&json).expect("--json prints JSON");
    let positions: Vec<(u64, &str)> = json["waiting_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (job["position"].as_u64().unwrap(), job["job_id"].as_str().unwrap()))
        .collect();
    assert_eq!(positions, [(1, &*waiting[1]), (2, &*waiting[0]), (3, &*waiting[2])]);
    assert_eq!(json["name"], "etl");

    let (_, stderr) = world.queues(&["get", "nope"], &[], 1);
    assert!(stderr.contains("there is no queue \"nope\"; the queues are: default, etl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn given_jobs_waiting_in_a_queue_when_listed_by_queue_then_they_come_first_in_admission_order_with_positions() {
    let world = world().await;
    let why = "queue etl is paused";
    // Recorded oldest first; the order is priority first, then age.
    let oldest = unique_name("oldest");
    let middle = unique_name("middle");
    let urgent = unique_name("urgent");
    world.waiting(&oldest, "etl", 0, why).await;
    world.waiting(&middle, "etl", 0, why).await;
    world.waiting(&urgent, "etl", 100, why).await;
    let running = unique_name("etl-running");
    world.record_in(&running, "batch", json!({ "queue": "etl" })).await;
    world.change(&running, JobState::Queued, JobState::SettingUp, |c| c.pod_name = Some(format!("{running}-1"))).await;
    world.change(&running, JobState::SettingUp, JobState::Executing, |_| {}).await;
    let elsewhere = unique_name("ml-waiting");
    world.waiting(&elsewhere, "ml", 0, "queue ml is paused").await;
    world.job_in(&unique_name("default-run"), "batch", &[JobState::SettingUp]).await;

    let listed = |args: &[&str]| {
        let output = podbridge(&[&["list"], args].concat(), &world.env(), b"");
        rows(&exits(&output, 0))
    };
    let by_queue = listed(&["--queue", "etl"]);
    assert_eq!(by_queue[0], ["POSITION", "ID", "STATE", "PRIORITY", "ATTEMPT", "AGE", "POD"]);
    let shown: Vec<(&str, &str, &str, &str)> =
        by_queue[1..].iter().map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str())).collect();
    assert_eq!(
        shown,
        [
            ("1", &*urgent, "queued", "100"),
            ("2", &*oldest, "queued", "0"),
            ("3", &*middle, "queued", "0"),
            ("-", &*running, "executing", "0"),
        ],
        "the waiting jobs first, in admission order, then the queue's others"
    );
    let queued = listed(&["--queue", "etl", "--state", "queued"]);
    let ids: Vec<&str> = queued[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(ids, [&*urgent, &*oldest, &*middle]);
    let executing = listed(&["--queue", "etl", "--state", "executing"]);
    assert_eq!(executing[0], ["ID", "STATE", "ATTEMPT", "CLASS", "AGE", "POD"], "no waiting jobs asked for");
    assert_eq!(executing[1..].iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), [&*running]);
    let limited = listed(&["--queue", "etl", "--limit", "2"]);
    assert_eq!(limited[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), [&*urgent, &*oldest]);

    let output = podbridge(&["list", "--queue", "etl", "--json"], &world.env(), b"");
    let json: Value = serde_json::from_str(&exits(&output, 0)).expect("--json");
    let positions: Vec<(Option<u64>, &str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["position"].as_u64(), row["job_id"].as_str().unwrap(), row["queue"].as_str().unwrap()))
        .collect();
    assert_eq!(
        positions,
        [(Some(1), &*urgent, "etl"), (Some(2), &*oldest, "etl"), (Some(3), &*middle, "etl"), (None, &*running, "etl")]
    );

    // get shows where a waiting job stands, counted now.
    let stdout = exits(&podbridge(&["get", &middle], &world.env(), b""), 0);
    let waiting_line = line(&stdout, "Waiting");
    assert!(waiting_line.ends_with(&format!("position 3 in queue etl (2 ahead): {why}")), "{stdout}");
    assert!(line(&stdout, "Queue").ends_with(" etl") && line(&stdout, "Priority").ends_with(" 0"), "{stdout}");
    let stdout = exits(&podbridge(&["get", &urgent], &world.env(), b""), 0);
    assert!(line(&stdout, "Waiting").ends_with(&format!("position 1 in queue etl (none ahead): {why}")), "{stdout}");
    assert!(line(&stdout, "Priority").ends_with(" 100"), "{stdout}");
    let stdout = exits(&podbridge(&["get", &running], &world.env(), b""), 0);
    assert!(!stdout.contains("\nWaiting"), "a running job waits for nothing:\n{stdout}");
    assert!(line(&stdout, "Queue").ends_with(" etl"), "{stdout}");

    let bad = podbridge(&["list", "--queue", "Not_A_Queue"], &world.env(), b"");
    exits(&bad, 64);
    assert!(text(&bad.stderr).contains("--queue") && text(&bad.stderr).contains("lowercase letters"));
}

#[test]
fn given_bad_queue_input_when_a_queue_is_set_then_the_error_names_the_flag_and_what_is_allowed() {
    for (args, needles) in [
        (
            &["queues", "set", "Bad_Name"][..],
            &["\"Bad_Name\" is not a queue name", "lowercase letters, digits and '-'"][..],
        ),
        (&["queues", "set", "etl", "--weight", "0"][..], &["--weight", "0 is not in 1..=1000"][..]),
        (
            &["queues", "set", "etl", "--cpu", "banana"][..],
            &["--cpu", "\"banana\" is not a quantity", "or none (no limit)"][..],
        ),
        (&["queues", "set", "etl", "--memory", "lots"][..], &["--memory", "not a quantity", "512Mi"][..]),
        (&["queues", "set", "etl", "--jobs", "0"][..], &["--jobs", "pause the queue"][..]),
        (&["queues", "set", "etl", "--fail-unschedulable", "maybe"][..], &["--fail-unschedulable", "true, false"][..]),
        (&["queues", "limits", "--jobs", "many"][..], &["--jobs", "not a number of jobs"][..]),
        (&["queues", "pause", "ETL"][..], &["\"ETL\" is not a queue name"][..]),
    ] {
        let output = podbridge(args, &[], b"");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: {needle:?} not in {stderr}");
        }
    }
    let help = exits(&podbridge(&["queues", "set", "--help"], &[], b""), 0);
    assert!(help.contains("every 2 s") && help.contains("never stops running jobs"), "{help}");
}
