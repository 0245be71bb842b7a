//! The operator commands run as an operator runs them: the built binary, against the
//! stack's moto (`AWS_ENDPOINT_URL`) and kube-sim (`KUBECONFIG`), each test with a job
//! table, a queue and, where events matter, a bus of its own. What is asserted is what
//! the operator sees (stdout, stderr, the exit code) and what the command left behind
//! (the queue's messages, the bus's events, the records, the pods).

// `podbridge queues`, `list --queue` and `get` of a waiting job.
#[path = "ops/queues.rs"]
mod queues;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use podbridge::store::dynamodb::{DynamoJobStore, create_table};
use podbridge::store::queue_table;
use podbridge::store::{Changed, Created, JobStore};
use podbridge_core::record::{JobRecord, Source, StateChange};
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, Parsed, parse_message};
use podbridge_tests::events::Subscription;
use podbridge_tests::{Stack, unique_name};
use serde_json::{Value, json};

/// How long any one wait of these tests may last: a bound, never an expectation.
const WAIT: Duration = Duration::from_secs(30);

/// A job table, a queue table and a queue of the test's own.
struct World {
    stack: Stack,
    table: String,
    queue_table: String,
    store: DynamoJobStore,
    queue_url: String,
}

async fn world() -> World {
    let stack = Stack::from_env().await;
    let table = unique_name("jobs");
    create_table(&stack.dynamodb(), &table).await.expect("job table");
    let queue_table = unique_name("queues");
    queue_table::create_table(&stack.dynamodb(), &queue_table).await.expect("queue table");
    let queue_url =
        stack.sqs().create_queue().queue_name(unique_name("queue")).send().await.unwrap().queue_url.unwrap();
    let store = DynamoJobStore::new(stack.dynamodb(), &table).with_queue_table(&queue_table);
    World { stack, table, queue_table, store, queue_url }
}

impl World {
    /// The settings an operator's shell would export for this world.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PODBRIDGE_TABLE", self.table.clone()),
            ("PODBRIDGE_QUEUE_TABLE", self.queue_table.clone()),
            ("PODBRIDGE_QUEUE_URL", self.queue_url.clone()),
        ]
    }

    /// Every message on the queue (received and deleted), waiting a bounded time for `count`.
    async fn messages(&self, count: usize) -> Vec<(String, Value)> {
        let sqs = self.stack.sqs();
        let deadline = Instant::now() + WAIT;
        let mut found = Vec::new();
        while found.len() < count {
            assert!(Instant::now() < deadline, "{count} messages expected on the queue, got {found:?}");
            let received = sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for message in received.messages.unwrap_or_default() {
                let body = serde_json::from_str(message.body().unwrap()).expect("a JSON body");
                found.push((message.message_id.clone().unwrap(), body));
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        found
    }

    /// Records `id` as `queued`, with a spec whose retry rules retry nothing.
    async fn record(&self, id: &str, namespace: &str) -> JobRecord {
        self.record_in(id, namespace, json!({})).await
    }

    /// [`World::record`] with more fields of the job (`queue`, `priority`, ...).
    async fn record_in(&self, id: &str, namespace: &str, more: Value) -> JobRecord {
        let mut body = json!({ "version": 1, "job": { "id": id, "namespace": namespace,
            "image": "registry.example.com/batch/report:1", "command": ["report", "--day", "today"],
            "retry": { "maxAttempts": 1 } } });
        for (key, value) in more.as_object().expect("fields of a job") {
            body["job"][key] = value.clone();
        }
        let guardrails = Guardrails {
            namespaces: vec!["podbridge-jobs".into(), "batch".into()],
            image_prefixes: vec!["registry.example.com/".into()],
            ..Guardrails::default()
        };
        let Ok(Parsed::Job(job)) = parse_message(body.to_string().as_bytes(), "unused", &guardrails) else {
            panic!("a valid job")
        };
        let mut record =
            JobRecord::new(id, JobState::Queued, Source::Direct, Timestamp::now(), "Submitted", "queued by the test");
        record.spec = Some(serde_json::to_value(&job).unwrap());
        record.namespace = Some(namespace.to_owned());
        assert_eq!(self.store.create(&record).await.unwrap(), Created::New);
        record
    }

    /// Moves `id` from `from` to `to` (at attempt 1), with `tweak` filling in the rest.
    async fn change(&self, id: &str, from: JobState, to: JobState, tweak: impl FnOnce(&mut StateChange)) -> JobRecord {
        let mut change =
            StateChange::new(from, 1, to, Timestamp::now(), "Test", &format!("{from} to {to} by the test"));
        if to.is_terminal() {
            change.expires_at = Some(Timestamp::now().as_second() + 86_400);
        }
        tweak(&mut change);
        match self.store.change(id, &change).await.unwrap() {
            Changed::Applied(record) => *record,
            Changed::Conflict(current) => panic!("{id}: {from} -> {to} conflicted with {current:?}"),
        }
    }

    /// Records `id` and moves it through `path` (from `queued`).
    async fn job_in(&self, id: &str, namespace: &str, path: &[JobState]) -> JobRecord {
        let mut record = self.record(id, namespace).await;
        for &to in path {
            let pod = format!("{id}-1");
            record = self
                .change(id, record.state, to, |c| {
                    if to == JobState::SettingUp {
                        c.pod_name = Some(pod);
                    }
                })
                .await;
        }
        record
    }
}

/// The command `podbridge ARGS` with `env` and none of the test's PODBRIDGE_* variables
/// (AWS_* and KUBECONFIG, the stack's, are inherited).
fn command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podbridge"));
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PODBRIDGE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    command
}

/// Runs `podbridge ARGS` to its end, feeding `stdin`.
fn podbridge(args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Output {
    let mut child = command(args, env).spawn().expect("the podbridge binary starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and returns stdout.
fn exits(output: &Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The rows of a `list` table, header first, each split into its cells.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout.lines().map(|line| line.split_whitespace().map(str::to_owned).collect()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn given_job_files_when_submitted_then_their_messages_are_on_the_queue_and_their_ids_printed() {
    let world = world().await;
    let id = unique_name("report");
    let message = json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/batch/report:1" } });
    let dir = std::env::temp_dir().join(unique_name("podbridge-submit"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("job.json");
    std::fs::write(&file, serde_json::to_string_pretty(&message).unwrap()).unwrap();

    let output = podbridge(&["submit", file.to_str().unwrap()], &world.env(), b"");
    assert_eq!(exits(&output, 0), format!("{id}\n"), "stdout is the job id alone, for scripts");
    assert!(text(&output.stderr).contains("sent 1 message to the queue"), "{}", text(&output.stderr));
    let sent = world.messages(1).await;
    assert_eq!(sent[0].1, message, "the message on the queue is the file's");

    // Two messages, one a line, on stdin; the second has no id, so dispatch names it
    // after its SQS message id, and that is the id printed.
    let second = json!({ "version": 1, "job": { "image": "registry.example.com/batch/report:1" } });
    let lines = format!("{message}\n{second}\n");
    let output = podbridge(&["submit", "-", "--queue-url", &world.queue_url], &[], lines.as_bytes());
    let printed: Vec<String> = exits(&output, 0).lines().map(str::to_owned).collect();
    let sent = world.messages(2).await;
    let without_id = sent.iter().find(|(_, body)| *body == second).expect("the message without id was sent");
    assert_eq!(printed, [id.clone(), format!("sqs-{}", without_id.0)]);

    // Input that is not JSON messages sends nothing.
    let output = podbridge(&["submit", "-"], &world.env(), b"{\"version\": 1, \"job\": ");
    exits(&output, 2);
    assert!(text(&output.stderr).contains("stdin: not JSON"), "{}", text(&output.stderr));
    let left = world.stack.sqs().receive_message().queue_url(&world.queue_url).send().await.unwrap();
    assert!(left.messages.unwrap_or_default().is_empty(), "nothing was sent");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn given_direct_when_a_job_is_submitted_then_it_is_recorded_its_pod_created_and_its_changes_announced() {
    let world = world().await;
    let events = Subscription::new(&world.stack).await.expect("a subscriber to the bus");
    let id = unique_name("direct");
    let message = json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/batch/report:1" } });
    let args =
        ["submit", "--direct", "-", "--table", &world.table, "--queue-table", &world.queue_table, "--bus", &events.bus];

    let output = podbridge(&args, &[], message.to_string().as_bytes());
    assert_eq!(exits(&output, 0), format!("{id}\n"));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("pod {id}-1 created")), "{stderr}");
    assert!(stderr.contains("PODBRIDGE_NAMESPACES=podbridge-jobs"), "the local guardrails are named: {stderr}");

    let record = world.store.get(&id).await.unwrap().expect("the job is recorded");
    assert_eq!((record.state, record.attempt, &record.source), (JobState::SettingUp, 1, &Source::Direct));
    assert_eq!(record.pod_name, Some(format!("{id}-1")));
    let pods: Api<Pod> = Api::namespaced(world.stack.kube.clone(), "podbridge-jobs");
    let pod = pods.get(&format!("{id}-1")).await.expect("the pod exists in the cluster");
    assert_eq!(pod.metadata.labels.unwrap()["podbridge.dev/job-id"], id);

    let announced = events.receive(2).await.unwrap();
    let states: Vec<&str> = announced.iter().map(|e| e["detail"]["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "setting_up"], "{announced:#?}");

    // A message the guardrails refuse is recorded as rejected, and says so in its exit code.
    let bad_id = unique_name("refused");
    let bad = json!({ "version": 1, "job": { "id": bad_id, "image": "docker.io/library/busybox" } });
    let refusing = [&args[..], &["--image-prefix", "registry.example.com/"]].concat();
    let output = podbridge(&refusing, &[], bad.to_string().as_bytes());
    assert_eq!(exits(&output, 2), format!("{bad_id}\n"));
    assert!(text(&output.stderr).contains("not from an allowed registry"), "{}", text(&output.stderr));
    assert_eq!(world.store.get(&bad_id).await.unwrap().unwrap().state, JobState::Rejected);
    events.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn given_a_failed_job_when_got_then_its_state_attempt_class_and_history_show_and_json_is_the_record() {
    let world = world().await;
    let id = unique_name("failing");
    world.job_in(&id, "batch", &[JobState::SettingUp, JobState::Executing]).await;
    world
        .change(&id, JobState::Executing, JobState::Failed, |c| {
            c.failure_class = Some(podbridge_core::FailureClass::ExitCode);
            c.exit_code = Some(3);
            c.node = Some("node-2".into());
            c.termination_message = Some("loading sales\nno such table: sales".into());
        })
        .await;

    let stdout = exits(&podbridge(&["get", &id], &world.env(), b""), 0);
    let line = |name: &str| {
        stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} line:\n{stdout}")).to_owned()
    };
    assert!(line("State").ends_with("failed (exit_code, exit code 3)"), "{stdout}");
    assert!(line("Attempt").ends_with(" 1"), "{stdout}");
    assert!(line("Pod").ends_with(&format!("{id}-1 on node-2")), "{stdout}");
    assert!(line("Image").ends_with("registry.example.com/batch/report:1"), "{stdout}");
    assert!(stdout.contains("\n  no such table: sales\n"), "the termination message: {stdout}");
    let history: Vec<&str> = stdout.lines().skip_while(|l| *l != "History:").skip(2).collect();
    let changes = ["new → queued", "queued → setting_up", "setting_up → executing", "executing → failed"];
    assert_eq!(history.len(), changes.len(), "{stdout}");
    for (line, change) in history.iter().zip(changes) {
        assert!(line.contains(change), "{change} expected in {line:?}:\n{stdout}");
    }

    let json: Value = serde_json::from_str(&exits(&podbridge(&["get", &id, "--json"], &world.env(), b""), 0))
        .expect("--json prints JSON");
    assert_eq!(
        (json["job_id"].as_str(), json["state"].as_str(), json["attempt"].as_u64()),
        (Some(&*id), Some("failed"), Some(1))
    );
    assert_eq!(json["history"].as_array().unwrap().len(), 4);
    let parsed: JobRecord = serde_json::from_value(json).expect("--json is a job record");
    assert_eq!(Some(parsed), world.store.get(&id).await.unwrap(), "--json is the stored record");

    let missing = podbridge(&["get", "no-such-job"], &world.env(), b"");
    exits(&missing, 3);
    assert!(text(&missing.stderr).contains("no job \"no-such-job\""), "{}", text(&missing.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn given_jobs_in_every_state_when_listed_by_state_then_only_those_show_and_active_ones_come_from_the_index() {
    let world = world().await;
    let running_batch = world.job_in("run-batch", "batch", &[JobState::SettingUp, JobState::Executing]).await;
    world.job_in("run-jobs", "podbridge-jobs", &[JobState::SettingUp, JobState::Executing]).await;
    world.job_in("waiting", "batch", &[]).await;
    world.job_in("done", "batch", &[JobState::SettingUp, JobState::Executing, JobState::Succeeded]).await;
    // An executing item that is not in the active-jobs index: a Scan would find it, the
    // index never does, so it must not be listed.
    let now = format!("{:.9}", Timestamp::now());
    let item = [
        ("job_id", AttributeValue::S("scan-only".into())),
        ("state", AttributeValue::S("executing".into())),
        ("attempt", AttributeValue::N("1".into())),
        ("created_at", AttributeValue::S(now.clone())),
        ("updated_at", AttributeValue::S(now)),
    ];
    let mut put = world.stack.dynamodb().put_item().table_name(&world.table);
    for (name, value) in item {
        put = put.item(name, value);
    }
    put.send().await.unwrap();

    let listed = |args: &[&str]| {
        let output = podbridge(&[&["list"], args].concat(), &world.env(), b"");
        let stdout = exits(&output, 0);
        (rows(&stdout), text(&output.stderr))
    };
    let ids = |rows: &[Vec<String>]| {
        let mut ids: Vec<String> = rows.iter().skip(1).map(|row| row[0].clone()).collect();
        ids.sort();
        ids
    };

    let (executing, _) = listed(&["--state", "executing"]);
    assert_eq!(executing[0], ["ID", "STATE", "ATTEMPT", "CLASS", "AGE", "POD"]);
    assert_eq!(ids(&executing), ["run-batch", "run-jobs"]);
    let row = executing.iter().find(|row| row[0] == "run-batch").unwrap();
    assert_eq!(&row[1..4], ["executing", "1", "-"]);
    assert_eq!(row[5], running_batch.pod_name.clone().unwrap());

    assert_eq!(ids(&listed(&["--state", "executing", "--namespace", "batch"]).0), ["run-batch"]);
    assert_eq!(ids(&listed(&[]).0), ["run-batch", "run-jobs", "waiting"], "active jobs by default");
    assert_eq!(ids(&listed(&["--state", "succeeded"]).0), ["done"], "ended jobs by a Scan");
    assert_eq!(ids(&listed(&["--state", "queued,succeeded", "--since", "1h"]).0), ["done", "waiting"]);

    let (cut, stderr) = listed(&["--state", "executing", "--limit", "1"]);
    assert_eq!(cut.len(), 2, "a header and one job");
    assert!(stderr.contains("raise --limit"), "{stderr}");

    let json: Value =
        serde_json::from_str(&exits(&podbridge(&["list", "--json"], &world.env(), b""), 0)).expect("--json");
    let json_ids: Vec<&str> = json.as_array().unwrap().iter().map(|row| row["job_id"].as_str().unwrap()).collect();
    assert_eq!(json_ids.len(), 3, "{json}");

    let help = exits(&podbridge(&["list", "--help"], &[], b""), 0);
    assert!(help.contains("Scan") && help.contains("active-jobs index"), "{help}");
    exits(&podbridge(&["list", "--state", "running"], &world.env(), b""), 64);
}

/// A running `podbridge watch`, its stdout read line by line as it comes.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(args: &[&str], env: &[(&str, String)]) -> Watching {
        let mut child = command(args, env).stdin(Stdio::null()).spawn().expect("podbridge watch starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Watching { child, lines, seen: Vec::new() }
    }

    /// Waits (bounded) for a line of stdout containing `needle`.
    fn line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} from watch; it printed {:#?}", self.seen);
    }

    /// Waits (bounded) for the exit code; the rest of stdout is in `seen`.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.lines.iter());
                return status.code();
            }
            assert!(Instant::now() < deadline, "watch did not exit; it printed {:#?}", self.seen);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn given_a_job_that_runs_when_watched_then_each_change_shows_as_it_happens_and_success_exits_0() {
    let world = world().await;
    let id = unique_name("watched");
    world.record(&id, "batch").await;
    let mut watch = Watching::start(&["watch", &id, "--interval", "100ms"], &world.env());

    watch.line_with("new → queued");
    world.change(&id, JobState::Queued, JobState::SettingUp, |c| c.pod_name = Some(format!("{id}-1"))).await;
    watch.line_with("queued → setting_up");
    world.change(&id, JobState::SettingUp, JobState::Executing, |_| {}).await;
    watch.line_with("setting_up → executing");
    assert!(watch.child.try_wait().unwrap().is_none(), "watch goes on while the job is active");
    world.change(&id, JobState::Executing, JobState::Succeeded, |c| c.exit_code = Some(0)).await;
    let line = watch.line_with("executing → succeeded");
    assert!(line.contains("attempt 1") && line.contains("Test: executing to succeeded by the test"), "{line}");
    assert_eq!(watch.exit_code(), Some(0));
    assert!(watch.seen.last().unwrap().starts_with(&format!("job {id} succeeded at attempt 1")), "{:#?}", watch.seen);
}

#[tokio::test(flavor = "multi_thread")]
async fn given_a_job_that_ends_badly_when_watched_then_the_exit_code_says_how() {
    let world = world().await;
    for (to, code) in [(JobState::Failed, 4), (JobState::Cancelled, 5)] {
        let id = unique_name("ending");
        world.job_in(&id, "batch", &[JobState::SettingUp]).await;
        let mut watch = Watching::start(&["watch", &id, "--interval", "100ms"], &world.env());
        watch.line_with("queued → setting_up");
        world
            .change(&id, JobState::SettingUp, to, |c| {
                c.failure_class = (to == JobState::Failed).then_some(podbridge_core::FailureClass::ImagePull);
            })
            .await;
        assert_eq!(watch.exit_code(), Some(code), "{to}: {:#?}", watch.seen);
        let outcome = watch.seen.last().unwrap();
        assert!(outcome.starts_with(&format!("job {id} ")) && outcome.contains(to.as_str()), "{outcome}");
    }

    let never = podbridge(&["watch", "never-recorded", "--wait-for-record", "0s"], &world.env(), b"");
    exits(&never, 3);
    assert!(text(&never.stderr).contains("no job \"never-recorded\""), "{}", text(&never.stderr));

    let id = unique_name("slow");
    world.job_in(&id, "batch", &[JobState::SettingUp, JobState::Executing]).await;
    let slow = podbridge(&["watch", &id, "--interval", "100ms", "--timeout", "300ms"], &world.env(), b"");
    exits(&slow, 6);
    assert!(text(&slow.stderr).contains("gave up") && text(&slow.stderr).contains("executing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn given_a_running_job_when_cancelled_then_a_cancel_message_dispatch_reads_is_on_the_queue() {
    let world = world().await;
    let id = unique_name("unwanted");
    world.job_in(&id, "batch", &[JobState::SettingUp, JobState::Executing]).await;

    let output = podbridge(&["cancel", &id, "--reason", "superseded by a rerun"], &world.env(), b"");
    let stdout = exits(&output, 0);
    assert!(stdout.contains(&format!("cancel of job {id} sent")), "{stdout}");
    assert!(text(&output.stderr).contains(&format!("is executing at attempt 1: its pod {id}-1 will be deleted")));

    let sent = world.messages(1).await;
    assert_eq!(sent[0].1, json!({ "version": 1, "cancel": { "id": id, "reason": "superseded by a rerun" } }));
    let body = sent[0].1.to_string();
    let Ok(Parsed::Cancel(cancel)) = parse_message(body.as_bytes(), "unused", &Guardrails::default()) else {
        panic!("dispatch reads a cancel: {body}");
    };
    assert_eq!(cancel.id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn given_a_failed_job_when_retried_then_a_retry_job_event_the_trigger_reads_reaches_the_rule() {
    let world = world().await;
    let inbox = Subscription::matching(&world.stack, json!({ "detail-type": ["Retry Job"] })).await.unwrap();
    let env = [world.env(), vec![("PODBRIDGE_EVENT_BUS", inbox.bus.clone())]].concat();
    let id = unique_name("flaky");
    world.job_in(&id, "batch", &[JobState::SettingUp]).await;
    world
        .change(&id, JobState::SettingUp, JobState::Failed, |c| {
            c.failure_class = Some(podbridge_core::FailureClass::ImagePull)
        })
        .await;

    let stdout = exits(&podbridge(&["retry", &id, "--reason", "the registry is back"], &env, b""), 0);
    assert!(stdout.contains("starts attempt 2"), "{stdout}");
    let events = inbox.receive(1).await.unwrap();
    let event = &events[0];
    assert_eq!((event["source"].as_str(), event["detail-type"].as_str()), (Some("podbridge.cli"), Some("Retry Job")));
    assert_eq!(event["detail"], json!({ "jobId": id, "attempt": 1, "reason": "the registry is back" }));
    let Ok(trigger::Input::Retry { request, .. }) = trigger::parse(event) else {
        panic!("the trigger reads a retry: {event}");
    };
    assert_eq!((request.job_id.as_str(), request.attempt), (id.as_str(), Some(1)));

    // A job that is still running is not retried: nothing is put on the bus.
    let running = unique_name("running");
    world.job_in(&running, "batch", &[JobState::SettingUp, JobState::Executing]).await;
    let refused = podbridge(&["retry", &running], &env, b"");
    exits(&refused, 1);
    assert!(text(&refused.stderr).contains("only failed or cancelled jobs are retried"));
    assert_eq!(podbridge(&["retry", "no-such-job"], &env, b"").status.code(), Some(3));

    // Without the table, the attempt named is sent as it is, and the note says what was not checked.
    let blind = podbridge(&["retry", &id, "--attempt", "2", "--bus", &inbox.bus], &[], b"");
    exits(&blind, 0);
    assert!(text(&blind.stderr).contains("PODBRIDGE_TABLE is not set"), "{}", text(&blind.stderr));
    let events = inbox.drain().await.unwrap();
    let details: Vec<&Value> = events.iter().map(|event| &event["detail"]).collect();
    assert_eq!(details, [&json!({ "jobId": id, "attempt": 2 })], "only the blind retry reached the bus");
    inbox.delete().await.unwrap();
}

#[test]
fn given_no_settings_when_a_command_needs_one_then_the_error_names_the_variable_and_the_flag() {
    for (args, variable, flag) in [
        (&["get", "some-job"][..], "PODBRIDGE_TABLE", "--table"),
        (&["list"][..], "PODBRIDGE_TABLE", "--table"),
        (&["watch", "some-job"][..], "PODBRIDGE_TABLE", "--table"),
        (&["cancel", "some-job"][..], "PODBRIDGE_QUEUE_URL", "--queue-url"),
        (&["submit", "-"][..], "PODBRIDGE_QUEUE_URL", "--queue-url"),
        (&["submit", "--direct", "-"][..], "PODBRIDGE_TABLE", "--table"),
        (&["queues"][..], "PODBRIDGE_QUEUE_TABLE", "--queue-table"),
        (&["queues", "set", "etl", "--jobs", "3"][..], "PODBRIDGE_QUEUE_TABLE", "--queue-table"),
    ] {
        let output = podbridge(args, &[], br#"{"version": 1, "job": {"image": "registry.example.com/x:1"}}"#);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("error: {variable} is not set")), "{args:?}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("podbridge dev"), "{args:?}: {stderr}");
    }
    assert_eq!(podbridge(&["get", "not a job id"], &[], b"").status.code(), Some(64));
}

#[test]
fn help_documents_the_connection_and_every_exit_code() {
    let top = exits(&podbridge(&["--help"], &[], b""), 0);
    for command in ["submit", "get", "list", "watch", "cancel", "retry", "queues", "render"] {
        assert!(top.lines().any(|line| line.trim_start().starts_with(command)), "{command} missing:\n{top}");
    }
    for (command, needles) in [
        ("submit", &["--direct", "Exit codes", "KUBECONFIG"][..]),
        ("get", &["--json", "Exit codes", "3 no such job"][..]),
        ("watch", &["--timeout", "4 the job failed", "5 the job was cancelled", "6 --timeout"][..]),
        ("cancel", &["--reason", "Exit codes"][..]),
        ("retry", &["--attempt", "Retry Job", "Exit codes"][..]),
        ("queues", &["list", "get", "set", "pause", "resume", "limits", "Exit codes", "--json"][..]),
    ] {
        let help = exits(&podbridge(&[command, "--help"], &[], b""), 0);
        let connection = ["PODBRIDGE_TABLE", "PODBRIDGE_QUEUE_TABLE", "PODBRIDGE_QUEUE_URL", "--endpoint-url"];
        for needle in needles.iter().chain(&connection) {
            assert!(help.contains(needle), "{command} --help does not mention {needle}:\n{help}");
        }
    }
}
