//! An in-memory adapter of the cluster port, for fast tests of the services' race
//! paths: a pod that already exists under the attempt's name, a create refused or
//! failed by the API, a record that moves while its pod is being created.
//!
//! It keeps pods as the API server stores them (name, namespace, uid, labels,
//! creationTimestamp, resourceVersion) and nothing more: no scheduler, no kubelet, so
//! a pod stays as it was created. Pod lifecycles and watches are tested against the
//! simulated cluster (local/kube-sim) over HTTPS instead; here a watch ends at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use podbridge_core::pod::MANAGED_BY;
use tokio::sync::{Notify, Semaphore};

use super::{Cluster, PodCreated, PodEvents, PodList};
use crate::error::{Error, Result};

/// A failure the next create answers with instead of creating the pod.
type Failure = Box<dyn Fn() -> Error + Send + Sync>;

#[derive(Default)]
struct State {
    pods: BTreeMap<(String, String), Pod>,
    version: u64,
    created: usize,
    failures: Vec<Failure>,
    /// While set, every create waits for it after storing its pod.
    gate: Option<Gate>,
    largest_node: Option<super::NodeSize>,
}

/// Creates held after their pod is stored, until released: the moment between the pod
/// and its record, where a crash or a concurrent writer lands.
#[derive(Debug, Clone)]
pub struct Gate {
    reached: Arc<Notify>,
    /// No permits: a held create waits until the semaphore is closed.
    open: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Self { reached: Arc::new(Notify::new()), open: Arc::new(Semaphore::new(0)) }
    }

    /// Waits until a create has stored its pod and is held.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held creates, and every later one, answer.
    pub fn release(&self) {
        self.open.close();
    }

    async fn pass(&self) {
        self.reached.notify_one();
        // Closed is the only way out: no permit is ever added.
        let _ = self.open.acquire().await;
    }
}

/// Pods kept in memory.
#[derive(Default)]
pub struct MemoryCluster {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryCluster").field("pods", &state.pods.len()).field("created", &state.created).finish()
    }
}

impl MemoryCluster {
    /// An empty cluster that accepts every pod.
    pub fn new() -> Self {
        Self::default()
    }

    /// Says its largest node is `size`.
    pub fn set_largest_node(&self, size: super::NodeSize) {
        self.lock().largest_node = Some(size);
    }

    /// Stores `pod` as if someone else had created it (another controller, a person).
    pub fn insert(&self, pod: Pod) {
        let mut state = self.lock();
        let pod = stored(pod, &mut state);
        let key = key_of(&pod);
        state.pods.insert(key, pod);
    }

    /// Every pod now in the cluster.
    pub fn pods(&self) -> Vec<Pod> {
        self.lock().pods.values().cloned().collect()
    }

    /// How many pods were ever created through [`Cluster::create_pod`].
    pub fn created(&self) -> usize {
        self.lock().created
    }

    /// The next create fails with `error()` (an API that refuses the pod, or is down);
    /// queued failures are used in order.
    pub fn fail_next_create(&self, error: impl Fn() -> Error + Send + Sync + 'static) {
        self.lock().failures.push(Box::new(error));
    }

    /// From now on every create is held after storing its pod, until the returned gate
    /// is released.
    pub fn hold_creates(&self) -> Gate {
        let gate = Gate::new();
        self.lock().gate = Some(gate.clone());
        gate
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pod as the API server stores it: a uid, a creation time and a resourceVersion.
fn stored(mut pod: Pod, state: &mut State) -> Pod {
    state.version += 1;
    let meta = &mut pod.metadata;
    meta.uid = Some(format!("uid-{}", state.version));
    meta.resource_version = Some(state.version.to_string());
    meta.creation_timestamp = Some(Time(jiff::Timestamp::now()));
    pod
}

fn key_of(pod: &Pod) -> (String, String) {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

impl Cluster for MemoryCluster {
    async fn create_pod(&self, pod: &Pod) -> Result<PodCreated> {
        let gate = {
            let mut state = self.lock();
            if !state.failures.is_empty() {
                let failure = state.failures.remove(0);
                return Err(failure());
            }
            let key = key_of(pod);
            if let Some(existing) = state.pods.get(&key) {
                return Ok(PodCreated::Exists(Box::new(existing.clone())));
            }
            let created = stored(pod.clone(), &mut state);
            state.pods.insert(key, created);
            state.created += 1;
            state.gate.clone()
        };
        if let Some(gate) = gate {
            gate.pass().await;
        }
        let created = self.lock().pods.get(&key_of(pod)).cloned();
        created
            .map(|pod| PodCreated::New(Box::new(pod)))
            .ok_or_else(|| Error::Timeout { operation: "create pod (deleted while held)", after: Duration::ZERO })
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        Ok(self.lock().pods.get(&(namespace.to_owned(), name.to_owned())).cloned())
    }

    async fn delete_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool> {
        let mut state = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        match state.pods.get(&key) {
            Some(pod) if uid.is_none_or(|uid| pod.metadata.uid.as_deref() == Some(uid)) => {
                state.pods.remove(&key);
                Ok(true)
            }
            Some(_) => Err(Error::KubeApi {
                operation: "delete pod",
                code: 409,
                reason: "Conflict".to_owned(),
                message: format!("Precondition failed: UID in precondition: {}", uid.unwrap_or_default()),
            }),
            None => Ok(false),
        }
    }

    async fn list_managed_pods(&self, namespace: &str, _page_size: u32) -> Result<PodList> {
        let state = self.lock();
        let managed = |pod: &&Pod| {
            let labels = pod.metadata.labels.as_ref();
            labels.and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1)
        };
        let pods = state.pods.iter().filter(|((ns, _), _)| ns == namespace).map(|(_, pod)| pod).filter(managed);
        Ok(PodList { pods: pods.cloned().collect(), requests: 1, resource_version: state.version.to_string() })
    }

    async fn pod_events(&self, _namespace: &str, _name: &str) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    async fn largest_node(&self) -> Result<Option<super::NodeSize>> {
        Ok(self.lock().largest_node)
    }

    async fn watch_managed_pods(&self, _namespace: &str, _version: &str, _timeout: Duration) -> Result<PodEvents> {
        Ok(Box::pin(futures::stream::empty()))
    }
}
