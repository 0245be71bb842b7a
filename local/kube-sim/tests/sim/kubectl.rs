//! The real `kubectl` against kube-sim: what an operator types must work.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{create, fast, pod, start};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("kubectl must be on PATH (Debian package kubernetes-client)");
    assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_describes_watches_and_deletes_pods() {
    let (sim, client) = start(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let cache = dir.path().join("cache");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("web-1", "run=forever")).await;
    let mut other = pod("batch-1", "run=forever");
    other.metadata.labels = Some([("app".to_owned(), "batch".to_owned())].into());
    let jobs: Api<Pod> = Api::namespaced(client.clone(), "podbridge-jobs");
    create(&jobs, &other).await;
    common::wait_for(&pods, "web-1", "Running", |p| common::phase(p) == "Running").await;
    common::wait_for(&jobs, "batch-1", "Running", |p| common::phase(p) == "Running").await;

    let all = stdout(&kubectl(&kubeconfig, &cache, &["get", "pods", "-A"]));
    let header: Vec<&str> = all.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("default") && l.contains("web-1") && l.contains("1/1") && l.contains("Running")),
        "{all}"
    );
    assert!(all.lines().any(|l| l.starts_with("podbridge-jobs") && l.contains("batch-1")), "{all}");

    let json: Value = serde_json::from_str(&stdout(&kubectl(
        &kubeconfig,
        &cache,
        &["get", "pods", "-A", "-l", "app=test", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(json["kind"], "List");
    let names: Vec<&str> =
        json["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web-1"]);

    let described = stdout(&kubectl(&kubeconfig, &cache, &["describe", "pod", "web-1"]));
    for expected in
        ["Name:", "web-1", "Node:", "kube-sim-node-", "Status:", "Running", "Events:", "Scheduled", "Started"]
    {
        assert!(described.contains(expected), "describe lacks {expected:?}:\n{described}");
    }

    // A watch sees the pod go when kubectl deletes it.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["get", "pods", "--watch", "--request-timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let output = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut watched = Vec::new();
    let mut read_until = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                let hit = done(&line);
                watched.push(line);
                if hit {
                    return;
                }
            }
        }
        panic!("kubectl get --watch never showed {what}:\n{}", watched.join("\n"));
    };
    read_until("web-1 Running", &|l| l.contains("web-1") && l.contains("Running"));
    let deleted = stdout(&kubectl(&kubeconfig, &cache, &["delete", "pod", "web-1"]));
    assert_eq!(deleted.trim(), "pod \"web-1\" deleted");
    assert!(pods.get_opt("web-1").await.unwrap().is_none(), "kubectl delete waits until the pod is gone");
    read_until("web-1 Terminating", &|l| l.contains("web-1") && l.contains("Terminating"));
    watch.kill().unwrap();
    let _ = watch.wait();
    assert!(watched[0].starts_with("NAME"), "{watched:?}");

    let nodes = stdout(&kubectl(&kubeconfig, &cache, &["get", "nodes"]));
    assert_eq!(nodes.lines().filter(|l| l.contains("Ready")).count(), 3, "{nodes}");
}

/// GIVEN a running pod, and pods failing in initialization or outlived by a sidecar
/// WHEN an operator patches the status with the real kubectl (merge, then kubectl's
/// default strategic merge) and lists the pods
/// THEN the patches land as the apiserver applies them, and `kubectl get pods` shows
/// what it shows on a real cluster (Init:Error, NotReady).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patches_the_status_subresource() {
    let (sim, client) = start(fast()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let cache = dir.path().join("cache");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("patched", "run=forever")).await;
    create(&pods, &pod("init-failed", "init-fail=2")).await;
    create(&pods, &pod("meshed", "run=50ms,sidecar")).await;
    common::wait_for(&pods, "patched", "Running", |p| common::phase(p) == "Running").await;

    let merge = r#"{"status":{"phase":"Failed","reason":"Preempted","message":"patched by kubectl"}}"#;
    let output =
        kubectl(&kubeconfig, &cache, &["patch", "pod", "patched", "--subresource=status", "--type=merge", "-p", merge]);
    assert_eq!(stdout(&output).trim(), "pod/patched patched");
    let patched = pods.get("patched").await.unwrap();
    let status = patched.status.as_ref().unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref(), status.message.as_deref()),
        (Some("Failed"), Some("Preempted"), Some("patched by kubectl"))
    );

    // kubectl's default patch type is strategic merge: conditions merge by type.
    let strategic = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Paused"}]}}"#;
    let output = kubectl(&kubeconfig, &cache, &["patch", "pod", "patched", "--subresource=status", "-p", strategic]);
    assert_eq!(stdout(&output).trim(), "pod/patched patched");
    let patched = pods.get("patched").await.unwrap();
    let conditions = patched.status.as_ref().unwrap().conditions.clone().unwrap();
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("Paused")));
    for kept in ["PodScheduled", "Initialized", "ContainersReady", "PodReadyToStartContainers"] {
        assert!(conditions.iter().any(|c| c.type_ == kept), "{kept} kept: {conditions:#?}");
    }
    let output = kubectl(&kubeconfig, &cache, &["patch", "pod", "patched", "--subresource=status", "-p", strategic]);
    assert_eq!(stdout(&output).trim(), "pod/patched patched (no change)");
    let shown = stdout(&kubectl(
        &kubeconfig,
        &cache,
        &["get", "pod", "patched", "--subresource=status", "-o", "jsonpath={.status.reason}"],
    ));
    assert_eq!(shown, "Preempted");

    common::wait_for(&pods, "init-failed", "Failed", |p| common::phase(p) == "Failed").await;
    common::wait_for(&pods, "meshed", "job ended", |p| {
        common::container(p, "main").state.as_ref().is_some_and(|s| s.terminated.is_some())
    })
    .await;
    let listed = stdout(&kubectl(&kubeconfig, &cache, &["get", "pods"]));
    let row = |name: &str| {
        listed.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{listed}")).to_owned()
    };
    let columns = |name: &str| row(name).split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(columns("init-failed")[1..3], ["0/1", "Init:Error"], "{listed}");
    assert_eq!(columns("meshed")[1..3], ["1/2", "NotReady"], "{listed}");
    assert_eq!(columns("patched")[2], "Preempted", "{listed}");
}
