//! `podbridge dev` as a user runs it: the built binary against the stack's moto (given
//! with `--endpoint-url`) and a simulated cluster of its own. A job sent to the queue its
//! `env` file names is dispatched by the dispatch handler, followed by the reconciler to
//! `succeeded`, and announced; on SIGTERM it stops and removes its `env` file. A
//! schedule's tick sent to the trigger's queue the `env` file names becomes its job, and
//! a Cancel Job event put on the bus reaches the trigger through the bus's rule. And its
//! event source mapping is Lambda's: a message whose dispatch keeps failing comes back
//! after the visibility timeout and lands in the dead-letter queue after
//! `maxReceiveCount` receives, its job recorded.

// `podbridge dev` killed mid-batch and started again.
#[path = "dev/restart.rs"]
mod restart;

// The console it serves, in a real browser.
#[path = "dev/console.rs"]
mod console;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use podbridge::store::JobStore;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge_core::state::JobState;
use podbridge_tests::{Stack, eventually, unique_name};
use serde_json::json;

/// The stack's `env` file, as name → value.
fn read_env(path: &std::path::Path) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
            .collect(),
    )
}

/// Starts `podbridge dev` with `args`; returns it and its `env` file once ready.
async fn start_dev(stack: &Stack, dir: &std::path::Path, args: &[&str]) -> (Running, HashMap<String, String>) {
    let child = Command::new(env!("CARGO_BIN_EXE_podbridge"))
        .args(["dev", "--endpoint-url", &stack.aws_endpoint, "--name", &unique_name("dev"), "--console-port", "0"])
        .arg("--dir")
        .arg(dir)
        .args(["--image-prefix", "registry.example.com/"])
        .args(args)
        .env("AWS_REGION", podbridge_tests::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start podbridge dev");
    let running = Running(child);
    let env_file = dir.join("env");
    let env = eventually("the stack's env file", Duration::from_secs(60), Duration::from_millis(100), || async {
        read_env(&env_file)
    })
    .await;
    (running, env)
}

/// The process, killed if the test ends early.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn given_the_local_stack_when_a_job_is_sent_to_its_queue_then_it_runs_to_the_end_and_ctrl_c_stops_it() {
    let stack = Stack::from_env().await;
    let dir = std::env::temp_dir().join(unique_name("podbridge-dev"));
    let (mut running, env) = start_dev(&stack, &dir, &["--reconcile-every", "2"]).await;
    let env_file: PathBuf = dir.join("env");

    let sqs = stack.sqs();
    let body = json!({ "version": 1, "job": { "id": "dev-job", "image": "registry.example.com/demo:1",
        "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=1s" }] } });
    sqs.send_message().queue_url(&env["PODBRIDGE_QUEUE_URL"]).message_body(body.to_string()).send().await.unwrap();

    let store = DynamoJobStore::new(stack.dynamodb(), env["PODBRIDGE_TABLE"].clone())
        .with_queue_table(env["PODBRIDGE_QUEUE_TABLE"].clone());
    let record = eventually("the job to succeed", Duration::from_secs(60), Duration::from_millis(200), || async {
        store.get("dev-job").await.ok().flatten().filter(|r| r.state == JobState::Succeeded)
    })
    .await;
    assert_eq!(record.pod_name.as_deref(), Some("dev-job-1"));
    assert!(env["KUBECONFIG"].ends_with("kubeconfig") && std::path::Path::new(&env["KUBECONFIG"]).exists());
    // The env file names the queue table `dev` created: the queue commands work in a
    // shell that sourced it.
    let queues = Command::new(env!("CARGO_BIN_EXE_podbridge")).arg("queues").envs(&env).output().unwrap();
    let listed = String::from_utf8_lossy(&queues.stdout);
    assert!(queues.status.success(), "{listed}\n{}", String::from_utf8_lossy(&queues.stderr));
    assert!(listed.lines().any(|line| line.starts_with("default ")), "{listed}");

    let status = Command::new("kill").args(["-TERM", &running.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..200 {
        exited = running.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = exited.expect("podbridge dev stops within 20 s of SIGTERM");
    let mut log = String::new();
    if let Some(mut stderr) = running.0.stderr.take() {
        use std::io::Read as _;
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(exited.success(), "podbridge dev exits cleanly: {exited}\n{log}");
    assert!(!env_file.exists(), "the env file is removed on exit");
    assert!(log.contains("dev-job") && log.contains("succeeded"), "the log shows the job's changes:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// GIVEN the local stack, and a shell with its env file
/// WHEN a schedule's tick is sent to the trigger's queue the env file names, and then a
/// Cancel Job event for the tick's job is put on the bus it names
/// THEN the tick's job (named after the schedule and the scheduled time) runs, and the
/// event reaches the trigger through the bus's rule and cancels it
#[tokio::test]
async fn given_the_local_stack_when_a_tick_goes_to_the_trigger_queue_and_a_cancel_on_the_bus_then_both_are_handled() {
    let stack = Stack::from_env().await;
    let dir = std::env::temp_dir().join(unique_name("podbridge-dev"));
    let (_running, env) = start_dev(&stack, &dir, &["--reconcile-every", "2"]).await;
    assert_eq!(env["AWS_DEFAULT_REGION"], env["AWS_REGION"], "the AWS CLI and boto3 read AWS_DEFAULT_REGION");

    let tick = json!({ "schedule": "ping", "scheduledTime": "2026-12-01T09:00:00Z",
        "job": { "image": "registry.example.com/ping:1",
                 "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=forever" }] } });
    let sqs = stack.sqs();
    sqs.send_message()
        .queue_url(&env["PODBRIDGE_TRIGGER_QUEUE_URL"])
        .message_body(tick.to_string())
        .send()
        .await
        .unwrap();
    let store = DynamoJobStore::new(stack.dynamodb(), env["PODBRIDGE_TABLE"].clone())
        .with_queue_table(env["PODBRIDGE_QUEUE_TABLE"].clone());
    let job = "ping-20261201-090000";
    eventually("the tick's job to run", Duration::from_secs(60), Duration::from_millis(200), || async {
        store.get(job).await.ok().flatten().filter(|r| r.state == JobState::Executing)
    })
    .await;

    let cancel = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&env["PODBRIDGE_EVENT_BUS"])
        .source("example.client")
        .detail_type("Cancel Job")
        .detail(json!({ "jobId": job, "reason": "enough pings" }).to_string())
        .build();
    let put = aws_sdk_eventbridge::Client::new(&stack.aws).put_events().entries(cancel).send().await.unwrap();
    assert_eq!(put.failed_entry_count, 0, "{put:?}");
    let record = eventually("the job to be cancelled", Duration::from_secs(60), Duration::from_millis(200), || async {
        store.get(job).await.ok().flatten().filter(|r| r.state == JobState::Cancelled)
    })
    .await;
    assert_eq!(record.message.as_deref(), Some("enough pings"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn given_a_dispatch_that_keeps_failing_when_dev_polls_then_the_message_comes_back_and_ends_in_the_dlq() {
    let stack = Stack::from_env().await;
    let dir = std::env::temp_dir().join(unique_name("podbridge-dev"));
    let (_running, env) = start_dev(&stack, &dir, &["--max-receive-count", "2", "--visibility-timeout", "1"]).await;
    // The simulated cluster refuses every pod, through its admin endpoint.
    let kubeconfig = kube::config::Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let kube = kube::Client::try_from(config).unwrap();
    let faults = json!({ "errors": [{ "verb": "create", "rate": 1.0, "code": 503 }] });
    let request = http::Request::put("/kube-sim/faults")
        .header("content-type", "application/json")
        .body(faults.to_string().into_bytes())
        .unwrap();
    kube.request_text(request).await.expect("faults set");

    let sqs = stack.sqs();
    let body = json!({ "version": 1, "job": { "id": "doomed", "image": "registry.example.com/demo:1" } });
    sqs.send_message().queue_url(&env["PODBRIDGE_QUEUE_URL"]).message_body(body.to_string()).send().await.unwrap();

    let dlq = env["PODBRIDGE_DLQ_URL"].clone();
    let dead = eventually("the message in the DLQ", Duration::from_secs(30), Duration::from_millis(200), || async {
        let received = sqs
            .receive_message()
            .queue_url(&dlq)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .ok()?;
        received.messages?.into_iter().next()
    })
    .await;
    assert_eq!(dead.body.as_deref(), Some(body.to_string().as_str()), "the message itself, unchanged");
    let store = DynamoJobStore::new(stack.dynamodb(), env["PODBRIDGE_TABLE"].clone())
        .with_queue_table(env["PODBRIDGE_QUEUE_TABLE"].clone());
    let record = store.get("doomed").await.unwrap().expect("the job is recorded though its pod never came");
    assert_eq!(record.state, JobState::Queued, "for the reconciler to dispatch once the cluster recovers");
    let _ = std::fs::remove_dir_all(&dir);
}
