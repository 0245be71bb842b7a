//! `meta.k8s.io/v1` Tables: what `kubectl get` asks for and prints (server-side
//! printing). Columns and cell values follow the apiserver's printers.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use serde_json::{Value, json};

use crate::units::human_age;

/// Whether the request's `Accept` header asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=Table")))
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({ "name": name, "type": type_, "format": format, "description": description, "priority": priority })
}

fn age(time: Option<&Time>) -> String {
    match time {
        Some(Time(t)) => {
            let elapsed = jiff::Timestamp::now().duration_since(*t);
            human_age(elapsed.unsigned_abs())
        }
        None => "<unknown>".to_owned(),
    }
}

fn row(
    cells: Vec<Value>,
    kind: &str,
    api_version: &str,
    metadata: &ObjectMeta,
    object: &impl Serialize,
    include: Include,
) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        }),
        Include::Object => {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            value["kind"] = json!(kind);
            value["apiVersion"] = json!(api_version);
            value
        }
    };
    let mut row = json!({ "cells": cells });
    if !object.is_null() {
        row["object"] = object;
    }
    row
}

/// A Table of rows under the given columns.
pub fn table(
    columns: Vec<Value>,
    rows: Vec<Value>,
    resource_version: u64,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Value {
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows })
}

pub fn pod_columns() -> Vec<Value> {
    vec![
        column("Name", "string", "name", "Name must be unique within a namespace.", 0),
        column("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
        column("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
        column(
            "Restarts",
            "string",
            "",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            0,
        ),
        column(
            "Age",
            "string",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ),
        column(
            "IP",
            "string",
            "",
            "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            1,
        ),
        column("Node", "string", "", "NodeName is a request to schedule this pod onto a specific node.", 1),
        column(
            "Nominated Node",
            "string",
            "",
            "nominatedNodeName is set when this pod preempts other pods on the node.",
            1,
        ),
        column(
            "Readiness Gates",
            "string",
            "",
            "If specified, all readiness gates will be evaluated for pod readiness.",
            1,
        ),
    ]
}

/// The STATUS column as `kubectl get pods` shows it.
pub fn pod_status_text(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = status.reason.clone().filter(|r| !r.is_empty()).or(status.phase.clone()).unwrap_or_default();
    let init_total = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).map_or(0, Vec::len);
    let mut initializing = false;
    for (i, container) in status.init_container_statuses.iter().flatten().enumerate() {
        let state = container.state.clone().unwrap_or_default();
        let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty());
        match (&state.terminated, waiting) {
            (Some(terminated), _) if terminated.exit_code == 0 => continue,
            (Some(terminated), _) => {
                reason = match (&terminated.reason, terminated.signal) {
                    (Some(r), _) if !r.is_empty() => format!("Init:{r}"),
                    (_, Some(signal)) if signal != 0 => format!("Init:Signal:{signal}"),
                    _ => format!("Init:ExitCode:{}", terminated.exit_code),
                };
            }
            (None, Some(waiting)) if waiting != "PodInitializing" => reason = format!("Init:{waiting}"),
            _ => reason = format!("Init:{i}/{init_total}"),
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for container in status.container_statuses.iter().flatten().rev() {
            let state = container.state.clone().unwrap_or_default();
            if let Some(waiting) = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty()) {
                reason = waiting;
            } else if let Some(terminated) = &state.terminated {
                reason = match (&terminated.reason, terminated.signal) {
                    (Some(r), _) if !r.is_empty() => r.clone(),
                    (_, Some(signal)) if signal != 0 => format!("Signal:{signal}"),
                    _ => format!("ExitCode:{}", terminated.exit_code),
                };
            } else if container.ready && state.running.is_some() {
                has_running = true;
            }
        }
        // A container still running after another completed: Running, or NotReady
        // when the pod is not Ready (pkg/printers/internalversion/printers.go printPod).
        if reason == "Completed" && has_running {
            let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if ready { "Running" } else { "NotReady" }.to_owned();
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason =
            if status.reason.as_deref() == Some("NodeLost") { "Unknown".to_owned() } else { "Terminating".to_owned() };
    }
    reason
}

pub fn pod_row(pod: &Pod, include: Include) -> Value {
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.unwrap_or_default();
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let none = || "<none>".to_owned();
    let cells = vec![
        json!(pod.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{total}")),
        json!(pod_status_text(pod)),
        json!(restarts.to_string()),
        json!(age(pod.metadata.creation_timestamp.as_ref())),
        json!(status.pod_ip.clone().unwrap_or_else(none)),
        json!(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(none)),
        json!(status.nominated_node_name.clone().unwrap_or_else(none)),
        json!(none()),
    ];
    row(cells, "Pod", "v1", &pod.metadata, pod, include)
}

/// Name / Status / Age, for the kinds whose Tables matter less (nodes, namespaces, events).
pub fn basic_columns(status_header: &str) -> Vec<Value> {
    vec![
        column("Name", "string", "name", "Name must be unique within a namespace.", 0),
        column(status_header, "string", "", "The object's state.", 0),
        column(
            "Age",
            "string",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ),
    ]
}

pub fn basic_row(kind: &str, metadata: &ObjectMeta, status: &str, object: &impl Serialize, include: Include) -> Value {
    let cells = vec![
        json!(metadata.name.clone().unwrap_or_default()),
        json!(status),
        json!(age(metadata.creation_timestamp.as_ref())),
    ];
    row(cells, kind, "v1", metadata, object, include)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }

    #[test]
    fn status_column_follows_kubectl() {
        let pod = |status: Value, deleting: bool| -> Pod {
            let mut value = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "main" }] }, "status": status });
            if deleting {
                value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(value).unwrap()
        };
        let check = |status: Value, deleting: bool, expected: &str| {
            assert_eq!(pod_status_text(&pod(status, deleting)), expected)
        };
        check(json!({ "phase": "Pending" }), false, "Pending");
        check(
            json!({ "phase": "Pending", "containerStatuses": [{ "name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff" } } }] }),
            false,
            "ImagePullBackOff",
        );
        check(
            json!({ "phase": "Failed", "containerStatuses": [{ "name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } } }] }),
            false,
            "OOMKilled",
        );
        check(json!({ "phase": "Failed", "reason": "Evicted" }), false, "Evicted");
        let status = |state: Value| json!({ "name": "c", "image": "x", "imageID": "", "ready": state.get("running").is_some(), "restartCount": 0, "state": state });
        check(
            json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }],
                    "containerStatuses": [status(json!({ "running": {} })), status(json!({ "terminated": { "exitCode": 0, "reason": "Completed" } }))] }),
            false,
            "NotReady",
        );
        check(
            json!({ "phase": "Failed", "initContainerStatuses": [status(json!({ "terminated": { "exitCode": 3, "reason": "Error" } }))],
                    "containerStatuses": [status(json!({ "waiting": { "reason": "PodInitializing" } }))] }),
            false,
            "Init:Error",
        );
        check(
            json!({ "phase": "Pending", "initContainerStatuses": [status(json!({ "running": {} }))],
                    "containerStatuses": [status(json!({ "waiting": { "reason": "PodInitializing" } }))] }),
            false,
            "Init:0/0",
        );
        check(json!({ "phase": "Running" }), true, "Terminating");
    }
}
