//! From message bytes to a job that may run: parsing, the deployment's guardrails, and
//! the defaults. Every problem names the field, the value and what is allowed; all
//! problems of a message are reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::failure::FailureClass;
use crate::job::{
    CancelMessage, CancelSpec, EnvVar, JobMessage, JobSpec, MAX_MESSAGE_BYTES, MESSAGE_VERSION, TaintEffect,
    TolerationOperator,
};
use crate::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};

/// What the deployment allows and assumes; set by its operators, never by a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Namespaces jobs may run in; the first is the default.
    pub namespaces: Vec<String>,
    /// Image prefixes jobs may use (`registry.example.com/team/`); `*` allows any image.
    pub image_prefixes: Vec<String>,
    /// ServiceAccounts jobs may ask for; none by default.
    pub service_accounts: Vec<String>,
    pub allow_secret_refs: bool,
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

/// A toleration, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: String,
    pub value: Option<String>,
    pub effect: Option<String>,
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
/// and what the pod is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub namespace: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: u64,
    pub timeout_seconds: u64,
    pub retry: Retry,
    pub labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
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
    let reject = |job_id: Option<String>, problems: Vec<Problem>| Rejection { job_id, problems };
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
        problem(field, e.into_inner().to_string())
    })
}

/// Checks a job against the guardrails and fills in the defaults.
pub fn validate(spec: JobSpec, fallback_id: &str, guardrails: &Guardrails) -> Result<Job, Rejection> {
    let mut problems = Vec::new();
    let mut p = |field: &str, message: String| problems.push(problem(field, message));

    let id = match &spec.id {
        Some(id) if is_valid_job_id(id) => id.clone(),
        Some(id) => {
            p(
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

    let namespace = spec.namespace.clone().or_else(|| guardrails.namespaces.first().cloned()).unwrap_or_default();
    if !guardrails.namespaces.contains(&namespace) {
        p(
            "job.namespace",
            format!("{} is not allowed; allowed: {}", quoted(&namespace), guardrails.namespaces.join(", ")),
        );
    }

    let image = spec.image.trim().to_owned();
    if image.is_empty() || image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p("job.image", format!("{} is not an image reference", quoted(&spec.image)));
    } else if !guardrails.image_prefixes.iter().any(|prefix| prefix == "*" || image.starts_with(prefix.as_str())) {
        let allowed = if guardrails.image_prefixes.is_empty() {
            "none configured".to_owned()
        } else {
            guardrails.image_prefixes.join(", ")
        };
        p("job.image", format!("{} is not from an allowed registry; allowed prefixes: {allowed}", quoted(&image)));
    }

    for (list, field) in [(&spec.command, "job.command"), (&spec.args, "job.args")] {
        if list.len() > 256 {
            p(field, format!("has {} entries; at most 256 are allowed", list.len()));
        }
        for (i, item) in list.iter().enumerate() {
            if item.contains('\0') {
                p(&format!("{field}[{i}]"), "contains a NUL character".to_owned());
            }
        }
    }

    let mut env = Vec::new();
    let mut names = BTreeSet::new();
    for (i, EnvVar { name, value, secret }) in spec.env.iter().enumerate() {
        let field = format!("job.env[{i}]");
        if !is_env_name(name) {
            p(
                &format!("{field}.name"),
                format!("{} is not allowed: letters, digits and '_', not starting with a digit", quoted(name)),
            );
        } else if !names.insert(name.clone()) {
            p(&format!("{field}.name"), format!("{} is set twice", quoted(name)));
        }
        match (value, secret) {
            (Some(value), None) => env.push((name.clone(), EnvValue::Literal(value.clone()))),
            (None, Some(secret)) => {
                if !guardrails.allow_secret_refs {
                    p(&format!("{field}.secret"), "secret references are not allowed by this deployment".to_owned());
                } else if !is_dns_subdomain(&secret.name) {
                    p(&format!("{field}.secret.name"), format!("{} is not a Secret name", quoted(&secret.name)));
                } else if secret.key.is_empty()
                    || !secret.key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                {
                    p(&format!("{field}.secret.key"), format!("{} is not a Secret key", quoted(&secret.key)));
                }
                env.push((name.clone(), EnvValue::Secret { name: secret.name.clone(), key: secret.key.clone() }));
            }
            _ => p(&field, "needs exactly one of `value` or `secret`".to_owned()),
        }
    }

    let resources = &spec.resources;
    let mut quantity = |field: &str,
                        text: &Option<String>,
                        parse: fn(&str) -> Result<u64, String>,
                        max: u64,
                        show: fn(u64) -> String| {
        let value = text.as_deref().map(parse).transpose();
        match value {
            Ok(Some(v)) if v > max => {
                p(
                    field,
                    format!("{} is over the ceiling of {}", quoted(text.as_deref().unwrap_or_default()), show(max)),
                );
                None
            }
            Ok(Some(0)) => {
                p(field, "must be more than zero".to_owned());
                None
            }
            Ok(v) => v,
            Err(why) => {
                p(field, why);
                None
            }
        }
    };
    let cpu = quantity("job.resources.cpu", &resources.cpu, parse_cpu, guardrails.max_cpu_millis, format_cpu);
    let memory =
        quantity("job.resources.memory", &resources.memory, parse_memory, guardrails.max_memory_bytes, format_memory);
    let cpu_limit =
        quantity("job.resources.cpuLimit", &resources.cpu_limit, parse_cpu, guardrails.max_cpu_millis, format_cpu);
    let memory_limit = quantity(
        "job.resources.memoryLimit",
        &resources.memory_limit,
        parse_memory,
        guardrails.max_memory_bytes,
        format_memory,
    );
    let cpu_millis = cpu.unwrap_or(guardrails.default_cpu_millis.min(cpu_limit.unwrap_or(u64::MAX)));
    let memory_bytes = memory.unwrap_or(guardrails.default_memory_bytes.min(memory_limit.unwrap_or(u64::MAX)));
    if cpu_limit.is_some_and(|limit| limit < cpu_millis) {
        p(
            "job.resources.cpuLimit",
            format!(
                "{} is below the CPU request of {}",
                quoted(resources.cpu_limit.as_deref().unwrap_or_default()),
                format_cpu(cpu_millis)
            ),
        );
    }
    if memory_limit.is_some_and(|limit| limit < memory_bytes) {
        p(
            "job.resources.memoryLimit",
            format!(
                "{} is below the memory request of {}",
                quoted(resources.memory_limit.as_deref().unwrap_or_default()),
                format_memory(memory_bytes)
            ),
        );
    }

    let timeout_seconds = spec.timeout_seconds.unwrap_or(guardrails.default_timeout_seconds);
    if timeout_seconds == 0 || timeout_seconds > guardrails.max_timeout_seconds {
        p(
            "job.timeoutSeconds",
            format!("{timeout_seconds} is not allowed; allowed: 1 to {}", guardrails.max_timeout_seconds),
        );
    }

    let retry_spec = spec.retry.clone().unwrap_or_default();
    let max_attempts = retry_spec.max_attempts.unwrap_or(3.min(guardrails.max_attempts));
    if max_attempts == 0 || max_attempts > guardrails.max_attempts {
        p("job.retry.maxAttempts", format!("{max_attempts} is not allowed; allowed: 1 to {}", guardrails.max_attempts));
    }
    let backoff_seconds = retry_spec.backoff_seconds.unwrap_or(30);
    let max_backoff_seconds = retry_spec.max_backoff_seconds.unwrap_or(600.max(backoff_seconds));
    if backoff_seconds > 86_400 {
        p("job.retry.backoffSeconds", format!("{backoff_seconds} is not allowed; allowed: 0 to 86400"));
    }
    if max_backoff_seconds > 86_400 || max_backoff_seconds < backoff_seconds {
        p(
            "job.retry.maxBackoffSeconds",
            format!("{max_backoff_seconds} is not allowed; allowed: backoffSeconds ({backoff_seconds}) to 86400"),
        );
    }
    for (i, code) in retry_spec.exit_codes.iter().enumerate() {
        if !(1..=255).contains(code) {
            p(&format!("job.retry.exitCodes[{i}]"), format!("{code} is not allowed; allowed: 1 to 255"));
        }
    }
    let retry_on = retry_spec.on.clone().unwrap_or_else(|| FailureClass::RETRIED_BY_DEFAULT.to_vec());
    let oom_memory_percent = match retry_spec.oom_memory_factor {
        None => None,
        Some(factor) if !(factor > 1.0 && factor <= 4.0) => {
            p("job.retry.oomMemoryFactor", format!("{factor} is not allowed; allowed: more than 1, at most 4"));
            None
        }
        Some(_) if !retry_on.contains(&FailureClass::OomKilled) => {
            p(
                "job.retry.oomMemoryFactor",
                "has no effect unless job.retry.on includes \"oom_killed\" (OOM-killed attempts are not retried otherwise)"
                    .to_owned(),
            );
            None
        }
        // In range, so the rounding cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(factor) => Some((factor * 100.0).round() as u32),
    };

    if spec.labels.len() > 32 {
        p("job.labels", format!("has {} labels; at most 32 are allowed", spec.labels.len()));
    }
    for (key, value) in &spec.labels {
        if !is_qualified_name(key) {
            p("job.labels", format!("key {} is not a label key", quoted(key)));
        } else if key.starts_with("podbridge.dev/") || key == "app.kubernetes.io/managed-by" {
            p("job.labels", format!("key {} is reserved for podbridge", quoted(key)));
        }
        if !is_label_value(value) {
            p(
                "job.labels",
                format!(
                    "value {} of {} is not a label value (at most 63 letters, digits, '-', '_', '.')",
                    quoted(value),
                    quoted(key)
                ),
            );
        }
    }
    for (key, value) in &spec.node_selector {
        if !is_qualified_name(key) || !is_label_value(value) {
            p("job.nodeSelector", format!("{}={} is not a label selector term", quoted(key), quoted(value)));
        }
    }

    let mut tolerations = Vec::new();
    for (i, t) in spec.tolerations.iter().enumerate() {
        let operator = t.operator.unwrap_or(TolerationOperator::Equal);
        if let Some(key) = &t.key
            && !is_qualified_name(key)
        {
            p(&format!("job.tolerations[{i}].key"), format!("{} is not a taint key", quoted(key)));
        }
        if operator == TolerationOperator::Exists && t.value.is_some() {
            p(&format!("job.tolerations[{i}].value"), "must be empty when operator is Exists".to_owned());
        }
        if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
            p(&format!("job.tolerations[{i}].tolerationSeconds"), "is only allowed with effect NoExecute".to_owned());
        }
        tolerations.push(Toleration {
            key: t.key.clone(),
            operator: format!("{operator:?}"),
            value: t.value.clone(),
            effect: t.effect.map(|e| format!("{e:?}")),
            toleration_seconds: t.toleration_seconds,
        });
    }

    if let Some(class) = &spec.priority_class_name {
        if !is_dns_subdomain(class) {
            p("job.priorityClassName", format!("{} is not a PriorityClass name", quoted(class)));
        } else if class.starts_with("system-") {
            p(
                "job.priorityClassName",
                format!("{} is not allowed: system- classes are for the cluster's own components", quoted(class)),
            );
        }
    }
    if let Some(account) = &spec.service_account_name
        && !guardrails.service_accounts.contains(account)
    {
        let allowed = if guardrails.service_accounts.is_empty() {
            "none".to_owned()
        } else {
            guardrails.service_accounts.join(", ")
        };
        p("job.serviceAccountName", format!("{} is not allowed; allowed: {allowed}", quoted(account)));
    }
    let keep_pod_seconds = spec.keep_pod_seconds.unwrap_or(guardrails.default_keep_pod_seconds);
    if keep_pod_seconds > guardrails.max_keep_pod_seconds {
        p(
            "job.keepPodSeconds",
            format!("{keep_pod_seconds} is not allowed; allowed: 0 to {}", guardrails.max_keep_pod_seconds),
        );
    }

    if !problems.is_empty() {
        let job_id = spec.id.filter(|id| is_valid_job_id(id)).or_else(|| Some(fallback_id.to_owned()));
        return Err(Rejection { job_id, problems });
    }
    Ok(Job {
        id,
        namespace,
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
            memory_ceiling_bytes: guardrails.max_memory_bytes,
        },
        labels: spec.labels,
        node_selector: spec.node_selector,
        tolerations,
        priority_class_name: spec.priority_class_name,
        service_account_name: spec.service_account_name,
        keep_pod_seconds,
    })
}

fn is_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_valid_job_id(s)
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_valid_job_id(name),
        None => is_valid_job_id(s),
    }
}
