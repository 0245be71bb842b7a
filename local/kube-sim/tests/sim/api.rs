//! The API surface: every status code and body shape a client can meet, through the
//! real `kube` client over HTTPS.

use crate::common;

use common::{create, fast, pod, raw, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube_sim::SimConfig;
use serde_json::json;

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_answers_what_kubectl_asks() {
    let (_sim, client) = start(fast()).await;
    let (code, version) = raw(&client, "GET", "/version", None).await;
    assert_eq!(code, 200);
    assert_eq!((version["major"].as_str(), version["minor"].as_str()), (Some("1"), Some("33")));
    let (code, api) = raw(&client, "GET", "/api", None).await;
    assert_eq!((code, api["kind"].as_str(), api["versions"][0].as_str()), (200, Some("APIVersions"), Some("v1")));
    let (_, groups) = raw(&client, "GET", "/apis", None).await;
    assert_eq!(groups["kind"], "APIGroupList");
    let (_, resources) = raw(&client, "GET", "/api/v1", None).await;
    let pods = resources["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["verbs"], json!(["create", "delete", "get", "list", "watch"]));
    assert_eq!(pods["namespaced"], true);
    let (code, missing) = raw(&client, "GET", "/apis/batch/v1/jobs", None).await;
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")));
    let (code, status) = raw(&client, "PATCH", "/api/v1/namespaces/default/pods/any", Some(json!({}))).await;
    assert_eq!((code, status["reason"].as_str()), (405, Some("MethodNotAllowed")));
    assert_eq!(status["message"], "the server does not allow this method on the requested resource");
}

#[tokio::test]
async fn requests_without_the_token_get_401_but_version_is_public() {
    let (sim, _) = start(fast()).await;
    let anonymous = common::client_for(&sim, false).await;
    let (code, status) = raw(&anonymous, "GET", "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(code, 401);
    assert_eq!(
        status,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401 })
    );
    assert_eq!(raw(&anonymous, "GET", "/version", None).await.0, 200);
}

#[tokio::test]
async fn namespaces_outside_the_role_are_forbidden() {
    let config = SimConfig { allowed_namespaces: Some(vec!["podbridge-jobs".into()]), ..fast() };
    let (_sim, client) = start(config).await;
    let allowed: Api<Pod> = Api::namespaced(client.clone(), "podbridge-jobs");
    create(&allowed, &pod("ok", "")).await;

    let other: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status = api_error(other.create(&PostParams::default(), &pod("nope", "")).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods \"nope\" is forbidden: User \"podbridge\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
    );

    let everywhere: Api<Pod> = Api::all(client);
    let status = api_error(everywhere.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(status.code, 403);
    assert!(
        status.message.ends_with("cannot list resource \"pods\" in API group \"\" at the cluster scope"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn create_sets_identity_defaults_and_generated_names() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let created = create(&pods, &pod("named", "run=forever")).await;
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.resource_version.as_deref().is_some_and(|rv| rv.parse::<u64>().is_ok()));
    assert!(meta.creation_timestamp.is_some());
    let spec = created.spec.as_ref().unwrap();
    assert_eq!((spec.termination_grace_period_seconds, spec.dns_policy.as_deref()), (Some(30), Some("ClusterFirst")));
    assert_eq!(common::phase(&created), "Pending");
    assert_eq!(created.status.as_ref().unwrap().qos_class.as_deref(), Some("Burstable"));

    let mut generated = pod("", "");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("job-".into());
    let generated = create(&pods, &generated).await;
    let name = generated.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn invalid_pods_get_422_with_causes_and_duplicates_409() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut bad = pod("Bad_Name", "");
    bad.spec.as_mut().unwrap().containers[0].image = None;
    let (code, status) =
        raw(&client, "POST", "/api/v1/namespaces/default/pods", Some(serde_json::to_value(&bad).unwrap())).await;
    assert_eq!((code, status["reason"].as_str(), status["kind"].as_str()), (422, Some("Invalid"), Some("Status")));
    assert_eq!(status["details"]["kind"], "pods");
    assert_eq!(status["details"]["name"], "Bad_Name");
    let causes = status["details"]["causes"].as_array().unwrap();
    assert_eq!(causes[0]["field"], "metadata.name");
    assert_eq!(causes[0]["reason"], "FieldValueInvalid");
    assert_eq!(
        causes[1],
        json!({ "reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image" })
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Pod \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\"")
    );

    create(&pods, &pod("twice", "")).await;
    let status = api_error(pods.create(&PostParams::default(), &pod("twice", "")).await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (409, "AlreadyExists", "pods \"twice\" already exists")
    );

    let nowhere: Api<Pod> = Api::namespaced(client.clone(), "no-such-namespace");
    let status = api_error(nowhere.create(&PostParams::default(), &pod("x", "")).await.unwrap_err());
    assert_eq!((status.code, status.message.as_str()), (404, "namespaces \"no-such-namespace\" not found"));

    let mut mismatched = serde_json::to_value(pod("y", "")).unwrap();
    mismatched["metadata"]["namespace"] = json!("kube-system");
    let (code, status) = raw(&client, "POST", "/api/v1/namespaces/default/pods", Some(mismatched)).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn dry_run_validates_without_storing() {
    let (sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let dry = pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod("dry", "")).await.unwrap();
    assert!(dry.metadata.uid.is_some());
    assert!(pods.get_opt("dry").await.unwrap().is_none());
    assert!(sim.created_pods().is_empty());
}

#[tokio::test]
async fn get_of_a_missing_pod_is_404_not_found() {
    let (_sim, client) = start(fast()).await;
    let (code, status) = raw(&client, "GET", "/api/v1/namespaces/default/pods/ghost", None).await;
    assert_eq!(code, 404);
    assert_eq!(
        status,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "pods \"ghost\" not found", "reason": "NotFound", "details": { "name": "ghost", "kind": "pods" }, "code": 404 })
    );
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, tier) in [("a", "web"), ("b", "batch"), ("c", "batch")] {
        let mut p = pod(name, "run=forever");
        p.metadata.labels.as_mut().unwrap().insert("tier".into(), tier.into());
        create(&pods, &p).await;
    }
    let mut unlabelled = pod("d", "run=forever");
    unlabelled.metadata.labels = None;
    create(&pods, &unlabelled).await;
    let names = |list: kube::core::ObjectList<Pod>| {
        list.items.into_iter().map(|p| p.metadata.name.unwrap()).collect::<Vec<_>>()
    };
    let check = |selector: &'static str, expected: &'static [&'static str]| {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels(selector)).await.unwrap();
            assert_eq!(names(list), expected, "labelSelector {selector}");
        }
    };
    check("tier=batch", &["b", "c"]).await;
    check("tier==web", &["a"]).await;
    check("tier!=web", &["b", "c", "d"]).await;
    check("tier in (web,batch)", &["a", "b", "c"]).await;
    check("tier notin (batch)", &["a", "d"]).await;
    check("tier", &["a", "b", "c"]).await;
    check("!tier", &["d"]).await;

    let by_name = pods.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(names(by_name), ["b"]);
    common::wait_for(&pods, "d", "Running", |p| common::phase(p) == "Running").await;
    let node = pods.get("d").await.unwrap().spec.unwrap().node_name.unwrap();
    let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await.unwrap();
    assert!(names(on_node).contains(&"d".to_owned()));
    let not_pending = pods.list(&ListParams::default().fields("status.phase!=Pending")).await.unwrap();
    assert!(names(not_pending).contains(&"d".to_owned()));

    let (code, status) =
        raw(&client, "GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.image%3Dx", None).await;
    assert_eq!((code, status["message"].as_str()), (400, Some("field label not supported: spec.image")));
    let (code, status) = raw(&client, "GET", "/api/v1/namespaces/default/pods?labelSelector=tier%20~%20x", None).await;
    assert_eq!(code, 400);
    assert!(status["message"].as_str().unwrap().starts_with("unable to parse requirement"));
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        create(&pods, &pod(&format!("p{i}"), "run=forever")).await;
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(3);
    let first = pods.list(&params).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    assert!(first.metadata.resource_version.as_deref().is_some_and(|rv| rv.parse::<u64>().is_ok()));
    let mut page = first;
    loop {
        seen.extend(page.items.iter().map(|p| p.metadata.name.clone().unwrap()));
        match page.metadata.continue_.clone().filter(|c| !c.is_empty()) {
            Some(token) => {
                params = params.continue_token(&token);
                page = pods.list(&params).await.unwrap();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let (code, _) = raw(&client, "GET", "/api/v1/namespaces/default/pods?limit=2&continue=garbage", None).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn delete_is_graceful_for_running_pods_and_immediate_otherwise() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("runner", "run=forever")).await;
    common::wait_for(&pods, "runner", "Running", |p| common::phase(p) == "Running").await;
    let deleted = pods.delete("runner", &DeleteParams::default()).await.unwrap();
    let terminating = deleted.left().expect("the pod registry returns the object");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    common::wait_gone(&pods, "runner").await;

    // A pod that ignores SIGTERM stays Terminating for its whole grace period.
    create(&pods, &pod("stubborn", "run=forever,ignore-term")).await;
    common::wait_for(&pods, "stubborn", "Running", |p| common::phase(p) == "Running").await;
    pods.delete("stubborn", &DeleteParams::default().grace_period(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let still = pods.get("stubborn").await.expect("still terminating within its grace period");
    assert!(still.metadata.deletion_timestamp.is_some());
    common::wait_gone(&pods, "stubborn").await;

    // Finished pods go at once.
    create(&pods, &pod("done", "run=10ms")).await;
    common::wait_for(&pods, "done", "Succeeded", |p| common::phase(p) == "Succeeded").await;
    pods.delete("done", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("done").await.unwrap().is_none());

    // Preconditions protect a newer pod of the same name.
    create(&pods, &pod("guarded", "run=forever")).await;
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some("not-the-uid".into()), resource_version: None }),
        ..Default::default()
    };
    let status = api_error(pods.delete("guarded", &wrong).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(status.message.contains("Precondition failed: UID in precondition: not-the-uid"), "{}", status.message);

    let status = api_error(pods.delete("ghost", &DeleteParams::default()).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn watch_streams_changes_from_a_resource_version() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let watch = pods.watch(&WatchParams::default().labels("app=test").timeout(10), &rv).await.unwrap();
    let mut other = pod("unlabelled", "run=10ms");
    other.metadata.labels = None;
    create(&pods, &other).await;
    create(&pods, &pod("watched", "run=50ms")).await;
    common::wait_for(&pods, "watched", "Succeeded", |p| common::phase(p) == "Succeeded").await;
    pods.delete("watched", &DeleteParams::default()).await.unwrap();

    let mut kinds = Vec::new();
    let mut stream = watch.boxed();
    while let Some(event) = stream.try_next().await.unwrap() {
        let (kind, pod) = match event {
            WatchEvent::Added(p) => ("ADDED", p),
            WatchEvent::Modified(p) => ("MODIFIED", p),
            WatchEvent::Deleted(p) => ("DELETED", p),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(pod.metadata.name.as_deref(), Some("watched"), "the selector keeps other pods out");
        kinds.push(kind);
        if kind == "DELETED" {
            break;
        }
    }
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert!(kinds.contains(&"MODIFIED"));
    assert_eq!(kinds.last(), Some(&"DELETED"));
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_expired() {
    let (_sim, client) = start(SimConfig { watch_history: 5, ..fast() }).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    for i in 0..10 {
        create(&pods, &pod(&format!("churn{i}"), "run=forever")).await;
    }
    let mut stream = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.starts_with("too old resource version"), "{}", status.message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_the_current_pods() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("existing", "run=forever")).await;
    let mut stream = pods.watch(&WatchParams::default().timeout(5), "0").await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(pod)) => assert_eq!(pod.metadata.name.as_deref(), Some("existing")),
        other => panic!("expected a synthetic ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn logs_honour_tail_lines_and_refuse_waiting_containers() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("chatty", "run=forever,lines=5")).await;
    common::wait_for(&pods, "chatty", "Running", |p| common::phase(p) == "Running").await;
    let all = pods.logs("chatty", &Default::default()).await.unwrap();
    assert_eq!(all.lines().count(), 6);
    let tail = pods.logs("chatty", &kube::api::LogParams { tail_lines: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(tail, "kube-sim: line 4 of 5\nkube-sim: line 5 of 5\n");

    create(&pods, &pod("stuck", "pull=fail")).await;
    common::wait_for(&pods, "stuck", "ImagePullBackOff", |p| {
        common::waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    let status = api_error(pods.logs("stuck", &Default::default()).await.unwrap_err());
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "container \"main\" in pod \"stuck\" is waiting to start: trying and failing to pull image"
    );
}

#[tokio::test]
async fn events_are_listable_by_involved_object() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("evented", "run=20ms,oom")).await;
    create(&pods, &pod("quiet", "run=forever")).await;
    common::wait_for(&pods, "evented", "Failed", |p| common::phase(p) == "Failed").await;
    let events: Api<Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default().fields("involvedObject.name=evented")).await.unwrap();
    let reasons: Vec<String> = list.items.iter().map(|e| e.reason.clone().unwrap()).collect();
    for expected in ["Scheduled", "Pulling", "Pulled", "Created", "Started", "OOMKilling"] {
        assert!(reasons.contains(&expected.to_owned()), "missing {expected} in {reasons:?}");
    }
    assert!(list.items.iter().all(|e| e.involved_object.name.as_deref() == Some("evented")));
    let scheduled = list.items.iter().find(|e| e.reason.as_deref() == Some("Scheduled")).unwrap();
    assert_eq!(scheduled.source.as_ref().unwrap().component.as_deref(), Some("default-scheduler"));
    assert_eq!(scheduled.involved_object.kind.as_deref(), Some("Pod"));
}
