//! The deployment's settings, read once from the environment of a function (or of a
//! local runner), with errors that name the variable and what it must hold.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::pod::PodSettings;
use crate::quantity::{parse_cpu, parse_memory};
use crate::validate::Guardrails;

/// Settings shared by the functions that submit jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The DynamoDB job table (`PODBRIDGE_TABLE`).
    pub table: String,
    pub guardrails: Guardrails,
    pub pods: PodSettings,
    /// How long terminal records are kept (`PODBRIDGE_RECORD_TTL_DAYS`, default 30).
    pub record_ttl: Duration,
    /// The deadline of every Kubernetes API call (`PODBRIDGE_KUBE_TIMEOUT_SECONDS`, default 10).
    pub kube_timeout: Duration,
    /// Records of one batch handled at once (`PODBRIDGE_CONCURRENCY`, default 10).
    pub concurrency: usize,
    /// The EventBridge bus job state changes are published to (`PODBRIDGE_EVENT_BUS`, a
    /// name or an ARN; default `default`, the bus every account has).
    pub event_bus: String,
    /// The CloudWatch namespace of the functions' metrics (`PODBRIDGE_METRICS_NAMESPACE`,
    /// default `podbridge`): one per deployment, so two stacks in one account and region
    /// never mix their figures.
    pub metrics_namespace: String,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &str, what: &str| {
            var(name).ok_or_else(|| Error::Config(format!("{name} is not set: it must hold {what}")))
        };
        let list = |name: &str| -> Vec<String> {
            var(name)
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        };
        let number = |name: &str, default: u64| -> Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(text) => text.parse().map_err(|_| Error::Config(format!("{name}={text:?} is not a whole number"))),
            }
        };
        let quantity = |name: &str, default: u64, parse: fn(&str) -> std::result::Result<u64, String>| -> Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(text) => parse(&text).map_err(|why| Error::Config(format!("{name}: {why}"))),
            }
        };
        let defaults = Guardrails::default();
        let namespaces = list("PODBRIDGE_NAMESPACES");
        if namespaces.is_empty() {
            return Err(Error::Config("PODBRIDGE_NAMESPACES is not set: it must hold the namespaces jobs may run in, comma-separated (the first is the default)".into()));
        }
        let image_prefixes = list("PODBRIDGE_IMAGE_PREFIXES");
        if image_prefixes.is_empty() {
            return Err(Error::Config("PODBRIDGE_IMAGE_PREFIXES is not set: it must hold the allowed image prefixes, comma-separated (`*` allows any image)".into()));
        }
        let allow_secret_refs = match var("PODBRIDGE_ALLOW_SECRET_REFS").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::Config(format!("PODBRIDGE_ALLOW_SECRET_REFS={other:?} must be true or false")));
            }
        };
        let guardrails = Guardrails {
            namespaces,
            image_prefixes,
            service_accounts: list("PODBRIDGE_SERVICE_ACCOUNTS"),
            allow_secret_refs,
            default_cpu_millis: quantity("PODBRIDGE_DEFAULT_CPU", defaults.default_cpu_millis, parse_cpu)?,
            default_memory_bytes: quantity("PODBRIDGE_DEFAULT_MEMORY", defaults.default_memory_bytes, parse_memory)?,
            max_cpu_millis: quantity("PODBRIDGE_MAX_CPU", defaults.max_cpu_millis, parse_cpu)?,
            max_memory_bytes: quantity("PODBRIDGE_MAX_MEMORY", defaults.max_memory_bytes, parse_memory)?,
            default_timeout_seconds: number("PODBRIDGE_DEFAULT_TIMEOUT_SECONDS", defaults.default_timeout_seconds)?,
            max_timeout_seconds: number("PODBRIDGE_MAX_TIMEOUT_SECONDS", defaults.max_timeout_seconds)?,
            max_attempts: u32::try_from(number("PODBRIDGE_MAX_ATTEMPTS", u64::from(defaults.max_attempts))?)
                .map_err(|_| Error::Config("PODBRIDGE_MAX_ATTEMPTS is too large".into()))?,
            default_keep_pod_seconds: number("PODBRIDGE_DEFAULT_KEEP_POD_SECONDS", defaults.default_keep_pod_seconds)?,
            max_keep_pod_seconds: number("PODBRIDGE_MAX_KEEP_POD_SECONDS", defaults.max_keep_pod_seconds)?,
        };
        // A default above its ceiling would reject every job that relies on it, for a
        // reason its sender did not cause.
        let limits = [
            ("PODBRIDGE_DEFAULT_CPU", guardrails.default_cpu_millis, "PODBRIDGE_MAX_CPU", guardrails.max_cpu_millis),
            (
                "PODBRIDGE_DEFAULT_MEMORY",
                guardrails.default_memory_bytes,
                "PODBRIDGE_MAX_MEMORY",
                guardrails.max_memory_bytes,
            ),
            (
                "PODBRIDGE_DEFAULT_TIMEOUT_SECONDS",
                guardrails.default_timeout_seconds,
                "PODBRIDGE_MAX_TIMEOUT_SECONDS",
                guardrails.max_timeout_seconds,
            ),
            (
                "PODBRIDGE_DEFAULT_KEEP_POD_SECONDS",
                guardrails.default_keep_pod_seconds,
                "PODBRIDGE_MAX_KEEP_POD_SECONDS",
                guardrails.max_keep_pod_seconds,
            ),
        ];
        for (default_name, default, max_name, max) in limits {
            if default > max {
                return Err(Error::Config(format!("{default_name} ({default}) is above {max_name} ({max})")));
            }
        }
        if guardrails.max_attempts == 0 || guardrails.default_timeout_seconds == 0 {
            return Err(Error::Config(
                "PODBRIDGE_MAX_ATTEMPTS and PODBRIDGE_DEFAULT_TIMEOUT_SECONDS must be at least 1".into(),
            ));
        }
        let grace = number("PODBRIDGE_TERMINATION_GRACE_SECONDS", 30)?;
        let concurrency = number("PODBRIDGE_CONCURRENCY", 10)?;
        if concurrency == 0 {
            return Err(Error::Config("PODBRIDGE_CONCURRENCY must be at least 1".into()));
        }
        let metrics_namespace = var("PODBRIDGE_METRICS_NAMESPACE").unwrap_or_else(|| "podbridge".to_owned());
        let valid_namespace = metrics_namespace.len() <= 255
            && !metrics_namespace.starts_with("AWS/")
            && metrics_namespace.chars().all(|c| c.is_ascii_alphanumeric() || ".-_/#:".contains(c));
        if !valid_namespace {
            return Err(Error::Config(format!(
                "PODBRIDGE_METRICS_NAMESPACE={metrics_namespace:?} is not a CloudWatch namespace: 1 to 255 of \
                 A-Z a-z 0-9 . - _ / # :, not starting with AWS/"
            )));
        }
        Ok(Self {
            table: required("PODBRIDGE_TABLE", "the name of the DynamoDB job table")?,
            guardrails,
            pods: PodSettings { termination_grace_period_seconds: i64::try_from(grace).unwrap_or(i64::MAX) },
            record_ttl: Duration::from_secs(number("PODBRIDGE_RECORD_TTL_DAYS", 30)?.saturating_mul(86_400)),
            kube_timeout: Duration::from_secs(number("PODBRIDGE_KUBE_TIMEOUT_SECONDS", 10)?.max(1)),
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            event_bus: var("PODBRIDGE_EVENT_BUS").unwrap_or_else(|| "default".to_owned()),
            metrics_namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const MINIMAL: [(&str, &str); 3] = [
        ("PODBRIDGE_TABLE", "jobs"),
        ("PODBRIDGE_NAMESPACES", "batch, etl"),
        ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/"),
    ];

    #[test]
    fn minimal_settings_get_defaults() {
        let s = settings(&MINIMAL).unwrap();
        assert_eq!(s.table, "jobs");
        assert_eq!(s.guardrails.namespaces, ["batch", "etl"]);
        assert_eq!(s.guardrails.max_memory_bytes, 16 << 30);
        assert_eq!(s.concurrency, 10);
        assert_eq!(s.record_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(s.event_bus, "default");
        assert_eq!(s.metrics_namespace, "podbridge");
    }

    #[test]
    fn errors_name_the_variable() {
        let error = settings(&MINIMAL[1..]).unwrap_err().to_string();
        assert!(error.contains("PODBRIDGE_TABLE"), "{error}");
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_MAX_MEMORY", "lots"));
        let error = settings(&bad).unwrap_err().to_string();
        assert!(error.contains("PODBRIDGE_MAX_MEMORY") && error.contains("\"lots\""), "{error}");
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_ALLOW_SECRET_REFS", "yes"));
        assert!(settings(&bad).unwrap_err().to_string().contains("true or false"));
        assert!(settings(&MINIMAL[..2]).unwrap_err().to_string().contains("PODBRIDGE_IMAGE_PREFIXES"));
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_METRICS_NAMESPACE", "AWS/Lambda"));
        assert!(settings(&bad).unwrap_err().to_string().contains("PODBRIDGE_METRICS_NAMESPACE"));
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_MAX_TIMEOUT_SECONDS", "3600"));
        let error = settings(&bad).unwrap_err().to_string();
        assert_eq!(
            error,
            "configuration: PODBRIDGE_DEFAULT_TIMEOUT_SECONDS (21600) is above PODBRIDGE_MAX_TIMEOUT_SECONDS (3600)"
        );
    }
}
