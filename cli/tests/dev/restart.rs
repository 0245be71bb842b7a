//! `podbridge dev` killed and started again, as a laptop's runner (or any host running
//! the handlers) dies: the built binary against the stack's moto (`--endpoint-url`) and
//! the stack's kube-sim (`--kubeconfig`), so the queue, the table and the pods outlive
//! the process. It is SIGKILLed twice while it works through a queue of jobs, each time
//! when a randomly chosen number of pods has been created (mid-batch: the handler runs a
//! batch's jobs concurrently), and started again on the same resources. When it has
//! settled, every job ran to the end, exactly one pod was ever created per job attempt
//! (kube-sim's creation log), the queue is empty, and whatever reached the dead-letter
//! queue is visible there with its job recorded.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use podbridge::store::JobStore;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge_core::pod::{JOB_ID_LABEL, pod_name};
use podbridge_core::state::JobState;
use podbridge_tests::latency_proxy::{LatencyProxy, Spikes};
use podbridge_tests::sqs::{depth, peek_bodies, send_all};
use podbridge_tests::{Stack, eventually, unique_name};
use serde_json::{Value, json};

use super::read_env;

/// Jobs in the queue: four batches of ten and a half.
const JOBS: usize = 45;

/// The process, killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `podbridge dev` named `name` on the AWS `endpoint` and the stack's kube-sim;
/// returns it and its `env` file once it is ready.
async fn start_dev(endpoint: &str, stack: &Stack, name: &str, dir: &Path) -> (Running, HashMap<String, String>) {
    let env_file = dir.join("env");
    // A killed runner leaves its env file behind; a fresh one says the new one is ready.
    let _ = std::fs::remove_file(&env_file);
    std::fs::create_dir_all(dir).unwrap();
    // Every run's log in one file, kept when the test fails.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dev.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_podbridge"))
        .args(["dev", "--endpoint-url", endpoint, "--name", name, "--console-port", "0"])
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
        .arg("--dir")
        .arg(dir)
        .args(["--image-prefix", "registry.example.com/"])
        .args(["--visibility-timeout", "2", "--max-receive-count", "5", "--reconcile-every", "2"])
        .env("AWS_REGION", podbridge_tests::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        // A job whose message ran out of receives is dispatched by the reconciler soon.
        .env("PODBRIDGE_REDISPATCH_AFTER_SECONDS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start podbridge dev");
    let mut running = Running(child);
    for _ in 0..600 {
        if let Some(env) = read_env(&env_file) {
            return (running, env);
        }
        if let Ok(Some(status)) = running.0.try_wait() {
            panic!("podbridge dev exited before it was ready: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("podbridge dev wrote no env file within 60 s");
}

/// Every pod the stack's kube-sim ever created for jobs whose id starts with `run`, as
/// name → how many times, from its creation log (`GET /kube-sim/created`).
async fn creations(kube: &kube::Client, run: &str) -> BTreeMap<String, usize> {
    let request = http::Request::get("/kube-sim/created").body(Vec::new()).unwrap();
    let log: Vec<Value> = serde_json::from_str(&kube.request_text(request).await.expect("the creation log")).unwrap();
    let mut created = BTreeMap::new();
    for pod in log {
        let job = pod["labels"][JOB_ID_LABEL].as_str().unwrap_or_default();
        if job.starts_with(run) {
            *created.entry(pod["name"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    created
}

/// A number in `range`, different on every run (the test prints it).
fn random_in(range: std::ops::Range<usize>) -> usize {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    range.start + usize::try_from(random % (range.len() as u64)).unwrap()
}

/// GIVEN `podbridge dev` on the stack's moto and kube-sim, and 45 jobs in its queue
/// WHEN it is SIGKILLed twice mid-batch (at random numbers of pods created) and each time
/// started again with the same name, on the queue, table and cluster it left
/// THEN it adopts them, every job succeeds, exactly one pod was created per job attempt,
/// the queue is empty, and each message in the dead-letter queue has its job recorded.
#[tokio::test]
async fn given_dev_killed_mid_batch_when_started_again_then_every_job_ends_with_one_pod_per_attempt() {
    let stack = Stack::from_env().await;
    let name = unique_name("restart");
    let dir: PathBuf = std::env::temp_dir().join(unique_name("podbridge-dev"));
    println!("podbridge dev logs to {}", dir.join("dev.log").display());
    // Slow answers from moto widen the window between a pod's creation and its record,
    // where a kill leaves the most to pick up.
    let proxy = LatencyProxy::to_url(&stack.aws_endpoint, random_in(0..usize::MAX) as u64).await.unwrap();
    proxy.set_spikes(Some(Spikes { rate: 0.3, min: Duration::from_millis(100), max: Duration::from_millis(600) }));
    let (running, env) = start_dev(&proxy.url(), &stack, &name, &dir).await;

    let sqs = stack.sqs();
    let run = unique_name("r");
    let ids: Vec<String> = (0..JOBS).map(|i| format!("{run}-{i}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| {
            json!({ "version": 1, "job": { "id": id, "image": "registry.example.com/restart:1",
                "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=300ms" }] } })
            .to_string()
        })
        .collect();
    send_all(&sqs, &env["PODBRIDGE_QUEUE_URL"], &bodies).await;

    let store = DynamoJobStore::new(stack.dynamodb(), env["PODBRIDGE_TABLE"].clone())
        .with_queue_table(env["PODBRIDGE_QUEUE_TABLE"].clone());
    let kill_points = [random_in(1..JOBS / 3), random_in(JOBS / 3..2 * JOBS / 3)];
    println!("killing podbridge dev once {kill_points:?} pods were created");
    let mut running = running;
    for (kill, at) in kill_points.iter().enumerate() {
        eventually("pods to be created", Duration::from_secs(60), Duration::from_millis(10), || async {
            (creations(&stack.kube, &run).await.len() >= *at).then_some(())
        })
        .await;
        running.0.kill().expect("SIGKILL");
        running.0.wait().expect("the killed process is reaped");
        // What the kill left half-done: jobs recorded as queued whose pod exists.
        let created = creations(&stack.kube, &run).await;
        let mut half_done = 0;
        for id in &ids {
            let record = store.get(id).await.unwrap();
            half_done += usize::from(
                record.is_some_and(|r| r.state == JobState::Queued && created.contains_key(&pod_name(id, r.attempt))),
            );
        }
        println!("BENCH dev_restart_half_done_at_kill_{} {half_done} jobs", kill + 1);
        let (again, env_again) = start_dev(&proxy.url(), &stack, &name, &dir).await;
        assert_eq!(
            (&env_again["PODBRIDGE_QUEUE_URL"], &env_again["PODBRIDGE_TABLE"]),
            (&env["PODBRIDGE_QUEUE_URL"], &env["PODBRIDGE_TABLE"]),
            "restart {} adopts the queue and table it left",
            kill + 1
        );
        running = again;
    }

    let records = eventually("every job to end", Duration::from_secs(120), Duration::from_millis(250), || async {
        let mut records = Vec::new();
        for id in &ids {
            records.push(store.get(id).await.ok()??);
        }
        records.iter().all(|r| r.state.is_terminal()).then_some(records)
    })
    .await;
    let created = creations(&stack.kube, &run).await;
    let dead = peek_bodies(&sqs, &env["PODBRIDGE_DLQ_URL"]).await;
    // A message of a killed batch may still be invisible after its job ended (the
    // reconciler finished it); it comes back, is found recorded, and is deleted.
    let left = eventually("the queue to drain", Duration::from_secs(120), Duration::from_millis(500), || async {
        let left = depth(&sqs, &env["PODBRIDGE_QUEUE_URL"]).await;
        (left == 0).then_some(left)
    })
    .await;
    drop(running);

    println!("BENCH dev_restart_kills {} kills", kill_points.len());
    println!("BENCH dev_restart_aws_delayed {} requests", proxy.stats().delayed);
    println!("BENCH dev_restart_in_dlq {} messages", dead.len());
    println!("BENCH dev_restart_retried {} jobs", records.iter().filter(|r| r.attempt > 1).count());
    let not_succeeded: Vec<String> = records
        .iter()
        .filter(|r| r.state != JobState::Succeeded)
        .map(|r| format!("{}: {} ({:?})", r.job_id, r.state, r.reason))
        .collect();
    assert!(not_succeeded.is_empty(), "jobs that did not succeed: {not_succeeded:?}");
    let doubled: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "pods created more than once: {doubled:?}");
    let missing: Vec<String> = records
        .iter()
        .flat_map(|r| (1..=r.attempt).map(|attempt| pod_name(&r.job_id, attempt)))
        .filter(|name| !created.contains_key(name))
        .collect();
    assert!(missing.is_empty(), "attempts without their pod: {missing:?}");
    assert_eq!(created.len(), records.iter().map(|r| r.attempt as usize).sum::<usize>(), "no pod beyond the attempts");
    assert_eq!(left, 0, "the queue is empty");
    for body in &dead {
        let id = serde_json::from_str::<Value>(body).unwrap()["job"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(records.iter().any(|r| r.job_id == id), "a dead-lettered message whose job is recorded: {body}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
