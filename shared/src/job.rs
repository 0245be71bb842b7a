//! Job messages, version 1: what a client puts on the queue (or in an EventBridge
//! event). The types here are the format: `docs/JOBS.md` describes it, and the JSON
//! Schema in `docs/job-message.schema.json` is generated from them.
//!
//! The format offers no way to ask for privileged containers, host namespaces,
//! `hostPath` volumes or capabilities: unknown fields are rejected, not ignored.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::failure::FailureClass;

/// The only message version this release reads.
pub const MESSAGE_VERSION: u32 = 1;

/// Messages larger than this are rejected before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A podbridge message: submit a job, or cancel one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(title = "podbridge message, version 1")]
pub enum Message {
    Job(Box<JobMessage>),
    Cancel(CancelMessage),
}

/// `{"version": 1, "job": {...}}`: run a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Always 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    pub job: JobSpec,
}

/// `{"version": 1, "cancel": {"id": "..."}}`: cancel a queued or running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelMessage {
    /// Always 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    pub cancel: CancelSpec,
}

/// Which job to cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSpec {
    /// The job's id.
    pub id: String,
    /// Why, kept in the job's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A job: this image, this command, this much CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// The idempotency key: a second message with the same id never runs a second job.
    /// 1 to 63 characters: letters, digits, `-`, `_`, `.`, starting and ending with a
    /// letter or digit. When absent, the id is derived from the SQS message id
    /// (`sqs-<message id>`), so only redeliveries of that one message are deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"))]
    pub id: Option<String>,
    /// The namespace to run in; the deployment's first allowed namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container image; must start with one of the deployment's allowed prefixes.
    pub image: String,
    /// The entrypoint (the image's when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables: literal values or Secret references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory; the deployment's defaults when absent, its ceilings at most.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// How long the job may run once started (the pod's `activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// When and how often a failed job is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Labels added to the pod (keys under `podbridge.dev/` are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node labels the pod must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<TolerationSpec>,
    /// The pod's PriorityClass (`system-` classes are not allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// A ServiceAccount the deployment allows; without one, no API token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How long the finished pod is kept (for `kubectl logs`) before it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pod_seconds: Option<u64>,
}

/// An environment variable: exactly one of `value` or `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// A key of a Secret in the job's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Requests and limits, as Kubernetes quantities (`"500m"`, `"2"`, `"512Mi"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU limit (none when absent: the job may use idle CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// Memory limit (the memory request when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

impl Resources {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// When a failed attempt is tried again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts in all, the first included (1: never retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt; doubles for each further one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<u64>,
    /// The longest wait between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_seconds: Option<u64>,
    /// Failure classes worth another attempt (by default those not caused by the job
    /// itself: `evicted`, `node_lost`, `pod_vanished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<FailureClass>>,
    /// Exit codes worth another attempt (a non-zero exit is otherwise final).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
    /// After an `oom_killed` attempt, the next one gets this many times the memory
    /// (request and limit), up to the deployment's ceiling. More than 1, at most 4;
    /// takes effect only when `on` includes `oom_killed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 4.0))]
    pub oom_memory_factor: Option<f64>,
}

/// A toleration, as in a pod spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TolerationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; all effects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The JSON Schema of [`Message`], as committed in `docs/job-message.schema.json`.
pub fn message_schema() -> String {
    let schema = schemars::schema_for!(Message);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
