//! The apiserver's defaulting and validation of pods, with its exact messages.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements, Toleration};
use serde_json::json;

use crate::status::{ApiError, Cause};
use crate::units::parse_quantity;

const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ENV_NAME_MESSAGE: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: an optional DNS subdomain prefix and a name part.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => !prefix.is_empty() && is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// A label value: empty, or a qualified name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

/// Applies the defaults the apiserver and its default admission plugins set on a new pod.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.restart_policy.get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".to_owned());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    let account = spec.service_account_name.get_or_insert_with(|| "default".to_owned()).clone();
    spec.service_account = Some(account);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tolerations.iter().any(|t| t.key.as_deref() == Some(key)) {
            tolerations.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                toleration_seconds: Some(300),
                ..Default::default()
            });
        }
    }
    for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(container);
    }
    let qos = qos_class(spec);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase.get_or_insert_with(|| "Pending".to_owned());
    status.qos_class = Some(qos.to_owned());
}

fn default_container(container: &mut Container) {
    container.termination_message_path.get_or_insert_with(|| "/dev/termination-log".to_owned());
    container.termination_message_policy.get_or_insert_with(|| "File".to_owned());
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        let tag = image.rsplit_once('/').map_or(image, |(_, last)| last).split_once(':').map(|(_, t)| t);
        let always = !image.contains('@') && matches!(tag, None | Some("latest"));
        container.image_pull_policy = Some(if always { "Always" } else { "IfNotPresent" }.to_owned());
    }
    // Limits without requests mean requests equal to the limits.
    let resources = container.resources.get_or_insert_with(ResourceRequirements::default);
    if let Some(limits) = resources.limits.clone() {
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        for (name, quantity) in limits {
            requests.entry(name).or_insert(quantity);
        }
    }
}

fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for container in &spec.containers {
        let resources = container.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        for name in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(name));
            let request = requests.and_then(|r| r.get(name));
            if limit.is_none() || request.map(|q| &q.0) != limit.map(|q| &q.0) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Checks what JSON decoding would reject (400), then the fields (422 with causes).
pub fn validate_pod(pod: &Pod) -> Result<(), ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    // Quantities fail to decode before validation runs: a 400, like the apiserver.
    for container in spec.into_iter().flat_map(|s| s.containers.iter()) {
        let resources = container.resources.as_ref();
        let maps = resources.into_iter().flat_map(|r| r.requests.iter().chain(r.limits.iter()));
        for quantity in maps.flat_map(|m| m.values()) {
            if let Err(why) = parse_quantity(&quantity.0) {
                return Err(ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {why}")));
            }
        }
    }

    let mut causes = Vec::new();
    validate_metadata(pod, &mut causes);
    match spec {
        None => causes.push(Cause::required("spec", "")),
        Some(spec) => validate_spec(spec, &mut causes),
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid("Pod", "pods", &name, causes)) }
}

fn validate_metadata(pod: &Pod, causes: &mut Vec<Cause>) {
    let meta = &pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => causes.push(Cause::required("metadata.name", "name or generateName is required")),
        Some(name) if name.len() > 253 => {
            causes.push(Cause::invalid("metadata.name", &json!(name), "must be no more than 253 characters"))
        }
        Some(name) if !is_dns1123_subdomain(name) => {
            causes.push(Cause::invalid("metadata.name", &json!(name), DNS1123_SUBDOMAIN_MESSAGE))
        }
        Some(_) => {}
    }
    for (key, value) in meta.labels.iter().flatten() {
        if !is_qualified_name(key) {
            causes.push(Cause::invalid("metadata.labels", &json!(key), QUALIFIED_NAME_MESSAGE));
        }
        if value.len() > 63 {
            causes.push(Cause::invalid("metadata.labels", &json!(value), "must be no more than 63 characters"));
        } else if !is_label_value(value) {
            causes.push(Cause::invalid("metadata.labels", &json!(value), LABEL_VALUE_MESSAGE));
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in meta.annotations.iter().flatten() {
        if !is_qualified_name(key) {
            causes.push(Cause::invalid("metadata.annotations", &json!(key), QUALIFIED_NAME_MESSAGE));
        }
        annotation_bytes += key.len() + value.len();
    }
    if annotation_bytes > 256 * 1024 {
        causes.push(Cause::too_long("metadata.annotations", 256 * 1024));
    }
}

fn validate_spec(spec: &PodSpec, causes: &mut Vec<Cause>) {
    if spec.containers.is_empty() {
        causes.push(Cause::required("spec.containers", ""));
    }
    let mut names = HashSet::new();
    let init = spec.init_containers.iter().flatten().enumerate().map(|(i, c)| (format!("spec.initContainers[{i}]"), c));
    let main = spec.containers.iter().enumerate().map(|(i, c)| (format!("spec.containers[{i}]"), c));
    for (path, container) in init.chain(main) {
        if container.name.is_empty() {
            causes.push(Cause::required(format!("{path}.name"), ""));
        } else if !is_dns1123_label(&container.name) {
            causes.push(Cause::invalid(format!("{path}.name"), &json!(container.name), DNS1123_LABEL_MESSAGE));
        } else if !names.insert(container.name.clone()) {
            causes.push(Cause::duplicate(format!("{path}.name"), &json!(container.name)));
        }
        if container.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            causes.push(Cause::required(format!("{path}.image"), ""));
        }
        for (i, env) in container.env.iter().flatten().enumerate() {
            if !is_env_name(&env.name) {
                causes.push(Cause::invalid(format!("{path}.env[{i}].name"), &json!(env.name), ENV_NAME_MESSAGE));
            }
        }
        check_enum(
            causes,
            &format!("{path}.imagePullPolicy"),
            container.image_pull_policy.as_deref(),
            &["Always", "IfNotPresent", "Never"],
        );
        check_enum(
            causes,
            &format!("{path}.terminationMessagePolicy"),
            container.termination_message_policy.as_deref(),
            &["File", "FallbackToLogsOnError"],
        );
        validate_resources(&path, container.resources.as_ref(), causes);
    }
    check_enum(causes, "spec.restartPolicy", spec.restart_policy.as_deref(), &["Always", "OnFailure", "Never"]);
    if let Some(seconds) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&seconds)
    {
        causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &json!(seconds),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds
        && seconds < 0
    {
        causes.push(Cause::invalid(
            "spec.terminationGracePeriodSeconds",
            &json!(seconds),
            "must be greater than or equal to 0",
        ));
    }
    for (key, value) in spec.node_selector.iter().flatten() {
        if !is_qualified_name(key) {
            causes.push(Cause::invalid("spec.nodeSelector", &json!(key), QUALIFIED_NAME_MESSAGE));
        }
        if !is_label_value(value) {
            causes.push(Cause::invalid("spec.nodeSelector", &json!(value), LABEL_VALUE_MESSAGE));
        }
    }
    if let Some(account) = spec.service_account_name.as_deref()
        && !account.is_empty()
        && !is_dns1123_subdomain(account)
    {
        causes.push(Cause::invalid("spec.serviceAccountName", &json!(account), DNS1123_SUBDOMAIN_MESSAGE));
    }
}

fn check_enum(causes: &mut Vec<Cause>, field: &str, value: Option<&str>, supported: &[&str]) {
    if let Some(value) = value
        && !supported.contains(&value)
    {
        causes.push(Cause::not_supported(field, &json!(value), supported));
    }
}

fn validate_resources(path: &str, resources: Option<&ResourceRequirements>, causes: &mut Vec<Cause>) {
    let Some(resources) = resources else { return };
    for (kind, map) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for name in map.iter().flatten().map(|(name, _)| name) {
            let standard = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage")
                || name.starts_with("hugepages-")
                || (name.contains('/') && is_qualified_name(name));
            if !standard {
                causes.push(Cause::invalid(
                    format!("{path}.resources.{kind}[{name}]"),
                    &json!(name),
                    "must be a standard resource type or fully qualified",
                ));
            }
        }
    }
    let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
        return;
    };
    for (name, request) in requests {
        let Some(limit) = limits.get(name) else {
            continue;
        };
        let (Ok(r), Ok(l)) = (parse_quantity(&request.0), parse_quantity(&limit.0)) else {
            continue;
        };
        if r > l {
            causes.push(Cause::invalid(
                format!("{path}.resources.requests"),
                &json!(request.0),
                &format!("must be less than or equal to {name} limit of {}", limit.0),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn valid() -> serde_json::Value {
        json!({
            "metadata": { "name": "job-1", "labels": { "app.kubernetes.io/managed-by": "podbridge" } },
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox:1.36",
                "resources": { "limits": { "cpu": "1", "memory": "1Gi" } } }] }
        })
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("job-1"));
        assert!(!is_dns1123_label("Job"));
        assert!(!is_dns1123_label("-job"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_qualified_name("podbridge.dev/job-id"));
        assert!(is_qualified_name("app"));
        assert!(!is_qualified_name("/app"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn defaults_follow_the_apiserver() {
        let mut p = pod(valid());
        default_pod(&mut p);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 2);
        let container = &spec.containers[0];
        assert_eq!(container.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        // Requests default to the limits, which makes the pod Guaranteed.
        assert_eq!(container.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(p.status.as_ref().unwrap().qos_class.as_deref(), Some("Guaranteed"));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn invalid_pods_list_every_cause() {
        let mut value = valid();
        value["metadata"]["name"] = json!("Bad_Name");
        value["metadata"]["labels"]["x"] = json!("not ok!");
        value["spec"]["restartPolicy"] = json!("Sometimes");
        value["spec"]["containers"][0]["image"] = json!("");
        value["spec"]["containers"].as_array_mut().unwrap().push(json!({ "name": "main", "image": "x" }));
        let error = validate_pod(&pod(value)).unwrap_err();
        assert_eq!(error.code, 422);
        assert_eq!(error.reason, "Invalid");
        let details = error.details.unwrap();
        let fields: Vec<&str> =
            details["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.labels",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.restartPolicy"
            ]
        );
        assert!(error.message.starts_with("Pod \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", error.message);
    }

    #[test]
    fn single_cause_message_has_no_brackets() {
        let mut value = valid();
        value["spec"]["containers"][0]["resources"] = json!({ "requests": { "cpu": "2" }, "limits": { "cpu": "1" } });
        let error = validate_pod(&pod(value)).unwrap_err();
        assert_eq!(
            error.message,
            "Pod \"job-1\" is invalid: spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
    }

    #[test]
    fn bad_quantities_are_400() {
        let mut value = valid();
        value["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("lots");
        let error = validate_pod(&pod(value)).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(error.message.contains("quantities must match"));
    }
}
