//! Helpers shared by kube-sim's tests: an in-process cluster with fast timings, a
//! `kube` client for it, raw requests, and bounded waits.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, SimConfig, Timings};
use serde_json::{Value, json};

/// Timings short enough that a pod's whole life takes a fraction of a second.
pub fn fast() -> SimConfig {
    SimConfig {
        timings: Timings {
            schedule: Duration::from_millis(5),
            start: Duration::from_millis(5),
            pull: Duration::from_millis(10),
            pull_backoff: Duration::from_millis(100),
            run: Some(Duration::from_millis(200)),
            termination: Duration::from_millis(50),
            pod_gc: Duration::from_millis(200),
        },
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> (KubeSim, kube::Client) {
    let sim = KubeSim::start("127.0.0.1:0".parse().unwrap(), config).await.expect("kube-sim starts");
    let client = client_for(&sim, true).await;
    (sim, client)
}

/// A client through the sim's kubeconfig, with or without its bearer token.
pub async fn client_for(sim: &KubeSim, with_token: bool) -> kube::Client {
    let mut kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig parses");
    if !with_token {
        for user in &mut kubeconfig.auth_infos {
            if let Some(info) = user.auth_info.as_mut() {
                info.token = None;
            }
        }
    }
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    // kube retries 429/503/504 up to 15 times by default; the tests must see each answer.
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Sends a raw request; returns the status code and the body (JSON when it parses).
pub async fn raw(client: &kube::Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut builder = http::Request::builder().method(method).uri(path);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let request = builder.body(kube::client::Body::from(bytes)).unwrap();
    send(client, request).await
}

/// Sends a raw request with a body of the given content type (a PATCH's patch type).
pub async fn raw_typed(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap();
    send(client, request).await
}

/// The status of the regular container `name`.
pub fn container<'a>(pod: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|all| all.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status for container {name}"))
}

/// A one-container pod whose container behaves as `behavior` says.
pub fn pod(name: &str, behavior: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "test" }, "annotations": { "kube-sim/behavior": behavior } },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } }
            }]
        }
    }))
    .unwrap()
}

pub async fn create(api: &Api<Pod>, pod: &Pod) -> Pod {
    api.create(&PostParams::default(), pod).await.expect("pod is created")
}

/// Polls the pod until `done` holds (at most 10 s, then fails showing the last state).
pub async fn wait_for(api: &Api<Pod>, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let mut last = None;
    for _ in 0..500 {
        if let Some(pod) = api.get_opt(name).await.expect("get") {
            if done(&pod) {
                return pod;
            }
            last = Some(pod);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pod {name} never reached {what}; last seen: {:#?}", last.map(|p| p.status));
}

/// Polls until the pod is gone (at most 10 s).
pub async fn wait_gone(api: &Api<Pod>, name: &str) {
    for _ in 0..500 {
        if api.get_opt(name).await.expect("get").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pod {name} was never removed");
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

pub fn terminated(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone()
}

/// Sends `request`; the answer's status code and its body as JSON (or as a string).
async fn send(client: &kube::Client, request: http::Request<kube::client::Body>) -> (u16, Value) {
    let response = client.send(request).await.expect("request is answered");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}
