//! The simulated pod lifecycle: every stage a podbridge reconciler must tell apart,
//! with status fields shaped as the kubelet and controllers write them.

use crate::common;

use std::time::Duration;

use common::{condition, create, fast, phase, pod, start, terminated, wait_for, waiting_reason};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube_sim::{Autoscaler, NodeShape, SimConfig};
use serde_json::json;

async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default().fields(&format!("involvedObject.name={name}"))).await.unwrap();
    list.items.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn a_successful_pod_runs_then_succeeds_with_exit_code_zero() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("ok", "run=300ms")).await;
    let running = wait_for(&pods, "ok", "Running", |p| phase(p) == "Running").await;
    let status = running.status.as_ref().unwrap();
    assert!(status.start_time.is_some() && status.pod_ip.is_some() && status.host_ip.is_some());
    assert_eq!(condition(&running, "Ready").unwrap().status, "True");
    assert_eq!(condition(&running, "PodScheduled").unwrap().status, "True");
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready && container.started == Some(true));
    assert!(container.container_id.as_deref().unwrap().starts_with("containerd://"));
    assert!(container.image_id.contains("@sha256:"));

    let done = wait_for(&pods, "ok", "Succeeded", |p| phase(p) == "Succeeded").await;
    let ended = terminated(&done).unwrap();
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (0, Some("Completed")));
    assert!(ended.started_at.is_some() && ended.finished_at.is_some());
    assert_eq!(ended.message, None, "no termination message for a success");
    let ready = condition(&done, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("PodCompleted")));
}

#[tokio::test]
async fn a_non_zero_exit_fails_the_pod_with_the_log_tail_as_message() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("exit3", "run=50ms,exit=3,lines=2")).await;
    let failed = wait_for(&pods, "exit3", "Failed", |p| phase(p) == "Failed").await;
    let ended = terminated(&failed).unwrap();
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        ended.message.as_deref(),
        Some(
            "kube-sim: started busybox:1.36\nkube-sim: line 1 of 2\nkube-sim: line 2 of 2\nkube-sim: exiting with code 3"
        )
    );
    assert_eq!(condition(&failed, "Ready").unwrap().reason.as_deref(), Some("PodFailed"));
}

#[tokio::test]
async fn the_termination_message_policy_file_leaves_the_message_empty() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("file-policy", "run=20ms,exit=1");
    p.spec.as_mut().unwrap().containers[0].termination_message_policy = Some("File".into());
    create(&pods, &p).await;
    let failed = wait_for(&pods, "file-policy", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&failed).unwrap().message, None);
}

#[tokio::test]
async fn oom_killed_containers_exit_137() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("oom", "run=20ms,oom")).await;
    let failed = wait_for(&pods, "oom", "Failed", |p| phase(p) == "Failed").await;
    let ended = terminated(&failed).unwrap();
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (137, Some("OOMKilled")));
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_backs_off_forever() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("nopull", "pull=fail")).await;
    let first =
        wait_for(&pods, "nopull", "ErrImagePull", |p| waiting_reason(p).as_deref() == Some("ErrImagePull")).await;
    let message =
        first.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap().message.unwrap();
    assert!(message.contains("failed to pull and unpack image \"busybox:1.36\""), "{message}");
    let backoff =
        wait_for(&pods, "nopull", "ImagePullBackOff", |p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
            .await;
    assert_eq!(phase(&backoff), "Pending", "a pull failure never ends the pod by itself");
    // It keeps retrying: back to ErrImagePull after the back-off.
    wait_for(&pods, "nopull", "ErrImagePull again", |p| waiting_reason(p).as_deref() == Some("ErrImagePull")).await;
    let reasons = event_reasons(&client, "nopull").await;
    for expected in ["Pulling", "Failed", "BackOff"] {
        assert!(reasons.contains(&expected.to_owned()), "missing {expected} in {reasons:?}");
    }
}

#[tokio::test]
async fn malformed_image_names_are_invalid_image_name() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("badimage", "");
    p.spec.as_mut().unwrap().containers[0].image = Some("Registry.Example/UPPER:tag".into());
    create(&pods, &p).await;
    let stuck =
        wait_for(&pods, "badimage", "InvalidImageName", |p| waiting_reason(p).as_deref() == Some("InvalidImageName"))
            .await;
    assert_eq!(phase(&stuck), "Pending");
}

#[tokio::test]
async fn config_errors_block_the_container() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("configerr", "config-error");
    p.spec.as_mut().unwrap().containers[0].env = Some(vec![
        serde_json::from_value(json!({
            "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "db-credentials", "key": "password" } }
        }))
        .unwrap(),
    ]);
    create(&pods, &p).await;
    let stuck = wait_for(&pods, "configerr", "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let waiting = stuck.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(waiting.message.as_deref(), Some("secret \"db-credentials\" not found"));
}

#[tokio::test]
async fn a_behaviour_typo_fails_loudly_instead_of_passing_silently() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("typo", "run=1s,exitt=3")).await;
    let stuck = wait_for(&pods, "typo", "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let message =
        stuck.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap().message.unwrap();
    assert!(message.contains("\"exitt=3\""), "{message}");
}

#[tokio::test]
async fn the_behaviour_can_come_from_the_environment() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("from-env", "");
    p.metadata.annotations = None;
    p.spec.as_mut().unwrap().containers[0].env =
        Some(vec![serde_json::from_value(json!({ "name": "KUBE_SIM_BEHAVIOR", "value": "run=20ms,exit=7" })).unwrap()]);
    create(&pods, &p).await;
    let failed = wait_for(&pods, "from-env", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&failed).unwrap().exit_code, 7);
}

#[tokio::test]
async fn active_deadline_seconds_fail_the_pod_with_deadline_exceeded() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut p = pod("slow", "run=forever");
    p.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    create(&pods, &p).await;
    let failed = wait_for(&pods, "slow", "DeadlineExceeded", |p| phase(p) == "Failed").await;
    let status = failed.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(status.message.as_deref(), Some("Pod was active on the node longer than the specified deadline"));
    assert_eq!(terminated(&failed).unwrap().exit_code, 137);
    assert!(event_reasons(&client, "slow").await.contains(&"DeadlineExceeded".to_owned()));
}

#[tokio::test]
async fn eviction_fails_the_pod_with_a_disruption_target() {
    let (sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("evicted", "run=forever,evict=100ms")).await;
    let failed = wait_for(&pods, "evicted", "Evicted", |p| phase(p) == "Failed").await;
    let status = failed.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert!(status.message.as_deref().unwrap().starts_with("The node was low on resource: memory."));
    let disruption = condition(&failed, "DisruptionTarget").unwrap();
    assert_eq!((disruption.status.as_str(), disruption.reason.as_deref()), ("True", Some("TerminationByKubelet")));

    // The same through the in-process admin call.
    create(&pods, &pod("evicted-by-hand", "run=forever")).await;
    wait_for(&pods, "evicted-by-hand", "Running", |p| phase(p) == "Running").await;
    assert!(sim.evict_pod("default", "evicted-by-hand"));
    let failed = wait_for(&pods, "evicted-by-hand", "Evicted", |p| phase(p) == "Failed").await;
    assert_eq!(failed.status.unwrap().reason.as_deref(), Some("Evicted"));
}

#[tokio::test]
async fn a_lost_node_fails_and_then_removes_its_pods() {
    let (sim, client) = start(SimConfig { nodes: 1, ..fast() }).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("orphan", "run=forever")).await;
    let running = wait_for(&pods, "orphan", "Running", |p| phase(p) == "Running").await;
    let node = running.spec.unwrap().node_name.unwrap();
    assert!(sim.lose_node(&node));
    let unready =
        wait_for(&pods, "orphan", "unready", |p| condition(p, "Ready").is_some_and(|c| c.status == "False")).await;
    assert_eq!(phase(&unready), "Running", "the dead kubelet reports nothing more");
    let evicted = wait_for(&pods, "orphan", "taint eviction", |p| condition(p, "DisruptionTarget").is_some()).await;
    assert_eq!(condition(&evicted, "DisruptionTarget").unwrap().reason.as_deref(), Some("DeletionByTaintManager"));
    assert!(evicted.metadata.deletion_timestamp.is_some());
    common::wait_gone(&pods, "orphan").await;
    assert!(sim.node_names().is_empty());
}

/// GIVEN a pod whose container is due to exit a second after it starts, on a node with
/// a two-second eviction timeout
/// WHEN the node is lost while the container runs
/// THEN the exit is never reported (the kubelet is unreachable): the pod is still Running
/// when the taint manager deletes it, so whoever follows it learns the node was lost.
#[tokio::test]
async fn a_lost_nodes_kubelet_reports_no_exit_after_the_loss() {
    let config = SimConfig {
        nodes: 1,
        timings: kube_sim::Timings { pod_gc: Duration::from_secs(2), ..fast().timings },
        ..fast()
    };
    let (sim, client) = start(config).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(&pods, &pod("short", "run=1s")).await;
    let running = wait_for(&pods, "short", "Running", |p| phase(p) == "Running").await;
    assert!(sim.lose_node(&running.spec.unwrap().node_name.unwrap()));

    let evicted = wait_for(&pods, "short", "taint eviction", |p| condition(p, "DisruptionTarget").is_some()).await;
    assert_eq!(phase(&evicted), "Running", "no exit reported from the lost node: {:#?}", evicted.status);
    assert!(terminated(&evicted).is_none());
}

#[tokio::test]
async fn pods_too_big_for_any_node_stay_unschedulable_with_the_schedulers_message() {
    let config = SimConfig {
        nodes: 2,
        node_shape: NodeShape { cpu_millis: 1000, memory_bytes: 1 << 30, max_pods: 110 },
        ..fast()
    };
    let (sim, client) = start(config).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut big = pod("big", "run=forever");
    big.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "2", "memory": "64Mi" } })).unwrap());
    create(&pods, &big).await;
    let pending =
        wait_for(&pods, "big", "Unschedulable", |p| condition(p, "PodScheduled").is_some_and(|c| c.status == "False"))
            .await;
    let scheduled = condition(&pending, "PodScheduled").unwrap();
    assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        scheduled.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        )
    );
    assert_eq!(phase(&pending), "Pending");
    assert!(event_reasons(&client, "big").await.contains(&"FailedScheduling".to_owned()));

    // A node big enough arrives: the pod is scheduled.
    sim.add_node(NodeShape { cpu_millis: 4000, memory_bytes: 4 << 30, max_pods: 110 });
    wait_for(&pods, "big", "Running", |p| phase(p) == "Running").await;
}

#[tokio::test]
async fn node_selectors_are_respected() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("picky", "run=forever");
    p.spec.as_mut().unwrap().node_selector =
        Some([("topology.kubernetes.io/zone".to_owned(), "sim-zone-c".to_owned())].into());
    create(&pods, &p).await;
    let running = wait_for(&pods, "picky", "Running", |p| phase(p) == "Running").await;
    assert_eq!(running.spec.unwrap().node_name.as_deref(), Some("kube-sim-node-3"));

    let mut nowhere = pod("nowhere", "run=forever");
    nowhere.spec.as_mut().unwrap().node_selector = Some([("gpu".to_owned(), "yes".to_owned())].into());
    create(&pods, &nowhere).await;
    let pending = wait_for(&pods, "nowhere", "Unschedulable", |p| {
        condition(p, "PodScheduled").is_some_and(|c| c.status == "False")
    })
    .await;
    assert!(
        condition(&pending, "PodScheduled")
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("3 node(s) didn't match Pod's node affinity/selector")
    );
}

#[tokio::test]
async fn the_autoscaler_adds_a_node_for_pending_pods_and_removes_it_when_idle() {
    let shape = NodeShape { cpu_millis: 1000, memory_bytes: 2 << 30, max_pods: 110 };
    let config = SimConfig {
        nodes: 1,
        node_shape: shape,
        autoscaler: Some(Autoscaler {
            scale_up_delay: Duration::from_millis(200),
            scale_down_idle: Duration::from_millis(300),
            max_nodes: 3,
            shape,
        }),
        ..fast()
    };
    let (sim, client) = start(config).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sized = |name: &str, behavior: &str| {
        let mut p = pod(name, behavior);
        p.spec.as_mut().unwrap().containers[0].resources =
            Some(serde_json::from_value(json!({ "requests": { "cpu": "800m" } })).unwrap());
        p
    };
    create(&pods, &sized("first", "run=forever")).await;
    wait_for(&pods, "first", "Running", |p| phase(p) == "Running").await;
    create(&pods, &sized("second", "run=300ms")).await;
    wait_for(&pods, "second", "Unschedulable", |p| condition(p, "PodScheduled").is_some_and(|c| c.status == "False"))
        .await;
    let running = wait_for(&pods, "second", "Running after scale-up", |p| phase(p) == "Running").await;
    let node = running.spec.unwrap().node_name.unwrap();
    assert!(node.starts_with("kube-sim-auto-"), "{node}");
    assert!(event_reasons(&client, "second").await.contains(&"TriggeredScaleUp".to_owned()));
    wait_for(&pods, "second", "Succeeded", |p| phase(p) == "Succeeded").await;
    for _ in 0..100 {
        if !sim.node_names().contains(&node) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the idle autoscaled node {node} was never removed");
}

/// GIVEN a pod with an init container of its own
/// WHEN it starts
/// THEN the init container runs and completes first (exit 0), then the pod's container
/// runs, and the pod is Initialized.
#[tokio::test]
async fn a_pods_own_init_containers_complete_before_its_containers_start() {
    let (_sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut p = pod("migrated", "run=forever");
    p.spec.as_mut().unwrap().init_containers =
        Some(vec![serde_json::from_value(json!({ "name": "migrate", "image": "busybox:1.36" })).unwrap()]);
    create(&pods, &p).await;
    let initializing =
        wait_for(&pods, "migrated", "PodInitializing", |p| waiting_reason(p).as_deref() == Some("PodInitializing"))
            .await;
    assert_eq!(phase(&initializing), "Pending");
    let running = wait_for(&pods, "migrated", "Running", |p| phase(p) == "Running").await;
    let init = &running.status.as_ref().unwrap().init_container_statuses.as_ref().unwrap()[0];
    let ended = init.state.clone().unwrap().terminated.unwrap();
    assert_eq!((init.name.as_str(), ended.exit_code, ended.reason.as_deref()), ("migrate", 0, Some("Completed")));
    let initialized = condition(&running, "Initialized").unwrap();
    assert_eq!((initialized.status.as_str(), initialized.reason.as_deref()), ("True", None));
    assert_eq!(condition(&running, "Ready").unwrap().status, "True");
}

/// The creation log line of the pod `name`, as `GET /kube-sim/created` serves it.
async fn log_line(client: &kube::Client, name: &str) -> serde_json::Value {
    let (code, log) = common::raw(client, "GET", "/kube-sim/created", None).await;
    assert_eq!(code, 200, "{log}");
    let line = log.as_array().unwrap().iter().find(|line| line["name"] == name);
    line.unwrap_or_else(|| panic!("{name} is not in the creation log: {log:#}")).clone()
}

fn time(line: &serde_json::Value, field: &str) -> Option<jiff::Timestamp> {
    line.get(field).map(|t| t.as_str().unwrap_or_else(|| panic!("{field}: {t}")).parse().unwrap())
}

/// GIVEN pods that complete, are deleted while running, are deleted before they are
/// scheduled, and run on
/// WHEN their lives unfold
/// THEN the creation log tells when each first ran (`runningAt`) and when it stopped
/// holding capacity (`endedAt`: a terminal phase, or removal), in order, and leaves out
/// what has not happened yet.
#[tokio::test]
async fn the_creation_log_tells_when_pods_ran_and_ended() {
    let (sim, client) = start(fast()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(&pods, &pod("completes", "run=100ms")).await;
    create(&pods, &pod("deleted", "run=forever")).await;
    create(&pods, &pod("runs-on", "run=forever")).await;
    let mut big = pod("never-scheduled", "run=forever");
    big.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "1000", "memory": "64Mi" } })).unwrap());
    create(&pods, &big).await;

    wait_for(&pods, "runs-on", "Running", |p| phase(p) == "Running").await;
    let running = log_line(&client, "runs-on").await;
    assert!(time(&running, "runningAt").is_some(), "{running:#}");
    assert!(running.get("endedAt").is_none(), "a running pod has not ended: {running:#}");

    wait_for(&pods, "deleted", "Running", |p| phase(p) == "Running").await;
    let before_delete = jiff::Timestamp::now();
    pods.delete("deleted", &Default::default()).await.unwrap();
    common::wait_gone(&pods, "deleted").await;
    wait_for(&pods, "completes", "Succeeded", |p| phase(p) == "Succeeded").await;
    wait_for(&pods, "never-scheduled", "Unschedulable", |p| condition(p, "PodScheduled").is_some()).await;
    pods.delete("never-scheduled", &Default::default()).await.unwrap();
    common::wait_gone(&pods, "never-scheduled").await;

    for name in ["completes", "deleted"] {
        let line = log_line(&client, name).await;
        let created = time(&line, "createdAt").unwrap();
        let ran = time(&line, "runningAt").unwrap_or_else(|| panic!("{name} ran: {line:#}"));
        let ended = time(&line, "endedAt").unwrap_or_else(|| panic!("{name} ended: {line:#}"));
        assert!(created <= ran && ran <= ended, "{name}: {line:#}");
    }
    let deleted = time(&log_line(&client, "deleted").await, "endedAt").unwrap();
    assert!(deleted >= before_delete, "the deleted pod ended when it was deleted, not before");
    let unscheduled = log_line(&client, "never-scheduled").await;
    assert!(unscheduled.get("runningAt").is_none(), "it never ran: {unscheduled:#}");
    assert!(time(&unscheduled, "createdAt").unwrap() <= time(&unscheduled, "endedAt").unwrap());

    // The same through the in-process call.
    let log = sim.created_pods();
    let completes = log.iter().find(|line| line.name == "completes").unwrap();
    assert!(completes.running_at.is_some() && completes.ended_at.is_some());
    let runs_on = log.iter().find(|line| line.name == "runs-on").unwrap();
    assert!(runs_on.running_at.is_some() && runs_on.ended_at.is_none());
}
