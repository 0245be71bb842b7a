//! The failure behaviours a reconciler must tell apart, read back through the `kube`
//! client field by field: admission rejection, runtime start errors, injected init
//! containers and sidecars, volumes that never mount, deletion from outside and
//! ephemeral-storage eviction.

use crate::common;

use std::time::Duration;

use common::{condition, container, create, fast, phase, pod, start, wait_for, waiting_reason};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};
use kube_sim::{NodeShape, SimConfig};
use serde_json::json;

async fn events(client: &kube::Client, selector: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events.list(&ListParams::default().fields(selector)).await.unwrap().items
}

fn terminated(status: &ContainerStatus) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    status
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap_or_else(|| panic!("{} has not terminated: {status:#?}", status.name))
}

fn waiting(status: &ContainerStatus) -> k8s_openapi::api::core::v1::ContainerStateWaiting {
    status.state.clone().unwrap().waiting.unwrap_or_else(|| panic!("{} is not waiting: {status:#?}", status.name))
}

fn names(statuses: &[ContainerStatus]) -> Vec<&str> {
    statuses.iter().map(|s| s.name.as_str()).collect()
}

/// GIVEN one 4-CPU node and pods whose behaviour makes the kubelet refuse them
/// WHEN they are bound
/// THEN each ends exactly as rejectPod leaves it, with the kubelet's event, and the
/// node holds nothing for them.
#[tokio::test]
async fn the_kubelet_refuses_pods_with_the_admission_reason() {
    let shape = NodeShape { cpu_millis: 4000, memory_bytes: 16 << 30, max_pods: 110 };
    let (_sim, client) = start(SimConfig { nodes: 1, node_shape: shape, ..fast() }).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cases = [
        ("OutOfcpu", "Node didn't have enough resource: cpu, requested: 100, used: 3950, capacity: 4000"),
        (
            "OutOfmemory",
            "Node didn't have enough resource: memory, requested: 67108864, used: 17146314752, capacity: 17179869184",
        ),
        ("OutOfpods", "Node didn't have enough resource: pods, requested: 1, used: 110, capacity: 110"),
        ("NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"),
        ("NodeShutdown", "Pod was rejected as the node is shutting down."),
        (
            "UnexpectedAdmissionError",
            "Allocate failed due to requested number of devices unavailable for nvidia.com/gpu. Requested: 1, Available: 0, which is unexpected",
        ),
        ("SomethingElse", "GeneralPredicates failed due to unknown reason, which is unexpected."),
    ];
    for (i, (reason, _)) in cases.iter().enumerate() {
        create(&pods, &pod(&format!("refused-{i}"), &format!("refuse={reason}"))).await;
    }
    for (i, (reason, message)) in cases.iter().enumerate() {
        let name = format!("refused-{i}");
        let failed = wait_for(&pods, &name, "Failed", |p| phase(p) == "Failed").await;
        let status = failed.status.clone().unwrap();
        assert_eq!(status.reason.as_deref(), Some(*reason));
        assert_eq!(status.message, Some(format!("Pod was rejected: {message}")));
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
        assert!(status.start_time.is_some(), "the status manager sets a start time");
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 1, "only the scheduler's condition stays: {conditions:#?}");
        assert_eq!((conditions[0].type_.as_str(), conditions[0].status.as_str()), ("PodScheduled", "True"));
        assert_eq!(status.container_statuses, None);
        assert_eq!((status.host_ip.as_ref(), status.pod_ip.as_ref()), (None, None));
        let events = events(&client, &format!("involvedObject.name={name},reason={reason}")).await;
        assert_eq!(events.len(), 1, "{events:#?}");
        let event = &events[0];
        assert_eq!((event.type_.as_deref(), event.message.as_deref()), (Some("Warning"), Some(*message)));
        assert_eq!(event.source.as_ref().unwrap().component.as_deref(), Some("kubelet"));
        assert_eq!(event.source.as_ref().unwrap().host.as_deref(), Some("kube-sim-node-1"));
    }

    // The refused pods hold nothing: a pod asking for most of the node still fits.
    let mut big = pod("big", "run=forever");
    big.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "3900m" } })).unwrap());
    create(&pods, &big).await;
    wait_for(&pods, "big", "Running", |p| phase(p) == "Running").await;
}

/// GIVEN pods whose executable does not exist
/// WHEN the runtime tries to start them (containerd, then dockershim)
/// THEN the container ends with the runtime's own status and the kubelet's event.
#[tokio::test]
async fn runtime_start_errors_end_the_container() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut containerd = pod("nostart", "start-error");
    containerd.spec.as_mut().unwrap().containers[0].command = Some(vec!["/app/run".into(), "--now".into()]);
    create(&pods, &containerd).await;
    create(&pods, &pod("nostart-docker", "start-error=docker")).await;

    let failed = wait_for(&pods, "nostart", "Failed", |p| phase(p) == "Failed").await;
    let status = container(&failed, "main");
    let ended = terminated(status);
    let message = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/app/run\": executable file not found in $PATH: unknown";
    assert_eq!(
        (ended.exit_code, ended.reason.as_deref(), ended.message.as_deref()),
        (128, Some("StartError"), Some(message))
    );
    assert_eq!(serde_json::to_value(&ended.started_at).unwrap(), json!("1970-01-01T00:00:00Z"));
    assert!(ended.finished_at.is_some());
    assert_eq!((status.started, status.ready, status.restart_count), (Some(false), false, 0));
    assert!(status.container_id.as_deref().unwrap().starts_with("containerd://"));
    assert_eq!(ended.container_id, status.container_id);
    assert_eq!(condition(&failed, "Ready").unwrap().reason.as_deref(), Some("PodFailed"));
    let failures = events(&client, "involvedObject.name=nostart,reason=Failed").await;
    assert_eq!(failures[0].message, Some(format!("Error: {message}")));
    assert_eq!(failures[0].involved_object.field_path.as_deref(), Some("spec.containers{main}"));

    let failed = wait_for(&pods, "nostart-docker", "Failed", |p| phase(p) == "Failed").await;
    let status = container(&failed, "main");
    let ended = terminated(status);
    let message = "OCI runtime create failed: container_linux.go:380: starting container process caused: exec: \"/docker-entrypoint.sh\": executable file not found in $PATH: unknown";
    assert_eq!(
        (ended.exit_code, ended.reason.as_deref(), ended.message.as_deref()),
        (127, Some("ContainerCannotRun"), Some(message))
    );
    assert_eq!(ended.started_at, ended.finished_at, "dockershim reports the creation time for both");
    let id = status.container_id.as_deref().unwrap().strip_prefix("docker://").unwrap();
    assert!(status.image_id.starts_with("docker-pullable://busybox@sha256:"), "{}", status.image_id);
    let failures = events(&client, "involvedObject.name=nostart-docker,reason=Failed").await;
    assert_eq!(
        failures[0].message,
        Some(format!("Error: failed to start container \"{id}\": Error response from daemon: {message}"))
    );
}

/// GIVEN a pod an injecting webhook gives an `istio-init` init container that exits 3
/// WHEN it runs
/// THEN the pod fails in initialization: Init:Error, its own container still
/// PodInitializing, Initialized False naming the init container.
#[tokio::test]
async fn an_injected_init_container_that_fails_fails_the_pod() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = create(&pods, &pod("init", "init-fail=3")).await;
    let init = &created.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!((init.name.as_str(), init.image.as_deref()), ("istio-init", Some("docker.io/istio/proxyv2:1.24.0")));
    let plain = create(&pods, &pod("plain", "run=forever")).await;
    assert_eq!(plain.spec.unwrap().init_containers, None, "without the term, no init container");

    let failed = wait_for(&pods, "init", "Failed", |p| phase(p) == "Failed").await;
    let status = failed.status.clone().unwrap();
    let inits = status.init_container_statuses.clone().unwrap();
    assert_eq!(names(&inits), ["istio-init"]);
    let ended = terminated(&inits[0]);
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (3, Some("Error")));
    assert!(ended.started_at.is_some() && ended.finished_at.is_some());
    assert_eq!((inits[0].ready, inits[0].started), (false, Some(false)));
    assert!(inits[0].container_id.as_deref().unwrap().starts_with("containerd://"));
    let main = container(&failed, "main");
    assert_eq!(waiting(main).reason.as_deref(), Some("PodInitializing"));
    assert_eq!((main.ready, main.started, main.image_id.as_str()), (false, Some(false), ""));
    let initialized = condition(&failed, "Initialized").unwrap();
    assert_eq!(
        (initialized.status.as_str(), initialized.reason.as_deref(), initialized.message.as_deref()),
        ("False", Some("ContainersNotInitialized"), Some("containers with incomplete status: [istio-init]"))
    );
    assert_eq!(condition(&failed, "Ready").unwrap().reason.as_deref(), Some("PodFailed"));
    assert_eq!(condition(&failed, "ContainersReady").unwrap().reason.as_deref(), Some("PodFailed"));
    let started = events(&client, "involvedObject.name=init,reason=Started").await;
    assert_eq!(started[0].involved_object.field_path.as_deref(), Some("spec.initContainers{istio-init}"));

    // The pod's own container never started: it has no logs yet.
    let (code, status) =
        common::raw(&client, "GET", "/api/v1/namespaces/default/pods/init/log?container=main", None).await;
    assert_eq!(code, 400);
    assert_eq!(status["message"], "container \"main\" in pod \"init\" is waiting to start: PodInitializing");
}

/// GIVEN pods with an injected `istio-proxy` sidecar
/// WHEN their own container ends
/// THEN the sidecar keeps the pod Running; with `sidecar=oom` it is OOMKilled next and
/// the pod fails; deleting a pod stops the sidecar with exit 0 and removes it.
#[tokio::test]
async fn an_injected_sidecar_outlives_the_job_container() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = create(&pods, &pod("meshed", "run=100ms,lines=1,sidecar")).await;
    let spec = created.spec.as_ref().unwrap();
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["main", "istio-proxy"], "appended after the pod's own");
    create(&pods, &pod("meshed-oom", "run=100ms,sidecar=oom")).await;

    let running = wait_for(&pods, "meshed", "both running", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|all| all.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())))
    })
    .await;
    let statuses = running.status.clone().unwrap().container_statuses.unwrap();
    assert_eq!(names(&statuses), ["istio-proxy", "main"], "sorted by name, as the kubelet sorts them");
    assert_eq!(condition(&running, "Ready").unwrap().status, "True");

    let done = wait_for(&pods, "meshed", "job ended", |p| {
        container(p, "main").state.as_ref().is_some_and(|s| s.terminated.is_some())
    })
    .await;
    assert_eq!(phase(&done), "Running", "the sidecar still runs");
    assert_eq!(terminated(container(&done, "main")).exit_code, 0);
    assert!(container(&done, "istio-proxy").state.as_ref().unwrap().running.is_some());
    let ready = condition(&done, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref(), ready.message.as_deref()),
        ("False", Some("ContainersNotReady"), Some("containers with unready status: [main]"))
    );
    // Logs belong to a container; the pod's own one is the one that wrote.
    let (code, status) = common::raw(&client, "GET", "/api/v1/namespaces/default/pods/meshed/log", None).await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "a container name must be specified for pod meshed, choose one of: [main istio-proxy]"
    );
    let logs = pods
        .logs("meshed", &kube::api::LogParams { container: Some("main".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(logs, "kube-sim: started busybox:1.36\nkube-sim: line 1 of 1\n");

    let oom = wait_for(&pods, "meshed-oom", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(container(&oom, "main")).exit_code, 0);
    let proxy = terminated(container(&oom, "istio-proxy"));
    assert_eq!((proxy.exit_code, proxy.reason.as_deref()), (137, Some("OOMKilled")));

    // Deleting the pod stops the sidecar too; the final status is written before the
    // object goes: phase Succeeded, as both containers exited 0.
    let rv = done.metadata.resource_version.clone().unwrap();
    let mut watch =
        pods.watch(&WatchParams::default().fields("metadata.name=meshed").timeout(10), &rv).await.unwrap().boxed();
    pods.delete("meshed", &DeleteParams::default()).await.unwrap();
    let mut last_modified = None;
    while let Some(event) = watch.try_next().await.unwrap() {
        match event {
            WatchEvent::Modified(pod) => last_modified = Some(pod),
            WatchEvent::Deleted(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = last_modified.expect("a final status before DELETED");
    let proxy = terminated(container(&last, "istio-proxy"));
    assert_eq!((proxy.exit_code, proxy.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(phase(&last), "Succeeded");
}

/// GIVEN a pod with a secret volume whose secret does not exist
/// WHEN the kubelet tries to mount it
/// THEN the pod stays Pending in ContainerCreating, and FailedMount events repeat on a
/// back-off, folded into one event whose count goes up.
#[tokio::test]
async fn a_volume_that_cannot_be_mounted_keeps_the_pod_creating() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut p = pod("nomount", "mount-fail");
    p.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({ "name": "db-creds", "secret": { "secretName": "db-credentials" } })).unwrap(),
    ]);
    create(&pods, &p).await;
    create(&pods, &pod("nomount-default", "mount-fail")).await;
    let stuck =
        wait_for(&pods, "nomount", "ContainerCreating", |p| waiting_reason(p).as_deref() == Some("ContainerCreating"))
            .await;
    let selector = "involvedObject.name=nomount,involvedObject.kind=Pod,reason=FailedMount";
    let first = loop {
        if let Some(event) = events(&client, selector).await.into_iter().next() {
            break event;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        first.message.as_deref(),
        Some("MountVolume.SetUp failed for volume \"db-creds\" : secret \"db-credentials\" not found")
    );
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(first.source.as_ref().unwrap().component.as_deref(), Some("kubelet"));
    assert_eq!(first.involved_object.kind.as_deref(), Some("Pod"));
    // lastTimestamp has whole seconds: wait (at most 3s) until it moves.
    let mut later = Vec::new();
    for _ in 0..150 {
        later = events(&client, selector).await;
        if later[0].last_timestamp > first.last_timestamp {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(later.len(), 1, "repeats fold into one event");
    assert!(later[0].count.unwrap() > first.count.unwrap(), "{later:#?}");
    assert!(later[0].last_timestamp > first.last_timestamp, "{later:#?}");
    assert_eq!(later[0].first_timestamp, first.first_timestamp);

    let now = pods.get("nomount").await.unwrap();
    assert_eq!(phase(&now), "Pending");
    let status = now.status.clone().unwrap();
    assert_eq!(status.pod_ip, None, "no sandbox, no pod IP");
    assert!(status.host_ip.is_some() && status.start_time.is_some());
    let main = container(&now, "main");
    assert_eq!(waiting(main), waiting(container(&stuck, "main")));
    assert_eq!(waiting(main).message, None);
    let expect = |type_: &str, status: &str, reason: Option<&str>| {
        let c = condition(&now, type_).unwrap_or_else(|| panic!("no {type_}"));
        assert_eq!((c.status.as_str(), c.reason.as_deref()), (status, reason), "{type_}");
    };
    expect("PodScheduled", "True", None);
    expect("PodReadyToStartContainers", "False", None);
    expect("Initialized", "True", None);
    expect("Ready", "False", Some("ContainersNotReady"));
    expect("ContainersReady", "False", Some("ContainersNotReady"));
    assert_eq!(condition(&now, "Ready").unwrap().message.as_deref(), Some("containers with unready status: [main]"));

    let fallback = events(&client, "involvedObject.name=nomount-default,reason=FailedMount").await;
    assert_eq!(
        fallback[0].message.as_deref(),
        Some("MountVolume.SetUp failed for volume \"credentials\" : secret \"credentials\" not found")
    );
}

async fn watch_to_deletion(pods: &Api<Pod>, name: &str, rv: &str) -> Vec<(&'static str, Pod)> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(15);
    let mut watch = pods.watch(&params, rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while let Some(event) = watch.try_next().await.unwrap() {
        match event {
            WatchEvent::Added(pod) => seen.push(("ADDED", pod)),
            WatchEvent::Modified(pod) => seen.push(("MODIFIED", pod)),
            WatchEvent::Deleted(pod) => {
                seen.push(("DELETED", pod));
                return seen;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("the watch ended before {name} was deleted: {seen:#?}");
}

/// The last MODIFIED before DELETED: what the kubelet wrote before the object went.
fn final_status(seen: &[(&str, Pod)]) -> Pod {
    assert_eq!(seen.last().unwrap().0, "DELETED");
    seen.iter().rev().find(|(kind, _)| *kind == "MODIFIED").unwrap().1.clone()
}

/// GIVEN a pod someone outside deletes 100ms after it starts running, and one deleted
/// through the API
/// WHEN the deletion runs its course
/// THEN both end the same way: Terminating with the grace period, a Killing event, no
/// DisruptionTarget, the final status (Failed, exit 143) written before DELETED.
#[tokio::test]
async fn deletion_from_outside_writes_the_final_status_before_the_object_goes() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    create(&pods, &pod("repaired", "run=forever,delete=100ms")).await;
    let seen = watch_to_deletion(&pods, "repaired", &rv).await;
    let terminating = seen.iter().find(|(_, p)| p.metadata.deletion_timestamp.is_some()).unwrap().1.clone();
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(phase(&terminating), "Running", "Terminating first");
    let last = final_status(&seen);
    assert!(last.metadata.deletion_timestamp.is_some());
    assert_eq!(phase(&last), "Failed");
    let ended = terminated(container(&last, "main"));
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (143, Some("Error")));
    assert!(seen.iter().all(|(_, p)| condition(p, "DisruptionTarget").is_none()), "no DisruptionTarget");
    let killing = events(&client, "involvedObject.name=repaired,reason=Killing").await;
    assert_eq!(killing[0].message.as_deref(), Some("Stopping container main"));

    // The API DELETE path ends the same way.
    create(&pods, &pod("deleted", "run=forever")).await;
    let running = wait_for(&pods, "deleted", "Running", |p| phase(p) == "Running").await;
    let rv = running.metadata.resource_version.clone().unwrap();
    let watcher = tokio::spawn({
        let pods = pods.clone();
        async move { watch_to_deletion(&pods, "deleted", &rv).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    pods.delete("deleted", &DeleteParams::default()).await.unwrap();
    let last = final_status(&watcher.await.unwrap());
    assert_eq!((phase(&last), terminated(container(&last, "main")).exit_code), ("Failed", 143));

    // A container that ignores SIGTERM is killed at the end of the grace period: 137.
    let mut stubborn = pod("stubborn", "run=forever,ignore-term,delete=50ms");
    stubborn.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    create(&pods, &stubborn).await;
    let last = final_status(&watch_to_deletion(&pods, "stubborn", &rv).await);
    assert_eq!((phase(&last), terminated(container(&last, "main")).exit_code), ("Failed", 137));
}

/// GIVEN pods whose container outgrows its ephemeral-storage limit
/// WHEN the eviction manager notices
/// THEN the pod is Evicted with the container's limit in the message, its containers
/// killed (137), and no DisruptionTarget, as for every local-storage eviction.
#[tokio::test]
async fn ephemeral_storage_eviction_names_the_containers_limit() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut limited = pod("hoarder", "run=forever,evict-storage=50ms");
    limited.spec.as_mut().unwrap().containers[0].resources = Some(
        serde_json::from_value(json!({ "requests": { "cpu": "100m" }, "limits": { "ephemeral-storage": "2Gi" } }))
            .unwrap(),
    );
    create(&pods, &limited).await;
    create(&pods, &pod("hoarder-default", "run=forever,evict-storage=50ms")).await;
    for (name, limit) in [("hoarder", "2Gi"), ("hoarder-default", "1Gi")] {
        let failed = wait_for(&pods, name, "Evicted", |p| phase(p) == "Failed").await;
        let status = failed.status.clone().unwrap();
        let message = format!("Container main exceeded its local ephemeral storage limit \"{limit}\". ");
        assert_eq!((status.reason.as_deref(), status.message.as_deref()), (Some("Evicted"), Some(message.as_str())));
        assert!(condition(&failed, "DisruptionTarget").is_none());
        let ended = terminated(container(&failed, "main"));
        assert_eq!((ended.exit_code, ended.reason.as_deref()), (137, Some("Error")));
        assert_eq!(condition(&failed, "Ready").unwrap().reason.as_deref(), Some("PodFailed"));
        let evicted = events(&client, &format!("involvedObject.name={name},reason=Evicted")).await;
        assert_eq!(evicted[0].message.as_deref(), Some(message.as_str()));
    }
}
