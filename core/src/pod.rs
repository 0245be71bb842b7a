//! The pod of a job attempt, built from a validated [`Job`] alone (no IO), so the same
//! job and attempt always give the same pod, down to its name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::quantity::{format_cpu, format_memory};
use crate::record::JobRecord;
use crate::validate::{EnvValue, Job};

/// `app.kubernetes.io/managed-by: podbridge` on every pod podbridge creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podbridge");
/// The job id, on the pod (a label, so pods can be listed by job).
pub const JOB_ID_LABEL: &str = "podbridge.dev/job-id";
/// The attempt number, on the pod.
pub const ATTEMPT_LABEL: &str = "podbridge.dev/attempt";
/// Tells the cluster autoscaler not to remove the node under a running job.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The name of the job's container.
pub const CONTAINER: &str = "job";
/// How long the pod is kept after its attempt ends (the job's `keepPodSeconds`), on
/// the pod, so that cleanup knows a pod is still within it without reading its record.
pub const KEEP_SECONDS: &str = "podbridge.dev/keep-pod-seconds";

/// How pods are built, set by the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    /// Time a job gets between SIGTERM and SIGKILL (long jobs trap TERM to checkpoint).
    pub termination_grace_period_seconds: i64,
}

impl Default for PodSettings {
    fn default() -> Self {
        Self { termination_grace_period_seconds: 30 }
    }
}

/// How many bytes of the id's SHA-256 a changed id's pod name carries: 80 bits, so
/// finding another id with the same name (a second preimage) is out of reach.
const NAME_HASH_BYTES: usize = 10;

/// The pod name of a job attempt: `<id>-<attempt>`, the id as it is when it can be a
/// pod name (a DNS label: lowercase letters, digits and `-`) without `--` and fits;
/// otherwise the id lowercased, other characters made `-`, shortened, then `--` and the
/// first 20 hex digits of the SHA-256 of the real id.
///
/// Two job attempts never share a name. The attempt is the text after the last `-`
/// (neither form's base ends in one). A name whose base holds `--` is always a changed
/// id's, and one without is always the id itself, so a plain id can never take the
/// name of a changed one (`a-1b2c3d4e` once took `A`'s). Two plain ids differ in their
/// names as they differ. Two changed ids would need the same 80 bits of SHA-256, which
/// no one can arrange.
pub fn pod_name(job_id: &str, attempt: u32) -> String {
    let suffix = format!("-{attempt}");
    let budget = 63 - suffix.len();
    let plain = job_id.len() <= budget
        && !job_id.contains("--")
        && !job_id.is_empty()
        && job_id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !job_id.starts_with('-')
        && !job_id.ends_with('-');
    if plain {
        return format!("{job_id}{suffix}");
    }
    let digest = Sha256::digest(job_id.as_bytes());
    let hash: String = digest.iter().take(NAME_HASH_BYTES).map(|b| format!("{b:02x}")).collect();
    let mut readable: String = job_id
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    readable.truncate(budget - hash.len() - 2);
    let readable = readable.trim_matches('-');
    // Only an invalid id (no letter or digit at all) leaves nothing readable.
    let readable = if readable.is_empty() { "job" } else { readable };
    format!("{readable}--{hash}{suffix}")
}

/// The job attempt a managed pod says it runs, read from its labels: the job id and
/// the attempt. `None` when either label is missing or the attempt is not a number.
///
/// This is the one reader of the labels [`build_pod`] writes. Labels alone prove
/// nothing about who made a pod (anyone who may create pods somewhere can copy them):
/// [`is_pod_of`] says whether a pod is where podbridge put the attempt.
pub fn attempt_of(pod: &Pod) -> Option<(&str, u32)> {
    let labels = pod.metadata.labels.as_ref()?;
    let job_id = labels.get(JOB_ID_LABEL)?;
    let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
    Some((job_id.as_str(), attempt))
}

/// The name of the pod of `record`'s current attempt: the one recorded, or the one
/// [`pod_name`] gives before any is recorded.
pub fn attempt_pod_name(record: &JobRecord) -> String {
    record.pod_name.clone().unwrap_or_else(|| pod_name(&record.job_id, record.attempt))
}

/// Whether `pod` is the pod of `record`'s current attempt where podbridge put it: in
/// the job's namespace, under the attempt's name, labelled with the job and attempt.
pub fn is_pod_of(pod: &Pod, record: &JobRecord) -> bool {
    pod.metadata.namespace == record.namespace
        && pod.metadata.name.as_deref() == Some(attempt_pod_name(record).as_str())
        && attempt_of(pod) == Some((record.job_id.as_str(), record.attempt))
}

/// The pod for `attempt` of `job`.
pub fn build_pod(job: &Job, attempt: u32, settings: &PodSettings) -> Pod {
    let mut labels = job.labels.clone();
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    labels.insert(JOB_ID_LABEL.to_owned(), job.id.clone());
    labels.insert(ATTEMPT_LABEL.to_owned(), attempt.to_string());

    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format_cpu(job.cpu_millis))),
        ("memory".to_owned(), Quantity(format_memory(job.memory_bytes))),
    ]);
    let mut limits = BTreeMap::from([("memory".to_owned(), Quantity(format_memory(job.memory_limit_bytes)))]);
    if let Some(cpu_limit) = job.cpu_limit_millis {
        limits.insert("cpu".to_owned(), Quantity(format_cpu(cpu_limit)));
    }
    requests.retain(|_, q| !q.0.is_empty());

    let env = job
        .env
        .iter()
        .map(|(name, value)| match value {
            EnvValue::Literal(value) => EnvVar { name: name.clone(), value: Some(value.clone()), value_from: None },
            EnvValue::Secret { name: secret, key } => EnvVar {
                name: name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        })
        .collect::<Vec<_>>();

    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(job.image.clone()),
        command: (!job.command.is_empty()).then(|| job.command.clone()),
        args: (!job.args.is_empty()).then(|| job.args.clone()),
        env: (!env.is_empty()).then_some(env),
        resources: Some(ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() }),
        // The last log lines become the termination message when the job fails
        // without writing one: the record keeps them after the pod is gone.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let tolerations = job
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: Some(t.operator.clone()),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: t.toleration_seconds,
        })
        .collect::<Vec<_>>();

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&job.id, attempt)),
            namespace: Some(job.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (SAFE_TO_EVICT.to_owned(), "false".to_owned()),
                (KEEP_SECONDS.to_owned(), job.keep_pod_seconds.to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_owned()),
            active_deadline_seconds: Some(i64::try_from(job.timeout_seconds).unwrap_or(i64::MAX)),
            termination_grace_period_seconds: Some(settings.termination_grace_period_seconds),
            // Only a job that was allowed a ServiceAccount gets an API token.
            service_account_name: job.service_account_name.clone(),
            automount_service_account_token: Some(job.service_account_name.is_some()),
            enable_service_links: Some(false),
            node_selector: (!job.node_selector.is_empty()).then(|| job.node_selector.clone()),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            priority_class_name: job.priority_class_name.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::pod_name;

    #[test]
    fn pod_names_are_dns_labels_and_distinct() {
        let check = |id: &str, attempt: u32, expected: &str| assert_eq!(pod_name(id, attempt), expected, "{id}");
        check("nightly-report", 1, "nightly-report-1");
        check("nightly-report", 12, "nightly-report-12");
        check("sqs-5fea7756-0ea4-451a-a703-a558b933e274", 1, "sqs-5fea7756-0ea4-451a-a703-a558b933e274-1");
        // Changed ids carry a hash of the original, so `Report` and `report` differ.
        let upper = pod_name("Report", 1);
        assert!(upper.starts_with("report--") && upper.ends_with("-1") && upper.len() == "report--".len() + 20 + 2);
        assert_ne!(upper, pod_name("report", 1));
        assert_ne!(pod_name("a_b", 1), pod_name("a.b", 1));
        let long = "x".repeat(63);
        let name = pod_name(&long, 10);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, pod_name(&long, 10), "deterministic");
        assert_ne!(pod_name(&format!("{long}a"), 1), pod_name(&format!("{long}b"), 1));
        // An id that fits with a short attempt number and not with a long one.
        let edge = "y".repeat(61);
        assert_eq!(pod_name(&edge, 1), format!("{edge}-1"));
        assert!(pod_name(&edge, 10).contains("--"));
        for id in ["_x_", "9", "a.b.c", "A", "a--b"] {
            let name = pod_name(id, 1);
            assert!(
                name.len() <= 63 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-'), "{name}");
        }
    }

    /// The collision the old names allowed: `A` was named `a-<first 8 hex digits of
    /// its SHA-256>-1`, which is also the name of the plain id `a-<those digits>`.
    #[test]
    fn a_plain_id_never_takes_the_name_of_a_changed_one() {
        let old_hash: String = Sha256::digest(b"A").iter().take(4).map(|b| format!("{b:02x}")).collect();
        let impostor = format!("a-{old_hash}");
        assert_ne!(pod_name(&impostor, 1), pod_name("A", 1));
        assert_eq!(pod_name(&impostor, 1), format!("{impostor}-1"), "a plain id keeps its readable name");
        // Today's form of `A`'s name, taken as an id, is not plain (it has `--`): hashed.
        let today = pod_name("A", 1);
        let base = today.strip_suffix("-1").unwrap();
        assert_ne!(pod_name(base, 1), today);
        assert!(pod_name(base, 1).starts_with(&format!("{base}--")), "{}", pod_name(base, 1));
    }
}
