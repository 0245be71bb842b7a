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

// The caps of the format. Each list, map and string of a message has one, so the
// largest job that passes validation is stored in well under the 400 KB of a DynamoDB
// item (the domain tests assert the bound, `MAX_STORED_SPEC_BYTES`), whatever path the
// job came by. Lengths are in bytes of UTF-8 text, as sent.

/// The longest `image`.
pub const MAX_IMAGE_BYTES: usize = 512;
/// The most entries of `command`, and of `args`.
pub const MAX_COMMAND_ENTRIES: usize = 256;
/// The longest entry of `command` or `args`, and the longest `env[].value`.
pub const MAX_ARG_BYTES: usize = 4096;
/// The most text `command` and `args` hold together.
pub const MAX_COMMAND_TOTAL_BYTES: usize = 8192;
/// The most entries of `env`.
pub const MAX_ENV_ENTRIES: usize = 64;
/// The longest `env[].name`.
pub const MAX_ENV_NAME_BYTES: usize = 256;
/// The most text `env` holds: every name, value, Secret name and key together.
pub const MAX_ENV_TOTAL_BYTES: usize = 8192;
/// The most `labels`.
pub const MAX_LABELS: usize = 16;
/// The most `nodeSelector` terms.
pub const MAX_NODE_SELECTOR_TERMS: usize = 8;
/// The most `tolerations`.
pub const MAX_TOLERATIONS: usize = 8;
/// The longest label or taint key (`[prefix/]name`: a 253-byte DNS subdomain, `/`, a
/// 63-byte name).
pub const MAX_LABEL_KEY_BYTES: usize = 317;
/// The longest label value, toleration value or name part of a key.
pub const MAX_LABEL_VALUE_BYTES: usize = 63;
/// The longest Kubernetes object name taken from a message (Secret, Secret key,
/// PriorityClass, ServiceAccount).
pub const MAX_OBJECT_NAME_BYTES: usize = 253;
/// The longest queue name (a DNS label).
pub const MAX_QUEUE_NAME_BYTES: usize = 63;
/// The queue of a job that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// The range of a job's `priority` within its queue.
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;
/// The most `retry.exitCodes`.
pub const MAX_EXIT_CODES: usize = 32;
/// The most `retry.on` classes: each class once.
pub const MAX_RETRY_CLASSES: usize = FailureClass::ALL.len();
/// The longest cancel `reason` (and reason of a Cancel or Retry Job event).
pub const MAX_REASON_BYTES: usize = 1024;
/// What the tests prove: the largest job that passes validation, serialized as it is
/// stored in its record (`spec`), is smaller than this.
pub const MAX_STORED_SPEC_BYTES: usize = 56 * 1024;

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
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"))]
    pub id: String,
    /// Why, kept in the job's history. At most 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_BYTES))]
    pub reason: Option<String>,
    /// The job's namespace, for a cancel that may arrive before its job: it then holds
    /// for a job of that namespace only (the sender's first namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// A job: this image, this command, this much CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// The idempotency key: a second message with the same id never runs a second job.
    /// 1 to 63 characters: letters, digits, `-`, `_`, `.`, starting and ending with a
    /// letter or digit. When absent, the id is derived from the SQS message id
    /// (`sqs-<message id>`), so only redeliveries of that one message are deduplicated.
    /// Ids ending in `-YYYYMMDD-HHMMSS` are reserved for schedule ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"))]
    pub id: Option<String>,
    /// The namespace to run in; the deployment's first allowed namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The podbridge queue the job waits in until its queue, and the limit across all
    /// queues, have room for it (`default` when absent). It must be a queue the
    /// deployment has (`podbridge queues list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_QUEUE_NAME_BYTES), regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub queue: Option<String>,
    /// The job's place in its queue: higher first, then the oldest. -1000 to 1000,
    /// 0 when absent. Not the pod's PriorityClass (`priorityClassName`), which the
    /// scheduler reads once the pod exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_PRIORITY, max = MAX_PRIORITY))]
    pub priority: Option<i32>,
    /// The container image (`[registry/]path[:tag][@digest]`, as in `docker pull`); it
    /// must be under one of the deployment's allowed prefixes, compared by registry host
    /// and whole path components.
    #[schemars(length(min = 1, max = MAX_IMAGE_BYTES))]
    pub image: String,
    /// The entrypoint (the image's when empty). At most 256 entries of at most 4096
    /// bytes; `command` and `args` together at most 8192 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMAND_ENTRIES), inner(length(max = MAX_ARG_BYTES)))]
    pub command: Vec<String>,
    /// Arguments to the entrypoint; limits as for `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMAND_ENTRIES), inner(length(max = MAX_ARG_BYTES)))]
    pub args: Vec<String>,
    /// Environment variables: literal values or Secret references. At most 64, with
    /// at most 8192 bytes of names, values and Secret references together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV_ENTRIES))]
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
    /// Labels added to the pod: at most 16, each key under one of the deployment's
    /// allowed label prefixes (keys under `podbridge.dev/` are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_LABELS,
        "propertyNames" = { "maxLength": MAX_LABEL_KEY_BYTES },
        "additionalProperties" = { "type": "string", "maxLength": MAX_LABEL_VALUE_BYTES }
    ))]
    pub labels: BTreeMap<String, String>,
    /// Node labels the pod must be scheduled on: at most 8 terms, each key one the
    /// deployment allows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_NODE_SELECTOR_TERMS,
        "propertyNames" = { "maxLength": MAX_LABEL_KEY_BYTES },
        "additionalProperties" = { "type": "string", "maxLength": MAX_LABEL_VALUE_BYTES }
    ))]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates: at most 8, each with a key the deployment allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TOLERATIONS))]
    pub tolerations: Vec<TolerationSpec>,
    /// The pod's PriorityClass: one the deployment allows (never a `system-` class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_BYTES))]
    pub priority_class_name: Option<String>,
    /// A ServiceAccount the deployment allows; without one, no API token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_BYTES))]
    pub service_account_name: Option<String>,
    /// How long the finished pod is kept (for `kubectl logs`) before it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pod_seconds: Option<u64>,
}

/// An environment variable: exactly one of `value` or `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Letters, digits and `_`, not starting with a digit; at most 256 bytes.
    #[schemars(length(min = 1, max = MAX_ENV_NAME_BYTES), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// A literal value, at most 4096 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ARG_BYTES))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// A key of a Secret in the job's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name (a DNS subdomain name).
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_BYTES))]
    pub name: String,
    /// The key in the Secret: letters, digits, `-`, `_`, `.`.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_BYTES), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
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
    /// itself: `evicted`, `node_rejected`, `node_lost`, `pod_vanished`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_RETRY_CLASSES))]
    pub on: Option<Vec<FailureClass>>,
    /// Exit codes worth another attempt (a non-zero exit is otherwise final): at most
    /// 32, each 1 to 255.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EXIT_CODES), inner(range(min = 1, max = 255)))]
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
    /// The taint key: required, and one the deployment allows (a toleration without a
    /// key would tolerate every taint, the node not-ready and unreachable ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_KEY_BYTES))]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// The taint value to match with `Equal` (a label value); absent with `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_VALUE_BYTES))]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; all effects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// How long the pod stays bound after a matching `NoExecute` taint appears.
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
