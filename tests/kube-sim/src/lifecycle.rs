//! The simulated control plane and kubelets, in the spirit of kwok's stages: each pod
//! moves through scheduling, image pull, running and termination on timers, as its
//! behaviour (see `behavior.rs`) says. Status fields are written as the kubelet and
//! the controllers write them, so a client reading them cannot tell the difference.

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

use crate::behavior::{Behavior, Pull, is_valid_image_reference};
use crate::cluster::{Key, State, now, uid_of};
use crate::config::NodeShape;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Unscheduled,
    Waiting,
    Running,
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
    pub logs: Vec<(jiff::Timestamp, String)>,
    pub pull_failures: u32,
    pub scale_up_reported: bool,
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
            logs: Vec::new(),
            pull_failures: 0,
            scale_up_reported: false,
        }
    }

    fn log(&mut self, line: String) {
        self.logs.push((jiff::Timestamp::now(), line));
    }
}

/// The scheduler's view of a pod's size: the sum of its containers' requests.
fn requests(pod: &Pod) -> (i64, i64) {
    let mut cpu = 0.0;
    let mut memory = 0.0;
    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref());
        let value =
            |name: &str| requests.and_then(|r| r.get(name)).and_then(|q| parse_quantity(&q.0).ok()).unwrap_or(0.0);
        cpu += value("cpu");
        memory += value("memory");
    }
    ((cpu * 1000.0).ceil() as i64, memory.ceil() as i64)
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

fn container_names(pod: &Pod) -> String {
    containers(pod).iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" ")
}

fn is_terminal(pod: &Pod) -> bool {
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

/// Every container of the pod in one state.
fn set_container_states(pod: &mut Pod, state: impl Fn(&Container, Option<&ContainerStatus>) -> ContainerStatus) {
    let previous = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let statuses = containers(pod).iter().map(|c| state(c, previous.iter().find(|p| p.name == c.name))).collect();
    status_mut(pod).container_statuses = Some(statuses);
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

/// Container statuses and conditions of a pod whose containers have all ended.
fn terminate(pod: &mut Pod, exit_code: i32, reason: &str, message: Option<String>) {
    let finished = now();
    set_container_states(pod, |container, previous| {
        let running = previous.and_then(|p| p.state.as_ref()).and_then(|s| s.running.clone());
        let base = previous.cloned().unwrap_or_else(|| waiting_status(container, "ContainerCreating", None));
        let terminated = match running {
            Some(running) => ContainerStateTerminated {
                exit_code,
                reason: Some(reason.to_owned()),
                message: message.clone(),
                started_at: running.started_at,
                finished_at: Some(finished.clone()),
                container_id: base.container_id.clone(),
                ..Default::default()
            },
            // A container that never ran has nothing to report but that it is gone.
            None => ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some("The container could not be located when the pod was terminated".into()),
                started_at: None,
                finished_at: None,
                ..Default::default()
            },
        };
        ContainerStatus {
            ready: false,
            started: Some(false),
            state: Some(ContainerState { terminated: Some(terminated), ..Default::default() }),
            ..base
        }
    });
    let all_zero = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|all| {
        all.iter().all(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0))
    });
    let (phase, ready_reason) = if all_zero { ("Succeeded", "PodCompleted") } else { ("Failed", "PodFailed") };
    let status = status_mut(pod);
    status.phase = Some(phase.to_owned());
    set_condition(status, condition("PodReadyToStartContainers", false, None, None));
    set_condition(status, condition("Ready", false, Some(ready_reason), None));
    set_condition(status, condition("ContainersReady", false, Some(ready_reason), None));
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
        if let Action::Start(key, _)
        | Action::Pull(key, _)
        | Action::PullBackOff(key, _)
        | Action::Finish(key, _)
        | Action::Deadline(key, _)
        | Action::Evict(key, _)
        | Action::Kill(key, _) = &action
            && self.kubelet_gone(key)
        {
            return;
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
        let node_ip = sim
            .node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .and_then(|n| n.object.status.as_ref()?.addresses.as_ref()?.first().map(|a| a.address.clone()))
            .unwrap_or_default();
        self.ip_counter += 1;
        let pod_ip = format!("10.244.{}.{}", self.ip_counter / 250 % 250, self.ip_counter % 250 + 1);
        let pull_delay = self.config.timings.pull;
        let deadline = self.modify_pod(key, uid, |state, pod, sim| {
            let status = status_mut(pod);
            status.start_time = Some(now());
            status.host_ip = Some(node_ip.clone());
            status.host_ips = Some(vec![HostIP { ip: node_ip }]);
            status.pod_ip = Some(pod_ip.clone());
            status.pod_ips = Some(vec![PodIP { ip: pod_ip }]);
            set_condition(status, condition("PodReadyToStartContainers", true, None, None));
            set_condition(status, condition("Initialized", true, None, None));
            let unready = format!("containers with unready status: [{}]", container_names(pod));
            let status = status_mut(pod);
            set_condition(status, condition("Ready", false, Some("ContainersNotReady"), Some(&unready)));
            set_condition(status, condition("ContainersReady", false, Some("ContainersNotReady"), Some(&unready)));
            let first = containers(pod).into_iter().next().unwrap_or_default();
            let image = first.image.clone().unwrap_or_default();
            let field_path = format!("spec.containers{{{}}}", first.name);
            let (reason, message, pull) = match &sim.behavior {
                Err(why) => ("CreateContainerConfigError", Some(why.clone()), None),
                Ok(b) if b.config_error => {
                    let secret = first.env.iter().flatten().find_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|s| s.name.clone()));
                    let message = format!("secret {:?} not found", secret.unwrap_or_else(|| "kube-sim-missing".into()));
                    ("CreateContainerConfigError", Some(message), None)
                }
                Ok(_) if !is_valid_image_reference(&image) => (
                    "InvalidImageName",
                    Some(format!("Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format")),
                    None,
                ),
                Ok(b) => ("ContainerCreating", None, Some(match b.pull { Pull::Succeeds(d) => d, Pull::Fails => pull_delay })),
            };
            set_container_states(pod, |c, _| waiting_status(c, reason, message.as_deref()));
            match reason {
                "ContainerCreating" => {
                    state.record_event(pod, "Normal", "Pulling", &format!("Pulling image {image:?}"), "kubelet", Some(&field_path));
                }
                "InvalidImageName" => {
                    state.record_event(pod, "Warning", "InspectFailed", message.as_deref().unwrap_or_default(), "kubelet", Some(&field_path));
                    state.record_event(pod, "Warning", "Failed", "Error: InvalidImageName", "kubelet", Some(&field_path));
                }
                _ => {
                    state.record_event(pod, "Warning", "Failed", &format!("Error: {}", message.as_deref().unwrap_or_default()), "kubelet", Some(&field_path));
                }
            }
            (pod.spec.as_ref().and_then(|s| s.active_deadline_seconds), pull)
        });
        let Some((deadline, pull)) = deadline else {
            return;
        };
        if let Some(seconds) = deadline {
            self.at(Duration::from_secs(seconds.max(0) as u64), Action::Deadline(key.clone(), uid.to_owned()));
        }
        if let Some(pull) = pull {
            self.at(pull, Action::Pull(key.clone(), uid.to_owned()));
        }
    }

    fn still_waiting(&self, key: &Key, uid: &str) -> bool {
        self.pods.get(key).is_some_and(|e| {
            uid_of(&e.pod) == uid && e.sim.stage == Stage::Waiting && e.pod.metadata.deletion_timestamp.is_none()
        })
    }

    fn pull(&mut self, key: &Key, uid: &str) {
        if !self.still_waiting(key, uid) {
            return;
        }
        let Some(Ok(behavior)) = self.sim(key, uid).map(|s| s.behavior.clone()) else {
            return;
        };
        if behavior.pull == Pull::Fails {
            let attempts = self.sim(key, uid).map_or(0, |s| s.pull_failures);
            self.modify_pod(key, uid, |state, pod, sim| {
                sim.pull_failures += 1;
                let first = containers(pod).into_iter().next().unwrap_or_default();
                let image = first.image.clone().unwrap_or_default();
                let field_path = format!("spec.containers{{{}}}", first.name);
                let message = format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: {image}: not found"
                );
                set_container_states(pod, |c, _| waiting_status(c, "ErrImagePull", Some(&message)));
                if attempts > 0 {
                    state.record_event(pod, "Normal", "Pulling", &format!("Pulling image {image:?}"), "kubelet", Some(&field_path));
                }
                state.record_event(pod, "Warning", "Failed", &format!("Failed to pull image {image:?}: {message}"), "kubelet", Some(&field_path));
                state.record_event(pod, "Warning", "Failed", "Error: ErrImagePull", "kubelet", Some(&field_path));
            });
            // The kubelet's next sync reports the back-off right away.
            self.at(Duration::from_millis(10), Action::PullBackOff(key.clone(), uid.to_owned()));
            return;
        }
        let run = behavior.run;
        self.modify_pod(key, uid, |state, pod, sim| {
            sim.stage = Stage::Running;
            let started = now();
            let first = containers(pod).into_iter().next().unwrap_or_default();
            let image = first.image.clone().unwrap_or_default();
            let field_path = format!("spec.containers{{{}}}", first.name);
            set_container_states(pod, |c, _| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: image_id(c.image.as_deref().unwrap_or_default()),
                container_id: Some(format!("containerd://{}", hex(64))),
                ready: true,
                restart_count: 0,
                started: Some(true),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(started.clone()) }),
                    ..Default::default()
                }),
                last_state: Some(ContainerState::default()),
                ..Default::default()
            });
            let status = status_mut(pod);
            status.phase = Some("Running".into());
            set_condition(status, condition("Ready", true, None, None));
            set_condition(status, condition("ContainersReady", true, None, None));
            state.record_event(
                pod,
                "Normal",
                "Pulled",
                &format!(
                    "Successfully pulled image {image:?} in 1.2s (1.2s including waiting). Image size: 2150000 bytes."
                ),
                "kubelet",
                Some(&field_path),
            );
            state.record_event(
                pod,
                "Normal",
                "Created",
                &format!("Created container: {}", first.name),
                "kubelet",
                Some(&field_path),
            );
            state.record_event(
                pod,
                "Normal",
                "Started",
                &format!("Started container {}", first.name),
                "kubelet",
                Some(&field_path),
            );
            sim.log(format!("kube-sim: started {image}"));
            for i in 1..=behavior.lines {
                sim.log(format!("kube-sim: line {i} of {}", behavior.lines));
            }
        });
        if let Some(run) = run {
            self.at(run, Action::Finish(key.clone(), uid.to_owned()));
        }
        if let Some(after) = behavior.evict_after {
            self.at(after, Action::Evict(key.clone(), uid.to_owned()));
        }
    }

    fn pull_back_off(&mut self, key: &Key, uid: &str) {
        if !self.still_waiting(key, uid) {
            return;
        }
        let failures = self.sim(key, uid).map_or(1, |s| s.pull_failures);
        let base = self.config.timings.pull_backoff;
        let backoff = (base * 2u32.saturating_pow(failures.saturating_sub(1).min(10))).min(base * 10);
        self.modify_pod(key, uid, |state, pod, _| {
            let first = containers(pod).into_iter().next().unwrap_or_default();
            let image = first.image.clone().unwrap_or_default();
            let field_path = format!("spec.containers{{{}}}", first.name);
            let message = format!("Back-off pulling image {image:?}");
            set_container_states(pod, |c, _| waiting_status(c, "ImagePullBackOff", Some(&message)));
            state.record_event(pod, "Normal", "BackOff", &message, "kubelet", Some(&field_path));
            state.record_event(pod, "Warning", "Failed", "Error: ImagePullBackOff", "kubelet", Some(&field_path));
        });
        self.at(backoff, Action::Pull(key.clone(), uid.to_owned()));
    }

    /// The container's run ends (or `exit_code` forces it to end now).
    pub(crate) fn finish(&mut self, key: &Key, uid: &str, exit_code: Option<i32>) {
        let Some(sim) = self.sim(key, uid) else {
            return;
        };
        if sim.stage != Stage::Running {
            return;
        }
        let behavior = sim
            .behavior
            .clone()
            .unwrap_or_else(|_| Behavior::parse("", self.behavior_defaults()).unwrap_or_else(|_| unreachable!()));
        let oom = behavior.oom && exit_code.is_none();
        let code = if oom { 137 } else { exit_code.unwrap_or(behavior.exit_code) };
        self.modify_pod(key, uid, |state, pod, sim| {
            let first = containers(pod).into_iter().next().unwrap_or_default();
            let reason = if oom { "OOMKilled" } else if code == 0 { "Completed" } else { "Error" };
            if oom {
                state.record_event(pod, "Warning", "OOMKilling", &format!("Memory cgroup out of memory: Killed process 4242 ({}) total-vm:1048576kB, anon-rss:1048576kB, file-rss:0kB, shmem-rss:0kB", first.name), "kubelet", None);
            } else if code != 0 {
                sim.log(format!("kube-sim: exiting with code {code}"));
            }
            let fallback = first.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
            let message = (fallback && code != 0).then(|| log_tail_message(&sim.logs)).filter(|m| !m.is_empty());
            terminate(pod, code, reason, message);
            sim.stage = Stage::Finished;
            state.release(sim);
        });
        self.retry_unschedulable();
    }

    /// Fails a pod that is not yet terminal, for a kubelet-level reason.
    fn fail(&mut self, key: &Key, uid: &str, reason: &str, message: &str, disruption: Option<&str>) -> bool {
        if self.live_pod(key, uid).is_none_or(is_terminal) {
            return false;
        }
        self.modify_pod(key, uid, |state, pod, sim| {
            let first = containers(pod).into_iter().next().unwrap_or_default();
            if sim.stage == Stage::Running {
                state.record_event(
                    pod,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {}", first.name),
                    "kubelet",
                    Some(&format!("spec.containers{{{}}}", first.name)),
                );
            }
            terminate(pod, 137, "Error", None);
            let status = status_mut(pod);
            status.phase = Some("Failed".into());
            status.reason = Some(reason.to_owned());
            status.message = Some(message.to_owned());
            if let Some(disruption) = disruption {
                set_condition(status, condition("DisruptionTarget", true, Some(disruption), Some(message)));
            }
            state.record_event(pod, "Warning", reason, message, "kubelet", None);
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
        if sim.node.is_none() {
            return false;
        }
        let container = self
            .live_pod(key, uid)
            .map(|p| containers(p).into_iter().next().unwrap_or_default().name)
            .unwrap_or_default();
        let message = format!(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container {container} was using 1Gi, request is 0, has larger consumption of memory. "
        );
        self.fail(key, uid, "Evicted", &message, Some("TerminationByKubelet"))
    }

    // ---- deletion --------------------------------------------------------------

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
        let ignores_term = entry.sim.behavior.as_ref().is_ok_and(|b| b.ignore_term);
        let running = entry.sim.stage == Stage::Running;
        let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        self.modify_pod(key, uid, |state, pod, _| {
            pod.metadata.deletion_timestamp = Some(Time(deadline));
            pod.metadata.deletion_grace_period_seconds = Some(grace);
            if running {
                let name = containers(pod).into_iter().next().unwrap_or_default().name;
                state.record_event(
                    pod,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {name}"),
                    "kubelet",
                    Some(&format!("spec.containers{{{name}}}")),
                );
            }
        });
        if node_ready {
            let grace = Duration::from_secs(grace as u64);
            let after = if running && ignores_term { grace } else { self.config.timings.termination.min(grace) };
            self.at(after, Action::Kill(key.clone(), uid.to_owned()));
        }
        self.pods.get(key).map(|e| e.pod.clone())
    }

    fn kill(&mut self, key: &Key, uid: &str) {
        let Some(entry) = self.pods.get(key).filter(|e| uid_of(&e.pod) == uid) else {
            return;
        };
        if !is_terminal(&entry.pod) {
            let ignores_term = entry.sim.behavior.as_ref().is_ok_and(|b| b.ignore_term);
            // SIGTERM honoured: 143; killed at the end of the grace period: 137.
            let code = if ignores_term { 137 } else { 143 };
            self.modify_pod(key, uid, |state, pod, sim| {
                terminate(pod, code, "Error", None);
                sim.stage = Stage::Finished;
                state.release(sim);
            });
        }
        self.remove_pod(key, uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_stable_digests() {
        let a = image_id("busybox:1.36");
        assert!(a.starts_with("docker.io/library/busybox@sha256:"), "{a}");
        assert_eq!(a.len(), "docker.io/library/busybox@sha256:".len() + 64);
        assert_eq!(a, image_id("busybox:1.36"));
        assert!(image_id("ghcr.io/org/app:v1").starts_with("ghcr.io/org/app@sha256:"));
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
}
