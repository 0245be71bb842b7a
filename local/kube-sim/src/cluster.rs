//! The cluster's state: pods, their watch history, events, nodes and namespaces, all
//! behind one lock. Every mutation bumps the cluster-wide resourceVersion, exactly as
//! etcd's revision does, and every pod change is published to watchers in order.
//!
//! The pod lifecycle (scheduler, kubelet, node controllers, autoscaler) lives in
//! `lifecycle.rs` as further methods of [`State`], driven by timers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Event, EventSource, Namespace, NamespaceStatus, Node, ObjectReference, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::behavior::{Behavior, Defaults};
use crate::config::SimConfig;
use crate::faults::FaultInjector;
use crate::lifecycle::{Action, PodSim, SimNode, Stage};
use crate::status::{ApiError, ApiResult, Cause};
use crate::validation::{default_pod, validate_pod};

/// `(namespace, name)`; ordered as etcd orders keys, so lists come back sorted.
pub type Key = (String, String);

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change of one pod, as watchers see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    /// The pod before the change (lets a filtered watch turn a change of labels into
    /// ADDED or DELETED, as the apiserver's watch cache does).
    pub old: Option<Arc<Pod>>,
    pub pod: Arc<Pod>,
}

/// A line of the creation log: every pod ever created, deleted or not.
///
/// Times are RFC 3339, as `jiff::Timestamp` prints them (parse them to compare: the
/// fraction of a second has no fixed width). Together they tell how many pods held
/// capacity at any moment: a pod holds it from `created_at` until `ended_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created_at: String,
    /// When the pod's phase first became Running (absent if it never ran before it
    /// ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<String>,
    /// The first moment the pod stopped holding capacity: its phase became Succeeded
    /// or Failed, or it left the store (deleted, evicted, garbage collected), whichever
    /// came first. Absent while neither has happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub labels: BTreeMap<String, String>,
}

pub(crate) struct PodEntry {
    pub pod: Arc<Pod>,
    pub sim: PodSim,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub due: Instant,
    pub seq: u64,
    pub action: Action,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// What a new watch starts with.
pub struct WatchStart {
    /// Objects to send as synthetic ADDED events first (watch without resourceVersion).
    pub initial: Vec<Arc<Pod>>,
    /// Past changes to replay (watch from a resourceVersion still in the history).
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

pub(crate) struct State {
    pub config: SimConfig,
    pub rv: u64,
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub pods: BTreeMap<Key, PodEntry>,
    history: VecDeque<Arc<Change>>,
    /// Changes at or before this resourceVersion have left the history.
    history_floor: u64,
    changes: broadcast::Sender<Arc<Change>>,
    pub events: BTreeMap<Key, Arc<Event>>,
    event_order: VecDeque<Key>,
    event_index: HashMap<(String, String, String), Key>,
    pub nodes: BTreeMap<String, SimNode>,
    pub timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    pub created: Vec<CreatedPod>,
    /// A pod's uid → its line in `created`.
    created_index: HashMap<String, usize>,
    pub unschedulable: Vec<Key>,
    pub scale_up_pending: bool,
    pub node_counter: u32,
    pub ip_counter: u32,
}

/// The simulated cluster, shared by the HTTP handlers and the lifecycle driver.
pub struct Cluster {
    state: Mutex<State>,
    wake: Notify,
    pub(crate) faults: FaultInjector,
    pub(crate) token: String,
    pub(crate) user: String,
    pub(crate) allowed_namespaces: Option<Vec<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("user", &self.user).finish_non_exhaustive()
    }
}

pub(crate) fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The letters the apiserver uses for generated name suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(crate) fn random_suffix(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char).collect()
}

pub(crate) fn new_uid() -> String {
    let mut rng = rand::rng();
    let bytes: [u8; 16] = rng.random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

impl Cluster {
    pub(crate) fn new(config: SimConfig) -> Arc<Self> {
        let token = config.token.clone().unwrap_or_else(|| format!("kube-sim-{}", random_suffix(24)));
        let (changes, _) = broadcast::channel(4096);
        let mut state = State {
            rv: 1,
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            history: VecDeque::new(),
            history_floor: 0,
            changes,
            events: BTreeMap::new(),
            event_order: VecDeque::new(),
            event_index: HashMap::new(),
            nodes: BTreeMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            created: Vec::new(),
            created_index: HashMap::new(),
            unschedulable: Vec::new(),
            scale_up_pending: false,
            node_counter: 0,
            ip_counter: 0,
            config: config.clone(),
        };
        for name in &config.namespaces {
            state.add_namespace(name);
        }
        for _ in 0..config.nodes {
            state.add_node(config.node_shape, false);
        }
        Arc::new(Self {
            state: Mutex::new(state),
            wake: Notify::new(),
            faults: FaultInjector::new(config.faults.clone()),
            token,
            user: config.user.clone(),
            allowed_namespaces: config.allowed_namespaces.clone(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state and wakes the lifecycle driver, which may have new timers.
    pub(crate) fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.wake.notify_one();
        result
    }

    /// Fires due timers forever; the simulated scheduler, kubelets and controllers.
    pub(crate) async fn drive(self: Arc<Self>) {
        loop {
            let next = {
                let mut state = self.lock();
                state.fire_due(Instant::now());
                state.timers.peek().map(|Reverse(t)| t.due)
            };
            match next {
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due.into()) => {}
                        () = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}

impl State {
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn at(&mut self, after: Duration, action: Action) {
        self.timer_seq += 1;
        let timer = Timer { due: Instant::now() + after, seq: self.timer_seq, action };
        self.timers.push(Reverse(timer));
    }

    pub fn behavior_defaults(&self) -> Defaults {
        Defaults { run: self.config.timings.run, pull: self.config.timings.pull }
    }

    fn publish(&mut self, kind: ChangeKind, old: Option<Arc<Pod>>, pod: Arc<Pod>, rv: u64) {
        let change = Arc::new(Change { rv, kind, old, pod });
        self.history.push_back(change.clone());
        while self.history.len() > self.config.watch_history {
            if let Some(evicted) = self.history.pop_front() {
                self.history_floor = evicted.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    // ---- namespaces -------------------------------------------------------------

    pub fn add_namespace(&mut self, name: &str) -> Arc<Namespace> {
        let rv = self.next_rv();
        let namespace = Arc::new(Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(new_uid()),
                resource_version: Some(rv.to_string()),
                creation_timestamp: Some(now()),
                labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())])),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::NamespaceSpec { finalizers: Some(vec!["kubernetes".into()]) }),
            status: Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() }),
        });
        self.namespaces.insert(name.to_owned(), namespace.clone());
        namespace
    }

    pub fn require_namespace(&self, namespace: &str) -> ApiResult<()> {
        if self.namespaces.contains_key(namespace) { Ok(()) } else { Err(ApiError::not_found("namespaces", namespace)) }
    }

    // ---- pods -------------------------------------------------------------------

    /// Creates a pod as the apiserver does: name generation, defaulting, validation,
    /// uniqueness, then storage; `dry_run` stops before storage.
    pub fn create_pod(&mut self, namespace: &str, mut pod: Pod, dry_run: bool) -> ApiResult<Arc<Pod>> {
        if let Some(body_namespace) = pod.metadata.namespace.as_deref()
            && body_namespace != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        self.require_namespace(namespace)?;
        if pod.metadata.name.as_deref().is_none_or(str::is_empty)
            && let Some(prefix) = pod.metadata.generate_name.as_deref().filter(|p| !p.is_empty())
        {
            // The apiserver truncates the prefix so the result stays a valid name.
            let prefix: String = prefix.chars().take(58).collect();
            pod.metadata.name = Some(format!("{prefix}{}", random_suffix(5)));
        }
        // Mutating admission (an injecting webhook) runs before validation.
        let behavior = Behavior::of(&pod, self.behavior_defaults());
        if let Ok(behavior) = &behavior {
            crate::inject::inject(&mut pod, behavior);
        }
        default_pod(&mut pod);
        validate_pod(&pod)?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = (namespace.to_owned(), name.clone());
        if self.pods.contains_key(&key) {
            return Err(ApiError::already_exists("pods", &name));
        }
        let meta = &mut pod.metadata;
        meta.namespace = Some(namespace.to_owned());
        meta.uid = Some(new_uid());
        meta.creation_timestamp = Some(now());
        meta.generation = Some(1);
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        if dry_run {
            return Ok(Arc::new(pod));
        }
        let rv = self.next_rv();
        pod.metadata.resource_version = Some(rv.to_string());
        let pod = Arc::new(pod);
        let uid = uid_of(&pod);
        self.created_index.insert(uid.clone(), self.created.len());
        self.created.push(CreatedPod {
            namespace: namespace.to_owned(),
            name: name.clone(),
            uid: uid.clone(),
            created_at: jiff::Timestamp::now().to_string(),
            running_at: None,
            ended_at: None,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
        });
        // A body may carry a phase, which is kept (defaulting only fills a missing one).
        self.log_phase(&uid, phase_of(&pod));
        self.pods.insert(key.clone(), PodEntry { pod: pod.clone(), sim: PodSim::new(&pod, behavior) });
        self.publish(ChangeKind::Added, None, pod.clone(), rv);
        self.at(self.config.timings.schedule, Action::Schedule(key, uid));
        Ok(pod)
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> ApiResult<Arc<Pod>> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|entry| entry.pod.clone())
            .ok_or_else(|| ApiError::not_found("pods", name))
    }

    /// Applies `change` to a stored pod and publishes the result as MODIFIED.
    /// Returns `None` when the pod is gone or is another pod of the same name.
    pub fn modify_pod<R>(
        &mut self,
        key: &Key,
        uid: &str,
        change: impl FnOnce(&mut State, &mut Pod, &mut PodSim) -> R,
    ) -> Option<R> {
        if self.pods.get(key).is_none_or(|entry| uid_of(&entry.pod) != uid) {
            return None;
        }
        let mut entry = self.pods.remove(key)?;
        let old = entry.pod.clone();
        let mut pod = (*entry.pod).clone();
        let result = change(self, &mut pod, &mut entry.sim);
        if phase_of(&pod) != phase_of(&old) {
            self.log_phase(uid, phase_of(&pod));
        }
        let rv = self.next_rv();
        pod.metadata.resource_version = Some(rv.to_string());
        entry.pod = Arc::new(pod);
        let pod = entry.pod.clone();
        self.pods.insert(key.clone(), entry);
        self.publish(ChangeKind::Modified, Some(old), pod, rv);
        Some(result)
    }

    /// Writes a pod's status through the `status` subresource (PUT, or a PATCH already
    /// applied): only `.status` changes, as podStatusStrategy keeps the spec
    /// (pkg/registry/core/pod/strategy.go), and an empty `qosClass` keeps the old one.
    /// `resource_version` and `uid`, when the body carries them, must be the current
    /// ones (409 Conflict otherwise). A terminated container of a pod that does not
    /// restart it may not run again (ValidateContainerStateTransition, 422). A write
    /// that changes nothing stores nothing. From now on the simulated kubelet leaves
    /// the pod's status alone.
    pub fn write_status(
        &mut self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
        uid: Option<&str>,
        mut status: PodStatus,
    ) -> ApiResult<Arc<Pod>> {
        self.require_namespace(namespace).map_err(|_| ApiError::not_found("pods", name))?;
        let current = self.get_pod(namespace, name)?;
        let current_uid = uid_of(&current);
        if let Some(uid) = uid.filter(|u| !u.is_empty() && *u != current_uid) {
            return Err(ApiError::conflict(
                "pods",
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}"),
            ));
        }
        let current_rv = current.metadata.resource_version.as_deref().unwrap_or_default();
        if resource_version.is_some_and(|rv| !rv.is_empty() && rv != current_rv) {
            return Err(ApiError::conflict(
                "pods",
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let old = current.status.clone().unwrap_or_default();
        if status.qos_class.as_deref().is_none_or(str::is_empty) {
            status.qos_class = old.qos_class.clone();
        }
        let restart = current.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_default();
        let causes = container_state_transitions(&old, &status, &restart);
        if !causes.is_empty() {
            return Err(ApiError::invalid("Pod", "pods", name, causes));
        }
        let key = (namespace.to_owned(), name.to_owned());
        // Compared as served: times on the wire have whole seconds, so a status read
        // and written back unchanged is no change.
        if serde_json::to_value(&status).ok() == serde_json::to_value(&old).ok() {
            if let Some(entry) = self.pods.get_mut(&key) {
                entry.sim.driven_elsewhere = true;
            }
            return Ok(current);
        }
        self.modify_pod(&key, &current_uid, |state, pod, sim| {
            pod.status = Some(status);
            sim.driven_elsewhere = true;
            // A pod its writer made terminal holds nothing on its node any more.
            if crate::lifecycle::is_terminal(pod) {
                sim.stage = Stage::Finished;
                state.release(sim);
            }
        });
        self.retry_unschedulable();
        self.get_pod(namespace, name)
    }

    /// Removes a pod from storage (the end of a deletion) and frees what it held.
    pub fn remove_pod(&mut self, key: &Key, uid: &str) -> Option<Arc<Pod>> {
        if self.pods.get(key).is_none_or(|entry| uid_of(&entry.pod) != uid) {
            return None;
        }
        let mut entry = self.pods.remove(key)?;
        self.release(&mut entry.sim);
        self.log_ended(uid);
        self.unschedulable.retain(|k| k != key);
        let rv = self.next_rv();
        let mut pod = (*entry.pod).clone();
        pod.metadata.resource_version = Some(rv.to_string());
        let pod = Arc::new(pod);
        self.publish(ChangeKind::Deleted, Some(entry.pod), pod.clone(), rv);
        self.retry_unschedulable();
        Some(pod)
    }

    /// Notes in the creation log that the pod `uid` now has `phase`: the first Running
    /// (while it has not ended) and the first Succeeded or Failed.
    fn log_phase(&mut self, uid: &str, phase: Option<&str>) {
        match phase {
            Some("Running") => {
                if let Some(line) = self.created_line(uid)
                    && line.running_at.is_none()
                    && line.ended_at.is_none()
                {
                    line.running_at = Some(jiff::Timestamp::now().to_string());
                }
            }
            Some("Succeeded" | "Failed") => self.log_ended(uid),
            _ => {}
        }
    }

    /// Notes in the creation log that the pod `uid` stopped holding capacity, unless
    /// it already had.
    fn log_ended(&mut self, uid: &str) {
        if let Some(line) = self.created_line(uid)
            && line.ended_at.is_none()
        {
            line.ended_at = Some(jiff::Timestamp::now().to_string());
        }
    }

    fn created_line(&mut self, uid: &str) -> Option<&mut CreatedPod> {
        let index = *self.created_index.get(uid)?;
        self.created.get_mut(index)
    }

    /// Lists pods in key order, `filter`ed (`None`: every pod), one page at a time.
    pub fn list_pods(
        &self,
        namespace: Option<&str>,
        filter: Option<impl Fn(&Pod) -> bool>,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<Page<Arc<Pod>>> {
        let lower = lower_bound(namespace, continue_token)?;
        let entries = self.pods.range((lower, Bound::Unbounded)).map(|(k, e)| (k, &e.pod));
        let exact = filter.is_none();
        let filter = |pod: &Pod| filter.as_ref().is_none_or(|f| f(pod));
        Ok(paginate(entries, namespace, filter, limit, exact, self.rv))
    }

    /// Lists events in key order, `filter`ed, one page at a time.
    pub fn list_events(
        &self,
        namespace: Option<&str>,
        filter: impl Fn(&Event) -> bool,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<Page<Arc<Event>>> {
        let lower = lower_bound(namespace, continue_token)?;
        Ok(paginate(self.events.range((lower, Bound::Unbounded)), namespace, filter, limit, false, self.rv))
    }

    /// Drops the watch history: watches from before now answer 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_floor = self.rv;
    }

    /// Starts a watch from `from` (a resourceVersion), or with the current pods as
    /// synthetic ADDED events when `from` is absent or `0`.
    pub fn watch(&self, from: Option<u64>, namespace: Option<&str>) -> ApiResult<WatchStart> {
        let live = self.changes.subscribe();
        match from {
            None | Some(0) => {
                let pods = self.pods.iter().filter(|(key, _)| namespace.is_none_or(|ns| key.0 == ns));
                Ok(WatchStart { initial: pods.map(|(_, e)| e.pod.clone()).collect(), replay: Vec::new(), live })
            }
            Some(rv) if rv < self.history_floor => {
                Err(ApiError::expired(format!("too old resource version: {rv} ({})", self.history_floor + 1)))
            }
            Some(rv) => {
                let replay = self.history.iter().filter(|c| c.rv > rv).cloned().collect();
                Ok(WatchStart { initial: Vec::new(), replay, live })
            }
        }
    }

    // ---- events -----------------------------------------------------------------

    /// Records an event about `pod`, folding repeats into `count` as the event
    /// recorder does.
    pub fn record_event(
        &mut self,
        pod: &Pod,
        kind: &str,
        reason: &str,
        message: &str,
        component: &str,
        field_path: Option<&str>,
    ) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let uid = uid_of(pod);
        let host = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let rv = self.next_rv();
        let timestamp = now();
        let dedup = (uid.clone(), reason.to_owned(), message.to_owned());
        if let Some(key) = self.event_index.get(&dedup).cloned()
            && let Some(existing) = self.events.get_mut(&key)
        {
            let event = Arc::make_mut(existing);
            event.count = Some(event.count.unwrap_or(1) + 1);
            event.last_timestamp = Some(timestamp);
            event.metadata.resource_version = Some(rv.to_string());
            return;
        }
        let name = format!("{pod_name}.{:016x}", rand::rng().random::<u64>());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(new_uid()),
                resource_version: Some(rv.to_string()),
                creation_timestamp: Some(timestamp.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name),
                namespace: Some(namespace.clone()),
                uid: Some(uid),
                resource_version: pod.metadata.resource_version.clone(),
                field_path: field_path.map(str::to_owned),
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            source: Some(EventSource {
                component: Some(component.to_owned()),
                host: if component == "kubelet" { host.clone() } else { None },
            }),
            first_timestamp: Some(timestamp.clone()),
            last_timestamp: Some(timestamp),
            count: Some(1),
            type_: Some(kind.to_owned()),
            reporting_component: Some(component.to_owned()),
            reporting_instance: Some(if component == "kubelet" {
                host.unwrap_or_default()
            } else {
                component.to_owned()
            }),
            ..Default::default()
        };
        let key = (namespace, name);
        self.events.insert(key.clone(), Arc::new(event));
        self.event_index.insert(dedup, key.clone());
        self.event_order.push_back(key);
        while self.event_order.len() > self.config.max_events {
            if let Some(old) = self.event_order.pop_front()
                && let Some(event) = self.events.remove(&old)
            {
                let uid = event.involved_object.uid.clone().unwrap_or_default();
                let dedup = (uid, event.reason.clone().unwrap_or_default(), event.message.clone().unwrap_or_default());
                self.event_index.remove(&dedup);
            }
        }
    }

    // ---- nodes ------------------------------------------------------------------

    pub fn node_objects(&self) -> Vec<Arc<Node>> {
        self.nodes.values().map(|n| n.object.clone()).collect()
    }
}

/// ValidateContainerStateTransition (pkg/apis/core/validation/validation.go): unless
/// the pod restarts its containers, a terminated one may not be reported otherwise.
fn container_state_transitions(old: &PodStatus, new: &PodStatus, restart_policy: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if restart_policy == "Always" {
        return causes;
    }
    let lists = [
        ("status.containerStatuses", &old.container_statuses, &new.container_statuses),
        ("status.initContainerStatuses", &old.init_container_statuses, &new.init_container_statuses),
    ];
    for (field, old, new) in lists {
        for (i, before) in old.iter().flatten().enumerate() {
            let Some(terminated) = before.state.as_ref().and_then(|s| s.terminated.as_ref()) else { continue };
            if terminated.exit_code != 0 && restart_policy == "OnFailure" {
                continue;
            }
            let reopened = new.iter().flatten().any(|after| {
                after.name == before.name && after.state.as_ref().and_then(|s| s.terminated.as_ref()).is_none()
            });
            if reopened {
                causes.push(Cause::forbidden(
                    format!("{field}[{i}].state"),
                    "may not be transitioned to non-terminated state",
                ));
            }
        }
    }
    causes
}

pub(crate) fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn phase_of(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// Where a list starts: after the continue token's key, or at the namespace.
fn lower_bound(namespace: Option<&str>, continue_token: Option<&str>) -> ApiResult<Bound<Key>> {
    Ok(match (continue_token, namespace) {
        (Some(token), _) => Bound::Excluded(decode_continue(token)?),
        (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
        (None, None) => Bound::Unbounded,
    })
}

/// One page of `entries` (already positioned at the start), staying in `namespace`.
///
/// Like the apiserver, it reports `remainingItemCount` only for unfiltered lists
/// (`exact`); a filtered page stops at the first match past the limit, so paging
/// through a large collection costs one pass in all, not one per page.
fn paginate<'a, T: 'a>(
    entries: impl Iterator<Item = (&'a Key, &'a Arc<T>)>,
    namespace: Option<&str>,
    filter: impl Fn(&T) -> bool,
    limit: Option<usize>,
    exact: bool,
    rv: u64,
) -> Page<Arc<T>> {
    let limit = limit.filter(|l| *l > 0);
    let mut items = Vec::new();
    let mut last = None;
    let mut remaining = 0i64;
    for (key, item) in entries.take_while(|(key, _)| namespace.is_none_or(|ns| key.0 == ns)) {
        if !filter(item) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            if !exact {
                break;
            }
            continue;
        }
        items.push(item.clone());
        last = Some(key);
    }
    let more = remaining > 0;
    Page {
        items,
        resource_version: rv,
        continue_token: if more { last.map(|key| encode_continue(key, rv)) } else { None },
        remaining: (more && exact).then_some(remaining),
    }
}

fn encode_continue(key: &Key, rv: u64) -> String {
    use base64::Engine;
    let token = serde_json::json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}/{}", key.0, key.1) });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<Key> {
    use base64::Engine;
    let invalid = || ApiError::bad_request(format!("invalid value for continue parameter: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let start = value["start"].as_str().ok_or_else(invalid)?;
    let (namespace, name) = start.split_once('/').ok_or_else(invalid)?;
    Ok((namespace.to_owned(), name.to_owned()))
}
