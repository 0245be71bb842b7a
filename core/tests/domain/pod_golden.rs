//! The pods the examples become, compared with committed golden files. A change to
//! the pod builder shows up here as a diff to review; regenerate the files with
//! `UPDATE_GOLDEN=1 cargo test -p podbridge-core --test domain pod_golden`.

use podbridge_core::pod::{PodSettings, build_pod};
use podbridge_core::validate::{Guardrails, Parsed, parse_message};

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec!["podbridge-jobs".into()],
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

fn check(example: &str, attempt: u32) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let body = std::fs::read(format!("{dir}/../examples/{example}.json")).unwrap();
    let Parsed::Job(job) = parse_message(&body, "sqs-x", &guardrails()).unwrap() else { panic!("{example} is a job") };
    let pod = build_pod(&job, attempt, &PodSettings::default());
    let mut actual = serde_json::to_string_pretty(&pod).unwrap();
    actual.push('\n');
    let golden = format!("{dir}/tests/golden/{example}.attempt-{attempt}.pod.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).unwrap_or_else(|_| panic!("{golden} is missing; run with UPDATE_GOLDEN=1"));
    assert_eq!(actual, expected, "the pod of {example} changed; review and run with UPDATE_GOLDEN=1 if intended");
}

#[test]
fn minimal_job_pod() {
    check("job-minimal", 1);
}

#[test]
fn full_job_pod() {
    check("job-full", 1);
}

#[test]
fn a_retry_gets_its_own_pod_name_and_attempt_label() {
    check("job-full", 2);
}
