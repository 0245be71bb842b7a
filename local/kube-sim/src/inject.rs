//! What a mutating admission webhook adds to a pod at creation, as Istio's sidecar
//! injector does: an init container `istio-init` (for `init-fail=N`) and a sidecar
//! container `istio-proxy` appended to `spec.containers` (for `sidecar`). Both are
//! added before defaulting and validation, as the apiserver runs mutating admission
//! before it validates, so the QoS class and the scheduler's view include them.
//!
//! Injected containers always come after the pod's own: the pod's first container stays
//! the one its behaviour, logs, exit code and termination message are about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::json;

use crate::behavior::Behavior;

pub const INIT_NAME: &str = "istio-init";
pub const SIDECAR_NAME: &str = "istio-proxy";
pub const PROXY_IMAGE: &str = "docker.io/istio/proxyv2:1.24.0";

/// The resources Istio's injection template gives its containers by default.
fn proxy_resources() -> serde_json::Value {
    json!({ "limits": { "cpu": "2", "memory": "1Gi" }, "requests": { "cpu": "100m", "memory": "128Mi" } })
}

fn init_container() -> Container {
    serde_json::from_value(json!({
        "name": INIT_NAME,
        "image": PROXY_IMAGE,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                 "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "resources": proxy_resources(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "privileged": false, "readOnlyRootFilesystem": false,
            "runAsGroup": 0, "runAsNonRoot": false, "runAsUser": 0
        }
    }))
    .unwrap_or_default()
}

fn sidecar_container() -> Container {
    serde_json::from_value(json!({
        "name": SIDECAR_NAME,
        "image": PROXY_IMAGE,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--proxyLogLevel=warning",
                 "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": [
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.name" } } },
            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } } }
        ],
        "ports": [{ "containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP" }],
        "resources": proxy_resources(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "privileged": false, "readOnlyRootFilesystem": true,
            "runAsGroup": 1337, "runAsNonRoot": true, "runAsUser": 1337
        }
    }))
    .unwrap_or_default()
}

/// Adds what the behaviour's webhook would add; a pod without such terms is untouched.
pub fn inject(pod: &mut Pod, behavior: &Behavior) {
    let init = behavior.init_fail.is_some();
    let sidecar = behavior.sidecar.is_some();
    if !init && !sidecar {
        return;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let own_first = spec.containers.first().map(|c| c.name.clone()).unwrap_or_default();
    if init {
        spec.init_containers.get_or_insert_with(Vec::new).push(init_container());
    }
    if sidecar {
        spec.containers.push(sidecar_container());
    }
    // Istio records what it injected, and points kubectl at the application container.
    let status = json!({
        "initContainers": if init { json!([INIT_NAME]) } else { json!(null) },
        "containers": if sidecar { json!([SIDECAR_NAME]) } else { json!(null) },
        "volumes": null,
        "imagePullSecrets": null,
        "revision": "default",
    });
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert("sidecar.istio.io/status".into(), status.to_string());
    annotations.insert("kubectl.kubernetes.io/default-container".into(), own_first.clone());
    annotations.insert("kubectl.kubernetes.io/default-logs-container".into(), own_first);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::Defaults;

    fn pod() -> Pod {
        serde_json::from_value(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "job", "image": "busybox" }] } }),
        )
        .unwrap()
    }

    fn behavior(text: &str) -> Behavior {
        let defaults = Defaults { run: None, pull: std::time::Duration::ZERO };
        Behavior::parse(text, defaults).unwrap()
    }

    #[test]
    fn injects_after_the_pods_own_containers() {
        let mut p = pod();
        inject(&mut p, &behavior("sidecar,init-fail=2"));
        let spec = p.spec.as_ref().unwrap();
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["job", SIDECAR_NAME]);
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, INIT_NAME);
        assert_eq!(spec.containers[1].image.as_deref(), Some(PROXY_IMAGE));
        let annotations = p.metadata.annotations.unwrap();
        assert_eq!(annotations["kubectl.kubernetes.io/default-container"], "job");
        assert!(annotations["sidecar.istio.io/status"].contains("\"containers\":[\"istio-proxy\"]"));
    }

    #[test]
    fn pods_without_such_terms_keep_their_containers() {
        let mut p = pod();
        inject(&mut p, &behavior("run=1s,exit=3"));
        assert_eq!(p, pod());
    }
}
