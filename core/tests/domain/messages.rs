//! Job messages from bytes to a runnable job: what is accepted, what every default
//! becomes, and what a rejection says. Pure: no service needed.

use podbridge_core::FailureClass;
use podbridge_core::job::MAX_MESSAGE_BYTES;
use podbridge_core::validate::{Guardrails, Parsed, parse_message};
use serde_json::{Value, json};

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec!["podbridge-jobs".into(), "etl".into()],
        image_prefixes: vec!["registry.example.com/".into()],
        service_accounts: vec!["report-writer".into()],
        allow_secret_refs: true,
        priority_classes: vec!["batch-low".into()],
        toleration_keys: vec!["batch-only".into()],
        node_selector_keys: vec!["node.kubernetes.io/instance-type".into()],
        label_prefixes: vec!["jobs.example.com/".into()],
        ..Guardrails::default()
    }
}

fn job(value: Value) -> Value {
    json!({ "version": 1, "job": value })
}

fn minimal() -> Value {
    json!({ "image": "registry.example.com/batch/hello:1.0" })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

/// The problems of a message, as `field: message` strings.
fn problems(message: &Value, guardrails: &Guardrails) -> Vec<String> {
    match parse_message(message.to_string().as_bytes(), "sqs-fallback", guardrails) {
        Ok(parsed) => panic!("expected a rejection, got {parsed:?}"),
        Err(rejection) => rejection.problems.iter().map(ToString::to_string).collect(),
    }
}

/// Checks that `message` is rejected with a problem on `field` whose text contains `needle`.
fn check_rejected(message: Value, field: &str, needle: &str) {
    let found = problems(&message, &guardrails());
    assert!(
        found.iter().any(|p| p.starts_with(&format!("{field}: ")) && p.contains(needle)),
        "expected a problem on {field} containing {needle:?}, got {found:?}"
    );
}

#[test]
fn a_minimal_job_gets_every_default() {
    let parsed = parse_message(job(minimal()).to_string().as_bytes(), "sqs-1234", &guardrails()).unwrap();
    let Parsed::Job(job) = parsed else { panic!("expected a job") };
    assert_eq!(job.id, "sqs-1234", "without an id, the fallback (message-derived) id is used");
    assert_eq!(job.namespace, "podbridge-jobs");
    assert_eq!((job.cpu(), job.memory()), ("250m".to_owned(), "256Mi".to_owned()));
    assert_eq!(job.memory_limit_bytes, job.memory_bytes, "the memory limit defaults to the request");
    assert_eq!(job.cpu_limit_millis, None);
    assert_eq!(job.timeout_seconds, 6 * 3600);
    assert_eq!(job.retry.max_attempts, 3);
    assert_eq!(job.retry.on, FailureClass::RETRIED_BY_DEFAULT);
    assert_eq!(job.keep_pod_seconds, 600);
}

#[test]
fn the_examples_are_valid() {
    for example in ["job-minimal.json", "job-full.json", "cancel.json"] {
        let path = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        parse_message(&body, "sqs-x", &guardrails()).unwrap_or_else(|r| panic!("{example} is rejected: {r}"));
    }
}

#[test]
fn cancel_messages_name_a_job() {
    let parsed = parse_message(br#"{"version":1,"cancel":{"id":"job-1"}}"#, "sqs-x", &guardrails()).unwrap();
    assert!(matches!(parsed, Parsed::Cancel(c) if c.id == "job-1" && c.reason.is_none()));
    check_rejected(json!({ "version": 1, "cancel": { "id": "not an id" } }), "cancel.id", "is not a job id");
}

#[test]
fn malformed_messages_say_what_is_wrong() {
    let guard = guardrails();
    let raw = |bytes: &[u8]| -> Vec<String> {
        parse_message(bytes, "sqs-x", &guard).unwrap_err().problems.iter().map(ToString::to_string).collect()
    };
    assert!(raw(b"{not json").iter().any(|p| p.starts_with("message: is not valid JSON")));
    assert!(raw(b"[1,2]").iter().any(|p| p.starts_with("message: must be a JSON object")));
    assert_eq!(raw(br#"{"job":{"image":"x"}}"#), ["version: is required; allowed: 1"]);
    assert_eq!(raw(br#"{"version":2,"job":{}}"#), ["version: 2 is not supported; allowed: 1"]);
    assert_eq!(raw(br#"{"version":1}"#), ["message: must have exactly one of `job` or `cancel`"]);
    let huge = format!(r#"{{"version":1,"job":{{"image":"{}"}}}}"#, "x".repeat(MAX_MESSAGE_BYTES));
    assert!(raw(huge.as_bytes())[0].starts_with(&format!("message: is {} bytes; the limit is 65536", huge.len())));
    check_rejected(job(json!({})), "job", "missing field `image`");
    check_rejected(
        job(with(minimal(), "resources", json!({ "cpu": 2 }))),
        "job.resources.cpu",
        "invalid type: integer `2`, expected a string",
    );
    check_rejected(job(with(minimal(), "timeoutSeconds", json!(-5))), "job.timeoutSeconds", "invalid value");
}

#[test]
fn privileged_and_host_access_cannot_even_be_asked_for() {
    for field in ["privileged", "hostNetwork", "hostPID", "hostPath", "securityContext", "capabilities", "volumes"] {
        check_rejected(
            job(with(minimal(), field, json!(true))),
            &format!("job.{field}"),
            &format!("unknown field `{field}`, expected one of"),
        );
    }
}

#[test]
fn guardrails_reject_with_the_allowed_values() {
    check_rejected(
        job(with(minimal(), "image", json!("docker.io/library/busybox"))),
        "job.image",
        "allowed prefixes: registry.example.com/",
    );
    check_rejected(
        job(with(minimal(), "namespace", json!("kube-system"))),
        "job.namespace",
        "allowed: podbridge-jobs, etl",
    );
    check_rejected(
        job(with(minimal(), "serviceAccountName", json!("admin"))),
        "job.serviceAccountName",
        "allowed: report-writer",
    );
    check_rejected(
        job(with(minimal(), "resources", json!({ "memory": "64Gi" }))),
        "job.resources.memory",
        "is over the ceiling of 16Gi",
    );
    check_rejected(
        job(with(minimal(), "resources", json!({ "cpu": "1e999" }))),
        "job.resources.cpu",
        "is not a quantity",
    );
    check_rejected(
        job(with(minimal(), "resources", json!({ "memory": "1Gi", "memoryLimit": "512Mi" }))),
        "job.resources.memoryLimit",
        "is below the memory request of 1Gi",
    );
    check_rejected(job(with(minimal(), "timeoutSeconds", json!(0))), "job.timeoutSeconds", "allowed: 1 to 86400");
    check_rejected(
        job(with(minimal(), "retry", json!({ "maxAttempts": 1000 }))),
        "job.retry.maxAttempts",
        "allowed: 1 to 10",
    );
    check_rejected(
        job(with(minimal(), "priorityClassName", json!("system-node-critical"))),
        "job.priorityClassName",
        "system- classes",
    );
    check_rejected(
        job(with(minimal(), "labels", json!({ "podbridge.dev/job-id": "x" }))),
        "job.labels",
        "reserved for podbridge",
    );
    check_rejected(
        job(with(minimal(), "labels", json!({ "team": "data; rm -rf /" }))),
        "job.labels",
        "is not a label value",
    );
    check_rejected(job(with(minimal(), "id", json!("Ünïcode id"))), "job.id", "is not allowed");
    check_rejected(
        job(with(minimal(), "env", json!([{ "name": "A", "value": "1" }, { "name": "A", "value": "2" }]))),
        "job.env[1].name",
        "is set twice",
    );
    check_rejected(
        job(with(minimal(), "env", json!([{ "name": "A" }]))),
        "job.env[0]",
        "exactly one of `value` or `secret`",
    );

    let no_secrets = Guardrails { allow_secret_refs: false, ..guardrails() };
    let message = job(with(minimal(), "env", json!([{ "name": "P", "secret": { "name": "db", "key": "password" } }])));
    assert_eq!(
        problems(&message, &no_secrets),
        ["job.env[0].secret: secret references are not allowed by this deployment"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let message = job(json!({
        "image": "evil.example/miner",
        "namespace": "kube-system",
        "resources": { "memory": "1Ti" },
        "timeoutSeconds": 999999
    }));
    let found = problems(&message, &guardrails());
    let fields: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(fields, ["job.namespace", "job.image", "job.resources.memory", "job.timeoutSeconds"]);
}

#[test]
fn a_rejection_keeps_a_usable_job_id() {
    let message = job(json!({ "id": "job-7", "image": "elsewhere/x" }));
    let rejection = parse_message(message.to_string().as_bytes(), "sqs-x", &guardrails()).unwrap_err();
    assert_eq!(rejection.job_id.as_deref(), Some("job-7"));
    let unusable = job(json!({ "id": "bad id!", "image": "elsewhere/x" }));
    let rejection = parse_message(unusable.to_string().as_bytes(), "sqs-x", &guardrails()).unwrap_err();
    assert_eq!(rejection.job_id.as_deref(), Some("sqs-x"));
}

#[test]
fn an_oom_memory_factor_grows_each_attempt_after_an_oom_kill_up_to_the_ceiling() {
    let retry = json!({ "maxAttempts": 4, "on": ["oom_killed"], "oomMemoryFactor": 2 });
    let spec = with(with(minimal(), "resources", json!({ "memory": "3Gi" })), "retry", retry);
    let guardrails = Guardrails { max_memory_bytes: 8 << 30, ..guardrails() };
    let Ok(Parsed::Job(job)) = parse_message(job(spec).to_string().as_bytes(), "x", &guardrails) else {
        panic!("a valid job")
    };
    let memory = |kills| {
        let bumped = job.with_memory_after(kills);
        (bumped.memory(), bumped.memory_limit_bytes >> 30)
    };
    assert_eq!(memory(0), ("3Gi".to_owned(), 3), "the first attempt asks for what the message says");
    assert_eq!(memory(1), ("6Gi".to_owned(), 6));
    assert_eq!(memory(2), ("8Gi".to_owned(), 8), "never past the deployment's ceiling");
}

#[test]
fn an_oom_memory_factor_out_of_range_or_without_oom_retries_is_rejected() {
    let retry = |value: Value| job(with(minimal(), "retry", value));
    check_rejected(
        retry(json!({ "on": ["oom_killed"], "oomMemoryFactor": 1 })),
        "job.retry.oomMemoryFactor",
        "more than 1",
    );
    check_rejected(
        retry(json!({ "on": ["oom_killed"], "oomMemoryFactor": 9.5 })),
        "job.retry.oomMemoryFactor",
        "at most 4",
    );
    check_rejected(retry(json!({ "oomMemoryFactor": 1.5 })), "job.retry.oomMemoryFactor", "includes \"oom_killed\"");
}

#[test]
fn a_job_waits_in_the_default_queue_at_priority_zero_unless_it_names_others() {
    let parsed = parse_message(job(minimal()).to_string().as_bytes(), "sqs-1", &guardrails()).unwrap();
    let Parsed::Job(plain) = parsed else { panic!("expected a job") };
    assert_eq!((plain.queue.as_str(), plain.priority), ("default", 0));
    let named = with(with(minimal(), "queue", json!("etl")), "priority", json!(-5));
    let Parsed::Job(named) = parse_message(job(named).to_string().as_bytes(), "sqs-2", &guardrails()).unwrap() else {
        panic!("expected a job")
    };
    assert_eq!((named.queue.as_str(), named.priority), ("etl", -5));
}

#[test]
fn a_queue_name_and_priority_out_of_range_are_rejected_naming_what_is_allowed() {
    check_rejected(job(with(minimal(), "queue", json!("ETL_jobs"))), "job.queue", "lowercase letters, digits and '-'");
    check_rejected(job(with(minimal(), "queue", json!(""))), "job.queue", "is not a queue name");
    check_rejected(job(with(minimal(), "priority", json!(1001))), "job.priority", "allowed: -1000 to 1000");
    check_rejected(job(with(minimal(), "priority", json!(-1001))), "job.priority", "allowed: -1000 to 1000");
}
