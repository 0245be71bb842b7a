//! Thousands of random and hostile messages through parsing, validation and the pod
//! builder: none panics; every invalid one becomes a `rejected` record whose reason names
//! the field; every valid one becomes a pod with a valid name and labels. Pure: the
//! records go to the in-memory store, and no pod is ever sent anywhere.

use podbridge::cluster::{Cluster, PodCreated, PodEvents, PodList};
use podbridge::pod::{PodSettings, build_pod};
use podbridge::record::Source;
use podbridge::state::JobState;
use podbridge::store::JobStore;
use podbridge::store::memory::MemoryJobStore;
use podbridge::submit::{Outcome, Submitter};
use podbridge::validate::{Guardrails, Parsed, is_valid_job_id, parse_message};
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
