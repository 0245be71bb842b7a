//! The simulated control plane and kubelets, in the spirit of kwok's stages: each pod
//! moves through scheduling, image pull, running and termination on timers, as its
//! behaviour (see `behavior.rs`) says. Status fields are written as the kubelet and
//! the controllers write them, so a client reading them cannot tell the difference.
//!
//! Once a client writes a pod's status through the `status` subresource, the simulated
//! kubelet stops driving that pod (as with kwok, the outside writer is now its kubelet):
//! no more starts, exits, evictions or deadlines. Deletion still works: the pod turns
//! Terminating and goes away after the termination delay, its status left as written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP,
    PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rand::Rng;

use crate::behavior::{Behavior, Pull, Runtime, Sidecar, is_valid_image_reference};
use crate::cluster::{Key, State, now, uid_of};
use crate::config::NodeShape;
use crate::inject::{INIT_NAME, SIDECAR_NAME};
use crate::units::{format_bytes, format_millicores, parse_quantity};

/// Something the control plane will do at a given time. Pod actions carry the pod's
/// uid so that a timer never acts on a later pod of the same name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Action {
    Schedule(Key, String),
    Start(Key, String),
    Pull(Key, String),
    PullBackOff(Key, String),
    Finish(Key, String),
    Deadline(Key, String),
    Evict(Key, String),
    Kill(Key, String),
    PodGc(Key, String),
    ScaleUp,
    ScaleDown(String),
    TaintEvict(String),
    /// The injected init container exits.
    InitExit(Key, String),
    /// The injected sidecar is OOMKilled.
    SidecarOom(Key, String),
    /// The kubelet tries to mount the pod's volumes again.
    MountRetry(Key, String),
    /// Someone outside deletes the pod through the API.
    ExternalDelete(Key, String),
    /// The eviction manager finds the container over its ephemeral-storage limit.
    EvictStorage(Key, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Unscheduled,
    /// Bound; the pod's own first container has not started yet.
    Waiting,
    /// The pod's own first container has started.
    Running,
    /// The pod reached a terminal phase.
    Finished,
}

/// What the simulation knows about a pod beyond its API object.
#[derive(Debug)]
pub(crate) struct PodSim {
    pub behavior: Result<Behavior, String>,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub node: Option<String>,
    pub holds_resources: bool,
    pub stage: Stage,
    /// What each container wrote, by container name.
    pub logs: BTreeMap<String, Vec<(jiff::Timestamp, String)>>,
    /// The pod's own first container (injected containers come after it).
    pub main: String,
    pub pull_failures: u32,
    pub mount_failures: u32,
    pub scale_up_reported: bool,
    /// A client wrote the status through the `status` subresource: the simulated
    /// kubelet no longer drives this pod.
    pub driven_elsewhere: bool,
}

impl PodSim {
    pub fn new(pod: &Pod, behavior: Result<Behavior, String>) -> Self {
        let (cpu_millis, memory_bytes) = requests(pod);
        Self {
            behavior,
            cpu_millis,
            memory_bytes,
            node: None,
            holds_resources: false,
            stage: Stage::Unscheduled,
            logs: BTreeMap::new(),
            main: own_container(pod).name,
            pull_failures: 0,
            mount_failures: 0,
            scale_up_reported: false,
            driven_elsewhere: false,
        }
    }

    /// A line of the pod's own first container.
    fn log(&mut self, line: String) {
        let main = self.main.clone();
        self.log_to(&main, line);
    }

    fn log_to(&mut self, container: &str, line: String) {
        self.logs.entry(container.to_owned()).or_default().push((jiff::Timestamp::now(), line));
    }

    fn main_logs(&self) -> &[(jiff::Timestamp, String)] {
        self.logs.get(&self.main).map_or(&[], Vec::as_slice)
    }

    fn sidecar(&self) -> Option<Sidecar> {
        self.behavior.as_ref().ok().and_then(|b| b.sidecar)
    }

    /// Whether `name` is the injected sidecar, which lives its own life; every other
    /// regular container does what the pod's first container does.
    fn is_sidecar(&self, name: &str) -> bool {
        self.sidecar().is_some() && name == SIDECAR_NAME
    }
}

/// The scheduler's view of a pod's size: the sum of its containers' requests, or the
/// largest init container's when that is larger (the scheduler's
/// computePodResourceRequest).
fn requests(pod: &Pod) -> (i64, i64) {
    let request = |container: &Container, name: &str| {
        let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref());
        requests.and_then(|r| r.get(name)).and_then(|q| parse_quantity(&q.0).ok()).unwrap_or(0.0)
    };
    let spec = pod.spec.as_ref();
    let total = |name: &str| {
        let sum: f64 = spec.iter().flat_map(|s| s.containers.iter()).map(|c| request(c, name)).sum();
        let init = spec.iter().flat_map(|s| s.init_containers.iter().flatten()).map(|c| request(c, name));
        init.fold(sum, f64::max)
    };
    ((total("cpu") * 1000.0).ceil() as i64, total("memory").ceil() as i64)
}

/// A simulated node and what is bound to it.
#[derive(Debug)]
pub(crate) struct SimNode {
    pub object: Arc<Node>,
    pub shape: NodeShape,
    pub used_cpu: i64,
    pub used_memory: i64,
    pub pods: i64,
    pub autoscaled: bool,
    pub ready: bool,
    pub idle_since: Option<Instant>,
}

impl SimNode {
    fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.object.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

fn node_labels(name: &str, index: u32, autoscaled: bool) -> BTreeMap<String, String> {
    let zone = ["a", "b", "c"][(index.saturating_sub(1) % 3) as usize];
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("node.kubernetes.io/instance-type".to_owned(), "sim.xlarge".to_owned()),
        ("topology.kubernetes.io/zone".to_owned(), format!("sim-zone-{zone}")),
    ]);
    if autoscaled {
        labels.insert("kube-sim/autoscaled".to_owned(), "true".to_owned());
    }
    labels
}

fn hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
}

fn condition(type_: &str, status: bool, reason: Option<&str>, message: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
        last_transition_time: Some(now()),
        ..Default::default()
    }
}

/// Sets a condition, keeping `lastTransitionTime` when its status does not change.
fn set_condition(status: &mut PodStatus, new: PodCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let transition = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *existing = PodCondition { last_transition_time: transition, ..new };
        }
        None => conditions.push(new),
    }
}

fn status_mut(pod: &mut Pod) -> &mut PodStatus {
    pod.status.get_or_insert_with(PodStatus::default)
}

fn containers(pod: &Pod) -> Vec<Container> {
    pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default()
}

fn init_containers(pod: &Pod) -> Vec<Container> {
    pod.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default()
}

/// The pod's own first container: what its behaviour, logs, exit code and termination
/// message are about. Injected containers are appended, so they never take its place.
fn own_container(pod: &Pod) -> Container {
    containers(pod).into_iter().next().unwrap_or_default()
}

fn field_path(container: &Container, init: bool) -> String {
    format!("spec.{}{{{}}}", if init { "initContainers" } else { "containers" }, container.name)
}

pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn image_id(image: &str) -> String {
    let repository = image.split('@').next().unwrap_or(image);
    let last_slash = repository.rfind('/').map_or(0, |i| i + 1);
    let name = match repository[last_slash..].rfind(':') {
        Some(i) => &repository[..last_slash + i],
        None => repository,
    };
    let qualified = if name.contains('/') { name.to_owned() } else { format!("docker.io/library/{name}") };
    // A stable digest per image, as a registry would give.
    let mut digest = String::new();
    let mut seed =
        image.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    while digest.len() < 64 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        digest.push_str(&format!("{seed:016x}"));
    }
    format!("{qualified}@sha256:{}", &digest[..64])
}

/// The image ID dockershim reports: the repo digest, `docker-pullable://` prefixed.
fn docker_image_id(image: &str) -> String {
    let id = image_id(image);
    let short = id.strip_prefix("docker.io/library/").or_else(|| id.strip_prefix("docker.io/")).unwrap_or(&id);
    format!("docker-pullable://{short}")
}

// ---- container statuses --------------------------------------------------------

fn regular_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name)
}

fn init_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status.as_ref()?.init_container_statuses.as_ref()?.iter().find(|c| c.name == name)
}

fn state_of(status: Option<&ContainerStatus>) -> ContainerState {
    status.and_then(|s| s.state.clone()).unwrap_or_default()
}

fn is_running(status: Option<&ContainerStatus>) -> bool {
    state_of(status).running.is_some()
}

fn is_waiting(status: Option<&ContainerStatus>) -> bool {
    let state = state_of(status);
    state.running.is_none() && state.terminated.is_none()
}

fn completed(status: Option<&ContainerStatus>) -> bool {
    state_of(status).terminated.is_some_and(|t| t.exit_code == 0)
}

/// Replaces (or adds) a regular container's status; the kubelet keeps them sorted by
/// container name (pkg/kubelet/types SortedContainerStatuses).
fn put_status(pod: &mut Pod, new: ContainerStatus) {
    let statuses = status_mut(pod).container_statuses.get_or_insert_with(Vec::new);
    statuses.retain(|s| s.name != new.name);
    statuses.push(new);
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Replaces (or adds) an init container's status; these stay in spec order
/// (pkg/kubelet/types SortInitContainerStatuses).
fn put_init_status(pod: &mut Pod, new: ContainerStatus) {
    let order: Vec<String> = init_containers(pod).into_iter().map(|c| c.name).collect();
    let statuses = status_mut(pod).init_container_statuses.get_or_insert_with(Vec::new);
    statuses.retain(|s| s.name != new.name);
    statuses.push(new);
    statuses.sort_by_key(|s| order.iter().position(|n| *n == s.name));
}

fn waiting_status(container: &Container, reason: &str, message: Option<&str>) -> ContainerStatus {
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message: message.map(str::to_owned),
            }),
            ..Default::default()
        }),
        last_state: Some(ContainerState::default()),
        ..Default::default()
    }
}

/// A container the runtime just started; init containers are never `ready`.
fn running_status(container: &Container, init: bool) -> ContainerStatus {
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: image_id(container.image.as_deref().unwrap_or_default()),
        container_id: Some(format!("containerd://{}", hex(64))),
        ready: !init,
        restart_count: 0,
        started: Some(true),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(now()) }),
            ..Default::default()
        }),
        last_state: Some(ContainerState::default()),
        ..Default::default()
    }
}

/// A running container's status once it exited with `exit_code`.
fn ended(status: &ContainerStatus, exit_code: i32, reason: &str, message: Option<String>) -> ContainerStatus {
    let started_at = state_of(Some(status)).running.and_then(|r| r.started_at);
    ContainerStatus {
        ready: false,
        started: Some(false),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(reason.to_owned()),
                message,
                started_at,
                finished_at: Some(now()),
                container_id: status.container_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..status.clone()
    }
}

/// What the status manager reports for a container that never ran when the pod ends.
fn unknown_end(status: &ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        ready: false,
        started: Some(false),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some("The container could not be located when the pod was terminated".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..status.clone()
    }
}

/// How a container ends when the pod is stopped: exit code, reason, message.
type Ending<'a> = &'a dyn Fn(&str) -> (i32, &'static str, Option<String>);

/// Ends every container still going, as the kubelet's kill leaves them and the status
/// manager's TerminatePod completes them (pkg/kubelet/status/status_manager.go): a
/// running container reports `end(name)`; a regular container that never ran reports
/// `ContainerStatusUnknown` once the pod has initialized (hasPodInitialized) and stays
/// waiting otherwise; an init container that never ran reports `ContainerStatusUnknown`
/// unless it is part of the waiting suffix (initializedContainers keeps the first).
fn terminate_all(pod: &mut Pod, end: Ending<'_>) {
    let inits = init_containers(pod);
    let initialized = inits.is_empty()
        || inits.last().is_some_and(|c| completed(init_status(pod, &c.name)))
        || containers(pod).iter().any(|c| !is_waiting(regular_status(pod, &c.name)));
    let last_started = inits.iter().rposition(|c| !is_waiting(init_status(pod, &c.name))).unwrap_or(0);
    for (index, container) in inits.iter().enumerate() {
        let Some(status) = init_status(pod, &container.name).cloned() else { continue };
        let state = state_of(Some(&status));
        if state.running.is_some() {
            let (code, reason, message) = end(&container.name);
            put_init_status(pod, ended(&status, code, reason, message));
        } else if state.terminated.is_none() && index <= last_started {
            put_init_status(pod, unknown_end(&status));
        }
    }
    for container in containers(pod) {
        let Some(status) = regular_status(pod, &container.name).cloned() else { continue };
        let state = state_of(Some(&status));
        if state.running.is_some() {
            let (code, reason, message) = end(&container.name);
            put_status(pod, ended(&status, code, reason, message));
        } else if state.terminated.is_none() && initialized {
            put_status(pod, unknown_end(&status));
        }
    }
}

// ---- what the kubelet derives from container states ----------------------------

/// The phase the kubelet computes from container states (pkg/kubelet/kubelet_pods.go
/// getPhase) for a pod whose containers are never restarted.
fn derived_phase(pod: &Pod) -> &'static str {
    let mut pending_init = 0;
    for container in init_containers(pod) {
        let state = state_of(init_status(pod, &container.name));
        match state.terminated {
            Some(t) if t.exit_code == 0 => {}
            Some(_) => return "Failed",
            None => pending_init += 1,
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for container in containers(pod) {
        let Some(status) = regular_status(pod, &container.name) else {
            unknown += 1;
            continue;
        };
        let state = state_of(Some(status));
        if state.running.is_some() {
            running += 1;
        } else if let Some(terminated) = state.terminated {
            stopped += 1;
            if terminated.exit_code == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    let any_started = running + stopped > 0;
    if (pending_init > 0 && !any_started) || waiting > 0 {
        "Pending"
    } else if running > 0 && unknown == 0 {
        "Running"
    } else if running == 0 && stopped > 0 && unknown == 0 {
        if stopped == succeeded { "Succeeded" } else { "Failed" }
    } else {
        "Pending"
    }
}

/// The Initialized, ContainersReady and Ready conditions for `phase`, as
/// pkg/kubelet/status/generate.go words them.
fn derive_conditions(pod: &mut Pod, phase: &str) {
    let inits = init_containers(pod);
    let regular = containers(pod);
    if !inits.is_empty() {
        let any_started = regular.iter().any(|c| !is_waiting(regular_status(pod, &c.name)));
        let unknown: Vec<&str> =
            inits.iter().filter(|c| init_status(pod, &c.name).is_none()).map(|c| c.name.as_str()).collect();
        let incomplete: Vec<&str> = inits
            .iter()
            .filter(|c| init_status(pod, &c.name).is_some_and(|s| !completed(Some(s))))
            .map(|c| c.name.as_str())
            .collect();
        let mut messages = Vec::new();
        if !unknown.is_empty() {
            messages.push(format!("containers with unknown status: [{}]", unknown.join(" ")));
        }
        if !incomplete.is_empty() {
            messages.push(format!("containers with incomplete status: [{}]", incomplete.join(" ")));
        }
        let initialized = if phase == "Succeeded" && unknown.is_empty() {
            condition("Initialized", true, Some("PodCompleted"), None)
        } else if any_started || messages.is_empty() {
            condition("Initialized", true, None, None)
        } else {
            condition("Initialized", false, Some("ContainersNotInitialized"), Some(&messages.join(", ")))
        };
        set_condition(status_mut(pod), initialized);
    }
    let ready = match phase {
        "Succeeded" => condition("ContainersReady", false, Some("PodCompleted"), None),
        "Failed" => condition("ContainersReady", false, Some("PodFailed"), None),
        _ => {
            let unknown: Vec<&str> =
                regular.iter().filter(|c| regular_status(pod, &c.name).is_none()).map(|c| c.name.as_str()).collect();
            let unready: Vec<&str> = regular
                .iter()
                .filter(|c| regular_status(pod, &c.name).is_some_and(|s| !s.ready))
                .map(|c| c.name.as_str())
                .collect();
            let mut messages = Vec::new();
            if !unknown.is_empty() {
                messages.push(format!("containers with unknown status: [{}]", unknown.join(" ")));
            }
            if !unready.is_empty() {
                messages.push(format!("containers with unready status: [{}]", unready.join(" ")));
            }
            if messages.is_empty() {
                condition("ContainersReady", true, None, None)
            } else {
                condition("ContainersReady", false, Some("ContainersNotReady"), Some(&messages.join(", ")))
            }
        }
    };
    let status = status_mut(pod);
    set_condition(status, PodCondition { type_: "Ready".into(), ..ready.clone() });
    set_condition(status, ready);
    if matches!(phase, "Succeeded" | "Failed") {
        // The sandbox of a finished pod is torn down.
        set_condition(status, condition("PodReadyToStartContainers", false, None, None));
    }
}

/// Writes the phase and conditions the kubelet derives from the container states;
/// returns whether the pod is now terminal.
fn derive(pod: &mut Pod) -> bool {
    let phase = derived_phase(pod);
    status_mut(pod).phase = Some(phase.to_owned());
    derive_conditions(pod, phase);
    matches!(phase, "Succeeded" | "Failed")
}

/// The last 80 lines, at most 2048 bytes, as `FallbackToLogsOnError` takes them.
fn log_tail_message(logs: &[(jiff::Timestamp, String)]) -> String {
    let start = logs.len().saturating_sub(80);
    let mut text = logs[start..].iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
    if text.len() > 2048 {
        let mut cut = text.len() - 2048;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text[cut..].to_owned();
    }
    text
}

impl State {
    pub(crate) fn fire_due(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|t| t.0.due <= now) {
            if let Some(timer) = self.timers.pop() {
                self.apply(timer.0.action);
            }
        }
    }

    fn apply(&mut self, action: Action) {
        // A lost node's kubelet reports nothing more: the containers it ran may start,
        // pull, exit or be killed, the API server never hears of it. Its pods keep their
        // last status until the taint manager and the pod garbage collector act.
        let kubelet = match &action {
            Action::Start(key, uid)
            | Action::Pull(key, uid)
            | Action::PullBackOff(key, uid)
            | Action::Finish(key, uid)
            | Action::Deadline(key, uid)
            | Action::Evict(key, uid)
            | Action::InitExit(key, uid)
            | Action::SidecarOom(key, uid)
            | Action::MountRetry(key, uid)
            | Action::EvictStorage(key, uid) => Some((key, uid, true)),
            Action::Kill(key, uid) => Some((key, uid, false)),
            _ => None,
        };
        if let Some((key, uid, drives_status)) = kubelet {
            if self.kubelet_gone(key) {
                return;
            }
            // A pod whose status a client writes is no longer the simulated kubelet's.
            if drives_status && self.sim(key, uid).is_some_and(|s| s.driven_elsewhere) {
                return;
            }
        }
        match action {
            Action::Schedule(key, uid) => self.try_schedule(&key, &uid),
            Action::Start(key, uid) => self.start(&key, &uid),
            Action::Pull(key, uid) => self.pull(&key, &uid),
            Action::PullBackOff(key, uid) => self.pull_back_off(&key, &uid),
            Action::Finish(key, uid) => self.finish(&key, &uid, None),
            Action::Deadline(key, uid) => self.deadline(&key, &uid),
            Action::Evict(key, uid) => {
                self.evict(&key, &uid);
            }
            Action::Kill(key, uid) => self.kill(&key, &uid),
            Action::PodGc(key, uid) => self.pod_gc(&key, &uid),
            Action::ScaleUp => self.scale_up(),
            Action::ScaleDown(node) => self.scale_down(&node),
            Action::TaintEvict(node) => self.taint_evict(&node),
            Action::InitExit(key, uid) => self.init_exit(&key, &uid),
            Action::SidecarOom(key, uid) => self.sidecar_oom(&key, &uid),
            Action::MountRetry(key, uid) => self.mount_retry(&key, &uid),
            Action::ExternalDelete(key, uid) => self.external_delete(&key, &uid),
            Action::EvictStorage(key, uid) => self.evict_storage(&key, &uid),
        }
    }

    /// Whether the pod is bound to a node that is lost (NotReady) or gone.
    fn kubelet_gone(&self, key: &Key) -> bool {
        let node = self.pods.get(key).and_then(|e| e.sim.node.as_ref());
        node.is_some_and(|node| self.nodes.get(node).is_none_or(|n| !n.ready))
    }

    fn sim(&self, key: &Key, uid: &str) -> Option<&PodSim> {
        self.pods.get(key).filter(|e| uid_of(&e.pod) == uid).map(|e| &e.sim)
    }

    fn live_pod(&self, key: &Key, uid: &str) -> Option<&Pod> {
        self.pods.get(key).filter(|e| uid_of(&e.pod) == uid).map(|e| e.pod.as_ref())
    }

    /// After the kubelet changed container states: the derived phase and conditions,
    /// and when the pod is over, its node resources freed.
    fn settle(&mut self, pod: &mut Pod, sim: &mut PodSim) -> bool {
        let terminal = derive(pod);
        if terminal {
            sim.stage = Stage::Finished;
            self.release(sim);
        }
        terminal
    }

    // ---- scheduler -------------------------------------------------------------

    fn try_schedule(&mut self, key: &Key, uid: &str) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        if entry.sim.stage != Stage::Unscheduled || entry.pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        let selector = entry.pod.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default();
        let (cpu, memory) = (entry.sim.cpu_millis, entry.sim.memory_bytes);
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        let mut best: Option<(i64, String)> = None;
        for (name, node) in &self.nodes {
            let reason = if !node.ready {
                Some("node(s) had untolerated taint {node.kubernetes.io/unreachable: }")
            } else if !selector.iter().all(|(k, v)| node.labels().get(k) == Some(v)) {
                Some("node(s) didn't match Pod's node affinity/selector")
            } else if node.pods >= node.shape.max_pods {
                Some("Too many pods")
            } else if node.used_cpu + cpu > node.shape.cpu_millis {
                Some("Insufficient cpu")
            } else if node.used_memory + memory > node.shape.memory_bytes {
                Some("Insufficient memory")
            } else {
                None
            };
            match reason {
                Some(reason) => *reasons.entry(reason).or_default() += 1,
                None => {
                    // Least allocated first, as the default scoring spreads pods.
                    let free = node.shape.cpu_millis - node.used_cpu;
                    if best.as_ref().is_none_or(|(f, _)| free > *f) {
                        best = Some((free, name.clone()));
                    }
                }
            }
        }
        match best {
            Some((_, node)) => self.bind(key, uid, &node),
            None => self.mark_unschedulable(key, uid, &reasons),
        }
    }

    fn bind(&mut self, key: &Key, uid: &str, node_name: &str) {
        let Some(node) = self.nodes.get_mut(node_name) else {
            return;
        };
        let Some(entry) = self.pods.get_mut(key) else {
            return;
        };
        node.used_cpu += entry.sim.cpu_millis;
        node.used_memory += entry.sim.memory_bytes;
        node.pods += 1;
        node.idle_since = None;
        self.unschedulable.retain(|k| k != key);
        let message = format!("Successfully assigned {}/{} to {node_name}", key.0, key.1);
        self.modify_pod(key, uid, |state, pod, sim| {
            sim.node = Some(node_name.to_owned());
            sim.holds_resources = true;
            sim.stage = Stage::Waiting;
            pod.spec.get_or_insert_with(Default::default).node_name = Some(node_name.to_owned());
            set_condition(status_mut(pod), condition("PodScheduled", true, None, None));
            state.record_event(pod, "Normal", "Scheduled", &message, "default-scheduler", None);
        });
        self.at(self.config.timings.start, Action::Start(key.clone(), uid.to_owned()));
    }

    fn mark_unschedulable(&mut self, key: &Key, uid: &str, reasons: &BTreeMap<&str, usize>) {
        let total = self.nodes.len();
        let message = if total == 0 {
            "no nodes available to schedule pods".to_owned()
        } else {
            let mut listed: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            listed.sort();
            let mut preemption: BTreeMap<&str, usize> = BTreeMap::new();
            for (reason, n) in reasons {
                let verdict = if reason.starts_with("Insufficient") || *reason == "Too many pods" {
                    "No preemption victims found for incoming pod"
                } else {
                    "Preemption is not helpful for scheduling"
                };
                *preemption.entry(verdict).or_default() += n;
            }
            let mut preempt: Vec<String> = preemption.iter().map(|(r, n)| format!("{n} {r}")).collect();
            preempt.sort();
            format!(
                "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
                listed.join(", "),
                preempt.join(", ")
            )
        };
        if !self.unschedulable.contains(key) {
            self.unschedulable.push(key.clone());
        }
        let unchanged = self.live_pod(key, uid).is_some_and(|pod| {
            pod.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(message.as_str())
            })
        });
        if !unchanged {
            self.modify_pod(key, uid, |state, pod, _| {
                set_condition(status_mut(pod), condition("PodScheduled", false, Some("Unschedulable"), Some(&message)));
                state.record_event(pod, "Warning", "FailedScheduling", &message, "default-scheduler", None);
            });
        }
        self.consider_scale_up(key, uid, reasons);
    }

    pub(crate) fn retry_unschedulable(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            let uid = self.pods.get(&key).map(|e| uid_of(&e.pod)).unwrap_or_default();
            self.try_schedule(&key, &uid);
        }
    }

    /// Frees the node resources a pod held (it ended, or it is gone).
    pub(crate) fn release(&mut self, sim: &mut PodSim) {
        if !std::mem::take(&mut sim.holds_resources) {
            return;
        }
        let Some(node) = sim.node.as_ref().and_then(|n| self.nodes.get_mut(n)) else {
            return;
        };
        node.used_cpu -= sim.cpu_millis;
        node.used_memory -= sim.memory_bytes;
        node.pods -= 1;
        if node.autoscaled && node.pods == 0 {
            node.idle_since = Some(Instant::now());
            let name = node.object.metadata.name.clone().unwrap_or_default();
            if let Some(autoscaler) = &self.config.autoscaler {
                self.at(autoscaler.scale_down_idle, Action::ScaleDown(name));
            }
        }
    }

    // ---- autoscaler ------------------------------------------------------------

    fn consider_scale_up(&mut self, key: &Key, uid: &str, reasons: &BTreeMap<&str, usize>) {
        let Some(autoscaler) = self.config.autoscaler.clone() else {
            return;
        };
        let Some(entry) = self.pods.get(key) else {
            return;
        };
        let template_labels = node_labels("template", 0, true);
        let selector = entry.pod.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default();
        let fits = entry.sim.cpu_millis <= autoscaler.shape.cpu_millis
            && entry.sim.memory_bytes <= autoscaler.shape.memory_bytes
            && selector.iter().all(|(k, v)| k == "kubernetes.io/hostname" || template_labels.get(k) == Some(v));
        let autoscaled = self.nodes.values().filter(|n| n.autoscaled).count();
        if fits && autoscaled < autoscaler.max_nodes {
            if !self.scale_up_pending {
                self.scale_up_pending = true;
                self.at(autoscaler.scale_up_delay, Action::ScaleUp);
                let message = format!(
                    "pod triggered scale-up: [{{kube-sim-autoscaled {autoscaled}->{} (max: {})}}]",
                    autoscaled + 1,
                    autoscaler.max_nodes
                );
                self.modify_pod(key, uid, |state, pod, _| {
                    state.record_event(pod, "Normal", "TriggeredScaleUp", &message, "cluster-autoscaler", None);
                });
            }
        } else if !entry.sim.scale_up_reported {
            let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let message = format!("pod didn't trigger scale-up: {}", why.join(", "));
            self.modify_pod(key, uid, |state, pod, sim| {
                sim.scale_up_reported = true;
                state.record_event(pod, "Normal", "NotTriggerScaleUp", &message, "cluster-autoscaler", None);
            });
        }
    }

    fn scale_up(&mut self) {
        self.scale_up_pending = false;
        if let Some(autoscaler) = self.config.autoscaler.clone() {
            let name = self.add_node(autoscaler.shape, true);
            // A new node that never gets a pod is removed like any idle one.
            self.at(autoscaler.scale_down_idle, Action::ScaleDown(name));
        }
        self.retry_unschedulable();
    }

    fn scale_down(&mut self, name: &str) {
        let Some(autoscaler) = &self.config.autoscaler else {
            return;
        };
        let idle_long_enough = self
            .nodes
            .get(name)
            .and_then(|n| n.idle_since)
            .is_some_and(|since| since.elapsed() >= autoscaler.scale_down_idle);
        if idle_long_enough {
            self.delete_node(name);
        }
    }

    // ---- nodes -----------------------------------------------------------------

    /// Adds a Ready node of `shape`; returns its name.
    pub(crate) fn add_node(&mut self, shape: NodeShape, autoscaled: bool) -> String {
        self.node_counter += 1;
        let index = self.node_counter;
        let name = if autoscaled { format!("kube-sim-auto-{index}") } else { format!("kube-sim-node-{index}") };
        let rv = self.next_rv();
        let resources = BTreeMap::from([
            ("cpu".to_owned(), Quantity(format_millicores(shape.cpu_millis))),
            ("memory".to_owned(), Quantity(format_bytes(shape.memory_bytes))),
            ("pods".to_owned(), Quantity(shape.max_pods.to_string())),
        ]);
        let created = now();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: Some(crate::cluster::new_uid()),
                resource_version: Some(rv.to_string()),
                creation_timestamp: Some(created.clone()),
                labels: Some(node_labels(&name, index, autoscaled)),
                ..Default::default()
            },
            spec: Some(NodeSpec { provider_id: Some(format!("kube-sim://{name}")), ..Default::default() }),
            status: Some(NodeStatus {
                capacity: Some(resources.clone()),
                allocatable: Some(resources),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some("kubelet is posting ready status".into()),
                    last_heartbeat_time: Some(created.clone()),
                    last_transition_time: Some(created),
                }]),
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: format!("10.0.{}.{}", index / 250, index % 250 + 1),
                    },
                    NodeAddress { type_: "Hostname".into(), address: name.clone() },
                ]),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    kubelet_version: "v1.33.0".into(),
                    container_runtime_version: "containerd://2.0.0".into(),
                    os_image: "kube-sim".into(),
                    kernel_version: "6.1.0".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let sim_node = SimNode {
            object: Arc::new(node),
            shape,
            used_cpu: 0,
            used_memory: 0,
            pods: 0,
            autoscaled,
            ready: true,
            idle_since: Some(Instant::now()),
        };
        self.nodes.insert(name.clone(), sim_node);
        self.retry_unschedulable();
        name
    }

    fn pods_on(&self, node: &str) -> Vec<(Key, String)> {
        self.pods
            .iter()
            .filter(|(_, e)| e.sim.node.as_deref() == Some(node))
            .map(|(k, e)| (k.clone(), uid_of(&e.pod)))
            .collect()
    }

    /// The node object is deleted (scale-down, or a lost node's cleanup); the pod
    /// garbage collector later fails and deletes the pods that were bound to it.
    pub(crate) fn delete_node(&mut self, name: &str) -> bool {
        if self.nodes.remove(name).is_none() {
            return false;
        }
        for (key, uid) in self.pods_on(name) {
            if let Some(entry) = self.pods.get_mut(&key) {
                entry.sim.holds_resources = false;
            }
            self.at(self.config.timings.pod_gc, Action::PodGc(key, uid));
        }
        true
    }

    /// The node stops responding: it turns NotReady and unreachable, its pods become
    /// unready, and after the eviction timeout the taint manager deletes them, then
    /// the node object goes away (as a cloud node controller removes a dead instance).
    pub(crate) fn lose_node(&mut self, name: &str) -> bool {
        let Some(node) = self.nodes.get_mut(name) else {
            return false;
        };
        node.ready = false;
        let object = Arc::make_mut(&mut node.object);
        let at = now();
        if let Some(status) = object.status.as_mut() {
            status.conditions = Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_heartbeat_time: Some(at.clone()),
                last_transition_time: Some(at.clone()),
            }]);
        }
        object.spec.get_or_insert_with(Default::default).taints = Some(vec![Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            time_added: Some(at),
            value: None,
        }]);
        for (key, uid) in self.pods_on(name) {
            if self.live_pod(&key, &uid).is_some_and(|p| !is_terminal(p)) {
                self.modify_pod(&key, &uid, |_, pod, _| {
                    let status = status_mut(pod);
                    set_condition(status, condition("Ready", false, None, None));
                    set_condition(status, condition("ContainersReady", false, None, None));
                });
            }
        }
        self.at(self.config.timings.pod_gc, Action::TaintEvict(name.to_owned()));
        true
    }

    fn taint_evict(&mut self, name: &str) {
        for (key, uid) in self.pods_on(name) {
            if self.live_pod(&key, &uid).is_some_and(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none()) {
                self.modify_pod(&key, &uid, |_, pod, _| {
                    let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                    pod.metadata.deletion_timestamp = Some(now());
                    pod.metadata.deletion_grace_period_seconds = Some(grace);
                    set_condition(
                        status_mut(pod),
                        condition(
                            "DisruptionTarget",
                            true,
                            Some("DeletionByTaintManager"),
                            Some("Taint manager: deleting due to NoExecute taint"),
                        ),
                    );
                });
            }
        }
        self.delete_node(name);
    }

    fn pod_gc(&mut self, key: &Key, uid: &str) {
        if self.live_pod(key, uid).is_some_and(|p| !is_terminal(p)) {
            self.modify_pod(key, uid, |_, pod, sim| {
                sim.stage = Stage::Finished;
                let status = status_mut(pod);
                status.phase = Some("Failed".into());
                set_condition(
                    status,
                    condition("DisruptionTarget", true, Some("DeletionByPodGC"), Some("PodGC: node no longer exists")),
                );
            });
        }
        self.remove_pod(key, uid);
    }

    // ---- kubelet ---------------------------------------------------------------

    fn start(&mut self, key: &Key, uid: &str) {
        let Some(sim) = self.sim(key, uid) else {
            return;
        };
        if sim.stage != Stage::Waiting {
            return;
        }
        let behavior = sim.behavior.clone();
        if let Ok(Behavior { refuse: Some(reason), .. }) = &behavior {
            self.reject(key, uid, reason);
            return;
        }
        let mount_fail = behavior.as_ref().is_ok_and(|b| b.mount_fail);
        let node_ip = sim
            .node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .and_then(|n| n.object.status.as_ref()?.addresses.as_ref()?.first().map(|a| a.address.clone()))
            .unwrap_or_default();
        // No sandbox, hence no pod IP, while the volumes cannot be mounted.
        let pod_ip = (!mount_fail).then(|| {
            self.ip_counter += 1;
            format!("10.244.{}.{}", self.ip_counter / 250 % 250, self.ip_counter % 250 + 1)
        });
        let pull_delay = self.config.timings.pull;
        let next = self.modify_pod(key, uid, |state, pod, sim| {
            let status = status_mut(pod);
            status.start_time = Some(now());
            status.host_ip = Some(node_ip.clone());
            status.host_ips = Some(vec![HostIP { ip: node_ip }]);
            set_condition(status, condition("PodReadyToStartContainers", pod_ip.is_some(), None, None));
            if let Some(pod_ip) = pod_ip {
                status.pod_ip = Some(pod_ip.clone());
                status.pod_ips = Some(vec![PodIP { ip: pod_ip }]);
            }
            let inits = init_containers(pod);
            if inits.is_empty() {
                set_condition(status_mut(pod), condition("Initialized", true, None, None));
            }
            // Until a container is created it waits: PodInitializing while init
            // containers exist, ContainerCreating otherwise (kubelet_pods.go
            // convertToAPIContainerStatuses).
            let waiting = if inits.is_empty() { "ContainerCreating" } else { "PodInitializing" };
            for container in &inits {
                put_init_status(pod, waiting_status(container, waiting, None));
            }
            for container in containers(pod) {
                put_status(pod, waiting_status(&container, waiting, None));
            }
            let pull = if mount_fail {
                sim.mount_failures = 1;
                state.record_event(pod, "Warning", "FailedMount", &mount_failure(pod), "kubelet", None);
                None
            } else if let Some(init) = inits.first() {
                let image = init.image.clone().unwrap_or_default();
                state.record_event(
                    pod,
                    "Normal",
                    "Pulling",
                    &format!("Pulling image {image:?}"),
                    "kubelet",
                    Some(&field_path(init, true)),
                );
                Some(pull_delay)
            } else {
                prepare_containers(state, pod, sim, pull_delay)
            };
            derive(pod);
            (pod.spec.as_ref().and_then(|s| s.active_deadline_seconds), pull)
        });
        let Some((deadline, pull)) = next else {
            return;
        };
        if let Some(seconds) = deadline {
            self.at(Duration::from_secs(seconds.max(0) as u64), Action::Deadline(key.clone(), uid.to_owned()));
        }
        if mount_fail {
            self.at(self.backoff(1), Action::MountRetry(key.clone(), uid.to_owned()));
        }
        if let Some(pull) = pull {
            self.at(pull, Action::Pull(key.clone(), uid.to_owned()));
        }
    }

    /// The kubelet's admission rejects the pod (pkg/kubelet/kubelet.go rejectPod): a
    /// Warning event with the unprefixed message, and a status of only the phase, the
    /// reason, the prefixed message and the QoS class. The status manager adds a start
    /// time (status_manager.go updateStatusInternal) and keeps the conditions the
    /// kubelet does not own, such as PodScheduled (mergePodStatus).
    fn reject(&mut self, key: &Key, uid: &str, reason: &str) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        let message =
            admission_message(reason, &entry.pod, &entry.sim, entry.sim.node.as_ref().and_then(|n| self.nodes.get(n)));
        self.modify_pod(key, uid, |state, pod, sim| {
            let old = pod.status.take().unwrap_or_default();
            let kubelet_owned = ["Ready", "ContainersReady", "Initialized", "PodReadyToStartContainers"];
            let kept: Vec<PodCondition> =
                old.conditions.into_iter().flatten().filter(|c| !kubelet_owned.contains(&c.type_.as_str())).collect();
            pod.status = Some(PodStatus {
                phase: Some("Failed".into()),
                reason: Some(reason.to_owned()),
                message: Some(format!("Pod was rejected: {message}")),
                qos_class: old.qos_class,
                start_time: Some(now()),
                conditions: (!kept.is_empty()).then_some(kept),
                ..Default::default()
            });
            state.record_event(pod, "Warning", reason, &message, "kubelet", None);
            sim.stage = Stage::Finished;
            state.release(sim);
        });
        self.retry_unschedulable();
    }

    fn still_waiting(&self, key: &Key, uid: &str) -> bool {
        self.pods.get(key).is_some_and(|e| {
            uid_of(&e.pod) == uid && e.sim.stage == Stage::Waiting && e.pod.metadata.deletion_timestamp.is_none()
        })
    }

    /// The image pulled: the next container starts (the injected init container first,
    /// then the sidecar and the pod's own containers).
    fn pull(&mut self, key: &Key, uid: &str) {
        if !self.still_waiting(key, uid) {
            return;
        }
        let Some((pod, sim)) = self.pods.get(key).map(|e| (e.pod.clone(), &e.sim)) else {
            return;
        };
        let behavior = sim.behavior.clone();
        if let Some(init) = init_containers(&pod).into_iter().find(|c| !completed(init_status(&pod, &c.name))) {
            if is_waiting(init_status(&pod, &init.name)) {
                self.start_init(key, uid, &init);
            }
            return;
        }
        let sidecar_waiting =
            containers(&pod).iter().any(|c| sim.is_sidecar(&c.name) && is_waiting(regular_status(&pod, &c.name)));
        if sidecar_waiting {
            self.modify_pod(key, uid, |state, pod, sim| {
                let sidecars: Vec<Container> =
                    containers(pod).into_iter().filter(|c| sim.is_sidecar(&c.name)).collect();
                for container in &sidecars {
                    start_container(state, pod, sim, container, false);
                }
                derive(pod);
            });
        }
        let Ok(behavior) = behavior else {
            return;
        };
        let first = own_container(&pod);
        if behavior.config_error || !is_valid_image_reference(first.image.as_deref().unwrap_or_default()) {
            return;
        }
        if behavior.pull == Pull::Fails {
            let attempts = self.sim(key, uid).map_or(0, |s| s.pull_failures);
            self.modify_pod(key, uid, |state, pod, sim| {
                sim.pull_failures += 1;
                let image = first.image.clone().unwrap_or_default();
                let path = field_path(&first, false);
                let message = format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: {image}: not found"
                );
                for container in containers(pod).iter().filter(|c| !sim.is_sidecar(&c.name)) {
                    put_status(pod, waiting_status(container, "ErrImagePull", Some(&message)));
                }
                if attempts > 0 {
                    state.record_event(pod, "Normal", "Pulling", &format!("Pulling image {image:?}"), "kubelet", Some(&path));
                }
                state.record_event(pod, "Warning", "Failed", &format!("Failed to pull image {image:?}: {message}"), "kubelet", Some(&path));
                state.record_event(pod, "Warning", "Failed", "Error: ErrImagePull", "kubelet", Some(&path));
                derive(pod);
            });
            // The kubelet's next sync reports the back-off right away.
            self.at(Duration::from_millis(10), Action::PullBackOff(key.clone(), uid.to_owned()));
            return;
        }
        if let Some(runtime) = behavior.start_error {
            self.modify_pod(key, uid, |state, pod, sim| {
                for container in containers(pod).iter().filter(|c| !sim.is_sidecar(&c.name)) {
                    fail_to_start(state, pod, container, runtime, container.name == first.name);
                }
                state.settle(pod, sim);
            });
            self.retry_unschedulable();
            return;
        }
        self.modify_pod(key, uid, |state, pod, sim| {
            sim.stage = Stage::Running;
            for container in containers(pod).iter().filter(|c| !sim.is_sidecar(&c.name)) {
                let status = running_status(container, false);
                put_status(pod, status);
            }
            record_start_events(state, pod, &first, false);
            sim.log(format!("kube-sim: started {}", first.image.clone().unwrap_or_default()));
            for i in 1..=behavior.lines {
                sim.log(format!("kube-sim: line {i} of {}", behavior.lines));
            }
            derive(pod);
        });
        let pod_timer = |state: &mut State, after: Option<Duration>, action: fn(Key, String) -> Action| {
            if let Some(after) = after {
                state.at(after, action(key.clone(), uid.to_owned()));
            }
        };
        pod_timer(self, behavior.run, Action::Finish);
        pod_timer(self, behavior.evict_after, Action::Evict);
        pod_timer(self, behavior.delete_after, Action::ExternalDelete);
        pod_timer(self, behavior.evict_storage_after, Action::EvictStorage);
    }

    /// The injected init container starts, and exits shortly after.
    fn start_init(&mut self, key: &Key, uid: &str, init: &Container) {
        self.modify_pod(key, uid, |state, pod, sim| {
            start_container(state, pod, sim, init, true);
            derive(pod);
        });
        self.at(self.config.timings.start, Action::InitExit(key.clone(), uid.to_owned()));
    }

    /// The running init container exits: the injected one with the behaviour's code,
    /// any other with 0. A failed one fails the pod (getPhase: a failed init container
    /// and a pod that is never restarted); after the last one, the regular containers
    /// get ready to start.
    fn init_exit(&mut self, key: &Key, uid: &str) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        let Some(init) = init_containers(&entry.pod).into_iter().find(|c| is_running(init_status(&entry.pod, &c.name)))
        else {
            return;
        };
        let injected_code = entry.sim.behavior.as_ref().ok().and_then(|b| b.init_fail);
        let code = if init.name == INIT_NAME { injected_code.unwrap_or(0) } else { 0 };
        let pull_delay = self.config.timings.pull;
        let next = self.modify_pod(key, uid, |state, pod, sim| {
            if code != 0 {
                sim.log_to(&init.name, format!("kube-sim: {} exiting with code {code}", init.name));
            }
            if let Some(status) = init_status(pod, &init.name).cloned() {
                put_init_status(pod, ended(&status, code, if code == 0 { "Completed" } else { "Error" }, None));
            }
            if code != 0 {
                state.settle(pod, sim);
                return None;
            }
            let next = match init_containers(pod).into_iter().find(|c| is_waiting(init_status(pod, &c.name))) {
                Some(following) => {
                    let image = following.image.clone().unwrap_or_default();
                    let path = field_path(&following, true);
                    state.record_event(
                        pod,
                        "Normal",
                        "Pulling",
                        &format!("Pulling image {image:?}"),
                        "kubelet",
                        Some(&path),
                    );
                    Some(pull_delay)
                }
                None => prepare_containers(state, pod, sim, pull_delay),
            };
            derive(pod);
            next
        });
        if let Some(after) = next.flatten() {
            self.at(after, Action::Pull(key.clone(), uid.to_owned()));
        }
        self.retry_unschedulable();
    }

    fn pull_back_off(&mut self, key: &Key, uid: &str) {
        if !self.still_waiting(key, uid) {
            return;
        }
        let failures = self.sim(key, uid).map_or(1, |s| s.pull_failures);
        let backoff = self.backoff(failures);
        self.modify_pod(key, uid, |state, pod, sim| {
            let first = own_container(pod);
            let image = first.image.clone().unwrap_or_default();
            let path = field_path(&first, false);
            let message = format!("Back-off pulling image {image:?}");
            for container in containers(pod).iter().filter(|c| !sim.is_sidecar(&c.name)) {
                put_status(pod, waiting_status(container, "ImagePullBackOff", Some(&message)));
            }
            state.record_event(pod, "Normal", "BackOff", &message, "kubelet", Some(&path));
            state.record_event(pod, "Warning", "Failed", "Error: ImagePullBackOff", "kubelet", Some(&path));
            derive(pod);
        });
        self.at(backoff, Action::Pull(key.clone(), uid.to_owned()));
    }

    /// The kubelet's retry delay after `failures` failures: doubling from
    /// `--pull-backoff`, at most ten times it.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self.config.timings.pull_backoff;
        (base * 2u32.saturating_pow(failures.saturating_sub(1).min(10))).min(base * 10)
    }

    /// The volume manager tries the mount again, fails again, and says so again: the
    /// event recorder folds the repeats into one event whose count goes up.
    fn mount_retry(&mut self, key: &Key, uid: &str) {
        if !self.still_waiting(key, uid) {
            return;
        }
        // The status does not change; only the event does.
        let Some(entry) = self.pods.get_mut(key) else {
            return;
        };
        entry.sim.mount_failures += 1;
        let failures = entry.sim.mount_failures;
        let pod = entry.pod.clone();
        self.record_event(&pod, "Warning", "FailedMount", &mount_failure(&pod), "kubelet", None);
        self.at(self.backoff(failures), Action::MountRetry(key.clone(), uid.to_owned()));
    }

    /// The container's run ends (or `exit_code` forces it to end now).
    pub(crate) fn finish(&mut self, key: &Key, uid: &str, exit_code: Option<i32>) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        let sim = &entry.sim;
        if sim.stage != Stage::Running || sim.driven_elsewhere || !is_running(regular_status(&entry.pod, &sim.main)) {
            return;
        }
        let behavior = sim
            .behavior
            .clone()
            .unwrap_or_else(|_| Behavior::parse("", self.behavior_defaults()).unwrap_or_else(|_| unreachable!()));
        let oom = behavior.oom && exit_code.is_none();
        let code = if oom { 137 } else { exit_code.unwrap_or(behavior.exit_code) };
        let terminal = self.modify_pod(key, uid, |state, pod, sim| {
            let first = own_container(pod);
            let reason = if oom {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            if oom {
                state.record_event(pod, "Warning", "OOMKilling", &oom_message(&first.name), "kubelet", None);
            } else if code != 0 {
                sim.log(format!("kube-sim: exiting with code {code}"));
            }
            let fallback = first.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
            let message = (fallback && code != 0).then(|| log_tail_message(sim.main_logs())).filter(|m| !m.is_empty());
            for container in containers(pod).iter().filter(|c| !sim.is_sidecar(&c.name)) {
                if let Some(status) = regular_status(pod, &container.name).filter(|s| is_running(Some(s))).cloned() {
                    let message = if container.name == first.name { message.clone() } else { None };
                    put_status(pod, ended(&status, code, reason, message));
                }
            }
            state.settle(pod, sim)
        });
        if terminal == Some(false) && behavior.sidecar == Some(Sidecar::OomKilled) {
            self.at(self.config.timings.start, Action::SidecarOom(key.clone(), uid.to_owned()));
        }
        self.retry_unschedulable();
    }

    /// The injected sidecar is OOMKilled; with the pod's own container already ended,
    /// every container has terminated and one failed: the pod fails.
    fn sidecar_oom(&mut self, key: &Key, uid: &str) {
        let Some(pod) = self.live_pod(key, uid) else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() || !is_running(regular_status(pod, SIDECAR_NAME)) {
            return;
        }
        self.modify_pod(key, uid, |state, pod, sim| {
            state.record_event(pod, "Warning", "OOMKilling", &oom_message("envoy"), "kubelet", None);
            if let Some(status) = regular_status(pod, SIDECAR_NAME).cloned() {
                put_status(pod, ended(&status, 137, "OOMKilled", None));
            }
            state.settle(pod, sim);
        });
        self.retry_unschedulable();
    }

    /// Fails a pod that is not yet terminal, for a kubelet-level reason: the reason's
    /// event, then every running container stopped.
    fn fail(&mut self, key: &Key, uid: &str, reason: &str, message: &str, disruption: Option<&str>) -> bool {
        if self.live_pod(key, uid).is_none_or(is_terminal) {
            return false;
        }
        self.modify_pod(key, uid, |state, pod, sim| {
            state.record_event(pod, "Warning", reason, message, "kubelet", None);
            record_killing(state, pod);
            let sidecar = sim.sidecar().is_some();
            terminate_all(pod, &|name| {
                if sidecar && name == SIDECAR_NAME { (0, "Completed", None) } else { (137, "Error", None) }
            });
            let status = status_mut(pod);
            status.phase = Some("Failed".into());
            status.reason = Some(reason.to_owned());
            status.message = Some(message.to_owned());
            if let Some(disruption) = disruption {
                set_condition(status, condition("DisruptionTarget", true, Some(disruption), Some(message)));
            }
            derive_conditions(pod, "Failed");
            sim.stage = Stage::Finished;
            state.release(sim);
        });
        self.retry_unschedulable();
        true
    }

    fn deadline(&mut self, key: &Key, uid: &str) {
        self.fail(key, uid, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline", None);
    }

    /// Node-pressure eviction by the kubelet.
    pub(crate) fn evict(&mut self, key: &Key, uid: &str) -> bool {
        let Some(sim) = self.sim(key, uid) else {
            return false;
        };
        if sim.node.is_none() || sim.driven_elsewhere {
            return false;
        }
        let message = format!(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container {} was using 1Gi, request is 0, has larger consumption of memory. ",
            sim.main
        );
        self.fail(key, uid, "Evicted", &message, Some("TerminationByKubelet"))
    }

    /// The eviction manager finds the pod's own container over its ephemeral-storage
    /// limit (pkg/kubelet/eviction/eviction_manager.go containerEphemeralStorageLimitEviction):
    /// it evicts the pod at once, with no DisruptionTarget condition (evictPod is
    /// called with a nil condition for local-storage evictions, unlike node pressure).
    fn evict_storage(&mut self, key: &Key, uid: &str) {
        let Some(pod) = self.live_pod(key, uid) else {
            return;
        };
        let first = own_container(pod);
        let limit = first
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .map_or_else(|| "1Gi".to_owned(), |q| q.0.clone());
        let message = format!("Container {} exceeded its local ephemeral storage limit {limit:?}. ", first.name);
        self.fail(key, uid, "Evicted", &message, None);
    }

    // ---- deletion --------------------------------------------------------------

    /// Someone outside (`kubectl delete`, a node-repair tool) deletes the pod through
    /// the API: the same graceful deletion as a DELETE request, with no DisruptionTarget.
    fn external_delete(&mut self, key: &Key, uid: &str) {
        let deletable =
            self.live_pod(key, uid).is_some_and(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none());
        if deletable {
            self.begin_delete(key, uid, None);
        }
    }

    /// Starts a graceful deletion: the pod turns Terminating, the kubelet stops its
    /// containers, then the pod object goes away. Pods that never reached a node, or
    /// already ended, go at once.
    pub(crate) fn begin_delete(&mut self, key: &Key, uid: &str, grace: Option<i64>) -> Option<Arc<Pod>> {
        let entry = self.pods.get(key)?;
        let pod_grace = entry.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        let grace = grace.unwrap_or(pod_grace).max(0);
        let unbound = entry.sim.node.is_none();
        if grace == 0 || unbound || is_terminal(&entry.pod) {
            return self.remove_pod(key, uid);
        }
        if let Some(existing) = entry.pod.metadata.deletion_grace_period_seconds
            && existing <= grace
        {
            // A second delete may only shorten the grace period.
            return Some(entry.pod.clone());
        }
        let node_ready = entry.sim.node.as_ref().and_then(|n| self.nodes.get(n)).is_some_and(|n| n.ready);
        let kubelet_drives = !entry.sim.driven_elsewhere;
        let ignores_term = entry.sim.behavior.as_ref().is_ok_and(|b| b.ignore_term);
        let main_running = is_running(regular_status(&entry.pod, &entry.sim.main));
        let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        self.modify_pod(key, uid, |state, pod, _| {
            pod.metadata.deletion_timestamp = Some(Time(deadline));
            pod.metadata.deletion_grace_period_seconds = Some(grace);
            if kubelet_drives {
                record_killing(state, pod);
            }
        });
        if node_ready {
            let grace = Duration::from_secs(grace as u64);
            let waits = kubelet_drives && main_running && ignores_term;
            let after = if waits { grace } else { self.config.timings.termination.min(grace) };
            self.at(after, Action::Kill(key.clone(), uid.to_owned()));
        }
        self.pods.get(key).map(|e| e.pod.clone())
    }

    /// The end of a graceful deletion. The kubelet first writes the pod's final status
    /// — every container stopped, the phase terminal (kubelet_pods.go getPhase with
    /// podIsTerminal; status_manager.go TerminatePod "Make sure all pods are
    /// transitioned to a terminal phase") — then the status manager deletes the object,
    /// so a watcher sees MODIFIED (Failed, exit 143) and then DELETED.
    fn kill(&mut self, key: &Key, uid: &str) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        if !is_terminal(&entry.pod) && !entry.sim.driven_elsewhere {
            let ignores_term = entry.sim.behavior.as_ref().is_ok_and(|b| b.ignore_term);
            // SIGTERM honoured: 143; killed at the end of the grace period: 137. The
            // proxy sidecar drains and exits 0 on SIGTERM.
            let code = if ignores_term { 137 } else { 143 };
            self.modify_pod(key, uid, |state, pod, sim| {
                let sidecar = sim.sidecar().is_some();
                terminate_all(pod, &|name| {
                    if sidecar && name == SIDECAR_NAME { (0, "Completed", None) } else { (code, "Error", None) }
                });
                if !state.settle(pod, sim) {
                    // Containers that never started leave nothing running: the pod is over.
                    status_mut(pod).phase = Some("Failed".into());
                    derive_conditions(pod, "Failed");
                    sim.stage = Stage::Finished;
                    state.release(sim);
                }
            });
        }
        self.remove_pod(key, uid);
    }
}

/// The pod's regular containers get ready to start (after any init containers): the
/// pull of the pod's own image begins, or the kubelet finds why its container cannot be
/// created (a bad behaviour term or a missing secret: CreateContainerConfigError; an
/// image reference that does not parse: InvalidImageName). Returns when the next
/// container starts, if one will.
fn prepare_containers(state: &mut State, pod: &mut Pod, sim: &PodSim, pull_delay: Duration) -> Option<Duration> {
    let first = own_container(pod);
    let image = first.image.clone().unwrap_or_default();
    let path = field_path(&first, false);
    let (reason, message, pull) = match &sim.behavior {
        Err(why) => ("CreateContainerConfigError", Some(why.clone()), None),
        Ok(b) if b.config_error => {
            let secret = first
                .env
                .iter()
                .flatten()
                .find_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|s| s.name.clone()));
            let message = format!("secret {:?} not found", secret.unwrap_or_else(|| "kube-sim-missing".into()));
            ("CreateContainerConfigError", Some(message), None)
        }
        Ok(_) if !is_valid_image_reference(&image) => (
            "InvalidImageName",
            Some(format!(
                "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
            )),
            None,
        ),
        Ok(b) => {
            let pull = match b.pull {
                Pull::Succeeds(d) => d,
                Pull::Fails => pull_delay,
            };
            ("ContainerCreating", None, Some(pull))
        }
    };
    for container in containers(pod) {
        let status = if sim.is_sidecar(&container.name) {
            waiting_status(&container, "ContainerCreating", None)
        } else {
            waiting_status(&container, reason, message.as_deref())
        };
        put_status(pod, status);
    }
    match reason {
        "ContainerCreating" => {
            state.record_event(pod, "Normal", "Pulling", &format!("Pulling image {image:?}"), "kubelet", Some(&path));
        }
        "InvalidImageName" => {
            let message = message.as_deref().unwrap_or_default();
            state.record_event(pod, "Warning", "InspectFailed", message, "kubelet", Some(&path));
            state.record_event(pod, "Warning", "Failed", "Error: InvalidImageName", "kubelet", Some(&path));
        }
        _ => {
            let message = format!("Error: {}", message.as_deref().unwrap_or_default());
            state.record_event(pod, "Warning", "Failed", &message, "kubelet", Some(&path));
        }
    }
    // A sidecar starts even when the pod's own container cannot.
    pull.or_else(|| sim.sidecar().map(|_| pull_delay))
}

/// Starts `container`: its Pulled, Created and Started events and its running status.
fn start_container(state: &mut State, pod: &mut Pod, sim: &mut PodSim, container: &Container, init: bool) {
    record_start_events(state, pod, container, init);
    sim.log_to(&container.name, format!("kube-sim: started {}", container.image.clone().unwrap_or_default()));
    let status = running_status(container, init);
    if init {
        put_init_status(pod, status);
    } else {
        put_status(pod, status);
    }
}

/// The kubelet's `Pulled` (when it pulled the image) and `Created` events for `container`.
fn record_created_events(state: &mut State, pod: &Pod, container: &Container, init: bool, pulled: bool) {
    let image = container.image.clone().unwrap_or_default();
    let path = field_path(container, init);
    if pulled {
        let pulled =
            format!("Successfully pulled image {image:?} in 1.2s (1.2s including waiting). Image size: 2150000 bytes.");
        state.record_event(pod, "Normal", "Pulled", &pulled, "kubelet", Some(&path));
    }
    let created = format!("Created container: {}", container.name);
    state.record_event(pod, "Normal", "Created", &created, "kubelet", Some(&path));
}

fn record_start_events(state: &mut State, pod: &Pod, container: &Container, init: bool) {
    let path = field_path(container, init);
    record_created_events(state, pod, container, init, true);
    state.record_event(
        pod,
        "Normal",
        "Started",
        &format!("Started container {}", container.name),
        "kubelet",
        Some(&path),
    );
}

/// A `Killing` event for every running container, as killContainer records them
/// (pkg/kubelet/kuberuntime/kuberuntime_container.go).
fn record_killing(state: &mut State, pod: &Pod) {
    let running = |init: bool| {
        let list = if init { init_containers(pod) } else { containers(pod) };
        list.into_iter()
            .filter(|c| is_running(if init { init_status(pod, &c.name) } else { regular_status(pod, &c.name) }))
            .map(move |c| (c, init))
            .collect::<Vec<_>>()
    };
    for (container, init) in running(true).into_iter().chain(running(false)) {
        let message = format!("Stopping container {}", container.name);
        state.record_event(pod, "Normal", "Killing", &message, "kubelet", Some(&field_path(&container, init)));
    }
}

/// The runtime cannot start `container`: its status as the CRI reports it and the
/// kubelet's `Failed` event (kuberuntime_container.go startContainer: "Error: " and
/// the runtime's message).
///
/// containerd (internal/cri/server/container_start.go) marks the container exited with
/// exit code 128, reason `StartError` and the error as message, and never sets its
/// start time, which the kubelet turns into the Unix epoch (`time.Unix(0, 0)`).
/// dockershim (pkg/kubelet/dockershim/docker_container.go ContainerStatus, case 2)
/// reports `ContainerCannotRun` with docker's exit code (127 for a missing
/// executable) and both times set to the creation time.
fn fail_to_start(state: &mut State, pod: &mut Pod, container: &Container, runtime: Runtime, own: bool) {
    let executable =
        container.command.as_ref().and_then(|c| c.first().cloned()).unwrap_or_else(|| "/docker-entrypoint.sh".into());
    let image = container.image.clone().unwrap_or_default();
    let id = hex(64);
    let (container_id, image_ref, code, reason, message, event, started_at) = match runtime {
        Runtime::Containerd => {
            let message = format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: {executable:?}: executable file not found in $PATH: unknown"
            );
            let event = format!("Error: {message}");
            let epoch = Time(jiff::Timestamp::UNIX_EPOCH);
            (format!("containerd://{id}"), image_id(&image), 128, "StartError", message, event, epoch)
        }
        Runtime::Docker => {
            let message = format!(
                "OCI runtime create failed: container_linux.go:380: starting container process caused: exec: {executable:?}: executable file not found in $PATH: unknown"
            );
            let event = format!("Error: failed to start container {id:?}: Error response from daemon: {message}");
            (format!("docker://{id}"), docker_image_id(&image), 127, "ContainerCannotRun", message, event, now())
        }
    };
    let path = field_path(container, false);
    record_created_events(state, pod, container, false, own);
    state.record_event(pod, "Warning", "Failed", &event, "kubelet", Some(&path));
    let finished_at = if runtime == Runtime::Docker { started_at.clone() } else { now() };
    put_status(
        pod,
        ContainerStatus {
            name: container.name.clone(),
            image,
            image_id: image_ref,
            container_id: Some(container_id.clone()),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(reason.into()),
                    message: Some(message),
                    started_at: Some(started_at),
                    finished_at: Some(finished_at),
                    container_id: Some(container_id),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            last_state: Some(ContainerState::default()),
            ..Default::default()
        },
    );
}

fn oom_message(process: &str) -> String {
    format!(
        "Memory cgroup out of memory: Killed process 4242 ({process}) total-vm:1048576kB, anon-rss:1048576kB, file-rss:0kB, shmem-rss:0kB"
    )
}

/// The volume manager's message for a secret volume whose secret is missing
/// (pkg/volume/util/operationexecutor: "MountVolume.SetUp failed for volume %q" and the
/// secret manager's NotFound, `secret "NAME" not found`).
fn mount_failure(pod: &Pod) -> String {
    let volume = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).find_map(|v| {
        let secret = v.secret.as_ref()?;
        Some((v.name.clone(), secret.secret_name.clone().unwrap_or_else(|| v.name.clone())))
    });
    let (volume, secret) = volume.unwrap_or_else(|| ("credentials".into(), "credentials".into()));
    format!("MountVolume.SetUp failed for volume {volume:?} : secret {secret:?} not found")
}

/// The message of the kubelet admission failure `reason`, with numbers from the pod
/// and its node: pkg/kubelet/lifecycle/predicate.go (InsufficientResourceError, in the
/// kubelet's units: millicores, bytes, pods; PredicateFailureError for NodeAffinity),
/// pkg/kubelet/nodeshutdown (NodeShutdown) and pkg/kubelet/cm/admission (a device
/// plugin's allocation failing, UnexpectedAdmissionError).
fn admission_message(reason: &str, pod: &Pod, sim: &PodSim, node: Option<&SimNode>) -> String {
    let insufficient = |resource: &str, requested: i64, others: i64, capacity: i64| {
        let used = others.max(capacity - requested / 2).min(capacity);
        format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        )
    };
    let shape = node.map(|n| n.shape).unwrap_or_default();
    let (used_cpu, used_memory, pods) = node.map_or((0, 0, 0), |n| (n.used_cpu, n.used_memory, n.pods));
    let request = |name: &str| {
        pod.spec.iter().flat_map(|s| s.containers.iter()).find_map(|c| {
            let q = c.resources.as_ref()?.requests.as_ref()?.get(name)?;
            parse_quantity(&q.0).ok()
        })
    };
    match reason {
        "OutOfcpu" => {
            let requested = if sim.cpu_millis > 0 { sim.cpu_millis } else { 100 };
            insufficient("cpu", requested, used_cpu - sim.cpu_millis, shape.cpu_millis)
        }
        "OutOfmemory" => {
            let requested = if sim.memory_bytes > 0 { sim.memory_bytes } else { 64 << 20 };
            insufficient("memory", requested, used_memory - sim.memory_bytes, shape.memory_bytes)
        }
        "OutOfpods" => format!(
            "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
            shape.max_pods.max(pods),
            shape.max_pods
        ),
        "OutOfephemeral-storage" => {
            // kube-sim nodes do not advertise ephemeral storage; a 100Gi disk is typical.
            let requested = request("ephemeral-storage").map_or(1 << 30, |v| v.ceil() as i64);
            insufficient("ephemeral-storage", requested, 0, 100 << 30)
        }
        "NodeAffinity" => "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
        "NodeShutdown" => "Pod was rejected as the node is shutting down.".into(),
        "UnexpectedAdmissionError" => {
            let device = pod.spec.iter().flat_map(|s| s.containers.iter()).find_map(|c| {
                let limits = c.resources.as_ref()?.limits.as_ref()?;
                limits.iter().find(|(name, _)| name.contains('/')).map(|(name, q)| (name.clone(), q.0.clone()))
            });
            let (device, count) = device.unwrap_or_else(|| ("nvidia.com/gpu".into(), "1".into()));
            format!(
                "Allocate failed due to requested number of devices unavailable for {device}. Requested: {count}, Available: 0, which is unexpected"
            )
        }
        _ => "GeneralPredicates failed due to unknown reason, which is unexpected.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_ids_are_stable_digests() {
        let a = image_id("busybox:1.36");
        assert!(a.starts_with("docker.io/library/busybox@sha256:"), "{a}");
        assert_eq!(a.len(), "docker.io/library/busybox@sha256:".len() + 64);
        assert_eq!(a, image_id("busybox:1.36"));
        assert!(image_id("ghcr.io/org/app:v1").starts_with("ghcr.io/org/app@sha256:"));
        assert!(docker_image_id("busybox:1.36").starts_with("docker-pullable://busybox@sha256:"));
    }

    #[test]
    fn termination_message_keeps_the_tail() {
        let logs: Vec<_> = (0..200).map(|i| (jiff::Timestamp::now(), format!("line {i}"))).collect();
        let message = log_tail_message(&logs);
        assert!(message.starts_with("line 120\n"), "{message}");
        assert!(message.ends_with("line 199"));
        let long: Vec<_> = (0..10).map(|_| (jiff::Timestamp::now(), "x".repeat(500))).collect();
        assert_eq!(log_tail_message(&long).len(), 2048);
    }

    fn pod(containers: serde_json::Value, init: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": containers, "initContainers": init },
            "status": status
        }))
        .unwrap()
    }

    fn state(name: &str, state: serde_json::Value) -> serde_json::Value {
        json!({ "name": name, "image": "x", "imageID": "", "ready": state.get("running").is_some(), "restartCount": 0, "state": state })
    }

    #[test]
    fn phases_follow_get_phase() {
        let two = json!([{ "name": "job" }, { "name": "istio-proxy" }]);
        let running = json!({ "running": {} });
        let waiting = json!({ "waiting": { "reason": "ContainerCreating" } });
        let exited = |code: i32| json!({ "terminated": { "exitCode": code } });
        let check = |p: Pod, expected: &str| assert_eq!(derived_phase(&p), expected);
        check(
            pod(
                two.clone(),
                json!([]),
                json!({ "containerStatuses": [state("istio-proxy", running.clone()), state("job", exited(0))] }),
            ),
            "Running",
        );
        check(
            pod(
                two.clone(),
                json!([]),
                json!({ "containerStatuses": [state("istio-proxy", exited(137)), state("job", exited(0))] }),
            ),
            "Failed",
        );
        check(
            pod(
                two.clone(),
                json!([]),
                json!({ "containerStatuses": [state("istio-proxy", exited(0)), state("job", exited(0))] }),
            ),
            "Succeeded",
        );
        check(
            pod(
                two.clone(),
                json!([]),
                json!({ "containerStatuses": [state("istio-proxy", running.clone()), state("job", waiting.clone())] }),
            ),
            "Pending",
        );
        let init = json!([{ "name": "istio-init" }]);
        let initializing = json!({ "waiting": { "reason": "PodInitializing" } });
        check(
            pod(
                json!([{ "name": "job" }]),
                init.clone(),
                json!({ "initContainerStatuses": [state("istio-init", exited(3))], "containerStatuses": [state("job", initializing.clone())] }),
            ),
            "Failed",
        );
        check(
            pod(
                json!([{ "name": "job" }]),
                init,
                json!({ "initContainerStatuses": [state("istio-init", running)], "containerStatuses": [state("job", initializing)] }),
            ),
            "Pending",
        );
    }

    #[test]
    fn conditions_follow_generate() {
        let mut p = pod(
            json!([{ "name": "job" }]),
            json!([{ "name": "istio-init" }]),
            json!({ "initContainerStatuses": [state("istio-init", json!({ "terminated": { "exitCode": 3, "reason": "Error" } }))],
                    "containerStatuses": [state("job", json!({ "waiting": { "reason": "PodInitializing" } }))] }),
        );
        assert!(derive(&mut p));
        let conditions = p.status.unwrap().conditions.unwrap();
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        let initialized = find("Initialized");
        assert_eq!(
            (initialized.status.as_str(), initialized.reason.as_deref(), initialized.message.as_deref()),
            ("False", Some("ContainersNotInitialized"), Some("containers with incomplete status: [istio-init]"))
        );
        assert_eq!(find("Ready").reason.as_deref(), Some("PodFailed"));
        assert_eq!(find("ContainersReady").reason.as_deref(), Some("PodFailed"));
        assert_eq!(find("PodReadyToStartContainers").status, "False");
    }

    #[test]
    fn container_statuses_are_sorted_by_name() {
        let mut p = pod(json!([{ "name": "job" }, { "name": "istio-proxy" }]), json!([]), json!({}));
        put_status(
            &mut p,
            waiting_status(&Container { name: "job".into(), ..Default::default() }, "ContainerCreating", None),
        );
        put_status(
            &mut p,
            waiting_status(&Container { name: "istio-proxy".into(), ..Default::default() }, "ContainerCreating", None),
        );
        let names: Vec<String> = p.status.unwrap().container_statuses.unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["istio-proxy", "job"]);
    }
}
