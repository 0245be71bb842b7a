//! The pod `status` subresource: GET, PUT and the three PATCH types, with the
//! apiserver's preconditions and errors, and a simulated kubelet that steps aside once
//! a client writes the status.

use crate::common;

use std::time::Duration;

use common::{condition, create, fast, phase, pod, raw, raw_typed, start, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const STATUS: &str = "/api/v1/namespaces/default/pods/runner/status";

fn rv(pod: &Pod) -> u64 {
    pod.metadata.resource_version.as_deref().unwrap().parse().unwrap()
}

/// GIVEN a running pod
/// WHEN a client replaces its status with PUT, body carrying other spec and labels
/// THEN only the status changes, the resourceVersion moves on, and a stale
/// resourceVersion is refused with 409 Conflict in the apiserver's Status shape.
#[tokio::test]
async fn put_replaces_only_the_status_and_honours_the_resource_version() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("runner", "run=forever")).await;
    let running = wait_for(&pods, "runner", "Running", |p| phase(p) == "Running").await;
    assert_eq!(pods.get_status("runner").await.unwrap(), running, "GET status serves the whole pod");

    let mut body = running.clone();
    body.metadata.labels = Some([("app".to_owned(), "changed".to_owned())].into());
    body.spec.as_mut().unwrap().containers[0].image = Some("busybox:9.9".into());
    let status = body.status.as_mut().unwrap();
    status.phase = Some("Failed".into());
    status.reason = Some("Preempted".into());
    status.message = Some("written by a test".into());
    status.qos_class = None;
    let replaced = pods.replace_status("runner", &PostParams::default(), &body).await.unwrap();
    let status = replaced.status.as_ref().unwrap();
    assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("Preempted")));
    assert_eq!(status.qos_class.as_deref(), Some("Burstable"), "an empty qosClass keeps the old one");
    assert_eq!(replaced.metadata.labels, running.metadata.labels, "metadata in the body is ignored");
    assert_eq!(replaced.spec, running.spec, "the spec in the body is ignored");
    assert!(rv(&replaced) > rv(&running));

    // The body still carries the resourceVersion it was read at: now stale.
    let (code, conflict) = raw(&client, "PUT", STATUS, Some(serde_json::to_value(&body).unwrap())).await;
    assert_eq!(code, 409);
    assert_eq!(
        conflict,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Operation cannot be fulfilled on pods \"runner\": the object has been modified; please apply your changes to the latest version and try again",
            "reason": "Conflict", "details": { "name": "runner", "kind": "pods" }, "code": 409 })
    );

    let mut renamed = serde_json::to_value(&replaced).unwrap();
    renamed["metadata"]["name"] = json!("other");
    let (code, status) = raw(&client, "PUT", STATUS, Some(renamed)).await;
    assert_eq!(
        (code, status["message"].as_str()),
        (400, Some("the name of the object (other) does not match the name on the URL (runner)"))
    );
    let (code, status) = raw(
        &client,
        "PUT",
        "/api/v1/namespaces/default/pods/ghost/status",
        Some(json!({ "metadata": { "name": "ghost" } })),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
}

/// GIVEN a running pod
/// WHEN a client patches its status as merge, strategic-merge and JSON patch
/// THEN each patch type follows its rules (conditions merge by type under strategic
/// merge only), every write bumps the resourceVersion and reaches watchers as MODIFIED.
#[tokio::test]
async fn patches_follow_their_media_types_and_reach_watchers() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("runner", "run=forever")).await;
    let running = wait_for(&pods, "runner", "Running", |p| phase(p) == "Running").await;
    let conditions = running.status.as_ref().unwrap().conditions.as_ref().unwrap().len();
    let mut watch = pods
        .watch(
            &WatchParams::default().fields("metadata.name=runner").timeout(10),
            running.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    // Strategic merge (kubectl's default): conditions merge by their type.
    let strategic = json!({ "status": { "conditions": [
        { "type": "Ready", "status": "False", "reason": "Paused", "message": "paused by a test" },
        { "type": "example.com/Gate", "status": "True" }
    ] } });
    let patched = pods.patch_status("runner", &PatchParams::default(), &Patch::Strategic(strategic)).await.unwrap();
    let all = patched.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert_eq!(all.len(), conditions + 1, "{all:#?}");
    let ready = condition(&patched, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("Paused")));
    assert_eq!(condition(&patched, "PodScheduled").unwrap().status, "True", "other conditions stay");
    assert!(rv(&patched) > rv(&running));
    match watch.try_next().await.unwrap() {
        Some(WatchEvent::Modified(seen)) => assert_eq!(seen, patched),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // Merge patch (RFC 7386): lists are replaced whole.
    let merge = json!({ "status": { "conditions": [{ "type": "Ready", "status": "True" }], "message": "merged" } });
    let merged = pods.patch_status("runner", &PatchParams::default(), &Patch::Merge(merge)).await.unwrap();
    let all = merged.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert_eq!((all.len(), all[0].type_.as_str()), (1, "Ready"));
    assert_eq!(merged.status.as_ref().unwrap().message.as_deref(), Some("merged"));
    assert!(matches!(watch.try_next().await.unwrap(), Some(WatchEvent::Modified(_))));

    // JSON patch (RFC 6902).
    let operations = json!([
        { "op": "test", "path": "/status/message", "value": "merged" },
        { "op": "replace", "path": "/status/phase", "value": "Failed" },
        { "op": "add", "path": "/status/reason", "value": "Evicted" },
        { "op": "remove", "path": "/status/message" }
    ]);
    let (code, applied) =
        raw_typed(&client, "PATCH", STATUS, "application/json-patch+json", &operations.to_string()).await;
    assert_eq!(code, 200, "{applied}");
    let applied: Pod = serde_json::from_value(applied).unwrap();
    let status = applied.status.as_ref().unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref(), status.message.as_deref()),
        (Some("Failed"), Some("Evicted"), None)
    );
    assert!(matches!(watch.try_next().await.unwrap(), Some(WatchEvent::Modified(_))));

    // A test that fails: the apiserver's generic 422, the pod untouched.
    let (code, invalid) = raw_typed(
        &client,
        "PATCH",
        STATUS,
        "application/json-patch+json",
        r#"[{"op":"test","path":"/status/phase","value":"Running"},{"op":"replace","path":"/status/phase","value":"Pending"}]"#,
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        invalid,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server rejected our request due to an error in our request", "reason": "Invalid", "details": {}, "code": 422 })
    );
    // A stale resourceVersion in a patch: 409.
    let stale = format!(r#"{{"metadata":{{"resourceVersion":"{}"}},"status":{{"phase":"Pending"}}}}"#, rv(&running));
    let (code, conflict) = raw_typed(&client, "PATCH", STATUS, "application/merge-patch+json", &stale).await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));
    // An unsupported media type: 415.
    let (code, unsupported) = raw_typed(&client, "PATCH", STATUS, "application/json", r#"{"status":{}}"#).await;
    assert_eq!(code, 415);
    assert_eq!(
        unsupported,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
            "reason": "UnsupportedMediaType", "code": 415 })
    );
    let (code, _) = raw_typed(&client, "PATCH", STATUS, "application/merge-patch+json", "{not json").await;
    assert_eq!(code, 400);
    assert_eq!(phase(&pods.get("runner").await.unwrap()), "Failed", "failed patches change nothing");

    // Discovery says what the subresource takes.
    let (_, resources) = raw(&client, "GET", "/api/v1", None).await;
    let status = resources["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/status").unwrap();
    assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
}

/// GIVEN a pod due to succeed 300ms after it starts
/// WHEN a client writes its status first
/// THEN the simulated kubelet leaves it alone (no exit reported, no deadline), the
/// node's capacity follows the written phase, and deletion still removes the pod.
#[tokio::test]
async fn a_written_status_is_no_longer_driven_by_the_kubelet() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut short = pod("short", "run=300ms");
    short.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    create(&pods, &short).await;
    wait_for(&pods, "short", "Running", |p| phase(p) == "Running").await;
    let patch = json!({ "status": { "conditions": [{ "type": "example.com/Owned", "status": "True" }] } });
    let written = pods.patch_status("short", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let later = pods.get("short").await.unwrap();
    assert_eq!(later, written, "neither the exit nor the deadline was reported");

    // An unchanged write is not a change: no new resourceVersion.
    let again = pods.replace_status("short", &PostParams::default(), &later).await.unwrap();
    assert_eq!(again.metadata.resource_version, later.metadata.resource_version);

    pods.delete("short", &DeleteParams::default()).await.unwrap();
    common::wait_gone(&pods, "short").await;
}

/// GIVEN a pod that succeeded (restartPolicy Never)
/// WHEN a client reports its container running again
/// THEN the apiserver refuses: 422 with the field and the rule.
#[tokio::test]
async fn terminated_containers_may_not_run_again() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("done", "run=20ms")).await;
    let done = wait_for(&pods, "done", "Succeeded", |p| phase(p) == "Succeeded").await;
    let mut body = done.clone();
    let container = &mut body.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0];
    container.state =
        Some(serde_json::from_value(json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } })).unwrap());
    let (code, status) =
        raw(&client, "PUT", "/api/v1/namespaces/default/pods/done/status", Some(serde_json::to_value(&body).unwrap()))
            .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        status["message"],
        "Pod \"done\" is invalid: status.containerStatuses[0].state: Forbidden: may not be transitioned to non-terminated state"
    );
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items[0], done);
}
