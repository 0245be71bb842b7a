//! The built `dispatch` and `reconcile` binaries, run as Lambda runs them: started with
//! Lambda's environment variables, polling a Lambda Runtime API ([`RuntimeApi`], served by
//! the test), invoked with the SQS event fixture `tests/lambda/sqs-event.json` or the
//! schedule's `tests/lambda/schedule-event.json`. The tests assert what Lambda
//! and a user would observe: the JSON response (`batchItemFailures`, which decides what
//! SQS deletes), the records in DynamoDB (moto) and the pods in kube-sim.
//!
//! Two Runtime APIs serve them. The one here ([`RuntimeApi`]) runs the binary cargo has
//! already built, in milliseconds, and also measures the cold start
//! (`functions/dispatch/benches/cold_start.rs`). cargo-lambda's own emulator (`cargo
//! lambda watch --only-lambda-apis`, with `cargo lambda invoke`, pinned in
//! `infra/tools/requirements-build.txt` and installed by `infra/tools/run.sh` on first use)
//! serves the same binary in one test, so that what the functions do under the tool
//! developers use is proven too. The tests do not let cargo-lambda build the function: it
//! builds with `cargo run --bin dispatch`, which resolves features for the dispatch package
//! alone, a second build of tokio, hyper, kube and the AWS SDK beside the workspace's (53
//! crates differ; minutes on a fresh 2-core CI machine).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::ListParams;
use kube_sim::{ErrorFault, Faults, SimConfig};
use podbridge_core::state::JobState;
use podbridge_core::validate::Guardrails;
use podbridge_tests::runtime_api::{
    FunctionProcess, Outcome, RuntimeApi, cargo_binary, fixture, lambda_environment, unique_job_ids,
};
use podbridge_tests::{World, WorldBuilder, eventually, unique_name};
use serde_json::{Value, json};

const NAMESPACE: &str = "podbridge-jobs";
/// The fixture's record whose job passes the guardrails.
const VALID_MESSAGE_ID: &str = "059f36b4-87a3-44ab-83d2-661975830a7d";
/// The fixture's record whose job has an image from outside the allowed registry.
const REJECTED_MESSAGE_ID: &str = "2e1424d4-f796-459a-8184-9c92662be6da";
/// Generous: the first invocation opens the connections to moto and kube-sim, and CI
/// machines are slow; a healthy invocation takes milliseconds.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQS fixture with unique job ids; returns the event, the valid job's id and the
/// rejected job's id.
fn sqs_event() -> (Value, String, String) {
    let mut event = fixture("sqs-event.json");
    let ids = unique_job_ids(&mut event);
    (event, ids[VALID_MESSAGE_ID].clone(), ids[REJECTED_MESSAGE_ID].clone())
}

/// The dispatch binary, built by cargo for this test run (see [`cargo_binary`]).
fn dispatch_binary() -> PathBuf {
    cargo_binary("functions/dispatch", "dispatch")
}

/// The deployment the functions run in: a fresh job table, the stack's cluster (unless
/// a test asks for its own), jobs in [`NAMESPACE`] from the example registry. The
/// functions get it through [`World::function_env`].
fn deployment() -> WorldBuilder {
    let guardrails = Guardrails {
        namespaces: vec![NAMESPACE.into()],
        image_prefixes: vec!["registry.example.com/".into()],
        ..Guardrails::default()
    };
    World::builder().name("lambda-jobs").guardrails(guardrails).kube_timeout(Duration::from_secs(10))
}

/// Starts the function and waits for its first poll, failing with its output otherwise.
async fn start_function(api: &RuntimeApi, env: &[(String, String)]) -> FunctionProcess {
    let mut function = FunctionProcess::spawn(&dispatch_binary(), api, env).expect("start dispatch");
    function.first_poll(api, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
    function
}

fn response(outcome: &Outcome, function: &FunctionProcess) -> Value {
    outcome.json().unwrap_or_else(|e| panic!("{e:#}; the function's output:\n{}", function.output()))
}

#[tokio::test]
async fn given_the_sqs_fixture_when_the_built_function_is_invoked_then_the_batch_succeeds_and_both_jobs_are_recorded() {
    let world = deployment().build().await;
    let api = RuntimeApi::start("dispatch").await.expect("runtime API");
    let mut function = start_function(&api, &world.function_env()).await;
    let (event, job_id, rejected_id) = sqs_event();

    let outcome = function.invoke(&api, &event, INVOKE_TIMEOUT).await.unwrap();

    assert_eq!(response(&outcome, &function), fixture("sqs-response.json"), "both records may be deleted");
    let dispatched = world.recorded(&job_id).await;
    assert_eq!(dispatched.state, JobState::SettingUp);
    assert_eq!(dispatched.namespace.as_deref(), Some(NAMESPACE));
    let pod_name = format!("{job_id}-1");
    assert_eq!(dispatched.pod_name.as_deref(), Some(pod_name.as_str()));
    let pods = world.pods();
    let pod = pods.get(&pod_name).await.expect("the job's pod exists in the cluster");
    assert_eq!(pod.metadata.labels.unwrap_or_default()["podbridge.dev/job-id"], job_id);
    let rejected = world.recorded(&rejected_id).await;
    assert_eq!(rejected.state, JobState::Rejected);
    let reason = rejected.message.unwrap_or_default();
    assert!(
        reason.starts_with("job.image: \"docker.io/library/busybox:1.36\" is not from an allowed registry"),
        "{reason}"
    );
    let selector = format!("podbridge.dev/job-id={rejected_id}");
    let foreign = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
    assert!(foreign.items.is_empty(), "no pod for a rejected job");
    // Back at `/next`: the function survived the invocation and waits for the next batch.
    eventually("the function's next poll", Duration::from_secs(10), Duration::from_millis(20), || async {
        (api.polls() >= 2).then_some(())
    })
    .await;
    assert_eq!(function.exit_status(), None, "the function still runs; output:\n{}", function.output());
}

#[tokio::test]
async fn given_the_cluster_refuses_pods_when_the_built_function_is_invoked_then_only_the_valid_job_comes_back() {
    // A cluster of this test's own, so that its fault touches no other test.
    let config = SimConfig {
        faults: Faults {
            errors: vec![ErrorFault { verb: "create".into(), rate: 1.0, code: 503 }],
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let world = deployment().own_cluster(config).build().await;
    let api = RuntimeApi::start("dispatch").await.expect("runtime API");
    let mut function = start_function(&api, &world.function_env()).await;
    let (event, job_id, rejected_id) = sqs_event();

    let outcome = function.invoke(&api, &event, INVOKE_TIMEOUT).await.unwrap();

    let expected = json!({ "batchItemFailures": [{ "itemIdentifier": VALID_MESSAGE_ID }] });
    assert_eq!(response(&outcome, &function), expected, "the valid job is retried, the rejected one is not");
    assert_eq!(world.recorded(&job_id).await.state, JobState::Queued, "recorded, for the redelivery or the reconciler");
    assert_eq!(world.recorded(&rejected_id).await.state, JobState::Rejected);
    assert!(world.sim().created_pods().is_empty());
}

#[tokio::test]
async fn given_an_event_that_is_not_an_sqs_batch_when_invoked_then_the_invocation_fails_and_the_function_serves_on() {
    let world = deployment().build().await;
    let api = RuntimeApi::start("dispatch").await.expect("runtime API");
    let mut function = start_function(&api, &world.function_env()).await;

    let outcome = function.invoke(&api, &json!({ "Records": "not a list" }), INVOKE_TIMEOUT).await.unwrap();

    // A function error: Lambda returns the whole batch to the queue.
    let Outcome::Error(report) = outcome else { panic!("expected an invocation error, got {outcome:?}") };
    assert!(report.message().contains("failed to deserialize"), "{report:?}");
    let (event, job_id, _) = sqs_event();
    let next = function.invoke(&api, &event, INVOKE_TIMEOUT).await.unwrap();
    assert_eq!(response(&next, &function), fixture("sqs-response.json"));
    assert_eq!(world.recorded(&job_id).await.state, JobState::SettingUp);
}

#[tokio::test]
async fn given_no_job_table_configured_when_the_function_starts_then_it_fails_its_init_naming_the_variable() {
    // Needs no service: the configuration is read before any client is built.
    let api = RuntimeApi::start("dispatch").await.expect("runtime API");
    let env = [("PODBRIDGE_NAMESPACES", NAMESPACE), ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut function = FunctionProcess::spawn(&dispatch_binary(), &api, &env).expect("start dispatch");

    let status = function.wait_for_exit(Duration::from_secs(20)).await;

    let output = function.output();
    assert!(status.is_some_and(|s| !s.success()), "dispatch must exit with an error: {status:?}\n{output}");
    assert_eq!(api.polls(), 0, "a function that cannot start must not ask for work");
    // Lambda shows the runtime's output (or its `/init/error` report) as the init failure.
    let reported = api.init_error().map(|report| report.message()).unwrap_or_default();
    assert!(output.contains("PODBRIDGE_TABLE") || reported.contains("PODBRIDGE_TABLE"), "{output}");
}

#[tokio::test]
async fn given_a_running_job_when_the_built_reconcile_function_is_scheduled_then_it_follows_the_job_to_its_end_and_announces_it()
 {
    // The function publishes to the world's bus (PODBRIDGE_EVENT_BUS).
    let world = deployment().events().build().await;
    let api = RuntimeApi::start("reconcile").await.expect("runtime API");
    let mut env = world.function_env();
    env.push(("PODBRIDGE_FOLLOW_SECONDS".into(), "6".into()));
    let binary = cargo_binary("functions/reconcile", "reconcile");
    let mut function = FunctionProcess::spawn(&binary, &api, &env).expect("start reconcile");
    function.first_poll(&api, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));

    // A job dispatched just before the schedule fires, as the dispatch function leaves it;
    // it ends while the function follows the pods.
    let job_id = unique_name("scheduled");
    let body = json!({ "version": 1, "job": { "id": job_id, "image": "registry.example.com/batch/work:1",
        "env": [{ "name": "KUBE_SIM_BEHAVIOR", "value": "run=3s" }] } });
    let outcome = world
        .submitter
        .handle_message(
            body.to_string().as_bytes(),
            podbridge_core::Source::Direct,
            &podbridge_core::tenancy::Sender::Operator,
            "x",
        )
        .await;
    assert!(matches!(outcome, Ok(podbridge::services::Outcome::Dispatched { .. })), "{outcome:?}");

    let outcome = function.invoke(&api, &fixture("schedule-event.json"), INVOKE_TIMEOUT).await.unwrap();

    let report = response(&outcome, &function);
    assert_eq!(report["pass"]["active_jobs"], 1, "{report}");
    let finished = world.recorded(&job_id).await;
    assert_eq!(finished.state, JobState::Succeeded, "followed to the end: {report}");
    let states: Vec<Value> = world
        .events()
        .drain()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e["detail"]["jobId"] == job_id.as_str())
        .map(|e| e["detail"]["state"].clone())
        .collect();
    assert!(states.contains(&json!("executing")) && states.contains(&json!("succeeded")), "{states:?}");
    let output = function.output();
    assert!(
        output.contains("\"Succeeded\":1") && output.contains("ReconcileDuration"),
        "the function prints its metrics as EMF lines:\n{output}"
    );
    world.events().delete().await.unwrap();
}

#[tokio::test]
async fn given_a_schedule_tick_when_the_built_trigger_function_is_invoked_twice_then_one_job_runs() {
    let world = deployment().build().await;
    let api = RuntimeApi::start("trigger").await.expect("runtime API");
    let env = world.function_env();
    let mut function =
        FunctionProcess::spawn(&cargo_binary("functions/trigger", "trigger"), &api, &env).expect("start trigger");
    function.first_poll(&api, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
    let schedule = unique_name("hourly");
    let tick = json!({ "schedule": schedule, "scheduledTime": "2026-11-21T13:00:00Z", "concurrencyPolicy": "forbid",
        "job": { "image": "registry.example.com/batch/work:1" } });

    let first = function.invoke(&api, &tick, INVOKE_TIMEOUT).await.unwrap();
    let again = function.invoke(&api, &tick, INVOKE_TIMEOUT).await.unwrap();

    let job_id = format!("{schedule}-20261121-130000");
    assert_eq!(
        response(&first, &function),
        json!({ "outcome": "dispatched", "job_id": job_id, "detail": format!("attempt 1: pod {job_id}-1") })
    );
    assert_eq!(response(&again, &function)["outcome"], "already_recorded");
    assert_eq!(world.recorded(&job_id).await.state, JobState::SettingUp);
}

/// cargo-lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`), on a
/// loopback port of its own; stopped when dropped.
struct CargoLambda {
    watch: std::process::Child,
    port: u16,
}

impl CargoLambda {
    /// The pinned cargo-lambda, through the script that installs it.
    fn command() -> std::process::Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/tools/run.sh");
        let mut command = std::process::Command::new(script);
        command.arg("cargo-lambda");
        command
    }

    async fn start() -> CargoLambda {
        // The first run on a fresh clone installs it (a pinned venv, about 15 s).
        let version = tokio::task::spawn_blocking(|| Self::command().arg("-V").output())
            .await
            .unwrap()
            .expect("infra/tools/run.sh runs");
        assert!(
            version.status.success(),
            "cargo-lambda could not be installed or started:\n{}",
            String::from_utf8_lossy(&version.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let watch = Self::command()
            .args(["watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start cargo lambda watch");
        let emulator = CargoLambda { watch, port };
        eventually("cargo lambda watch to listen", Duration::from_secs(30), Duration::from_millis(50), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        emulator
    }

    /// Where a function polls: cargo-lambda serves the one function it does not start
    /// under the path `/.rt`.
    fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// `cargo lambda invoke` with `event`; the function's response as JSON.
    async fn invoke(&self, event: &Value) -> Value {
        let mut command = Self::command();
        command.args(["invoke", "--invoke-address", "127.0.0.1", "--invoke-port"]);
        command.arg(self.port.to_string()).arg("--data-ascii").arg(event.to_string()).arg("_");
        let output = tokio::time::timeout(INVOKE_TIMEOUT, tokio::task::spawn_blocking(move || command.output()))
            .await
            .expect("cargo lambda invoke answers in time")
            .unwrap()
            .expect("cargo lambda invoke runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "cargo lambda invoke failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("cargo lambda invoke printed no JSON ({e}): {stdout}"))
    }
}

impl Drop for CargoLambda {
    fn drop(&mut self) {
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

#[tokio::test]
async fn given_cargo_lambdas_runtime_emulator_when_cargo_lambda_invokes_the_built_function_with_the_sqs_fixture_then_the_batch_succeeds_and_both_jobs_are_recorded()
 {
    let world = deployment().build().await;
    let emulator = CargoLambda::start().await;
    let lambda_env = lambda_environment("dispatch", &emulator.runtime_api());
    let env = world.function_env();
    let function = FunctionProcess::spawn_with(&dispatch_binary(), lambda_env, &env).expect("start dispatch");
    let (event, job_id, rejected_id) = sqs_event();

    let response = emulator.invoke(&event).await;

    assert_eq!(
        response,
        fixture("sqs-response.json"),
        "both records may be deleted; the function said:\n{}",
        function.output()
    );
    let dispatched = world.recorded(&job_id).await;
    assert_eq!(dispatched.state, JobState::SettingUp);
    let pods = world.pods();
    let pod = pods.get(&format!("{job_id}-1")).await.expect("the job's pod exists in the cluster");
    assert_eq!(pod.metadata.labels.unwrap_or_default()["podbridge.dev/job-id"], job_id);
    assert_eq!(world.recorded(&rejected_id).await.state, JobState::Rejected);
}
