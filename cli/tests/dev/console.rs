//! The console in a real browser: `podbridge dev` serves it on the local stack, jobs
//! are sent to the stack's queue and run on its simulated cluster, and the browser
//! tests of `tests/browser/console.test.mjs` (Chromium driven by playwright-core) look
//! at the overview, filter the job list, read a failed job's timeline and last log
//! lines, watch a job change state without a reload, cancel a running job from its
//! page, and read a queue's waiting line. What the page's cancel did is checked here,
//! where a user would see it: the job's record and its pod.
//!
//! Needs `tests/browser/setup.sh` (Debian's chromium and the pinned playwright-core;
//! `make test` runs it first): without them the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{JobStore, QueueStore};
use podbridge_core::admission::{Limits, Queue};
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use podbridge_tests::{Stack, eventually, unique_name};
use serde_json::json;

use super::start_dev;

/// The repository's root (the CLI crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf()
}

/// Where the screenshots go: `CONSOLE_SCREENSHOTS` (`make screenshots` gives docs/console),
/// else the target directory.
fn screenshots() -> PathBuf {
    std::env::var_os("CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target").join("console-screenshots"))
}

/// Fails (never skips) when the browser harness is not installed.
fn browser_harness() -> PathBuf {
    let browser = root().join("tests").join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        browser.join("node_modules").join("playwright-core").is_dir() && Path::new(&chromium).exists(),
        "the browser tests need Chromium ({chromium}) and playwright-core in tests/browser/node_modules: \
         run tests/browser/setup.sh (make browser; make test runs it)"
    );
    browser
}

fn job(id: &str, queue: &str, behavior: &str) -> String {
    json!({ "version": 1, "job": { "id": id, "queue": queue, "image": "registry.example.com/demo:1",
        "retry": { "maxAttempts": 1 },
        "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": behavior }] } })
    .to_string()
}

async fn in_state(store: &DynamoJobStore, id: &str, wanted: impl Fn(&JobRecord) -> bool) -> JobRecord {
    eventually(
        &format!("job {id} in the state the test needs"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async { store.get(id).await.ok().flatten().filter(&wanted) },
    )
    .await
}

/// GIVEN the local stack with its console, one job succeeded, one failed (exit 3, its
/// last log lines recorded), one running for ever, one running for 45 s, and a
/// queue of one job with a second one waiting
/// WHEN the browser tests look at each view, cancel the running job from its page and
/// retry the failed one from its page
/// THEN every view shows what the records say, a state change appears without a reload,
/// nothing is fetched from the network, the cancelled job's record says `cancelled` and
/// its pod is gone, and the failed job ran a second attempt
#[tokio::test]
async fn given_the_local_stack_when_a_browser_uses_the_console_then_it_shows_the_jobs_and_cancels_one() {
    let browser = browser_harness();
    let stack = Stack::from_env().await;
    let dir = std::env::temp_dir().join(unique_name("podbridge-console"));
    let (mut running, env) = start_dev(&stack, &dir, &["--reconcile-every", "2"]).await;
    // Its log is read as it comes: a full pipe would stop the stack mid-test.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = running.0.stderr.take().expect("the stack's stderr is piped");
    let kept = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    let console_url = env.get("PODBRIDGE_CONSOLE_URL").cloned().expect("the env file names the console's URL");
    let store = DynamoJobStore::new(stack.dynamodb(), env["PODBRIDGE_TABLE"].clone())
        .with_queue_table(env["PODBRIDGE_QUEUE_TABLE"].clone());
    let queue = "held";
    let one = Queue { limits: Limits { jobs: Some(1), ..Limits::NONE }, ..Queue::unlimited(queue) };
    store.put_queue(&one).await.unwrap();

    let run = unique_name("c");
    let ids = ["ok", "fail", "forever", "live", "holds", "waits"].map(|name| format!("{run}-{name}"));
    let [ok, fail, forever, live, holds, waits] = &ids;
    let sqs = stack.sqs();
    let queue_url = &env["PODBRIDGE_QUEUE_URL"];
    for body in [
        job(ok, "default", "run=1s"),
        job(fail, "default", "run=1s, exit=3, lines=5"),
        job(forever, "default", "run=forever"),
        job(holds, queue, "run=forever"),
    ] {
        sqs.send_message().queue_url(queue_url).message_body(body).send().await.unwrap();
    }
    in_state(&store, ok, |r| r.state == JobState::Succeeded).await;
    in_state(&store, fail, |r| r.state == JobState::Failed).await;
    in_state(&store, forever, |r| r.state == JobState::Executing).await;
    in_state(&store, holds, |r| r.state == JobState::Executing).await;
    // Sent once the queue is full, so it waits.
    sqs.send_message().queue_url(queue_url).message_body(job(waits, queue, "run=1s")).send().await.unwrap();
    in_state(&store, waits, JobRecord::is_waiting).await;
    // Last: it must still be executing when the browser opens its page.
    sqs.send_message().queue_url(queue_url).message_body(job(live, "default", "run=45s")).send().await.unwrap();
    in_state(&store, live, |r| r.state == JobState::Executing).await;

    let shots = screenshots();
    // Only this run's screenshots count.
    for name in ["overview", "jobs", "job", "queues"] {
        let _ = std::fs::remove_file(shots.join(format!("{name}.png")));
    }
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "console.test.mjs"])
        .current_dir(&browser)
        .env("CONSOLE_URL", &console_url)
        .env("SCREENSHOTS", &shots)
        .env("JOB_SUCCEEDED", ok)
        .env("JOB_FAILED", fail)
        .env("FAILED_CLASS", "exit_code")
        .env("FAILED_LOG", "kube-sim: line 5 of 5")
        .env("JOB_RUNNING", forever)
        .env("JOB_LIVE", live)
        .env("EXPECT_SUCCEEDED", "1")
        .env("EXPECT_FAILED", "1")
        .env("QUEUE", queue)
        .env("WAITING_JOB", waits)
        .output()
        .expect("node runs (tests/browser/setup.sh checks it is installed)");
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser tests failed:\n{report}\nthe stack's log:\n{}", log.lock().unwrap());

    // The cancel clicked on the page went through the queue and dispatch, as
    // `podbridge cancel` does: the record says so and the pod is gone.
    let cancelled = in_state(&store, forever, |r| r.state == JobState::Cancelled).await;
    assert_eq!(cancelled.message.as_deref(), Some("cancelled from the console"), "{cancelled:?}");
    let kubeconfig = kube::config::Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "podbridge-jobs");
    let pod = cancelled.pod_name.clone().expect("the cancelled job had a pod");
    eventually("the cancelled job's pod to be gone", Duration::from_secs(60), Duration::from_millis(200), || async {
        pods.get_opt(&pod).await.ok().and_then(|found| found.is_none().then_some(()))
    })
    .await;
    // The retry clicked on the failed job's page went through the bus and the trigger,
    // as `podbridge retry` does: its second attempt ran (and failed as the first did).
    let retried = in_state(&store, fail, |r| r.attempt == 2 && r.state.is_terminal()).await;
    assert!(retried.history.iter().any(|change| change.message.ends_with("retried from the console")), "{retried:?}");
    // Every view was photographed.
    for name in ["overview", "jobs", "job", "queues"] {
        let shot = shots.join(format!("{name}.png"));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "{} written", shot.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
