//! The cluster: where pods are created, read and deleted. One trait, so the core can
//! be tested with plain values; [`KubeCluster`] is the real one, on `kube::Api<Pod>`.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

use crate::error::{Error, Result};

/// What a pod create found.
#[derive(Debug, Clone, PartialEq)]
pub enum PodCreated {
    /// The pod was created.
    New(Box<Pod>),
    /// A pod of that name already existed; here it is (the caller decides whether it
    /// is the same job attempt).
    Exists(Box<Pod>),
}

/// The Kubernetes API, as podbridge uses it.
pub trait Cluster: Send + Sync {
    /// Creates `pod` in its namespace.
    fn create_pod(&self, pod: &Pod) -> impl Future<Output = Result<PodCreated>> + Send;

    /// Reads a pod, `None` when it does not exist.
    fn get_pod(&self, namespace: &str, name: &str) -> impl Future<Output = Result<Option<Pod>>> + Send;

    /// Deletes a pod (only the one with `uid`, when given); false when it was not there.
    fn delete_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> impl Future<Output = Result<bool>> + Send;

    /// Every pod podbridge manages in `namespace`, read in pages of `page_size`; also
    /// returns how many requests that took.
    fn list_managed_pods(
        &self,
        namespace: &str,
        page_size: u32,
    ) -> impl Future<Output = Result<(Vec<Pod>, u32)>> + Send;
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

    async fn list_managed_pods(&self, namespace: &str, page_size: u32) -> Result<(Vec<Pod>, u32)> {
        let selector = format!("{}={}", crate::pod::MANAGED_BY.0, crate::pod::MANAGED_BY.1);
        let mut params = ListParams::default().labels(&selector).limit(page_size.max(1));
        let pods = self.pods(namespace);
        let mut all = Vec::new();
        let mut requests = 0;
        loop {
            requests += 1;
            let page =
                self.call("list pods", pods.list(&params)).await?.map_err(|status| api_error("list pods", status))?;
            all.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok((all, requests)),
            }
        }
    }
}
