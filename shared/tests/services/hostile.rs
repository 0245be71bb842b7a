//! Thousands of random and hostile messages through parsing, validation and the pod
//! builder: none panics; every invalid one becomes a `rejected` record whose reason names
//! the field; every valid one becomes a pod with a valid name and labels. Jobs at and
//! just past every cap: the largest legal one is stored in less than
//! `MAX_STORED_SPEC_BYTES`. Pure: the records go to the in-memory store, and no pod is
//! ever sent anywhere.

use podbridge::cluster::{Cluster, PodCreated, PodEvents, PodList};
use podbridge::services::{Outcome, Submitter};
use podbridge::store::JobStore;
use podbridge::store::memory::MemoryJobStore;
use podbridge_core::FailureClass;
use podbridge_core::job::{
    JobSpec, MAX_COMMAND_ENTRIES, MAX_COMMAND_TOTAL_BYTES, MAX_ENV_ENTRIES, MAX_ENV_TOTAL_BYTES, MAX_EXIT_CODES,
    MAX_LABELS, MAX_MESSAGE_BYTES, MAX_NODE_SELECTOR_TERMS, MAX_STORED_SPEC_BYTES, MAX_TOLERATIONS,
};
use podbridge_core::pod::{PodSettings, build_pod};
use podbridge_core::record::Source;
use podbridge_core::state::JobState;
use podbridge_core::validate::{Guardrails, MAX_PROBLEMS, Parsed, is_valid_job_id, parse_message, validate};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Rejections never reach a cluster; a valid message is not submitted here.
struct NoCluster;

impl Cluster for NoCluster {
    async fn create_pod(&self, _: &k8s_openapi::api::core::v1::Pod) -> podbridge::Result<PodCreated> {
        unreachable!("a rejection creates no pod")
    }
    async fn get_pod(&self, _: &str, _: &str) -> podbridge::Result<Option<k8s_openapi::api::core::v1::Pod>> {
        unreachable!("a rejection reads no pod")
    }
    async fn delete_pod(&self, _: &str, _: &str, _: Option<&str>) -> podbridge::Result<bool> {
        unreachable!("a rejection deletes no pod")
    }
    async fn list_managed_pods(&self, _: &str, _: u32) -> podbridge::Result<PodList> {
        unreachable!("a rejection lists no pods")
    }
    async fn pod_events(&self, _: &str, _: &str) -> podbridge::Result<Vec<k8s_openapi::api::core::v1::Event>> {
        unreachable!("a rejection reads no events")
    }
    async fn watch_managed_pods(&self, _: &str, _: &str, _: std::time::Duration) -> podbridge::Result<PodEvents> {
        unreachable!("a rejection watches no pods")
    }
    async fn largest_node(&self) -> podbridge::Result<Option<podbridge::cluster::NodeSize>> {
        unreachable!("a rejection never asks for room")
    }
}

/// Strings a sender might get wrong or an attacker might try.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("1e999".to_owned()),
        Just("-1".to_owned()),
        Just("NaN".to_owned()),
        Just("9999999999999999999Ei".to_owned()),
        Just("a=b,c!=d".to_owned()),
        Just("app.kubernetes.io/managed-by".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("$(rm -rf /)".to_owned()),
        Just("ünïcødé-名前-🚀".to_owned()),
        Just("\u{0}\u{7f}\n\t".to_owned()),
        Just("registry.example.com/ok:1".to_owned()),
        Just("podbridge-jobs".to_owned()),
        Just("500m".to_owned()),
        Just("1Gi".to_owned()),
        "[a-z0-9.-]{1,80}",
        "\\PC{0,40}",
        (1usize..70_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON value, biased towards hostile leaves.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(-1.0), Just(0.5), Just(1e308), Just(-1e-308), any::<f64>()]
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(4_294_967_296u64)),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The fields of a job, each a plausible or hostile value; some left out, some unknown.
fn job() -> impl Strategy<Value = Value> {
    const FIELDS: [&str; 17] = [
        "id",
        "namespace",
        "image",
        "command",
        "args",
        "env",
        "resources",
        "timeoutSeconds",
        "retry",
        "labels",
        "nodeSelector",
        "tolerations",
        "priorityClassName",
        "serviceAccountName",
        "keepPodSeconds",
        "privileged",
        "hostPath",
    ];
    prop::collection::vec((prop::sample::select(FIELDS.to_vec()), value()), 0..10).prop_map(|fields| {
        let mut job = json!({ "image": "registry.example.com/batch/job:1" });
        for (name, value) in fields {
            job[name] = value;
        }
        job
    })
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (prop_oneof![Just(json!(1)), value()], job()).prop_map(|(version, job)| {
            serde_json::to_vec(&json!({ "version": version, "job": job })).unwrap()
        }),
        1 => value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn guardrails() -> Guardrails {
    Guardrails {
        image_prefixes: vec!["registry.example.com/".into()],
        service_accounts: vec!["reader".into()],
        ..Guardrails::default()
    }
}

/// Top-level names a problem may be about: every reason names where in the message.
const FIELD_ROOTS: [&str; 4] = ["message", "version", "job", "cancel"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_message_panics_and_each_is_a_runnable_job_or_a_rejection_naming_its_field(body in message()) {
        let guardrails = guardrails();
        match parse_message(&body, "sqs-fallback", &guardrails) {
            Ok(Parsed::Job(job)) => {
                prop_assert!(is_valid_job_id(&job.id), "{}", job.id);
                for attempt in [1, 7, u32::MAX] {
                    let pod = build_pod(&job, attempt, &PodSettings::default());
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    prop_assert!(name.len() <= 63 && !name.is_empty(), "{name}");
                    prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
                    let spec = pod.spec.unwrap();
                    let security = spec.containers[0].security_context.clone().unwrap();
                    prop_assert_eq!(security.privileged, None);
                    prop_assert_eq!(security.allow_privilege_escalation, Some(false));
                    prop_assert!(spec.volumes.is_none_or(|v| v.iter().all(|v| v.host_path.is_none())));
                    prop_assert_eq!(spec.host_network, None);
                    for (key, value) in pod.metadata.labels.unwrap_or_default() {
                        prop_assert!(value.len() <= 63 && key.len() <= 317, "{key}={value}");
                    }
                }
            }
            Ok(Parsed::Cancel(_)) => {}
            Err(rejection) => {
                prop_assert!(!rejection.problems.is_empty());
                prop_assert!(rejection.problems.len() <= MAX_PROBLEMS + 1);
                for problem in &rejection.problems {
                    let root = problem.field.split(['.', '[']).next().unwrap_or_default();
                    prop_assert!(FIELD_ROOTS.contains(&root), "a problem names no field: {problem}");
                    prop_assert!(!problem.message.is_empty());
                }
                // Recorded as `rejected`, with the reason naming the field.
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let submitter = Submitter::new(
                    MemoryJobStore::new(),
                    NoCluster,
                    guardrails.clone(),
                    PodSettings::default(),
                    std::time::Duration::from_secs(60),
                );
                let first_field = rejection.problems[0].field.clone();
                let outcome = runtime.block_on(submitter.reject(rejection, Source::Direct, "sqs-fallback")).unwrap();
                let Outcome::Rejected { job_id, .. } = outcome else {
                    return Err(TestCaseError::fail(format!("not recorded as rejected: {outcome:?}")));
                };
                let record = runtime.block_on(submitter.store().get(&job_id)).unwrap().unwrap();
                prop_assert_eq!(record.state, JobState::Rejected);
                let reason = record.message.unwrap_or_default();
                prop_assert!(reason.starts_with(&format!("{first_field}: ")), "{reason}");
            }
        }
    }
}

/// A 253-byte DNS subdomain, distinct for each `i`.
fn long_domain(i: usize) -> String {
    let head = format!("d{i:03}");
    let label = "a".repeat(61);
    // 4 + 1 + (61 + 1) * 3 = 191; a last label of 62 makes 253.
    let domain = format!("{head}.{label}.{label}.{label}.{}", "b".repeat(62));
    assert_eq!(domain.len(), 253);
    domain
}

/// A 317-byte label key: a 253-byte prefix, `/`, a 63-byte name.
fn long_key(i: usize) -> String {
    format!("{}/{}", long_domain(i), "n".repeat(63))
}

/// Guardrails that allow everything the largest job uses.
fn permissive() -> Guardrails {
    Guardrails {
        namespaces: vec!["n".repeat(63)],
        image_prefixes: vec!["*".into()],
        service_accounts: vec![long_domain(400)],
        allow_secret_refs: true,
        priority_classes: vec![long_domain(300)],
        toleration_keys: (0..MAX_TOLERATIONS).map(|i| long_key(100 + i)).collect(),
        node_selector_keys: (0..MAX_NODE_SELECTOR_TERMS).map(|i| long_key(200 + i)).collect(),
        label_prefixes: (0..MAX_LABELS).map(long_domain).collect(),
        ..Guardrails::default()
    }
}

/// The largest job the caps allow, every string of it made of the character that
/// costs most as JSON (`"`, stored as `\"`).
fn largest_job() -> serde_json::Value {
    let quote_run = |n: usize| "\"".repeat(n);
    let per_entry = MAX_COMMAND_TOTAL_BYTES / (2 * MAX_COMMAND_ENTRIES);
    let entries = |_| -> Vec<String> { (0..MAX_COMMAND_ENTRIES).map(|_| quote_run(per_entry)).collect() };
    let name = |i: usize| format!("V{i}");
    let names_bytes: usize = (0..MAX_ENV_ENTRIES).map(|i| name(i).len()).sum();
    let value_bytes = (MAX_ENV_TOTAL_BYTES - names_bytes) / MAX_ENV_ENTRIES;
    let env: Vec<serde_json::Value> =
        (0..MAX_ENV_ENTRIES).map(|i| json!({ "name": name(i), "value": quote_run(value_bytes) })).collect();
    // 512 bytes: a 247-byte name, a 128-byte tag and a SHA-512 digest.
    let image = format!("registry.example.com/{}:{}@sha512:{}", "a".repeat(226), "t".repeat(128), "f".repeat(128));
    assert_eq!(image.len(), 512);
    let labels: Map<String, Value> = (0..MAX_LABELS).map(|i| (long_key(i), json!("v".repeat(63)))).collect();
    let selector: Map<String, Value> =
        (0..MAX_NODE_SELECTOR_TERMS).map(|i| (long_key(200 + i), json!("v".repeat(63)))).collect();
    let tolerations: Vec<Value> = (0..MAX_TOLERATIONS)
        .map(|i| {
            json!({ "key": long_key(100 + i), "operator": "Equal", "value": "v".repeat(63), "effect": "NoExecute",
                    "tolerationSeconds": i64::MIN })
        })
        .collect();
    json!({
        "id": "I".repeat(63),
        "namespace": "n".repeat(63),
        "image": image,
        "command": entries(()),
        "args": entries(()),
        "env": env,
        "resources": { "cpu": "4", "memory": "16Gi", "cpuLimit": "4", "memoryLimit": "16Gi" },
        "timeoutSeconds": 86_400,
        "retry": {
            "maxAttempts": 10, "backoffSeconds": 86_400, "maxBackoffSeconds": 86_400,
            "on": FailureClass::ALL, "exitCodes": (256 - MAX_EXIT_CODES as i32..256).collect::<Vec<i32>>(),
            "oomMemoryFactor": 3.75
        },
        "labels": labels,
        "nodeSelector": selector,
        "tolerations": tolerations,
        "priorityClassName": long_domain(300),
        "serviceAccountName": long_domain(400),
        "keepPodSeconds": 604_800
    })
}

#[test]
fn the_largest_legal_job_is_stored_in_less_than_the_stated_size() {
    let spec: JobSpec = serde_json::from_value(largest_job()).unwrap();
    let job = validate(spec, "sqs-x", &permissive()).unwrap_or_else(|r| panic!("the largest job is legal: {r}"));
    let stored = serde_json::to_vec(&job).unwrap();
    assert!(
        stored.len() < MAX_STORED_SPEC_BYTES,
        "the largest legal job is stored in {} bytes; the stated bound is {MAX_STORED_SPEC_BYTES}",
        stored.len()
    );
    // It is also a message that fits on the queue.
    let body = serde_json::to_vec(&json!({ "version": 1, "job": largest_job() })).unwrap();
    assert!(body.len() <= MAX_MESSAGE_BYTES, "{} bytes", body.len());
    assert!(matches!(parse_message(&body, "sqs-x", &permissive()), Ok(Parsed::Job(_))));
    println!("largest legal job: message {} bytes, stored spec {} bytes", body.len(), stored.len());
}

/// Text of exactly `len` characters of a kind that costs one, two or more bytes as
/// JSON, or more as UTF-8.
fn text_of(len: usize) -> impl Strategy<Value = String> {
    prop::sample::select(vec!['x', '"', '\\', '\n', 'é', '名', '🚀', '\u{1}'])
        .prop_map(move |c| c.to_string().repeat(len))
}

/// A list of `n` texts, `n` and the length each around its cap.
fn texts(cap: usize, len_cap: usize) -> impl Strategy<Value = Vec<String>> {
    (prop_oneof![Just(cap), Just(cap + 1), 0..cap], prop_oneof![Just(len_cap), Just(len_cap + 1), 0..len_cap])
        .prop_flat_map(|(n, len)| prop::collection::vec(text_of(len), n))
}

/// Jobs with every list at, below or just past its cap, and strings likewise.
fn near_caps() -> impl Strategy<Value = Value> {
    let per_entry = MAX_COMMAND_TOTAL_BYTES / MAX_COMMAND_ENTRIES;
    (
        texts(MAX_COMMAND_ENTRIES, per_entry),
        texts(MAX_COMMAND_ENTRIES, per_entry),
        texts(MAX_ENV_ENTRIES, MAX_ENV_TOTAL_BYTES / MAX_ENV_ENTRIES),
        (0..=MAX_LABELS + 1, 0..=MAX_NODE_SELECTOR_TERMS + 1, 0..=MAX_TOLERATIONS + 1),
        0..=MAX_EXIT_CODES + 1,
    )
        .prop_map(|(command, args, values, (labels, terms, tolerations), exit_codes)| {
            let mut job = largest_job();
            job["command"] = json!(command);
            job["args"] = json!(args);
            job["env"] = Value::Array(
                values.iter().enumerate().map(|(i, v)| json!({ "name": format!("V{i}"), "value": v })).collect(),
            );
            let keep = |value: &mut Value, n: usize| {
                if let Value::Object(map) = value {
                    let keys: Vec<String> = map.keys().skip(n).cloned().collect();
                    keys.iter().for_each(|k| drop(map.remove(k)));
                    if n > map.len() {
                        map.insert("extra.example.com/x".into(), json!("v"));
                    }
                }
            };
            keep(&mut job["labels"], labels);
            keep(&mut job["nodeSelector"], terms);
            let mut all = job["tolerations"].as_array().cloned().unwrap_or_default();
            all.resize(tolerations, all[0].clone());
            job["tolerations"] = Value::Array(all);
            job["retry"]["exitCodes"] = json!(vec![200; exit_codes]);
            job
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_job_near_the_caps_is_stored_small_or_rejected_naming_the_cap(spec in near_caps()) {
        let spec: JobSpec = serde_json::from_value(spec).unwrap();
        match validate(spec, "sqs-x", &permissive()) {
            Ok(job) => {
                let stored = serde_json::to_vec(&job).unwrap().len();
                prop_assert!(stored < MAX_STORED_SPEC_BYTES, "stored in {stored} bytes");
            }
            Err(rejection) => {
                prop_assert!(rejection.problems.len() <= MAX_PROBLEMS + 1);
                for problem in &rejection.problems {
                    prop_assert!(problem.field.starts_with("job"), "{problem}");
                    prop_assert!(
                        problem.message.contains("at most") || problem.message.contains("allowed"),
                        "a problem says what is allowed: {problem}"
                    );
                }
            }
        }
    }
}
