//! Fault injection and the admin endpoint: what chaos tests rely on.

use crate::common;

use common::{create, fast, pod, raw, start};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_sim::{ErrorFault, Faults, SimConfig};
use serde_json::json;

fn always(verb: &str, code: u16) -> Faults {
    Faults {
        errors: vec![ErrorFault { verb: verb.into(), rate: 1.0, code }],
        retry_after_seconds: 3,
        ..Faults::default()
    }
}

#[tokio::test]
async fn injected_errors_have_the_apiservers_shapes() {
    let (sim, client) = start(fast()).await;
    sim.set_faults(always("create", 503)).unwrap();
    let (code, status) =
        raw(&client, "POST", "/api/v1/namespaces/default/pods", Some(serde_json::to_value(pod("x", "")).unwrap()))
            .await;
    assert_eq!(
        (code, status["reason"].as_str(), status["code"].as_u64()),
        (503, Some("ServiceUnavailable"), Some(503))
    );
    // Other verbs are untouched.
    assert_eq!(raw(&client, "GET", "/api/v1/namespaces/default/pods", None).await.0, 200);

    sim.set_faults(always("list", 429)).unwrap();
    let (code, status) = raw(&client, "GET", "/api/v1/namespaces/default/pods", None).await;
    assert_eq!((code, status["reason"].as_str()), (429, Some("TooManyRequests")));
    assert_eq!(status["details"]["retryAfterSeconds"], 3);

    sim.set_faults(always("*", 500)).unwrap();
    let (code, status) = raw(&client, "GET", "/api/v1/namespaces/default/pods/x", None).await;
    assert_eq!((code, status["reason"].as_str()), (500, Some("InternalError")));
    // Discovery is never faulted.
    assert_eq!(raw(&client, "GET", "/api/v1", None).await.0, 200);

    sim.set_faults(Faults::default()).unwrap();
    let stats = sim.verb_stats();
    assert_eq!(stats["create"].injected_errors, 1);
    assert_eq!(stats["list"].injected_errors, 1);
    assert_eq!(stats["get"].injected_errors, 1);
}

#[tokio::test]
async fn dropped_connections_reach_the_client_as_transport_errors() {
    let (sim, client) = start(fast()).await;
    sim.set_faults(Faults { drop_rate: 1.0, ..Faults::default() }).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let error = pods.list(&ListParams::default()).await.unwrap_err();
    assert!(!matches!(error, kube::Error::Api(_)), "a dropped connection carries no Status: {error:?}");
    sim.set_faults(Faults::default()).unwrap();
    pods.list(&ListParams::default()).await.expect("a new connection works once faults stop");
    assert_eq!(sim.verb_stats()["list"].dropped, 1);
}

#[tokio::test]
async fn faults_can_be_set_at_start() {
    let (_sim, client) = start(SimConfig { faults: always("delete", 503), ..fast() }).await;
    let (code, _) = raw(&client, "DELETE", "/api/v1/namespaces/default/pods/any", None).await;
    assert_eq!(code, 503);
}

#[tokio::test]
async fn the_admin_endpoint_sets_faults_and_reports_what_happened() {
    let (sim, client) = start(fast()).await;
    let (code, faults) = raw(
        &client,
        "PUT",
        "/kube-sim/faults",
        Some(json!({ "latencyMs": 5, "errors": [{ "verb": "get", "rate": 1.0, "code": 500 }] })),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(faults["latencyMs"], 5);
    assert_eq!(raw(&client, "GET", "/api/v1/namespaces/default/pods/x", None).await.0, 500);
    let (code, error) = raw(&client, "PUT", "/kube-sim/faults", Some(json!({ "dropRate": 2.0 }))).await;
    assert_eq!(code, 400);
    assert_eq!(error["message"], "dropRate 2 is not between 0 and 1");
    raw(&client, "PUT", "/kube-sim/faults", Some(json!({}))).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("logged", "run=forever")).await;
    common::wait_for(&pods, "logged", "Running", |p| common::phase(p) == "Running").await;
    pods.delete("logged", &Default::default()).await.unwrap();
    common::wait_gone(&pods, "logged").await;
    let (_, created) = raw(&client, "GET", "/kube-sim/created", None).await;
    assert_eq!(created.as_array().unwrap().len(), 1, "deleted pods stay in the creation log");
    assert_eq!(created[0]["name"], "logged");
    assert_eq!(sim.created_pods().len(), 1);

    let (code, node) = raw(&client, "POST", "/kube-sim/nodes", Some(json!({ "cpuMillis": 500 }))).await;
    assert_eq!(code, 201);
    let name = node["name"].as_str().unwrap().to_owned();
    let (_, stats) = raw(&client, "GET", "/kube-sim/stats", None).await;
    assert_eq!((stats["nodes"].as_u64(), stats["podsCreated"].as_u64()), (Some(4), Some(1)));
    assert_eq!(raw(&client, "POST", &format!("/kube-sim/nodes/{name}/lose"), None).await.0, 204);
    assert_eq!(raw(&client, "DELETE", "/kube-sim/nodes/no-such-node", None).await.0, 404);

    create(&pods, &pod("finisher", "run=forever")).await;
    common::wait_for(&pods, "finisher", "Running", |p| common::phase(p) == "Running").await;
    assert_eq!(raw(&client, "POST", "/kube-sim/namespaces/default/pods/finisher/finish?exitCode=4", None).await.0, 204);
    let done = common::wait_for(&pods, "finisher", "Failed", |p| common::phase(p) == "Failed").await;
    assert_eq!(common::terminated(&done).unwrap().exit_code, 4);
}

#[tokio::test]
async fn admin_requires_the_token() {
    let (sim, _) = start(fast()).await;
    let anonymous = common::client_for(&sim, false).await;
    assert_eq!(raw(&anonymous, "GET", "/kube-sim/created", None).await.0, 401);
}
