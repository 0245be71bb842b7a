//! The deployment's settings: every `PODBRIDGE_*` variable is read here and nowhere
//! else, once, into one [`Settings`] value, with errors that name the variable and what
//! it must hold. The functions, the CLI and `podbridge dev` all read them through
//! [`Settings::from_lookup`] (the environment, or a map); docs/JOBS.md lists them.
//!
//! [`Settings`] has no `Default`: every value is either read or given its documented
//! default here, on purpose.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use podbridge_core::admission::{Limits, NodeSize};
use podbridge_core::reconcile::Thresholds;

use crate::eks::{ClusterAccess, pem_certificates};
use crate::error::{Error, Result};
use podbridge_core::pod::PodSettings;
use podbridge_core::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use podbridge_core::tenancy::Tenancy;
use podbridge_core::validate::image::ImagePrefix;
use podbridge_core::validate::names::{QUALIFIED_NAME_RULE, is_dns_subdomain, is_qualified_name};
use podbridge_core::validate::{
    Guardrails, MIN_CPU_MILLIS, MIN_MEMORY_BYTES, RESERVED_LABEL_PREFIX, SYSTEM_PRIORITY_PREFIX,
};

/// The name of every variable the settings read, each named here once.
pub mod var {
    /// Whether jobs may take environment variables from Secrets.
    pub const ALLOW_SECRET_REFS: &str = "PODBRIDGE_ALLOW_SECRET_REFS";
    /// The EKS cluster's CA, base64 of the PEM (else DescribeCluster).
    pub const CLUSTER_CA: &str = "PODBRIDGE_CLUSTER_CA";
    /// The EKS cluster's API server URL (else DescribeCluster).
    pub const CLUSTER_ENDPOINT: &str = "PODBRIDGE_CLUSTER_ENDPOINT";
    /// The EKS cluster.
    pub const CLUSTER_NAME: &str = "PODBRIDGE_CLUSTER_NAME";
    /// Records of one batch (or jobs of one pass) handled at once.
    pub const CONCURRENCY: &str = "PODBRIDGE_CONCURRENCY";
    /// How long past a job's timeout it is failed even if the kubelet has not enforced it.
    pub const DEADLINE_GRACE_SECONDS: &str = "PODBRIDGE_DEADLINE_GRACE_SECONDS";
    /// The CPU request of a job that names none.
    pub const DEFAULT_CPU: &str = "PODBRIDGE_DEFAULT_CPU";
    /// How long a finished pod is kept when the job says nothing.
    pub const DEFAULT_KEEP_POD_SECONDS: &str = "PODBRIDGE_DEFAULT_KEEP_POD_SECONDS";
    /// The memory request of a job that names none.
    pub const DEFAULT_MEMORY: &str = "PODBRIDGE_DEFAULT_MEMORY";
    /// The timeout of a job that names none.
    pub const DEFAULT_TIMEOUT_SECONDS: &str = "PODBRIDGE_DEFAULT_TIMEOUT_SECONDS";
    /// The EventBridge bus job state changes go to (a name or an ARN).
    pub const EVENT_BUS: &str = "PODBRIDGE_EVENT_BUS";
    /// How long the reconciler follows the pods after its pass.
    pub const FOLLOW_SECONDS: &str = "PODBRIDGE_FOLLOW_SECONDS";
    /// The image prefixes jobs may use, comma-separated (`*`: any image).
    pub const IMAGE_PREFIXES: &str = "PODBRIDGE_IMAGE_PREFIXES";
    /// The deadline of every Kubernetes API call.
    pub const KUBE_TIMEOUT_SECONDS: &str = "PODBRIDGE_KUBE_TIMEOUT_SECONDS";
    /// The label key prefixes jobs may set.
    pub const LABEL_PREFIXES: &str = "PODBRIDGE_LABEL_PREFIXES";
    /// The most attempts a job may ask for.
    pub const MAX_ATTEMPTS: &str = "PODBRIDGE_MAX_ATTEMPTS";
    /// The most CPU a job may request.
    pub const MAX_CPU: &str = "PODBRIDGE_MAX_CPU";
    /// The longest a job may ask its finished pod to be kept.
    pub const MAX_KEEP_POD_SECONDS: &str = "PODBRIDGE_MAX_KEEP_POD_SECONDS";
    /// Retries on request one job may get.
    pub const MAX_MANUAL_RETRIES: &str = "PODBRIDGE_MAX_MANUAL_RETRIES";
    /// The most memory a job may request.
    pub const MAX_MEMORY: &str = "PODBRIDGE_MAX_MEMORY";
    /// The longest timeout a job may ask for.
    pub const MAX_TIMEOUT_SECONDS: &str = "PODBRIDGE_MAX_TIMEOUT_SECONDS";
    /// The CloudWatch namespace of the functions' metrics.
    pub const METRICS_NAMESPACE: &str = "PODBRIDGE_METRICS_NAMESPACE";
    /// The namespaces jobs may run in, comma-separated; the first is the default.
    pub const NAMESPACES: &str = "PODBRIDGE_NAMESPACES";
    /// The node label keys jobs may select on.
    pub const NODE_SELECTOR_KEYS: &str = "PODBRIDGE_NODE_SELECTOR_KEYS";
    /// When a managed pod with no job record is deleted.
    pub const ORPHAN_GRACE_SECONDS: &str = "PODBRIDGE_ORPHAN_GRACE_SECONDS";
    /// The PriorityClasses jobs may ask for.
    pub const PRIORITY_CLASSES: &str = "PODBRIDGE_PRIORITY_CLASSES";
    /// How long terminal records are kept, in days.
    pub const RECORD_TTL_DAYS: &str = "PODBRIDGE_RECORD_TTL_DAYS";
    /// When a queued job with no pod is dispatched again.
    pub const REDISPATCH_AFTER_SECONDS: &str = "PODBRIDGE_REDISPATCH_AFTER_SECONDS";
    /// Which namespaces each sender may use (a JSON array of rules).
    pub const SENDERS: &str = "PODBRIDGE_SENDERS";
    /// The ServiceAccounts jobs may ask for.
    pub const SERVICE_ACCOUNTS: &str = "PODBRIDGE_SERVICE_ACCOUNTS";
    /// When a pod that never started fails.
    pub const START_LIMIT_SECONDS: &str = "PODBRIDGE_START_LIMIT_SECONDS";
    /// When a pod stuck pulling its image or creating its container fails.
    pub const STUCK_AFTER_SECONDS: &str = "PODBRIDGE_STUCK_AFTER_SECONDS";
    /// The DynamoDB job table.
    pub const TABLE: &str = "PODBRIDGE_TABLE";
    /// The DynamoDB queue table.
    pub const QUEUE_TABLE: &str = "PODBRIDGE_QUEUE_TABLE";
    /// The limit across all queues, when the queue table sets none: jobs, CPU, memory.
    pub const MAX_ADMITTED_JOBS: &str = "PODBRIDGE_MAX_ADMITTED_JOBS";
    pub const MAX_ADMITTED_CPU: &str = "PODBRIDGE_MAX_ADMITTED_CPU";
    pub const MAX_ADMITTED_MEMORY: &str = "PODBRIDGE_MAX_ADMITTED_MEMORY";
    /// The allocatable CPU and memory of the largest node an autoscaler may add.
    pub const LARGEST_NODE_CPU: &str = "PODBRIDGE_LARGEST_NODE_CPU";
    pub const LARGEST_NODE_MEMORY: &str = "PODBRIDGE_LARGEST_NODE_MEMORY";
    /// The pods' termination grace period.
    pub const TERMINATION_GRACE_SECONDS: &str = "PODBRIDGE_TERMINATION_GRACE_SECONDS";
    /// The taint keys jobs may tolerate.
    pub const TOLERATION_KEYS: &str = "PODBRIDGE_TOLERATION_KEYS";
    /// When an unschedulable pod fails.
    pub const UNSCHEDULABLE_AFTER_SECONDS: &str = "PODBRIDGE_UNSCHEDULABLE_AFTER_SECONDS";
}

/// The bus every account has, used when `PODBRIDGE_EVENT_BUS` is not set.
pub const DEFAULT_EVENT_BUS: &str = "default";

/// How long the reconciler follows the pods after its pass when
/// `PODBRIDGE_FOLLOW_SECONDS` is not set: until shortly before the next one-minute
/// schedule.
pub const DEFAULT_FOLLOW: Duration = Duration::from_secs(50);

/// Settings shared by the functions that submit jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The DynamoDB job table (`PODBRIDGE_TABLE`).
    pub table: String,
    /// The DynamoDB queue table (`PODBRIDGE_QUEUE_TABLE`).
    pub queue_table: String,
    /// Admission's defaults (`PODBRIDGE_MAX_ADMITTED_*`, `PODBRIDGE_LARGEST_NODE_*`).
    pub admission: AdmissionSettings,
    /// What a job may ask for (`PODBRIDGE_NAMESPACES`, `PODBRIDGE_IMAGE_PREFIXES`, the
    /// allow-lists, the defaults and ceilings).
    pub guardrails: Guardrails,
    /// What every pod gets (`PODBRIDGE_TERMINATION_GRACE_SECONDS`).
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
    /// Which namespaces each sender may use (`PODBRIDGE_SENDERS`, a JSON array of rules;
    /// unset: every sender may use every namespace).
    pub tenancy: Tenancy,
    /// Retries on request one job may get (`PODBRIDGE_MAX_MANUAL_RETRIES`, default 3).
    pub max_manual_retries: u32,
    /// The reconciler's limits and how long it follows the pods.
    pub reconcile: ReconcileSettings,
    /// How to reach the cluster (`PODBRIDGE_CLUSTER_*`, else `KUBECONFIG`); `None`
    /// when neither is set, which only a command that creates no pods can live with.
    pub cluster: Option<ClusterAccess>,
}

/// Admission's defaults from the deployment's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// The limit across all queues until `podbridge queues limits` sets one
    /// (`PODBRIDGE_MAX_ADMITTED_JOBS`, `PODBRIDGE_MAX_ADMITTED_CPU`,
    /// `PODBRIDGE_MAX_ADMITTED_MEMORY`; unset: no limit).
    pub total: Limits,
    /// The allocatable CPU and memory of the largest node an autoscaler may add
    /// (`PODBRIDGE_LARGEST_NODE_CPU` and `PODBRIDGE_LARGEST_NODE_MEMORY`, both or
    /// neither): a job larger than it and than every listed node is refused.
    pub largest_node: Option<NodeSize>,
}

/// What the reconciler reads besides the shared settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileSettings {
    /// When a job counts as stuck or orphaned (`PODBRIDGE_REDISPATCH_AFTER_SECONDS`,
    /// `PODBRIDGE_STUCK_AFTER_SECONDS`, `PODBRIDGE_UNSCHEDULABLE_AFTER_SECONDS`,
    /// `PODBRIDGE_START_LIMIT_SECONDS`, `PODBRIDGE_DEADLINE_GRACE_SECONDS`,
    /// `PODBRIDGE_ORPHAN_GRACE_SECONDS`; defaults: [`Thresholds::default`]).
    pub thresholds: Thresholds,
    /// How long an invocation follows the pods after its pass (`PODBRIDGE_FOLLOW_SECONDS`,
    /// default 50: until shortly before the next one-minute schedule; 0 turns it off).
    pub follow_for: Duration,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests). A
    /// blank value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let seconds = |name: &str, default: Duration| -> Result<Duration> {
            match var(name) {
                None => Ok(default),
                Some(text) => text
                    .parse()
                    .map(Duration::from_secs)
                    .map_err(|_| Error::Config(format!("{name}={text:?} is not a whole number of seconds"))),
            }
        };
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
        let stuck = Thresholds::default();
        let namespaces = list(var::NAMESPACES);
        if namespaces.is_empty() {
            return Err(Error::Config("PODBRIDGE_NAMESPACES is not set: it must hold the namespaces jobs may run in, comma-separated (the first is the default)".into()));
        }
        let image_prefixes = list(var::IMAGE_PREFIXES);
        if image_prefixes.is_empty() {
            return Err(Error::Config("PODBRIDGE_IMAGE_PREFIXES is not set: it must hold the allowed image prefixes, comma-separated (`*` allows any image)".into()));
        }
        // A prefix is compared by registry host and whole path components; one that
        // could not end at such a boundary would not mean what its operator meant.
        each(var::IMAGE_PREFIXES, &image_prefixes, |prefix| {
            ImagePrefix::parse(prefix).map(|_| ()).map_err(|why| {
                format!(
                    "cannot be a prefix: {why}; a prefix is a registry host, then whole path components \
                     (registry.example.com/team/), or `*` alone"
                )
            })
        })?;
        let priority_classes = list(var::PRIORITY_CLASSES);
        each(var::PRIORITY_CLASSES, &priority_classes, |class| {
            if !is_dns_subdomain(class) {
                Err("is not a PriorityClass name (a DNS subdomain name)".to_owned())
            } else if class.starts_with(SYSTEM_PRIORITY_PREFIX) {
                Err("is a system- class, for the cluster's own components: jobs may never use one".to_owned())
            } else {
                Ok(())
            }
        })?;
        let toleration_keys = list(var::TOLERATION_KEYS);
        each(var::TOLERATION_KEYS, &toleration_keys, |key| {
            is_qualified_name(key).then_some(()).ok_or_else(|| format!("is not a taint key ({QUALIFIED_NAME_RULE})"))
        })?;
        let node_selector_keys = list(var::NODE_SELECTOR_KEYS);
        each(var::NODE_SELECTOR_KEYS, &node_selector_keys, |key| {
            is_qualified_name(key).then_some(()).ok_or_else(|| format!("is not a label key ({QUALIFIED_NAME_RULE})"))
        })?;
        let label_prefixes = list(var::LABEL_PREFIXES);
        each(var::LABEL_PREFIXES, &label_prefixes, |prefix| {
            let domain = prefix.strip_suffix('/').unwrap_or(prefix);
            if !is_dns_subdomain(domain) {
                Err("is not a label key prefix: a DNS subdomain such as team.example.com, optionally followed by /"
                    .to_owned())
            } else if format!("{domain}/") == RESERVED_LABEL_PREFIX {
                Err(format!("is reserved: podbridge sets the labels under {RESERVED_LABEL_PREFIX} itself"))
            } else {
                Ok(())
            }
        })?;
        let allow_secret_refs = match var(var::ALLOW_SECRET_REFS).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::Config(format!("PODBRIDGE_ALLOW_SECRET_REFS={other:?} must be true or false")));
            }
        };
        let guardrails = Guardrails {
            namespaces,
            image_prefixes,
            service_accounts: list(var::SERVICE_ACCOUNTS),
            allow_secret_refs,
            priority_classes,
            toleration_keys,
            node_selector_keys,
            label_prefixes,
            default_cpu_millis: quantity(var::DEFAULT_CPU, defaults.default_cpu_millis, parse_cpu)?,
            default_memory_bytes: quantity(var::DEFAULT_MEMORY, defaults.default_memory_bytes, parse_memory)?,
            max_cpu_millis: quantity(var::MAX_CPU, defaults.max_cpu_millis, parse_cpu)?,
            max_memory_bytes: quantity(var::MAX_MEMORY, defaults.max_memory_bytes, parse_memory)?,
            default_timeout_seconds: number(var::DEFAULT_TIMEOUT_SECONDS, defaults.default_timeout_seconds)?,
            max_timeout_seconds: number(var::MAX_TIMEOUT_SECONDS, defaults.max_timeout_seconds)?,
            max_attempts: u32::try_from(number(var::MAX_ATTEMPTS, u64::from(defaults.max_attempts))?)
                .map_err(|_| Error::Config("PODBRIDGE_MAX_ATTEMPTS is too large".into()))?,
            default_keep_pod_seconds: number(var::DEFAULT_KEEP_POD_SECONDS, defaults.default_keep_pod_seconds)?,
            max_keep_pod_seconds: number(var::MAX_KEEP_POD_SECONDS, defaults.max_keep_pod_seconds)?,
        };
        // A default above its ceiling would reject every job that relies on it, for a
        // reason its sender did not cause.
        let limits = [
            (var::DEFAULT_CPU, guardrails.default_cpu_millis, var::MAX_CPU, guardrails.max_cpu_millis),
            (var::DEFAULT_MEMORY, guardrails.default_memory_bytes, var::MAX_MEMORY, guardrails.max_memory_bytes),
            (
                var::DEFAULT_TIMEOUT_SECONDS,
                guardrails.default_timeout_seconds,
                var::MAX_TIMEOUT_SECONDS,
                guardrails.max_timeout_seconds,
            ),
            (
                var::DEFAULT_KEEP_POD_SECONDS,
                guardrails.default_keep_pod_seconds,
                var::MAX_KEEP_POD_SECONDS,
                guardrails.max_keep_pod_seconds,
            ),
        ];
        for (default_name, default, max_name, max) in limits {
            if default > max {
                return Err(Error::Config(format!("{default_name} ({default}) is above {max_name} ({max})")));
            }
        }
        // Below these no job could run: every request would be refused.
        type Show = fn(u64) -> String;
        let minimums: [(&str, u64, u64, Show); 4] = [
            (var::DEFAULT_CPU, guardrails.default_cpu_millis, MIN_CPU_MILLIS, format_cpu),
            (var::MAX_CPU, guardrails.max_cpu_millis, MIN_CPU_MILLIS, format_cpu),
            (var::DEFAULT_MEMORY, guardrails.default_memory_bytes, MIN_MEMORY_BYTES, format_memory),
            (var::MAX_MEMORY, guardrails.max_memory_bytes, MIN_MEMORY_BYTES, format_memory),
        ];
        for (name, value, min, show) in minimums {
            if value < min {
                return Err(Error::Config(format!("{name} ({}) is below the minimum of {}", show(value), show(min))));
            }
        }
        if guardrails.max_attempts == 0 || guardrails.default_timeout_seconds == 0 {
            return Err(Error::Config(
                "PODBRIDGE_MAX_ATTEMPTS and PODBRIDGE_DEFAULT_TIMEOUT_SECONDS must be at least 1".into(),
            ));
        }
        let grace = number(
            var::TERMINATION_GRACE_SECONDS,
            u64::try_from(PodSettings::default().termination_grace_period_seconds).unwrap_or(0),
        )?;
        let concurrency = number(var::CONCURRENCY, 10)?;
        if concurrency == 0 {
            return Err(Error::Config("PODBRIDGE_CONCURRENCY must be at least 1".into()));
        }
        let metrics_namespace = var(var::METRICS_NAMESPACE).unwrap_or_else(|| "podbridge".to_owned());
        let valid_namespace = metrics_namespace.len() <= 255
            && !metrics_namespace.starts_with("AWS/")
            && metrics_namespace.chars().all(|c| c.is_ascii_alphanumeric() || ".-_/#:".contains(c));
        if !valid_namespace {
            return Err(Error::Config(format!(
                "PODBRIDGE_METRICS_NAMESPACE={metrics_namespace:?} is not a CloudWatch namespace: 1 to 255 of \
                 A-Z a-z 0-9 . - _ / # :, not starting with AWS/"
            )));
        }
        let tenancy = match var(var::SENDERS) {
            None => Tenancy::open(),
            Some(text) => Tenancy::parse(&text, &guardrails.namespaces).map_err(Error::Config)?,
        };
        let optional_quantity =
            |name: &str, parse: fn(&str) -> std::result::Result<u64, String>| -> Result<Option<u64>> {
                var(name).map(|text| parse(&text).map_err(|why| Error::Config(format!("{name}: {why}")))).transpose()
            };
        let admitted_jobs = var(var::MAX_ADMITTED_JOBS)
            .map(|text| {
                text.parse::<u32>()
                    .map_err(|_| Error::Config(format!("{}={text:?} is not a whole number", var::MAX_ADMITTED_JOBS)))
            })
            .transpose()?;
        let largest_node = match (
            optional_quantity(var::LARGEST_NODE_CPU, parse_cpu)?,
            optional_quantity(var::LARGEST_NODE_MEMORY, parse_memory)?,
        ) {
            (Some(cpu_millis), Some(memory_bytes)) => Some(NodeSize { cpu_millis, memory_bytes }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(format!(
                    "set both {} and {} (the largest node's allocatable CPU and memory), or neither",
                    var::LARGEST_NODE_CPU,
                    var::LARGEST_NODE_MEMORY
                )));
            }
        };
        let admission = AdmissionSettings {
            total: Limits {
                jobs: admitted_jobs,
                cpu_millis: optional_quantity(var::MAX_ADMITTED_CPU, parse_cpu)?,
                memory_bytes: optional_quantity(var::MAX_ADMITTED_MEMORY, parse_memory)?,
            },
            largest_node,
        };
        Ok(Self {
            table: required(var::TABLE, "the name of the DynamoDB job table")?,
            queue_table: required(var::QUEUE_TABLE, "the name of the DynamoDB queue table")?,
            admission,
            guardrails,
            pods: PodSettings { termination_grace_period_seconds: i64::try_from(grace).unwrap_or(i64::MAX) },
            record_ttl: Duration::from_secs(number(var::RECORD_TTL_DAYS, 30)?.saturating_mul(86_400)),
            kube_timeout: Duration::from_secs(number(var::KUBE_TIMEOUT_SECONDS, 10)?.max(1)),
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            event_bus: var(var::EVENT_BUS).unwrap_or_else(|| DEFAULT_EVENT_BUS.to_owned()),
            metrics_namespace,
            tenancy,
            max_manual_retries: u32::try_from(number(
                var::MAX_MANUAL_RETRIES,
                u64::from(crate::services::DEFAULT_MAX_MANUAL_RETRIES),
            )?)
            .map_err(|_| Error::Config("PODBRIDGE_MAX_MANUAL_RETRIES is too large".into()))?,
            reconcile: ReconcileSettings {
                thresholds: Thresholds {
                    redispatch_after: seconds(var::REDISPATCH_AFTER_SECONDS, stuck.redispatch_after)?,
                    stuck_after: seconds(var::STUCK_AFTER_SECONDS, stuck.stuck_after)?,
                    unschedulable_after: seconds(var::UNSCHEDULABLE_AFTER_SECONDS, stuck.unschedulable_after)?,
                    start_limit: seconds(var::START_LIMIT_SECONDS, stuck.start_limit)?,
                    deadline_grace: seconds(var::DEADLINE_GRACE_SECONDS, stuck.deadline_grace)?,
                    orphan_grace: seconds(var::ORPHAN_GRACE_SECONDS, stuck.orphan_grace)?,
                },
                follow_for: seconds(var::FOLLOW_SECONDS, DEFAULT_FOLLOW)?,
            },
            cluster: cluster_access(var)?,
        })
    }

    /// How to reach the cluster, or an error naming the variables that say it.
    pub fn cluster_access(&self) -> Result<&ClusterAccess> {
        self.cluster.as_ref().ok_or_else(|| {
            Error::Config(
                "no cluster configured: set PODBRIDGE_CLUSTER_NAME (EKS, optionally with \
                 PODBRIDGE_CLUSTER_ENDPOINT and PODBRIDGE_CLUSTER_CA) or KUBECONFIG"
                    .into(),
            )
        })
    }
}

/// Reads `PODBRIDGE_CLUSTER_NAME`, `PODBRIDGE_CLUSTER_ENDPOINT` and `PODBRIDGE_CLUSTER_CA`
/// (base64 of the PEM, as `DescribeCluster` returns it) into [`ClusterAccess::Eks`];
/// without a cluster name, `KUBECONFIG` into [`ClusterAccess::Kubeconfig`]; neither is
/// `None`.
fn cluster_access(var: impl Fn(&str) -> Option<String>) -> Result<Option<ClusterAccess>> {
    let (name, endpoint, ca) = (var(var::CLUSTER_NAME), var(var::CLUSTER_ENDPOINT), var(var::CLUSTER_CA));
    let Some(cluster_name) = name else {
        if endpoint.is_some() || ca.is_some() {
            return Err(Error::Config(
                "PODBRIDGE_CLUSTER_ENDPOINT or PODBRIDGE_CLUSTER_CA is set without PODBRIDGE_CLUSTER_NAME, \
                 which EKS tokens need"
                    .into(),
            ));
        }
        let Some(kubeconfig) = var("KUBECONFIG") else { return Ok(None) };
        // A list of files is merged by kube itself, from KUBECONFIG.
        let mut paths = std::env::split_paths(&kubeconfig);
        let path: Option<PathBuf> = match (paths.next(), paths.next()) {
            (Some(path), None) => Some(path),
            _ => None,
        };
        return Ok(Some(ClusterAccess::Kubeconfig { path }));
    };
    let ca_pem = ca
        .map(|ca| {
            let pem = STANDARD.decode(ca).map_err(|error| {
                Error::Config(format!("PODBRIDGE_CLUSTER_CA is not base64 (of the CA's PEM): {error}"))
            })?;
            pem_certificates(&pem).map_err(|error| Error::Config(format!("PODBRIDGE_CLUSTER_CA: {error}")))?;
            Ok::<_, Error>(pem)
        })
        .transpose()?;
    Ok(Some(ClusterAccess::Eks { cluster_name, endpoint, ca_pem }))
}

/// Checks every entry of the list in variable `name`; the error names the variable and
/// the entry.
fn each(name: &str, entries: &[String], check: impl Fn(&str) -> std::result::Result<(), String>) -> Result<()> {
    for entry in entries {
        check(entry).map_err(|why| Error::Config(format!("{name}: {entry:?} {why}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const MINIMAL: [(&str, &str); 4] = [
        ("PODBRIDGE_TABLE", "jobs"),
        ("PODBRIDGE_NAMESPACES", "batch, etl"),
        ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/"),
        ("PODBRIDGE_QUEUE_TABLE", "queues"),
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
    fn senders_are_scoped_only_when_rules_are_given() {
        use podbridge_core::tenancy::Sender;
        let s = settings(&MINIMAL).unwrap();
        assert!(!s.tenancy.is_scoped());
        assert_eq!(s.max_manual_retries, crate::services::DEFAULT_MAX_MANUAL_RETRIES);
        let mut scoped = MINIMAL.to_vec();
        scoped.push(("PODBRIDGE_SENDERS", r#"[{"queue": "arn:aws:sqs:us-east-1:1:etl-jobs", "namespaces": ["etl"]}]"#));
        scoped.push(("PODBRIDGE_MAX_MANUAL_RETRIES", "1"));
        let s = settings(&scoped).unwrap();
        let etl = Sender::Queue { sender_id: None, queue_arn: Some("arn:aws:sqs:us-east-1:1:etl-jobs".into()) };
        assert_eq!(s.tenancy.namespaces_for(&etl, &s.guardrails.namespaces), ["etl"]);
        assert_eq!(s.max_manual_retries, 1);
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_SENDERS", r#"[{"queue": "q", "namespaces": ["prod"]}]"#));
        let error = settings(&bad).unwrap_err().to_string();
        assert!(error.contains("PODBRIDGE_SENDERS[0].namespaces") && error.contains("\"prod\""), "{error}");
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

    #[test]
    fn the_reconcilers_settings_have_their_defaults_and_name_a_bad_variable() {
        let s = settings(&MINIMAL).unwrap();
        assert_eq!(s.reconcile.thresholds, Thresholds::default());
        assert_eq!(s.reconcile.follow_for, DEFAULT_FOLLOW);
        assert_eq!(s.cluster, None, "no cluster named: only a command that creates no pods can go on");
        assert!(s.cluster_access().unwrap_err().to_string().contains("PODBRIDGE_CLUSTER_NAME"));

        let s = with(("PODBRIDGE_STUCK_AFTER_SECONDS", "20")).unwrap();
        assert_eq!(s.reconcile.thresholds.stuck_after, Duration::from_secs(20));
        assert_eq!(s.reconcile.thresholds.start_limit, Thresholds::default().start_limit, "the others keep theirs");
        assert_eq!(with(("PODBRIDGE_FOLLOW_SECONDS", "0")).unwrap().reconcile.follow_for, Duration::ZERO);
        let error = with(("PODBRIDGE_ORPHAN_GRACE_SECONDS", "5m")).unwrap_err().to_string();
        assert_eq!(error, "configuration: PODBRIDGE_ORPHAN_GRACE_SECONDS=\"5m\" is not a whole number of seconds");
        let s = with(("KUBECONFIG", "/tmp/kubeconfig")).unwrap();
        assert_eq!(s.cluster, Some(ClusterAccess::Kubeconfig { path: Some("/tmp/kubeconfig".into()) }));
    }

    fn with(extra: (&str, &str)) -> Result<Settings> {
        let mut pairs = MINIMAL.to_vec();
        pairs.retain(|(name, _)| *name != extra.0);
        pairs.push(extra);
        settings(&pairs)
    }

    #[test]
    fn admission_defaults_come_from_the_deployment_and_name_a_bad_variable() {
        let s = settings(&MINIMAL).unwrap();
        assert_eq!(
            (s.queue_table.as_str(), s.admission.total, s.admission.largest_node),
            ("queues", Limits::NONE, None)
        );
        let mut set = MINIMAL.to_vec();
        set.extend([
            ("PODBRIDGE_MAX_ADMITTED_JOBS", "50"),
            ("PODBRIDGE_MAX_ADMITTED_CPU", "64"),
            ("PODBRIDGE_LARGEST_NODE_CPU", "15890m"),
            ("PODBRIDGE_LARGEST_NODE_MEMORY", "60Gi"),
        ]);
        let s = settings(&set).unwrap();
        assert_eq!(s.admission.total, Limits { jobs: Some(50), cpu_millis: Some(64_000), memory_bytes: None });
        assert_eq!(s.admission.largest_node, Some(NodeSize { cpu_millis: 15_890, memory_bytes: 60 << 30 }));
        let mut half = MINIMAL.to_vec();
        half.push(("PODBRIDGE_LARGEST_NODE_CPU", "16"));
        assert!(settings(&half).unwrap_err().to_string().contains("PODBRIDGE_LARGEST_NODE_MEMORY"));
        let mut bad = MINIMAL.to_vec();
        bad.push(("PODBRIDGE_MAX_ADMITTED_JOBS", "many"));
        assert!(settings(&bad).unwrap_err().to_string().contains("PODBRIDGE_MAX_ADMITTED_JOBS=\"many\""));
        assert!(settings(&MINIMAL[..3]).unwrap_err().to_string().contains("PODBRIDGE_QUEUE_TABLE"));
    }

    #[test]
    fn the_allow_lists_are_empty_unless_set() {
        let s = settings(&MINIMAL).unwrap();
        let g = &s.guardrails;
        assert!(g.priority_classes.is_empty() && g.toleration_keys.is_empty());
        assert!(g.node_selector_keys.is_empty() && g.label_prefixes.is_empty());
        let s = settings(&[
            MINIMAL[0],
            MINIMAL[1],
            MINIMAL[3],
            ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/team, docker.io/library/, localhost:5000, myorg/, *"),
            ("PODBRIDGE_PRIORITY_CLASSES", "batch-low, batch-high"),
            ("PODBRIDGE_TOLERATION_KEYS", "batch-only,example.com/gpu"),
            ("PODBRIDGE_NODE_SELECTOR_KEYS", "node.kubernetes.io/instance-type"),
            ("PODBRIDGE_LABEL_PREFIXES", "team.example.com/, jobs.example.com"),
        ])
        .unwrap();
        let g = &s.guardrails;
        assert_eq!(
            g.image_prefixes,
            ["registry.example.com/team", "docker.io/library/", "localhost:5000", "myorg/", "*"]
        );
        assert_eq!(g.priority_classes, ["batch-low", "batch-high"]);
        assert_eq!(g.toleration_keys, ["batch-only", "example.com/gpu"]);
        assert_eq!(g.node_selector_keys, ["node.kubernetes.io/instance-type"]);
        assert_eq!(g.label_prefixes, ["team.example.com/", "jobs.example.com"]);
    }

    #[test]
    fn an_entry_that_cannot_mean_what_it_says_is_refused_naming_the_variable() {
        let check = |pair: (&str, &str), needle: &str| {
            let error = with(pair).unwrap_err().to_string();
            assert!(error.contains(pair.0) && error.contains(needle), "{pair:?}: {error}");
        };
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/team/app:1.0"), "cannot hold a tag");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/app@sha256:0"), "digest");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example."), "not a complete host name");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com:"), "invalid port");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/*"), "`*` is only allowed alone");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com//x"), "empty path component");
        check(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/Team"), "uppercase");
        check(("PODBRIDGE_PRIORITY_CLASSES", "batch-low,system-node-critical"), "system- class");
        check(("PODBRIDGE_PRIORITY_CLASSES", "Batch"), "not a PriorityClass name");
        check(("PODBRIDGE_TOLERATION_KEYS", "a b"), "not a taint key");
        check(("PODBRIDGE_NODE_SELECTOR_KEYS", "-x"), "not a label key");
        check(("PODBRIDGE_LABEL_PREFIXES", "podbridge.dev/"), "reserved");
        check(("PODBRIDGE_LABEL_PREFIXES", "team.example.com/x"), "not a label key prefix");
        check(("PODBRIDGE_DEFAULT_MEMORY", "1m"), "PODBRIDGE_DEFAULT_MEMORY (1) is below the minimum of 4Mi");
        check(("PODBRIDGE_DEFAULT_CPU", "0"), "PODBRIDGE_DEFAULT_CPU (0) is below the minimum of 1m");
        let error = with(("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/team:1")).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "configuration: PODBRIDGE_IMAGE_PREFIXES: \"registry.example.com/team:1\" cannot be a prefix: a prefix \
                 cannot hold a tag"
            ),
            "{error}"
        );
    }
}
