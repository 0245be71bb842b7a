//! From message bytes to a job that may run: parsing, the deployment's guardrails, and
//! the defaults. Every problem names the field, the value and what is allowed; all
//! problems of a message are reported at once (up to [`MAX_PROBLEMS`]).
//!
//! Guardrails are checked by meaning, not by text: an image is parsed into registry
//! host and path components before it is compared with the allowed prefixes
//! ([`image`]), and names, label keys and values are held to the syntax the API server
//! enforces ([`names`]). [`recheck`] holds a job recorded earlier to the guardrails in
//! force now, with the same checks.

pub mod image;
pub mod names;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::failure::FailureClass;
use crate::job::{
    CancelMessage, CancelSpec, DEFAULT_QUEUE, EnvVar, JobMessage, JobSpec, MAX_ARG_BYTES, MAX_COMMAND_ENTRIES,
    MAX_COMMAND_TOTAL_BYTES, MAX_ENV_ENTRIES, MAX_ENV_NAME_BYTES, MAX_ENV_TOTAL_BYTES, MAX_EXIT_CODES, MAX_IMAGE_BYTES,
    MAX_LABELS, MAX_MESSAGE_BYTES, MAX_NODE_SELECTOR_TERMS, MAX_OBJECT_NAME_BYTES, MAX_PRIORITY, MAX_QUEUE_NAME_BYTES,
    MAX_REASON_BYTES, MAX_RETRY_CLASSES, MAX_TOLERATIONS, MESSAGE_VERSION, MIN_PRIORITY, TolerationOperator,
};
use crate::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use image::{ImagePrefix, ImageRef};
use names::{
    LABEL_VALUE_RULE, QUALIFIED_NAME_RULE, is_dns_subdomain, is_label_value, is_qualified_name, is_secret_key,
    key_prefix,
};

/// A rejection lists at most this many problems, then one saying how many more there were.
pub const MAX_PROBLEMS: usize = 20;
/// The smallest memory request or limit: below it no container starts (and `1m`, a
/// thousandth of a byte, is a typo for `1Mi`).
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
/// The smallest CPU request or limit Kubernetes accounts: one millicore.
pub const MIN_CPU_MILLIS: u64 = 1;
/// Label keys podbridge sets on every pod: never a job's.
pub const RESERVED_LABEL_PREFIX: &str = "podbridge.dev/";
/// PriorityClasses of the cluster's own components: never a job's.
pub const SYSTEM_PRIORITY_PREFIX: &str = "system-";

/// What the deployment allows and assumes; set by its operators, never by a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Namespaces jobs may run in; the first is the default.
    pub namespaces: Vec<String>,
    /// Image prefixes jobs may use (`registry.example.com/team/`), matched by registry
    /// host and whole path components (see [`ImagePrefix`]); `*` allows any image. A
    /// prefix that does not parse admits nothing (the settings refuse one).
    pub image_prefixes: Vec<String>,
    /// ServiceAccounts jobs may ask for; none by default.
    pub service_accounts: Vec<String>,
    pub allow_secret_refs: bool,
    /// PriorityClasses jobs may ask for (`PODBRIDGE_PRIORITY_CLASSES`); none by default,
    /// and never a `system-` class, even when listed.
    pub priority_classes: Vec<String>,
    /// Taint keys jobs may tolerate (`PODBRIDGE_TOLERATION_KEYS`); none by default. A
    /// toleration without a key is never allowed.
    pub toleration_keys: Vec<String>,
    /// Node label keys jobs may select nodes by (`PODBRIDGE_NODE_SELECTOR_KEYS`); none
    /// by default.
    pub node_selector_keys: Vec<String>,
    /// Label key prefixes jobs may set labels under (`PODBRIDGE_LABEL_PREFIXES`, such as
    /// `team.example.com/`; the trailing `/` is optional): a job's label key must have
    /// exactly one of them as its prefix. None by default; `podbridge.dev/` and
    /// `app.kubernetes.io/managed-by` stay reserved whatever is listed.
    pub label_prefixes: Vec<String>,
    pub default_cpu_millis: u64,
    pub default_memory_bytes: u64,
    pub max_cpu_millis: u64,
    pub max_memory_bytes: u64,
    pub default_timeout_seconds: u64,
    pub max_timeout_seconds: u64,
    pub max_attempts: u32,
    pub default_keep_pod_seconds: u64,
    pub max_keep_pod_seconds: u64,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            namespaces: vec!["podbridge-jobs".into()],
            image_prefixes: Vec::new(),
            service_accounts: Vec::new(),
            allow_secret_refs: false,
            priority_classes: Vec::new(),
            toleration_keys: Vec::new(),
            node_selector_keys: Vec::new(),
            label_prefixes: Vec::new(),
            default_cpu_millis: 250,
            default_memory_bytes: 256 << 20,
            max_cpu_millis: 4_000,
            max_memory_bytes: 16 << 30,
            default_timeout_seconds: 6 * 3600,
            max_timeout_seconds: 24 * 3600,
            max_attempts: 10,
            default_keep_pod_seconds: 600,
            max_keep_pod_seconds: 7 * 24 * 3600,
        }
    }
}

impl Guardrails {
    /// These guardrails narrowed to the namespaces of `allowed` that they allow, in the
    /// order of `allowed` (so its first allowed one is the default), each once. With
    /// none in common, every job is rejected for its namespace.
    pub fn for_namespaces(&self, allowed: &[String]) -> Guardrails {
        let mut namespaces: Vec<String> = Vec::new();
        for namespace in allowed {
            if self.namespaces.contains(namespace) && !namespaces.contains(namespace) {
                namespaces.push(namespace.clone());
            }
        }
        Guardrails { namespaces, ..self.clone() }
    }

    /// Whether `image` is under one of the allowed prefixes.
    pub fn admits_image(&self, image: &ImageRef) -> bool {
        self.image_prefixes.iter().filter_map(|prefix| ImagePrefix::parse(prefix).ok()).any(|p| p.admits(image))
    }

    /// Whether a job may set a label with this key: its prefix is an allowed one and
    /// it is not reserved.
    pub fn admits_label_key(&self, key: &str) -> bool {
        !is_reserved_label(key)
            && key_prefix(key).is_some_and(|prefix| {
                self.label_prefixes.iter().any(|allowed| allowed.strip_suffix('/').unwrap_or(allowed) == prefix)
            })
    }
}

/// Keys podbridge sets itself.
fn is_reserved_label(key: &str) -> bool {
    key.starts_with(RESERVED_LABEL_PREFIX) || key == crate::pod::MANAGED_BY.0
}

/// One thing wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where, as a path into the message (`job.resources.memory`).
    pub field: String,
    /// What is wrong and what is allowed, with the value quoted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a message was rejected: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The job id, when the message carried a usable one.
    pub job_id: Option<String>,
    pub problems: Vec<Problem>,
}

impl Rejection {
    /// A rejection with these problems, at most [`MAX_PROBLEMS`] of them followed by
    /// one saying how many more there were (a message can have thousands, and the
    /// rejection is stored in the job's record).
    pub fn new(job_id: Option<String>, mut problems: Vec<Problem>) -> Rejection {
        if problems.len() > MAX_PROBLEMS {
            let more = problems.len() - MAX_PROBLEMS;
            problems.truncate(MAX_PROBLEMS);
            let field = problems[0].field.split(['.', '[']).next().unwrap_or("message").to_owned();
            let noun = if more == 1 { "problem is" } else { "problems are" };
            problems.push(problem(field, format!("{more} more {noun} not listed (at most {MAX_PROBLEMS} are)")));
        }
        Rejection { job_id, problems }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&texts.join("; "))
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Job(Box<Job>),
    Cancel(CancelSpec),
}

/// A secret reference or a literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvValue {
    Literal(String),
    Secret { name: String, key: String },
}

/// A toleration, checked. Absent fields are absent in the stored job, never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// When a failed attempt runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
    pub max_backoff_seconds: u64,
    pub on: Vec<FailureClass>,
    pub exit_codes: Vec<i32>,
    /// The memory of an attempt after an OOM kill, in percent of the one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_memory_percent: Option<u32>,
    /// The deployment's memory ceiling when the job was accepted: no bump goes past it.
    #[serde(default)]
    pub memory_ceiling_bytes: u64,
}

/// A job that passed validation, with every default filled in: what is recorded
/// and what the pod is built from. Serialized into the record without `null` members
/// (an absent option is an absent member), and read back from records written before
/// that, which had them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub namespace: String,
    /// The queue it waits in for admission (records written before queues read as
    /// `default`).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Its place in its queue (higher first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The image as the runtime pulls it, every implied part written out
    /// (`busybox` is recorded as `docker.io/library/busybox`).
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: u64,
    pub timeout_seconds: u64,
    pub retry: Retry,
    pub labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    pub keep_pod_seconds: u64,
}

impl Job {
    /// The canonical CPU request (`"500m"`).
    pub fn cpu(&self) -> String {
        format_cpu(self.cpu_millis)
    }

    /// The job as its next attempt runs after `oom_kills` OOM-killed attempts: memory
    /// request and limit grown by the retry's OOM factor once per kill, up to the
    /// memory ceiling. Unchanged without a factor.
    pub fn with_memory_after(&self, oom_kills: usize) -> Job {
        let Some(percent) = self.retry.oom_memory_percent else { return self.clone() };
        let ceiling = self.retry.memory_ceiling_bytes.max(self.memory_limit_bytes);
        let grow = |bytes: u64| {
            let mut grown = u128::from(bytes);
            for _ in 0..oom_kills {
                grown = (grown * u128::from(percent) / 100).min(u128::from(ceiling));
            }
            u64::try_from(grown).unwrap_or(ceiling)
        };
        let mut job = self.clone();
        job.memory_bytes = grow(self.memory_bytes);
        job.memory_limit_bytes = grow(self.memory_limit_bytes);
        job
    }

    /// The canonical memory request (`"512Mi"`).
    pub fn memory(&self) -> String {
        format_memory(self.memory_bytes)
    }
}

/// The id used when a message carries none: derived from the SQS message id, so that
/// redeliveries of the same message are the same job.
pub fn id_from_message_id(message_id: &str) -> String {
    derived_id("sqs", message_id)
}

/// The id of a job submitted by an EventBridge event that carries none: `event-` and
/// the event's id (valid as a job id, at most 63 characters).
pub fn id_from_event_id(event_id: &str) -> String {
    derived_id("event", event_id)
}

fn derived_id(prefix: &str, id: &str) -> String {
    let room = 63 - prefix.len() - 1;
    let cleaned: String =
        id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(room).collect();
    format!("{prefix}-{cleaned}")
}

/// Whether `id` is a valid job id (a Kubernetes label value of at least one character).
pub fn is_valid_job_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// What is wrong with a cancel or retry `reason`, if anything: at most
/// [`MAX_REASON_BYTES`], no control characters but tab and newline.
pub fn check_reason(reason: &str) -> Option<String> {
    if reason.len() > MAX_REASON_BYTES {
        return Some(format!("is {} bytes; at most {MAX_REASON_BYTES} are allowed", reason.len()));
    }
    control_character(reason).map(|c| {
        format!("contains a control character (U+{c:04X}); allowed: any text but control characters other than tab, newline and carriage return")
    })
}

/// The first control character of `text` other than tab, newline and carriage return.
fn control_character(text: &str) -> Option<u32> {
    text.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')).map(u32::from)
}

/// A field path cut short when a sender's unknown key made it long (the message still
/// quotes the key).
fn short_field(field: String) -> String {
    const MAX_FIELD_BYTES: usize = 160;
    if field.len() <= MAX_FIELD_BYTES {
        return field;
    }
    let mut end = MAX_FIELD_BYTES;
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &field[..end])
}

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { field: field.into(), message: message.into() }
}

/// Quotes a value for a message, cut short when long.
fn quoted(value: &str) -> String {
    if value.chars().count() > 80 {
        let head: String = value.chars().take(80).collect();
        format!("{head:?}... ({} bytes)", value.len())
    } else {
        format!("{value:?}")
    }
}

/// Parses and validates a message body. `fallback_id` is the id a job without one gets.
pub fn parse_message(body: &[u8], fallback_id: &str, guardrails: &Guardrails) -> Result<Parsed, Rejection> {
    let reject = Rejection::new;
    if body.len() > MAX_MESSAGE_BYTES {
        let message = format!("is {} bytes; the limit is {MAX_MESSAGE_BYTES}", body.len());
        return Err(reject(None, vec![problem("message", message)]));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| reject(None, vec![problem("message", format!("is not valid JSON: {e}"))]))?;
    let Some(object) = value.as_object() else {
        return Err(reject(
            None,
            vec![problem("message", "must be a JSON object with `version` and `job` or `cancel`")],
        ));
    };
    // A usable id, if any, so the rejection can be recorded under it.
    let claimed_id = object
        .get("job")
        .or_else(|| object.get("cancel"))
        .and_then(|inner| inner.get("id"))
        .and_then(Value::as_str)
        .filter(|id| is_valid_job_id(id))
        .map(str::to_owned);
    match object.get("version") {
        Some(v) if v.as_u64() == Some(u64::from(MESSAGE_VERSION)) => {}
        Some(v) => {
            let message = format!("{v} is not supported; allowed: {MESSAGE_VERSION}");
            return Err(reject(claimed_id, vec![problem("version", message)]));
        }
        None => {
            return Err(reject(
                claimed_id,
                vec![problem("version", format!("is required; allowed: {MESSAGE_VERSION}"))],
            ));
        }
    }
    match (object.contains_key("job"), object.contains_key("cancel")) {
        (true, false) => {
            let message: JobMessage = from_value(value).map_err(|p| reject(claimed_id.clone(), vec![p]))?;
            validate(message.job, fallback_id, guardrails).map(|job| Parsed::Job(Box::new(job)))
        }
        (false, true) => {
            let message: CancelMessage = from_value(value).map_err(|p| reject(claimed_id.clone(), vec![p]))?;
            if !is_valid_job_id(&message.cancel.id) {
                return Err(reject(
                    None,
                    vec![problem("cancel.id", format!("{} is not a job id", quoted(&message.cancel.id)))],
                ));
            }
            if let Some(reason) = &message.cancel.reason
                && let Some(why) = check_reason(reason)
            {
                return Err(reject(claimed_id, vec![problem("cancel.reason", why)]));
            }
            Ok(Parsed::Cancel(message.cancel))
        }
        _ => Err(reject(claimed_id, vec![problem("message", "must have exactly one of `job` or `cancel`")])),
    }
}

/// Deserializes with the path of the first field that does not fit.
fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "message".to_owned() } else { path };
        problem(short_field(field), e.into_inner().to_string())
    })
}

/// Checks a job against the guardrails and fills in the defaults.
pub fn validate(spec: JobSpec, fallback_id: &str, guardrails: &Guardrails) -> Result<Job, Rejection> {
    let g = guardrails;
    let mut p = Problems::new(Moment::Submitted);

    let id = match &spec.id {
        Some(id) if is_valid_job_id(id) => id.clone(),
        Some(id) => {
            p.add(
                "job.id",
                format!(
                    "{} is not allowed: 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    quoted(id)
                ),
            );
            fallback_id.to_owned()
        }
        None => fallback_id.to_owned(),
    };

    let namespace = spec.namespace.clone().or_else(|| g.namespaces.first().cloned()).unwrap_or_default();
    check_namespace(&mut p, &namespace, g);

    // Spaces around the reference change nothing it means; inside it they are refused.
    let trimmed = spec.image.trim();
    let image = check_image(&mut p, trimmed, g).map_or_else(|| trimmed.to_owned(), |image| image.to_string());

    let mut command_bytes = 0;
    for (list, field) in [(&spec.command, "job.command"), (&spec.args, "job.args")] {
        if list.len() > MAX_COMMAND_ENTRIES {
            p.add(field, format!("has {} entries; at most {MAX_COMMAND_ENTRIES} are allowed", list.len()));
        }
        for (i, item) in list.iter().enumerate() {
            check_text(&mut p, &format!("{field}[{i}]"), item, MAX_ARG_BYTES);
            command_bytes += item.len();
        }
    }
    if command_bytes > MAX_COMMAND_TOTAL_BYTES {
        p.add(
            "job.args",
            format!(
                "job.command and job.args hold {command_bytes} bytes together; at most {MAX_COMMAND_TOTAL_BYTES} are allowed"
            ),
        );
    }

    let mut env = Vec::new();
    let mut names = BTreeSet::new();
    let mut env_bytes = 0;
    if spec.env.len() > MAX_ENV_ENTRIES {
        p.add("job.env", format!("has {} entries; at most {MAX_ENV_ENTRIES} are allowed", spec.env.len()));
    }
    for (i, EnvVar { name, value, secret }) in spec.env.iter().enumerate() {
        let field = format!("job.env[{i}]");
        env_bytes += name.len();
        if !is_env_name(name) {
            p.add(
                format!("{field}.name"),
                format!(
                    "{} is not allowed: 1 to {MAX_ENV_NAME_BYTES} letters, digits and '_', not starting with a digit",
                    quoted(name)
                ),
            );
        } else if !names.insert(name.clone()) {
            p.add(format!("{field}.name"), format!("{} is set twice", quoted(name)));
        }
        match (value, secret) {
            (Some(value), None) => {
                check_text(&mut p, &format!("{field}.value"), value, MAX_ARG_BYTES);
                env_bytes += value.len();
                env.push((name.clone(), EnvValue::Literal(value.clone())));
            }
            (None, Some(secret)) => {
                env_bytes += secret.name.len() + secret.key.len();
                if !g.allow_secret_refs {
                    secret_refs_not_allowed(&mut p, &field);
                } else if !is_dns_subdomain(&secret.name) {
                    p.add(
                        format!("{field}.secret.name"),
                        format!("{} is not a Secret name; allowed: {DNS_SUBDOMAIN_RULE}", quoted(&secret.name)),
                    );
                } else if !is_secret_key(&secret.key) {
                    p.add(
                        format!("{field}.secret.key"),
                        format!(
                            "{} is not a Secret key; allowed: 1 to {MAX_OBJECT_NAME_BYTES} letters, digits, '-', '_', '.'",
                            quoted(&secret.key)
                        ),
                    );
                }
                env.push((name.clone(), EnvValue::Secret { name: secret.name.clone(), key: secret.key.clone() }));
            }
            _ => p.add(field, "needs exactly one of `value` or `secret`"),
        }
    }
    if env_bytes > MAX_ENV_TOTAL_BYTES {
        p.add(
            "job.env",
            format!(
                "holds {env_bytes} bytes of names, values and Secret references; at most {MAX_ENV_TOTAL_BYTES} are allowed"
            ),
        );
    }

    let resources = &spec.resources;
    let mut quantity = |field: &str,
                        text: &Option<String>,
                        parse: fn(&str) -> Result<u64, String>,
                        (min, max): (u64, u64),
                        show: fn(u64) -> String| {
        let text = text.as_deref()?;
        let range = || format!("{} to {}", show(min), show(max));
        match parse(text) {
            Err(why) => {
                p.add(field, why);
                None
            }
            Ok(0) => {
                p.add(field, format!("{} must be more than zero; allowed: {}", quoted(text), range()));
                None
            }
            Ok(value) if value < min => {
                p.add(field, format!("{} is below the minimum of {}; allowed: {}", quoted(text), show(min), range()));
                None
            }
            Ok(value) if value > max => {
                p.over_ceiling(field, &quoted(text), &show(max));
                None
            }
            Ok(value) => Some(value),
        }
    };
    let cpu_range = (MIN_CPU_MILLIS, g.max_cpu_millis);
    let memory_range = (MIN_MEMORY_BYTES, g.max_memory_bytes);
    let cpu = quantity("job.resources.cpu", &resources.cpu, parse_cpu, cpu_range, format_cpu);
    let memory = quantity("job.resources.memory", &resources.memory, parse_memory, memory_range, format_memory);
    let cpu_limit = quantity("job.resources.cpuLimit", &resources.cpu_limit, parse_cpu, cpu_range, format_cpu);
    let memory_limit =
        quantity("job.resources.memoryLimit", &resources.memory_limit, parse_memory, memory_range, format_memory);
    let cpu_millis = cpu.unwrap_or(g.default_cpu_millis.min(cpu_limit.unwrap_or(u64::MAX)));
    let memory_bytes = memory.unwrap_or(g.default_memory_bytes.min(memory_limit.unwrap_or(u64::MAX)));
    if cpu_limit.is_some_and(|limit| limit < cpu_millis) {
        p.add(
            "job.resources.cpuLimit",
            format!(
                "{} is below the CPU request of {}",
                quoted(resources.cpu_limit.as_deref().unwrap_or_default()),
                format_cpu(cpu_millis)
            ),
        );
    }
    if memory_limit.is_some_and(|limit| limit < memory_bytes) {
        p.add(
            "job.resources.memoryLimit",
            format!(
                "{} is below the memory request of {}",
                quoted(resources.memory_limit.as_deref().unwrap_or_default()),
                format_memory(memory_bytes)
            ),
        );
    }

    let timeout_seconds = spec.timeout_seconds.unwrap_or(g.default_timeout_seconds);
    p.check_range("job.timeoutSeconds", timeout_seconds, 1, g.max_timeout_seconds);

    let queue = spec.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if !is_queue_name(&queue) {
        p.add("job.queue", format!("{} is not a queue name: {QUEUE_NAME_RULE}", quoted(&queue)));
    }
    let priority = spec.priority.unwrap_or(0);
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        p.add("job.priority", format!("{priority} is not allowed; allowed: {MIN_PRIORITY} to {MAX_PRIORITY}"));
    }

    let retry_spec = spec.retry.clone().unwrap_or_default();
    let max_attempts = retry_spec.max_attempts.unwrap_or(3.min(g.max_attempts));
    p.check_range("job.retry.maxAttempts", u64::from(max_attempts), 1, u64::from(g.max_attempts));
    let backoff_seconds = retry_spec.backoff_seconds.unwrap_or(30);
    let max_backoff_seconds = retry_spec.max_backoff_seconds.unwrap_or(600.max(backoff_seconds));
    if backoff_seconds > 86_400 {
        p.add("job.retry.backoffSeconds", format!("{backoff_seconds} is not allowed; allowed: 0 to 86400"));
    }
    if max_backoff_seconds > 86_400 || max_backoff_seconds < backoff_seconds {
        p.add(
            "job.retry.maxBackoffSeconds",
            format!("{max_backoff_seconds} is not allowed; allowed: backoffSeconds ({backoff_seconds}) to 86400"),
        );
    }
    if retry_spec.exit_codes.len() > MAX_EXIT_CODES {
        p.add(
            "job.retry.exitCodes",
            format!("has {} entries; at most {MAX_EXIT_CODES} are allowed", retry_spec.exit_codes.len()),
        );
    }
    for (i, code) in retry_spec.exit_codes.iter().enumerate() {
        if !(1..=255).contains(code) {
            p.add(format!("job.retry.exitCodes[{i}]"), format!("{code} is not allowed; allowed: 1 to 255"));
        }
    }
    if let Some(on) = &retry_spec.on
        && on.len() > MAX_RETRY_CLASSES
    {
        p.add(
            "job.retry.on",
            format!("has {} entries; at most {MAX_RETRY_CLASSES} are allowed (each class once)", on.len()),
        );
    }
    let retry_on = retry_spec.on.clone().unwrap_or_else(|| FailureClass::RETRIED_BY_DEFAULT.to_vec());
    let oom_memory_percent = match retry_spec.oom_memory_factor {
        None => None,
        Some(factor) if !(factor > 1.0 && factor <= 4.0) => {
            p.add("job.retry.oomMemoryFactor", format!("{factor} is not allowed; allowed: more than 1, at most 4"));
            None
        }
        Some(_) if !retry_on.contains(&FailureClass::OomKilled) => {
            p.add(
                "job.retry.oomMemoryFactor",
                "has no effect unless job.retry.on includes \"oom_killed\" (OOM-killed attempts are not retried otherwise)",
            );
            None
        }
        // In range, so the rounding cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(factor) => Some((factor * 100.0).round() as u32),
    };

    if spec.labels.len() > MAX_LABELS {
        p.add("job.labels", format!("has {} labels; at most {MAX_LABELS} are allowed", spec.labels.len()));
    }
    check_labels(&mut p, &spec.labels, g);
    if spec.node_selector.len() > MAX_NODE_SELECTOR_TERMS {
        p.add(
            "job.nodeSelector",
            format!("has {} terms; at most {MAX_NODE_SELECTOR_TERMS} are allowed", spec.node_selector.len()),
        );
    }
    check_node_selector(&mut p, &spec.node_selector, g);

    if spec.tolerations.len() > MAX_TOLERATIONS {
        p.add(
            "job.tolerations",
            format!("has {} entries; at most {MAX_TOLERATIONS} are allowed", spec.tolerations.len()),
        );
    }
    let tolerations: Vec<Toleration> = spec
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: format!("{:?}", t.operator.unwrap_or(TolerationOperator::Equal)),
            value: t.value.clone(),
            effect: t.effect.map(|e| format!("{e:?}")),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    check_tolerations(&mut p, &tolerations, g);

    check_priority_class(&mut p, spec.priority_class_name.as_deref(), g);
    check_service_account(&mut p, spec.service_account_name.as_deref(), g);
    let keep_pod_seconds = spec.keep_pod_seconds.unwrap_or(g.default_keep_pod_seconds);
    p.check_range("job.keepPodSeconds", keep_pod_seconds, 0, g.max_keep_pod_seconds);

    if !p.list.is_empty() {
        let job_id = spec.id.filter(|id| is_valid_job_id(id)).or_else(|| Some(fallback_id.to_owned()));
        return Err(Rejection::new(job_id, p.list));
    }
    Ok(Job {
        id,
        namespace,
        queue,
        priority,
        image,
        command: spec.command,
        args: spec.args,
        env,
        cpu_millis,
        memory_bytes,
        cpu_limit_millis: cpu_limit,
        memory_limit_bytes: memory_limit.unwrap_or(memory_bytes),
        timeout_seconds,
        retry: Retry {
            max_attempts,
            backoff_seconds,
            max_backoff_seconds,
            on: retry_on,
            exit_codes: retry_spec.exit_codes,
            oom_memory_percent,
            memory_ceiling_bytes: g.max_memory_bytes,
        },
        labels: spec.labels,
        node_selector: spec.node_selector,
        tolerations,
        priority_class_name: spec.priority_class_name,
        service_account_name: spec.service_account_name,
        keep_pod_seconds,
    })
}

/// Holds a job recorded earlier (and so valid when it was accepted) to the guardrails
/// in force now, before another attempt of it starts: the namespace, the image's
/// registry, the ServiceAccount, Secret references, the CPU, memory, timeout and keep
/// ceilings, `retry.maxAttempts`, and the allow-lists of labels, node selector keys,
/// tolerations and PriorityClasses, with the syntax the API server enforces. Every
/// problem is reported, worded as at submission but saying what is no longer allowed.
///
/// Pass the job as the attempt will run it (after [`Job::with_memory_after`]), so a
/// memory increase past a lowered ceiling is reported too. Caps on sizes are not held
/// again: the job is already stored.
pub fn recheck(job: &Job, guardrails: &Guardrails) -> Result<(), Rejection> {
    let g = guardrails;
    let mut p = Problems::new(Moment::Stored);
    check_namespace(&mut p, &job.namespace, g);
    check_image(&mut p, &job.image, g);
    if !g.allow_secret_refs {
        for (i, (_, value)) in job.env.iter().enumerate() {
            if matches!(value, EnvValue::Secret { .. }) {
                secret_refs_not_allowed(&mut p, &format!("job.env[{i}]"));
            }
        }
    }
    let memory_limit = (job.memory_limit_bytes != job.memory_bytes).then_some(job.memory_limit_bytes);
    type Show = fn(u64) -> String;
    let quantities: [(&str, Option<u64>, u64, Show); 4] = [
        ("job.resources.cpu", Some(job.cpu_millis), g.max_cpu_millis, format_cpu),
        ("job.resources.cpuLimit", job.cpu_limit_millis, g.max_cpu_millis, format_cpu),
        ("job.resources.memory", Some(job.memory_bytes), g.max_memory_bytes, format_memory),
        ("job.resources.memoryLimit", memory_limit, g.max_memory_bytes, format_memory),
    ];
    for (field, value, max, show) in quantities {
        if let Some(value) = value
            && value > max
        {
            p.over_ceiling(field, &quoted(&show(value)), &show(max));
        }
    }
    p.check_range("job.timeoutSeconds", job.timeout_seconds, 1, g.max_timeout_seconds);
    p.check_range("job.retry.maxAttempts", u64::from(job.retry.max_attempts), 1, u64::from(g.max_attempts));
    check_labels(&mut p, &job.labels, g);
    check_node_selector(&mut p, &job.node_selector, g);
    check_tolerations(&mut p, &job.tolerations, g);
    check_priority_class(&mut p, job.priority_class_name.as_deref(), g);
    check_service_account(&mut p, job.service_account_name.as_deref(), g);
    p.check_range("job.keepPodSeconds", job.keep_pod_seconds, 0, g.max_keep_pod_seconds);
    if p.list.is_empty() { Ok(()) } else { Err(Rejection::new(Some(job.id.clone()), p.list)) }
}

/// When a problem is found: as a message is submitted, or as a job recorded earlier is
/// held to the guardrails in force now. The wording differs, the checks do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    Submitted,
    Stored,
}

/// The problems found so far.
#[derive(Debug)]
struct Problems {
    moment: Moment,
    list: Vec<Problem>,
}

impl Problems {
    fn new(moment: Moment) -> Self {
        Self { moment, list: Vec::new() }
    }

    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(problem(field, message));
    }

    /// `<what> is not allowed; allowed: <allowed>`, or `is no longer allowed` for a
    /// stored job.
    fn not_allowed(&mut self, field: impl Into<String>, what: &str, allowed: &str) {
        let message = match self.moment {
            Moment::Submitted => format!("{what} is not allowed; allowed: {allowed}"),
            Moment::Stored => format!("{what} is no longer allowed; allowed now: {allowed}"),
        };
        self.add(field, message);
    }

    fn over_ceiling(&mut self, field: &str, what: &str, ceiling: &str) {
        let message = match self.moment {
            Moment::Submitted => format!("{what} is over the ceiling of {ceiling}"),
            Moment::Stored => format!("{what} is no longer allowed: over the ceiling of {ceiling} now in force"),
        };
        self.add(field, message);
    }

    fn check_range(&mut self, field: &str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.not_allowed(field, &value.to_string(), &format!("{min} to {max}"));
        }
    }
}

/// What a queue name may be, for messages.
pub const QUEUE_NAME_RULE: &str =
    "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63";

/// Whether `name` can name a queue: a DNS label, so it reads the same in a metric
/// dimension, a label value and a URL.
pub fn is_queue_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_QUEUE_NAME_BYTES
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// What a DNS subdomain name may be, for messages.
const DNS_SUBDOMAIN_RULE: &str = "a DNS subdomain name (lowercase letters, digits, '-', '.', starting and ending with a letter or digit, at most 253)";

/// An allow-list for a message: its entries, or `none`.
fn listed(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

/// Text a job passes to its container: bounded, and no control characters but tab,
/// newline and carriage return (each other one would take six bytes as stored JSON,
/// and none belongs in an argument or a variable).
fn check_text(p: &mut Problems, field: &str, text: &str, max: usize) {
    if text.len() > max {
        p.add(field, format!("is {} bytes; at most {max} are allowed", text.len()));
    }
    if let Some(c) = control_character(text) {
        p.add(
            field,
            format!(
                "contains a control character (U+{c:04X}); allowed: any text but control characters other than tab, newline and carriage return"
            ),
        );
    }
}

fn check_namespace(p: &mut Problems, namespace: &str, g: &Guardrails) {
    if g.namespaces.is_empty() {
        p.add("job.namespace", "no namespace is allowed here; allowed: none");
    } else if !g.namespaces.iter().any(|allowed| allowed == namespace) {
        p.not_allowed("job.namespace", &quoted(namespace), &listed(&g.namespaces));
    }
}

/// Parses the image and checks it against the allowed prefixes; `None` when it is not
/// an image reference.
fn check_image(p: &mut Problems, text: &str, g: &Guardrails) -> Option<ImageRef> {
    if text.len() > MAX_IMAGE_BYTES {
        p.add("job.image", format!("{} is {} bytes; at most {MAX_IMAGE_BYTES} are allowed", quoted(text), text.len()));
        return None;
    }
    let image = match ImageRef::parse(text) {
        Ok(image) => image,
        Err(why) => {
            p.add("job.image", format!("{} is not an image reference: {why}", quoted(text)));
            return None;
        }
    };
    if !g.admits_image(&image) {
        let canonical = image.to_string();
        let shown = if canonical == text { quoted(text) } else { format!("{} (that is {canonical})", quoted(text)) };
        let allowed =
            if g.image_prefixes.is_empty() { "none configured".to_owned() } else { g.image_prefixes.join(", ") };
        let message = match p.moment {
            Moment::Submitted => format!("{shown} is not from an allowed registry; allowed prefixes: {allowed}"),
            Moment::Stored => {
                format!("{shown} is no longer from an allowed registry; allowed prefixes now: {allowed}")
            }
        };
        p.add("job.image", message);
    }
    Some(image)
}

fn secret_refs_not_allowed(p: &mut Problems, env_field: &str) {
    let message = match p.moment {
        Moment::Submitted => "secret references are not allowed by this deployment",
        Moment::Stored => "secret references are no longer allowed by this deployment",
    };
    p.add(format!("{env_field}.secret"), message);
}

fn check_service_account(p: &mut Problems, account: Option<&str>, g: &Guardrails) {
    if let Some(account) = account
        && !g.service_accounts.iter().any(|allowed| allowed == account)
    {
        p.not_allowed("job.serviceAccountName", &quoted(account), &listed(&g.service_accounts));
    }
}

fn check_labels(p: &mut Problems, labels: &BTreeMap<String, String>, g: &Guardrails) {
    let prefixes = if g.label_prefixes.is_empty() {
        "none".to_owned()
    } else {
        let under: Vec<String> =
            g.label_prefixes.iter().map(|prefix| format!("{}/", prefix.strip_suffix('/').unwrap_or(prefix))).collect();
        format!("keys under {}", under.join(", "))
    };
    for (key, value) in labels {
        let what = format!("key {}", quoted(key));
        if !is_qualified_name(key) {
            p.add("job.labels", format!("{what} is not a label key; allowed: {QUALIFIED_NAME_RULE}"));
        } else if is_reserved_label(key) {
            p.add("job.labels", format!("{what} is reserved for podbridge; allowed: {prefixes}"));
        } else if !g.admits_label_key(key) {
            p.not_allowed("job.labels", &what, &prefixes);
        }
        if !is_label_value(value) {
            p.add(
                "job.labels",
                format!("value {} of {} is not a label value; allowed: {LABEL_VALUE_RULE}", quoted(value), quoted(key)),
            );
        }
    }
}

fn check_node_selector(p: &mut Problems, terms: &BTreeMap<String, String>, g: &Guardrails) {
    for (key, value) in terms {
        let what = format!("key {}", quoted(key));
        if !is_qualified_name(key) {
            p.add("job.nodeSelector", format!("{what} is not a label key; allowed: {QUALIFIED_NAME_RULE}"));
        } else if !g.node_selector_keys.iter().any(|allowed| allowed == key) {
            p.not_allowed("job.nodeSelector", &what, &listed(&g.node_selector_keys));
        }
        if !is_label_value(value) {
            p.add(
                "job.nodeSelector",
                format!("value {} of {} is not a label value; allowed: {LABEL_VALUE_RULE}", quoted(value), quoted(key)),
            );
        }
    }
}

fn check_tolerations(p: &mut Problems, tolerations: &[Toleration], g: &Guardrails) {
    let keys = listed(&g.toleration_keys);
    for (i, t) in tolerations.iter().enumerate() {
        let field = format!("job.tolerations[{i}]");
        let exists = t.operator == "Exists";
        if !matches!(t.operator.as_str(), "Equal" | "Exists") {
            p.add(
                format!("{field}.operator"),
                format!("{} is not allowed; allowed: Equal, Exists", quoted(&t.operator)),
            );
        }
        match t.key.as_deref().filter(|key| !key.is_empty()) {
            None if exists => p.add(
                format!("{field}.key"),
                format!(
                    "is required: a toleration without a key tolerates every taint, the node not-ready and unreachable \
                     ones included; allowed keys: {keys}"
                ),
            ),
            None => p.add(format!("{field}.key"), format!("is required with operator Equal; allowed keys: {keys}")),
            Some(key) if !is_qualified_name(key) => p.add(
                format!("{field}.key"),
                format!("{} is not a taint key; allowed: {QUALIFIED_NAME_RULE}", quoted(key)),
            ),
            Some(key) if !g.toleration_keys.iter().any(|allowed| allowed == key) => {
                p.not_allowed(format!("{field}.key"), &quoted(key), &keys);
            }
            Some(_) => {}
        }
        match &t.value {
            Some(_) if exists => p.add(
                format!("{field}.value"),
                "must be empty when operator is Exists; allowed: no value, or operator Equal",
            ),
            Some(value) if !is_label_value(value) => p.add(
                format!("{field}.value"),
                format!("{} is not a label value; allowed: {LABEL_VALUE_RULE}", quoted(value)),
            ),
            _ => {}
        }
        if let Some(effect) = &t.effect
            && !matches!(effect.as_str(), "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            p.add(
                format!("{field}.effect"),
                format!("{} is not allowed; allowed: NoSchedule, PreferNoSchedule, NoExecute", quoted(effect)),
            );
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            p.add(format!("{field}.tolerationSeconds"), "is only allowed with effect NoExecute");
        }
    }
}

fn check_priority_class(p: &mut Problems, class: Option<&str>, g: &Guardrails) {
    let Some(class) = class else { return };
    let field = "job.priorityClassName";
    if !is_dns_subdomain(class) {
        p.add(field, format!("{} is not a PriorityClass name; allowed: {DNS_SUBDOMAIN_RULE}", quoted(class)));
    } else if class.starts_with(SYSTEM_PRIORITY_PREFIX) {
        p.add(
            field,
            format!(
                "{} is not allowed: system- classes are for the cluster's own components; allowed: {}",
                quoted(class),
                listed(&g.priority_classes)
            ),
        );
    } else if !g.priority_classes.iter().any(|allowed| allowed == class) {
        p.not_allowed(field, &quoted(class), &listed(&g.priority_classes));
    }
}

fn is_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ENV_NAME_BYTES
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}
