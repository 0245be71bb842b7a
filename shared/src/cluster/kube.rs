//! The Kubernetes adapter of the cluster port: `kube::Api<Pod>`, every call bounded by
//! a deadline, kube's own retries off (the client is built by [`crate::eks::client`]).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions, WatchEvent, WatchParams};

use super::{Cluster, NodeSize, PodCreated, PodEvent, PodEvents, PodList};
use crate::error::{Error, Result};

/// The label selector of every pod podbridge manages.
fn managed_selector() -> String {
    format!("{}={}", podbridge_core::pod::MANAGED_BY.0, podbridge_core::pod::MANAGED_BY.1)
}

/// The cluster through a `kube::Client`, every call bounded by a deadline.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
    timeout: Duration,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Calls through `client`, giving up on any call after `timeout`.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    /// The client underneath, for callers that need more than pods.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<std::result::Result<T, kube::core::Status>> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(Error::Timeout { operation, after: self.timeout }),
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(kube::Error::Api(status))) => Ok(Err(*status)),
            Ok(Err(source)) => Err(Error::KubeTransport { operation, source }),
        }
    }
}

/// An API error Status as podbridge's error.
fn api_error(operation: &'static str, status: kube::core::Status) -> Error {
    Error::KubeApi { operation, code: status.code, reason: status.reason, message: status.message }
}

impl Cluster for KubeCluster {
    async fn create_pod(&self, pod: &Pod) -> Result<PodCreated> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods = self.pods(&namespace);
        match self.call("create pod", pods.create(&PostParams::default(), pod)).await? {
            Ok(created) => Ok(PodCreated::New(Box::new(created))),
            Err(status) if status.code == 409 && status.reason == "AlreadyExists" => {
                match self.call("get pod", pods.get_opt(&name)).await? {
                    Ok(Some(existing)) => Ok(PodCreated::Exists(Box::new(existing))),
                    // Deleted in between: the next try creates it.
                    Ok(None) => Err(api_error("create pod", status)),
                    Err(status) => Err(api_error("get pod", status)),
                }
            }
            Err(status) => Err(api_error("create pod", status)),
        }
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        self.call("get pod", self.pods(namespace).get_opt(name)).await?.map_err(|status| api_error("get pod", status))
    }

    async fn delete_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool> {
        let params = DeleteParams {
            preconditions: uid.map(|uid| Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
            ..Default::default()
        };
        match self.call("delete pod", self.pods(namespace).delete(name, &params)).await? {
            Ok(_) => Ok(true),
            Err(status) if status.code == 404 => Ok(false),
            Err(status) => Err(api_error("delete pod", status)),
        }
    }

    async fn pod_events(&self, namespace: &str, name: &str) -> Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        // One pod's events are few: the kubelet aggregates repeats into one event with a
        // count, so one page is enough.
        let params =
            ListParams::default().fields(&format!("involvedObject.kind=Pod,involvedObject.name={name}")).limit(100);
        let list =
            self.call("list events", events.list(&params)).await?.map_err(|status| api_error("list events", status))?;
        Ok(list.items)
    }

    async fn largest_node(&self) -> Result<Option<NodeSize>> {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let list = self
            .call("list nodes", nodes.list(&ListParams::default()))
            .await?
            .map_err(|status| api_error("list nodes", status))?;
        let allocatable = |node: &k8s_openapi::api::core::v1::Node, resource: &str| {
            node.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get(resource)).map(|q| q.0.clone())
        };
        let mut largest: Option<NodeSize> = None;
        for node in &list.items {
            let cpu = allocatable(node, "cpu").and_then(|q| podbridge_core::quantity::parse_cpu(&q).ok());
            let memory = allocatable(node, "memory").and_then(|q| podbridge_core::quantity::parse_memory(&q).ok());
            let (Some(cpu), Some(memory)) = (cpu, memory) else { continue };
            let size = largest.get_or_insert(NodeSize { cpu_millis: 0, memory_bytes: 0 });
            size.cpu_millis = size.cpu_millis.max(cpu);
            size.memory_bytes = size.memory_bytes.max(memory);
        }
        Ok(largest)
    }

    async fn list_managed_pods(&self, namespace: &str, page_size: u32) -> Result<PodList> {
        let mut params = ListParams::default().labels(&managed_selector()).limit(page_size.max(1));
        let pods = self.pods(namespace);
        let mut list = PodList::default();
        loop {
            list.requests += 1;
            let page =
                self.call("list pods", pods.list(&params)).await?.map_err(|status| api_error("list pods", status))?;
            list.pods.extend(page.items);
            // Every page of a paginated list is served from the first page's snapshot,
            // so the last page's resourceVersion is the list's.
            list.resource_version = page.metadata.resource_version.unwrap_or_default();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(list),
            }
        }
    }

    async fn watch_managed_pods(
        &self,
        namespace: &str,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<PodEvents> {
        // The server ends the watch at `timeoutSeconds`; the client's read timeout must
        // not fire first, so callers keep `timeout` under the deadline of every call.
        let seconds = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        let params = WatchParams::default().labels(&managed_selector()).timeout(seconds);
        let stream = self
            .call("watch pods", self.pods(namespace).watch(&params, resource_version))
            .await?
            .map_err(|status| api_error("watch pods", status))?;
        Ok(stream
            .map_err(|source| Error::KubeTransport { operation: "watch pods", source })
            .and_then(|event| async move {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => Ok(PodEvent::Changed(Box::new(pod))),
                    WatchEvent::Deleted(pod) => Ok(PodEvent::Deleted(Box::new(pod))),
                    WatchEvent::Bookmark(bookmark) => Ok(PodEvent::Bookmark(bookmark.metadata.resource_version)),
                    WatchEvent::Error(status) if status.code == 410 => Ok(PodEvent::Expired),
                    WatchEvent::Error(status) => Err(Error::KubeApi {
                        operation: "watch pods",
                        code: status.code,
                        reason: status.reason,
                        message: status.message,
                    }),
                }
            })
            .boxed())
    }
}
